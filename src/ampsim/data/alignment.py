"""Latency between the dry and wet sides of a capture: where the wet side's response *starts*.

A positive latency means the wet side lags the dry side (interface round trip, plug-in latency). Compensating
it shifts the wet side back so that wet[n] answers dry[..n]. Compensating too much asks the model to predict
the future, which no causal model can learn: the run stalls on a flat loss. So the latency is the onset of
the response, less a safety margin, never its correlation peak. For gear with a dispersive response (a
cabinet, a mic'd speaker, a strong tone stack) the peak comes well after the onset: an amp with a cabinet and
a pure delay of 37 samples peaks at 336.

The onset is read off the capture's linear impulse response: the cross-spectrum over the dry power spectrum
(Welch-averaged and regularised), whose first tap that stands clear of the estimate's noise floor, on the
stretch of taps that leads up to the peak, is where the response begins. A band-limited estimate rings a few
samples ahead of a sharp onset; the margin and a small tolerance for "leads" absorb that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SEGMENT_SAMPLES = 1 << 15  # Welch segments of the impulse-response estimate: far longer than any rig's latency
REGULARISATION = 1e-4  # of the dry side's peak power: bands the DI never excites are left out, not amplified
ONSET_GAP_SAMPLES = 4  # taps below the threshold for this long end the stretch that leads up to the peak
RINGING_WINDOW_MS = 50.0  # a cabinet's ringing is over well within this; beyond it the estimate is mostly noise
RINGING_ENERGY = 0.9  # how long the response rings: the time from its onset that holds this share of its energy


@dataclass(frozen=True)
class Onset:
    """Where the linear response of a capture begins and peaks (in samples; negative: the wet side leads),
    and how clearly it stands out of the estimate's noise (peak over the median tap)."""

    onset: int
    peak: int
    clarity: float


def impulse_response(dry: np.ndarray, wet: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear dry-to-wet impulse response at lags -max_lag..max_lag: (lags, taps)."""
    dry = np.asarray(dry, dtype=np.float64) - np.mean(dry)
    wet = np.asarray(wet, dtype=np.float64) - np.mean(wet)
    length = min(len(dry), len(wet))
    segment = min(SEGMENT_SAMPLES, 1 << int(length).bit_length())
    max_lag = min(max_lag, segment // 2 - 1)
    hop = segment // 2
    window = np.hanning(segment)
    # zero-padded to one segment when shorter: one estimate from the whole (short) capture
    dry, wet = (np.pad(side[:length], (0, max(0, segment - length))) for side in (dry, wet))
    dry_segments = sliding_window_view(dry, segment)[::hop] * window
    wet_segments = sliding_window_view(wet, segment)[::hop] * window
    dry_spectra, wet_spectra = np.fft.rfft(dry_segments, axis=1), np.fft.rfft(wet_segments, axis=1)
    cross = np.sum(wet_spectra * np.conj(dry_spectra), axis=0)
    power = np.sum(np.abs(dry_spectra) ** 2, axis=0)
    taps = np.fft.irfft(cross / (power + REGULARISATION * power.max()), segment)
    lags = np.arange(-max_lag, max_lag + 1)
    return lags, taps[lags]


def find_onset(dry: np.ndarray, wet: np.ndarray, max_lag: int, threshold: float) -> Onset:
    """The onset of the response: the earliest tap at or above `threshold` x the peak tap, on the stretch of
    such taps (gaps shorter than ONSET_GAP_SAMPLES) that ends at the peak. Either polarity."""
    lags, taps = impulse_response(dry, wet, max_lag)
    magnitude = np.abs(taps)
    peak = int(np.argmax(magnitude))
    floor = float(np.median(magnitude))
    clarity = float(magnitude[peak] / floor) if floor > 0 else float("inf") if magnitude[peak] > 0 else 0.0
    above = np.flatnonzero(magnitude[: peak + 1] >= threshold * magnitude[peak])
    breaks = np.flatnonzero(np.diff(above) > ONSET_GAP_SAMPLES)
    first = above[breaks[-1] + 1] if breaks.size else above[0]
    return Onset(onset=int(lags[first]), peak=int(lags[peak]), clarity=clarity)


def ringing_ms(dry: np.ndarray, wet: np.ndarray, onset: int, sample_rate: int) -> float:
    """How long the linear response rings after its onset: the time that holds RINGING_ENERGY of its energy
    over the RINGING_WINDOW_MS that follow the onset. A pedal's or an amp's own response is over in 1-3 ms; a
    cabinet's or a mic'd speaker's rings for 10 ms and more (bench/RESULTS.md, session 19)."""
    window = int(RINGING_WINDOW_MS * sample_rate / 1000)
    lags, taps = impulse_response(dry, wet, abs(onset) + window)
    energy = np.cumsum(taps[(lags >= onset) & (lags < onset + window)] ** 2)
    if energy.size == 0 or energy[-1] <= 0:
        return 0.0
    return float(np.argmax(energy >= RINGING_ENERGY * energy[-1])) * 1000 / sample_rate


def blip_onset(wet: np.ndarray, blips: np.ndarray, sample_rate: int, max_lead: int,
               threshold: float = 0.05) -> Onset | None:
    """The onset read off the wet side's answers to single-sample blips of the DI (ampsim's reamp signal's
    markers), as NAM reads its own: the earliest sample, from `max_lead` before a blip on, where the answer
    departs from the silence before it by `threshold` of its peak (and twice that silence's noise). None
    when no blip lies wholly inside the file."""
    before = after = max(int(0.1 * sample_rate), 2 * max_lead)
    blips = blips[(blips - before >= 0) & (blips + after <= len(wet))]
    if blips.size == 0:
        return None
    windows = np.asarray(wet, dtype=np.float64)[blips[:, None] + np.arange(-before, after)[None, :]]
    silence = windows[:, : before - max_lead]
    answer = np.abs(windows - np.median(silence, axis=1, keepdims=True))[:, before - max_lead :]
    noise = np.max(np.abs(silence - np.median(silence, axis=1, keepdims=True)), axis=1)
    peaks = answer.max(axis=1)
    level = np.maximum(threshold * peaks, 2 * noise)[:, None]
    starts = np.argmax(answer >= level, axis=1) - max_lead
    clarity = float(np.min(peaks / noise)) if np.all(noise > 0) else float("inf")
    return Onset(onset=int(starts.min()), peak=int(np.median(np.argmax(answer, axis=1) - max_lead)), clarity=clarity)


def estimate_delay(dry: np.ndarray, wet: np.ndarray, max_lag: int) -> int:
    """Lag in samples (|lag| <= max_lag) of the cross-correlation peak (either polarity): the figure most
    tools call the latency. Reported beside the onset, never compensated."""
    dry = np.asarray(dry, dtype=np.float64) - np.mean(dry)
    wet = np.asarray(wet, dtype=np.float64) - np.mean(wet)
    n_fft = 1 << int(len(dry) + len(wet) - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(wet, n_fft) * np.conj(np.fft.rfft(dry, n_fft)), n_fft)
    max_lag = min(max_lag, len(dry) - 1, len(wet) - 1)
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[np.argmax(np.abs(correlation[lags]))])


def prediction_esr(source: np.ndarray, target: np.ndarray, lag: int, taps: int = 64) -> float:
    """How well `target` is predicted from `source` around `lag` (taps from lag - taps/2 to lag + taps/2), by
    least squares on saturated copies of the source (a crude memory-nonlinear model). Gear makes its output
    from its input, and distortion loses what the output cannot say about the input: so, with the same
    window either way, the true direction predicts better. That tells swapped files from a DI recorded late."""
    source, target = align(np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64),
                           lag - taps // 2)
    source = source / (np.sqrt(np.mean(source**2)) or 1.0)
    columns = [sliding_window_view(np.tanh(gain * source), taps) for gain in (0.25, 1.0, 4.0, 16.0)]
    features = np.concatenate([*columns, np.ones((columns[0].shape[0], 1))], axis=1)
    answer = target[taps - 1 :]
    weights, *_ = np.linalg.lstsq(features, answer, rcond=None)
    residual = answer - features @ weights
    return float(np.sum(residual**2) / max(np.sum(answer**2), 1e-30))


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
