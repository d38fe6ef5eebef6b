"""Knob-conditioned captures: the settings of the amp's knobs (each 0-1) as extra constant input channels.

A capture's `capture.yaml` may name knob values (`knobs: {gain: 0.6, tone: 0.3}`); the captures trained
together form a set, and every capture of a set names the same knobs. A conditioned model takes
1 + K input channels: the audio, then the K knob values in the order of `knob_names` (sorted by name), held
constant over time. The model card lists those names; rendering checks a user's settings against them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ampsim.core.errors import AmpsimError, CaptureError


def check_value(name: str, value: object, where: Path | str | None = None) -> float:
    """A knob value as a float within 0-1, or a clear error naming the knob."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise CaptureError(f"knob {name!r} has the value {value!r}, not a number", path=where,
                           fix=f"write the knob's position as a number from 0 to 1, e.g. `{name}: 0.5`")
    if not 0.0 <= float(value) <= 1.0:
        raise CaptureError(f"knob {name!r} is {value}, outside 0-1", path=where,
                           fix="give knob positions from 0 (fully down) to 1 (fully up): on a 0-10 dial, divide by 10")
    return float(value)


def check_set(settings: Mapping[str, Mapping[str, float]], where: Mapping[str, Path] | None = None) -> list[str]:
    """The knob names shared by every capture of a set (sorted), or a clear error naming the capture that
    lacks a knob the others have. `settings` maps each capture name to its knob values."""
    names = knob_names(settings.values())
    for capture, knobs in settings.items():
        missing = [knob for knob in names if knob not in knobs]
        if missing:
            named_by = sorted(c for c, k in settings.items() if missing[0] in k)
            raise CaptureError(
                f"capture {capture!r} does not set the knob {missing[0]!r} (set by {', '.join(named_by)}): every "
                f"capture trained together must name the same knobs {names}",
                path=(where or {}).get(capture),
                fix=f"add `{missing[0]}: <0-1>` under `knobs:` in its capture.yaml, or move the capture to another "
                    f"captures folder")
    return names


def knob_names(settings: Iterable[Mapping[str, float]]) -> list[str]:
    return sorted({knob for knobs in settings for knob in knobs})


def interior_settings(names: list[str], settings: Iterable[Mapping[str, float]]) -> list[list[float]]:
    """Per knob of `names`, the recorded positions strictly between its lowest and highest (sorted): where a
    knob's taper may bend and the captures still say how far (a knob bends between two recorded settings, not
    beyond the last)."""
    recorded = [sorted({float(knobs[name]) for knobs in settings if name in knobs}) for name in names]
    return [values[1:-1] for values in recorded]


def knob_vector(names: list[str], given: Mapping[str, float] | None, model: str = "this model") -> np.ndarray:
    """The knob channels for a model conditioned on `names`: every knob given, none unknown, each in 0-1."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        known = f"its knobs are {', '.join(names)}" if names else "it has no knobs"
        raise AmpsimError(f"{model} has no knob {unknown[0]!r} ({known})",
                          fix="drop that --knob" if not names else f"use --knob NAME=VALUE with NAME one of {', '.join(names)}")
    missing = [name for name in names if name not in given]
    if missing:
        raise AmpsimError(f"{model} is conditioned on the knobs {', '.join(names)}; no value given for "
                          f"{missing[0]!r}", fix="pass every knob, e.g. " + " ".join(f"--knob {n}=0.5" for n in names))
    values = [check_value(name, given[name], None) for name in names]
    return np.asarray(values, np.float32)


def parse_knob(text: str) -> tuple[str, float]:
    """`gain=0.7` as ("gain", 0.7), for the command line."""
    name, sep, value = text.partition("=")
    name = name.strip()
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name or number is None:
        raise AmpsimError(f"--knob {text!r} is not NAME=VALUE", fix="write e.g. --knob gain=0.7")
    return name, check_value(name, number)


def with_knobs(audio: np.ndarray, knobs: np.ndarray) -> np.ndarray:
    """Audio of shape (..., T) as model input (..., T, 1 + K): the knob values repeated at every time step."""
    audio = np.asarray(audio, np.float32)[..., None]
    if len(knobs) == 0:
        return audio
    constant = np.broadcast_to(np.asarray(knobs, np.float32), audio.shape[:-1] + (len(knobs),))
    return np.concatenate([audio, constant], axis=-1)


def level_gain(levels: Mapping | None, names: list[str], knob_values: np.ndarray) -> float:
    """The output gain (linear) that a model's knob-level table (`train.knob_levels: interpolated`) sets at
    `knob_values`: its dB correction interpolated linearly between the table's positions, 0 dB beyond the
    recorded ends. 1.0 for a model without a table."""
    if not levels:
        return 1.0
    value = float(np.asarray(knob_values, np.float64)[names.index(levels["knob"])])
    return float(10.0 ** (np.interp(value, levels["positions"], levels["gain_db"], left=0.0, right=0.0) / 20.0))
