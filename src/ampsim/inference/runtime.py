"""A released model on ONNX Runtime: `ampsim render` in a fresh process without importing Keras.

Most of a one-take render used to be start-up: `import keras` alone takes 9-15 s on a 2-core CPU, ONNX
Runtime 0.3 s (bench/RESULTS.md). So the register stage writes, beside model.keras, the architecture's ONNX
graph (`onnx_graph(model)`, where it has one), after checking that it renders the probe audio as Keras does
(`render.runtime_tolerance_esr`). `fast` rendering of a release folder then runs the graph through the same
block renderer; any other method, or a model without a graph, renders on Keras as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ampsim.core import metrics
from ampsim.core.errors import AmpsimError
from ampsim.core.knobs import knob_vector
from ampsim.core.params import RenderParams
from ampsim.inference.blocks import (BlockRenderer, FollowedByIR, Predict, after_network, fast_plan,
                                    split_over_threads)
from ampsim.modelling.card import CARD_FILE, RUNTIME_FILE, ModelCard, read_card

if TYPE_CHECKING:
    import keras

RUNTIMES = ("onnx", "keras")


def onnx_predict(graph: Path | bytes, workers: int) -> Predict:
    """The graph's predict for the block renderer: one thread per recurrent loop (ONNX Runtime's LSTM runs
    on one core and releases the GIL), the batch split over `workers` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its optimiser notes are not the user's business
    session = onnxruntime.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                           providers=["CPUExecutionProvider"])

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"audio": batch})[0][..., 0]

    return split_over_threads(predict, workers)


def graph_runtime(folder: Path, card: ModelCard, params: RenderParams, knobs: dict[str, float] | None
                  ) -> BlockRenderer | FollowedByIR | None:
    """The `fast` renderer of the graph in `folder` on ONNX Runtime, followed by the model's cab IR; None when
    the folder has no graph or the model has no measured warm-up (then Keras renders it)."""
    if not (Path(folder) / RUNTIME_FILE).is_file() or card.context_samples is None:
        return None
    vector = knob_vector(card.knobs, knobs, f"the model ({', '.join(card.captures)})")
    return after_network(BlockRenderer(onnx_predict(Path(folder) / RUNTIME_FILE, params.workers),
                                       fast_plan(card, params), vector), card, knobs)


def released_runtime(folder: Path, params: RenderParams, knobs: dict[str, float] | None
                     ) -> tuple[BlockRenderer, ModelCard] | None:
    """`graph_runtime` of the release folder written by the register stage, with its card."""
    folder = Path(folder)
    if not (folder / CARD_FILE).is_file():
        return None
    card = read_card(folder / CARD_FILE)
    render_chunk = graph_runtime(folder, card, params, knobs)
    return None if render_chunk is None else (render_chunk, card)


def verified_graph(model: keras.Model, card: ModelCard, probe: np.ndarray, params: RenderParams,
                   knobs: dict[str, float] | None = None) -> bytes | None:
    """The model's ONNX graph, checked on `probe` against Keras' `fast` rendering with the same blocks; None
    for an architecture without one. A graph that renders otherwise is refused: it would ship a model that
    sounds unlike the one evaluated."""
    from ampsim.inference.engine import render_fast
    from ampsim.modelling.architectures import architecture

    make_graph = getattr(architecture(card.architecture), "onnx_graph", None)
    if make_graph is None or card.context_samples is None:
        return None
    graph = make_graph(model)
    plan, vector = fast_plan(card, params), knob_vector(card.knobs, knobs)
    reference = render_fast(model, probe, plan, params.jit_compile, params.workers, vector)
    rendered = BlockRenderer(onnx_predict(graph, params.workers), plan, vector)(probe)
    error = metrics.esr(reference, rendered)
    if not error <= params.runtime_tolerance_esr:
        raise AmpsimError(f"the model's ONNX graph renders {len(probe)} probe samples at ESR {error:.2e} from "
                          f"Keras' rendering, above render.runtime_tolerance_esr {params.runtime_tolerance_esr:g}",
                          fix="report it with the model; meanwhile render with `--runtime keras`")
    return graph
