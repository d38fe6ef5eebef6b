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
from ampsim.modelling.architectures import NamImport, NamPayload, Recipe, bounded, nam_config_error
from ampsim.modelling.losses import fit_loss

NAME = "wavenet"
DESCRIPTION = "NAM's WaveNet: layer arrays of dilated causal convolutions"
PARAMS = "wavenet"
FORMATS = ("nam", "keras")
RENDER_METHODS = ("fast", "exact")
EVALUATION_METHOD = "exact"
NAM_ARCHITECTURE = "WaveNet"

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

    def set_nam_weights(self, weights: np.ndarray) -> None:
        """The inverse of `nam_weights`: NAM's flat order (head_scale, last, is the caller's) into the weights."""
        offset = 0
        for variable, layout in self.order:
            shape = tuple(variable.shape)
            chunk = np.asarray(weights[offset : offset + int(np.prod(shape))], np.float32)
            offset += chunk.size
            if layout == "conv":  # NAM's (out, in, kernel) row-major
                chunk = chunk.reshape(shape[2], shape[1], shape[0]).transpose(2, 1, 0)
            elif layout == "1x1":  # NAM's (out, in)
                chunk = chunk.reshape(shape[1], shape[0]).T
            variable.assign(chunk)


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


def build(config, knobs: int = 0, carried_batch: int | None = None,
          knots: list[list[float]] | None = None) -> keras.Model:
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
                  fit.final_learning_rate, fit.patience, p.val_windows, loss, loss.__name__,
                  plateau=fit.plateau_steps, diverged=fit.diverged_ratio, collapsed=fit.collapsed_loss,
                  back_factor=fit.back_to_best_factor, adam_beta_2=fit.adam_beta_2,
                  weight_decay=fit.weight_decay)


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


def bake_knobs(model: keras.Model, knob_values: np.ndarray, level: float = 1.0) -> keras.Model:
    """The model at one setting of its knobs as a plain one-input model, its output times `level` (in its
    head_scale). Exact: the knob channels are constant, so their share of each layer's input mixin,
    knobs @ W_mixin[knobs], moves into its conv bias."""
    net = network(model)
    baked = wavenet_model(net.arrays, net.activation, net.gated, net.head_scale * level, input_size=1)
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


# --- reading NAM's files: the 0.5.x form (head_size, head_bias, gated) and NAM 0.13's (head objects, lists) ---

# An imported file is untrusted: sizes far beyond any real model's are refused before anything is allocated.
MAX_NAM_ARRAYS, MAX_NAM_LAYERS, MAX_NAM_CHANNELS, MAX_NAM_KERNEL, MAX_NAM_DILATION = 16, 64, 512, 64, 65536
# NAM 0.13's layer options that ampsim's WaveNet has only in their plain setting (the one its trainer writes).
_PLAIN_OPTIONS = {"groups_input": 1, "groups_input_mixin": 1, "slimmable": None}
_FILM_KEYS = ("conv_pre_film", "conv_post_film", "input_mixin_pre_film", "input_mixin_post_film",
              "activation_pre_film", "activation_post_film", "layer1x1_post_film", "head1x1_post_film")
_ARRAY_FILE_KEYS = {"input_size", "condition_size", "head_size", "channels", "kernel_size", "kernel_sizes",
                    "dilations", "activation", "gated", "head_bias", "head", "bottleneck", "head1x1", "layer1x1",
                    "gating_mode", "secondary_activation", *_PLAIN_OPTIONS, *_FILM_KEYS}


def _one(values: list, what: str, where: str):
    if not values or any(v != values[0] for v in values):
        raise nam_config_error(f"{where} has different {what} per layer ({values}); ampsim's WaveNet has one")
    return values[0]


def _activation_name(value, where: str) -> str:
    name = value.get("type") if isinstance(value, dict) and set(value) == {"type"} else value
    if name not in ACTIVATIONS:
        raise nam_config_error(f"{where}.activation is {value!r}; ampsim's WaveNet has {', '.join(ACTIVATIONS)}")
    return name


def _array_from_file(layer: dict, where: str, input_size: int) -> tuple[dict, str]:
    """One layer array of the file as ampsim's (channels, head_size, kernel_size, dilations, head_bias) and
    its activation; anything ampsim cannot compute exactly is refused, naming it."""
    if not isinstance(layer, dict):
        raise nam_config_error(f"{where} is not a layer array")
    unknown = sorted(set(layer) - _ARRAY_FILE_KEYS)
    if unknown:
        raise nam_config_error(f"{where} sets {', '.join(unknown)}, which ampsim's WaveNet does not have")
    channels = bounded(layer, "channels", 1, MAX_NAM_CHANNELS, where)
    if bounded(layer, "input_size", 1, MAX_NAM_CHANNELS, where) != input_size:
        raise nam_config_error(f"{where}.input_size is {layer['input_size']}; it must be {input_size}")
    if bounded(layer, "condition_size", 1, 64, where) != 1:
        raise nam_config_error(f"{where} is conditioned on {layer['condition_size']} inputs; ampsim imports "
                               "one-input (audio only) models")
    dilations = layer.get("dilations")
    if not isinstance(dilations, list) or not 1 <= len(dilations) <= MAX_NAM_LAYERS:
        raise nam_config_error(f"{where}.dilations must list 1..{MAX_NAM_LAYERS} layers")
    if any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_NAM_DILATION for d in dilations):
        raise nam_config_error(f"{where}.dilations are {dilations}; ampsim reads whole numbers 1..{MAX_NAM_DILATION}")
    kernels = layer["kernel_sizes"] if "kernel_sizes" in layer else [layer.get("kernel_size")] * len(dilations)
    kernel = _one(list(kernels), "kernel sizes", where)
    bounded({"kernel_size": kernel}, "kernel_size", 1, MAX_NAM_KERNEL, where)
    activations = layer.get("activation")
    activations = activations if isinstance(activations, list) else [activations]
    activation = _one([_activation_name(a, where) for a in activations], "activations", where)
    gating = layer.get("gating_mode", ["none"])
    if layer.get("gated", False) or any(mode != "none" for mode in (gating if isinstance(gating, list) else [gating])):
        raise nam_config_error(f"{where} is gated; ampsim imports NAM's plain (ungated) WaveNet")
    if any(v is not None for v in layer.get("secondary_activation") or []):
        raise nam_config_error(f"{where} has a secondary activation, which ampsim's WaveNet does not have")
    head = layer.get("head")
    if isinstance(head, dict):
        if head.get("kernel_size", 1) != 1:
            raise nam_config_error(f"{where}.head has kernel {head.get('kernel_size')}; ampsim's head is a 1x1")
        head_size, head_bias = bounded(head, "out_channels", 1, MAX_NAM_CHANNELS, f"{where}.head"), head.get("bias")
    else:
        head_size, head_bias = bounded(layer, "head_size", 1, MAX_NAM_CHANNELS, where), layer.get("head_bias")
    plain = {**_PLAIN_OPTIONS, "bottleneck": channels}
    if any(layer.get(key, value) != value for key, value in plain.items()) or \
            (layer.get("head1x1") or {}).get("active", False) or not (layer.get("layer1x1") or {}).get("active", True) \
            or any((layer.get(key) or {}).get("active", False) for key in _FILM_KEYS) \
            or (layer.get("layer1x1") or {}).get("groups", 1) != 1:
        raise nam_config_error(f"{where} uses NAM's bottleneck, grouped, head-1x1, FiLM or slimmable options, "
                               "which ampsim's WaveNet does not have")
    array = {"channels": channels, "head_size": head_size, "kernel_size": kernel, "dilations": list(dilations),
             "head_bias": bool(head_bias)}
    return array, activation


def _arrays_from_file(config: dict) -> tuple[list[dict], str]:
    unknown = sorted(set(config) - {"layers", "head", "head_scale"})
    if unknown or config.get("head") is not None:
        raise nam_config_error(f"this WaveNet sets {', '.join(unknown) or 'a post-head'}, which ampsim's WaveNet "
                               "does not have")
    layers = config.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_NAM_ARRAYS:
        raise nam_config_error(f"config.layers must list 1..{MAX_NAM_ARRAYS} layer arrays")
    arrays, activations, size = [], [], 1
    for index, layer in enumerate(layers):
        array, activation = _array_from_file(layer, f"config.layers[{index}]", size)
        arrays.append(array)
        activations.append(activation)
        size = array["channels"]
    for index, array in enumerate(arrays):
        following = arrays[index + 1]["channels"] if index + 1 < len(arrays) else 1
        if array["head_size"] != following:
            raise nam_config_error(f"config.layers[{index}]'s head has {array['head_size']} channels; the next "
                                   f"head sum needs {following}")
    if not isinstance(config.get("head_scale"), (int, float)):
        raise nam_config_error("config.head_scale is not a number")
    return arrays, _one(activations, "activations", "config.layers")


def nam_weight_count(config: dict) -> int:
    """Every weight in NAM's order (rechannel, per layer conv + bias + mixin + 1x1 + bias, head, its bias),
    then head_scale: counted from the config alone."""
    arrays, _ = _arrays_from_file(config)
    count, size = 1, 1
    for array in arrays:
        channels, k = array["channels"], array["kernel_size"]
        count += size * channels + channels * array["head_size"] + (array["head_size"] if array["head_bias"] else 0)
        count += len(array["dilations"]) * (k * channels * channels + channels + channels + channels * channels
                                             + channels)
        size = channels
    return count


def from_nam(config: dict, weights: np.ndarray) -> NamImport:
    """NAM's WaveNet with the file's weights in place. head_scale: the config's, unless the weights' last
    value (NAM's copy of it) differs by more than float32 rounding, as NAM's own loader decides."""
    arrays, activation = _arrays_from_file(config)
    head_scale = float(config["head_scale"])
    if abs(float(weights[-1]) - head_scale) > 1e-5:
        head_scale = float(weights[-1])
    model = wavenet_model(arrays, activation, False, head_scale)
    network(model).set_nam_weights(weights)
    field = network(model).receptive_field
    return NamImport(model, field, 1)
