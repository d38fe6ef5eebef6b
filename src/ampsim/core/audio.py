"""Audio files in and out: decode anything libsndfile reads to float32 at full scale, write atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from ampsim.core.errors import CaptureError


_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile's sf_command code (sndfile.h)
# Extensions of the audio files libsndfile reads that people actually save (it tells formats apart by their
# header, so the extension only decides which files in a folder are audio).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".opus", ".w64", ".rf64",
                              ".caf", ".mp3", ".au"})


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # float32, shape (frames, channels), PCM scaled so that full scale is ±1.0
    sample_rate: int
    subtype: str  # e.g. PCM_16, PCM_24, FLOAT
    format: str  # e.g. WAV, FLAC, AIFF

    @property
    def frames(self) -> int:
        return self.samples.shape[0]

    @property
    def channels(self) -> int:
        return self.samples.shape[1]


def read_audio(path: Path) -> Decoded:
    """Decode `path`; PCM is scaled by its full scale (int16 / 32768, int24 / 2**23, ...), floats pass as is."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError("file not found", path=path, fix="add the file (dry DI as input.wav, amp as output.wav)")
    if path.stat().st_size == 0:
        raise CaptureError("file is empty (0 bytes)", path=path, fix="export the recording again from your DAW")
    try:
        info = sf.info(str(path))
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise CaptureError(
            f"not a readable audio file or its header is truncated ({exc})",
            path=path,
            fix="export it again as WAV, FLAC or AIFF (PCM 16/24/32-bit or float)",
        ) from exc
    return Decoded(samples=samples, sample_rate=int(sample_rate), subtype=info.subtype, format=info.format)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file ordinary permissions (mkstemp makes it private) and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` that replaces it only if the block finishes: readers never see a
    half-written file, and a failed or interrupted write leaves the previous file (or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _publish(tmp, path)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write a WAV atomically."""
    samples = np.asarray(samples)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with atomic_file(path) as tmp, sf.SoundFile(tmp, "w", sample_rate, channels, subtype=subtype, format="WAV") as f:
        # Float WAVs get a PEAK chunk stamped with the current time: switch it off so the same audio
        # always gives the same bytes (DVC hashes outputs; a timestamp would re-trigger every stage).
        sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        f.write(samples)


def write_text(path: Path, text: str) -> None:
    """Atomic text write (reports, JSON tables)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces `target` only if the block finishes.

    An interrupted or failed run leaves the previous `target` (or none) in place, never a mix; scratch
    folders left by a killed process are removed on the next run.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(scratch, 0o777 & ~_umask())
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.tmp-old-{os.getpid()}"
        os.replace(target, old)
    os.replace(scratch, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
