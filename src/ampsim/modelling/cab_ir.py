"""A cabinet's impulse response, fitted after the network by least squares.

A cabinet, or a mic'd speaker, is linear and long: thousands of samples of ringing that a 16-unit LSTM has
no room to hold, so an amp whose response includes one trains to a poor ESR (the crunch + cab: 0.11-0.14 on
real guitar at 5 minutes). Once the network is trained, the causal FIR of N taps that best maps what it
plays on the training audio to the target is the solution of a Toeplitz system: the output's
autocorrelation against its cross-correlation with the target, over the first N lags. Levinson solves it
in seconds for 4096 taps, and unlike a filter trained by gradient it cannot run away. The network followed
by that FIR cut the crunch + cab's test ESR 1.7-3.2x, the DS-1's by 18-25 % and the Klon's by 28-39 %
(bench/RESULTS.md, session 15). Its length is chosen on validation among `train.cab_ir_taps`, none
included; the model card keeps it, rendering plays the network then the IR, and the plugin exports write it
as a WAV for their IR slots.

Numpy and scipy only, no Keras: a release renders on ONNX Runtime without importing it.
"""

from __future__ import annotations

import base64
from typing import Sequence

import numpy as np
from scipy.linalg import solve_toeplitz
from scipy.signal import correlate, fftconvolve

from ampsim.core import metrics


def lagged_products(a: np.ndarray, b: np.ndarray, lags: int) -> np.ndarray:
    """sum_t a[t + k] b[t] for k = 0 .. lags - 1 (zero past the ends), by FFT."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    full = correlate(a, b, mode="full", method="fft")[len(b) - 1 :]
    return np.pad(full[:lags], (0, max(lags - len(full), 0)))


def fit(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], lengths: Sequence[int],
        ridge: float) -> dict[int, np.ndarray]:
    """The least-squares causal FIR of each length in `lengths` from the network's `outputs` to the
    `targets` (pairs of equal length, one per capture, summed: no seam between captures). `ridge` (times
    the output's energy) keeps a near-silent band from blowing up. None where the network plays silence."""
    longest = max(lengths)
    auto, cross = np.zeros(longest), np.zeros(longest)
    for output, target in zip(outputs, targets):
        auto += lagged_products(output, output, longest)
        cross += lagged_products(target, output, longest)
    if not auto[0] > 0:
        return {}
    auto[0] *= 1.0 + ridge
    return {n: solve_toeplitz(auto[:n], cross[:n]).astype(np.float32) for n in sorted(set(lengths))}


def apply(ir: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """`x` through the IR, as long as `x` (from silence); unchanged without an IR."""
    if ir is None:
        return np.asarray(x, np.float32)
    return fftconvolve(np.asarray(x, np.float64), np.asarray(ir, np.float64))[: len(x)].astype(np.float32)


def choose(train_outputs: Sequence[np.ndarray], train_targets: Sequence[np.ndarray],
           val_outputs: Sequence[np.ndarray], val_targets: Sequence[np.ndarray], lengths: Sequence[int],
           ridge: float) -> tuple[np.ndarray | None, dict[int, float]]:
    """Fit an IR of each length on the training audio and keep the one with the lowest validation ESR, or
    none (0 taps) where the network alone scores best. Returns it and every length's validation ESR."""
    target = np.concatenate(val_targets)
    candidates: dict[int, np.ndarray | None] = {0: None, **fit(train_outputs, train_targets, lengths, ridge)}
    scores = {n: metrics.esr(target, np.concatenate([apply(ir, out) for out in val_outputs]))
              for n, ir in candidates.items()}
    return candidates[min(scores, key=scores.get)], scores


class Stream:
    """The IR as a stream filter: consecutive chunks of any length, its last len(ir) - 1 inputs carried, so
    a file filtered chunk by chunk equals the file filtered whole."""

    def __init__(self, ir: np.ndarray):
        self.ir = np.asarray(ir, np.float64)
        self.reset()

    def reset(self) -> None:
        self.history = np.zeros(len(self.ir) - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.float32)
        joined = np.concatenate([self.history, np.asarray(x, np.float64)])
        self.history = joined[len(joined) - len(self.history) :]
        return fftconvolve(joined, self.ir, mode="valid").astype(np.float32)


# --- kept in the model card: the taps as base64 of little-endian float32 (exact, one line of JSON) --------

def encode(ir: np.ndarray | None) -> str | None:
    return None if ir is None else base64.b64encode(np.asarray(ir, "<f4").tobytes()).decode("ascii")


def decode(text: str | None) -> np.ndarray | None:
    return None if text is None else np.frombuffer(base64.b64decode(text), "<f4").astype(np.float32)
