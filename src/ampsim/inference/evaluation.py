"""Scoring a trained model on the validation split, the way both the 2018 post and today's papers do.

- `mse_2018`: the post's metric: MSE on the last 10 ms of 110 ms windows, each from a zero state, over a
  FIXED set of windows (the tails tile the validation audio, capped and evenly spaced), so it compares
  between runs. The post reached 1.2e-3 on its own data.
- `esr`: sum((y - y_hat)^2) / sum(y^2) over the whole rendered validation audio; `esr_pre_emphasis` the same
  after first-order pre-emphasis; `level_db`: prediction RMS relative to the target's.
- `stream_esr`, `stream_esr_in_blocks`, `stream_latched_seconds` (a streaming LSTM): every capture whole as
  one stream, as a plugin plays it, against the same in short blocks (`latching`).
- per capture, i.e. per knob setting of a conditioned set, the same figures with the setting's knob values;
  `esr_held_out` over the captures held out whole (`split: val`): settings the model never trained on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ampsim.core import metrics
from ampsim.core.audio import atomic_dir, write_text
from ampsim.core.knobs import knob_vector, with_knobs
from ampsim.core.params import EvaluateParams, RenderParams
from ampsim.data.windows import Segment, tiled_windows
from ampsim.inference import plots
from ampsim.inference.engine import WINDOWS_PER_BATCH, render
from ampsim.modelling.models import ModelCard

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"


def tail_window_mse(model: keras.Model, card: ModelCard, segments: list[Segment], window: int, tail: int,
                    max_windows: int) -> float:
    """The 2018 metric over a fixed window set: windows every `tail` samples whose tails lie inside the audio
    (with each capture's knob setting as the model's extra channels)."""
    counts = [len(s.x) // tail for s in segments]  # windows whose whole tail is real audio, not end padding
    starts = np.concatenate([[0], np.cumsum(counts)])
    keep = metrics.evenly_spaced(int(starts[-1]), max_windows)
    inputs, targets = [], []
    for index, s in enumerate(segments):
        # only the kept windows are copied out of the (strided, copy-free) tiling, knob channels added to them
        local = keep[(keep >= starts[index]) & (keep < starts[index + 1])] - starts[index]
        inputs.append(with_knobs(tiled_windows(s.x, window, tail)[local], knob_vector(card.knobs, s.knobs)))
        targets.append(s.y[: counts[index] * tail].reshape(counts[index], tail)[local])
    x, y = np.concatenate(inputs), np.concatenate(targets)
    predicted = model.predict(x, batch_size=WINDOWS_PER_BATCH, verbose=0)[:, -tail:, 0]
    return metrics.mse(y, predicted)


def scores(target: np.ndarray, prediction: np.ndarray, pre_emphasis: float) -> dict[str, float]:
    return {"esr": metrics.esr(target, prediction),
            "esr_pre_emphasis": metrics.esr_pre_emphasis(target, prediction, pre_emphasis),
            "mse": metrics.mse(target, prediction),
            "level_db": metrics.level_db(target, prediction)}


def _label(segment: Segment) -> str:
    """A capture's name with its knob setting, as plot titles show it."""
    setting = ", ".join(f"{k} {v:g}" for k, v in sorted(segment.knobs.items()))
    held = " (held out)" if segment.held_out else ""
    return f"{segment.capture}" + (f" [{setting}]{held}" if setting else held)


def read_history(path: Path) -> dict[str, np.ndarray]:
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in (rows[0].keys() if rows else [])}


def score(model: keras.Model, card: ModelCard, segments: list[Segment], params: EvaluateParams,
          render_params: RenderParams, window_2018: int, tail_2018: int) -> tuple[dict[str, Any], dict]:
    """Render every validation segment and score it: the metrics, and the renderings by capture."""
    predictions = {s.capture: render(model, card, s.x, render_params, s.knobs) for s in segments}
    target_all = np.concatenate([s.y for s in segments])
    prediction_all = np.concatenate([predictions[s.capture] for s in segments])
    result: dict[str, Any] = {
        "mse_2018": tail_window_mse(model, card, segments, window_2018, tail_2018, params.max_tail_windows),
        **scores(target_all, prediction_all, params.pre_emphasis),
        "val_seconds": round(len(target_all) / card.sample_rate, 3),
        "captures": {s.capture: {**scores(s.y, predictions[s.capture], params.pre_emphasis),
                                 "held_out": int(s.held_out), **{f"knob_{k}": v for k, v in s.knobs.items()}}
                     for s in segments},
    }
    held_out = [s for s in segments if s.held_out]
    if held_out:
        result["esr_held_out"] = metrics.esr(np.concatenate([s.y for s in held_out]),
                                             np.concatenate([predictions[s.capture] for s in held_out]))
    return result, predictions


def evaluate(model: keras.Model, card: ModelCard, segments: list[Segment], params: EvaluateParams,
             render_params: RenderParams, window_2018: int, tail_2018: int, history_csv: Path, loss_name: str,
             out_dir: Path, extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Render every validation segment, score it, draw the figures; write metrics.json (with `extra`, figures
    measured elsewhere such as the stream check) and plots/ into `out_dir` (replaced atomically) and return
    the metrics."""
    result, predictions = score(model, card, segments, params, render_params, window_2018, tail_2018)
    result.update(extra or {})
    with atomic_dir(Path(out_dir) / PLOTS_DIR) as scratch:
        span = max(int(params.overlay_ms * card.sample_rate / 1000), 2)
        overlays = {}
        for s in segments:
            centre = int(np.argmax(np.abs(s.y)))
            start = int(np.clip(centre - span // 2, 0, max(len(s.y) - span, 0)))
            overlays[f"{_label(s)}: validation audio at {start / card.sample_rate:.2f} s"] = (
                s.y[start : start + span], predictions[s.capture][start : start + span])
        plots.waveform_overlay(scratch / "waveform.png", overlays, card.sample_rate)
        shown = int(params.spectrogram_seconds * card.sample_rate)
        plots.spectrograms(scratch / "spectrograms.png",
                           {_label(s): {"input": s.x[:shown], "target": s.y[:shown],
                                        "prediction": predictions[s.capture][:shown]} for s in segments},
                           card.sample_rate)
        history = read_history(history_csv)
        if history:
            plots.loss_curve(scratch / "loss.png", history["step"], history["train_loss"], history["val_loss"],
                             loss_name)
    write_text(Path(out_dir) / METRICS_FILE, json.dumps(result, indent=2) + "\n")
    return result


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """For MLflow: the overall figures as `val_<name>`, each capture's as `val_<capture>_<name>`."""
    flat = {f"val_{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))}
    for capture, values in result["captures"].items():
        flat.update({f"val_{capture}_{k}": float(v) for k, v in values.items()})
    return flat
