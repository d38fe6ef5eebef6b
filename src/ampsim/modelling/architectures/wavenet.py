"""`wavenet`: NAM's WaveNet, the NAM plugin's main model type, in `keras` / `keras.ops` only.

Layer arrays as NAM defines them. Each array: a 1x1 rechannel of its input (no bias) to `channels`, then one
layer per dilation: z = dilated causal conv (kernel `kernel_size`, bias) of the array's running signal + a
1x1 mixin of the condition (the model's input: the audio, and any knob channels; no bias); a = tanh(z) (or,
gated, tanh of the first half times sigmoid of the second); the signal takes a residual 1x1 of a (bias), and
the head sum takes a itself. At the end of the array a 1x1 head rechannel (bias per `head_bias`) takes the head
sum to `head_size`, which the next array's head sum starts from; the next array's input is this array's
signal. The output is head_scale x the last array's head rechannel (NAM's `head: null`).

A causal convolution has no state: the output at t sees the inputs t-R+1..t only (R, the receptive field, is
1 + sum over layers of (kernel - 1) x dilation; 4093 for the standard preset). So rendering by blocks, each
after R - 1 samples of context, is exact: `exact` and `fast` both render so (one block per call, or many side
by side), in constant memory. Training is one update per window of R - 1 + `output_samples`: the loss sees
the last `output_samples`, the outputs whose every input is real audio (as NAM's nx/ny windows).

Knobs: each knob is one more condition channel of the input mixin; baking a setting adds knobs @ W_mixin to
each layer's conv bias (exact, as the LSTM's), so a .nam file gets the plain one-input WaveNet. Exports: .nam
("WaveNet", the file form of NAM 0.5.x that the released plugin loads) and .keras; no AIDA-X (RTNeural's
Keras JSON as AIDA-X loads it is an LSTM and a dense layer).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ampsim.core.errors import AmpsimError
from ampsim.modelling.architectures import NamPayload, Recipe
from ampsim.modelling.losses import fit_loss

NAME = "wavenet"
DESCRIPTION = "NAM's WaveNet: layer arrays of dilated causal convolutions"
PARAMS = "wavenet"
FORMATS = ("nam", "keras")
RENDER_METHODS = ("fast", "exact")
EVALUATION_METHOD = "exact"

ACTIVATIONS = {"Tanh": ops.tanh, "ReLU": ops.relu, "Sigmoid": ops.sigmoid,
               "Hardtanh": lambda x: ops.clip(x, -1.0, 1.0)}  # NAM's names; all of them in NAM's 0.5.x core
ARRAY_KEYS = ("channels", "head_size", "kernel_size", "dilations", "head_bias")
# NAM's presets (its trainer's `standard`, `lite`, `feather`, `nano`), named as a sharing site files them.
_DILATIONS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
_LATE = [128, 256, 512, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
PRESETS = {
    "standard": [(16, 8, _DILATIONS), (8, 1, _DILATIONS)],
    "lite": [(12, 6, _DILATIONS[:7]), (6, 1, _LATE)],
    "feather": [(8, 4, _DILATIONS[:7]), (4, 1, _LATE)],
    "nano": [(4, 2, _DILATIONS[:7]), (2, 1, _LATE)],
}


def _uniform(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default for convolutions (NAM's initialisation): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable(package="ampsim")
class NamWaveNet(keras.layers.Layer):
    """NAM's WaveNet as one layer: (batch, time, condition_size) -> (batch, time, 1), channel 0 the audio.
    Its weights are created in NAM's export order (`nam_weights`)."""

    def __init__(self, layers: list[dict], activation: str = "Tanh", gated: bool = False, head_scale: float = 0.02,
                 **kwargs):
        super().__init__(**kwargs)
        self.arrays = [{key: array[key] for key in ARRAY_KEYS} for array in layers]
        self.activation, self.gated, self.head_scale = activation, bool(gated), float(head_scale)
        self.act = ACTIVATIONS[activation]

    @property
    def receptive_field(self) -> int:
        return 1 + sum((a["kernel_size"] - 1) * d for a in self.arrays for d in a["dilations"])

    def build(self, input_shape):
        condition = int(input_shape[-1])
        self.condition_size = condition
        self.order = []  # every weight with its NAM (PyTorch) layout: "conv" (k, in, out) or "1x1" (in, out)

        def weight(name, shape, fan_in, layout, trainable=True):
            variable = self.add_weight(shape=shape, initializer=_uniform(fan_in), name=name, trainable=trainable)
            self.order.append((variable, layout))
            return variable

        self.params = []
        size = 1  # the first array's input is the audio; each next one's, the previous array's signal
        for a, spec in enumerate(self.arrays):
            channels, k = spec["channels"], spec["kernel_size"]
            mid = 2 * channels if self.gated else channels
            p = {"rechannel": weight(f"a{a}_rechannel", (size, channels), size, "1x1"), "layers": []}
            last_array = a == len(self.arrays) - 1
            for i, _ in enumerate(spec["dilations"]):
                # The last layer's residual of the last array feeds nothing (NAM keeps it in the file): not trained.
                dead = last_array and i == len(spec["dilations"]) - 1
                p["layers"].append({
                    "conv": weight(f"a{a}_l{i}_conv", (k, channels, mid), k * channels, "conv"),
                    "conv_bias": weight(f"a{a}_l{i}_conv_bias", (mid,), k * channels, "bias"),
                    "mixin": weight(f"a{a}_l{i}_mixin", (condition, mid), condition, "1x1"),
                    "out": weight(f"a{a}_l{i}_1x1", (channels, channels), channels, "1x1", not dead),
                    "out_bias": weight(f"a{a}_l{i}_1x1_bias", (channels,), channels, "bias", not dead),
                })
            p["head"] = weight(f"a{a}_head", (channels, spec["head_size"]), channels, "1x1")
            if spec["head_bias"]:
                p["head_bias"] = weight(f"a{a}_head_bias", (spec["head_size"],), channels, "bias")
            self.params.append(p)
            size = channels

    def call(self, inputs, training=False):
        """As NAM renders: the input preceded by R - 1 samples of silence (the knobs held), then valid
        convolutions, so the output's start is the model's answer after silence, exactly what blocks with
        R - 1 samples of context give. Training pads each layer instead (cheaper; the loss skips the
        first R - 1 outputs, the only ones that differ)."""
        if not training:
            lead = self.receptive_field - 1
            silence = ops.pad(inputs[..., :1], [[0, 0], [lead, 0], [0, 0]])
            if self.condition_size > 1:
                held = ops.repeat(inputs[:, :1, 1:], lead, axis=1)
                silence = ops.concatenate([silence, ops.concatenate([held, inputs[..., 1:]], axis=1)], axis=-1)
            inputs = silence
        condition, signal, head, spent = inputs, inputs[..., :1], None, 0
        for a, (spec, p) in enumerate(zip(self.arrays, self.params)):
            signal = ops.matmul(signal, p["rechannel"])
            channels, k = spec["channels"], spec["kernel_size"]
            for i, (dilation, w) in enumerate(zip(spec["dilations"], p["layers"])):
                reach = (k - 1) * dilation
                if training:
                    z = ops.pad(signal, [[0, 0], [reach, 0], [0, 0]])
                else:  # valid: `reach` samples shorter
                    z, signal, spent = signal, signal[:, reach:], spent + reach
                    head = None if head is None else head[:, reach:]
                z = ops.conv(z, w["conv"], padding="valid", dilation_rate=dilation) + w["conv_bias"]
                z = z + ops.matmul(condition[:, spent:], w["mixin"])
                post = self.act(z[..., :channels]) * ops.sigmoid(z[..., channels:]) if self.gated else self.act(z)
                head = post if head is None else head + post
                if not (a == len(self.arrays) - 1 and i == len(spec["dilations"]) - 1):
                    signal = signal + ops.matmul(post, w["out"]) + w["out_bias"]
            head = ops.matmul(head, p["head"])
            if "head_bias" in p:
                head = head + p["head_bias"]
        return self.head_scale * head

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "layers": self.arrays, "activation": self.activation, "gated": self.gated,
                "head_scale": self.head_scale}

    def nam_weights(self) -> np.ndarray:
        """The weights flat in NAM's order (PyTorch's Conv1d layout (out, in, kernel), row-major)."""
        parts = []
        for variable, layout in self.order:
            value = keras.ops.convert_to_numpy(variable)
            parts.append(value.transpose(2, 1, 0) if layout == "conv" else value.T if layout == "1x1" else value)
        return np.concatenate([part.ravel() for part in parts] + [np.array([self.head_scale])])


def preset_arrays(name: str) -> list[dict]:
    if name not in PRESETS:
        raise AmpsimError(f"wavenet.layers `{name}` is not one of NAM's presets", path="params.yaml",
                          fix=f"use one of {', '.join(PRESETS)}, or list the layer arrays")
    last = len(PRESETS[name]) - 1
    return [{"channels": channels, "head_size": head, "kernel_size": 3, "dilations": list(dilations),
             "head_bias": index == last} for index, (channels, head, dilations) in enumerate(PRESETS[name])]


def arrays_of(p) -> list[dict]:
    """The layer arrays of params.yaml's `wavenet:` section (a list, or one of NAM's preset names), checked
    as NAM chains them."""
    arrays = preset_arrays(p.layers) if isinstance(p.layers, str) else p.layers
    if not arrays:
        raise AmpsimError("wavenet.layers lists no layer array", path="params.yaml",
                          fix="restore NAM's standard preset from git")
    for index, array in enumerate(arrays):
        if not isinstance(array, dict) or set(array) != set(ARRAY_KEYS):
            raise AmpsimError(f"wavenet.layers[{index}] must set exactly {', '.join(ARRAY_KEYS)}", path="params.yaml",
                              fix="e.g. {channels: 16, head_size: 8, kernel_size: 3, dilations: [1, 2, 4], "
                                  "head_bias: false}")
        if not array["dilations"] or min(array["dilations"]) < 1 or array["kernel_size"] < 1:
            raise AmpsimError(f"wavenet.layers[{index}] needs dilations >= 1 and kernel_size >= 1", path="params.yaml",
                              fix="NAM's standard: kernel_size 3, dilations [1, 2, 4, ..., 512]")
        following = arrays[index + 1]["channels"] if index + 1 < len(arrays) else 1
        if array["head_size"] != following:
            raise AmpsimError(f"wavenet.layers[{index}].head_size is {array['head_size']}; it must be "
                              + ("the next array's channels" if index + 1 < len(arrays) else "1 in the last array")
                              + f" ({following}): the next array's head sum starts from it", path="params.yaml",
                              fix="NAM's standard: channels 16, head_size 8, then channels 8, head_size 1")
    if p.activation not in ACTIVATIONS:
        raise AmpsimError(f"unknown wavenet.activation `{p.activation}`", path="params.yaml",
                          fix=f"use one of {', '.join(ACTIVATIONS)}")
    return [dict(array) for array in arrays]


def wavenet_model(arrays: list[dict], activation: str = "Tanh", gated: bool = False, head_scale: float = 0.02,
                  input_size: int = 1) -> keras.Model:
    audio = keras.Input(shape=(None, input_size), name="audio")
    out = NamWaveNet(arrays, activation, gated, head_scale, name="wavenet")(audio)
    return keras.Model(audio, out, name=NAME)


def build(config, knobs: int = 0, carried_batch: int | None = None) -> keras.Model:
    p = config.wavenet
    return wavenet_model(arrays_of(p), p.activation, p.gated, p.head_scale, input_size=1 + knobs)


def network(model: keras.Model) -> NamWaveNet:
    return model.get_layer("wavenet")


def receptive_field(model: keras.Model) -> int:
    return network(model).receptive_field


def recipe(config) -> Recipe:
    p = config.wavenet
    field = 1 + sum((a["kernel_size"] - 1) * d for a in arrays_of(p) for d in a["dilations"])
    if p.output_samples < 1:
        raise AmpsimError(f"wavenet.output_samples {p.output_samples} must be at least 1", path="params.yaml",
                          fix="e.g. 8192 (NAM's ny)")
    # Each window: R - 1 samples that only fill the receptive field (their outputs see the zero padding, so
    # the loss skips them), then `output_samples` whose every input is real audio. NAM trains so (nx = R,
    # ny = 8192): long enough that the R - 1 samples of lead-in cost at most ~1/3 of the work, short enough
    # that a batch of 16 fits a CPU's cache-friendly sizes and gives many updates per minute.
    warmup = field - 1
    fit = config.fit
    loss = fit_loss(fit, warmup, p.output_samples, "wavenet.output_samples")
    return Recipe(warmup + p.output_samples, p.output_samples, p.batch_size, p.batches_per_step, fit.learning_rate,
                  fit.final_learning_rate, fit.patience, p.val_windows, loss, loss.__name__)


def shortest_context(window_samples: int, tail_samples: int, sample_rate: int) -> int:
    """R - 1 samples of context make blocks exact (the window's lead-in)."""
    return window_samples - tail_samples


def size_of(arrays: list[dict]) -> str:
    """NAM's preset name when the arrays are one (kernel 3), else `custom`."""
    for name, preset in PRESETS.items():
        if [(a["channels"], a["head_size"], list(a["dilations"])) for a in arrays] == \
                [(c, h, d) for c, h, d in preset] and all(a["kernel_size"] == 3 for a in arrays):
            return name
    return "custom"


def nam(model: keras.Model, state: list[np.ndarray]) -> NamPayload:
    """NAM's WaveNet: `layers` in the 0.5.x form the released plugin reads (head_size, head_bias, gated,
    one activation name) with each array's `head` object beside it, which NAM's current loaders read
    instead; `head: null`; the weights in NAM's order, head_scale last."""
    net = network(model)
    if net.gated:
        raise AmpsimError("this WaveNet is gated (wavenet.gated: true); a gated layer is written differently in "
                          "the .nam form the released plugin reads (gated: true) and the one NAM's current loader "
                          "reads (gating_mode lists), so no one file loads right in both",
                          fix="export it with --format keras, or retrain with wavenet.gated: false")
    if net.condition_size != 1:
        raise AmpsimError("a .nam WaveNet takes the audio alone", fix="bake a knob setting first (--knob)")
    layers = []
    size = 1
    for array in net.arrays:
        layers.append({"input_size": size, "condition_size": 1, "head_size": array["head_size"],
                       "channels": array["channels"], "kernel_size": array["kernel_size"],
                       "dilations": list(array["dilations"]), "activation": net.activation, "gated": False,
                       "head_bias": bool(array["head_bias"]),
                       "head": {"out_channels": array["head_size"], "kernel_size": 1,
                                "bias": bool(array["head_bias"])}})
        size = array["channels"]
    config = {"layers": layers, "head": None, "head_scale": net.head_scale}
    return NamPayload("WaveNet", config, [net.nam_weights()], size_of(net.arrays))


def bake_knobs(model: keras.Model, knob_values: np.ndarray) -> keras.Model:
    """The model at one setting of its knobs as a plain one-input model. Exact: the knob channels are
    constant, so their share of each layer's input mixin, knobs @ W_mixin[knobs], moves into its conv bias."""
    net = network(model)
    baked = wavenet_model(net.arrays, net.activation, net.gated, net.head_scale, input_size=1)
    target = network(baked)
    values = np.asarray(knob_values, np.float32)
    for p, q in zip(net.params, target.params):
        for w, v in zip(p["layers"], q["layers"]):
            mixin = keras.ops.convert_to_numpy(w["mixin"])
            v["mixin"].assign(mixin[:1])
            v["conv_bias"].assign(keras.ops.convert_to_numpy(w["conv_bias"]) + values @ mixin[1:])
    done = {id(layer[key]) for q in target.params for layer in q["layers"] for key in ("mixin", "conv_bias")}
    for (source, _), (variable, _) in zip(net.order, target.order):
        if id(variable) not in done:
            variable.assign(keras.ops.convert_to_numpy(source))
    return baked
