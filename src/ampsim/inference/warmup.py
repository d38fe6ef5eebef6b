"""How much warm-up `fast` rendering needs: measured once per trained model, outside training, so that a
render setting never retrains a model. The result rides in the model card (`context_samples`)."""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np

from ampsim.core import metrics
from ampsim.core.params import RenderParams
from ampsim.inference.engine import BlockPlan, render_exact, render_fast


def context_candidates(minimum: int, maximum: int) -> list[int]:
    """Doubling warm-up lengths from `minimum` up to `maximum` (both included)."""
    candidates = []
    length = max(minimum, 1)
    while length < maximum:
        candidates.append(length)
        length *= 2
    return candidates + [maximum]


def measure_context(model: keras.Model, x: np.ndarray, candidates: Iterable[int], block: int,
                    params: RenderParams, knobs: np.ndarray | None = None) -> tuple[int | None, float]:
    """The warm-up for `fast` mode: twice the shortest with which fast matches exact on `x` within
    `params.context_tolerance_esr` (ESR between the two; the factor 2 is margin for audio unlike `x`), and
    the ESR measured with it. (None, ESR of the longest candidate) when none matches: the model's state
    does not forget its start within `max_context_ms`, and `fast` falls back to `exact`."""
    candidates = list(candidates)
    reference = render_exact(model, x, params.exact_chunk_samples, params.jit_compile, knobs)

    def error(context: int) -> float:
        plan = BlockPlan(max(block, context), context, params.blocks_per_batch)
        return metrics.esr(reference, render_fast(model, x, plan, params.jit_compile, params.workers, knobs))

    for context in candidates:
        if error(context) <= params.context_tolerance_esr:
            margin = min(2 * context, candidates[-1])
            return margin, error(margin)
    return None, error(candidates[-1])


