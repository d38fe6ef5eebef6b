"""The steps that set a new best validation loss, kept with their weights, best first.

Validation renders short passages from a zero state; a plugin plays one endless stream, where a recurrent
state can latch (`ampsim.inference.latching`). The best step on validation may be one that latches, and an
earlier best one may not: training keeps the last few so that it can ship the best that plays as one stream.
A network trained through an IR (`fit.through_ir_taps`) is kept with the IR it was validated through: it plays
no cabinet of its own, so only through that IR can the check tell a latched second from a good one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class BestSteps:
    """Up to `keep` (step, validation loss, weights), best first: each new best is better than every earlier one;
    and the IR each was trained through, where there was one."""

    def __init__(self, keep: int):
        self.keep = keep
        self.steps: list[tuple[int, float, list[np.ndarray]]] = []
        self.trained_irs: dict[int, np.ndarray] = {}

    def add(self, step: int, val_loss: float, weights: list[np.ndarray], trained_ir: np.ndarray | None = None) -> None:
        if self.keep > 0:
            self.steps = [(step, val_loss, [np.array(w) for w in weights])] + self.steps[: self.keep - 1]
            kept = {s for s, _, _ in self.steps}
            self.trained_irs = {s: ir for s, ir in self.trained_irs.items() if s in kept}
            if trained_ir is not None:
                self.trained_irs[step] = np.array(trained_ir, np.float32)

    def candidates(self) -> list[tuple[int, list[np.ndarray]]]:
        return [(step, weights) for step, _, weights in self.steps]

    def val_loss(self, step: int) -> float:
        return next(loss for kept, loss, _ in self.steps if kept == step)

    def save(self, path: Path) -> None:
        arrays = {f"s{rank}_w{i:03d}": w for rank, (_, _, weights) in enumerate(self.steps) for i, w in enumerate(weights)}
        arrays["steps"] = np.array([s for s, _, _ in self.steps], np.int64)
        arrays["val_losses"] = np.array([v for _, v, _ in self.steps], np.float64)
        arrays.update({f"ir_{step}": ir for step, ir in self.trained_irs.items()})
        np.savez(path, **arrays)

    def load(self, path: Path) -> None:
        """What `save` wrote; a checkpoint from before the file existed keeps none (the best weights remain)."""
        if not Path(path).is_file():
            self.steps, self.trained_irs = [], {}
            return
        with np.load(path) as saved:
            self.steps = [(int(step), float(loss), [saved[k] for k in sorted(saved.files) if k.startswith(f"s{rank}_")])
                          for rank, (step, loss) in enumerate(zip(saved["steps"], saved["val_losses"]))]
            self.trained_irs = {int(k[3:]): saved[k] for k in saved.files if k.startswith("ir_")}
