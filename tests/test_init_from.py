"""Fine-tuning (`train.init_from`, `ampsim init-from`): a training starts from another model's weights where the
recipe's architecture and size match; a knob-conditioned device starts from a plain model that plays the same
at every setting; every mismatch is refused naming the file, with nothing written. The DVC side (the start
as a dependency of the train stage) is in test_dvc_pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")

from conftest import PROJECT, SHARED_TEACHERS, shared_or_skip, tiny_params, trained_like  # noqa: E402

from ampsim.cli import _train_config, main  # noqa: E402
from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.core.params import load_params  # noqa: E402
from ampsim.modelling.models import ModelCard, load_model, save_model  # noqa: E402
from ampsim.modelling.training import build_model  # noqa: E402
from ampsim.modelling.warm_start import START_FOLDER, start_from, starting_weights  # noqa: E402


def _config(architecture: str, **sections):
    params = load_params(PROJECT / "params.yaml")
    params["train"] = {**params["train"], "architecture": architecture}
    params["wavenet"] = {**params["wavenet"], "layers": "feather"}
    for name, settings in sections.items():
        params[name] = {**params[name], **settings}
    return _train_config(params, "params.yaml", 48000)


def test_knob_bends_without_the_knob_drive_is_refused_with_the_fix():
    with pytest.raises(AmpsimError, match="lstm.knob_bends bends the knobs in the knob drive, which is off") as refused:
        build_model(_config("lstm", lstm={"knob_bends": True}), knobs=1, knots=[[0.5]])
    assert str(refused.value.path) == "params.yaml" and "lstm.knob_drive: true" in refused.value.fix


@pytest.mark.parametrize("architecture", ["lstm", "lstm-drive", "lstm-bend", "wavenet"])  # the 2018 model: no knobs
def test_a_conditioned_model_started_from_a_plain_one_plays_it_at_every_setting(architecture):
    drive = {"lstm-drive": {"knob_drive": True}, "lstm-bend": {"knob_drive": True, "knob_bends": True}}
    config = _config("lstm", lstm=drive[architecture]) if architecture in drive else _config(architecture)
    plain = trained_like(build_model(config), seed=1, scale=0.2)
    conditioned = build_model(config, knobs=2, knots=[[0.2, 0.5], [0.6]])
    conditioned.set_weights(starting_weights(conditioned, plain, 2, "start", "the recipe"))
    x = np.random.default_rng(0).normal(0, 0.2, (1, 6000, 1)).astype(np.float32)
    expected = plain.predict(x, verbose=0)
    for setting in ((0.0, 0.0), (0.3, 1.0)):
        knobs = np.broadcast_to(np.array(setting, np.float32), (1, 6000, 2))
        played = conditioned.predict(np.concatenate([x, knobs], -1), verbose=0)
        np.testing.assert_allclose(played, expected, atol=1e-6)


def test_a_model_of_another_size_or_with_knobs_is_refused_naming_the_file(tmp_path):
    start = build_model(_config("lstm", lstm={"hidden_size": 8}))
    with pytest.raises(AmpsimError, match=r"weight 0 has shape \(1, 32\), the recipe needs \(1, 64\)") as refused:
        starting_weights(build_model(_config("lstm")), start, 0, tmp_path / "x.keras", "the recipe")
    assert str(refused.value.path) == str(tmp_path / "x.keras") and "size" in refused.value.fix
    conditioned = build_model(_config("lstm"), knobs=1)
    with pytest.raises(AmpsimError, match=r"takes 1 knob\(s\), this device's model 0"):
        starting_weights(build_model(_config("lstm")), conditioned, 0, "x", "the recipe")
    save_model(start, ModelCard("lstm", 48000, 1, 0, 0, [], None), tmp_path / START_FOLDER)
    with pytest.raises(AmpsimError, match="the starting model is a `lstm`, this recipe a `wavenet`"):
        start_from(build_model(_config("wavenet")), tmp_path / START_FOLDER, "wavenet", 0, "this recipe")
    with pytest.raises(AmpsimError, match="the device has no starting model") as missing:
        start_from(build_model(_config("lstm")), tmp_path / "nothing", "lstm", 0, "this recipe")
    assert "ampsim init-from" in missing.value.fix


def test_training_starts_from_the_kept_model(tmp_path, boss_prepared):
    """With a learning rate of ~0, a step of training leaves the start as it was: the trained model is it,
    also through the truncated back-propagation twin, which carries the weights during training."""
    params_file = tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                              train={"max_steps": 1, "init_from": "ds1-neighbour"},
                              fit={"learning_rate": 1e-12, "final_learning_rate": 1e-12})
    params = yaml.safe_load(params_file.read_text())
    start = trained_like(build_model(_train_config(params, "params.yaml", 48000)), seed=5, scale=0.2)
    captures = tmp_path / "captures" / "ds1"
    save_model(start, ModelCard("lstm", 48000, 1, 0, 0, [], None), captures / START_FOLDER)
    assert main(["--params", str(params_file), "train", "--device", "ds1", "--captures", str(tmp_path / "captures"),
                 "--prepared", str(boss_prepared), "--model", str(tmp_path / "model"), "--reports",
                 str(tmp_path / "reports"), "--checkpoint", str(tmp_path / "ckpt"), "--quiet", "--no-mlflow"]) == 0
    trained, _ = load_model(tmp_path / "model")
    for got, kept in zip(trained.get_weights(), start.get_weights()):
        np.testing.assert_allclose(got, kept, atol=1e-6)
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["init_from"] == "ds1-neighbour"


@pytest.fixture
def studio(tmp_path, pair, monkeypatch):
    """A project folder with one plain device `amp` (8 units) and one knob-conditioned device `jcm`."""
    from conftest import write_capture

    dry, wet = pair
    params = yaml.safe_load(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml").read_text())
    params["devices"], params["recipes"] = ["amp", "jcm"], {"amp": {}, "jcm": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_capture(tmp_path / "data" / "captures", "amp", dry, wet)
    for gain in (0.3, 0.7):
        write_capture(tmp_path / "data" / "captures" / "jcm", f"gain-{gain}", dry, gain * wet, meta={"knobs": {"gain": gain}})
    config = _train_config(params, "params.yaml", 48000)
    save_model(trained_like(build_model(config), seed=2), ModelCard("lstm", 48000, 1, 0, 0, [], None, device="amp"),
               tmp_path / "models" / "amp" / "release")
    save_model(trained_like(build_model(config, knobs=1), seed=3), ModelCard("lstm", 48000, 2, 0, 0, [], None, knobs=["gain"]),
               tmp_path / "models" / "jcm" / "release")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _init(studio, capsys, *args):
    capsys.readouterr()
    code = main(["--params", str(studio / "params.yaml"), "init-from", *args, "--no-dvc"])
    return code, *capsys.readouterr()


def test_init_from_keeps_the_start_beside_the_captures_and_sets_the_recipe(studio, capsys):
    code, out, err = _init(studio, capsys, "jcm", "amp")  # a plain model starts the conditioned device
    assert code == 0, err
    kept, card = load_model(studio / "data" / "captures" / "jcm" / START_FOLDER)
    assert card.device == "amp" and "device amp's released model" in out
    source = json.loads((studio / "data" / "captures" / "jcm" / START_FOLDER / "source.json").read_text())
    assert source["init_from"] == "amp"
    assert yaml.safe_load((studio / "params.yaml").read_text())["recipes"]["jcm"] == {"train": {"init_from": "amp"}}
    # the captures' readers do not take it for a knob setting
    from ampsim.data.captures import find_captures

    assert [c.name for c in find_captures(studio / "data" / "captures" / "jcm")] == ["gain-0.3", "gain-0.7"]


def test_a_nam_file_starts_a_device_of_its_architecture(studio, capsys, nam_models):
    teacher = shared_or_skip(SHARED_TEACHERS / "Keith_B_DS1_g6_t5.nam", "teacher")
    code, _, err = _init(studio, capsys, "amp", str(teacher))
    assert code == 1 and "the starting model is a `wavenet`; device amp trains a `lstm`" in err
    params = yaml.safe_load((studio / "params.yaml").read_text())
    params["recipes"]["amp"] = {"train": {"architecture": "wavenet"}, "wavenet": {"layers": "standard"}}
    (studio / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, out, err = _init(studio, capsys, "amp", str(teacher))
    assert code == 0 and "NAM WaveNet, file version 0.5.0" in out, err
    assert yaml.safe_load((studio / "params.yaml").read_text())["recipes"]["amp"]["train"] == {
        "architecture": "wavenet", "init_from": str(teacher)}


@pytest.mark.parametrize("source, words", [
    ("jcm", "takes 1 knob(s), this device's model 0"),      # conditioned -> plain
    ("nowhere", "cannot tell what the starting model 'nowhere' is"),
    ("models:/amp@render", "models:/amp@render"),          # no such registered model
])
def test_a_source_that_does_not_fit_is_refused_and_nothing_is_written(studio, capsys, source, words):
    before = (studio / "params.yaml").read_text()
    code, _, err = _init(studio, capsys, "amp", source)
    assert code == 1 and words in err and "Fix:" in err and "Traceback" not in err, err
    assert (studio / "params.yaml").read_text() == before
    assert not (studio / "data" / "captures" / "amp" / START_FOLDER).exists()


def test_a_device_must_be_listed(studio, capsys):
    code, _, err = _init(studio, capsys, "ghost", "amp")
    assert code == 1 and "device 'ghost' is not in params.yaml's `devices`" in err
