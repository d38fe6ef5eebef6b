"""Latency on the onset, never past it: captures made from real gear (NAM models of it, ../shared/teachers)
with known pure delays added, and the one-rig-one-latency rule.

A teacher is a causal model of its gear whose own response starts a few samples in (the latency its capture
kept). The true latency of a capture made with it is the added delay plus that start, which a blip measures
as NAM does: the first sample where a small impulse's answer reaches 5 % of its peak. The compensated latency
must land in [true - 8, true]: never later than the true one (the model would have to predict the future), and
at most 8 samples earlier.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ampsim.core.params import ValidateParams, load_params, section
from ampsim.data.alignment import find_onset
from ampsim.data.demo import synth_di, virtual_amp
from ampsim.data.latency import measure, settle_latency
from conftest import PROJECT, RATE, SHARED_TEACHERS, shared_or_skip, write_capture
from teachers import blip_onset, load_teacher, play  # bench/teachers.py: NAM's own loader and renderer

TEACHERS = {  # with and without a cabinet, clean to high gain
    "amp, no cabinet (clean)": "Phillipe_P_Bug333-Clean-ESR0_002.nam",
    "amp through a cabinet (crunch)": "Phillipe_P_Bug333-Crunch-NoDrive-Cab-ESR0_005.nam",
    "high-gain amp": "Helga_B_5150_BlockLetter_-_NoBoost.nam",
    "distortion pedal": "Keith_B_DS1_g6_t5.nam",
}
DELAYS = (0, 11, 37, 250)
PARAMS = section(load_params(PROJECT / "params.yaml"), "validate", ValidateParams)


def compensated(dry: np.ndarray, wet: np.ndarray) -> int:
    row = {"capture": "c", "source": "c", "input_sample_rate": RATE, "latency_override": None,
           **measure(dry, wet, RATE, PARAMS)}
    failures, _ = settle_latency([row], PARAMS)
    assert failures == [], [f.sentence() for f in failures]
    return row["delay_samples"]


def delayed(wet: np.ndarray, delay: int) -> np.ndarray:
    return np.concatenate([np.zeros(delay), wet[: len(wet) - delay]])


@pytest.fixture(scope="module")
def dry() -> np.ndarray:
    return synth_di(PARAMS.align_seconds + 1.0, RATE, seed=11).astype(np.float64)


@pytest.mark.parametrize("kind", list(TEACHERS))
def test_teacher_captures_compensate_at_most_their_true_latency(kind, dry):
    pytest.importorskip("nam")
    net = load_teacher(shared_or_skip(SHARED_TEACHERS / TEACHERS[kind], "teacher"))
    own, wet = blip_onset(net), play(net, dry)
    for delay in DELAYS:
        true = delay + own
        assert true - 8 <= compensated(dry, delayed(wet, delay)) <= true, (kind, delay, own)


def test_a_cabinet_peaks_later_than_it_starts(dry):
    """The correlation peak of an amp through a cabinet comes after the onset: compensating the peak would
    ask the model for the future; the onset does not."""
    pytest.importorskip("nam")
    net = load_teacher(shared_or_skip(SHARED_TEACHERS / TEACHERS["amp through a cabinet (crunch)"], "teacher"))
    wet = delayed(play(net, dry), 37)
    found = find_onset(dry, wet, 2400, PARAMS.latency_threshold)
    assert found.peak - found.onset >= 5
    assert compensated(dry, wet) <= 37 + blip_onset(net) < found.peak


@pytest.mark.parametrize("kind, cabinet", [("amp through a cabinet (crunch)", True), ("high-gain amp", True),
                                           ("amp, no cabinet (clean)", False), ("distortion pedal", False)])
def test_a_response_that_rings_like_a_cabinet_gets_the_hint_to_train_through_the_ir(kind, cabinet):
    """On ampsim's reamp signal the two amps with a cabinet ring for 10-14 ms, the rest for under 3 ms
    (bench/RESULTS.md, session 19): validate says so, names the recipe train lays over its defaults for them,
    and how to turn it off."""
    pytest.importorskip("nam")
    from ampsim.data.signal import reamp_signal

    net = load_teacher(shared_or_skip(SHARED_TEACHERS / TEACHERS[kind], "teacher"))
    opening = reamp_signal(RATE).audio[: int((PARAMS.align_seconds + 1) * RATE)].astype(np.float64)
    row = {"capture": "c", "source": "c", "input_sample_rate": RATE, "latency_override": None,
           **measure(opening, delayed(play(net, opening), 11), RATE, PARAMS)}
    failures, warnings = settle_latency([row], PARAMS)
    assert failures == []
    assert (row["ringing_ms"] >= 1.5 * PARAMS.cabinet_ringing_ms) == cabinet, row["ringing_ms"]
    assert (row["ringing_ms"] < PARAMS.cabinet_ringing_ms / 1.5) == (not cabinet), row["ringing_ms"]
    hints = [w for w in warnings if "rings for" in w]
    assert len(hints) == cabinet
    if cabinet:
        assert "train.cabinet_recipe" in hints[0] and "through_ir_taps: 0" in hints[0]


def test_the_device_is_a_cabinet_by_the_median_ringing_of_its_measured_captures():
    from ampsim.data.validate import rings_like_a_cabinet

    def row(ringing, source="measured"):
        return {"ringing_ms": ringing, "latency_source": source}

    limit = PARAMS.cabinet_ringing_ms
    assert rings_like_a_cabinet([row(2 * limit), row(3 * limit), row(0.2 * limit)], PARAMS) == \
        {"ringing_ms": 2 * limit, "cabinet": True}
    # one capture ringing long (a noisy estimate) does not make a pedal's three captures a cabinet
    assert rings_like_a_cabinet([row(3 * limit), row(0.2 * limit), row(0.3 * limit)], PARAMS)["cabinet"] is False
    # a capture whose response was not measured (no onset found: no latency source) does not count
    assert rings_like_a_cabinet([row(3 * limit, None), row(None)], PARAMS) == {"ringing_ms": None, "cabinet": False}


@pytest.mark.parametrize("delay", DELAYS)
def test_pure_delays_through_the_virtual_amp(delay, dry):
    wet = virtual_amp(dry.astype(np.float32), RATE, gain=0.8, latency_ms=0.0).astype(np.float64)
    assert delay - 8 <= compensated(dry, delayed(wet, delay)) <= delay


def _device(root, gains_and_delays):
    dry = synth_di(8.0, RATE, seed=3)
    for gain, delay in gains_and_delays:
        wet = virtual_amp(dry, RATE, gain=gain, latency_ms=0.0)
        write_capture(root, f"gain-{gain}", dry, delayed(wet, delay).astype(np.float32), meta={"knobs": {"gain": gain}})


def _validate(ampsim_cli, tmp_path):
    code, out, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"), "--out", str(tmp_path / "normalized"))
    assert code == 0, err
    return ampsim_cli("validate", "--normalized", str(tmp_path / "normalized"), "--out", str(tmp_path / "prepared"),
                      "--reports", str(tmp_path / "reports"))


def test_one_rig_one_latency_and_a_warning_when_settings_disagree(ampsim_cli, tmp_path):
    _device(tmp_path / "captures", [(0.2, 30), (0.8, 60)])
    code, out, err = _validate(ampsim_cli, tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    latencies = {s["capture"]: s["delay_samples"] for s in manifest["segments"]}
    assert set(latencies.values()) == {latencies["gain-0.2"]} and 22 <= latencies["gain-0.2"] <= 30
    assert "measured different latencies" in err and "state each one's figure as `latency_samples: N`" in err
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["warnings"] and "device (smallest of its captures)" in report["latency"]["gain-0.8"]


def test_a_stated_latency_is_used_as_it_is(ampsim_cli, tmp_path):
    _device(tmp_path / "captures", [(0.5, 30)])
    (tmp_path / "captures" / "gain-0.5" / "capture.yaml").write_text("knobs: {gain: 0.5}\nlatency_samples: 17\n")
    code, out, err = _validate(ampsim_cli, tmp_path)
    assert code == 0, err
    assert "gain-0.5: latency 17 samples (0.35 ms), stated in capture.yaml" in out
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["delay_samples"] == {"gain-0.5": 17}


@pytest.mark.parametrize("case", ["swapped files", "DI recorded late", "override out of range", "no onset",
                                  "not a number"])
def test_latency_problems_are_refused_clearly(ampsim_cli, tmp_path, case):
    dry = synth_di(8.0, RATE, seed=5)
    wet = virtual_amp(dry, RATE, gain=0.8, latency_ms=0.5)
    meta, words, where = None, [], "c1/output.wav"
    if case == "swapped files":
        dry, wet = wet, dry
        words = ["the wet side cannot lead the DI", "most likely swapped", "ampsim add DI_FILE WET_FILE"]
    elif case == "DI recorded late":
        dry = delayed(dry, 60).astype(np.float32)
        words = ["the wet side cannot lead the DI", "the files are not swapped", "latency_samples: -"]
    elif case == "override out of range":
        meta = {"latency_samples": 5000}
        words, where = ["latency_samples (stated) failed: measured 5000 samples", "within ±2400 samples"], "c1/capture.yaml"
    elif case == "no onset":
        rng = np.random.default_rng(0)  # two unrelated noises: nothing of the DI is in the wet side
        dry, wet = (0.1 * rng.standard_normal((2, len(dry)))).astype(np.float32)
        words = ["latency: the onset of the response failed", "no clear onset", "ampsim signal"]
    else:
        meta, words, where = {"latency_samples": 12.5}, ["latency_samples is 12.5, not a whole number"], "c1/capture.yaml"
    write_capture(tmp_path / "captures", "c1", dry, wet, meta=meta)
    code, out, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"), "--out", str(tmp_path / "normalized"))
    if code == 0:
        code, out, err = ampsim_cli("validate", "--normalized", str(tmp_path / "normalized"),
                                    "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports"))
    assert code == 1
    assert where in err and "Traceback" not in err and "Fix:" in err or "fix" in err.lower()
    for word in words:
        assert word in err, err
    assert not (tmp_path / "prepared").exists()
