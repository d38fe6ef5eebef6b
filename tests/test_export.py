"""Exports checked against the real readers: NAM's own package for .nam, an independent reader for AIDA-X."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import aidax_reference  # noqa: E402

from ampsim.cli import main  # noqa: E402
from ampsim.core import metrics  # noqa: E402
from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.deployment.export import to_aidax, to_nam  # noqa: E402
from ampsim.inference.engine import ExactRenderer, render_exact, settled_state  # noqa: E402
from ampsim.modelling.architectures.lstm2018 import lstm2018_model  # noqa: E402
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.models import ModelCard, load_model, save_model  # noqa: E402

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
    model = _trained_like(lstm2018_model(units=16), seed=3)
    document = to_nam(model, _card("lstm2018"), {}, settle_seconds=1.0)
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
        to_aidax(lstm2018_model(8), _card("lstm2018"))


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


# --- complete .nam metadata, baked knob settings, packs, sharing fields ------------------------------

import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.resources  # noqa: E402

import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

from ampsim.deployment.export import LoudnessProbe, bake, to_nam as _to_nam  # noqa: E402
from ampsim.deployment.plugin_metadata import CaptureFacts, capture_facts, gain_index, read_loudness_input  # noqa: E402
from conftest import write_capture  # noqa: E402

FACTS = CaptureFacts(levels={"input_level_dbu": 12.2, "output_level_dbu": 16.5}, latency_samples={"test-amp": 39},
                     checks_passed=["input sample rate", "replicate (the same passage played twice sounds the same)"],
                     replicate_self_esr={"test-amp": None})


@pytest.fixture(scope="module")
def loudness_input(nam_models) -> str:
    """NAM's own reference input, read from the installed package (tests only: ampsim does not ship it)."""
    return str(importlib.resources.files("nam").joinpath("models/_resources/loudness_input.wav"))


@pytest.fixture
def nam_params(tmp_path, params_file, loudness_input):
    params = yaml.safe_load(params_file.read_text())
    params["export"]["loudness_input"] = loudness_input
    params["export"]["metadata"].update(gear_make="Boss", gear_model="DS-1", gear_type="pedal", tone_type="overdrive")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _conditioned(knobs: list[str], seed: int) -> tuple[keras.Model, ModelCard]:
    model = _trained_like(lstm_model(8, 1, False, input_size=1 + len(knobs)), seed=seed)
    return model, dataclasses.replace(_card("lstm", 1 + len(knobs)), knobs=knobs)


def test_nam_metadata_is_complete_and_each_value_matches_nams_definition(nam_models, loudness_input):
    from nam.models.metadata import Date, UserMetadata

    model = _trained_like(lstm_model(8, 1, False), seed=11)
    user = {"name": "DS-1", "modeled_by": "tests", "gear_type": "pedal", "gear_make": "Boss", "gear_model": "DS-1",
            "tone_type": "overdrive"}
    probe = LoudnessProbe(read_loudness_input(loudness_input), jit_compile=True)
    document = json.loads(json.dumps(_to_nam(model, _card("lstm"), user, 1.0, facts=FACTS, probe=probe)))
    meta = document["metadata"]
    # the file version: the released plugin loads 0.5.x only; NAM's Python loader reads the file
    assert document["version"].split(".")[:2] == ["0", "5"]
    net = nam_models.init_from_nam(document)
    assert UserMetadata(**{k: meta[k] for k in UserMetadata.model_fields}).input_level_dbu == 12.2
    assert Date(**meta["date"]).year == dt.date.today().year
    assert meta["output_level_dbu"] == 16.5 and meta["gear_make"] == "Boss"
    # loudness and gain: NAM's own computation on the loaded file, and the definition from our rendering
    assert meta["loudness"] == pytest.approx(net._metadata_loudness(), abs=1e-3)
    assert meta["gain"] == pytest.approx(float(net._metadata_gain()), abs=1e-4)
    x = read_loudness_input(loudness_input)
    ours = ExactRenderer(model, len(x), True, initial_state=settled_state(model, 1.0, RATE))(x)
    assert meta["loudness"] == pytest.approx(20 * np.log10(np.sqrt(np.mean(ours.astype(np.float64) ** 2))), abs=1e-6)
    assert gain_index(np.linspace(0, 1, 11)) == pytest.approx(0.0, abs=1e-12) and gain_index(np.ones(11)) == 1.0
    assert 0.0 <= meta["gain"] <= 1.0
    training = meta["training"]
    assert training["trainer"] == "ampsim" and training["trainer_version"]
    assert training["validation_esr"] == 0.05 and training["latency_samples"] == {"test-amp": 39}
    assert training["checks_passed"] == FACTS.checks_passed and training["settings"] == {"ignore_checks": False}
    assert meta["ampsim"] == {"size": "custom", "knobs": {}, "captures": ["test-amp"]}


def test_a_default_install_writes_nams_loudness_and_gain_without_pytorch(nam_models, tmp_path, params_file):
    """`make setup` installs neural-amp-modeler's files but not PyTorch: export must find NAM's reference input
    without importing NAM, and write the values NAM's own loader computes (within 0.1 dB)."""
    import subprocess
    import sys

    model = _trained_like(lstm_model(8, 1, False), seed=21)
    save_model(model, _card("lstm"), tmp_path / "trained")
    blocked = ("import sys\n"
               "class NoTorch:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'nam'):\n"
               "            raise ModuleNotFoundError(f'no module named {name!r} (blocked: a default install)')\n"
               "sys.meta_path.insert(0, NoTorch())\n"
               "from ampsim.cli import main\n"
               "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", blocked, "--params", str(params_file), "export",
                             str(tmp_path / "trained"), "--format", "nam", "-o", str(tmp_path / "model.nam"),
                             "--prepared", str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "loudness and gain are left out" not in result.stderr
    document = json.loads((tmp_path / "model.nam").read_text())
    net = nam_models.init_from_nam(document)
    assert document["metadata"]["loudness"] == pytest.approx(net._metadata_loudness(), abs=0.1)
    assert document["metadata"]["gain"] == pytest.approx(float(net._metadata_gain()), abs=0.01)


def test_without_neural_amp_modeler_loudness_is_left_out_with_a_note(monkeypatch, capsys):
    import importlib.metadata
    from pathlib import Path

    from ampsim.deployment.plugin_metadata import loudness_input_path

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    assert loudness_input_path("nam") is None
    assert "`make setup` installs its files" in capsys.readouterr().err
    assert loudness_input_path(None) is None and loudness_input_path("ref.wav") == Path("ref.wav")


def test_a_baked_knob_setting_renders_in_nams_loader_as_ampsim_render_does(nam_models, tmp_path, ampsim_cli):
    model, card = _conditioned(["gain"], seed=12)
    save_model(model, card, tmp_path / "trained")
    code, out, err = ampsim_cli("export", str(tmp_path / "trained"), "--format", "nam", "--knob", "gain=0.6",
                                "-o", str(tmp_path / "baked.nam"), "--prepared", str(tmp_path / "none"))
    assert code == 0, err
    document = json.loads((tmp_path / "baked.nam").read_text())
    assert document["config"]["input_size"] == 1 and document["metadata"]["ampsim"]["knobs"] == {"gain": 0.6}
    # `ampsim render` starts from a zero state, the plugin from where the model settles on silence
    # (export.settle_seconds = 1 s): render 1 s of silence first, then compare the rest
    x = _guitar_like(1.0, seed=13)
    sf.write(tmp_path / "di.wav", np.concatenate([np.zeros(RATE, np.float32), x]), RATE, subtype="FLOAT")
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "wet.wav"), "--model",
                              str(tmp_path / "trained"), "--knob", "gain=0.6", "--method", "exact", "--quiet")
    assert code == 0, err
    ours = sf.read(tmp_path / "wet.wav", dtype="float32")[0][RATE:]
    theirs = _through_nam(nam_models, document, x)
    error = metrics.esr(ours, theirs)
    print(f"baked gain=0.6: ESR between NAM's loader and ampsim render = {error:.3g}")
    assert error <= 1e-6 and np.sum(ours**2) > 1.0


def test_baking_is_exact_for_two_knobs_and_checks_the_setting():
    model, card = _conditioned(["gain", "tone"], seed=14)
    baked, baked_card = bake(model, card, {"gain": 0.3, "tone": 0.8})
    assert baked_card.input_size == 1 and baked_card.knobs == []
    x = _guitar_like(0.2, seed=15)
    reference = render_exact(model, x, 4096, True, np.array([0.3, 0.8], np.float32))
    assert metrics.esr(reference, render_exact(baked, x, 4096, True)) <= 1e-10
    with pytest.raises(AmpsimError, match="no value given for 'tone'"):
        bake(model, card, {"gain": 0.3})
    with pytest.raises(AmpsimError, match="conditioned on knobs \\(gain, tone\\).*--knob gain=0.5 --knob tone=0.5"):
        _to_nam(model, card, {}, 0.1)


def test_a_knob_drive_bakes_exactly_into_a_nam_file_and_aidax_refuses_it_with_the_way_out(nam_models):
    """lstm.knob_drive: the knobs also scale the audio in, exp(knobs @ w); at one setting that is a constant gain,
    which baking moves into the first layer's audio row, so the .nam plays the model exactly."""
    model = _trained_like(lstm_model(8, 1, False, input_size=3, knob_drive=True), seed=21)
    model.get_layer("knob_drive").set_weights([np.array([[2.0], [-1.0]], np.float32)])  # +-17 dB / -9 dB per unit
    card = dataclasses.replace(_card("lstm", 3), knobs=["gain", "tone"])
    x = _guitar_like(0.3, seed=22)
    for setting in ({"gain": 0.9, "tone": 0.1}, {"gain": 0.1, "tone": 0.9}):
        baked, _ = bake(model, card, setting)
        vector = np.array([setting["gain"], setting["tone"]], np.float32)
        reference = render_exact(model, x, 4096, True, vector)
        assert metrics.esr(reference, render_exact(baked, x, 4096, True)) <= 1e-10
    loud, quiet = (render_exact(model, x, 4096, True, np.array(v, np.float32)) for v in ((1.0, 0.0), (0.0, 1.0)))
    assert not np.allclose(loud, quiet, atol=1e-3)  # the drive does change what the model plays
    document = _to_nam(model, card, {}, 1.0, knobs={"gain": 0.9, "tone": 0.1})
    baked, _ = bake(model, card, {"gain": 0.9, "tone": 0.1})
    ours = ExactRenderer(baked, 8192, True, initial_state=settled_state(baked, 1.0, RATE))(x)
    assert metrics.esr(ours, _through_nam(nam_models, document, x)) <= 1e-6 and np.sum(ours**2) > 1.0
    with pytest.raises(AmpsimError, match="lstm.knob_drive: true.*AIDA-X") as refused:
        to_aidax(model, card)
    assert "--format nam --knob" in refused.value.fix


def test_a_grid_pack_has_every_setting_loadable_with_a_readme_of_loudness(nam_models, tmp_path, nam_params, capsys):
    model, card = _conditioned(["gain"], seed=16)
    save_model(model, card, tmp_path / "trained")
    args = ["--params", str(nam_params), "export", str(tmp_path / "trained"), "--format", "nam"]
    assert main([*args, "--grid", "3", "-o", str(tmp_path / "pack")]) == 0
    files = sorted((tmp_path / "pack").glob("*.nam"))
    assert [f.name for f in files] == [f"test-amp_gain-{v}.nam" for v in ("0.00", "0.50", "1.00")]
    readme = (tmp_path / "pack" / "README.md").read_text()
    for file in files:
        document = json.loads(file.read_text())
        nam_models.init_from_nam(document)
        meta = document["metadata"]
        assert f"| {file.name} | {meta['ampsim']['knobs']['gain']:g} | {meta['loudness']:.1f} | {meta['gain']:.2f} |" \
            in readme
    assert "3 knob settings" in capsys.readouterr().out
    for bad, problem in ((["--grid", "1", "-o", str(tmp_path / "p1")], "--grid 1 gives no range"),
                         (["--grid", "3", "-o", str(tmp_path / "pack")], "a pack is written into a new folder"),
                         (["--grid", "3", "--knob", "gain=0.5", "-o", str(tmp_path / "p2")], "nothing is left to grid")):
        assert main([*args, *bad]) == 1
        assert problem in capsys.readouterr().err


def test_aidax_keeps_live_knobs_and_writes_the_interface_gains(tmp_path):
    card = dataclasses.replace(_card("lstm", 2), knobs=["gain"])
    model = _trained_like(lstm_model(16, 1, False, input_size=2), seed=17)  # AIDA-X takes 16 units, not 8
    document = json.loads(json.dumps(to_aidax(model, card, metadata={"gear_make": "Boss"}, facts=FACTS,
                                              interface_level_dbu=12.0)))
    assert document["in_shape"] == [None, None, 2] and document["ampsim"]["knobs"] == ["gain"]
    assert document["in_gain"] == pytest.approx(12.0 - 12.2) and document["out_gain"] == pytest.approx(16.5 - 12.0)
    assert document["metadata"]["samplerate"] == RATE and document["metadata"]["gear_make"] == "Boss"
    assert document["metadata"]["size"] == "custom" and document["metadata"]["architecture"] == "LSTM"
    x = _guitar_like(0.1, seed=18)
    setting = np.array([0.4], np.float32)
    ours = 10 ** (document["out_gain"] / 20) * render_exact(model, 10 ** (document["in_gain"] / 20) * x, 2048, True,
                                                            setting)
    theirs = aidax_reference.run(document, np.column_stack([x, np.full_like(x, 0.4)]))
    assert metrics.esr(ours, theirs) <= 1e-6
    unstated = to_aidax(model, card, facts=dataclasses.replace(FACTS, levels=dict.fromkeys(FACTS.levels)),
                        interface_level_dbu=12.0)
    assert "in_gain" not in unstated and "out_gain" not in unstated


def test_capture_levels_reach_the_files_through_validate_and_the_summary_is_printed(
        nam_models, tmp_path, pair, nam_params, ampsim_cli):
    write_capture(tmp_path / "captures", "test-amp", *pair, meta={"input_level_dbu": 12.2, "output_level_dbu": 16.5})
    for stage in (["normalize", "--captures", str(tmp_path / "captures"), "--out", str(tmp_path / "normalized")],
                  ["validate", "--normalized", str(tmp_path / "normalized"), "--out", str(tmp_path / "prepared"),
                   "--reports", str(tmp_path / "reports")]):
        assert ampsim_cli(*stage)[0] == 0
    facts = capture_facts(tmp_path / "prepared", ["test-amp"])
    assert facts.levels == {"input_level_dbu": 12.2, "output_level_dbu": 16.5}
    assert 20 <= facts.latency_samples["test-amp"] <= 24 and len(facts.checks_passed) >= 12
    save_model(_trained_like(lstm_model(16, 1, False), seed=19), _card("lstm"), tmp_path / "trained")
    code, out, err = ampsim_cli("export", str(tmp_path / "trained"), "--format", "nam", "-o", str(tmp_path / "a.nam"),
                                "--prepared", str(tmp_path / "prepared"), params=nam_params)
    assert code == 0, err
    meta = json.loads((tmp_path / "a.nam").read_text())["metadata"]
    assert meta["input_level_dbu"] == 12.2 and meta["training"]["latency_samples"] == facts.latency_samples
    paragraph = out.strip().split("\n")[-1]
    print(paragraph)
    for text in ("Boss DS-1 (pedal, overdrive)", "NAM LSTM (1 x 16 units, size custom) at 48 kHz",
                 "validation ESR 0.0500", f"Loudness {meta['loudness']:.1f} dB", "0 dBFS = input 12.2 dBu / output "
                 "16.5 dBu", "data checks passed (no repeated passage", "latency of"):
        assert text in paragraph
    code, _, err = ampsim_cli("export", str(tmp_path / "trained"), "--format", "aidax", "-o", str(tmp_path / "a.json"),
                              "--prepared", str(tmp_path / "prepared"), "--knob", "gain=0.5")
    assert code == 1 and "keeps the model's knobs" in err
