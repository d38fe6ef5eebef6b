"""`ampsim add`: a capture comes in checked, copied under the names the pipeline reads, described, tracked by
DVC (not git) and listed as a device; bad input is refused before anything is written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import PROJECT, tool_env, write_capture

from ampsim.data.intake import params_with_device


@pytest.fixture
def project(tmp_path):
    """A git + DVC repo with the project's params.yaml and dvc.yaml (the `demo` stage's outs)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        (repo / name).write_text((PROJECT / name).read_text())
    env = tool_env()
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=repo, env=env, check=True)
    return repo


def add(repo, ampsim_cli, monkeypatch, *args):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(repo.parent / "dvc-site-cache"))
    return ampsim_cli("add", *map(str, args), params=repo / "params.yaml")


def test_a_flac_pair_with_any_names_becomes_a_dvc_tracked_device(project, tmp_path, pair, ampsim_cli, monkeypatch):
    dry, wet = pair
    takes = tmp_path / "takes"
    takes.mkdir()
    sf.write(takes / "DS1 DI take 3.flac", dry, 48000, subtype="PCM_24")
    sf.write(takes / "DS1 amp take 3.flac", wet, 48000, subtype="PCM_24")
    (takes / "notes.txt").write_text("dist 7")  # not audio: left alone
    before = {p.name: p.read_bytes() for p in takes.iterdir()}
    code, out, err = add(project, ampsim_cli, monkeypatch, takes, "--device", "ds1")
    assert code == 0, err
    device = project / "data" / "captures" / "ds1"
    assert sorted(p.name for p in device.iterdir()) == ["capture.yaml", "input.flac", "output.flac"]
    assert (device / "input.flac").read_bytes() == before["DS1 DI take 3.flac"]
    assert {p.name: p.read_bytes() for p in takes.iterdir()} == before  # the originals are untouched
    assert (project / "data" / "captures" / "ds1.dvc").is_file() and "/ds1" in (
        project / "data" / "captures" / ".gitignore").read_text()
    params = (project / "params.yaml").read_text()
    assert yaml.safe_load(params)["devices"] == ["demo", "ds1"]
    recipes = yaml.safe_load(params)["recipes"]
    assert list(recipes) == ["demo", "ds1"] and recipes["ds1"] == {}  # the train stage depends on its entry
    assert "# one model each" in params and "# per device" in params  # the file's comments are kept
    assert "dvc repro" in out
    # the pipeline reads it: normalize decodes the FLAC pair
    code, _, err = ampsim_cli("normalize", "--captures", str(device), "--out", str(tmp_path / "normalized"))
    assert code == 0, err


def test_knob_settings_of_one_device_go_into_setting_folders(project, tmp_path, pair, ampsim_cli, monkeypatch):
    dry, wet = pair
    for gain in (0.3, 0.7):
        write_capture(tmp_path / "src", f"g{gain}", dry, gain * wet)
        code, _, err = add(project, ampsim_cli, monkeypatch, tmp_path / "src" / f"g{gain}" / "input.wav",
                           tmp_path / "src" / f"g{gain}" / "output.wav", "--device", "jcm", "--knob", f"gain={gain}")
        assert code == 0, err
    device = project / "data" / "captures" / "jcm"
    assert sorted(p.name for p in device.iterdir()) == ["gain-0.3", "gain-0.7"]
    assert yaml.safe_load((device / "gain-0.7" / "capture.yaml").read_text())["knobs"] == {"gain": 0.7}
    assert yaml.safe_load((project / "params.yaml").read_text())["devices"] == ["demo", "jcm"]  # listed once
    code, _, err = add(project, ampsim_cli, monkeypatch, tmp_path / "src" / "g0.3", "--device", "jcm",
                       "--knob", "gain=0.3")
    assert code == 1 and "already has the setting gain-0.3" in err and "--force" in err
    # a device trains at its captures' one rate: a setting at another is refused, naming the one it disagrees with
    write_capture(tmp_path / "src", "g0.5", dry, 0.5 * wet, dry_rate=44100, wet_rate=44100)
    code, _, err = add(project, ampsim_cli, monkeypatch, tmp_path / "src" / "g0.5", "--device", "jcm",
                       "--knob", "gain=0.5")
    assert code == 1 and "the DI is at 44100 Hz, but the device's capture 'gain-0.3' is at 48000 Hz" in err, err
    assert "g0.5/input.wav" in err and "Fix: export this capture at 48000 Hz" in err
    assert sorted(p.name for p in device.iterdir()) == ["gain-0.3", "gain-0.7"]


@pytest.mark.parametrize("case", ["rates", "lengths", "three files", "unclear names", "generated", "not audio",
                                  "long name"])
def test_bad_input_is_refused_before_anything_is_written(project, tmp_path, pair, ampsim_cli, monkeypatch, case):
    dry, wet = pair
    source = tmp_path / "in"
    write_capture(tmp_path, "in", dry, wet, wet_rate=44100 if case == "rates" else 48000)
    args, device, expected = [source], "amp", {
        "rates": "the DI is at 48000 Hz and the amp's recording at 44100 Hz",
        "lengths": "not one take recorded twice at once",
        "three files": "the folder holds 3 audio files",
        "unclear names": "cannot tell which of",
        "generated": "device 'demo' is generated by the `demo` stage",
        "not audio": "not an audio file libsndfile reads",
        "long name": "is 300 characters long; a name becomes a folder",
    }[case]
    if case == "lengths":
        sf.write(source / "output.wav", np.concatenate([wet, wet]), 48000, subtype="FLOAT")
    elif case == "three files":
        sf.write(source / "room mic.wav", wet, 48000)
    elif case == "unclear names":
        (source / "input.wav").rename(source / "take a.wav")
        (source / "output.wav").rename(source / "take b.wav")
    elif case == "generated":
        device = "demo"
    elif case == "long name":
        device = "a" * 300
    elif case == "not audio":
        (tmp_path / "readme.txt").write_text("hello")
        args = [tmp_path / "readme.txt", source / "output.wav"]
    code, _, err = add(project, ampsim_cli, monkeypatch, *args, "--device", device)
    assert code == 1 and expected in err, err
    assert not (project / "data").exists()
    assert yaml.safe_load((project / "params.yaml").read_text())["devices"] == ["demo"]


@pytest.mark.parametrize("text", [
    "devices: [demo]\nrecipes: {demo: {}}\n",
    "devices: [demo]\nrecipes:\n  demo: {}    # shared\n  # a comment\n  jcm:\n    lstm: {hidden_size: 24}\n\naudio: {}\n",
    "devices: [demo]\n",
    "devices: [demo]\nrecipes:\n",
])
def test_params_gain_a_recipe_entry_whatever_the_layout(text):
    edited = params_with_device(text, "ds1", Path("params.yaml"))
    loaded = yaml.safe_load(edited)
    assert loaded["devices"] == ["demo", "ds1"] and loaded["recipes"]["ds1"] == {}
    before = yaml.safe_load(text)
    assert {k: v for k, v in loaded["recipes"].items() if k != "ds1"} == (before.get("recipes") or {})
    assert params_with_device(edited, "ds1", Path("params.yaml")) is None  # listed, with its entry: unchanged


@pytest.mark.parametrize("text", [
    "devices: [demo]\nrecipes: {demo: {}}\n",
    "devices: [demo]\nrecipes:\n  demo: {fit: {pre_emphasis: 0.85}}  # why\n                 # why, went on\n  ds1: {}\n",
    "devices: [demo]\nrecipes:\n  demo:   # the amp\n    lstm: {hidden_size: 24}\n    # a note\n    fit:\n      patience: 3\n  ds1: {}\n",
])
def test_a_recipe_setting_is_set_whatever_the_layout_and_the_rest_kept(text):
    from ampsim.data.intake import params_with_recipe_setting

    edited = params_with_recipe_setting(text, "demo", "train", "init_from", "models:/amp@render", Path("params.yaml"))
    before, after = yaml.safe_load(text), yaml.safe_load(edited)
    assert after["recipes"]["demo"] == {**(before["recipes"]["demo"] or {}), "train": {"init_from": "models:/amp@render"}}
    assert after["recipes"]["ds1" if "ds1" in before["recipes"] else "demo"] is not None
    assert {k: v for k, v in after.items() if k != "recipes"} == {k: v for k, v in before.items() if k != "recipes"}
    assert ("# why" in edited) == ("# why" in text) and ("went on" in edited) == ("went on" in text)  # comments stay
    assert ("# the amp" in edited) == ("# the amp" in text)
