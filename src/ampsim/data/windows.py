"""Windows cut from prepared audio: random training crops (or rows that play on through it), fixed validation
windows, tiled windows.

Several captures are pooled end to end; a window never crosses from one capture into the next. Everything
is index arithmetic on whole arrays (no per-sample Python). For a knob-conditioned set, every window carries
its capture's knob values as constant channels after the audio (see `ampsim.core.knobs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ampsim.core.audio import read_audio
from ampsim.core.errors import AmpsimError
from ampsim.core.knobs import knob_names
from ampsim.data.captures import INPUT_FILE, OUTPUT_FILE

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Segment:
    capture: str
    x: np.ndarray  # dry, float32 (frames,)
    y: np.ndarray  # wet, float32 (frames,)
    knobs: dict[str, float] = field(default_factory=dict)  # the capture's knob settings (0-1)
    held_out: bool = False  # a whole capture kept for validation (`split: val`): a setting never trained on
    latency_samples: int | None = None  # the latency validate compensated (negative: the DI was shifted ahead)


@dataclass(frozen=True)
class Pool:
    """Captures laid end to end, with where each starts, so windows can be drawn from all of them at once."""

    x: np.ndarray
    y: np.ndarray
    offsets: np.ndarray  # start of each capture in x / y
    lengths: np.ndarray
    knobs: np.ndarray  # (captures, K): each capture's knob values in `knob_names` order; K = 0 unconditioned

    @classmethod
    def of(cls, segments: list[Segment], names: list[str] | None = None) -> Pool:
        """`names`: the knob channels, in order (default: every knob the segments name, sorted)."""
        names = knob_names(s.knobs for s in segments) if names is None else names
        lengths = np.array([len(s.x) for s in segments], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        knobs = np.array([[s.knobs[name] for name in names] for s in segments], np.float32).reshape(len(segments), len(names))
        return cls(np.concatenate([s.x for s in segments]), np.concatenate([s.y for s in segments]),
                   offsets, lengths, knobs)


def samples(ms: float, sample_rate: int) -> int:
    """A duration in milliseconds as a whole number of samples (window sizes scale with the rate)."""
    return int(round(ms * sample_rate / 1000))


def read_manifest(prepared: Path) -> dict:
    path = Path(prepared) / MANIFEST_FILE
    if not path.is_file():
        raise AmpsimError("prepared data not found", path=path, fix="run `dvc repro validate` first")
    return json.loads(path.read_text())


def load_split(prepared: Path, split: str) -> list[Segment]:
    """The prepared train or val audio of every capture, in manifest order."""
    prepared = Path(prepared)
    segments = []
    for entry in read_manifest(prepared)["segments"]:
        if entry["split"] != split:
            continue
        folder = prepared / entry["folder"]
        x, y = (read_audio(folder / name).samples[:, 0] for name in (INPUT_FILE, OUTPUT_FILE))
        segments.append(Segment(entry["capture"], x, y, dict(entry.get("knobs") or {}),
                                bool(entry.get("held_out", False)), entry.get("delay_samples")))
    if not segments:
        raise AmpsimError(f"no {split} audio in the prepared data", path=prepared / MANIFEST_FILE,
                          fix="check the captures' `split:` settings and run `dvc repro validate`")
    return segments


def _gather(pool: Pool, which: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows as model input (count, length, 1 + K) and target (count, length, 1)."""
    index = starts[:, None] + np.arange(length)[None, :]
    x = pool.x[index][..., None]
    if pool.knobs.shape[1]:
        constant = np.broadcast_to(pool.knobs[which][:, None, :], (len(which), length, pool.knobs.shape[1]))
        x = np.concatenate([x, constant], axis=-1)
    return x, pool.y[index][..., None]


def _require_length(pool: Pool, length: int, what: str) -> np.ndarray:
    usable = pool.lengths >= length
    if not usable.any():
        raise AmpsimError(f"every capture is shorter than one {what} ({length} samples)",
                          fix="record longer captures or shorten the window in params.yaml")
    return usable


def _random_starts(pool: Pool, rng: np.random.Generator, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (capture, start) of windows of `length` samples, each capture drawn in proportion to its
    usable length."""
    usable = _require_length(pool, length, "training window")
    room = np.where(usable, pool.lengths - length + 1, 0)
    which = rng.choice(len(room), size=count, p=room / room.sum())
    return which, pool.offsets[which] + rng.integers(0, room[which])


def random_windows(pool: Pool, rng: np.random.Generator, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random windows of `length` samples, each capture drawn in proportion to its usable length.
    Returns x shaped (count, length, 1 + K) and y (count, length, 1)."""
    which, starts = _random_starts(pool, rng, count, length)
    return _gather(pool, which, starts, length)


@dataclass
class StreamRows:
    """Rows that each play on through the training audio, one window a batch: row i's next window starts where
    its last one ended, so that a model carrying its state from batch to batch hears long stretches of a
    capture as one stream, as a plugin does. A row whose capture has no room left for the next window starts
    again at a random place (drawn as `random_windows` draws), and `next` says so: its state starts anew."""

    which: np.ndarray  # (rows,) the capture each row plays
    positions: np.ndarray  # (rows,) where its next window starts in the pool; -1: nowhere yet

    @classmethod
    def fresh(cls, rows: int) -> StreamRows:
        return cls(np.zeros(rows, np.int64), np.full(rows, -1, np.int64))

    @classmethod
    def of_state(cls, saved: dict[str, list[int]]) -> StreamRows:
        return cls(np.asarray(saved["which"], np.int64), np.asarray(saved["positions"], np.int64))

    def state(self) -> dict[str, list[int]]:
        return {"which": self.which.tolist(), "positions": self.positions.tolist()}

    def next(self, pool: Pool, rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's next `length` samples: x (rows, length, 1 + K), y (rows, length, 1), and which rows
        started again (bool (rows,): their state must be zeroed)."""
        ends = pool.offsets[self.which] + pool.lengths[self.which]
        restarted = (self.positions < 0) | (self.positions + length > ends)
        if restarted.any():
            self.which[restarted], self.positions[restarted] = _random_starts(pool, rng, int(restarted.sum()), length)
        x, y = _gather(pool, self.which, self.positions, length)
        self.positions = self.positions + length
        return x, y, restarted


def fixed_windows(pool: Pool, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` windows spread evenly over all captures: the same set every call, so losses compare."""
    usable = _require_length(pool, length, "validation window")
    room = np.where(usable, pool.lengths - length + 1, 0)
    edges = np.cumsum(room)
    positions = np.linspace(0, edges[-1] - 1, count).round().astype(np.int64)
    which = np.searchsorted(edges, positions, side="right")
    starts = pool.offsets[which] + positions - (edges[which] - room[which])
    return _gather(pool, which, starts, length)


def tiled_windows(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """The 2018 sliding window: windows of `window` samples every `hop`, zero-padded so that the last `hop`
    samples of window k are input samples [k*hop, (k+1)*hop) and the tails cover the whole input.
    Returns (ceil(len(x) / hop), window)."""
    count = -(-len(x) // hop)
    padded = np.concatenate([np.zeros(window - hop, x.dtype), x, np.zeros(count * hop - len(x), x.dtype)])
    return np.lib.stride_tricks.sliding_window_view(padded, window)[::hop]
