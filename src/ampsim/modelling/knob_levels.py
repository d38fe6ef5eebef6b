"""A knob set's output level between its recorded settings (`train.knob_levels: interpolated`).

A knob-conditioned model plays its recorded settings at their captured levels, but nothing tells it what
level to play between them, and there it can be off by a decibel or more: enough to cost a held-out setting
most of its ESR. On the JCM900's gain (0.6 and 1.0 recorded, 0.8 held out), the model trained with weight decay
played 0.8 0.75-1.4 dB too loud, and its held-out ESR was 0.017-0.046 over four seeds; with this table,
0.014-0.017, and 0.012-0.017 at four more seeds trained with it. The teachers' own 0.8 lies 0.45 dB from that
line (bench/RESULTS.md, sessions 38-39).

After training, the model plays windows of its captures' own DI at a grid of positions of the knob; its level at
each is compared with the line (in dB) through its levels at the recorded positions, and the difference is
the table of corrections the card carries (`ModelCard.knob_levels`). Rendering multiplies the output by the
correction at its setting (`core.knobs.level_gain`), and a .nam file bakes it into its weights. The
target is never used: the recorded settings' levels are the model's own. A set of one knob only: the levels
of several knobs' settings do not lie on lines between recorded ones.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

from ampsim.core.errors import AmpsimError


def grid(recorded: list[float], step: float) -> np.ndarray:
    """Positions every `step` from the lowest recorded setting to the highest, and the recorded ones."""
    low, high = min(recorded), max(recorded)
    spaced = low + step * np.arange(int(np.floor((high - low) / step + 1e-9)) + 1)
    return np.unique(np.round(np.concatenate([spaced, recorded, [high]]), 6))


def level_db(model: keras.Model, audio: np.ndarray, position: float, skip: int) -> float:
    """The model's output level (dB, mean power) on the windows `audio` (count, samples) with its one knob at
    `position`, each window's first `skip` samples left out (its state settling from zero)."""
    knob = np.full(audio.shape + (1,), position, np.float32)
    played = model.predict(np.concatenate([audio[..., None].astype(np.float32), knob], axis=-1),
                           batch_size=len(audio), verbose=0)
    return float(10.0 * np.log10(np.mean(np.square(played[:, skip:, 0], dtype=np.float64)) + 1e-30))


def level_table(model: keras.Model, knob: str, recorded: list[float], audio: np.ndarray, step: float,
                skip: int) -> dict[str, Any]:
    """The card's table for a model of one knob: the grid's positions and, at each, the correction (dB) that
    puts the model's level on the line through its levels at the `recorded` settings (0 at those)."""
    positions = grid(recorded, step)
    levels = np.array([level_db(model, audio, float(p), skip) for p in positions])
    at_recorded = np.isin(positions, np.round(recorded, 6))
    line = np.interp(positions, positions[at_recorded], levels[at_recorded])
    return {"knob": knob, "positions": [round(float(p), 6) for p in positions],
            "gain_db": [round(float(g), 4) for g in np.where(at_recorded, 0.0, line - levels)]}


MODES = ("learnt", "interpolated")


def check_settings(knob_levels: str, step: float, seconds: float, source) -> None:
    """`train.knob_levels` and its two settings, named before training when wrong."""
    if knob_levels not in MODES:
        raise AmpsimError(f"train.knob_levels is {knob_levels!r}", path=source,
                          fix="write interpolated (a knob set's level between recorded settings on a line in dB) "
                              "or learnt (as the model plays it)")
    for setting, value, example in (("knob_level_step", step, "0.025"), ("knob_level_seconds", seconds, "15.0")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise AmpsimError(f"train.{setting} is {value!r}: it must be a number > 0", path=source,
                              fix=f"write e.g. `{setting}: {example}`")
    if step > 0.5:
        raise AmpsimError(f"train.knob_level_step is {step}: a table that coarse misses the level between settings",
                          path=source, fix="write e.g. `knob_level_step: 0.025`")


def fit_levels(model: keras.Model, knobs: list[str], recorded: list[float], windows: np.ndarray, step: float,
               skip: int, log: Callable[[str], None] = print) -> tuple[dict | None, dict[str, Any]]:
    """The card's table for a model of one knob recorded at two or more settings, and what to report; (None, {})
    with a note for any other."""
    if len(knobs) != 1 or len(recorded) < 2:
        log(f"knob levels as learnt: the level table needs a set of one knob recorded at two settings or more "
            f"(this one: {len(knobs)} knobs, {len(recorded)} recorded positions)")
        return None, {}
    table = level_table(model, knobs[0], recorded, windows, step, skip)
    worst = int(np.argmax(np.abs(table["gain_db"])))
    log(f"knob levels: {knobs[0]} between its recorded settings set on a line in dB; the largest correction "
        f"{table['gain_db'][worst]:+.2f} dB at {table['positions'][worst]:g}")
    return table, {"knob_level_max_db": table["gain_db"][worst], "knob_level_at": table["positions"][worst]}
