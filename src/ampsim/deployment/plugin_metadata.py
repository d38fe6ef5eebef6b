"""What a model file tells the plugins and the tone-sharing sites besides its weights.

- `loudness` and `gain`, as NAM defines them: NAM plays its fixed reference input (`loudness_input.wav`,
  1 s at 48 kHz, shipped with neural-amp-modeler, whose files `make setup` installs without PyTorch) through the model from the model's initial state;
  `loudness` is the output's RMS in dB. `gain` (0-1, how much the model compresses) plays the reference at
  the 11 input scales 0, 0.1, ..., 1 and compares the sum of the 11 output RMS values with the two extremes:
  a linear model (RMS proportional to the scale, sum = half of 11 x the RMS at scale 1: gain 0) and full
  compression (RMS at every scale equal to that at scale 1: gain 1). The plugin levels models by `loudness`.
- `input_level_dbu` / `output_level_dbu`: the interface calibration of the capture (capture.yaml), i.e. the
  analog level of a full-scale sample on each side, moved by any gain `normalize` applied.
- `training`: the trainer and its version, the validation ESR, the latency validate measured and compensated,
  the data checks the captures passed (the replicate check among them).
- the sharing fields (gear make/model/type, tone type, architecture, size label, sample rate, ESR) and a
  one-paragraph summary of them a user can paste into a tone-sharing site.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ampsim import __version__
from ampsim.core.errors import AmpsimError
from ampsim.modelling.models import ModelCard

NAM_GEAR_TYPES = ("amp", "pedal", "pedal_amp", "amp_cab", "amp_pedal_cab", "preamp", "studio")
NAM_TONE_TYPES = ("clean", "overdrive", "crunch", "hi_gain", "fuzz")
GAIN_SCALES = np.linspace(0.0, 1.0, 11)  # NAM's input scales for the `gain` index (part of its definition)
LEVEL_KEYS = ("input_level_dbu", "output_level_dbu")


# --- loudness and gain -------------------------------------------------------------------------------

NAM_PACKAGE = "nam"  # export.loudness_input: the reference input of the installed neural-amp-modeler
NAM_DISTRIBUTION = "neural-amp-modeler"
NAM_LOUDNESS_INPUT = "nam/models/_resources/loudness_input.wav"


def loudness_input_path(setting: str | None) -> Path | None:
    """Where NAM's reference input is: `nam` finds the file among the installed neural-amp-modeler's files,
    read from its package metadata so that NAM (and PyTorch) are never imported; None, with a note, where it is
    not installed. Any other text is a path; None leaves loudness out."""
    if setting != NAM_PACKAGE:
        return None if setting is None else Path(setting)
    import importlib.metadata

    try:
        path = Path(importlib.metadata.distribution(NAM_DISTRIBUTION).locate_file(NAM_LOUDNESS_INPUT))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        print("ampsim export: note: loudness and gain are left out: neural-amp-modeler, whose reference input "
              "defines them, is not installed (`make setup` installs its files; or point export.loudness_input at "
              "its loudness_input.wav)", file=sys.stderr)
        return None
    return path


def read_loudness_input(path: str | Path) -> np.ndarray:
    """NAM's reference input for `loudness` (its file, wherever the user keeps it)."""
    path = Path(path)
    fix = ("point export.loudness_input in params.yaml at NAM's reference input, the file "
           "nam/models/_resources/loudness_input.wav that `pip install neural-amp-modeler` installs (`make setup` "
           "puts it under .venv/lib/python3.11/site-packages/), or set it to null to leave loudness and gain out")
    if not path.is_file():
        raise AmpsimError("NAM's loudness reference input not found", path=path, fix=fix)
    try:
        samples, _ = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AmpsimError(f"not a readable audio file ({exc})", path=path, fix=fix) from exc
    if samples.shape[1] != 1 or len(samples) == 0:
        raise AmpsimError(f"NAM's loudness reference is mono audio; this file has {samples.shape[1]} channel(s) "
                          f"and {len(samples)} frames", path=path, fix=fix)
    return samples[:, 0]


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(y, np.float64)))))


def loudness_db(output_rms: float) -> float:
    """NAM's `loudness`: the RMS, in dB, of the model's output for the reference input at scale 1."""
    return float(20 * np.log10(max(output_rms, 1e-12)))


def gain_index(rms_at_scales: np.ndarray) -> float:
    """NAM's `gain`: where the output RMS over the scales GAIN_SCALES lies between linear (0) and fully
    compressed (1), clipped to 0-1."""
    levels = np.asarray(rms_at_scales, np.float64)
    compressed = levels[-1] * len(levels)  # every scale as loud as scale 1
    linear = 0.5 * compressed  # proportional to the scale
    return float(np.clip((levels.sum() - linear) / (compressed - linear), 0.0, 1.0))


# --- what validate recorded about the captures ---------------------------------------------------------

@dataclass(frozen=True)
class CaptureFacts:
    """What validate measured on the captures a model learnt from (from the prepared manifest)."""

    levels: dict[str, float | None]  # input_level_dbu / output_level_dbu of the prepared audio
    latency_samples: dict[str, int]  # per capture: the delay validate measured and compensated
    checks_passed: list[str]
    replicate_self_esr: dict[str, float | None] = field(default_factory=dict)  # None: no repeated passage


def _one_level(segments: list[dict], key: str, manifest: Path) -> float | None:
    values = {s["capture"]: s.get(key) for s in segments}
    stated = {round(v, 6) for v in values.values() if v is not None}
    if len(stated) > 1:
        listed = ", ".join(f"{c}: {v}" for c, v in sorted(values.items()))
        raise AmpsimError(f"the captures this model learnt from state different {key} ({listed})", path=manifest,
                          fix=f"record every capture of a set through the same interface settings and give each "
                              f"capture.yaml the same {key}, then `dvc repro validate`")
    return stated.pop() if stated else None


def capture_facts(prepared: Path, captures: list[str]) -> CaptureFacts | None:
    """The facts for `captures` from `prepared`/manifest.json, or None when it does not hold them all (a
    model from another project or an older run): the file then says nothing about them."""
    manifest = Path(prepared) / "manifest.json"
    if not manifest.is_file():
        return None
    document = json.loads(manifest.read_text())
    segments = [s for s in document["segments"] if s["capture"] in captures]
    if {s["capture"] for s in segments} != set(captures) or "checks_passed" not in document:
        return None
    return CaptureFacts(
        levels={key: _one_level(segments, key, manifest) for key in LEVEL_KEYS},
        latency_samples={s["capture"]: s["delay_samples"] for s in segments},
        checks_passed=list(document["checks_passed"]),
        replicate_self_esr={s["capture"]: s.get("replicate_self_esr") for s in segments})


# --- the metadata blocks -------------------------------------------------------------------------------

def user_fields(user: dict[str, Any]) -> dict[str, Any]:
    """The gear fields of export.metadata, checked against the values NAM (and the sharing sites) accept."""
    for key, allowed in (("gear_type", NAM_GEAR_TYPES), ("tone_type", NAM_TONE_TYPES)):
        if user.get(key) is not None and user[key] not in allowed:
            raise AmpsimError(f"NAM's {key} cannot be `{user[key]}`", path="params.yaml",
                              fix=f"set export.metadata.{key} to one of {', '.join(allowed)} (or null)")
    return {key: user.get(key) for key in ("modeled_by", "gear_type", "gear_make", "gear_model", "tone_type")}


def date_now() -> dict[str, int]:
    now = dt.datetime.now()
    return {"year": now.year, "month": now.month, "day": now.day, "hour": now.hour, "minute": now.minute,
            "second": now.second}


def size_label(num_layers: int, hidden_size: int) -> str:
    """The size a sharing site files the model under. NAM's named sizes (nano, feather, lite, standard) are
    its WaveNet presets; an LSTM is none of them."""
    return "custom"


def training_block(card: ModelCard, facts: CaptureFacts | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "trainer": "ampsim", "trainer_version": __version__, "architecture": card.architecture,
        "captures": card.captures, "validation_esr": card.validation_esr,
        "settings": {"ignore_checks": False},  # ampsim has no way to train past a failed check
    }
    if facts is not None:
        block.update(latency_samples=facts.latency_samples, checks_passed=facts.checks_passed,
                     replicate_self_esr=facts.replicate_self_esr)
    return block


def summary(document: dict[str, Any]) -> str:
    """One paragraph for a tone-sharing site, from a .nam document's own fields."""
    meta, config = document["metadata"], document["config"]
    extra, training = meta["ampsim"], meta["training"]
    gear = " ".join(filter(None, (meta.get("gear_make"), meta.get("gear_model")))) or "unnamed gear"
    kinds = ", ".join(str(v).replace("_", " ") for v in (meta.get("gear_type"), meta.get("tone_type")) if v)
    parts = [f"{meta['name']}: {gear}{f' ({kinds})' if kinds else ''}"
             + (f", modeled by {meta['modeled_by']}" if meta.get("modeled_by") else "")
             + (f", knobs at {_setting(extra['knobs'])}" if extra.get("knobs") else "") + ".",
             f"NAM {document['architecture']} ({config['num_layers']} x {config['hidden_size']} units, size "
             f"{extra['size']}) at {document['sample_rate'] / 1000:g} kHz, trained with ampsim "
             f"{training['trainer_version']} on {', '.join(training['captures'])}; validation ESR "
             + ("not measured" if training["validation_esr"] is None else f"{training['validation_esr']:.4f}") + "."]
    if meta.get("loudness") is not None:
        parts.append(f"Loudness {meta['loudness']:.1f} dB, gain {meta['gain']:.2f}.")
    levels = [f"{side} {meta[key]:g} dBu" for side, key in zip(("input", "output"), LEVEL_KEYS)
              if meta.get(key) is not None]
    if levels:
        parts.append(f"Calibrated: 0 dBFS = {' / '.join(levels)}.")
    if training.get("checks_passed"):
        parts.append(f"All {len(training['checks_passed'])} data checks passed ({_replicate(training)}); "
                     f"latency of {_latency(training['latency_samples'])} measured and compensated.")
    if extra.get("cab_ir"):
        parts.append(f"Load {extra['cab_ir']['file']} ({extra['cab_ir']['taps']} taps) in NAM's IR slot: the model "
                     "was trained and scored with it.")
    return " ".join(parts)


def _setting(knobs: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in knobs.items())


def _replicate(training: dict[str, Any]) -> str:
    measured = [v for v in training["replicate_self_esr"].values() if v is not None]
    return f"replicate self-ESR {max(measured):.4f}" if measured else "no repeated passage for the replicate check"


def _latency(samples: dict[str, int]) -> str:
    values = sorted(set(samples.values()))
    return f"{values[0]} samples" if len(values) == 1 else f"{values[0]}-{values[-1]} samples"
