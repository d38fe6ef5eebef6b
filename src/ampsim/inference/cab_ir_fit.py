"""The cab IR of a trained model, fitted to what the network plays (`ampsim.modelling.cab_ir` has the why and
the math): the train stage calls it on the step it ships, and bench/quality.py at each budget.

The network plays each capture's training part and validation part as one stream from a zero state, as
evaluation renders it. The IR is fitted on the training parts and its length chosen on the validation parts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import keras
import numpy as np

from ampsim.core.knobs import knob_vector
from ampsim.data.windows import Segment
from ampsim.inference.engine import render_exact
from ampsim.inference.latching import StreamRender
from ampsim.modelling import cab_ir
from ampsim.modelling.architectures import architecture
from ampsim.modelling.card import ModelCard


def fit_cab_ir(model: keras.Model, card: ModelCard, train: list[Segment], val: list[Segment],
               lengths: Sequence[int], ridge: float, log: Callable[[str], None] = print,
               render: StreamRender = StreamRender()) -> tuple[ModelCard, dict[str, Any]]:
    """`card` with the IR chosen on validation among `lengths` (none included), and what to report: its
    taps and each length's validation ESR. No lengths, or a model that is not evaluated as a stream (the
    2018 model, by its sliding window, as published): the card unchanged."""
    if not lengths:
        return card, {}
    if architecture(card.architecture).EVALUATION_METHOD != "exact":
        log(f"no cab IR: a `{card.architecture}` model renders by its {architecture(card.architecture).EVALUATION_METHOD}")
        return card, {}

    def play(segments: list[Segment]) -> list[np.ndarray]:
        return [render_exact(model, s.x, render.chunk_samples, render.jit_compile, knob_vector(card.knobs, s.knobs))
                for s in segments]

    ir, scores = cab_ir.choose(play(train), [s.y for s in train], play(val), [s.y for s in val], lengths, ridge)
    taps = 0 if ir is None else len(ir)
    log("cab IR after the network, validation ESR by taps: "
        + ", ".join(f"{n}: {esr:.4f}" for n, esr in scores.items()) + f"; keeping {taps or 'none'}")
    return (dataclasses.replace(card, cab_ir=cab_ir.encode(ir)),
            {"cab_ir_taps": taps, "cab_ir_val_esr": {str(n): round(esr, 6) for n, esr in scores.items()}})
