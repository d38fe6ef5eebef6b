"""How much warm-up `fast` rendering needs: measured once per trained model, outside training, so that a
render setting never retrains a model. The result rides in the model card (`context_samples`)."""

from __future__ import annotations

import dataclasses
from typing import Iterable

import keras
import numpy as np

from ampsim.core import metrics
from ampsim.core.knobs import knob_vector
from ampsim.core.params import RenderParams
from ampsim.data.windows import Segment, samples
from ampsim.inference.engine import BlockPlan, render_exact, render_fast
from ampsim.modelling.architectures import architecture
from ampsim.modelling.models import ModelCard


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




def measure_warmup(model: keras.Model, card: ModelCard, val_segments: list[Segment], train_segments: list[Segment],
                   params: RenderParams) -> tuple[int | None, float]:
    """The warm-up `fast` rendering needs for this trained model, and its ESR against `exact`.

    It is measured on the capture's DI, validation first, then training audio (all of it material the model
    will meet), up to `params.context_probe_seconds`. A knob-conditioned model is probed at every setting of
    its set (the probe time shared between them) and gets the longest warm-up any of them needs."""
    segments = val_segments + train_segments
    settings = list({tuple(sorted(s.knobs.items())): dict(s.knobs) for s in segments}.values())
    frames = int(params.context_probe_seconds * card.sample_rate / len(settings))
    shortest = architecture(card.architecture).shortest_context(card.window_samples, card.tail_samples,
                                                                card.sample_rate)
    longest = max(samples(params.max_context_ms, card.sample_rate), shortest)
    measured = []
    for setting in settings:
        probe = np.concatenate([s.x for s in segments if s.knobs == setting])[:frames]
        measured.append(measure_context(model, probe, context_candidates(shortest, longest),
                                        samples(params.block_ms, card.sample_rate), params,
                                        knob_vector(card.knobs, setting)))
    contexts = [context for context, _ in measured]
    context = None if None in contexts else int(max(contexts))
    return context, float(max(esr for _, esr in measured))


def with_warmup(model: keras.Model, card: ModelCard, val_segments: list[Segment], train_segments: list[Segment],
                params: RenderParams) -> ModelCard:
    """The card with the measured warm-up (`context_samples`, `context_esr`)."""
    context, esr = measure_warmup(model, card, val_segments, train_segments, params)
    return dataclasses.replace(card, context_samples=context, context_esr=esr)


def describe(card: ModelCard, params: RenderParams) -> str:
    if card.context_samples:
        return f"fast rendering: {card.context_samples} samples of warm-up (ESR {card.context_esr:.2g} against exact)"
    return (f"fast rendering falls back to exact: no warm-up up to {params.max_context_ms:g} ms matched "
            f"(ESR {card.context_esr:.2g})")
