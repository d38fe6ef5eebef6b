"""Scoring a trained model on the validation split, the way both the 2018 post and today's papers do.

- `mse_2018`: the post's metric: MSE on the last 10 ms of 110 ms windows, each from a zero state, over a
  FIXED set of windows (the tails tile the validation audio, capped and evenly spaced), so it compares
  between runs. The post reached 1.2e-3 on its own data.
- `esr`: sum((y - y_hat)^2) / sum(y^2) over the whole rendered validation audio; `esr_pre_emphasis` the same
  after first-order pre-emphasis; `level_db`: prediction RMS relative to the target's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ampsim import metrics, plots
from ampsim.audio import atomic_dir, write_text
from ampsim.models import ModelCard
from ampsim.params import EvaluateParams, RenderParams
from ampsim.render import WINDOWS_PER_BATCH, render
from ampsim.windows import Segment, tiled_windows

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"


def tail_window_mse(model: keras.Model, segments: list[Segment], window: int, tail: int, max_windows: int) -> float:
    """The 2018 metric over a fixed window set: windows every `tail` samples whose tails lie inside the audio."""
    inputs, targets = [], []
    for s in segments:
        full = len(s.x) // tail  # windows whose whole tail is real audio, not end padding
        inputs.append(tiled_windows(s.x, window, tail)[:full])
        targets.append(s.y[: full * tail].reshape(full, tail))
    x, y = np.concatenate(inputs), np.concatenate(targets)
    keep = metrics.evenly_spaced(len(x), max_windows)
    predicted = model.predict(x[keep][..., None], batch_size=WINDOWS_PER_BATCH, verbose=0)[:, -tail:, 0]
    return metrics.mse(y[keep], predicted)


def scores(target: np.ndarray, prediction: np.ndarray, pre_emphasis: float) -> dict[str, float]:
    return {"esr": metrics.esr(target, prediction),
            "esr_pre_emphasis": metrics.esr_pre_emphasis(target, prediction, pre_emphasis),
            "mse": metrics.mse(target, prediction),
            "level_db": metrics.level_db(target, prediction)}


def read_history(path: Path) -> dict[str, np.ndarray]:
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in (rows[0].keys() if rows else [])}


def evaluate(model: keras.Model, card: ModelCard, segments: list[Segment], params: EvaluateParams,
             render_params: RenderParams, window_2018: int, tail_2018: int, history_csv: Path, loss_name: str,
             out_dir: Path) -> dict[str, Any]:
    """Render every validation segment, score it, draw the figures; write metrics.json and plots/ into
    `out_dir` (replaced atomically) and return the metrics."""
    predictions = {s.capture: render(model, card, s.x, render_params) for s in segments}
    target_all = np.concatenate([s.y for s in segments])
    prediction_all = np.concatenate([predictions[s.capture] for s in segments])
    result: dict[str, Any] = {
        "mse_2018": tail_window_mse(model, segments, window_2018, tail_2018, params.max_tail_windows),
        **scores(target_all, prediction_all, params.pre_emphasis),
        "val_seconds": round(len(target_all) / card.sample_rate, 3),
        "captures": {s.capture: scores(s.y, predictions[s.capture], params.pre_emphasis) for s in segments},
    }
    with atomic_dir(Path(out_dir) / PLOTS_DIR) as scratch:
        first = segments[0]
        span = max(int(params.overlay_ms * card.sample_rate / 1000), 2)
        centre = int(np.argmax(np.abs(first.y)))
        start = int(np.clip(centre - span // 2, 0, max(len(first.y) - span, 0)))
        plots.waveform_overlay(scratch / "waveform.png", first.y[start : start + span],
                               predictions[first.capture][start : start + span], card.sample_rate,
                               f"{first.capture}: validation audio at {start / card.sample_rate:.2f} s")
        shown = int(params.spectrogram_seconds * card.sample_rate)
        plots.spectrograms(scratch / "spectrograms.png",
                           {s.capture: {"input": s.x[:shown], "target": s.y[:shown],
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
