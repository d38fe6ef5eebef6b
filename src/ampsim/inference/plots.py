"""Figures for people: the waveform overlay of the 2018 post, spectrograms side by side, the loss curve.
Matplotlib's Agg backend (no display needed); each figure is written as a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402


def waveform_overlay(path: Path, rows: dict[str, tuple[np.ndarray, np.ndarray]], sample_rate: int) -> None:
    """One row per capture (per knob setting): `rows` maps a title to (target, prediction)."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 3.2 * len(rows)), squeeze=False)
    for ax, (title, (target, prediction)) in zip(axes[:, 0], rows.items()):
        t = 1000 * np.arange(len(target)) / sample_rate
        ax.plot(t, target, label="target (amp)", linewidth=1.2)
        ax.plot(t, prediction, label="prediction (model)", linewidth=1.0, alpha=0.8)
        ax.set(xlabel="ms", ylabel="amplitude", title=title)
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectrograms(path: Path, rows: dict[str, dict[str, np.ndarray]], sample_rate: int) -> None:
    """One row per capture (per knob setting), columns input / target / prediction, shared dB scale per row."""
    columns = ("input", "target", "prediction")
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.2 * len(rows)), squeeze=False, sharey=True)
    for r, (name, sides) in enumerate(rows.items()):
        spectra = {}
        for side in columns:
            freqs, times, power = signal.spectrogram(sides[side], fs=sample_rate, nperseg=1024, noverlap=768)
            spectra[side] = 10 * np.log10(power + 1e-12)
        top = max(float(s.max()) for s in spectra.values())
        for c, side in enumerate(columns):
            ax = axes[r, c]
            mesh = ax.pcolormesh(times, freqs / 1000, spectra[side], vmin=top - 100, vmax=top, shading="auto")
            ax.set(title=f"{name}: {side}", xlabel="s", ylabel="kHz" if c == 0 else None)
        fig.colorbar(mesh, ax=axes[r, :].tolist(), label="dB")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def loss_curve(path: Path, steps: np.ndarray, train_loss: np.ndarray, val_loss: np.ndarray, loss_name: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, train_loss, label="train", marker="." if len(steps) < 30 else None)
    ax.plot(steps, val_loss, label="validation (fixed windows)", marker="." if len(steps) < 30 else None)
    ax.set(xlabel="step", ylabel=loss_name, yscale="log", title="loss per step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
