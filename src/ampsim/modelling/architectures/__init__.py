"""The model architectures, one small module each. A module holds everything that differs between them:
how the network is built, its training recipe, how it renders (its evaluation method and the methods it
allows) and the formats it exports to, with its own layout of NAM's weights. Training, rendering and export
ask `architecture(card.architecture)`; adding an architecture is a module here and a line in `registered`.

A module provides:
- NAME, DESCRIPTION, PARAMS (its params.yaml section), FORMATS, RENDER_METHODS, EVALUATION_METHOD;
- build(config, knobs, carried_batch=None, knots=None) -> keras.Model (`knots`: each knob's interior recorded
  settings, for an architecture whose knob channels bend there; others ignore them);
- recipe(config) -> Recipe;
- shortest_context(window_samples, tail_samples, sample_rate) -> int: the least warm-up `fast` rendering tries;
- nam(model, state) -> NamPayload: its .nam `architecture`, `config` and weights (`state`: a recurrent
  model's settled state, [h_1, c_1, ...]; empty for a stateless one);
- bake_knobs(model, knob_values, level=1.0) -> keras.Model: a knob setting folded into a plain one-input model,
  its output times `level` (a knob set's level table, `ModelCard.knob_levels`);
- optionally, to read NAM's files of one architecture (`ampsim import`): NAM_ARCHITECTURE (its name in the
  file), nam_weight_count(config) -> int (from the config alone, checked before anything is allocated) and
  from_nam(config, weights) -> NamImport;
- optionally, onnx_graph(model) -> bytes: the model as an ONNX graph ([blocks, samples, 1 + knobs] ->
  [blocks, samples, 1]) that the release carries, so that `ampsim render` runs it on ONNX Runtime without
  importing Keras (a model without one renders on Keras).
A model that renders exactly by blocks (a causal convolution) has a layer with a `receptive_field`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import keras
import numpy as np

from ampsim.core.errors import AmpsimError


@dataclass(frozen=True)
class Recipe:
    """What an architecture trains on: window length, batch shape, loss, schedule."""

    window: int
    scored: int  # samples of each window the loss sees (tail / segment minus warm-up)
    batch_size: int
    batches_per_step: int
    learning_rate: float
    final_learning_rate: float  # cosine decay from learning_rate to this over the training (max_minutes or max_steps)
    patience: int
    val_count: int
    loss: Callable  # the validation loss (and, without truncated back-propagation, the training loss)
    loss_name: str
    # Truncated back-propagation: each window's state settles on its first `warmup` samples, then one update
    # per `tbptt` samples, the state carried from update to update. None: one update per window.
    tbptt: int | None = None
    warmup: int = 0
    chunk_loss: Callable | None = None
    # With truncated back-propagation: each row of the batch plays on through the audio, its state carried from
    # batch to batch (`StreamRows`), with no warm-up; each batch is then `scored` samples a row. "auto": carried
    # for a device of one setting, not for a knob set (`carries_state`).
    carry: bool | str = False
    # After `plateau` steps without a better validation loss, or a step whose validation loss is over `diverged`
    # times the best, or over `collapsed` once the best is under a quarter of that, training goes back to the best
    # step's weights with a fresh optimiser, at `back_factor` times the learning rate from then on. 0: never.
    plateau: int = 0
    diverged: float = 0.0
    collapsed: float = 0.0
    back_factor: float = 1.0
    # Adam's second-moment decay: lower forgets old gradient sizes sooner, so the updates shrink as soon as the
    # gradients grow (0.999: Keras's and PyTorch's default)
    adam_beta_2: float = 0.999
    # AdamW's decoupled weight decay, 0 for Adam: it keeps the weights that a knob set's unrecorded settings
    # depend on from growing with training (bench/RESULTS.md, session 38)
    weight_decay: float = 0.0


def carries_state(plan: Recipe, knobs: int) -> bool:
    """Whether training carries the rows' state from batch to batch. A knob set does not by default: its
    held-out setting came out worse so (the demo 0.0200 against 0.0093, the JCM900 0.042 against 0.024-0.033,
    bench/RESULTS.md, session 12), while single captures gained (the 5150 0.047 against 0.096)."""
    return (knobs == 0) if plan.carry == "auto" else bool(plan.carry)


@dataclass(frozen=True)
class NamImport:
    """A model read from a .nam file, and the window a model card records for it (rendering's context)."""

    model: keras.Model
    window_samples: int
    tail_samples: int


def nam_reader(name: str) -> ModuleType:
    """The architecture module that reads NAM's `name` (a .nam file's `architecture`)."""
    readers = {module.NAM_ARCHITECTURE: module for module in registered().values() if hasattr(module, "from_nam")}
    if name not in readers:
        raise AmpsimError(f"a NAM `{name}` model cannot be imported: ampsim reads NAM's {' and '.join(readers)}",
                          fix="export the model as one of those from NAM's trainer, or train it with ampsim")
    return readers[name]


def nam_config_error(message: str, fix: str = "import a file NAM's trainer wrote (see README: importing)"):
    return AmpsimError(f"unsupported .nam config: {message}", fix=fix)


def bounded(config: dict, key: str, low: int, high: int, where: str = "config") -> int:
    """An integer setting of an untrusted file, checked before any allocation it would size."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise nam_config_error(f"{where}.{key} is {value!r}; ampsim reads {low}..{high}")
    return value


@dataclass(frozen=True)
class NamPayload:
    """What an architecture writes into a .nam file: NAM's architecture name, its config, the weights in
    NAM's order (concatenated), and the size a sharing site files it under."""

    architecture: str
    config: dict
    weights: list[np.ndarray]
    size: str = "custom"


def registered() -> dict[str, ModuleType]:
    """Every architecture by name: the one list to extend (imported here, late, since they import this module)."""
    from ampsim.modelling.architectures import lstm2018, streaming_lstm, wavenet

    return {module.NAME: module for module in (streaming_lstm, lstm2018, wavenet)}


def architecture(name: str) -> ModuleType:
    """The module of the architecture `name` (train.architecture, or a model card's)."""
    modules = registered()
    if name not in modules:
        raise AmpsimError(f"unknown architecture `{name}`", path="params.yaml",
                          fix=f"set train.architecture to one of {', '.join(modules)}")
    return modules[name]


# --- NAM's LSTM layout, shared by the recurrent architectures ------------------------------------------

def lstm_layers(model: keras.Model) -> list[keras.layers.LSTM]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def nam_lstm_payload(hidden_size: int, num_layers: int, weights: list[np.ndarray]) -> NamPayload:
    """NAM's LSTM (one input): an LSTM is none of NAM's named sizes (those are its WaveNet presets)."""
    return NamPayload("LSTM", {"input_size": 1, "hidden_size": int(hidden_size), "num_layers": num_layers}, weights)


def nam_lstm_weight_count(input_size: int, hidden_size: int, num_layers: int) -> int:
    """NAM's LSTM: per layer the 4H x (I+H) matrix, the bias (4H) and the initial h and c (H each); the head."""
    first = 4 * hidden_size * (input_size + hidden_size) + 6 * hidden_size
    deeper = 4 * hidden_size * (2 * hidden_size) + 6 * hidden_size
    return first + (num_layers - 1) * deeper + hidden_size + 1


def nam_lstm_layers(weights: np.ndarray, input_size: int, hidden_size: int, num_layers: int):
    """The inverse of `nam_layer` over a whole file: per layer (kernel, recurrent, bias) in Keras' layout,
    then the head's (kernel H x 1, bias 1). The stored initial state is where the model settles on silence
    (NAM writes it so, as ampsim does), which rendering reaches by itself."""
    layers, offset, inputs = [], 0, input_size
    for _ in range(num_layers):
        rows, columns = 4 * hidden_size, inputs + hidden_size
        matrix = weights[offset : offset + rows * columns].reshape(rows, columns)
        offset += rows * columns
        bias = weights[offset : offset + rows]
        offset += rows + 2 * hidden_size
        layers.append((matrix[:, :inputs].T, matrix[:, inputs:].T, bias))
        inputs = hidden_size
    head = (weights[offset : offset + hidden_size].reshape(hidden_size, 1), weights[offset + hidden_size :])
    return layers, head


def nam_layer(kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray, h: np.ndarray,
              c: np.ndarray) -> np.ndarray:
    """One NAM LSTM layer: the row-major 4H x (I+H) matrix [W_ih | W_hh] in gate order i, f, g, o (Keras'
    i, f, c, o: the kernels transposed), the summed bias (4H), the initial hidden and cell state (H each)."""
    matrix = np.concatenate([kernel.T, recurrent.T], axis=1)
    return np.concatenate([matrix.ravel(), bias, h.ravel(), c.ravel()])
