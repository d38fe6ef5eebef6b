"""The cab IR after the network: the least-squares fit recovers a known cabinet behind a known nonlinearity, its
length is chosen on validation (none where it does not help), it streams chunk by chunk exactly, the card keeps
it exactly, every renderer (Keras exact and fast, ONNX Runtime) plays it after the network, and the plugin
exports write it at the level each plugin's IR slot expects."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from ampsim.core import metrics
from ampsim.modelling import cab_ir

from conftest import RATE, decaying_di, trained_like


def _cabinet(taps: int, seed: int) -> np.ndarray:
    """A cabinet-like response: a decaying resonance, thousands of samples long in effect."""
    rng = np.random.default_rng(seed)
    n = np.arange(taps)
    return (np.exp(-n / (taps / 3)) * (np.sin(2 * np.pi * 110 * n / RATE) + 0.3 * rng.standard_normal(taps))
            ).astype(np.float64)


def _amp(x: np.ndarray) -> np.ndarray:
    return np.tanh(4.0 * x)  # the network's part: a memoryless drive


def test_the_fit_recovers_a_cabinet_behind_a_nonlinearity_and_validation_keeps_a_long_enough_ir():
    cabinet = _cabinet(600, seed=1)
    rng = np.random.default_rng(2)
    xs = [decaying_di(6.0, seed=s) for s in (3, 4, 5)]
    outputs = [_amp(x) for x in xs]
    targets = [lfilter(cabinet, [1.0], out) + 1e-4 * rng.standard_normal(len(out)) for out in outputs]
    ir, scores = cab_ir.choose(outputs[:2], targets[:2], outputs[2:], targets[2:], [256, 1024], 1e-6)
    assert len(ir) == 1024 and set(scores) == {0, 256, 1024}
    # on audio it never saw, as close as the noise allows; 256 taps cut the cabinet short
    assert scores[1024] < 1e-5 and scores[256] > 10 * scores[1024] and scores[0] > 0.5
    # on broadband audio the taps themselves come back (a DI-like note excites too few frequencies to pin them)
    noise = [rng.standard_normal(RATE * 4) for _ in range(2)]
    fitted = cab_ir.fit(noise, [lfilter(cabinet, [1.0], n) for n in noise], [1024], ridge=1e-9)[1024]
    np.testing.assert_allclose(fitted[:600], cabinet, atol=3e-3)  # the ends of 4 s: an error of ~taps / length
    assert np.max(np.abs(fitted[600:])) < 3e-3  # nothing past the cabinet's end


def test_validation_keeps_no_ir_where_the_network_alone_plays_it_better():
    x_train, x_val = decaying_di(4.0, seed=6), decaying_di(4.0, seed=7)
    out_train, out_val = _amp(x_train), _amp(x_val)
    # the training target rings through a filter that the validation audio does not: the IR would hurt there
    ir, scores = cab_ir.choose([out_train], [lfilter([0.6, 0.3, 0.1], [1.0], out_train)], [out_val], [out_val],
                               [64], 1e-6)
    assert ir is None and scores[0] < scores[64]


def test_the_stream_filter_equals_the_whole_file_in_chunks_of_any_length_and_the_card_keeps_it_exactly():
    ir = cab_ir.fit([_amp(decaying_di(2.0, seed=8))], [decaying_di(2.0, seed=9)], [4096], 1e-6)[4096]
    x = decaying_di(3.0, seed=10)
    whole = cab_ir.apply(ir, x)
    np.testing.assert_allclose(whole, lfilter(ir.astype(np.float64), [1.0], x), atol=1e-5)
    stream, cuts = cab_ir.Stream(ir), [0, 1, 1, 7, 3000, 3001, 52_000, len(x)]  # empty, one sample, < and > the IR
    chunked = np.concatenate([stream(x[a:b]) for a, b in zip(cuts, cuts[1:])])
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    stream.reset()
    np.testing.assert_allclose(stream(x), whole, atol=1e-6)
    assert np.array_equal(cab_ir.decode(cab_ir.encode(ir)), ir) and cab_ir.decode(cab_ir.encode(None)) is None


# --- the model: rendering and export -------------------------------------------------------------------

keras = pytest.importorskip("keras")

from ampsim.core.params import ExportParams, RenderParams, load_params, section  # noqa: E402
from ampsim.deployment.export import PLUGIN_IR_GAIN_DB, export, export_pack, ir_path  # noqa: E402
from ampsim.inference.engine import network_renderer, render, renderer  # noqa: E402
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.card import ModelCard  # noqa: E402


@pytest.fixture(scope="module")
def model_with_ir():
    model = trained_like(lstm_model(8, 1, False), seed=11)
    ir = (_cabinet(2048, seed=12) / 4).astype(np.float32)
    card = ModelCard("lstm", RATE, 1, 1024, 768, ["amp"], None, 2400, 1e-9, 0.01, device="amp",
                     cab_ir=cab_ir.encode(ir))
    return model, card, ir


@pytest.fixture(scope="module")
def render_params(params_file) -> RenderParams:
    return dataclasses.replace(section(load_params(params_file), "render", RenderParams), jit_compile=False)


def test_every_renderer_plays_the_network_then_the_ir(model_with_ir, render_params):
    model, card, ir = model_with_ir
    x = decaying_di(2.5, seed=13)
    network = network_renderer(model, card, "exact", render_params)(x)
    expected = cab_ir.apply(ir, network)
    np.testing.assert_allclose(render(model, card, x, render_params), expected, atol=1e-5)
    fast = renderer(model, card, "fast", render_params)
    in_chunks = np.concatenate([fast(x[a : a + fast.chunk]) for a in range(0, len(x), fast.chunk)])
    assert metrics.esr(expected, in_chunks) < 1e-6 and len(in_chunks) == len(x)
    without = dataclasses.replace(card, cab_ir=None)
    np.testing.assert_allclose(render(model, without, x, render_params), network, atol=1e-6)


def test_onnx_runtime_plays_the_ir_after_the_graph(model_with_ir, render_params, tmp_path):
    pytest.importorskip("onnxruntime")
    from ampsim.inference.runtime import graph_runtime, verified_graph
    from ampsim.modelling.models import save_model

    model, card, ir = model_with_ir
    x = decaying_di(2.0, seed=14)
    save_model(model, card, tmp_path / "release", verified_graph(model, card, x, render_params))
    on_onnx = graph_runtime(tmp_path / "release", card, render_params, None)
    on_keras = renderer(model, card, "fast", render_params)
    assert metrics.esr(on_keras(x), on_onnx(x)) < 1e-6


def test_the_plugin_exports_write_the_ir_at_the_level_each_plugin_plays_it(model_with_ir, tmp_path, params_file):
    model, card, ir = model_with_ir
    params = section(load_params(params_file), "export", ExportParams)
    options = {"metadata": {}, "knobs": {}, "facts": None, "probe": None}
    for plugin, name in (("nam", "amp.nam"), ("aidax", "amp.json")):
        written = export(model, card, plugin, tmp_path / name, params, **options)
        wav = ir_path(written, plugin)
        audio, rate = sf.read(wav, dtype="float32")
        assert rate == RATE and sf.info(str(wav)).subtype == "FLOAT" and wav.name == f"amp.{plugin}-ir.wav"
        # what the plugin's IR slot turns it down by (NAM: 18 dB and 48 kHz / its rate; AIDA-X: 12 dB)
        np.testing.assert_allclose(audio * 10 ** (-PLUGIN_IR_GAIN_DB[plugin] / 20), ir, rtol=1e-6, atol=1e-9)
        document = json.loads(written.read_text())
        block = document["metadata"]["ampsim"] if plugin == "nam" else document["ampsim"]
        assert block["cab_ir"]["file"] == wav.name and block["cab_ir"]["taps"] == len(ir)
        if plugin == "nam":  # and the paragraph for a sharing site says to load it
            from ampsim.deployment.plugin_metadata import summary

            assert "Load amp.nam-ir.wav (2048 taps) in NAM's IR slot" in summary(document)
    # a knob set's pack of baked settings: one IR for all of them (the knobs are the network's)
    conditioned = trained_like(lstm_model(8, 1, False, input_size=2), seed=15)
    pack = export_pack(conditioned, dataclasses.replace(card, input_size=2, knobs=["gain"]), tmp_path / "pack",
                       params, points=2, **options)
    audio, _ = sf.read(pack / "cab-ir.wav", dtype="float32")
    np.testing.assert_allclose(audio * 10 ** (-18 / 20), ir, rtol=1e-6, atol=1e-9)
    assert "Load cab-ir.wav in NAM's IR slot" in (pack / "README.md").read_text()
    assert all(json.loads(f.read_text())["metadata"]["ampsim"]["cab_ir"]["file"] == "cab-ir.wav"
               for f in pack.glob("*.nam"))
    plain = dataclasses.replace(card, cab_ir=None)
    export(model, plain, "nam", tmp_path / "plain.nam", params, **options)
    assert not ir_path(tmp_path / "plain.nam", "nam").exists()
    assert "cab_ir" not in json.loads((tmp_path / "plain.nam").read_text())["metadata"]["ampsim"]


def test_the_stream_check_scores_the_network_with_its_ir(model_with_ir):
    from ampsim.data.windows import Segment
    from ampsim.inference.engine import render_exact
    from ampsim.inference.latching import StreamRender, stream_check

    model, card, ir = model_with_ir
    x = decaying_di(3.0, seed=16)
    y = cab_ir.apply(ir, render_exact(model, x, 4096, False))  # the model itself, as one stream: nothing to miss
    train, val = [Segment("amp", x[: 2 * RATE], y[: 2 * RATE])], [Segment("amp", x[2 * RATE :], y[2 * RATE :])]
    check = stream_check(model, card, train, val, StreamRender(jit_compile=False))
    assert check.esr_stream < 1e-8 and check.latched_seconds == 0
    assert stream_check(model, dataclasses.replace(card, cab_ir=None), train, val,
                        StreamRender(jit_compile=False)).esr_stream > 1e-3


@pytest.mark.parametrize("section, setting, named", [
    ("train", {"cab_ir_taps": 4096}, "train.cab_ir_taps is 4096"),
    ("train", {"cab_ir_taps": [1024, 0]}, "train.cab_ir_taps is [1024, 0]"),
    ("train", {"cab_ir_ridge": -1.0}, "train.cab_ir_ridge is -1.0"),
    ("fit", {"collapsed_loss": -0.5}, "fit.collapsed_loss is -0.5"),
    ("fit", {"diverged_ratio": "20x"}, "fit.diverged_ratio is '20x'"),
    ("fit", {"plateau_steps": 2.5}, "fit.plateau_steps is 2.5"),
    ("fit", {"back_to_best_factor": 2.0}, "fit.back_to_best_factor is 2.0"),
    ("fit", {"back_to_best_factor": 0}, "fit.back_to_best_factor is 0"),
    ("fit", {"adam_beta_2": 1.0}, "fit.adam_beta_2 is 1.0"),
    ("fit", {"adam_beta_2": 0}, "fit.adam_beta_2 is 0")])
def test_a_wrong_ir_or_guard_setting_is_named_before_training(params_file, section, setting, named):
    from ampsim.core.errors import AmpsimError
    from ampsim.core.params import device_params
    from ampsim.modelling.training import train_config

    params = load_params(params_file)
    params[section] = {**params[section], **setting}
    with pytest.raises(AmpsimError) as raised:
        train_config(device_params(params, None), RATE, params_file)
    assert named in raised.value.message and raised.value.fix
