"""The saved model with its card, and the streaming twin of a recurrent model that takes and returns every
layer's (h, c) state (so a file rendered block by block equals the file rendered whole), in `keras` and
`keras.ops` only (TensorFlow, JAX or PyTorch). Each architecture's own network is in
`ampsim.modelling.architectures`; the training twin that carries its state is `carried_lstm`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras

from ampsim.core.audio import atomic_dir
from ampsim.core.errors import AmpsimError
from ampsim.modelling.architectures import registered
from ampsim.modelling.architectures.streaming_lstm import knob_drive_layer
from ampsim.modelling.card import CARD_FILE, MODEL_FILE, RUNTIME_FILE, ModelCard, read_card  # noqa: F401 - re-exported


def streaming_twin(model: keras.Model) -> keras.Model:
    """A model with the same weights that takes (audio, h_1, c_1, ..., h_L, c_L) and returns
    (audio_out, h_1, c_1, ...): the state carries from one block to the next."""
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    input_size = model.input_shape[-1]
    audio = keras.Input(shape=(None, input_size), name="audio")
    states_in, states_out = [], []
    drive = knob_drive_layer(model)  # stateless: the same layer, shared
    x = audio if drive is None else drive(audio)
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

def save_model(model: keras.Model, card: ModelCard, folder: Path, runtime_graph: bytes | None = None) -> None:
    """Write model.keras and card.json, and the model's ONNX graph when given, into `folder` atomically (an
    interrupted save keeps the old model)."""
    with atomic_dir(folder) as scratch:
        model.save(scratch / MODEL_FILE)
        if runtime_graph is not None:
            (scratch / RUNTIME_FILE).write_bytes(runtime_graph)
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
    return model, read_card(card_file)
