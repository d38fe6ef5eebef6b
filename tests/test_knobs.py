"""Knob-conditioned captures: a set must name the same knobs, windows carry each capture's setting as
constant channels, renderers and exports take the knobs, and bad settings are refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

keras = pytest.importorskip("keras")

import aidax_reference  # noqa: E402

from ampsim.core import metrics  # noqa: E402
from ampsim.core.errors import AmpsimError, CaptureError  # noqa: E402
from ampsim.core.knobs import interior_settings, knob_vector, parse_knob, with_knobs  # noqa: E402
from ampsim.core.params import RenderParams, load_params, section  # noqa: E402
from ampsim.data.captures import find_captures  # noqa: E402
from ampsim.data.windows import Pool, Segment, fixed_windows, random_windows  # noqa: E402
from ampsim.deployment.export import to_aidax, to_nam  # noqa: E402
from ampsim.inference.engine import BlockPlan, render_exact, render_fast, renderer
from ampsim.inference.warmup import context_candidates, measure_context
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.models import ModelCard, save_model  # noqa: E402
from conftest import decaying_di as _di, trained_like as _trained_like, write_capture  # noqa: E402

RATE = 48000


def _card(knobs: list[str]) -> ModelCard:
    return ModelCard("lstm", RATE, 1 + len(knobs), 1024, 768, ["amp-a", "amp-b"], None, 960, 1e-9, 0.05, knobs)




# --- captures ----------------------------------------------------------------------------------------

def test_every_capture_of_a_set_must_name_the_same_knobs(tmp_path, pair):
    dry, wet = pair
    write_capture(tmp_path, "amp-g2", dry, wet, meta={"knobs": {"gain": 0.2, "tone": 0.5}})
    write_capture(tmp_path, "amp-g8", dry, wet, meta={"knobs": {"gain": 0.8}})
    with pytest.raises(CaptureError) as caught:
        find_captures(tmp_path)
    message = caught.value.message
    assert "capture 'amp-g8' does not set the knob 'tone' (set by amp-g2)" in message
    assert "amp-g8/capture.yaml" in message and "add `tone: <0-1>`" in message
    (tmp_path / "amp-g8" / "capture.yaml").write_text("knobs: {gain: 0.8, tone: 0.5}\n")
    assert [c.knobs for c in find_captures(tmp_path)] == [{"gain": 0.2, "tone": 0.5}, {"gain": 0.8, "tone": 0.5}]


@pytest.mark.parametrize("value, problem", [("1.5", "outside 0-1"), ("loud", "not a number"), ("-0.1", "outside 0-1")])
def test_a_knob_value_must_be_a_number_from_0_to_1(tmp_path, pair, value, problem):
    dry, wet = pair
    folder = write_capture(tmp_path, "amp", dry, wet)
    (folder / "capture.yaml").write_text(f"knobs: {{gain: {value}}}\n")
    with pytest.raises(CaptureError, match=problem) as caught:
        find_captures(tmp_path)
    assert str(folder / "capture.yaml") in caught.value.message


# --- settings given by a user ------------------------------------------------------------------------

def test_knob_settings_are_checked_against_the_models_knobs():
    np.testing.assert_array_equal(knob_vector(["gain", "tone"], {"tone": 0.2, "gain": 0.7}), np.float32([0.7, 0.2]))
    assert knob_vector([], None).shape == (0,)
    with pytest.raises(AmpsimError, match="has no knob 'bass' \\(its knobs are gain, tone\\)"):
        knob_vector(["gain", "tone"], {"gain": 0.5, "tone": 0.5, "bass": 0.1})
    with pytest.raises(AmpsimError, match="no value given for 'tone'.*--knob gain=0.5 --knob tone=0.5"):
        knob_vector(["gain", "tone"], {"gain": 0.5})
    with pytest.raises(AmpsimError, match="has no knob 'gain' \\(it has no knobs\\)"):
        knob_vector([], {"gain": 0.5})
    with pytest.raises(AmpsimError, match="outside 0-1"):
        knob_vector(["gain"], {"gain": 1.2})
    assert parse_knob("gain=0.7") == ("gain", 0.7)
    for bad in ("gain", "gain=", "=0.5", "gain=high"):
        with pytest.raises(AmpsimError, match="not NAME=VALUE"):
            parse_knob(bad)
    with pytest.raises(AmpsimError, match="outside 0-1"):
        parse_knob("gain=7")


# --- windows -----------------------------------------------------------------------------------------

def test_windows_carry_their_captures_knob_setting_as_constant_channels():
    a = np.arange(0, 3000, dtype=np.float32)
    b = np.arange(10000, 14000, dtype=np.float32)
    pool = Pool.of([Segment("low", a, -a, {"gain": 0.2, "tone": 0.9}), Segment("high", b, -b, {"gain": 0.8, "tone": 0.1})])
    x, y = random_windows(pool, np.random.default_rng(0), 200, 500)
    assert x.shape == (200, 500, 3) and y.shape == (200, 500, 1)
    from_low = x[:, 0, 0] < 10000
    assert from_low.any() and (~from_low).any()
    np.testing.assert_array_equal(x[from_low][:, :, 1:], np.broadcast_to([0.2, 0.9], (from_low.sum(), 500, 2)).astype(np.float32))
    np.testing.assert_array_equal(x[~from_low][:, :, 1:], np.broadcast_to([0.8, 0.1], ((~from_low).sum(), 500, 2)).astype(np.float32))
    np.testing.assert_array_equal(x[..., 0], -y[..., 0])
    fixed_x, _ = fixed_windows(pool, 20, 500)
    assert fixed_x.shape == (20, 500, 3)
    assert not Pool.of([Segment("plain", a, -a)]).knobs.shape[1]  # unconditioned: audio alone
    assert random_windows(Pool.of([Segment("plain", a, -a)]), np.random.default_rng(0), 4, 100)[0].shape == (4, 100, 1)


def test_a_knob_bends_only_between_its_lowest_and_highest_recorded_settings():
    recorded = [{"gain": 0.4, "tone": 0.5}, {"gain": 0.6, "tone": 0.5}, {"gain": 1.0, "tone": 0.2},
                {"gain": 0.6, "tone": 0.9}, {"gain": 0.8, "tone": 0.5}]
    assert interior_settings(["gain", "tone"], recorded) == [[0.6, 0.8], [0.5]]
    assert interior_settings(["gain"], recorded[:2]) == [[]]  # two settings: a straight knob


def test_with_knobs_appends_the_setting_at_every_time_step():
    audio = np.arange(12, dtype=np.float32).reshape(3, 4)
    conditioned = with_knobs(audio, np.array([0.25, 0.75], np.float32))
    assert conditioned.shape == (3, 4, 3)
    np.testing.assert_array_equal(conditioned[..., 0], audio)
    assert (conditioned[..., 1] == 0.25).all() and (conditioned[..., 2] == 0.75).all()


# --- rendering ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def render_params(params_file) -> RenderParams:
    return section(load_params(params_file), "render", RenderParams)


def test_conditioned_fast_render_matches_exact_and_the_knob_changes_the_sound(render_params):
    model = _trained_like(lstm_model(16, 1, False, input_size=2), seed=4)
    probe, other = _di(2.0, seed=1), _di(3.0, seed=2)
    setting = np.array([0.7], np.float32)
    context, error = measure_context(model, probe, context_candidates(480, 48000), 4800, render_params, setting)
    assert error <= render_params.context_tolerance_esr
    plan = BlockPlan(block=max(4800, context), context=context, blocks=8)
    exact = render_exact(model, other, 16384, True, setting)
    fast = render_fast(model, other, plan, True, 2, setting)
    assert metrics.esr(exact, fast) <= 1e-5 and np.sum(exact**2) > 1.0
    # the whole model on (audio, knob) channels, from a zero state, is what the streaming renderer gives
    whole = np.asarray(model.predict_on_batch(with_knobs(other[None, :24000], setting)))[0, :, 0]
    np.testing.assert_allclose(exact[:24000], whole, atol=1e-5)
    other_setting = render_exact(model, other, 16384, True, np.array([0.1], np.float32))
    assert metrics.esr(exact, other_setting) > 1e-3


def test_renderer_refuses_missing_unknown_or_out_of_range_knobs(render_params):
    model = lstm_model(8, 1, False, input_size=2)
    card = _card(["gain"])
    with pytest.raises(AmpsimError, match="conditioned on the knobs gain; no value given for 'gain'"):
        renderer(model, card, "exact", render_params)
    with pytest.raises(AmpsimError, match="has no knob 'tone'"):
        renderer(model, card, "exact", render_params, {"gain": 0.5, "tone": 0.5})
    with pytest.raises(AmpsimError, match="outside 0-1"):
        renderer(model, card, "fast", render_params, {"gain": 1.5})
    plain = ModelCard("lstm", RATE, 1, 1024, 768, ["amp"], None, 960, 1e-9, 0.05)
    with pytest.raises(AmpsimError, match="has no knob 'gain' \\(it has no knobs\\)"):
        renderer(lstm_model(8, 1, False), plain, "exact", render_params, {"gain": 0.5})


def test_render_command_takes_knobs_and_refuses_bad_ones_before_writing(tmp_path, ampsim_cli):
    model = _trained_like(lstm_model(8, 1, False, input_size=2), seed=3)
    save_model(model, _card(["gain"]), tmp_path / "model")
    sf.write(tmp_path / "di.wav", _di(1.5, seed=9), RATE, subtype="PCM_24")
    outputs = {}
    for gain in ("0.2", "0.9"):
        code, out, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / f"g{gain}.wav"),
                                    "--model", str(tmp_path / "model"), "--knob", f"gain={gain}", "--quiet")
        assert code == 0, err
        assert f"gain={gain}" in out
        outputs[gain] = sf.read(tmp_path / f"g{gain}.wav")[0]
    assert len(outputs["0.2"]) == 72000 and metrics.esr(outputs["0.2"], outputs["0.9"]) > 1e-3
    for args, problem in ((["--knob", "gain=1.7"], "outside 0-1"), (["--knob", "drive=0.5"], "has no knob 'drive'"),
                          ([], "no value given for 'gain'"), (["--knob", "gain"], "not NAME=VALUE")):
        code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "bad.wav"),
                                  "--model", str(tmp_path / "model"), "--quiet", *args)
        assert code == 1 and problem in err
        assert not (tmp_path / "bad.wav").exists()


# --- export ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("knobs", [["gain"], ["gain", "tone"]])
def test_aidax_export_of_a_conditioned_model_renders_the_same_in_the_independent_reader(knobs):
    model = _trained_like(lstm_model(16, 1, False, input_size=1 + len(knobs)), seed=8, scale=0.4)
    document = json.loads(json.dumps(to_aidax(model, _card(knobs))))
    assert document["in_shape"] == [None, None, 1 + len(knobs)] and document["ampsim"]["knobs"] == knobs
    x = _di(0.1, seed=4)
    setting = np.linspace(0.2, 0.9, len(knobs)).astype(np.float32)
    ours = render_exact(model, x, 2048, True, setting)
    theirs = aidax_reference.run(document, with_knobs(x, setting))
    assert metrics.esr(ours, theirs) <= 1e-6 and np.sum(ours**2) > 0.1


def test_exports_refuse_what_the_plugins_cannot_take():
    with pytest.raises(AmpsimError, match="conditioned on knobs \\(gain\\); .nam files have no knobs.*--format aidax"):
        to_nam(lstm_model(8, 1, False, input_size=2), _card(["gain"]), {}, 0.1)
    with pytest.raises(AmpsimError, match="AIDA-X takes at most 2 knobs beside the audio; this model has 3"):
        to_aidax(lstm_model(16, 1, False, input_size=4), _card(["bass", "gain", "tone"]))
