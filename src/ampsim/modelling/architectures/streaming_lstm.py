"""`lstm`: the streaming model, ampsim's default.

LSTM(H) x L -> Dense(1), optionally y = x + f(x), taking the audio and any knob values as input channels.
With `knob_drive`, the knobs also set how hard the audio drives the network: it is scaled by exp(knobs @ w),
a gain in dB linear in each knob, as a gain pot's taper sets the level into the next stage (on the JCM900,
gain 6 driven 9 dB harder plays gain 8 to ESR 0.0146 after an EQ: bench/RESULTS.md, session 10).
Trained by truncated back-propagation through time (Wright et al. 2019): each segment's state settles on a
warm-up, then one update every `tbptt_samples`, the state carried between updates by a training twin of
fixed batch size. It renders as one stream (`exact`) or as blocks after a measured warm-up (`fast`), and
exports to .nam (one input: knobs baked in), AIDA-X (one layer, knobs live) and .keras.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ampsim.core.errors import AmpsimError
from ampsim.data.windows import samples
from ampsim.modelling.architectures import (NamImport, NamPayload, Recipe, bounded, lstm_layers, nam_config_error,
                                            nam_layer, nam_lstm_layers, nam_lstm_payload, nam_lstm_weight_count)
from ampsim.modelling.losses import fit_loss
from ampsim.modelling.carried_lstm import CarriedLSTM
from ampsim.modelling.onnx_graph import lstm_stack

AIDAX_HIDDEN_SIZES = (8, 12, 16, 20, 24, 32, 40, 64, 80)  # the LSTM sizes AIDA-X's RTNeural build loads

NAME = "lstm"
DESCRIPTION = "LSTM(H) x L -> Dense(1), streaming"
PARAMS = "lstm"
FORMATS = ("nam", "aidax", "keras")
RENDER_METHODS = ("fast", "exact")
EVALUATION_METHOD = "exact"
NAM_ARCHITECTURE = "LSTM"
MAX_NAM_HIDDEN_SIZE, MAX_NAM_LAYERS = 1024, 16  # far beyond any real-time plugin's; an imported file is untrusted


def knot_layout(knots: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Each knob's knots laid side by side: a one-hot [knobs, knots] that picks each knot's knob, and the knots'
    positions [knots], so that the bend is a pair of matrix products (no gather, in Keras or ONNX alike)."""
    owners = [index for index, positions in enumerate(knots) for _ in positions]
    select = np.zeros((len(knots), len(owners)), np.float32)
    select[owners, np.arange(len(owners))] = 1.0
    return select, np.asarray([p for positions in knots for p in positions], np.float32)


@keras.saving.register_keras_serializable(package="ampsim")
class KnobDrive(keras.layers.Layer):
    """(batch, time, 1 + knobs) -> the same: each knob's channel bent at its `knots`, k + sum(slope *
    relu(k - knot)), and the audio channel scaled by exp(bent knobs @ drive). The slopes and the drive start at
    zero: the knobs then enter as the plain model's bias shift alone. A pot's taper is not linear (the JCM900's
    gain 4 -> 6 is ~4 dB of drive, 6 -> 8 and 8 -> 10 ~9 dB each: bench/RESULTS.md, session 35); a knot at each
    interior recorded setting lets the knob's steps differ there, and keeps it straight between recorded ones."""

    def __init__(self, knots: list[list[float]] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.knots = [[float(p) for p in positions] for positions in (knots or [])]

    def build(self, input_shape):
        knobs = int(input_shape[-1]) - 1
        if self.knots and len(self.knots) != knobs:
            raise ValueError(f"{len(self.knots)} knobs' knots for {knobs} knob channels")
        self.drive = self.add_weight(shape=(knobs, 1), initializer="zeros", name="drive")
        self.select, self.positions = knot_layout(self.knots or [[] for _ in range(knobs)])
        self.bend = self.add_weight(shape=(len(self.positions),), initializer="zeros", name="bend") \
            if len(self.positions) else None

    def call(self, inputs):
        knobs = inputs[..., 1:]
        if self.bend is not None:
            bent = ops.relu(ops.matmul(knobs, self.select) - self.positions) * self.bend
            knobs = knobs + ops.matmul(bent, ops.transpose(self.select))
        gain = ops.exp(ops.matmul(knobs, self.drive))
        return ops.concatenate([inputs[..., :1] * gain, knobs], axis=-1)

    def get_config(self):
        return {**super().get_config(), "knots": self.knots}


def lstm_model(hidden_size: int, num_layers: int, input_skip: bool, input_size: int = 1,
          carried_batch: int | None = None, knob_drive: bool = False,
          knob_knots: list[list[float]] | None = None) -> keras.Model:
    """The streaming LSTM for whole-file rendering (zero initial state); with `carried_batch`, its training
    twin of that fixed batch size, whose state carries across calls until `carried_lstm.reset_carried_state`.
    `knob_drive` (a model with knobs): the knobs also scale the audio into the first layer, each knob's channel
    bent at its `knob_knots` (positions 0-1)."""
    shape = {"batch_shape": (carried_batch, None, input_size)} if carried_batch else {"shape": (None, input_size)}
    audio = keras.Input(**shape, name="audio")
    x = KnobDrive(knob_knots, name="knob_drive")(audio) if knob_drive and input_size > 1 else audio
    for i in range(num_layers):
        layer = CarriedLSTM(hidden_size, return_sequences=True, stateful=True, name=f"lstm_{i + 1}") \
            if carried_batch else keras.layers.LSTM(hidden_size, return_sequences=True, name=f"lstm_{i + 1}")
        x = layer(x)
    out = keras.layers.Dense(1, name="head")(x)
    if input_skip:
        out = keras.layers.Add(name="input_skip")([out, audio[..., :1]])
    return keras.Model(audio, out, name=NAME)


def build(config, knobs: int = 0, carried_batch: int | None = None,
          knots: list[list[float]] | None = None) -> keras.Model:
    p = config.lstm
    if p.knob_bends and not p.knob_drive:
        raise AmpsimError("lstm.knob_bends bends the knobs in the knob drive, which is off (lstm.knob_drive: false)",
                          path="params.yaml", fix="set lstm.knob_drive: true as well, or lstm.knob_bends: false")
    return lstm_model(p.hidden_size, p.num_layers, p.input_skip, input_size=1 + knobs, carried_batch=carried_batch,
                      knob_drive=p.knob_drive, knob_knots=knots if p.knob_bends else None)


def recipe(config) -> Recipe:
    p = config.lstm
    if not 0 <= p.warmup_samples < p.segment_samples:
        raise AmpsimError(f"lstm.warmup_samples {p.warmup_samples} must be below lstm.segment_samples "
                          f"{p.segment_samples}", path="params.yaml", fix="e.g. 1000 of 22050")
    if not 0 < p.tbptt_samples <= p.segment_samples - p.warmup_samples:
        raise AmpsimError(f"lstm.tbptt_samples {p.tbptt_samples} must be between 1 and the segment after its "
                          f"warm-up ({p.segment_samples - p.warmup_samples})", path="params.yaml",
                          fix="e.g. 200 (an update every 200 samples)")
    if p.carry_state not in (True, False, "auto"):
        raise AmpsimError(f"lstm.carry_state is {p.carry_state!r}", path="params.yaml",
                          fix="write true (carry the state across batches), false (every segment from a zero "
                              "state) or auto (true for a single capture, false for a knob set)")
    fit = config.fit
    updates = (p.segment_samples - p.warmup_samples) // p.tbptt_samples
    segment_loss = fit_loss(fit, p.warmup_samples, p.tbptt_samples, "lstm.tbptt_samples")
    return Recipe(p.warmup_samples + updates * p.tbptt_samples, updates * p.tbptt_samples, p.batch_size,
                  p.batches_per_step, fit.learning_rate, fit.final_learning_rate, fit.patience, p.val_segments,
                  segment_loss, segment_loss.__name__, tbptt=p.tbptt_samples, warmup=p.warmup_samples,
                  chunk_loss=fit_loss(fit, 0, p.tbptt_samples, "lstm.tbptt_samples"), carry=p.carry_state,
                  plateau=fit.plateau_steps, diverged=fit.diverged_ratio, collapsed=fit.collapsed_loss,
                  back_factor=fit.back_to_best_factor, adam_beta_2=fit.adam_beta_2,
                  weight_decay=fit.weight_decay)


def shortest_context(window_samples: int, tail_samples: int, sample_rate: int) -> int:
    return samples(10, sample_rate)


def has_input_skip(model: keras.Model) -> bool:
    return any(layer.name == "input_skip" for layer in model.layers)


def knob_drive_layer(model: keras.Model) -> KnobDrive | None:
    return next((layer for layer in model.layers if isinstance(layer, KnobDrive)), None)


def knob_drive(model: keras.Model) -> np.ndarray | None:
    """The drive weights (knobs x 1) of a model whose knobs set its input level, else None."""
    layer = knob_drive_layer(model)
    return None if layer is None else layer.get_weights()[0]


def knob_bend(model: keras.Model) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A model whose knobs bend at knots: (select [knobs, knots], positions [knots], slopes [knots]), else None."""
    layer = knob_drive_layer(model)
    if layer is None or layer.bend is None:
        return None
    return layer.select, layer.positions, layer.get_weights()[1]


def bent_knobs(model: keras.Model, knob_values: np.ndarray) -> np.ndarray:
    """The knob values as the model's first layer and drive see them: bent at the knots, if it has any."""
    values = np.asarray(knob_values, np.float32)
    bend = knob_bend(model)
    if bend is None:
        return values
    select, positions, slopes = bend
    return values + (np.maximum(values @ select - positions, 0.0) * slopes) @ select.T


def nam(model: keras.Model, state: list[np.ndarray]) -> NamPayload:
    """NAM's LSTM: the layers as they are, then the head's weight (H) and bias (1)."""
    if has_input_skip(model):
        raise AmpsimError("this model adds its input to its output (lstm.input_skip: true); NAM's LSTM has no "
                          "input skip", fix="export it with --format aidax, or retrain with lstm.input_skip: false")
    layers = lstm_layers(model)
    sizes = {layer.units for layer in layers}
    if len(sizes) != 1:
        raise AmpsimError("NAM's LSTM needs every layer the same size", fix="retrain with one lstm.hidden_size")
    parts = [nam_layer(*layer.get_weights(), state[2 * index], state[2 * index + 1])
             for index, layer in enumerate(layers)]
    head_kernel, head_bias = model.get_layer("head").get_weights()
    return nam_lstm_payload(sizes.pop(), len(layers), parts + [head_kernel.ravel(), head_bias])


def _nam_sizes(config: dict) -> tuple[int, int]:
    unknown = sorted(set(config) - {"input_size", "hidden_size", "num_layers"})
    if unknown:
        raise nam_config_error(f"this LSTM sets {', '.join(unknown)}, which ampsim's LSTM does not have")
    if bounded(config, "input_size", 1, 64) != 1:
        raise nam_config_error(f"this LSTM takes {config['input_size']} inputs; ampsim imports one-input "
                               "(audio only) models")
    return bounded(config, "hidden_size", 1, MAX_NAM_HIDDEN_SIZE), bounded(config, "num_layers", 1, MAX_NAM_LAYERS)


def nam_weight_count(config: dict) -> int:
    return nam_lstm_weight_count(1, *_nam_sizes(config))


def from_nam(config: dict, weights: np.ndarray) -> NamImport:
    """NAM's LSTM as ampsim's streaming LSTM (no input skip), its weights as the file has them."""
    hidden_size, num_layers = _nam_sizes(config)
    model = lstm_model(hidden_size, num_layers, False)
    layers, head = nam_lstm_layers(weights, 1, hidden_size, num_layers)
    for layer, values in zip(lstm_layers(model), layers):
        layer.set_weights([np.asarray(v, np.float32) for v in values])
    model.get_layer("head").set_weights([np.asarray(v, np.float32) for v in head])
    return NamImport(model, 0, 0)


def onnx_graph(model: keras.Model) -> bytes:
    """The model for ONNX Runtime (`ampsim render` of a released model), knob channels as inputs."""
    head = model.get_layer("head").get_weights()
    return lstm_stack([layer.get_weights() for layer in lstm_layers(model)], int(model.inputs[0].shape[-1]),
                      (head[0], head[1]), has_input_skip(model), knob_drive(model), knob_bend(model))


def aidax_layers(model: keras.Model) -> list[dict]:
    """RTNeural's Keras JSON layers: an `lstm` [kernel I x 4H, recurrent H x 4H, bias 4H] (Keras layout) and a
    `dense` [kernel H x 1, bias 1]. AIDA-X loads one LSTM layer."""
    if knob_drive(model) is not None:
        raise AmpsimError("this model's knobs also set how hard the audio drives it (lstm.knob_drive: true); "
                          "AIDA-X feeds its knobs to the LSTM as inputs only",
                          fix="export it as .nam with a setting baked in (--format nam --knob NAME=VALUE, or "
                              "--grid N), or retrain with lstm.knob_drive: false for AIDA-X's live knobs")
    layers = lstm_layers(model)
    if len(layers) != 1:
        raise AmpsimError(f"AIDA-X loads one LSTM layer and a dense head; this model has {len(layers)} LSTM "
                          "layers", fix="export it as .nam, or train lstm.num_layers: 1 for AIDA-X")
    lstm = layers[0]
    if lstm.units not in AIDAX_HIDDEN_SIZES:
        raise AmpsimError(f"AIDA-X loads LSTMs of {', '.join(map(str, AIDAX_HIDDEN_SIZES))} units, not "
                          f"{lstm.units}", fix="retrain with one of those lstm.hidden_size values")
    kernel, recurrent, bias = lstm.get_weights()
    head_kernel, head_bias = model.get_layer("head").get_weights()
    return [{"type": "lstm", "activation": "", "shape": [None, None, lstm.units],
             "weights": [kernel.tolist(), recurrent.tolist(), bias.tolist()]},
            {"type": "dense", "activation": "", "shape": [None, None, 1],
             "weights": [head_kernel.tolist(), head_bias.tolist()]}]


def bake_knobs(model: keras.Model, knob_values: np.ndarray, level: float = 1.0) -> keras.Model:
    """The model at one setting of its knobs as a plain one-input model, its output times `level`. Exact: the
    knob channels are constant, so their share of the first layer's gates, knobs @ W_knobs, is a constant that
    moves into its bias, and a knob drive, a constant gain on the audio, moves into the audio's row of the kernel
    (a bent knob is a constant too: its bent value is what moves); `level` scales the head."""
    if level != 1.0 and has_input_skip(model):
        raise AmpsimError("this model adds its input to its output (lstm.input_skip: true), so its knob level "
                          "(train.knob_levels: interpolated) cannot move into its weights",
                          fix="retrain with lstm.input_skip: false, or with train.knob_levels: learnt")
    layers, drive, knob_values = lstm_layers(model), knob_drive(model), bent_knobs(model, knob_values)
    gain = 1.0 if drive is None else np.exp(knob_values @ drive[:, 0])
    baked = lstm_model(layers[0].units, len(layers), has_input_skip(model), input_size=1)
    for index, layer in enumerate(layers):
        kernel, recurrent, bias = layer.get_weights()
        if index == 0:  # rows: the audio's weights, then one row per knob
            kernel, bias = kernel[:1] * gain, bias + knob_values @ kernel[1:]
        baked.get_layer(layer.name).set_weights([kernel, recurrent, bias])
    baked.get_layer("head").set_weights([w * np.float32(level) for w in model.get_layer("head").get_weights()])
    return baked
