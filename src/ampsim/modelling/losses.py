"""Training losses, in `keras.ops` only. Tensors are shaped (batch, time, 1)."""

from __future__ import annotations

from keras import ops


def tail_mse(tail: int):
    """The 2018 loss: MSE over the last `tail` output samples of each window (480 = 10 ms at 48 kHz)."""

    def loss(y_true, y_pred):
        return ops.mean(ops.square(y_true[:, -tail:, :] - y_pred[:, -tail:, :]))

    loss.__name__ = f"tail_mse_{tail}"
    return loss


def pre_emphasis(x, coefficient: float):
    """First-order pre-emphasis y[n] = x[n] - a x[n-1], which weights the high frequencies the ear hears."""
    return x[:, 1:, :] - coefficient * x[:, :-1, :]


def esr(y_true, y_pred, eps: float = 1e-8):
    """Error-to-signal ratio sum((y - y_hat)^2) / sum(y^2)."""
    return ops.sum(ops.square(y_true - y_pred)) / (ops.sum(ops.square(y_true)) + eps)


def esr_dc_loss(warmup: int, pre_emphasis_coefficient: float, dc_weight: float):
    """ESR after pre-emphasis plus a DC term, ignoring the first `warmup` samples (the state is settling)."""

    def loss(y_true, y_pred):
        y_true, y_pred = y_true[:, warmup:, :], y_pred[:, warmup:, :]
        shaped = esr(pre_emphasis(y_true, pre_emphasis_coefficient), pre_emphasis(y_pred, pre_emphasis_coefficient))
        dc = ops.square(ops.mean(y_true - y_pred)) / (ops.mean(ops.square(y_true)) + 1e-8)
        return shaped + dc_weight * dc

    loss.__name__ = "esr_dc"
    return loss


def warmed_mse(warmup: int):
    """Plain MSE after the first `warmup` samples."""

    def loss(y_true, y_pred):
        return ops.mean(ops.square(y_true[:, warmup:, :] - y_pred[:, warmup:, :]))

    loss.__name__ = "mse"
    return loss
