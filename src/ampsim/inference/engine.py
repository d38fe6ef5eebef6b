"""Running a trained model over audio. Every method returns exactly as many samples as it is given.

- `exact`: one continuous stream from a zero state, the recurrent state carried from chunk to chunk, so a
  file of any length is rendered in constant memory. The reference the other methods are measured against.
  A causal convolution (receptive field R) has no state: its `exact` is blocks after R - 1 samples of
  context, which is mathematically the stream itself (every output sample sees all R of its inputs).
- `fast`: the audio cut into blocks that are rendered side by side as one batch (a recurrent net on a CPU is
  bound by its per-timestep overhead, so many short sequences beat one long one). Each block is preceded by
  `context` samples of the audio before it, whose output is thrown away: the state has settled by the time
  the block starts. The context is measured once for each trained model (`ampsim.inference.warmup`).
- `sliding-window` (`lstm2018` only): the 2018 method: 110 ms windows every 10 ms, each from a zero state,
  keeping the last 10 ms. It is `fast` with block = 10 ms and context = 100 ms. The original lost samples at
  both ends; here the input is zero-padded so the output always has the input's length.

A knob-conditioned model renders at one setting of its knobs per stream: the renderers take the audio alone
and add the knob channels themselves, so files, chunks and warm-up history stay plain mono audio.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from ampsim.core.errors import AmpsimError
from ampsim.core.knobs import knob_vector, with_knobs
from ampsim.core.params import RenderParams
from ampsim.inference.blocks import (WINDOWS_PER_BATCH, BlockPlan, BlockRenderer, FollowedByIR, Predict,  # noqa: F401
                                     after_network, fast_plan, sliding_window_plan, split_over_threads)
from ampsim.modelling.architectures import architecture
from ampsim.modelling.models import ModelCard, streaming_twin

METHODS = ("fast", "exact", "sliding-window")


def _compiled(model: keras.Model, jit_compile: bool) -> keras.Model:
    """A view of `model` (same layers and weights, the caller's model left uncompiled) whose predict
    function XLA compiles when asked: on a CPU, XLA turns the recurrent loop into native code (measured
    30-50x faster for one stream; training is another matter)."""
    view = keras.Model(model.inputs, model.outputs, name=f"{model.name}_render")
    view.compile(jit_compile=jit_compile)
    return view


def keras_predict(model: keras.Model, jit_compile: bool, workers: int = 1) -> Predict:
    """`model`'s predict for the block renderer. XLA runs one recurrent loop on one core: a batch split over
    `workers` threads uses the others. Only on TensorFlow: the JAX backend's predict donates the model's
    state buffers, so two threads cannot predict with one model at once."""
    view = _compiled(model, jit_compile)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(view.predict_on_batch(batch))[..., 0]

    return split_over_threads(predict, workers if keras.backend.backend() == "tensorflow" else 1)


def block_renderer(model: keras.Model, plan: BlockPlan, jit_compile: bool, workers: int = 1,
                   knobs: np.ndarray | None = None) -> BlockRenderer:
    return BlockRenderer(keras_predict(model, jit_compile, min(workers, plan.blocks)), plan, knobs)


class ExactRenderer:
    """Renders consecutive chunks of one stream through the streaming twin, carrying every layer's (h, c)."""

    def __init__(self, model: keras.Model, chunk: int, jit_compile: bool,
                 initial_state: list[np.ndarray] | None = None, knobs: np.ndarray | None = None):
        self.twin = _compiled(streaming_twin(model), jit_compile)
        self.chunk = chunk
        self.knobs = np.zeros(0, np.float32) if knobs is None else np.asarray(knobs, np.float32)
        self.initial_state = initial_state or [np.zeros((1, int(t.shape[-1])), np.float32)
                                               for t in self.twin.inputs[1:]]
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the compiled function is kept)."""
        self.state = list(self.initial_state)
        self.finished = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.finished:
            raise RuntimeError("a chunk shorter than `chunk` ends the stream; feed whole chunks until the last")
        x = np.asarray(x, np.float32)
        out = np.empty(len(x), np.float32)
        for start in range(0, len(x), self.chunk):
            part = x[start : start + self.chunk]
            padded = np.zeros(self.chunk, np.float32)
            padded[: len(part)] = part
            audio, *state = self.twin.predict_on_batch([with_knobs(padded[None], self.knobs), *self.state])
            out[start : start + len(part)] = np.asarray(audio)[0, : len(part), 0]
            if len(part) < self.chunk:  # padding ran past the stream's end: nothing may follow this chunk
                self.finished = True
            self.state = [np.asarray(s) for s in state]
        return out


def receptive_field(model: keras.Model) -> int | None:
    """A causal convolution's receptive field (its network layer says); None for a recurrent model."""
    fields = [layer.receptive_field for layer in model.layers if hasattr(layer, "receptive_field")]
    return max(fields) if fields else None


def exact_renderer(model: keras.Model, chunk: int, jit_compile: bool, knobs: np.ndarray | None = None,
                   initial_state: list[np.ndarray] | None = None) -> BlockRenderer | ExactRenderer:
    """The `exact` renderer of any model: a recurrent one through its streaming twin (from `initial_state`),
    a causal convolution by blocks of `chunk` samples after R - 1 of context (it has no state)."""
    field = receptive_field(model)
    if field is not None:
        return block_renderer(model, BlockPlan(chunk, field - 1, 1), jit_compile, knobs=knobs)
    return ExactRenderer(model, chunk, jit_compile, initial_state=initial_state, knobs=knobs)


def settled_state(model: keras.Model, seconds: float, sample_rate: int) -> list[np.ndarray]:
    """Every layer's (h, c) after `seconds` of silence: where a plugin's stream starts (no start-up thump).
    A model without state (a causal convolution) has none: []."""
    if receptive_field(model) is not None:
        return []
    twin = streaming_twin(model)
    zeros = [np.zeros((1, int(t.shape[-1])), np.float32) for t in twin.inputs[1:]]
    silence = np.zeros((1, max(int(seconds * sample_rate), 1), 1), np.float32)
    _, *state = twin.predict_on_batch([silence, *zeros])
    return [np.asarray(s) for s in state]


def render_sliding_window(model: keras.Model, x: np.ndarray, window: int, hop: int, jit_compile: bool) -> np.ndarray:
    """The 2018 method with its length bugs fixed: len(output) == len(x)."""
    return block_renderer(model, sliding_window_plan(window, hop), jit_compile)(x)


def render_exact(model: keras.Model, x: np.ndarray, chunk: int, jit_compile: bool,
                 knobs: np.ndarray | None = None) -> np.ndarray:
    return exact_renderer(model, chunk, jit_compile, knobs=knobs)(x)


def render_fast(model: keras.Model, x: np.ndarray, plan: BlockPlan, jit_compile: bool, workers: int = 1,
                knobs: np.ndarray | None = None) -> np.ndarray:
    return block_renderer(model, plan, jit_compile, workers, knobs)(x)


def renderer(model: keras.Model, card: ModelCard, method: str, params: RenderParams,
             knobs: dict[str, float] | None = None) -> BlockRenderer | ExactRenderer | FollowedByIR:
    """A stateful renderer of consecutive chunks of one stream with `method`, at the knob settings `knobs`
    (required for a knob-conditioned model, refused for any other), at that setting's level and followed by the
    model's cab IR (`blocks.after_network`)."""
    return after_network(network_renderer(model, card, method, params, knobs), card, knobs)


def network_renderer(model: keras.Model, card: ModelCard, method: str, params: RenderParams,
                     knobs: dict[str, float] | None = None) -> BlockRenderer | ExactRenderer:
    """`renderer` without the cab IR: the network alone."""
    if method not in METHODS:
        raise AmpsimError(f"unknown render method `{method}`", fix=f"use one of {', '.join(METHODS)}")
    allowed = architecture(card.architecture).RENDER_METHODS
    if method not in allowed:
        raise AmpsimError(f"a `{card.architecture}` model does not render with `{method}`"
                          + (": the sliding window is the 2018 model's method" if method == "sliding-window" else ""),
                          fix=f"use --method {' or --method '.join(allowed)}")
    vector = knob_vector(card.knobs, knobs, f"the model ({', '.join(card.captures)})")
    if method == "exact":
        return exact_renderer(model, params.exact_chunk_samples, params.jit_compile, knobs=vector)
    if method == "fast":
        field = receptive_field(model)
        if field is not None:  # a causal convolution: R - 1 samples of context are exact, nothing to measure
            card = dataclasses.replace(card, context_samples=field - 1)
        elif card.context_samples is None and card.context_esr is not None:
            # measured, and no warm-up up to render.max_context_ms made blocks match one stream
            return ExactRenderer(model, params.exact_chunk_samples, params.jit_compile, knobs=vector)
        return block_renderer(model, fast_plan(card, params), params.jit_compile, params.workers, vector)
    return block_renderer(model, sliding_window_plan(card.window_samples, card.tail_samples), params.jit_compile,
                          params.workers)


def render(model: keras.Model, card: ModelCard, x: np.ndarray, params: RenderParams,
           knobs: dict[str, float] | None = None) -> np.ndarray:
    """How evaluation renders: by the architecture's own method (the 2018 model by its sliding window, the
    streaming model exactly), at the knob settings `knobs`."""
    return renderer(model, card, architecture(card.architecture).EVALUATION_METHOD, params, knobs)(x)
