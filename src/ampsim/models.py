"""The networks, in `keras` and `keras.ops` only, so they run on TensorFlow, JAX or PyTorch.

- `seed`: the 2018 model exactly: LSTM(64) -> LSTM(64) -> LSTM(1), every layer returning sequences, no
  Dense head. Keras' LSTM defaults (tanh / sigmoid, no recurrent dropout, unroll off) are what lets the
  TensorFlow backend pick the cuDNN kernel on a GPU (`use_cudnn="auto"`); `CuDNNLSTM` no longer exists.
- `lstm`: the streaming model: LSTM(H) x L -> Dense(1), optionally y = x + f(x). Its streaming twin takes
  and returns every layer's (h, c) state, so a file rendered block by block equals the file rendered whole.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import keras

from ampsim.audio import atomic_dir
from ampsim.errors import AmpsimError


def seed_model(units: int = 64) -> keras.Model:
    """The 2018 architecture; `units` is 64 in the original (50,184 weights)."""
    audio = keras.Input(shape=(None, 1), name="audio")
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm_1")(audio)
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm_2")(x)
    out = keras.layers.LSTM(1, return_sequences=True, name="lstm_out")(x)
    return keras.Model(audio, out, name="seed")


class CarriedLSTM(keras.layers.LSTM):
    """An LSTM whose state carries from one call to the next (truncated back-propagation through time).
    Keras' own `stateful=True` keeps the state in untracked variables, which the JAX backend's compiled
    train and predict steps never update; here they are tracked non-trainable weights, so every backend
    carries them."""

    def _create_state_variables(self, batch_size):
        self.states = [self.add_weight(shape=(batch_size, self.units), initializer="zeros", trainable=False,
                                       name=name) for name in ("carried_h", "carried_c")]


def lstm_model(hidden_size: int, num_layers: int, input_skip: bool, input_size: int = 1,
               carried_batch: int | None = None) -> keras.Model:
    """Streaming LSTM for whole-file rendering (zero initial state); with `carried_batch`, its training
    twin of that fixed batch size, whose state carries across calls until `reset_carried_state`."""
    shape = {"batch_shape": (carried_batch, None, input_size)} if carried_batch else {"shape": (None, input_size)}
    audio = keras.Input(**shape, name="audio")
    x = audio
    for i in range(num_layers):
        layer = CarriedLSTM(hidden_size, return_sequences=True, stateful=True, name=f"lstm_{i + 1}") \
            if carried_batch else keras.layers.LSTM(hidden_size, return_sequences=True, name=f"lstm_{i + 1}")
        x = layer(x)
    out = keras.layers.Dense(1, name="head")(x)
    if input_skip:
        out = keras.layers.Add(name="input_skip")([out, audio[..., :1]])
    return keras.Model(audio, out, name="lstm")


def reset_carried_state(model: keras.Model) -> None:
    for layer in model.layers:
        if isinstance(layer, CarriedLSTM):
            layer.reset_state()


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """The trained weights of `source` into `target`, layer by layer (a carried state is not a weight)."""
    for to in target.layers:
        if to.weights:
            frm = source.get_layer(to.name)
            if isinstance(frm, CarriedLSTM):
                to.cell.set_weights(frm.cell.get_weights())
            else:
                to.set_weights(frm.get_weights())


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
    if model.name == "lstm":
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
    knobs and, for `seed`, the sliding window it was trained on."""

    architecture: str  # "seed" | "lstm"
    sample_rate: int
    input_size: int
    window_samples: int  # seed: crop length (5280 at 48 kHz); lstm: training segment length
    tail_samples: int  # seed: scored tail = sliding-window hop (480 at 48 kHz); lstm: segment minus warm-up
    captures: list[str]
    mlflow_run_id: str | None
    # Measured after training on the validation audio (absent in cards of older models):
    context_samples: int | None = None  # warm-up that makes `fast` rendering match `exact` within tolerance
    context_esr: float | None = None  # ESR between fast and exact with that warm-up
    validation_esr: float | None = None  # ESR of the exact (or, for seed, sliding-window) rendering
    # A knob-conditioned model's knobs, in the order of its input channels after the audio (0-1 each):
    knobs: list[str] = field(default_factory=list)


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
    model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    card = ModelCard(**json.loads(card_file.read_text()))
    return model, card
