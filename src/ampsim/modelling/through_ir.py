"""Training through the cab IR: the network's loss is taken on its output filtered by the least-squares IR
that follows it, refitted after every step (`fit.through_ir_taps`).

The cab IR fitted after training (`ampsim.modelling.cab_ir`) takes up a cabinet's ringing once the network is
trained, but the network was still trained to play the cabinet itself, which a 16-unit LSTM cannot: on the
crunch + cab it stalls early (bench/RESULTS.md, session 16). Trained through the IR, the network is asked only
for what the IR cannot give, the amp, and its errors count as they are heard, after the cabinet.

The training twin ends in a `CarriedFIR`: a fixed FIR whose last N - 1 inputs carry from update to update,
as the LSTM's state does, so each 200-sample update is filtered with its whole past. It convolves by FFT:
1024 taps cost a third more per update on a CPU core, 4096 taps twice as much (bench/RESULTS.md, session 17).
The taps are not trained by gradient: after each step they are the least-squares IR from what the network
plays on fixed training windows to their target, so they cannot run away, and validation scores the network
with the IR that step fitted, as the model would ship.

`keras` and `keras.ops` only.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ampsim.modelling import cab_ir
from ampsim.modelling.losses import dc_term


@keras.saving.register_keras_serializable(package="ampsim")
class CarriedFIR(keras.layers.Layer):
    """(batch, time, 1) -> the same through a fixed FIR of `taps` taps, its last taps - 1 inputs carried from
    call to call (the training twin's fixed `batch`). Starts as the identity."""

    def __init__(self, taps: int, batch: int, **kwargs):
        super().__init__(**kwargs)
        self.taps, self.batch = int(taps), int(batch)

    def build(self, input_shape):
        identity = np.zeros(self.taps, np.float32)
        identity[0] = 1.0
        self.kernel = self.add_weight(shape=(self.taps,), initializer=keras.initializers.Constant(identity),
                                      trainable=False, name="ir")
        self.history = self.add_weight(shape=(self.batch, self.taps - 1), initializer="zeros", trainable=False,
                                       name="carried_history")

    @property
    def carried_variables(self) -> list:
        return [self.history]

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs):
        joined = ops.concatenate([ops.stop_gradient(self.history.value), inputs[..., 0]], axis=1)
        self.history.assign(joined[:, joined.shape[1] - (self.taps - 1):])
        length = joined.shape[1] + self.taps - 1
        size = 1 << (length - 1).bit_length()  # the next power of two: no circular wrap
        x_real, x_imag = ops.rfft(joined, size)
        h_real, h_imag = ops.rfft(ops.pad(self.kernel.value, [[0, size - self.taps]]), size)
        filtered = ops.irfft((x_real * h_real - x_imag * h_imag, x_real * h_imag + x_imag * h_real), size)
        return filtered[:, self.taps - 1 : joined.shape[1], None]

    def get_config(self):
        return {**super().get_config(), "taps": self.taps, "batch": self.batch}


def through_fir(trainer: keras.Model, taps: int) -> keras.Model:
    """The training twin `trainer` (fixed batch) followed by a `CarriedFIR`: the same layers, shared. Its output
    is (batch, time, 2): the network through the IR, then the network alone (for `with_network_term`)."""
    batch = int(trainer.inputs[0].shape[0])
    network = trainer.outputs[0]
    through = CarriedFIR(taps, batch, name="through_ir")(network)
    return keras.Model(trainer.inputs, keras.layers.Concatenate(name="through_ir_and_network")([through, network]),
                       name=f"{trainer.name}_through_ir")


def with_network_term(loss, weight: float, dc_weight: float):
    """`loss` on the network through the IR, plus `weight` x the same loss on the network alone, plus `dc_weight`
    x the network alone's DC term. What the IR does not pass (a cabinet passes no DC and little under 60 Hz)
    costs nothing through it, so the network's output filled up there: on the crunch + cab a DC offset of 9
    (full scale is 1), the IR's zero DC gain hiding it on the audio it was fitted on, but not quite on other
    audio (bench/RESULTS.md, session 17). The target has nothing there, so a small weight keeps most of that out
    at little cost to the rest: the network alone, a cabinet short of the target, scores an ESR near 1. The DC
    gets its full weight, as in the loss itself: at 0.001 an offset of a quarter of full scale still cost less
    than the step's noise, and it swung from step to step, the level held on it with it (session 18)."""

    def combined(y_true, y_pred):
        alone = y_pred[..., 1:]
        return loss(y_true, y_pred[..., :1]) + weight * loss(y_true, alone) + dc_weight * dc_term(y_true, alone)

    combined.__name__ = f"{loss.__name__}_through_ir"
    return combined


def fir_layer(model: keras.Model) -> CarriedFIR | None:
    return next((layer for layer in model.layers if isinstance(layer, CarriedFIR)), None)


def set_ir(model: keras.Model, ir: np.ndarray) -> None:
    fir_layer(model).kernel.assign(np.asarray(ir, np.float32))


def current_ir(model: keras.Model) -> np.ndarray:
    return keras.ops.convert_to_numpy(fir_layer(model).kernel.value).astype(np.float32)


def refit(network: keras.Model, x: np.ndarray, y: np.ndarray, warmup: int, taps: int, ridge: float,
          previous: np.ndarray) -> tuple[np.ndarray, float]:
    """The least-squares IR of `taps` taps from what `network` (the plain model, no FIR) plays on the windows
    `x` to their target `y`, past each window's first `warmup` samples (the state settling), and the gain that
    would bring what it plays to the target's level. `previous` (and no gain) where the network plays silence."""
    played = network.predict(x, batch_size=len(x), verbose=0)[..., 0][:, warmup:]
    target = y[:, warmup:, 0]
    fitted = cab_ir.fit(list(played), list(target), [taps], ridge)
    if taps not in fitted:
        return previous, 1.0
    # The level without each window's DC, which the IR does not pass: measured with it, an offset took the level.
    in_band = played - np.mean(played, axis=1, keepdims=True, dtype=np.float64)
    return fitted[taps], float(np.sqrt(np.sum(np.square(target, dtype=np.float64)) / np.sum(np.square(in_band))))


def hold_level(trainer: keras.Model, ir: np.ndarray, gain: float) -> np.ndarray:
    """Only the product of the network and the IR is fitted, so the network's level is free: left alone, it
    drifts (on the crunch + cab to 40 dB over the target, the IR 40 dB under it: bench/RESULTS.md, session 17),
    which slows the LSTM's learning, and a plugin user who loads the model without its IR would hear it. So the
    network's output layer (`head`) is scaled to play at the target's level and the IR by the inverse: the same
    model. A model without such a head, or that adds its input to its output, keeps its level."""
    names = {layer.name for layer in trainer.layers}
    if "head" not in names or "input_skip" in names or not np.isfinite(gain) or gain <= 0:
        return ir
    head = trainer.get_layer("head")
    head.set_weights([weight * np.float32(gain) for weight in head.get_weights()])
    return (np.asarray(ir, np.float64) / gain).astype(np.float32)


def filtered(ir: np.ndarray, played: np.ndarray) -> np.ndarray:
    """Windows (count, time, 1) through `ir`, each from silence."""
    return np.stack([cab_ir.apply(ir, row) for row in played[..., 0]])[..., None]
