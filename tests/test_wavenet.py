"""NAM's WaveNet (`wavenet`): built as NAM builds it, rendered exactly by blocks, exported as a .nam file that
NAM's own loader renders the same, trained through `ampsim train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")

from conftest import PROJECT, tiny_params  # noqa: E402
import test_export  # noqa: E402  (NAM's loader and test audio, shared)

from ampsim.cli import main  # noqa: E402
from ampsim.core import metrics  # noqa: E402
from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.core.params import RenderParams, WavenetParams, load_params, section  # noqa: E402
from ampsim.deployment.export import bake, to_aidax, to_nam  # noqa: E402
from ampsim.inference.engine import render_exact, renderer  # noqa: E402
from ampsim.modelling.architectures import wavenet  # noqa: E402
from ampsim.modelling.models import ModelCard, load_model  # noqa: E402

RATE = 48000
_guitar_like, _through_nam = test_export._guitar_like, test_export._through_nam
SMALL = [{"channels": 4, "head_size": 2, "kernel_size": 3, "dilations": [1, 2, 4, 8], "head_bias": False},
         {"channels": 2, "head_size": 1, "kernel_size": 3, "dilations": [1, 2, 4, 8], "head_bias": True}]


def _standard() -> list[dict]:
    return wavenet.arrays_of(section(load_params(PROJECT / "params.yaml"), "wavenet", WavenetParams))


def _card(input_size: int = 1, knobs: list[str] | None = None) -> ModelCard:
    return ModelCard("wavenet", RATE, input_size, 12284, 8192, ["test-amp"], None, knobs=knobs or [])


def _shaken(model: keras.Model, seed: int, scale: float = 0.15) -> keras.Model:
    """Random weights a little larger than the initialisation's, so that every layer's tanh bends."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, scale, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _render_params(**changes) -> RenderParams:
    params = section(load_params(PROJECT / "params.yaml"), "render", RenderParams)
    return RenderParams(**{**params.__dict__, **changes})


def test_the_standard_preset_has_nams_own_weight_count_and_receptive_field(nam_models):
    from nam.models.wavenet import WaveNet

    for arrays, name in ((_standard(), "standard"),
                         ([dict(a, channels=c, head_size=h, dilations=d) for a, (c, h, d)
                           in zip(_standard(), wavenet.PRESETS["feather"])], "feather")):
        ours = wavenet.wavenet_model(arrays)
        config = wavenet.nam(ours, []).config
        theirs = WaveNet.init_from_config({"layers_configs": config["layers"], "head": None,
                                           "head_scale": config["head_scale"]})
        count = sum(p.numel() for p in theirs.parameters())
        print(f"{name}: {ours.count_params()} weights (NAM's: {count}), receptive field "
              f"{wavenet.receptive_field(ours)}")
        assert ours.count_params() == count and wavenet.receptive_field(ours) == theirs.receptive_field == 4093
        assert wavenet.size_of(arrays) == name
    assert wavenet.wavenet_model(_standard()).count_params() == 13801


def test_a_wavenet_nam_file_renders_in_nams_own_loader_as_ampsim_renders_it(nam_models, tmp_path):
    model = _shaken(wavenet.wavenet_model(_standard()), seed=1)
    document = json.loads(json.dumps(to_nam(model, _card(), {"gear_type": "pedal"}, settle_seconds=1.0)))
    assert document["version"] == "0.5.4" and document["architecture"] == "WaveNet"
    layers = document["config"]["layers"]
    assert [(a["input_size"], a["channels"], a["head_size"], a["head_bias"]) for a in layers] == \
        [(1, 16, 8, False), (16, 8, 1, True)]
    assert document["config"]["head"] is None and document["config"]["head_scale"] == 0.02
    assert len(document["weights"]) == 13801 + 1  # head_scale last, as NAM writes it
    assert document["metadata"]["ampsim"]["size"] == "standard"
    x = _guitar_like(3.0, seed=2)
    ours = render_exact(model, x, 48000, True)  # 48000-sample blocks: the stream crosses block boundaries
    theirs = _through_nam(nam_models, document, x)
    error = metrics.esr(ours, theirs)
    print(f"WaveNet .nam: ESR between NAM's loader and ampsim's exact render = {error:.3g}")
    assert error <= 1e-6 and np.sum(theirs**2) > 1e-3


def test_fast_equals_exact_and_both_stream_in_blocks():
    model = _shaken(wavenet.wavenet_model(_standard()), seed=3)
    x = _guitar_like(2.5, seed=4)
    whole = np.asarray(model.predict_on_batch(x[None, :, None]))[0, :, 0]
    card = _card()
    exact = renderer(model, card, "exact", _render_params(exact_chunk_samples=30000))
    streamed = np.concatenate([exact(part) for part in np.split(x, [30000, 60000, 90000])])
    fast = renderer(model, card, "fast", _render_params())
    assert fast.plan.context == 4092 and card.context_samples is None  # nothing to measure
    assert metrics.esr(whole, streamed) <= 1e-6
    assert metrics.esr(streamed, fast(x)) <= 1e-6


def test_a_knob_setting_bakes_exactly_into_a_one_input_wavenet():
    model = _shaken(wavenet.wavenet_model(SMALL, input_size=3), seed=5, scale=0.3)
    card = _card(3, ["gain", "tone"])
    baked, baked_card = bake(model, card, {"gain": 0.3, "tone": 0.8})
    assert baked_card.input_size == 1 and baked.count_params() == model.count_params() - 2 * (4 * 4 + 4 * 2)
    x = _guitar_like(0.3, seed=6)
    reference = render_exact(model, x, 4096, True, np.array([0.3, 0.8], np.float32))
    assert metrics.esr(reference, render_exact(baked, x, 4096, True)) <= 1e-10


def test_wavenet_refuses_aidax_a_gated_nam_and_inconsistent_arrays():
    model = wavenet.wavenet_model(SMALL)
    with pytest.raises(AmpsimError, match="AIDA-X loads one LSTM layer"):
        to_aidax(model, _card())
    gated = wavenet.wavenet_model(SMALL, gated=True)
    assert gated.count_params() > model.count_params()
    with pytest.raises(AmpsimError, match="gated.*--format keras"):
        to_nam(gated, _card(), {}, 0.1)
    params = section(load_params(PROJECT / "params.yaml"), "wavenet", WavenetParams)
    broken = WavenetParams(**{**params.__dict__, "layers": [dict(SMALL[0], head_size=3), SMALL[1]]})
    with pytest.raises(AmpsimError, match=r"layers\[0\].head_size is 3; it must be the next array's channels"):
        wavenet.arrays_of(broken)


def test_layers_may_name_one_of_nams_presets():
    params = section(load_params(PROJECT / "params.yaml"), "wavenet", WavenetParams)
    for name in wavenet.PRESETS:
        arrays = wavenet.arrays_of(WavenetParams(**{**params.__dict__, "layers": name}))
        assert wavenet.size_of(arrays) == name and [a["head_bias"] for a in arrays] == [False, True]
    assert wavenet.arrays_of(WavenetParams(**{**params.__dict__, "layers": "standard"})) == _standard()  # params.yaml's list
    with pytest.raises(AmpsimError, match="`huge` is not one of NAM's presets") as caught:
        wavenet.arrays_of(WavenetParams(**{**params.__dict__, "layers": "huge"}))
    assert "standard, lite, feather, nano" in caught.value.fix


def test_a_tiny_wavenet_trains_through_ampsim_train_and_loads_in_safe_mode(tmp_path, boss_prepared):
    params = tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                         train={"architecture": "wavenet", "max_steps": 2, "max_minutes": 0},
                         wavenet={"layers": SMALL, "output_samples": 1024, "batch_size": 4,
                                  "batches_per_step": 2, "val_windows": 4})
    model_dir, reports = tmp_path / "trained", tmp_path / "reports"
    assert main(["--params", str(params), "train", "--device", "ds1", "--prepared", str(boss_prepared), "--model",
                 str(model_dir), "--reports", str(reports), "--checkpoint", str(tmp_path / "ckpt"), "--quiet",
                 "--no-mlflow"]) == 0
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["architecture"] == "wavenet" and np.isfinite(summary["best_val_loss"])
    assert summary["parameters"] == wavenet.wavenet_model(SMALL).count_params()
    model, card = load_model(model_dir)  # Keras safe mode
    assert card.architecture == "wavenet" and (card.window_samples, card.tail_samples) == (60 + 1024, 1024)
    x = _guitar_like(0.2, seed=7)
    assert np.isfinite(render_exact(model, x, 4096, True)).all()
    written = yaml.safe_load(params.read_text())["wavenet"]
    assert written["layers"] == SMALL
    # a fresh process (as `ampsim evaluate` is) has not imported the architecture that defines the layer
    # and renders on another backend (PyTorch)
    code = (f"import numpy as np; from ampsim.modelling.models import load_model; m, c = load_model({str(model_dir)!r}); "
            "print(c.architecture, np.asarray(m.predict_on_batch(np.zeros((1, 100, 1), 'float32'))).shape)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT / "src"), "KERAS_BACKEND": "torch"})
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("wavenet (1, 100, 1)"), \
        loaded.stderr[-2000:]
