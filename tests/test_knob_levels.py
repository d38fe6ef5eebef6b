"""A knob set's level between recorded settings (`train.knob_levels: interpolated`) and AdamW's weight decay
(`fit.weight_decay`): the table is the line in dB through the model's own levels at its recorded settings, every
renderer and a baked .nam play at the level it sets, AIDA-X refuses what its live knobs cannot carry, and the decay
spares biases and the knob drive."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

import keras  # noqa: E402

from ampsim.core import metrics  # noqa: E402
from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.core.knobs import level_gain  # noqa: E402
from ampsim.core.params import RenderParams, load_params, section  # noqa: E402
from ampsim.modelling.card import ModelCard  # noqa: E402
from ampsim.modelling.knob_levels import grid, level_table  # noqa: E402
from conftest import PROJECT, decaying_di, trained_like  # noqa: E402

RATE = 48000
DB_PER_NEPER = 20 * np.log10(np.e)


def _level_bowed_model(curve: float) -> keras.Model:
    """audio x exp(curve * knob^2): a level curve*8.69 dB x knob^2, off the line between any two settings."""
    inputs = keras.Input(shape=(None, 2))
    out = keras.layers.Lambda(lambda x: x[..., :1] * keras.ops.exp(curve * x[..., 1:] ** 2))(inputs)
    return keras.Model(inputs, out)


def test_the_table_puts_the_level_between_recorded_settings_on_the_line_through_theirs():
    audio = np.random.default_rng(0).normal(0, 0.1, (3, 2000)).astype(np.float32)
    table = level_table(_level_bowed_model(3.0), "gain", [0.4, 0.6, 1.0], audio, 0.1, skip=100)
    positions = np.array(table["positions"])
    np.testing.assert_allclose(positions, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], atol=1e-6)
    expected = DB_PER_NEPER * 3.0 * (np.interp(positions, [0.4, 0.6, 1.0], [0.16, 0.36, 1.0]) - positions ** 2)
    np.testing.assert_allclose(table["gain_db"], expected, atol=2e-3)
    assert table["gain_db"][4] == pytest.approx(DB_PER_NEPER * 3.0 * 0.04, abs=2e-3)  # 0.8: +1.04 dB
    assert [table["gain_db"][i] for i in (0, 2, 6)] == [0.0, 0.0, 0.0]  # recorded settings keep their level
    # Rendering's lookup: linear between positions, none beyond the recorded ends.
    assert level_gain(table, ["gain"], np.array([0.8])) == pytest.approx(10 ** (table["gain_db"][4] / 20), rel=1e-6)
    halfway = (table["gain_db"][4] + table["gain_db"][5]) / 2
    assert level_gain(table, ["gain"], np.array([0.85])) == pytest.approx(10 ** (halfway / 20), rel=1e-6)
    assert level_gain(table, ["gain"], np.array([0.2])) == level_gain(None, ["gain"], np.array([0.8])) == 1.0
    assert list(grid([0.2, 0.35, 0.8], 0.25)) == [0.2, 0.35, 0.45, 0.7, 0.8]


def _knob_model_and_card(knob_drive: bool) -> tuple[keras.Model, ModelCard]:
    from ampsim.modelling.architectures.streaming_lstm import lstm_model

    model = trained_like(lstm_model(6, 1, False, input_size=2, knob_drive=knob_drive), seed=3)
    table = {"knob": "gain", "positions": [0.4, 0.6, 0.8, 1.0], "gain_db": [0.0, 0.0, 3.0, 0.0]}
    card = ModelCard("lstm", RATE, 2, 1024, 768, ["gain-0.4", "gain-0.6", "gain-1"], None, 480, 1e-9, 0.05,
                     knobs=["gain"], knob_levels=table)
    return model, card


def test_rendering_and_a_baked_nam_play_at_the_level_the_table_sets():
    import dataclasses

    from ampsim.deployment.export import bake
    from ampsim.inference.engine import render, renderer

    model, card = _knob_model_and_card(knob_drive=True)
    params = section(load_params(PROJECT / "params.yaml"), "render", RenderParams)
    x = decaying_di(0.5, seed=1)
    as_learnt = render(model, dataclasses.replace(card, knob_levels=None), x, params, {"gain": 0.7})
    levelled = render(model, card, x, params, {"gain": 0.7})
    np.testing.assert_allclose(levelled, as_learnt * 10 ** (1.5 / 20), rtol=1e-5, atol=1e-7)  # halfway to +3 dB
    fast = renderer(model, card, "fast", params, {"gain": 0.7})(x)
    assert metrics.esr(levelled.ravel(), fast.ravel()) < 1e-4  # `fast` (the release's ONNX path too) applies it
    baked, baked_card = bake(model, card, {"gain": 0.7})
    assert baked_card.knob_levels is None and baked_card.knobs == []
    assert metrics.esr(levelled.ravel(), render(baked, baked_card, x, params).ravel()) < 1e-10
    recorded = render(model, card, x, params, {"gain": 0.6})
    np.testing.assert_allclose(recorded, render(model, dataclasses.replace(card, knob_levels=None), x, params,
                                                {"gain": 0.6}), rtol=1e-6)


def test_aidax_refuses_a_model_whose_level_its_live_knobs_cannot_carry():
    from ampsim.deployment.export import to_aidax

    model, card = _knob_model_and_card(knob_drive=False)
    with pytest.raises(AmpsimError, match="train.knob_levels: learnt") as refused:
        to_aidax(model, card)
    assert "--format nam" in refused.value.fix


def test_weight_decay_trains_with_adamw_and_spares_biases(tmp_path, boss_prepared):
    from test_through_ir import _config

    from ampsim.modelling.training import prepare_job

    job, _ = prepare_job(boss_prepared, _config(tmp_path, weight_decay=0.01))
    optimizer = job.trainer.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.01
    decayed = [(v.name, optimizer._use_weight_decay(v)) for v in job.trainer.trainable_variables]
    assert {name for name, _ in decayed} == {"kernel", "recurrent_kernel", "bias"}
    assert all(flag == (name != "bias") for name, flag in decayed)
    (tmp_path / "adam").mkdir()
    job, _ = prepare_job(boss_prepared, _config(tmp_path / "adam"))
    assert type(job.trainer.optimizer) is keras.optimizers.Adam


@pytest.mark.parametrize("section_name, setting, named", [
    ("fit", {"weight_decay": -0.01}, "fit.weight_decay"),
    ("train", {"knob_levels": "linear"}, "train.knob_levels"),
    ("train", {"knob_level_step": 0}, "train.knob_level_step"),
    ("train", {"knob_level_step": 0.6}, "train.knob_level_step"),
    ("train", {"knob_level_seconds": "15"}, "train.knob_level_seconds")])
def test_a_wrong_weight_decay_or_knob_level_setting_is_named_before_training(tmp_path, section_name, setting, named):
    import yaml

    from ampsim.core.params import device_params
    from ampsim.modelling.training import train_config
    from conftest import tiny_params

    params = yaml.safe_load(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                                        **{section_name: setting}).read_text())
    with pytest.raises(AmpsimError, match=named):
        train_config(device_params(params, None), RATE)
