"""Exports checked against the real readers: NAM's own package for .nam, an independent reader for AIDA-X."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import aidax_reference  # noqa: E402

from ampsim import metrics  # noqa: E402
from ampsim.cli import main  # noqa: E402
from ampsim.errors import AmpsimError  # noqa: E402
from ampsim.export import to_aidax, to_nam  # noqa: E402
from ampsim.models import ModelCard, load_model, lstm_model, save_model, seed_model  # noqa: E402
from ampsim.render import ExactRenderer, render_exact, settled_state  # noqa: E402

RATE = 48000


def _card(architecture: str, input_size: int = 1) -> ModelCard:
    return ModelCard(architecture, RATE, input_size, 1024, 768, ["test-amp"], None, 480, 1e-9, 0.05)


def _trained_like(model: keras.Model, seed: int) -> keras.Model:
    """Random weights at the scale of a trained model's (Keras' initialisers leave the head tiny)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _guitar_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    notes = np.sin(2 * np.pi * 110 * t) * np.exp(-3 * (t % 0.25)) + 0.3 * np.sin(2 * np.pi * 331 * t)
    return (0.4 * notes + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def nam_models():
    try:
        import nam.models  # the real reader; needs PyTorch
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"neural-amp-modeler is not installed ({exc}); `make test` installs it")
        pytest.skip(f"neural-amp-modeler not installed ({exc}); run `make test`")
    return nam.models


def _through_nam(nam_models, document: dict, x: np.ndarray) -> np.ndarray:
    import torch

    net = nam_models.init_from_nam(json.loads(json.dumps(document)))  # exactly what a file round trip gives
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)[None]).numpy()[0]


# --- .nam --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,layers", [(16, 1), (8, 2)])
def test_nam_export_of_a_streaming_model_renders_the_same_in_nams_own_reader(nam_models, hidden, layers):
    model = _trained_like(lstm_model(hidden, layers, False), seed=hidden)
    document = to_nam(model, _card("lstm"), {"gear_type": "pedal", "tone_type": "overdrive"}, settle_seconds=1.0)
    assert document["version"] == "0.5.4" and document["architecture"] == "LSTM"
    assert document["config"] == {"input_size": 1, "hidden_size": hidden, "num_layers": layers}
    assert document["sample_rate"] == RATE
    per_layer = [4 * hidden * ((1 if i == 0 else hidden) + hidden) + 4 * hidden + 2 * hidden for i in range(layers)]
    assert len(document["weights"]) == sum(per_layer) + hidden + 1
    assert document["metadata"]["gear_type"] == "pedal" and document["metadata"]["name"] == "test-amp"
    x = _guitar_like(0.5, seed=1)
    ours = ExactRenderer(model, 8192, True, initial_state=settled_state(model, 1.0, RATE))(x)
    theirs = _through_nam(nam_models, document, x)
    assert metrics.esr(ours, theirs) <= 1e-6
    assert np.sum(ours**2) > 1.0  # a real signal, not two silences agreeing


def test_the_2018_model_exports_exactly_as_a_three_layer_nam_lstm(nam_models):
    model = _trained_like(seed_model(units=16), seed=3)
    document = to_nam(model, _card("seed"), {}, settle_seconds=1.0)
    assert document["config"] == {"input_size": 1, "hidden_size": 16, "num_layers": 3}
    x = _guitar_like(0.5, seed=2)
    ours = ExactRenderer(model, 8192, True, initial_state=settled_state(model, 1.0, RATE))(x)
    theirs = _through_nam(nam_models, document, x)
    assert metrics.esr(ours, theirs) <= 1e-6
    assert np.sum(ours**2) > 1.0


def test_nam_refuses_an_input_skip_and_knobs_with_the_way_out():
    with pytest.raises(AmpsimError, match="NAM's LSTM has no input skip.*lstm.input_skip: false"):
        to_nam(lstm_model(8, 1, True), _card("lstm"), {}, 0.1)
    with pytest.raises(AmpsimError, match="knob.*no knobs"):
        to_nam(lstm_model(8, 1, False, input_size=2), _card("lstm", input_size=2), {}, 0.1)
    with pytest.raises(AmpsimError, match="tone_type cannot be `metal`.*hi_gain"):
        to_nam(lstm_model(8, 1, False), _card("lstm"), {"tone_type": "metal"}, 0.1)


# --- AIDA-X ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("skip", [False, True])
def test_aidax_export_renders_the_same_in_an_independent_reader(skip):
    model = _trained_like(lstm_model(16, 1, skip), seed=5)
    document = json.loads(json.dumps(to_aidax(model, _card("lstm"))))
    assert document["in_shape"] == [None, None, 1] and document["in_skip"] == int(skip)
    assert [layer["type"] for layer in document["layers"]] == ["lstm", "dense"]
    assert document["layers"][0]["shape"] == [None, None, 16]
    x = _guitar_like(0.1, seed=3)
    ours = render_exact(model, x, 2048, True)
    theirs = aidax_reference.run(document, x)
    assert metrics.esr(ours, theirs) <= 1e-6
    assert np.sum(ours**2) > 0.1


def test_aidax_refuses_shapes_the_plugin_cannot_load():
    with pytest.raises(AmpsimError, match="AIDA-X loads LSTMs of 8, 12, 16, 20, 24, 32, 40, 64, 80 units, not 10"):
        to_aidax(lstm_model(10, 1, False), _card("lstm"))
    with pytest.raises(AmpsimError, match="one LSTM layer.*2 LSTM"):
        to_aidax(lstm_model(8, 2, False), _card("lstm"))
    with pytest.raises(AmpsimError, match="no head \\(the 2018 model\\)"):
        to_aidax(seed_model(8), _card("seed"))


# --- the command -------------------------------------------------------------------------------------

def test_export_command_writes_each_format_and_refuses_a_wrong_extension(tmp_path, params_file, capsys):
    model = _trained_like(lstm_model(16, 1, False), seed=6)
    save_model(model, _card("lstm"), tmp_path / "trained")
    args = ["--params", str(params_file), "export", str(tmp_path / "trained")]
    assert main([*args, "--format", "nam", "-o", str(tmp_path / "amp.nam"), "--name", "My DS-1"]) == 0
    assert json.loads((tmp_path / "amp.nam").read_text())["metadata"]["name"] == "My DS-1"
    assert main([*args, "--format", "aidax", "-o", str(tmp_path / "amp.json")]) == 0
    assert json.loads((tmp_path / "amp.json").read_text())["layers"][0]["type"] == "lstm"
    assert main([*args, "--format", "keras", "-o", str(tmp_path / "amp.keras")]) == 0
    reloaded, card = load_model(tmp_path / "amp.keras")
    x = _guitar_like(0.05, seed=4)
    np.testing.assert_allclose(render_exact(reloaded, x, 1024, False), render_exact(model, x, 1024, False), atol=1e-6)
    capsys.readouterr()
    assert main([*args, "--format", "nam", "-o", str(tmp_path / "amp.json")]) == 1
    assert "a nam export is a `.nam` file" in capsys.readouterr().err
    save_model(lstm_model(10, 1, False), _card("lstm"), tmp_path / "odd")
    assert main(["--params", str(params_file), "export", str(tmp_path / "odd"), "--format", "aidax",
                 "-o", str(tmp_path / "odd.json")]) == 1
    assert "not 10" in capsys.readouterr().err and not (tmp_path / "odd.json").exists()
