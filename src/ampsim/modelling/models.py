"""The saved model with its card, and the streaming twin of a recurrent model that takes and returns every
layer's (h, c) state (so a file rendered block by block equals the file rendered whole), in `keras` and
`keras.ops` only (TensorFlow, JAX or PyTorch). Each architecture's own network is in
`ampsim.modelling.architectures`; the training twin that carries its state is `carried_lstm`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import keras

from ampsim.core.audio import atomic_dir
from ampsim.core.errors import AmpsimError
from ampsim.modelling.architectures import registered


def streaming_twin(model: keras.Model) -> keras.Model:
    """A model with the same weights that takes (audio, h_1, c_1, ..., h_L, c_L) and returns
    (audio_out, h_1, c_1, ...): the state carries from one block to the next."""
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    input_size = model.input_shape[-1]
    audio = keras.Input(shape=(None, input_size), name="audio")
    states_in, states_out = [], []
    x = audio
    for layer in lstms:
        h = keras.Input(shape=(layer.units,), name=f"{layer.name}_h")
        c = keras.Input(shape=(layer.units,), name=f"{layer.name}_c")
        twin = keras.layers.LSTM(layer.units, return_sequences=True, return_state=True, name=layer.name)
        x, h_out, c_out = twin(x, initial_state=[h, c])
        twin.set_weights(layer.get_weights())
        states_in += [h, c]
        states_out += [h_out, c_out]
    if any(layer.name == "head" for layer in model.layers):
        head = model.get_layer("head")
        dense = keras.layers.Dense(1, name="head")
        x = dense(x)
        dense.set_weights(head.get_weights())
        if any(layer.name == "input_skip" for layer in model.layers):
            x = keras.layers.Add(name="input_skip")([x, audio[..., :1]])
    return keras.Model([audio, *states_in], [x, *states_out], name=f"{model.name}_streaming")


# --- the saved model: Keras file plus a card that says how to feed it ---------------------------------

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"


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


def save_model(model: keras.Model, card: ModelCard, folder: Path) -> None:
    """Write model.keras and card.json into `folder` atomically (an interrupted save keeps the old model)."""
    with atomic_dir(folder) as scratch:
        model.save(scratch / MODEL_FILE)
        (scratch / CARD_FILE).write_text(json.dumps(dataclasses.asdict(card), indent=2) + "\n")


def load_model(path: Path) -> tuple[keras.Model, ModelCard]:
    """Load a saved model in Keras safe mode (no arbitrary code) with its card: a folder written by
    `ampsim train`, or a `.keras` file written by `ampsim export --format keras` (card beside it)."""
    path = Path(path)
    if path.suffix == ".keras":
        model_file, card_file = path, path.with_suffix(".card.json")
    else:
        model_file, card_file = path / MODEL_FILE, path / CARD_FILE
    for name in (model_file, card_file):
        if not name.is_file():
            raise AmpsimError("model not found", path=name,
                              fix="train one with `dvc repro train`, or point at a folder that has "
                                  f"{MODEL_FILE} and {CARD_FILE} (or a .keras file with its .card.json)")
    registered()  # imports every architecture, so that their custom layers are registered for safe mode
    try:
        model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:  # Keras' words for a truncated or foreign file
        raise AmpsimError(f"not a readable Keras model ({str(exc).splitlines()[0][:200]})", path=model_file,
                          fix="restore it: `dvc checkout` (a model in DVC), or retrain it with `dvc repro`") from exc
    try:
        fields = json.loads(card_file.read_text())
    except json.JSONDecodeError as exc:
        raise AmpsimError(f"not a readable model card ({exc})", path=card_file,
                          fix="restore it: `dvc checkout` (a model in DVC), or retrain it with `dvc repro`") from exc
    return model, ModelCard(**fields)
