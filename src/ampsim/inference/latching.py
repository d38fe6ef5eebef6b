"""Does a recurrent model keep playing right as one endless stream, as a plugin plays it?

A streaming LSTM trains on short segments, each from a fresh state, and validation renders its own passage
from a zero state. Neither sees what a plugin does: one stream that never restarts. A state can latch there:
something loud (a -6 dBFS sweep, a hard strum) drives a few cells into a corner that quieter playing never
leads out of, and the model plays on wrong, often 20 dB too quiet, for tens of seconds, until something as
loud knocks it back. (Measured: the 5150 at 15 training minutes scored validation ESR 0.028 and ESR 0.49 on
its own training audio as one stream, latched from 13 s to 91 s; bench/RESULTS.md, session 10.)

The check renders each capture whole (its training part, then its validation part) twice: as one stream
from a zero state, and in 1 s blocks, each after 0.25 s of its own audio, which no latch outlives. A second
that plays far worse as one stream than in blocks is latched. Training ships the best step that passes
(`first_unlatched`); evaluate reports the check on what shipped.

Both renders are scored against the target, and so both go through the IR that follows the network: the
model's cab IR, or, for a step trained through an IR (`fit.through_ir_taps`), the IR it was trained through.
Such a network plays no cabinet itself: scored alone, its good seconds are already about 0.5 and a silent one
is 1.0, only 2x worse, and a step that went silent after 10 s as one stream passed the check (the 5150 at
5 minutes shipped validation ESR 0.47 for 0.04 in training; bench/RESULTS.md, session 24).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from ampsim.core import metrics
from ampsim.core.knobs import knob_vector
from ampsim.core.params import RenderParams
from ampsim.data.windows import Segment
from ampsim.inference.blocks import BlockPlan
from ampsim.inference.engine import block_renderer, render_exact
from ampsim.modelling import cab_ir
from ampsim.modelling.models import ModelCard

BLOCK_SECONDS, LEAD_SECONDS = 1.0, 0.25
LATCH_RATIO = 4.0  # a second this many times worse as one stream than in blocks ...
LATCH_MIN_ESR = 0.1  # ... and at least this bad as one stream counts as latched


@dataclass(frozen=True)
class StreamRender:
    """How the check renders: render settings that change speed, never the figures (the training stage, which
    reads no render settings, takes the defaults)."""

    chunk_samples: int = 65536
    blocks_per_batch: int = 32
    jit_compile: bool = True

    @classmethod
    def of(cls, params: RenderParams) -> "StreamRender":
        return cls(params.exact_chunk_samples, params.blocks_per_batch, params.jit_compile)


@dataclass(frozen=True)
class StreamCheck:
    esr_stream: float  # every capture, each as one stream from a zero state
    esr_blocks: float  # the same audio in blocks
    latched_seconds: int
    worst: str | None  # the capture with the most latched seconds, and where its first one is

    def as_metrics(self) -> dict[str, float]:
        return {"stream_esr": self.esr_stream, "stream_esr_in_blocks": self.esr_blocks,
                "stream_latched_seconds": float(self.latched_seconds)}

    def warning(self) -> str | None:
        if not self.latched_seconds:
            return None
        return (f"WARNING: the model's state latches when it plays on: {self.latched_seconds} s of the captures "
                f"play far worse as one stream (as a plugin plays, ESR {self.esr_stream:.4f}) than in blocks "
                f"({self.esr_blocks:.4f}); {self.worst}. Retrain with another train.random_seed (whether a "
                "state latches differs from run to run), and listen to a long take before you ship it")


def is_streaming(model: keras.Model) -> bool:
    return any(isinstance(layer, keras.layers.LSTM) for layer in model.layers)


def _whole_captures(train: list[Segment], val: list[Segment]) -> list[tuple[str, Segment]]:
    """Each capture's training part then its validation part, as one segment."""
    parts: dict[str, list[Segment]] = {}
    for segment in train + val:
        parts.setdefault(segment.capture, []).append(segment)
    return [(name, Segment(name, np.concatenate([s.x for s in pieces]), np.concatenate([s.y for s in pieces]),
                           pieces[0].knobs)) for name, pieces in parts.items()]


def _per_second(target: np.ndarray, prediction: np.ndarray, rate: int) -> np.ndarray:
    seconds = len(target) // rate
    error = ((target - prediction)[: seconds * rate] ** 2).reshape(seconds, rate).sum(axis=1)
    energy = (target[: seconds * rate] ** 2).reshape(seconds, rate).sum(axis=1)
    return error / np.maximum(energy, 1e-12)


def one_take(model: keras.Model, x: np.ndarray, y: np.ndarray, rate: int, knobs: np.ndarray,
             render: StreamRender = StreamRender(), ir: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One take as one stream and in blocks (both followed by the model's cab IR `ir`, where it has one), and
    the seconds (indices) that latch."""
    plan = BlockPlan(block=int(BLOCK_SECONDS * rate), context=int(LEAD_SECONDS * rate), blocks=render.blocks_per_batch)
    stream = cab_ir.apply(ir, render_exact(model, x, render.chunk_samples, render.jit_compile, knobs).reshape(-1))
    blocks = cab_ir.apply(ir, block_renderer(model, plan, render.jit_compile, knobs=knobs)(x).reshape(-1))
    as_stream, in_blocks = _per_second(y, stream, rate), _per_second(y, blocks, rate)
    return stream, blocks, np.flatnonzero((as_stream > LATCH_RATIO * in_blocks) & (as_stream > LATCH_MIN_ESR))


def stream_check(model: keras.Model, card: ModelCard, train: list[Segment], val: list[Segment],
                 render: StreamRender = StreamRender(), trained_ir: np.ndarray | None = None) -> StreamCheck | None:
    """The check over every capture, through `trained_ir` (the IR the network was trained through) or else the
    card's cab IR; None for a model without a state to latch (a convolution)."""
    if not is_streaming(model):
        return None
    ir = trained_ir if trained_ir is not None else cab_ir.decode(card.cab_ir)
    targets, streams, blocked, latched, worst = [], [], [], 0, (0, None)
    for name, capture in _whole_captures(train, val):
        stream, blocks, bad = one_take(model, capture.x, capture.y, card.sample_rate,
                                       knob_vector(card.knobs, capture.knobs), render, ir)
        latched += len(bad)
        if len(bad) > worst[0]:
            worst = (len(bad), f"{name}: {len(bad)} s latched, the first at {bad[0]} s")
        targets.append(capture.y)
        streams.append(stream)
        blocked.append(blocks)
    target = np.concatenate(targets)
    return StreamCheck(metrics.esr(target, np.concatenate(streams)), metrics.esr(target, np.concatenate(blocked)),
                       latched, worst[1])


def first_unlatched(model: keras.Model, card: ModelCard, candidates: list[tuple[int, list[np.ndarray]]],
                    train: list[Segment], val: list[Segment], log: Callable[[str], None] = print,
                    render: StreamRender = StreamRender(), trained_irs: dict[int, np.ndarray] | None = None
                    ) -> tuple[int, dict[int, int]]:
    """Load into `model` the first of `candidates` ((step, weights), best validation first) that plays its
    captures as one stream without a latched second, each through the IR it was trained through where
    `trained_irs` (by step) has one; if every one latches, the first. Returns its step and the latched seconds
    of each step checked."""
    checked: dict[int, int] = {}
    for step, weights in candidates:
        model.set_weights(weights)
        check = stream_check(model, card, train, val, render, (trained_irs or {}).get(step))
        if check is None:  # nothing to latch
            return step, checked
        checked[step] = check.latched_seconds
        if not check.latched_seconds:
            return step, checked
        log(f"step {step} latches as one stream ({check.worst}; ESR {check.esr_stream:.4f} against "
            f"{check.esr_blocks:.4f} in blocks): passed over")
    model.set_weights(candidates[0][1])
    log(f"every one of the {len(candidates)} best steps kept latches: shipping step {candidates[0][0]}, the best "
        "on validation. Retrain with another train.random_seed, or keep more with train.latch_fallbacks")
    return candidates[0][0], checked
