"""Stage 2: check every normalised pair, measure and compensate its delay, split train/validation.

All captures are judged before anything is written, so one run lists every problem at once. The report
(JSON and Great Expectations Data Docs) is written whether the checks pass or not; the prepared audio only
when they all pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from ampsim.core.audio import atomic_dir, write_text, write_wav
from ampsim.core.errors import AmpsimError, ValidationFailed
from ampsim.core.params import ValidateParams
from ampsim.data.alignment import align, frames_after_alignment
from ampsim.data.latency import MEASURE_COLUMNS, latency_note, measure, settle_latency
from ampsim.data.captures import INPUT_FILE, LEVEL_KEYS, OUTPUT_FILE, read_levels
from ampsim.data.checks import check_names, run_suite
from ampsim.data.normalize import STATS_FILE
from ampsim.data.replicate import Repeat, find_repeat, self_esr
from ampsim.data.windows import MANIFEST_FILE

REPLICATE_COLUMNS = ("replicate_self_esr", "replicate_seconds", "replicate_first_take_seconds",
                     "replicate_second_take_seconds")


def _load_side(folder: Path, filename: str) -> np.ndarray:
    samples, _ = sf.read(str(folder / filename), dtype="float32", always_2d=True)
    return samples


def replicate_columns(dry: np.ndarray, wet: np.ndarray, delay: int, rate: int, params: ValidateParams,
                      known: Repeat | None = None) -> dict:
    """Where the DI plays a passage twice (`known`: where ampsim's reamp signal does), the self-ESR of the two
    wet takes (None: no such passage)."""
    dry, wet = align(dry, wet, delay)
    repeat = known or find_repeat(dry, rate, params.replicate_min_seconds, params.replicate_match_esr,
                                  params.replicate_block_ms, params.min_rms_dbfs)
    if repeat is None:
        return dict.fromkeys(REPLICATE_COLUMNS)
    return {"replicate_self_esr": self_esr(wet, repeat), "replicate_seconds": repeat.length / rate,
            "replicate_first_take_seconds": repeat.start / rate,
            "replicate_second_take_seconds": (repeat.start + repeat.lag) / rate}


def replicate_note(row: dict) -> str:
    """The replicate check's outcome for one capture, in words."""
    if row["replicate_self_esr"] is None:
        return ("no replicate: the DI plays no passage twice, so the check does not apply (capture signals that "
                "repeat a passage let it catch noise, drift and time-varying gear)")
    return (f"replicate self-ESR {row['replicate_self_esr']:.5f} between the two takes of a "
            f"{row['replicate_seconds']:.1f} s passage (at {row['replicate_first_take_seconds']:.1f} s and "
            f"{row['replicate_second_take_seconds']:.1f} s)")


def model_levels(entry: dict) -> dict[str, float | None]:
    """capture.yaml's interface calibration, moved by any gain `normalize` applied (peak mode), so that it
    describes the prepared audio the model learns from."""
    # normalize records the levels; a table written before it did falls back to the source capture.yaml
    stated = ({key: entry[key] for key in LEVEL_KEYS} if all(key in entry for key in LEVEL_KEYS)
              else read_levels(Path(entry["source"])))
    return {key: None if stated[key] is None else stated[key] - 20 * np.log10(entry[side]["gain"])
            for key, side in zip(LEVEL_KEYS, ("input", "output"))}


def capture_row(name: str, entry: dict, folder: Path, params: ValidateParams) -> tuple[dict, np.ndarray, np.ndarray]:
    """The capture's statistics and its latency measurement; `finish_row` adds what depends on the latency
    the device settles on."""
    inp, out = entry["input"], entry["output"]
    dry, wet = _load_side(folder, INPUT_FILE), _load_side(folder, OUTPUT_FILE)
    rate = inp["sample_rate"]
    measurable = (inp["channels"] == out["channels"] == 1 and inp["sample_rate"] == out["sample_rate"]
                  and np.isfinite(dry).all() and np.isfinite(wet).all()
                  and min(inp["rms_dbfs"], out["rms_dbfs"]) >= params.min_rms_dbfs
                  and min(inp["frames"], out["frames"]) > 2)
    row = {
        "capture": name,
        "source": entry["source"],
        "input_sample_rate": inp["sample_rate"],
        "output_sample_rate": out["sample_rate"],
        "input_channels": inp["channels"],
        "output_channels": out["channels"],
        "input_nonfinite": inp["nan_count"] + inp["inf_count"],
        "output_nonfinite": out["nan_count"] + out["inf_count"],
        "input_rms_dbfs": inp["rms_dbfs"],
        "output_rms_dbfs": out["rms_dbfs"],
        "output_clipped_fraction": out["clipped_fraction"],
        **(measure(dry[:, 0], wet[:, 0], rate, params) if measurable else dict.fromkeys(MEASURE_COLUMNS)),
        "latency_override": entry.get("latency_samples"),
    }
    return row, dry, wet


def finish_row(row: dict, entry: dict, dry: np.ndarray, wet: np.ndarray, params: ValidateParams) -> dict:
    """What follows from the latency the device settled on (`row["delay_samples"]`, None: not measurable)."""
    inp, out = entry["input"], entry["output"]
    rate, delay = inp["sample_rate"], row["delay_samples"]
    dry_left, wet_left = frames_after_alignment(inp["frames"], out["frames"], delay or 0)
    mismatch, aligned = abs(dry_left - wet_left), min(dry_left, wet_left)
    row.update({"delay_ms": None if delay is None else 1000 * delay / rate,
                "length_mismatch_ms": 1000 * mismatch / rate, "aligned_seconds": max(0, aligned) / rate})
    row.update(replicate_columns(dry[:, 0], wet[:, 0], delay, rate, params, signal_repeat(row))
               if delay is not None
               else dict.fromkeys(REPLICATE_COLUMNS))
    return row


def split_ranges(frames: int, split: str, val_fraction: float,
                 passage: tuple[int, int] | None = None) -> dict[str, tuple[int, int]]:
    """Frame ranges per split: by time (ampsim's reamp signal: its marked validation passage, else the last
    `val_fraction`) or the whole capture."""
    if split == "time" and passage is not None and 0 < passage[0] < frames:
        return {"train": (0, passage[0]), "val": (passage[0], min(passage[1], frames))}
    if split == "time":
        cut = int(round(frames * (1 - val_fraction)))
        return {"train": (0, cut), "val": (cut, frames)}
    return {split: (0, frames)}


def aligned_passage(row: dict, name: str = "validation") -> tuple[int, int] | None:
    """A section of ampsim's reamp signal in the aligned pair (a DI shifted ahead loses its opening); None
    when the capture was not made with it."""
    if row.get("signal_sections") is None:
        return None
    shift = min(0, row["delay_samples"] or 0)
    start, stop = row["signal_sections"][name]
    return start + shift, stop + shift


def signal_repeat(row: dict) -> Repeat | None:
    """The passage ampsim's reamp signal plays twice, where it lies in the aligned pair."""
    first, again = aligned_passage(row, "repeat"), aligned_passage(row, "repeat_again")
    if first is None or first[0] < 0:
        return None
    return Repeat(start=first[0], lag=again[0] - first[0], length=first[1] - first[0])


def device_rate(captures: dict) -> tuple[int, str]:
    """The rate the device trains at, and the capture that sets it: its captures' own rate, which they must
    share. Every side is held to the first capture's DI (by name), so a capture at another rate is refused
    beside the one it disagrees with."""
    first = min(captures)
    return captures[first]["input"]["sample_rate"], first


def rings_like_a_cabinet(rows: list[dict], params: ValidateParams) -> dict:
    """The device's ringing (the median over its captures whose latency was measured) and whether it is a
    cabinet's: what `train` reads to lay `train.cabinet_recipe` over its defaults."""
    measured = [row["ringing_ms"] for row in rows if row["latency_source"] and row["ringing_ms"] is not None]
    if not measured:
        return {"ringing_ms": None, "cabinet": False}
    ringing = float(np.median(measured))
    return {"ringing_ms": round(ringing, 2), "cabinet": ringing >= params.cabinet_ringing_ms}


def validate_captures(normalized_dir: Path, prepared_dir: Path, reports_dir: Path, params: ValidateParams) -> dict:
    normalized_dir, prepared_dir, reports_dir = Path(normalized_dir), Path(prepared_dir), Path(reports_dir)
    stats_path = normalized_dir / STATS_FILE
    if not stats_path.is_file():
        raise AmpsimError("normalised captures not found", path=stats_path, fix="run `dvc repro normalize` first")
    captures = json.loads(stats_path.read_text())["captures"]
    sample_rate, rate_source = device_rate(captures)

    rows, pairs = [], {}
    for name, entry in captures.items():
        row, dry, wet = capture_row(name, entry, normalized_dir / name, params)
        rows.append(row)
        pairs[name] = (dry, wet)
    latency_failures, warnings = settle_latency(rows, params)
    rows = [finish_row(row, captures[row["capture"]], *pairs[row["capture"]], params) for row in rows]
    table = pd.DataFrame(rows)

    with atomic_dir(reports_dir) as scratch:
        failures, gx_result = run_suite(table, sample_rate, rate_source, params, scratch / "data_docs")
        failures = latency_failures + failures
        report = {
            "passed": not failures,
            "failures": [f.sentence() for f in failures],
            "warnings": warnings,
            "captures": table.replace({np.nan: None}).to_dict(orient="records"),
            "latency": {row["capture"]: latency_note(row, row["input_sample_rate"]) for row in rows},
            "replicate": {row["capture"]: replicate_note(row) for row in rows},
            "great_expectations": gx_result,
        }
        (scratch / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if failures:
        raise ValidationFailed([f.sentence() for f in failures], reports_dir / "report.json")

    # what export writes into a model file's training block: the checks these captures passed
    manifest = {"sample_rate": sample_rate, "checks_passed": check_names(sample_rate, params),
                **rings_like_a_cabinet(rows, params), "segments": []}
    with atomic_dir(prepared_dir) as scratch:
        for row in rows:
            name = row["capture"]
            dry, wet = align(*pairs[name], row["delay_samples"])
            entry = captures[name]
            for split, (start, stop) in split_ranges(len(dry), entry["split"], params.val_fraction,
                                                      aligned_passage(row)).items():
                folder = scratch / split / name
                write_wav(folder / INPUT_FILE, dry[start:stop], sample_rate)
                write_wav(folder / OUTPUT_FILE, wet[start:stop], sample_rate)
                manifest["segments"].append({
                    "capture": name, "split": split, "folder": f"{split}/{name}", "frames": stop - start,
                    "seconds": (stop - start) / sample_rate, "delay_samples": row["delay_samples"],
                    "device": entry["device"], "knobs": entry["knobs"], **model_levels(entry),
                    "replicate_self_esr": row["replicate_self_esr"],
                    # a whole capture kept for validation: a setting the model never trains on
                    "held_out": entry["split"] == "val"})
        splits = {s["split"] for s in manifest["segments"]}
        if splits != {"train", "val"}:
            missing = ({"train", "val"} - splits).pop()
            sources = ", ".join(f"{captures[r['capture']]['source']}/capture.yaml" for r in rows)
            raise AmpsimError(f"no capture provides {missing} data (split settings in {sources})",
                              fix="leave at least one capture with `split: time` (the default) in its capture.yaml")
        (scratch / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))

    summary = {
        "captures": len(rows),
        "sample_rate": sample_rate,
        "train_seconds": sum(s["seconds"] for s in manifest["segments"] if s["split"] == "train"),
        "val_seconds": sum(s["seconds"] for s in manifest["segments"] if s["split"] == "val"),
        "delay_samples": {r["capture"]: r["delay_samples"] for r in rows},
        "onset_samples": {r["capture"]: r["onset_samples"] for r in rows},
        "correlation_peak_samples": {r["capture"]: r["correlation_peak_samples"] for r in rows},
        "replicate_self_esr": {r["capture"]: r["replicate_self_esr"] for r in rows},
        "replicate": report["replicate"],
        "ringing_ms": {r["capture"]: r["ringing_ms"] for r in rows},
        "cabinet": manifest["cabinet"],
    }
    write_text(reports_dir / "summary.json", json.dumps(summary, indent=2))
    # the words go to the user and report.json; the metrics file keeps figures (`dvc metrics show`)
    return {**summary, "latency": report["latency"], "latency_warnings": warnings}
