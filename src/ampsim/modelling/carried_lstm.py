"""The training twin of a recurrent model: an LSTM whose state carries from one update to the next
(truncated back-propagation through time), in `keras` and `keras.ops` only, and the move of its weights into
the plain model that is saved and rendered."""

from __future__ import annotations

import keras
import numpy as np

from ampsim.modelling.through_ir import CarriedFIR


class CarriedLSTM(keras.layers.LSTM):
    """An LSTM whose state carries from one call to the next (truncated back-propagation through time).
    Keras' own `stateful=True` keeps the state in untracked variables, which the JAX backend's compiled
    train and predict steps never update; here they are tracked non-trainable weights, so every backend
    carries them."""

    def _create_state_variables(self, batch_size):
        self.states = [self.add_weight(shape=(batch_size, self.units), initializer="zeros", trainable=False,
                                       name=name) for name in ("carried_h", "carried_c")]

    @property
    def carried_variables(self) -> list:
        return list(self.states or [])


def carried_variables(model: keras.Model) -> list:
    """What carries from update to update, (batch, ...) each: the LSTMs' states, and the history of a FIR that
    training goes through (`ampsim.modelling.through_ir`)."""
    return [variable for layer in model.layers for variable in getattr(layer, "carried_variables", [])]


def reset_carried_state(model: keras.Model) -> None:
    for variable in carried_variables(model):
        variable.assign(np.zeros(tuple(variable.shape), variable.dtype))


def zero_carried_rows(model: keras.Model, rows) -> None:
    """Zero the carried state of the batch rows marked True (bool (batch,)): those rows start a new stream."""
    rows = keras.ops.convert_to_tensor(rows)[:, None]
    for variable in carried_variables(model):
        variable.assign(keras.ops.where(rows, 0.0, variable.value))


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """The weights of `source` into `target`, layer by layer, either way between a model and its training twin
    (a carried state is not a weight, nor is the FIR that training goes through)."""
    for to in target.layers:
        if to.weights and not isinstance(to, CarriedFIR):
            frm = source.get_layer(to.name)
            if isinstance(frm, CarriedLSTM) or isinstance(to, CarriedLSTM):
                to.cell.set_weights(frm.cell.get_weights())
            else:
                to.set_weights(frm.get_weights())
