"""Delay between the dry and wet sides of a capture, measured by cross-correlation, and its compensation.

A positive delay means the wet side lags the dry side (interface round trip, plug-in latency). A distorting
device shifts the phase of each frequency differently, so the correlation peak wanders by a few samples with
the material it is measured on; capture signals therefore open with sweeps and noise meant for alignment,
and the delay is measured on that opening (`validate.align_seconds`).
"""

from __future__ import annotations

import numpy as np


def estimate_delay(dry: np.ndarray, wet: np.ndarray, max_lag: int) -> int:
    """Lag in samples (|lag| <= max_lag) at which `wet` best matches `dry` (either polarity)."""
    dry = np.asarray(dry, dtype=np.float64) - np.mean(dry)
    wet = np.asarray(wet, dtype=np.float64) - np.mean(wet)
    n_fft = 1 << int(len(dry) + len(wet) - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(wet, n_fft) * np.conj(np.fft.rfft(dry, n_fft)), n_fft)
    max_lag = min(max_lag, len(dry) - 1, len(wet) - 1)
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[np.argmax(np.abs(correlation[lags]))])


def align(dry: np.ndarray, wet: np.ndarray, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift the pair so that wet[n] answers dry[n]; both are trimmed to the same length."""
    if delay >= 0:
        dry, wet = dry, wet[delay:]
    else:
        dry, wet = dry[-delay:], wet
    length = min(len(dry), len(wet))
    return dry[:length], wet[:length]


def frames_after_alignment(dry_frames: int, wet_frames: int, delay: int) -> tuple[int, int]:
    """Frames each side has left once the delay is compensated, before `align` trims them to the shorter."""
    return dry_frames - max(0, -delay), wet_frames - max(0, delay)
