"""Taking a trained model to the real-time plugins guitarists use.

- `.nam` (Neural Amp Modeler), architecture "LSTM": per layer the row-major 4H x (I+H) matrix [W_ih | W_hh]
  in gate order i, f, g, o (Keras' i, f, c, o: the kernels transposed), the summed bias (4H), the initial
  hidden and cell state (H each); then the head's weight (H) and bias (1). The initial state is where the
  model settles on silence, so the plugin starts quiet. NAM has no input skip and no knobs.
  The 2018 model (64-64-1, no head) is written exactly as a 3-layer 64-unit LSTM whose third layer keeps
  the real unit 0 and zeros elsewhere (a unit with zero weights, bias and state stays at zero), head [1, 0, ...].
- AIDA-X (RTNeural's Keras JSON): `in_shape` [null, null, I], `in_skip`, then an `lstm` layer
  [kernel I x 4H, recurrent H x 4H, bias 4H] (Keras layout) and a `dense` layer [kernel H x 1, bias 1].
  The plugin loads one LSTM layer of a few sizes only, with one or two knob channels after the audio.
- `keras`: the Keras file itself (any backend loads it) with the model card beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ampsim import __version__
from ampsim.audio import write_text
from ampsim.errors import AmpsimError
from ampsim.models import CARD_FILE, MODEL_FILE, ModelCard, save_model
from ampsim.render import settled_state

FORMATS = ("nam", "aidax", "keras")
NAM_FILE_VERSION = "0.5.4"
NAM_GEAR_TYPES = ("amp", "pedal", "pedal_amp", "amp_cab", "amp_pedal_cab", "preamp", "studio")
NAM_TONE_TYPES = ("clean", "overdrive", "crunch", "hi_gain", "fuzz")
AIDAX_HIDDEN_SIZES = (8, 12, 16, 20, 24, 32, 40, 64, 80)
AIDAX_MAX_KNOBS = 2  # AIDA-X models take input sizes 1 (audio), 2 or 3 (audio and one or two knobs)
EXTENSIONS = {"nam": ".nam", "aidax": ".json", "keras": ".keras"}


def _lstm_layers(model: keras.Model) -> list[keras.layers.LSTM]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def _has_input_skip(model: keras.Model) -> bool:
    return any(layer.name == "input_skip" for layer in model.layers)


def _nam_layer(kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray, h: np.ndarray,
               c: np.ndarray) -> np.ndarray:
    matrix = np.concatenate([kernel.T, recurrent.T], axis=1)  # (4H, I + H), rows i, f, g, o
    return np.concatenate([matrix.ravel(), bias, h.ravel(), c.ravel()])


def _seed_output_layer_as(units: int, kernel: np.ndarray, recurrent: np.ndarray,
                          bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2018 model's LSTM(1) as an LSTM(units) whose unit 0 is the real one and the rest stay at zero."""
    wide_kernel = np.zeros((kernel.shape[0], 4 * units), np.float32)
    wide_recurrent = np.zeros((units, 4 * units), np.float32)
    wide_bias = np.zeros(4 * units, np.float32)
    gates = np.arange(4) * units  # column of unit 0 in each of the i, f, c, o blocks
    wide_kernel[:, gates] = kernel
    wide_recurrent[0, gates] = recurrent[0]
    wide_bias[gates] = bias
    return wide_kernel, wide_recurrent, wide_bias


def nam_metadata(card: ModelCard, user: dict[str, Any]) -> dict[str, Any]:
    for key, allowed in (("gear_type", NAM_GEAR_TYPES), ("tone_type", NAM_TONE_TYPES)):
        if user.get(key) is not None and user[key] not in allowed:
            raise AmpsimError(f"NAM's {key} cannot be `{user[key]}`", path="params.yaml",
                              fix=f"set export.metadata.{key} to one of {', '.join(allowed)} (or null)")
    now = dt.datetime.now()
    return {
        "date": {"year": now.year, "month": now.month, "day": now.day, "hour": now.hour, "minute": now.minute,
                 "second": now.second},
        "name": user.get("name") or "-".join(card.captures),
        **{key: user.get(key) for key in ("modeled_by", "gear_type", "gear_make", "gear_model", "tone_type")},
        "training": {"trainer": f"ampsim {__version__}", "architecture": card.architecture,
                     "validation_esr": card.validation_esr, "captures": card.captures},
    }


def to_nam(model: keras.Model, card: ModelCard, metadata: dict[str, Any], settle_seconds: float) -> dict[str, Any]:
    """The .nam document of a model (refusing what NAM's LSTM cannot express)."""
    if card.input_size != 1:
        knobs = ", ".join(card.knobs) or f"{card.input_size - 1} extra input(s)"
        raise AmpsimError(f"this model is conditioned on knobs ({knobs}); .nam files have no knobs",
                          fix="export it with --format aidax (one or two knobs), or train a model on captures "
                              "without `knobs:` for NAM")
    if _has_input_skip(model):
        raise AmpsimError("this model adds its input to its output (lstm.input_skip: true); NAM's LSTM has no "
                          "input skip", fix="export it with --format aidax, or retrain with lstm.input_skip: false")
    layers = _lstm_layers(model)
    sizes = {layer.units for layer in layers}
    state = settled_state(model, settle_seconds, card.sample_rate)  # [h_1, c_1, h_2, c_2, ...], each (1, H)
    parts: list[np.ndarray] = []
    if card.architecture == "seed":
        hidden = layers[0].units
        if len(layers) != 3 or sizes != {hidden, 1} or layers[-1].units != 1:
            raise AmpsimError("not the 2018 layout (LSTM(H) -> LSTM(H) -> LSTM(1))", fix="retrain it")
        for index, layer in enumerate(layers):
            kernel, recurrent, bias = layer.get_weights()
            h, c = state[2 * index], state[2 * index + 1]
            if layer.units == 1:
                kernel, recurrent, bias = _seed_output_layer_as(hidden, kernel, recurrent, bias)
                h, c = np.pad(h.ravel(), (0, hidden - 1)), np.pad(c.ravel(), (0, hidden - 1))
            parts.append(_nam_layer(kernel, recurrent, bias, h, c))
        head_weight, head_bias = np.eye(1, hidden, dtype=np.float32).ravel(), np.zeros(1, np.float32)
        num_layers = 3
    else:
        if len(sizes) != 1:
            raise AmpsimError("NAM's LSTM needs every layer the same size", fix="retrain with one lstm.hidden_size")
        hidden = sizes.pop()
        for index, layer in enumerate(layers):
            kernel, recurrent, bias = layer.get_weights()
            parts.append(_nam_layer(kernel, recurrent, bias, state[2 * index], state[2 * index + 1]))
        head_kernel, head_bias = model.get_layer("head").get_weights()
        head_weight = head_kernel.ravel()
        num_layers = len(layers)
    weights = np.concatenate([*parts, head_weight, head_bias]).astype(np.float64)
    return {
        "version": NAM_FILE_VERSION,
        "architecture": "LSTM",
        "config": {"input_size": 1, "hidden_size": int(hidden), "num_layers": num_layers},
        "weights": weights.tolist(),
        "sample_rate": card.sample_rate,
        "metadata": nam_metadata(card, metadata),
    }


def to_aidax(model: keras.Model, card: ModelCard) -> dict[str, Any]:
    """The AIDA-X (RTNeural) document of a one-layer streaming model."""
    layers = _lstm_layers(model)
    if card.architecture != "lstm" or len(layers) != 1:
        raise AmpsimError(f"AIDA-X loads one LSTM layer and a dense head; this model has {len(layers)} LSTM "
                          f"layer(s){' and no head (the 2018 model)' if card.architecture == 'seed' else ''}",
                          fix="export it as .nam, or train lstm.num_layers: 1 for AIDA-X")
    lstm = layers[0]
    if lstm.units not in AIDAX_HIDDEN_SIZES:
        raise AmpsimError(f"AIDA-X loads LSTMs of {', '.join(map(str, AIDAX_HIDDEN_SIZES))} units, not "
                          f"{lstm.units}", fix="retrain with one of those lstm.hidden_size values")
    if card.input_size > 1 + AIDAX_MAX_KNOBS:
        raise AmpsimError(f"AIDA-X takes at most {AIDAX_MAX_KNOBS} knobs beside the audio; this model has "
                          f"{card.input_size - 1} ({', '.join(card.knobs)})",
                          fix="train on captures that set one or two knobs")
    kernel, recurrent, bias = lstm.get_weights()
    head_kernel, head_bias = model.get_layer("head").get_weights()
    return {
        "in_shape": [None, None, card.input_size],
        "in_skip": int(_has_input_skip(model)),
        "layers": [
            {"type": "lstm", "activation": "", "shape": [None, None, lstm.units],
             "weights": [kernel.tolist(), recurrent.tolist(), bias.tolist()]},
            {"type": "dense", "activation": "", "shape": [None, None, 1],
             "weights": [head_kernel.tolist(), head_bias.tolist()]},
        ],
        # the plugin feeds its parameter knobs after the audio, in this order
        "ampsim": {"version": __version__, "sample_rate": card.sample_rate, "captures": card.captures,
                   "validation_esr": card.validation_esr, "knobs": card.knobs},
    }


def export(model: keras.Model, card: ModelCard, file_format: str, out: Path, metadata: dict[str, Any],
           settle_seconds: float) -> Path:
    """Write `model` as `file_format` to `out` atomically; return the path written."""
    out = Path(out)
    if file_format not in FORMATS:
        raise AmpsimError(f"unknown export format `{file_format}`", fix=f"use one of {', '.join(FORMATS)}")
    if out.suffix != EXTENSIONS[file_format]:
        raise AmpsimError(f"a {file_format} export is a `{EXTENSIONS[file_format]}` file", path=out,
                          fix=f"name the output *{EXTENSIONS[file_format]}")
    if file_format == "nam":
        write_text(out, json.dumps(to_nam(model, card, metadata, settle_seconds)) + "\n")
    elif file_format == "aidax":
        write_text(out, json.dumps(to_aidax(model, card)) + "\n")
    else:
        folder = out.parent / f".{out.name}.export"
        save_model(model, card, folder)
        shutil.move(str(folder / CARD_FILE), out.with_suffix(".card.json"))
        shutil.move(str(folder / MODEL_FILE), out)
        shutil.rmtree(folder, ignore_errors=True)
    return out
