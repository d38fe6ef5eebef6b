"""ampsim's own reamp signal: what to play through the gear for a capture (`ampsim signal`).

About three minutes, in this order (each section's place is in `ReampSignal.sections`):

1. `markers`: single-sample blips in silence, at uneven spacing (a signature validate looks for). The gear's
   answer to a blip starts where its response starts: the latency, read off the recording as NAM does.
2. `sweeps`: exponential sine sweeps, 20 Hz to 20 kHz (below Nyquist), at -30, -18 and -6 dBFS.
3. `noise`: pink-noise bursts at rising levels, -40 to -6 dBFS.
4. `playing`: guitar-like playing at DI levels: single notes, strummed chords, palm mutes, in passages from
   soft to hard, then mixed. Picked strings as a pickup hears them (`string_note`), so that its spectrum,
   levels and attacks are a real DI's: the playing is what a model learns to play real guitar from.
5. `repeat` (and `repeat_again`): one passage played twice, for the replicate check (noise, drift,
   time-varying gear).
6. `validation`: a passage of new playing, kept apart for validation.

Deterministic for a given rate: the same file every time, so that validate can recognise a capture made with
it, even trimmed by the DAW or at another level, and knows where each section lies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ampsim.data.demo import exp_sweep, pink_noise

SEED = 2026
LEAD_IN_SECONDS = 0.5  # silence first: a DAW that trims a few milliseconds trims silence
BLIP_SECONDS = (0.5, 1.0, 1.75, 2.25)  # uneven spacing: a signature no guitar take has
BLIP_LEVEL = 0.5
MARKER_SECONDS = 3.0  # the markers section ends here (the last blip's answer has died away)
SWEEP_LEVELS_DB = (-30.0, -18.0, -6.0)
SWEEP_SECONDS = 3.0
NOISE_LEVELS_DB = tuple(np.linspace(-40.0, -6.0, 10))
NOISE_BURST_SECONDS = 0.5
PLAYING_SECONDS = 120.0
REPEAT_SECONDS = 10.0
VALIDATION_SECONDS = 25.0
GAP_SECONDS = 0.25


@dataclass(frozen=True)
class ReampSignal:
    audio: np.ndarray  # float32 mono, peaks below -1 dBFS
    sample_rate: int
    sections: dict[str, tuple[int, int]]  # name -> (start, stop) in samples


def blip_positions(sample_rate: int) -> np.ndarray:
    """Where the marker blips lie in the signal, in samples."""
    return np.round(np.asarray(BLIP_SECONDS) * sample_rate).astype(int)


def marker_section(sample_rate: int) -> np.ndarray:
    markers = np.zeros(int(MARKER_SECONDS * sample_rate), np.float64)
    markers[blip_positions(sample_rate)] = BLIP_LEVEL
    return markers


def sweep_section(sample_rate: int) -> np.ndarray:
    top = min(20_000.0, 0.45 * sample_rate)
    gap = np.zeros(int(GAP_SECONDS * sample_rate))
    return np.concatenate([part for level in SWEEP_LEVELS_DB
                           for part in (exp_sweep(SWEEP_SECONDS, sample_rate, 20.0, top) * 10 ** (level / 20), gap)])


def noise_section(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    burst = int(NOISE_BURST_SECONDS * sample_rate)
    gap = np.zeros(int(GAP_SECONDS * sample_rate))
    return np.concatenate([part for level in NOISE_LEVELS_DB
                           for part in (pink_noise(burst, rng) * 10 ** (level / 20) * np.hanning(burst), gap)])


PICKUP_RESONANCE_HZ = (1800.0, 3500.0)  # a magnetic pickup and its cable: a resonant low-pass (neck .. bridge)
PICKUP_RESONANCE_Q = 1.2
PARTIAL_CEILING_HZ = 10_000.0


def pickup_response(freqs: np.ndarray, resonance_hz: float) -> np.ndarray:
    """|H| of a second-order low-pass at the pickup's resonance: the bump and roll-off that a real DI has and a
    bare string model lacks (a DI measured 1.4 % of its energy above 2 kHz; plain partials, 3.5 %)."""
    ratio = freqs / resonance_hz
    return 1.0 / np.sqrt((1 - ratio**2) ** 2 + (ratio / PICKUP_RESONANCE_Q) ** 2)


def string_note(f0: float, seconds: float, sample_rate: int, rng: np.random.Generator, muted: bool) -> np.ndarray:
    """A picked string as a magnetic pickup hears it, peak 1.

    The string starts at rest, bent at the pick; the pickup reads its velocity at one point. So the partials
    start in phase, each sin(n pi pluck) sin(n pi pickup) / n strong: the sharp, spiky wavefront of a real
    pick attack, which a distortion stage answers very differently from partials at random phases. A short
    click of pick noise rides on it. High partials die first; a palm mute damps the note within tens of
    milliseconds and takes its top off."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    harmonic = np.arange(1, int(min(PARTIAL_CEILING_HZ, sample_rate / 2.5) // f0) + 1)
    freqs = f0 * harmonic * np.sqrt(1 + 1e-4 * harmonic**2)  # a stiff string is slightly inharmonic
    pluck_at, pickup_at = rng.uniform(0.08, 0.3), rng.uniform(0.04, 0.22)
    amps = np.sin(np.pi * harmonic * pluck_at) * np.sin(np.pi * harmonic * pickup_at) / harmonic**1.5
    amps *= pickup_response(freqs, rng.uniform(*PICKUP_RESONANCE_HZ))
    decay_s = rng.uniform(0.8, 2.5) / (1 + freqs / (600.0 if muted else 1500.0))
    if muted:
        decay_s = np.minimum(decay_s, 0.06)
    note = (amps * np.exp(-t[:, None] / decay_s) * np.sin(2 * np.pi * freqs * t[:, None])).sum(axis=1)
    click = int(rng.uniform(0.0005, 0.002) * sample_rate)
    note[:click] += rng.uniform(0.05, 0.3) * np.max(np.abs(note)) * rng.standard_normal(click) * np.hanning(click)
    return note / np.max(np.abs(note))


def _note(midi: int, seconds: float, sample_rate: int, rng: np.random.Generator, muted: bool) -> np.ndarray:
    return string_note(440.0 * 2 ** ((midi - 69) / 12), seconds, sample_rate, rng, muted)


def release_envelope(held: float, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """1 while the note is held, then a damping of 15-80 ms."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.exp(-np.maximum(0.0, t - held) / rng.uniform(0.015, 0.08))


def playing(seconds: float, sample_rate: int, rng: np.random.Generator, levels_db: tuple[float, float]) -> np.ndarray:
    """Phrases of single notes, strummed chords and palm-muted chugs at DI levels within `levels_db` (peak
    dBFS of a note), as a guitarist plays them: a part a note, one after the other, ringing over each other."""
    total = int(seconds * sample_rate)
    out = np.zeros(total + 2 * sample_rate)
    pos = 0
    while pos < total:
        kind = rng.choice(["note", "chord", "mute"], p=[0.45, 0.3, 0.25])
        level = 10 ** (rng.uniform(*levels_db) / 20)
        if kind == "chord":  # root, fifth, octave (and a third), strummed down
            root = int(rng.integers(40, 58))
            notes = [root, root + 7, root + 12] + ([root + 16] if rng.random() < 0.5 else [])
            duration, gap, muted = rng.uniform(0.6, 2.0), rng.uniform(0.008, 0.03), False
        elif kind == "mute":  # low chugs, short and tight
            notes, duration, gap, muted = [int(rng.integers(40, 48))], rng.uniform(0.12, 0.3), 0.0, True
        else:
            notes, duration, gap, muted = [int(rng.integers(40, 77))], rng.uniform(0.2, 1.2), 0.0, False
        # half the notes are let ring into the next; the others the player stops (a fretting hand lifts)
        release = release_envelope(duration, duration + 0.5, sample_rate, rng) if rng.random() < 0.5 else 1.0
        for i, midi in enumerate(notes):
            start = pos + int(i * gap * sample_rate)
            note = (_note(midi, duration + 0.5, sample_rate, rng, muted) * release)[: len(out) - start]
            out[start : start + len(note)] += note * level / len(notes) ** 0.5
        pos += int(duration * sample_rate)
    return out[:total]


def guitar_section(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Soft, medium, hard, then mixed dynamics: the gear's whole range of drive."""
    quarter = PLAYING_SECONDS / 4
    passages = [(-36.0, -24.0), (-24.0, -14.0), (-14.0, -4.0), (-36.0, -4.0)]
    return np.concatenate([playing(quarter, sample_rate, rng, levels) for levels in passages])


def reamp_signal(sample_rate: int) -> ReampSignal:
    """The whole signal at `sample_rate` (any rate; 48 kHz by default in `ampsim signal`)."""
    rng = np.random.default_rng(SEED)
    markers, sweeps, noise = marker_section(sample_rate), sweep_section(sample_rate), noise_section(sample_rate, rng)
    guitar = guitar_section(sample_rate, rng)
    repeat = playing(REPEAT_SECONDS, sample_rate, rng, (-30.0, -6.0))
    validation = playing(VALIDATION_SECONDS, sample_rate, rng, (-36.0, -4.0))
    # the playing peaks below -1 dBFS (no inter-sample overs in the re-amp chain); markers and sweeps keep
    # their exact levels, which validate recognises
    scale = min(1.0, 10 ** (-1 / 20) / max(np.max(np.abs(part)) for part in (guitar, repeat, validation)))
    parts = {"markers": markers, "sweeps": sweeps, "noise": noise, "playing": guitar * scale,
             "repeat": repeat * scale, "repeat_again": repeat * scale, "validation": validation * scale}
    sections = reamp_signal_layout(sample_rate)
    assert all(len(part) == sections[name][1] - sections[name][0] for name, part in parts.items())
    return ReampSignal(np.concatenate(list(parts.values())).astype(np.float32), sample_rate, sections)


# --- recognising a capture made with it --------------------------------------------------------------

RECOGNISE_CORRELATION = 0.9  # normalised correlation of the markers and sweeps with the DI
MAX_TRIM_SECONDS = LEAD_IN_SECONDS - 0.05  # the DAW may trim up to this much of the lead-in ...
MAX_PAD_SECONDS = 1.0  # ... or add this much silence before it


@dataclass(frozen=True)
class Located:
    """Where ampsim's signal starts in a DI (negative: its opening was trimmed), at what gain, and its
    sections and blips moved to the DI's time."""

    offset: int
    gain: float
    sections: dict[str, tuple[int, int]]
    blips: np.ndarray


def locate_signal(dry: np.ndarray, sample_rate: int) -> Located | None:
    """Where ampsim's signal lies in `dry`, or None when `dry` is not a capture made with it."""
    template = np.concatenate([marker_section(sample_rate), sweep_section(sample_rate)])
    trim, pad = int(MAX_TRIM_SECONDS * sample_rate), int(MAX_PAD_SECONDS * sample_rate)
    head = np.asarray(dry[: len(template) + pad], dtype=np.float64)
    if len(head) < len(template) - trim:
        return None
    # correlation at every offset in [-trim, pad] by one FFT (the template's opening is silence)
    size = 1 << int(len(head) + len(template)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(head, size) * np.conj(np.fft.rfft(template, size)), size)
    offsets = np.arange(-trim, pad + 1)
    offset = int(offsets[np.argmax(correlation[offsets])])
    start = max(0, offset)
    overlap = template[start - offset : start - offset + len(head) - start]
    part = head[start : start + len(overlap)]
    norm = np.sqrt(np.sum(overlap**2) * np.sum(part**2))
    if norm == 0 or np.dot(overlap, part) / norm < RECOGNISE_CORRELATION:
        return None
    layout = reamp_signal_layout(sample_rate)
    shifted = {name: (a + offset, b + offset) for name, (a, b) in layout.items()}
    blips = blip_positions(sample_rate) + offset
    return Located(offset, float(np.dot(overlap, part) / np.sum(overlap**2)), shifted, blips[blips >= 0])


def reamp_signal_layout(sample_rate: int) -> dict[str, tuple[int, int]]:
    """The sections' places at `sample_rate`, without synthesising the playing (same lengths as
    `reamp_signal`: each section's length follows from the rate alone)."""
    lengths = {
        "markers": int(MARKER_SECONDS * sample_rate),
        "sweeps": len(SWEEP_LEVELS_DB) * (int(SWEEP_SECONDS * sample_rate) + int(GAP_SECONDS * sample_rate)),
        "noise": len(NOISE_LEVELS_DB) * (int(NOISE_BURST_SECONDS * sample_rate) + int(GAP_SECONDS * sample_rate)),
        "playing": 4 * int(PLAYING_SECONDS / 4 * sample_rate),
        "repeat": int(REPEAT_SECONDS * sample_rate),
        "repeat_again": int(REPEAT_SECONDS * sample_rate),
        "validation": int(VALIDATION_SECONDS * sample_rate),
    }
    sections, pos = {}, 0
    for name, length in lengths.items():
        sections[name] = (pos, pos + length)
        pos += length
    return sections
