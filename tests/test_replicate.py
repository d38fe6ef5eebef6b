"""The replicate check of `validate`: a passage the DI plays twice must sound the same twice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import signal

from ampsim.data.demo import synth_di, virtual_amp
from ampsim.data.replicate import find_repeat, self_esr
from conftest import RATE, write_capture

LFO_HZ = 0.13  # slow, and not a whole number of cycles between the two takes


def repeated_di(seconds_between: float = 6.0) -> np.ndarray:
    """A capture signal that plays a 3 s passage at the start and again at the end, as NAM's does."""
    passage = synth_di(3.0, RATE, seed=11)
    return np.concatenate([passage, synth_di(seconds_between, RATE, seed=12), passage])


def lfo_filtered_amp(di: np.ndarray, depth: float) -> np.ndarray:
    """The virtual amp with a slow LFO sweeping a low-pass filter after it (an auto-wah / filter-modulation
    effect): a crossfade, driven by the LFO, between the amp's output and its 700 Hz low-passed copy."""
    wet = virtual_amp(di, RATE, gain=0.5, latency_ms=0.5)
    muffled = signal.sosfilt(signal.butter(2, 700.0, "lowpass", fs=RATE, output="sos"), wet)
    lfo = 0.5 + 0.5 * np.sin(2 * np.pi * LFO_HZ * np.arange(len(wet)) / RATE)
    return ((1 - depth * lfo) * wet + depth * lfo * muffled).astype(np.float32)


def _validate(ampsim_cli, tmp_path, dry, wet):
    write_capture(tmp_path / "captures", "rig", dry, wet)
    code, out, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"),
                                "--out", str(tmp_path / "normalized"))
    assert code == 0, err
    code, out, err = ampsim_cli("validate", "--normalized", str(tmp_path / "normalized"),
                                "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports"))
    return code, out, err, json.loads((tmp_path / "reports" / "report.json").read_text())


def test_the_repeated_passage_is_found_wherever_it_is():
    passage, other = synth_di(3.0, RATE, seed=21), synth_di(7.0, RATE, seed=22)
    dry = np.concatenate([other[: 2 * RATE], passage, other[2 * RATE :], passage, other[: RATE]])
    repeat = find_repeat(dry, RATE, 2.0, 1e-3, 10.0, -60.0)
    assert repeat is not None
    assert abs(repeat.start - 2 * RATE) <= RATE // 10 and repeat.lag == len(passage) + 5 * RATE
    assert repeat.length >= 2.5 * RATE
    assert find_repeat(synth_di(12.0, RATE, seed=23), RATE, 2.0, 1e-3, 10.0, -60.0) is None


def test_self_esr_is_tiny_for_static_gear_and_large_for_a_modulated_filter():
    dry = repeated_di()
    repeat = find_repeat(dry, RATE, 2.0, 1e-3, 10.0, -60.0)
    assert self_esr(virtual_amp(dry, RATE, 0.5, 0.0), repeat) < 0.005  # the filters' tails differ a little
    assert self_esr(lfo_filtered_amp(dry, depth=0.8), repeat) > 0.01


def test_validate_fails_a_time_varying_effect_naming_the_likely_causes(ampsim_cli, tmp_path):
    dry = repeated_di()
    code, _, err, report = _validate(ampsim_cli, tmp_path, dry, lfo_filtered_amp(dry, depth=0.8))
    assert code == 1
    assert "replicate (the same passage played twice sounds the same) failed: measured self-ESR" in err
    assert "rig/output.wav" in err
    for cause in ("noise", "drift", "modulation", "flanger"):
        assert cause in err
    assert not report["passed"] and report["captures"][0]["replicate_self_esr"] > 0.01
    assert not (tmp_path / "prepared").exists()


def test_validate_passes_static_gear_and_records_the_self_esr(ampsim_cli, tmp_path):
    dry = repeated_di()
    code, out, err, report = _validate(ampsim_cli, tmp_path, dry, virtual_amp(dry, RATE, 0.5, 0.5))
    assert code == 0, err
    assert report["captures"][0]["replicate_self_esr"] < 0.005
    assert "rig: replicate self-ESR" in out and "passage (at 0.0 s and 9.0 s)" in out
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert any(check.startswith("replicate") for check in manifest["checks_passed"])
    assert all(s["replicate_self_esr"] < 0.005 for s in manifest["segments"])


def test_validate_says_when_there_is_no_replicate_and_passes(ampsim_cli, tmp_path, pair):
    code, out, err, report = _validate(ampsim_cli, tmp_path, *pair)
    assert code == 0, err
    assert report["replicate"]["rig"].startswith("no replicate") and "rig: no replicate" in out
    assert report["captures"][0]["replicate_self_esr"] is None


def test_boss_ds1_passes_the_replicate_check_or_has_no_replicate(boss_prepared):
    summary = json.loads((boss_prepared.parent / "reports" / "summary.json").read_text())
    esr = summary["replicate_self_esr"]["boss-ds1"]
    note = summary["replicate"]["boss-ds1"]
    assert (esr is None and note.startswith("no replicate")) or esr <= 0.01


@pytest.mark.parametrize("value", ["loud", True, float("inf")])
def test_capture_levels_must_be_numbers(ampsim_cli, tmp_path, pair, value):
    write_capture(tmp_path / "captures", "rig", *pair, meta={"input_level_dbu": value})
    code, _, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"),
                              "--out", str(tmp_path / "normalized"))
    assert code == 1 and "rig/capture.yaml: input_level_dbu is" in err and "e.g. `input_level_dbu: 12.2`" in err
