"""A release on ONNX Runtime: each architecture's ONNX graph renders as Keras does (within ESR 1e-6, the bound
the register stage enforces), `ampsim render` of a release uses it without importing Keras, a model without
a graph still renders on Keras, and a graph that renders otherwise is refused."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("keras")
pytest.importorskip("onnxruntime")

from ampsim.core import metrics  # noqa: E402
from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.core.params import RenderParams, load_params, section  # noqa: E402
from ampsim.inference.blocks import BlockRenderer, fast_plan  # noqa: E402
from ampsim.inference.engine import render_exact, render_fast  # noqa: E402
from ampsim.inference.runtime import onnx_predict, released_runtime, verified_graph  # noqa: E402
from ampsim.modelling.architectures import streaming_lstm  # noqa: E402
from ampsim.modelling.architectures.lstm2018 import lstm2018_model  # noqa: E402
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.models import RUNTIME_FILE, ModelCard, save_model  # noqa: E402

from conftest import PROJECT, RATE, decaying_di, tool_env, trained_like  # noqa: E402


@pytest.fixture(scope="module")
def render_params(params_file) -> RenderParams:
    return section(load_params(params_file), "render", RenderParams)


def _card(architecture: str, knobs: list[str], context: int) -> ModelCard:
    return ModelCard(architecture, RATE, 1 + len(knobs), 1024, 768, ["a", "b"], None, context, 1e-9, 0.01,
                     knobs=knobs, device="amp")


CASES = {
    # two layers, an input skip and a knob: every part of the streaming graph
    "lstm": (lambda: lstm_model(12, 2, True, input_size=2), "lstm", ["gain"], {"gain": 0.3}),
    # the knobs also driving the audio in (lstm.knob_drive), two of them
    "lstm-drive": (lambda: lstm_model(8, 1, False, input_size=3, knob_drive=True), "lstm", ["gain", "tone"],
                   {"gain": 0.7, "tone": 0.2}),
    # ... bent at knots: gain twice (the setting past both), tone once (the setting short of it)
    "lstm-bend": (lambda: lstm_model(8, 1, False, input_size=3, knob_drive=True, knob_knots=[[0.3, 0.6], [0.5]]),
                  "lstm", ["gain", "tone"], {"gain": 0.7, "tone": 0.2}),
    "lstm2018": (lambda: lstm2018_model(8), "lstm2018", [], None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_onnx_graph_renders_as_keras_does_by_the_same_blocks(case, render_params):
    build, architecture, knob_names, knobs = CASES[case]
    model = trained_like(build(), seed=3)
    card = _card(architecture, knob_names, 4800)
    x = decaying_di(6.3, seed=4)  # several batches of blocks, and a short last one
    graph = verified_graph(model, card, x[: 2 * RATE], render_params, knobs)
    assert graph is not None
    from ampsim.core.knobs import knob_vector

    plan, vector = fast_plan(card, render_params), knob_vector(knob_names, knobs)
    keras_fast = render_fast(model, x, plan, render_params.jit_compile, 1, vector)
    onnx_fast = BlockRenderer(onnx_predict(graph, 2), plan, vector)(x)
    assert onnx_fast.shape == x.shape and np.sum(keras_fast**2) > 1.0
    assert metrics.esr(keras_fast, onnx_fast) < 1e-9
    # and it is the stream: the opening block, from the zero state, is the exact rendering's
    exact = render_exact(model, x, 1 << 16, render_params.jit_compile, vector)
    np.testing.assert_allclose(onnx_fast[: plan.block], exact[: plan.block], atol=1e-5)


def test_a_graph_that_renders_otherwise_is_refused(render_params, monkeypatch):
    model = trained_like(lstm_model(8, 1, False), seed=5)
    card = _card("lstm", [], 4800)

    def gates_swapped(model):  # the classic export bug: Keras' gate order taken for ONNX's
        kernel, recurrent, bias = model.get_layer("lstm_1").get_weights()
        roll = lambda m: np.roll(m, m.shape[-1] // 4, axis=-1)  # noqa: E731
        head = model.get_layer("head").get_weights()
        from ampsim.modelling.onnx_graph import lstm_stack

        return lstm_stack([(roll(kernel), roll(recurrent), roll(bias))], 1, (head[0], head[1]))

    monkeypatch.setattr(streaming_lstm, "onnx_graph", gates_swapped)
    with pytest.raises(AmpsimError, match="runtime_tolerance_esr"):
        verified_graph(model, card, decaying_di(1.0, seed=6), render_params)


def test_a_model_without_a_graph_or_warm_up_renders_on_keras(tmp_path, render_params):
    model = trained_like(lstm_model(8, 1, False), seed=7)
    save_model(model, _card("lstm", [], 4800), tmp_path / "no-graph")
    assert released_runtime(tmp_path / "no-graph", render_params, None) is None
    unmeasured = dataclasses.replace(_card("lstm", [], 4800), context_samples=None)  # straight from training
    save_model(model, unmeasured, tmp_path / "unmeasured", runtime_graph=streaming_lstm.onnx_graph(model))
    assert released_runtime(tmp_path / "unmeasured", render_params, None) is None


def test_ampsim_render_of_a_release_runs_on_onnx_runtime_without_importing_keras(tmp_path, render_params):
    model = trained_like(lstm_model(12, 1, False, input_size=2), seed=8)
    card = _card("lstm", ["gain"], 4800)
    release = tmp_path / "release"
    x = decaying_di(5.0, seed=9)
    save_model(model, card, release, runtime_graph=verified_graph(model, card, x, render_params, {"gain": 0.6}))
    assert (release / RUNTIME_FILE).is_file()
    sf.write(tmp_path / "take.wav", x, RATE, subtype="FLOAT")

    def render(runtime: str) -> tuple[np.ndarray, str]:
        # the CLI in a fresh interpreter, which then reports whether Keras (or TensorFlow, or JAX) was imported
        code = ("import sys; from ampsim.cli import main; code = main(sys.argv[1:]); "
                "print('imported:', sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)); "
                "sys.exit(code)")
        result = subprocess.run([sys.executable, "-c", code, "--params", str(PROJECT / "params.yaml"), "render",
                                 str(tmp_path / "take.wav"), str(tmp_path / f"{runtime}.wav"), "--model", str(release),
                                 "--knob", "gain=0.6", "--runtime", runtime, "--quiet"],
                                capture_output=True, text=True, env=tool_env(), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return sf.read(tmp_path / f"{runtime}.wav", dtype="float32")[0], result.stdout

    onnx_out, onnx_report = render("onnx")
    keras_out, keras_report = render("keras")
    assert "fast on ONNX Runtime" in onnx_report and "imported: []" in onnx_report
    assert "ONNX" not in keras_report and "'keras'" in keras_report
    assert metrics.esr(keras_out, onnx_out) < 1e-6
