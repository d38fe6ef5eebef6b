"""Training losses, in `keras.ops` only. Tensors are shaped (batch, time, 1)."""

from __future__ import annotations

from keras import ops

from ampsim.core.errors import AmpsimError


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


def dc_term(y_true, y_pred):
    """The squared difference of the means, relative to the target's energy."""
    return ops.square(ops.mean(y_true - y_pred)) / (ops.mean(ops.square(y_true)) + 1e-8)


def esr_dc_loss(warmup: int, pre_emphasis_coefficient: float, dc_weight: float):
    """ESR after pre-emphasis plus a DC term, ignoring the first `warmup` samples (the state is settling)."""

    def loss(y_true, y_pred):
        y_true, y_pred = y_true[:, warmup:, :], y_pred[:, warmup:, :]
        shaped = esr(pre_emphasis(y_true, pre_emphasis_coefficient), pre_emphasis(y_pred, pre_emphasis_coefficient))
        return shaped + dc_weight * dc_term(y_true, y_pred)

    loss.__name__ = "esr_dc"
    return loss


def warmed_mse(warmup: int):
    """Plain MSE after the first `warmup` samples."""

    def loss(y_true, y_pred):
        return ops.mean(ops.square(y_true[:, warmup:, :] - y_pred[:, warmup:, :]))

    loss.__name__ = "mse"
    return loss


# NAM's trainer (through auraloss) uses these three (FFT size, hop, window) resolutions.
MRSTFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def mrstft(y_true, y_pred, resolutions=MRSTFT_RESOLUTIONS, eps: float = 1e-7):
    """Multi-resolution STFT distance: per resolution, spectral convergence (relative Frobenius error of the
    magnitudes) plus the mean absolute log-magnitude error, averaged over the resolutions. It scores the
    spectrum whatever the phase, which a waveform loss alone cannot: a model that has the tone right but is
    a fraction of a cycle late loses little here."""
    total = 0.0
    for fft_length, hop, window in resolutions:
        spectra = []
        for signal in (y_true, y_pred):
            real, imag = ops.stft(signal[..., 0], window, hop, fft_length, window="hann", center=True)
            spectra.append(ops.sqrt(ops.square(real) + ops.square(imag) + eps))
        target, predicted = spectra
        convergence = ops.sqrt(ops.sum(ops.square(target - predicted))) / ops.sqrt(ops.sum(ops.square(target)))
        log_magnitude = ops.mean(ops.abs(ops.log(target) - ops.log(predicted)))
        total = total + convergence + log_magnitude
    return total / len(resolutions)


def with_mrstft(base, warmup: int, weight: float, name: str, scored_samples: int, length_setting: str):
    """`base` plus `weight` x the MR-STFT distance after the first `warmup` samples; `base` alone at weight 0.
    The samples each update scores (`scored_samples`, set by params.yaml `length_setting`) must hold the
    longest FFT."""
    if weight == 0:
        return base
    longest_fft = max(fft for fft, _, _ in MRSTFT_RESOLUTIONS)
    if scored_samples < longest_fft:
        weight_setting = "fit.mrstft_weight"
        raise AmpsimError(f"{weight_setting} needs updates that score at least {longest_fft} samples (its longest "
                          f"FFT); {length_setting} is {scored_samples}", path="params.yaml",
                          fix=f"set {length_setting} >= {longest_fft}, or {weight_setting}: 0")

    def loss(y_true, y_pred):
        return base(y_true, y_pred) + weight * mrstft(y_true[:, warmup:, :], y_pred[:, warmup:, :])

    loss.__name__ = f"{name}+mrstft"
    return loss


def fit_loss(fit, warmup: int, scored_samples: int, length_setting: str):
    """The loss params.yaml `fit` asks for (its `loss`, plus its MR-STFT term), on windows whose first `warmup`
    samples only settle the model; `scored_samples` per update, set by `length_setting`."""
    bases = {"esr_dc": lambda: esr_dc_loss(warmup, fit.pre_emphasis, fit.dc_weight), "mse": lambda: warmed_mse(warmup)}
    if fit.loss not in bases:
        raise AmpsimError(f"unknown fit.loss `{fit.loss}`", path="params.yaml", fix=f"use one of {sorted(bases)}")
    return with_mrstft(bases[fit.loss](), warmup, fit.mrstft_weight, fit.loss, scored_samples, length_setting)
