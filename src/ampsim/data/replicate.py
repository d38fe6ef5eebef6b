"""The replicate check: does the gear answer the same passage the same way twice?

Capture signals often play a passage twice (NAM's standard signal plays its validation passage at the start
and at the end). If the dry side holds such a repeat, the two wet takes of it must agree: their self-ESR
(NAM's definition, sum((take1 - take2)^2) / sum(take2^2)) stays small for gear that is quiet, stable and
time-invariant. A noisy chain, an amp still warming up, a knob moved mid-take, or a modulation effect (chorus,
flanger, phaser, tremolo, an LFO) makes the takes differ, and a model cannot learn that.

The repeat is found in the dry audio itself, for any signal: the lag with the strongest autocorrelation
peaks is a candidate, and the stretch where the dry side matches itself at that lag, block by block, is the
passage. Silent blocks neither count nor break the stretch (silence always "repeats").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, signal

from ampsim.core import metrics

CANDIDATE_LAGS = 3  # autocorrelation peaks tried, strongest first (a periodic tone can outrank the repeat)


@dataclass(frozen=True)
class Repeat:
    start: int  # the first take starts here (samples into the aligned capture)
    lag: int  # the second take starts this many samples after the first
    length: int  # samples in each take

    def takes(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = audio[self.start : self.start + self.length]
        return first, audio[self.start + self.lag : self.start + self.lag + self.length]


def _autocorrelation(x: np.ndarray) -> np.ndarray:
    n_fft = fft.next_fast_len(2 * len(x) - 1, real=True)
    spectrum = fft.rfft(x, n_fft)
    return fft.irfft(spectrum * np.conj(spectrum), n_fft)[: len(x)]


def _candidate_lags(x: np.ndarray, min_lag: int, max_lag: int, block: int) -> np.ndarray:
    correlation = _autocorrelation(x)[min_lag : max_lag + 1]
    peaks, _ = signal.find_peaks(correlation, distance=block)
    strongest = peaks[np.argsort(correlation[peaks])[::-1][:CANDIDATE_LAGS]]
    return strongest + min_lag


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    count = len(values) // block
    return values[: count * block].reshape(count, block).sum(axis=1)


def _passage_at(x: np.ndarray, lag: int, block: int, match_esr: float, silence_power: float) -> tuple[int, int]:
    """(first block, block count) of the longest stretch where x matches itself `lag` samples later, or
    (0, 0). Counted blocks must match within `match_esr`; silent blocks on both sides are neutral."""
    first, second = x[: len(x) - lag], x[lag:]
    error = _block_sums((first - second) ** 2, block)
    energy_first, energy_second = _block_sums(first**2, block), _block_sums(second**2, block)
    silent = np.maximum(energy_first, energy_second) < silence_power * block
    matching = ~silent & (error <= match_esr * energy_second)
    usable = matching | silent
    # runs of usable blocks: label each by its start, then count its matching blocks
    starts = np.flatnonzero(usable & ~np.concatenate([[False], usable[:-1]]))
    if len(starts) == 0:
        return 0, 0
    run = np.cumsum(usable & ~np.concatenate([[False], usable[:-1]])) - 1
    counts = np.bincount(run[usable], weights=matching[usable], minlength=len(starts))
    best = int(np.argmax(counts))
    if counts[best] == 0:
        return 0, 0
    inside = np.flatnonzero((run == best) & matching)  # trim silence at both ends of the stretch
    return int(inside[0]), int(inside[-1] - inside[0] + 1)


def find_repeat(dry: np.ndarray, sample_rate: int, min_seconds: float, match_esr: float, block_ms: float,
                silence_dbfs: float) -> Repeat | None:
    """The longest passage of `dry` that is played again later (at least `min_seconds` of sound each time,
    the two takes not overlapping), or None."""
    x = np.asarray(dry, np.float64)
    min_length = int(min_seconds * sample_rate)
    block = max(1, int(block_ms * sample_rate / 1000))
    if len(x) < 2 * min_length or min_length < block:
        return None
    silence_power = 10 ** (silence_dbfs / 10)
    best: Repeat | None = None
    for lag in _candidate_lags(x, min_length, len(x) - min_length, block):
        first_block, blocks = _passage_at(x, int(lag), block, match_esr, silence_power)
        length = min(blocks * block, int(lag))  # a periodic stretch longer than the lag: one period of it
        if length >= min_length and (best is None or length > best.length):
            best = Repeat(start=first_block * block, lag=int(lag), length=length)
    return best


def self_esr(wet: np.ndarray, repeat: Repeat) -> float:
    """NAM's replicate ESR of the two wet takes: the second take is the reference."""
    first, second = repeat.takes(np.asarray(wet))
    return metrics.esr(second, first)
