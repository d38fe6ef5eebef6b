"""Fine-tuning: a training that starts from another model's weights instead of a random draw.

`ampsim init-from DEVICE SOURCE` (ampsim.deployment.init_from) resolves the source (another device's
release, a registry URI, a `.nam` or a `.keras` file) and keeps it beside the device's captures, in
`data/captures/<device>/.start/`: versioned by DVC with them, and so a dependency of the device's train stage.
Training then starts from it when `train.init_from` is set (in practice in `recipes.<device>`).

The starting model must be the recipe's architecture at the recipe's size, weight for weight. One
difference is bridged: a knob-conditioned device may start from a plain (one-input) model. Its knob inputs
are extra input channels after the audio, so every weight that takes the input has more rows; those rows
start at zero, and the conditioned model starts out playing exactly the plain model at every setting.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np

from ampsim.core.errors import AmpsimError
from ampsim.modelling.architectures.streaming_lstm import knob_drive_layer
from ampsim.modelling.models import load_model

START_FOLDER = ".start"  # hidden: the captures' readers skip it


def start_folder(captures: Path) -> Path:
    """Where a device's starting model is kept: beside its captures (`captures` is the device's folder)."""
    return Path(captures) / START_FOLDER


def weights_digest(weights: list[np.ndarray]) -> str:
    """The weights' identity, whatever file held them (a checkpoint resumes only from the same start)."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array, np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _widened(source: np.ndarray, target_shape: tuple[int, ...], knobs: int) -> np.ndarray | None:
    """`source` in a weight of `target_shape` that has `knobs` more input rows (zeros), or None if the
    shapes differ otherwise."""
    if source.shape == target_shape:
        return source
    if not knobs or len(source.shape) != len(target_shape):
        return None
    differing = [axis for axis, (a, b) in enumerate(zip(source.shape, target_shape)) if a != b]
    if len(differing) != 1 or target_shape[differing[0]] != source.shape[differing[0]] + knobs:
        return None
    widened = np.zeros(target_shape, np.float32)
    widened[tuple(slice(0, n) for n in source.shape)] = source  # the audio input first, the knobs after it
    return widened


def starting_weights(target: keras.Model, start: keras.Model, knobs: int, where: Path | str,
                     what: str) -> list[np.ndarray]:
    """The start's weights laid out for `target` (with `knobs` knob inputs), or a clear error naming the
    first weight that does not fit. `what` describes the recipe the target was built from."""
    start_inputs, target_inputs = start.input_shape[-1], target.input_shape[-1]
    if start_inputs not in (1, target_inputs):
        raise AmpsimError(f"the starting model takes {start_inputs - 1} knob(s), this device's model {knobs}",
                          path=where, fix="start from a plain model, or from one with this device's knobs")
    start_weights, target_weights = start.get_weights(), target.get_weights()
    drive, started = knob_drive_layer(target), knob_drive_layer(start)
    for weight in [] if drive is None else drive.weights[0 if started is None else len(started.weights):]:
        # the drive and the knobs' bends start at zero: no drive and straight knobs, as the start plays
        index = next(i for i, target_weight in enumerate(target.weights) if target_weight is weight)
        start_weights.insert(index, np.zeros(tuple(target_weights[index].shape), np.float32))
    fix = ("choose a starting model of this size, or set the device's recipe to the starting model's size "
           "(`recipes.<device>` in params.yaml), or train from scratch (`train.init_from: null`)")
    if len(start_weights) != len(target_weights):
        raise AmpsimError(f"the starting model has {len(start_weights)} weight arrays, {what} has "
                          f"{len(target_weights)}: not the same architecture or depth", path=where, fix=fix)
    laid_out = []
    for index, (source, goal) in enumerate(zip(start_weights, target_weights)):
        widened = _widened(np.asarray(source, np.float32), tuple(goal.shape), target_inputs - start_inputs)
        if widened is None:
            raise AmpsimError(f"the starting model's weight {index} has shape {tuple(source.shape)}, {what} "
                              f"needs {tuple(goal.shape)}: not the same size", path=where, fix=fix)
        laid_out.append(widened)
    return laid_out


def start_from(target: keras.Model, folder: Path, architecture: str, knobs: int, what: str) -> str:
    """Set `target`'s weights to the starting model kept in `folder`; return its digest."""
    if not (Path(folder) / "model.keras").is_file():
        raise AmpsimError("`train.init_from` is set, but the device has no starting model", path=folder,
                          fix="run `ampsim init-from DEVICE SOURCE` (it fetches the model and sets `init_from`), "
                              "or set `train.init_from: null`")
    start, card = load_model(Path(folder))
    if card.architecture != architecture:
        raise AmpsimError(f"the starting model is a `{card.architecture}`, {what} a `{architecture}`", path=folder,
                          fix=f"set the device's `train.architecture: {card.architecture}` in its recipe, or start "
                              "from a model of the recipe's architecture")
    weights = starting_weights(target, start, knobs, folder, what)
    target.set_weights(weights)
    return weights_digest(weights)
