"""Block rendering of one stream, whatever computes the model: the audio cut into blocks rendered side by side
as one batch, each after `context` samples of the audio before it (see `ampsim.inference.engine`). A
`predict` function maps a batch [blocks, samples, channels] to [blocks, samples]: Keras' (engine) or ONNX
Runtime's (runtime). No Keras here, so that a released model renders in a process that never imports it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ampsim.core.errors import AmpsimError
from ampsim.core.knobs import knob_vector, level_gain, with_knobs
from ampsim.core.params import RenderParams
from ampsim.data.windows import samples
from ampsim.modelling.card import ModelCard

Predict = Callable[[np.ndarray], np.ndarray]
WINDOWS_PER_BATCH = 256  # sliding window: 256 x 5280 x 4 bytes = 5.4 MB of input per predict batch


@dataclass(frozen=True)
class BlockPlan:
    """How `fast` (and `sliding-window`) cut the audio: up to `blocks` blocks of `block` samples per batch,
    each after `context` samples of warm-up."""

    block: int
    context: int
    blocks: int
    # The first block of a stream starts from the zero state, as `exact` does, instead of after `context`
    # samples of silence (a model's state on silence is not zero). `sliding-window` keeps 2018's padding.
    exact_start: bool = True

    @property
    def chunk(self) -> int:
        return self.block * self.blocks


def split_over_threads(predict: Predict, workers: int) -> Predict:
    """`predict` with each batch split over `workers` threads: a runtime that computes one recurrent loop on
    one core (XLA, ONNX Runtime's LSTM) and releases the GIL then uses the other cores."""
    if workers <= 1:
        return predict

    def threaded(batch: np.ndarray) -> np.ndarray:
        if len(batch) < workers:
            return predict(batch)
        with ThreadPoolExecutor(workers) as pool:
            return np.concatenate(list(pool.map(predict, np.array_split(batch, workers))))

    return threaded


class BlockRenderer:
    """Renders consecutive chunks of one stream by blocks with warm-up; remembers the last `context` input
    samples so that a block at a chunk boundary gets the same warm-up as any other."""

    def __init__(self, predict: Predict, plan: BlockPlan, knobs: np.ndarray | None = None):
        self.predict, self.plan = predict, plan
        self.knobs = np.zeros(0, np.float32) if knobs is None else np.asarray(knobs, np.float32)
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the compiled function is kept)."""
        self.history = np.zeros(self.plan.context, np.float32)
        self.at_start = self.plan.exact_start

    @property
    def chunk(self) -> int:
        """Samples per call that fill exactly one batch."""
        return self.plan.chunk

    def __call__(self, x: np.ndarray) -> np.ndarray:
        plan = self.plan
        x = np.asarray(x, np.float32)
        out = np.empty(len(x), np.float32)
        for start in range(0, len(x), plan.chunk):
            part = x[start : start + plan.chunk]
            count = -(-len(part) // plan.block)
            # Batches of `blocks` rows, or a power of two for a short last one: few shapes, few compilations.
            rows = min(plan.blocks, 1 << (count - 1).bit_length())
            padded = np.zeros(plan.context + rows * plan.block, np.float32)
            padded[: plan.context] = self.history
            padded[plan.context : plan.context + len(part)] = part
            batch = np.lib.stride_tricks.sliding_window_view(padded, plan.context + plan.block)[:: plan.block][:rows]
            batch = batch.copy()
            if self.at_start:  # the opening block first, then silence: its output starts from the zero state
                batch[0] = np.roll(batch[0], -plan.context)
                batch[0, plan.block :] = 0.0
            predicted = self.predict(with_knobs(batch, self.knobs))[:count]
            tails = predicted[:, plan.context :]
            if self.at_start:
                tails[0] = predicted[0, : plan.block]
                self.at_start = False
            out[start : start + len(part)] = tails.reshape(-1)[: len(part)]
            self.history = padded[len(part) : len(part) + plan.context].copy()
        return out


def fast_plan(card: ModelCard, params: RenderParams) -> BlockPlan:
    """The block plan for `fast` mode: the model's measured context, and blocks long enough that rendering
    each block's warm-up adds at most 1 / render.blocks_per_context to the work (a model that needs 2 s of
    warm-up renders 8 s blocks, not 0.5 s ones that would cost 5x the audio)."""
    if card.context_samples is None:
        raise AmpsimError("this model has no measured warm-up context for fast rendering (the register stage "
                          "measures it: a model straight from training has none)",
                          fix="render the released model (`--model DEVICE`, or models/DEVICE/release), or "
                              "render with --method exact")
    block = max(samples(params.block_ms, card.sample_rate), card.context_samples * params.blocks_per_context)
    return BlockPlan(block=block, context=card.context_samples, blocks=params.blocks_per_batch)


def sliding_window_plan(window: int, hop: int) -> BlockPlan:
    return BlockPlan(hop, window - hop, WINDOWS_PER_BATCH, exact_start=False)


class FollowedByIR:
    """A stream renderer followed by the model's cab IR, both carrying their state from chunk to chunk."""

    def __init__(self, render_chunk, ir: np.ndarray):
        from ampsim.modelling import cab_ir  # scipy, 0.5-2 s to import: only for a model that has an IR

        self.render_chunk, self.ir = render_chunk, cab_ir.Stream(ir)

    @property
    def chunk(self) -> int:
        return self.render_chunk.chunk

    def reset(self) -> None:
        self.render_chunk.reset()
        self.ir.reset()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.ir(self.render_chunk(x))


def with_cab_ir(render_chunk, card: ModelCard):
    """`render_chunk` followed by the IR in the model's card, where it has one."""
    if card.cab_ir is None:
        return render_chunk
    from ampsim.modelling import cab_ir

    return FollowedByIR(render_chunk, cab_ir.decode(card.cab_ir))


class AtLevel:
    """A stream renderer at the gain that a knob set's level table sets for its knob setting."""

    def __init__(self, render_chunk, gain: float):
        self.render_chunk, self.gain = render_chunk, np.float32(gain)

    @property
    def chunk(self) -> int:
        return self.render_chunk.chunk

    def reset(self) -> None:
        self.render_chunk.reset()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.render_chunk(x) * self.gain


def after_network(render_chunk, card: ModelCard, knobs: dict[str, float] | None):
    """`render_chunk` (the network) as the model plays: at its knob setting's level (`ModelCard.knob_levels`),
    then through its cab IR, where it has them."""
    if card.knob_levels:
        render_chunk = AtLevel(render_chunk, level_gain(card.knob_levels, card.knobs, knob_vector(card.knobs, knobs)))
    return with_cab_ir(render_chunk, card)
