"""`ampsim import`: NAM's own files (a community WaveNet 0.5.0, NAM 0.13's 0.7.0 LSTM and WaveNet) read
into ampsim render as NAM's loader renders them, re-export, register as imported versions, and every bad
file is refused whole, naming it, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import PROJECT, SHARED_TEACHERS, shared_or_skip  # noqa: E402

from ampsim.cli import main  # noqa: E402
from ampsim.core import metrics  # noqa: E402
from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.deployment.export import to_aidax, to_nam  # noqa: E402
from ampsim.deployment.nam_import import imported_model, read_nam_file  # noqa: E402
from ampsim.inference.engine import render_exact  # noqa: E402
from ampsim.modelling.models import load_model  # noqa: E402

RATE = 48000
TEACHER = SHARED_TEACHERS / "Keith_B_DS1_g6_t5.nam"  # a community WaveNet, .nam 0.5.0 (no metadata)


def _take(seconds: float = 2.0) -> np.ndarray:
    """1 s of silence (where an LSTM settles, as the state NAM stores in the file), then guitar-like notes."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * RATE)) / RATE
    notes = 0.4 * np.sin(2 * np.pi * 110 * t) * np.exp(-3 * (t % 0.25)) + 0.01 * rng.standard_normal(len(t))
    return np.concatenate([np.zeros(RATE), notes]).astype(np.float32)


def _nams_rendering(nam_models, document: dict, x: np.ndarray) -> np.ndarray:
    import torch

    net = nam_models.init_from_nam(json.loads(json.dumps(document)))
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)[None]).numpy()[0]


def _with_head_objects(document: dict) -> dict:
    """NAM 0.13's loader reads each array's `head` object, which 0.5.0 files leave out (teachers/README)."""
    document = json.loads(json.dumps(document))
    for layer in document["config"].get("layers", []):
        if "head" not in layer:
            layer["head"] = {"out_channels": layer["head_size"], "kernel_size": 1, "bias": layer["head_bias"]}
    return document


@pytest.fixture(scope="module")
def nam_files(nam_models, tmp_path_factory) -> dict[str, Path]:
    """Files as NAM 0.13 writes them (version 0.7.0): an LSTM of its own, and the teacher WaveNet re-exported."""
    import torch
    from nam.models.recurrent import LSTM

    torch.manual_seed(2018)  # NAM's LSTMs start from random weights: unseeded, the 2x8's output fell under the bound
    folder = tmp_path_factory.mktemp("nam-files")
    teacher = shared_or_skip(TEACHER, "teacher model")
    LSTM(hidden_size=16, num_layers=1, input_size=1, sample_rate=RATE).export(folder, basename="lstm-1x16")
    LSTM(hidden_size=8, num_layers=2, input_size=1, sample_rate=44100).export(folder, basename="lstm-2x8")
    nam_models.init_from_nam(_with_head_objects(json.loads(teacher.read_text()))).export(folder, basename="wavenet")
    files = {"wavenet-0.5.0": teacher, **{p.stem: p for p in folder.glob("*.nam")}}
    assert json.loads(files["wavenet"].read_text())["version"] == "0.7.0"
    return files


@pytest.mark.parametrize("name", ["wavenet-0.5.0", "wavenet", "lstm-1x16", "lstm-2x8"])
def test_an_imported_file_renders_within_esr_1e6_of_nams_loader(nam_models, nam_files, name):
    document = json.loads(nam_files[name].read_text())
    model, card = imported_model(read_nam_file(nam_files[name]), "amp")
    x = _take()
    theirs = _nams_rendering(nam_models, _with_head_objects(document), x)
    ours = render_exact(model, x, 65536, True)
    error = metrics.esr(theirs[RATE:], ours[RATE:])
    print(f"{name} (.nam {document['version']}): ESR against NAM's loader {error:.3g}")
    assert error <= 1e-6 and np.sum(ours[RATE:] ** 2) > 1.0
    assert card.sample_rate == document.get("sample_rate", 48000) and card.imported_from == nam_files[name].name


@pytest.mark.parametrize("name", ["wavenet-0.5.0", "lstm-1x16"])
def test_an_imported_model_exports_again_as_nam_and_an_lstm_as_aidax(nam_models, nam_files, name):
    nam = read_nam_file(nam_files[name])
    model, card = imported_model(nam, "amp")
    again = json.loads(json.dumps(to_nam(model, card, {}, settle_seconds=1.0)))
    x = _take()
    first = _nams_rendering(nam_models, _with_head_objects(json.loads(nam_files[name].read_text())), x)
    assert metrics.esr(first[RATE:], _nams_rendering(nam_models, again, x)[RATE:]) <= 1e-6
    if nam.architecture == "WaveNet":  # stateless: the weights come back exactly, head_scale last
        np.testing.assert_allclose(again["weights"], nam.weights, rtol=0, atol=1e-7)
    else:
        document = to_aidax(model, card)
        assert document["layers"][0]["type"] == "lstm" and document["layers"][0]["shape"][-1] == 16


def _broken(tmp_path: Path, nam_files, change) -> Path:
    document = json.loads(nam_files["lstm-1x16"].read_text())
    change(document)
    path = tmp_path / "broken.nam"
    path.write_text(json.dumps(document))
    return path


def _set(key, value):
    return lambda document: document.__setitem__(key, value)


def _config(key, value):
    return lambda document: document["config"].__setitem__(key, value)


@pytest.mark.parametrize("change, problem", [
    (_set("version", "0.4.2"), "version '0.4.2' is not one ampsim reads"),
    (_set("architecture", "SlimmableContainer"), "a NAM `SlimmableContainer` model cannot be imported"),
    (_set("architecture", "ConvNet"), "ampsim reads NAM's"),
    (lambda d: d["weights"].pop(), "the file holds 1,200 weights; its config needs 1,201"),
    (lambda d: d["weights"].__setitem__(5, float("nan")), "1 weights are NaN or infinite"),
    (_config("hidden_size", 10**9), "config.hidden_size is 1000000000; ampsim reads 1..1024"),
    (_config("num_layers", 0), "config.num_layers is 0"),
    (_config("input_size", 3), "takes 3 inputs; ampsim imports one-input"),
    (_config("bidirectional", True), "sets bidirectional"),
    (_set("sample_rate", -1), "sample_rate -1 is not a whole number of Hz"),
])
def test_a_bad_file_is_refused_naming_it(tmp_path, nam_files, change, problem):
    path = _broken(tmp_path, nam_files, change)
    with pytest.raises(AmpsimError) as caught:
        imported_model(read_nam_file(path), "amp")
    assert problem in caught.value.message and str(path) in caught.value.message and caught.value.fix


@pytest.mark.parametrize("change, problem", [
    (lambda layer: layer.update(gated=True), "is gated"),
    (lambda layer: layer.update(channels=10**6), "config.layers[0].channels is 1000000"),
    (lambda layer: layer.update(dilations=[1, 2, 10**9]), "config.layers[0].dilations are [1, 2, 1000000000]"),
    (lambda layer: layer.update(kernel_sizes=[3, 2] + [3] * 8), "different kernel sizes per layer"),
    (lambda layer: layer.update(head1x1={"active": True, "out_channels": 4, "groups": 1}), "head-1x1"),
    (lambda layer: layer.update(conv_pre_film={"active": True, "shift": True, "groups": 1}), "FiLM"),
    (lambda layer: layer.update(activation=[{"type": "LeakyReLU"}] * 10), "LeakyReLU"),
])
def test_a_wavenet_ampsim_cannot_compute_exactly_is_refused_with_the_reason(tmp_path, nam_files, change, problem):
    document = json.loads(nam_files["wavenet"].read_text())
    change(document["config"]["layers"][0])
    path = tmp_path / "odd.nam"
    path.write_text(json.dumps(document))
    with pytest.raises(AmpsimError) as caught:
        read_nam_file(path)
    assert problem in caught.value.message and str(path) in caught.value.message


def test_a_refused_file_writes_and_registers_nothing(tmp_path, capsys, isolated_mlflow):
    from mlflow import MlflowClient

    garbage = tmp_path / "garbage.nam"
    garbage.write_text("not json at all")
    code = main(["--params", str(PROJECT / "params.yaml"), "import", str(garbage), "--device", "amp",
                 "--out", str(tmp_path / "out")])
    assert code != 0 and "garbage.nam: not a .nam file (not JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert MlflowClient(isolated_mlflow).search_registered_models(filter_string="name = 'amp'") == []


def test_an_import_is_scored_on_the_devices_captures_registered_as_imported_and_can_be_promoted(
        tmp_path, capsys, nam_files, boss_prepared, isolated_mlflow, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # promoted.json goes to ./models
    source = nam_files["wavenet"]  # the DS-1 teacher as NAM 0.13 writes it, with its metadata
    params = str(PROJECT / "params.yaml")
    assert main(["--params", params, "import", str(source), "--device", "boss-ds1", "--prepared", str(boss_prepared)]) == 0
    out = capsys.readouterr().out
    model, card = load_model(tmp_path / "models" / "boss-ds1" / "imported" / "wavenet")
    assert card.imported_from == "wavenet.nam" and card.validation_esr is not None and card.context_samples
    assert f"validation ESR on boss-ds1's captures {card.validation_esr:.4f}" in out
    client = MlflowClient(isolated_mlflow)
    version = client.get_model_version("boss-ds1", "1")
    assert version.tags["imported"] == "true" and float(version.tags["val_esr"]) == pytest.approx(card.validation_esr)
    tags = client.get_run(version.run_id).data.tags
    metadata = json.loads(source.read_text())["metadata"]
    assert tags["ampsim.imported"] == "true" and tags["nam.version"] == "0.7.0"
    assert float(tags["nam.loudness"]) == pytest.approx(metadata["loudness"]) and "nam.date" in tags
    assert [a.path for a in client.list_artifacts(version.run_id, "nam")] == ["nam/wavenet.nam"]
    assert main(["--params", params, "promote", "boss-ds1", "1", "--prepared", str(boss_prepared)]) == 0
    assert str(client.get_model_version_by_alias("boss-ds1", "render").version) == "1"
