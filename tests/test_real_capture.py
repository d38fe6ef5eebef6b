"""The stages on a real capture: a Boss DS-1 recorded through an interface loopback (../shared/captures)."""

import json
import shutil

import numpy as np
import soundfile as sf

from conftest import tree_digest


def test_boss_ds1_delay_is_39_samples_and_compensated(ampsim_cli, tmp_path, boss_ds1):
    captures = tmp_path / "captures"
    shutil.copytree(boss_ds1, captures / "boss-ds1")
    raw = tree_digest(captures)
    code, out, err = ampsim_cli("normalize", "--captures", str(captures), "--out", str(tmp_path / "normalized"))
    assert code == 0, err
    code, out, err = ampsim_cli("validate", "--normalized", str(tmp_path / "normalized"),
                                "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports"))
    assert code == 0, err
    assert "boss-ds1: delay 39 samples (0.81 ms), compensated" in out
    assert tree_digest(captures) == raw

    stats = json.loads((tmp_path / "normalized" / "captures.json").read_text())["captures"]["boss-ds1"]
    assert stats["input"]["source_subtype"] == "FLOAT" and stats["input"]["frames"] == 1_012_102
    assert round(stats["input"]["peak"], 3) == 0.915 and round(stats["output"]["peak"], 3) == 0.968

    dry, _ = sf.read(boss_ds1 / "input.wav", dtype="float32")
    wet, _ = sf.read(boss_ds1 / "output.wav", dtype="float32")
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    frames = {s["split"]: s["frames"] for s in manifest["segments"]}
    assert frames["train"] + frames["val"] == len(dry) - 39
    train_in, _ = sf.read(tmp_path / "prepared" / "train" / "boss-ds1" / "input.wav", dtype="float32")
    train_out, _ = sf.read(tmp_path / "prepared" / "train" / "boss-ds1" / "output.wav", dtype="float32")
    val_out, _ = sf.read(tmp_path / "prepared" / "val" / "boss-ds1" / "output.wav", dtype="float32")
    np.testing.assert_array_equal(train_in, dry[: frames["train"]])
    np.testing.assert_array_equal(train_out, wet[39 : 39 + frames["train"]])
    np.testing.assert_array_equal(val_out, wet[39 + frames["train"] :])
