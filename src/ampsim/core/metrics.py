"""Scores of a rendering against its target, in numpy on whole arrays (float64 accumulation)."""

from __future__ import annotations

import numpy as np


def esr(target: np.ndarray, prediction: np.ndarray) -> float:
    """Error-to-signal ratio: sum((y - y_hat)^2) / sum(y^2). 0 is perfect; 1 is as bad as silence."""
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    return float(np.sum((target - prediction) ** 2) / max(np.sum(target**2), 1e-20))


def pre_emphasised(signal: np.ndarray, coefficient: float) -> np.ndarray:
    signal = np.asarray(signal, np.float64)
    return signal[1:] - coefficient * signal[:-1]


def esr_pre_emphasis(target: np.ndarray, prediction: np.ndarray, coefficient: float) -> float:
    """ESR after first-order pre-emphasis: the error weighted towards the frequencies the ear hears most."""
    return esr(pre_emphasised(target, coefficient), pre_emphasised(prediction, coefficient))


def mse(target: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.mean((np.asarray(target, np.float64) - np.asarray(prediction, np.float64)) ** 2))


def level_db(target: np.ndarray, prediction: np.ndarray) -> float:
    """Output level relative to the target, RMS in dB (0 = same loudness)."""
    rms = lambda s: np.sqrt(np.mean(np.asarray(s, np.float64) ** 2)) + 1e-20  # noqa: E731
    return float(20 * np.log10(rms(prediction) / rms(target)))


def evenly_spaced(count: int, keep: int) -> np.ndarray:
    """Indices of at most `keep` items spread evenly over `count` (all of them when keep >= count)."""
    if keep >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, keep).round().astype(np.int64)
