"""The demo capture: a synthetic DI performance through a documented virtual amp.

Nothing here is a recording. The dry side imitates the standard capture signals: exponential sine sweeps at
rising levels, noise bursts at rising levels, then plucked-string notes and strummed chords at guitar DI
levels. The wet side is that signal through a small virtual amp:

1. drive: 6 dB + 30 dB x `gain` (the amp's gain knob, 0-1) of input gain;
2. pre-clip voicing: 2nd-order high-pass at 120 Hz and low-pass at 6 kHz (a mid-focused preamp);
3. asymmetric soft clipping: tanh(v + 0.3) - tanh(0.3), which adds even harmonics like a biased tube stage;
4. tone stack: -6 dB mid scoop at 500 Hz (Q 0.7) and +3 dB high shelf from 3 kHz;
5. power stage: a gentler symmetric tanh;
6. cabinet: 2nd-order high-pass at 90 Hz, +4 dB resonance at 110 Hz, 4th-order low-pass at 4.5 kHz;
7. a fixed master volume (0.4, peaks stay below full scale) and `latency_ms` of pure delay, like an interface round trip.

Everything is a vectorised numpy/scipy filter, and the signal is seeded, so a given params.yaml always
produces the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

if TYPE_CHECKING:
    from ampsim.core.params import DemoParams

SWEEP_FRACTION = 0.15
NOISE_FRACTION = 0.15


def exp_sweep(seconds: float, sample_rate: int, f_start: float, f_end: float) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rate = np.log(f_end / f_start)
    phase = 2 * np.pi * f_start * seconds / rate * (np.exp(t / seconds * rate) - 1)
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
    return np.sin(phase) * fade


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.max(np.abs(noise))


def pluck(f0: float, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A plucked string as decaying, slightly inharmonic partials; high partials die away first."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    harmonic = np.arange(1, int(min(10_000.0, sample_rate / 2.5) // f0) + 1)
    inharmonicity = 1e-4
    freqs = f0 * harmonic * np.sqrt(1 + inharmonicity * harmonic**2)
    pluck_position = rng.uniform(0.12, 0.3)
    amps = np.abs(np.sin(np.pi * harmonic * pluck_position)) / harmonic
    decay_s = rng.uniform(0.8, 2.0) / (1 + freqs / 1500.0)
    phases = rng.uniform(0, 2 * np.pi, len(harmonic))
    partials = amps * np.exp(-t[:, None] / decay_s) * np.sin(2 * np.pi * freqs * t[:, None] + phases)
    attack = np.minimum(1.0, t / 0.002)
    note = partials.sum(axis=1) * attack
    return note / np.max(np.abs(note))


def synth_di(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A deterministic dry guitar-like signal, float32 in ±1 with DI-like peaks (-30 to -3 dBFS)."""
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    out = np.zeros(total)

    sweep_len = SWEEP_FRACTION * seconds / 3
    pos = 0
    for level_db in (-30.0, -18.0, -6.0):
        sweep = exp_sweep(sweep_len, sample_rate, 30.0, 12_000.0) * 10 ** (level_db / 20)
        out[pos : pos + len(sweep)] = sweep
        pos += len(sweep)

    burst_len = int(0.25 * sample_rate)
    levels = np.linspace(-40.0, -6.0, max(1, int(NOISE_FRACTION * seconds / 0.5)))
    for level_db in levels:
        burst = pink_noise(burst_len, rng) * 10 ** (level_db / 20) * np.hanning(burst_len)
        out[pos : pos + burst_len] = burst
        pos += 2 * burst_len

    # E2..E5 on a guitar: MIDI 40..76
    while pos < total - sample_rate // 4:
        duration = rng.uniform(0.3, 1.5)
        level = 10 ** (rng.uniform(-30.0, -3.0) / 20)
        if rng.random() < 0.4:  # chord: root, fifth, octave (and a third), strummed down
            root = rng.integers(40, 58)
            notes = [root, root + 7, root + 12] + ([root + 16] if rng.random() < 0.5 else [])
            strum_gap = rng.uniform(0.008, 0.03)
        else:
            notes = [rng.integers(40, 77)]
            strum_gap = 0.0
        for i, midi in enumerate(notes):
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            start = pos + int(i * strum_gap * sample_rate)
            note = pluck(f0, duration, sample_rate, rng)[: max(0, total - start)]
            out[start : start + len(note)] += note * level / len(notes) ** 0.5
        pos += int(duration * sample_rate)

    peak = np.max(np.abs(out))
    if peak > 0.7:
        out *= 0.7 / peak
    return out.astype(np.float32)


def _peaking(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """RBJ cookbook peaking biquad as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    return np.array([[*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]]])


def _high_shelf(freq: float, gain_db: float, sample_rate: int) -> np.ndarray:
    """RBJ cookbook high shelf (slope 1) as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / 2 * np.sqrt(2)
    cos = np.cos(w0)
    b = [a * ((a + 1) + (a - 1) * cos + 2 * np.sqrt(a) * alpha), -2 * a * ((a - 1) + (a + 1) * cos),
         a * ((a + 1) + (a - 1) * cos - 2 * np.sqrt(a) * alpha)]
    den = [(a + 1) - (a - 1) * cos + 2 * np.sqrt(a) * alpha, 2 * ((a - 1) - (a + 1) * cos),
           (a + 1) - (a - 1) * cos - 2 * np.sqrt(a) * alpha]
    return np.array([[*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]]])


def virtual_amp(di: np.ndarray, sample_rate: int, gain: float, latency_ms: float) -> np.ndarray:
    """The documented virtual amp of this module's docstring; `gain` is the 0-1 gain knob."""
    if not 0.0 <= gain <= 1.0:
        raise ValueError(f"gain knob must be within 0-1, got {gain}")
    x = di.astype(np.float64) * 10 ** ((6.0 + 30.0 * gain) / 20)
    voicing = np.vstack([
        signal.butter(2, 120.0, "highpass", fs=sample_rate, output="sos"),
        signal.butter(2, 6000.0, "lowpass", fs=sample_rate, output="sos"),
    ])
    x = signal.sosfilt(voicing, x)
    bias = 0.3
    x = np.tanh(x + bias) - np.tanh(bias)
    tone = np.vstack([_peaking(500.0, -6.0, 0.7, sample_rate), _high_shelf(3000.0, 3.0, sample_rate)])
    x = signal.sosfilt(tone, x)
    x = np.tanh(1.5 * x) / np.tanh(1.5)
    cabinet = np.vstack([
        signal.butter(2, 90.0, "highpass", fs=sample_rate, output="sos"),
        _peaking(110.0, 4.0, 1.4, sample_rate),
        signal.butter(4, 4500.0, "lowpass", fs=sample_rate, output="sos"),
    ])
    x = signal.sosfilt(cabinet, x) * 0.4
    latency = int(round(latency_ms * sample_rate / 1000))
    return np.concatenate([np.zeros(latency), x[: len(x) - latency]]).astype(np.float32)


def demo_set_name(gain: float) -> str:
    """The capture folder of one setting of the parametric demo device."""
    return f"gain-{gain:g}"


def write_demo_capture(out: Path, gain: float, split: str, force: bool, demo: DemoParams) -> str:
    """Write the demo capture at `gain` into `out` (input.wav, output.wav as 16-bit PCM and a capture.yaml
    naming the knob and the split); return what was written, for the user."""
    from ampsim.core.audio import write_wav
    from ampsim.core.errors import AmpsimError
    from ampsim.data.captures import INPUT_FILE, META_FILE, OUTPUT_FILE, check_capture_name

    out = Path(out)
    check_capture_name(out.name, out)
    if out.exists() and any(out.iterdir()) and not force:
        raise AmpsimError("folder exists and is not empty", path=out,
                          fix="choose another --out, or pass --force to regenerate the demo there")
    sample_rate = demo.sample_rate
    di = synth_di(demo.seconds, sample_rate, demo.seed)
    wet = virtual_amp(di, sample_rate, gain, demo.latency_ms)
    write_wav(out / INPUT_FILE, di, sample_rate, subtype="PCM_16")
    write_wav(out / OUTPUT_FILE, wet, sample_rate, subtype="PCM_16")
    held_out = ", held out whole for validation (a setting the model never trains on)" if split == "val" else ""
    meta = (f"device: ampsim virtual amp (synthetic, see `ampsim demo-capture --help`)\n"
            f"notes: synthetic DI (seed {demo.seed}) through the virtual amp at gain {gain:g}{held_out}; not a recording\n"
            f"split: {split}\n"
            f"knobs: {{gain: {gain:g}}}\n")
    (out / META_FILE).write_text(meta)
    return (f"wrote {out / INPUT_FILE} and {out / OUTPUT_FILE} ({demo.seconds:g} s at {sample_rate} Hz, "
            f"gain {gain:g}, split {split})")
