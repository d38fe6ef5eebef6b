"""The stages on a real capture: a Boss DS-1 recorded through an interface loopback (../shared/captures).

Its wet side leads its DI: the pedal's response starts 15 samples before the DI that drives it (the cross-
correlation peaks at 39, which is where tools that align on the peak put it, asking the model to predict 54
samples of the future). validate refuses it as it is, says the files are not swapped, and names the figure
to state; with that figure stated, the DI is shifted ahead.
"""

import json
import shutil

import numpy as np
import soundfile as sf

from conftest import BOSS_DS1_LATENCY, tree_digest


def _validate(ampsim_cli, tmp_path):
    code, out, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"), "--out", str(tmp_path / "normalized"))
    assert code == 0, err
    return ampsim_cli("validate", "--normalized", str(tmp_path / "normalized"),
                      "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports"))


def test_boss_ds1_as_it_is_is_refused_because_its_wet_side_leads(ampsim_cli, tmp_path, boss_ds1):
    captures = tmp_path / "captures"
    shutil.copytree(boss_ds1, captures / "boss-ds1")
    raw = tree_digest(captures)
    code, out, err = _validate(ampsim_cli, tmp_path)
    assert code == 1
    assert "capture 'boss-ds1'" in err and "boss-ds1/output.wav" in err
    assert "the wet side cannot lead the DI" in err and "an onset 15 samples before the DI" in err
    assert "correlation peak at 39" in err
    assert "the files are not swapped" in err and f"latency_samples: {BOSS_DS1_LATENCY}" in err
    assert "Traceback" not in err
    assert tree_digest(captures) == raw and not (tmp_path / "prepared").exists()


def test_boss_ds1_with_its_latency_stated_shifts_the_di_ahead(ampsim_cli, tmp_path, boss_ds1):
    captures = tmp_path / "captures"
    shutil.copytree(boss_ds1, captures / "boss-ds1")
    (captures / "boss-ds1" / "capture.yaml").write_text(f"latency_samples: {BOSS_DS1_LATENCY}\n")
    raw = tree_digest(captures)
    code, out, err = _validate(ampsim_cli, tmp_path)
    assert code == 0, err
    assert f"boss-ds1: latency {BOSS_DS1_LATENCY} samples (-0.40 ms), stated in capture.yaml" in out
    assert tree_digest(captures) == raw

    stats = json.loads((tmp_path / "normalized" / "captures.json").read_text())["captures"]["boss-ds1"]
    assert stats["input"]["source_subtype"] == "FLOAT" and stats["input"]["frames"] == 1_012_102
    assert round(stats["input"]["peak"], 3) == 0.915 and round(stats["output"]["peak"], 3) == 0.968

    lead = -BOSS_DS1_LATENCY
    dry, _ = sf.read(boss_ds1 / "input.wav", dtype="float32")
    wet, _ = sf.read(boss_ds1 / "output.wav", dtype="float32")
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    frames = {s["split"]: s["frames"] for s in manifest["segments"]}
    assert {s["delay_samples"] for s in manifest["segments"]} == {BOSS_DS1_LATENCY}
    assert frames["train"] + frames["val"] == len(dry) - lead
    train_in, _ = sf.read(tmp_path / "prepared" / "train" / "boss-ds1" / "input.wav", dtype="float32")
    train_out, _ = sf.read(tmp_path / "prepared" / "train" / "boss-ds1" / "output.wav", dtype="float32")
    val_out, _ = sf.read(tmp_path / "prepared" / "val" / "boss-ds1" / "output.wav", dtype="float32")
    np.testing.assert_array_equal(train_in, dry[lead : lead + frames["train"]])
    np.testing.assert_array_equal(train_out, wet[: frames["train"]])
    np.testing.assert_array_equal(val_out, wet[frames["train"] : frames["train"] + frames["val"]])
