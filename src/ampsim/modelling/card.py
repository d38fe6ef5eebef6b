"""A saved model's card: what a renderer needs besides the weights. No Keras here, so that a released model
can be rendered on ONNX Runtime by a process that never imports Keras (`ampsim.inference.runtime`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ampsim.core.errors import AmpsimError

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
RUNTIME_FILE = "model.onnx"  # the released model as an ONNX graph, where its architecture has one


@dataclass(frozen=True)
class ModelCard:
    """What a renderer needs besides the weights: the architecture, the sample rate it was trained at, its
    knobs and, for `lstm2018`, the sliding window it was trained on."""

    architecture: str  # a name in ampsim.modelling.architectures: "lstm" | "lstm2018"
    sample_rate: int
    input_size: int
    window_samples: int  # lstm2018: crop length (5280 at 48 kHz); lstm: training segment length
    tail_samples: int  # lstm2018: scored tail = sliding-window hop (480 at 48 kHz); lstm: segment minus warm-up
    captures: list[str]
    mlflow_run_id: str | None
    # Measured by the register stage (absent in a model straight from training):
    context_samples: int | None = None  # warm-up that makes `fast` rendering match `exact` within tolerance
    context_esr: float | None = None  # ESR between fast and exact with that warm-up
    validation_esr: float | None = None  # ESR of the exact (or, for lstm2018, sliding-window) rendering
    # A knob-conditioned model's knobs, in the order of its input channels after the audio (0-1 each):
    knobs: list[str] = field(default_factory=list)
    device: str | None = None  # the folder under data/captures/ it models, and its registered name
    latency_samples: dict[str, int] = field(default_factory=dict)  # per capture: the latency compensated in training
    loss_name: str | None = None  # the loss it was trained on (e.g. `esr_dc`), as its loss curve is labelled
    imported_from: str | None = None  # `ampsim import`: the .nam file it was read from (no ampsim training)
    # The cabinet IR played after the network, fitted after training (ampsim.modelling.cab_ir): its taps as
    # base64 of little-endian float32; None: the network alone.
    cab_ir: str | None = None
    # A knob set's level between its recorded settings (`train.knob_levels: interpolated`,
    # ampsim.modelling.knob_levels): {knob, positions, gain_db}, the output's correction at each position; None: as
    # learnt.
    knob_levels: dict | None = None


def read_card(card_file: Path) -> ModelCard:
    try:
        fields = json.loads(Path(card_file).read_text())
    except json.JSONDecodeError as exc:
        raise AmpsimError(f"not a readable model card ({exc})", path=card_file,
                          fix="restore it: `dvc checkout` (a model in DVC), or retrain it with `dvc repro`") from exc
    return ModelCard(**fields)
