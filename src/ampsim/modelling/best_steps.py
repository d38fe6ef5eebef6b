"""The steps that set a new best validation loss, kept with their weights, best first.

Validation renders short passages from a zero state; a plugin plays one endless stream, where a recurrent
state can latch (`ampsim.inference.latching`). The best step on validation may be one that latches, and an
earlier best one may not: training keeps the last few so that it can ship the best that plays as one stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class BestSteps:
    """Up to `keep` (step, validation loss, weights), best first: each new best is better than every earlier one."""

    def __init__(self, keep: int):
        self.keep = keep
        self.steps: list[tuple[int, float, list[np.ndarray]]] = []

    def add(self, step: int, val_loss: float, weights: list[np.ndarray]) -> None:
        if self.keep > 0:
            self.steps = [(step, val_loss, [np.array(w) for w in weights])] + self.steps[: self.keep - 1]

    def candidates(self) -> list[tuple[int, list[np.ndarray]]]:
        return [(step, weights) for step, _, weights in self.steps]

    def val_loss(self, step: int) -> float:
        return next(loss for kept, loss, _ in self.steps if kept == step)

    def save(self, path: Path) -> None:
        arrays = {f"s{rank}_w{i:03d}": w for rank, (_, _, weights) in enumerate(self.steps) for i, w in enumerate(weights)}
        arrays["steps"] = np.array([s for s, _, _ in self.steps], np.int64)
        arrays["val_losses"] = np.array([v for _, v, _ in self.steps], np.float64)
        np.savez(path, **arrays)

    def load(self, path: Path) -> None:
        """What `save` wrote; a checkpoint from before the file existed keeps none (the best weights remain)."""
        if not Path(path).is_file():
            self.steps = []
            return
        with np.load(path) as saved:
            self.steps = [(int(step), float(loss), [saved[k] for k in sorted(saved.files) if k.startswith(f"s{rank}_")])
                          for rank, (step, loss) in enumerate(zip(saved["steps"], saved["val_losses"]))]
