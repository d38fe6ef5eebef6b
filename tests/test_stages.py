"""normalize and validate on generated captures, driven through the `ampsim` command as DVC runs it."""

import json

import numpy as np
import pytest
import soundfile as sf
import yaml

from ampsim.data.alignment import align, estimate_delay
from conftest import RATE, tree_digest, write_capture


def run_stages(ampsim_cli, tmp_path, params=None):
    code, out, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"),
                                "--out", str(tmp_path / "normalized"), params=params)
    if code != 0:
        return "normalize", code, out, err
    code, out, err = ampsim_cli("validate", "--normalized", str(tmp_path / "normalized"),
                                "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports"),
                                params=params)
    return "validate", code, out, err


def test_good_capture_is_aligned_split_and_raw_files_untouched(ampsim_cli, tmp_path, pair):
    dry, wet = pair
    write_capture(tmp_path / "captures", "amp1", dry, wet, subtype="PCM_24", meta={"device": "virtual"})
    before = tree_digest(tmp_path / "captures")
    stage, code, out, err = run_stages(ampsim_cli, tmp_path)
    assert (stage, code) == ("validate", 0), err
    assert tree_digest(tmp_path / "captures") == before

    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["passed"] and report["failures"] == []
    delay = report["captures"][0]["delay_samples"]
    assert 20 <= delay <= 24  # 0.5 ms (24 samples) of latency, the onset less its safety margin
    assert f"amp1: latency {delay} samples" in out
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()

    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    frames = {s["split"]: s["frames"] for s in manifest["segments"]}
    assert frames["train"] + frames["val"] == len(dry) - delay
    assert frames["val"] == pytest.approx(0.2 * (len(dry) - delay), abs=1)
    train_in, _ = sf.read(tmp_path / "prepared" / "train" / "amp1" / "input.wav", dtype="float32")
    val_out, _ = sf.read(tmp_path / "prepared" / "val" / "amp1" / "output.wav", dtype="float32")
    raw_in, _ = sf.read(tmp_path / "captures" / "amp1" / "input.wav", dtype="float32")
    raw_out, _ = sf.read(tmp_path / "captures" / "amp1" / "output.wav", dtype="float32")
    np.testing.assert_array_equal(train_in, raw_in[: frames["train"]])
    np.testing.assert_array_equal(val_out, raw_out[delay + frames["train"]:])


def test_whole_capture_split_from_capture_yaml(ampsim_cli, tmp_path, pair):
    dry, wet = pair
    write_capture(tmp_path / "captures", "a-train", dry, wet, meta={"split": "train"})
    write_capture(tmp_path / "captures", "b-val", np.roll(dry, RATE), np.roll(wet, RATE), meta={"split": "val"})
    stage, code, out, err = run_stages(ampsim_cli, tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert {(s["capture"], s["split"]) for s in manifest["segments"]} == {("a-train", "train"), ("b-val", "val")}


def test_captures_in_any_format_normalize_to_float32_wavs(ampsim_cli, tmp_path, pair):
    # FLAC, 24-bit WAV, and a pair saved in two formats: each side is found by its name, whatever the extension
    dry, wet = pair
    sides = {"flac": ("input.flac", "output.flac", "PCM_24"), "wav24": ("input.wav", "output.wav", "PCM_24"),
             "mixed": ("input.aiff", "output.flac", "PCM_16")}
    for name, (input_name, output_name, subtype) in sides.items():
        (tmp_path / "captures" / name).mkdir(parents=True)
        sf.write(tmp_path / "captures" / name / input_name, dry, RATE, subtype=subtype)
        sf.write(tmp_path / "captures" / name / output_name, wet, RATE, subtype=subtype)
    before = tree_digest(tmp_path / "captures")
    code, out, err = ampsim_cli("normalize", "--captures", str(tmp_path / "captures"), "--out", str(tmp_path / "normalized"))
    assert code == 0, err
    assert tree_digest(tmp_path / "captures") == before
    table = json.loads((tmp_path / "normalized" / "captures.json").read_text())["captures"]
    for name, (input_name, output_name, subtype) in sides.items():
        assert sorted(p.name for p in (tmp_path / "normalized" / name).iterdir()) == ["input.wav", "output.wav"]
        for side, raw_name in (("input", input_name), ("output", output_name)):
            normalized = tmp_path / "normalized" / name / f"{side}.wav"
            info = sf.info(str(normalized))
            assert (info.format, info.subtype, info.samplerate) == ("WAV", "FLOAT", RATE)
            raw, _ = sf.read(tmp_path / "captures" / name / raw_name, dtype="float32")
            np.testing.assert_array_equal(sf.read(normalized, dtype="float32")[0], raw)
            assert table[name][side]["source_subtype"] == subtype
    assert table["flac"]["input"]["source_format"] == "FLAC" and table["mixed"]["input"]["source_format"] == "AIFF"
    # 24 bits carry the signal to within half a step of 2**-23
    np.testing.assert_allclose(sf.read(tmp_path / "normalized" / "flac" / "output.wav")[0], wet, atol=2.0**-23)


def test_declared_channel_of_a_stereo_file_is_used(ampsim_cli, tmp_path, pair):
    dry, wet = pair
    stereo = np.stack([np.zeros_like(wet), wet], axis=1)
    write_capture(tmp_path / "captures", "stereo", dry, stereo, meta={"channels": {"output": 1}})
    stage, code, out, err = run_stages(ampsim_cli, tmp_path)
    assert code == 0, err


def test_peak_mode_applies_and_records_one_gain_per_side(ampsim_cli, params_file, tmp_path, pair):
    dry, wet = pair
    params = yaml.safe_load(params_file.read_text())
    params["normalize"]["mode"] = "peak"
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    write_capture(tmp_path / "captures", "amp1", dry * 0.1, wet)
    stage, code, out, err = run_stages(ampsim_cli, tmp_path, params=params_path)
    assert code == 0, err
    stats = json.loads((tmp_path / "normalized" / "captures.json").read_text())["captures"]["amp1"]
    assert stats["input"]["gain"] == pytest.approx(0.99 / (0.1 * np.abs(dry).max()), rel=1e-4)
    normalized, _ = sf.read(tmp_path / "normalized" / "amp1" / "input.wav")
    assert np.abs(normalized).max() == pytest.approx(0.99, rel=1e-5)


def test_estimate_delay_finds_pure_delays_of_either_sign():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(48000)
    for delay in (0, 7, 123, -40):
        y = np.roll(x, delay)
        assert estimate_delay(x, y, max_lag=480) == delay
        a, b = align(x, y, delay)
        assert len(a) == len(b) == len(x) - abs(delay)


# --- bad input: one clear paragraph naming the file, exit != 0, nothing half-written -------------------------

def _bad(case, tmp_path, dry, wet):
    captures = tmp_path / "captures"
    if case == "missing output":
        write_capture(captures, "c1", dry, wet)
        (captures / "c1" / "output.wav").unlink()
        return "c1/output.wav", "normalize", "has no output file (accepted names: output.aif, output.aifc"
    if case == "missing output, FLAC input":
        write_capture(captures, "c1", dry, wet)
        (captures / "c1" / "output.wav").unlink()
        (captures / "c1" / "input.wav").rename(captures / "c1" / "input.flac")
        return "c1/output.wav", "normalize", "output.flac"
    if case == "two input files":
        write_capture(captures, "c1", dry, wet)
        sf.write(captures / "c1" / "input.flac", dry, RATE, subtype="PCM_24")
        return "c1", "normalize", "capture 'c1' has 2 input files: input.flac and input.wav"
    if case == "not audio":
        write_capture(captures, "c1", dry, wet)
        (captures / "c1" / "input.wav").write_text("RIFF? no, a text file\n" * 50)
        return "c1/input.wav", "normalize", "not a readable audio file"
    if case == "truncated header":
        write_capture(captures, "c1", dry, wet)
        data = (captures / "c1" / "output.wav").read_bytes()
        (captures / "c1" / "output.wav").write_bytes(data[:30])
        return "c1/output.wav", "normalize", "truncated"
    if case == "empty file":
        write_capture(captures, "c1", dry, wet)
        (captures / "c1" / "input.wav").write_bytes(b"")
        return "c1/input.wav", "normalize", "empty"
    if case == "stereo, no channel declared":
        write_capture(captures, "c1", np.stack([dry, dry], 1), wet)
        return "c1/input.wav", "validate", "input is mono failed: measured 2 channels"
    if case == "44.1 kHz vs 48 kHz":
        write_capture(captures, "c1", dry, wet, wet_rate=44100)
        return "c1/output.wav", "validate", "output sample rate failed: measured 44100 Hz, expected 48000 Hz"
    if case == "two rates in one device":
        write_capture(captures, "gain-0.3", dry, wet, meta={"knobs": {"gain": 0.3}})
        write_capture(captures, "gain-0.7", dry, wet, dry_rate=44100, wet_rate=44100, meta={"knobs": {"gain": 0.7}})
        return ("gain-0.7/input.wav", "validate", "input sample rate failed: measured 44100 Hz, expected 48000 Hz, "
                "the rate of capture 'gain-0.3' (input.wav)")
    if case == "lengths differ":
        write_capture(captures, "c1", dry, np.concatenate([wet, wet[: RATE // 2]]))
        return "c1/input.wav and output.wav", "validate", "lengths equal after alignment failed"
    if case == "all-zero input":
        write_capture(captures, "c1", np.zeros_like(dry), wet)
        return "c1/input.wav", "validate", "input is not silent failed: measured -200 dBFS"
    if case == "all-zero output":
        write_capture(captures, "c1", dry, np.zeros_like(wet))
        return "c1/output.wav", "validate", "output is not silent failed: measured -200 dBFS"
    if case == "NaN in float WAV":
        bad = dry.copy()
        bad[1000:1010] = np.nan
        write_capture(captures, "c1", bad, wet)
        return "c1/input.wav", "validate", "input has no NaN/Inf samples failed: measured 10"
    if case == "output clipped":
        write_capture(captures, "c1", dry, np.clip(wet * 8, -1, 1))
        return "c1/output.wav", "validate", "output is not clipped failed"
    if case == "delay beyond bound":
        shift = int(0.2 * RATE)
        write_capture(captures, "c1", dry, np.concatenate([np.zeros(shift, np.float32), wet[:-shift]]))
        return "c1/output.wav", "validate", "delay between input and output failed: measured 200."
    if case == "name with ..":
        write_capture(captures, "bad..name", dry, wet)
        return "bad..name", "normalize", "capture name 'bad..name' is not allowed"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "missing output", "missing output, FLAC input", "two input files", "not audio", "truncated header", "empty file", "stereo, no channel declared",
    "44.1 kHz vs 48 kHz", "two rates in one device", "lengths differ", "all-zero input", "all-zero output", "NaN in float WAV", "output clipped",
    "delay beyond bound", "name with ..",
])
def test_bad_input_is_refused_clearly(ampsim_cli, tmp_path, pair, case):
    dry, wet = pair
    file_hint, failing_stage, words = _bad(case, tmp_path, dry, wet)
    raw = tree_digest(tmp_path / "captures")
    stage, code, out, err = run_stages(ampsim_cli, tmp_path)
    assert (stage, code) == (failing_stage, 1), (stage, code, err)
    assert file_hint in err, err
    assert words in err, err
    assert "Fix:" in err or "Correct the captures" in err
    assert "Traceback" not in err
    assert tree_digest(tmp_path / "captures") == raw
    # nothing half-written: the failing stage's data output does not exist, and no scratch folder is left
    failed_output = tmp_path / ("normalized" if failing_stage == "normalize" else "prepared")
    assert not failed_output.exists()
    assert not list(tmp_path.glob(".*tmp-*"))
    if failing_stage == "validate":
        report = json.loads((tmp_path / "reports" / "report.json").read_text())
        assert not report["passed"] and any(words in f for f in report["failures"])


def test_every_failing_capture_is_listed_in_one_run(ampsim_cli, tmp_path, pair):
    dry, wet = pair
    write_capture(tmp_path / "captures", "good", dry, wet)
    write_capture(tmp_path / "captures", "silent", np.zeros_like(dry), wet)
    write_capture(tmp_path / "captures", "rate", dry, wet, dry_rate=44100, wet_rate=44100)
    stage, code, out, err = run_stages(ampsim_cli, tmp_path)
    assert (stage, code) == ("validate", 1)
    assert "- capture 'silent'" in err and "- capture 'rate'" in err and "- capture 'good'" not in err
    assert "expected 48000 Hz, the rate of capture 'good' (input.wav)" in err  # the capture it disagrees with
    assert "input sample rate" in err and "output sample rate" in err
