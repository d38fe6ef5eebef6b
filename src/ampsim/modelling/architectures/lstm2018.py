"""`lstm2018`: the 2018 experiment's model, reproduced faithfully.

LSTM(64) -> LSTM(64) -> LSTM(1), every layer returning sequences, no Dense head (50,184 weights). Keras'
LSTM defaults (tanh / sigmoid, no recurrent dropout, unroll off) let TensorFlow pick the cuDNN kernel on a
GPU (`use_cudnn="auto"`; `CuDNNLSTM` no longer exists). Trained as in 2018: random 110 ms crops, MSE on the
last 10 ms, Adam 1e-3, batches of 16, steps of 100 batches; validation on fixed windows (2018 drew fresh
random crops, so its val_loss did not compare between steps). It renders as the post did: 110 ms windows
every 10 ms, each from a zero state (`sliding-window`), or as one stream. Exports: .nam (its third layer,
LSTM(1), written as an LSTM(64) whose unit 0 is the real one) and .keras; AIDA-X loads no 3-layer model.
"""

from __future__ import annotations

import keras
import numpy as np

from ampsim.core.errors import AmpsimError
from ampsim.data.windows import samples
from ampsim.modelling.architectures import NamPayload, Recipe, lstm_layers, nam_layer, nam_lstm_payload
from ampsim.modelling.losses import tail_mse
from ampsim.modelling.onnx_graph import lstm_stack

NAME = "lstm2018"
DESCRIPTION = "LSTM(64) -> LSTM(64) -> LSTM(1), no head (the 2018 model)"
PARAMS = "lstm2018"
FORMATS = ("nam", "keras")
RENDER_METHODS = ("sliding-window", "fast", "exact")
EVALUATION_METHOD = "sliding-window"


def lstm2018_model(units: int = 64) -> keras.Model:
    """The 2018 architecture; `units` is 64 in the original (50,184 weights)."""
    audio = keras.Input(shape=(None, 1), name="audio")
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm_1")(audio)
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm_2")(x)
    out = keras.layers.LSTM(1, return_sequences=True, name="lstm_out")(x)
    return keras.Model(audio, out, name=NAME)


def build(config, knobs: int = 0, carried_batch: int | None = None,
          knots: list[list[float]] | None = None) -> keras.Model:
    if knobs:
        raise AmpsimError("the 2018 model `lstm2018` takes the audio alone, but the captures set knobs",
                          path="params.yaml", fix="train knob-conditioned captures with `train.architecture: lstm`")
    return lstm2018_model(config.lstm2018.units)


def recipe(config) -> Recipe:
    p = config.lstm2018
    window, tail = samples(p.window_ms, config.sample_rate), samples(p.tail_ms, config.sample_rate)
    if not 0 < tail <= window:
        raise AmpsimError(f"lstm2018.tail_ms {p.tail_ms} must be > 0 and <= lstm2018.window_ms {p.window_ms}",
                          path="params.yaml", fix="the 2018 values are window_ms 110, tail_ms 10")
    return Recipe(window, tail, p.batch_size, p.batches_per_step, p.learning_rate, p.learning_rate, p.patience,
                  p.val_windows, tail_mse(tail), "tail_mse")


def shortest_context(window_samples: int, tail_samples: int, sample_rate: int) -> int:
    """The model only ever saw 100 ms before the scored tail: `fast` rendering gives it at least that."""
    return window_samples - tail_samples


def _output_layer_as(units: int, kernel: np.ndarray, recurrent: np.ndarray,
                     bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LSTM(1) as an LSTM(units) whose unit 0 is the real one and the rest stay at zero (a unit with zero
    weights, bias and state stays at zero)."""
    wide_kernel = np.zeros((kernel.shape[0], 4 * units), np.float32)
    wide_recurrent = np.zeros((units, 4 * units), np.float32)
    wide_bias = np.zeros(4 * units, np.float32)
    gates = np.arange(4) * units  # column of unit 0 in each of the i, f, c, o blocks
    wide_kernel[:, gates] = kernel
    wide_recurrent[0, gates] = recurrent[0]
    wide_bias[gates] = bias
    return wide_kernel, wide_recurrent, wide_bias


def onnx_graph(model: keras.Model) -> bytes:
    """The model for ONNX Runtime (`ampsim render` of a released model): the three layers, no head."""
    return lstm_stack([layer.get_weights() for layer in lstm_layers(model)], 1)


def nam(model: keras.Model, state: list[np.ndarray]) -> NamPayload:
    """A 3-layer NAM LSTM of `units` each, the head [1, 0, ...] reading unit 0 of the third layer."""
    layers = lstm_layers(model)
    hidden = layers[0].units
    if len(layers) != 3 or {layer.units for layer in layers} != {hidden, 1} or layers[-1].units != 1:
        raise AmpsimError("not the 2018 layout (LSTM(H) -> LSTM(H) -> LSTM(1))", fix="retrain it")
    parts = []
    for index, layer in enumerate(layers):
        kernel, recurrent, bias = layer.get_weights()
        h, c = state[2 * index], state[2 * index + 1]
        if layer.units == 1:
            kernel, recurrent, bias = _output_layer_as(hidden, kernel, recurrent, bias)
            h, c = np.pad(h.ravel(), (0, hidden - 1)), np.pad(c.ravel(), (0, hidden - 1))
        parts.append(nam_layer(kernel, recurrent, bias, h, c))
    head = [np.eye(1, hidden, dtype=np.float32).ravel(), np.zeros(1, np.float32)]
    return nam_lstm_payload(hidden, 3, parts + head)
