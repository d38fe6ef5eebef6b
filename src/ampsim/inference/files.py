"""Rendering files: a DI file (or a folder of them) through a model chunk by chunk, in constant memory,
written atomically at the source's rate and a subtype the target can hold; and the example WAVs of the
render stage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from ampsim.core.audio import AUDIO_EXTENSIONS, atomic_dir, atomic_file, write_wav
from ampsim.core.errors import AmpsimError, CaptureError
from ampsim.core.params import RenderParams
from ampsim.data.windows import Segment
from ampsim.inference.blocks import BlockRenderer
from ampsim.modelling.card import ModelCard

if TYPE_CHECKING:  # Keras only where a Keras model renders: a release on ONNX Runtime never imports it
    import keras

    from ampsim.inference.engine import ExactRenderer


def render_examples(model: keras.Model, card: ModelCard, segments: list[Segment], params: RenderParams,
                    out_dir: Path) -> dict[str, dict[str, Path]]:
    """For each validation segment, its opening `params.example_seconds` as input/target/prediction WAVs for
    listening. The folder is replaced atomically."""
    from ampsim.inference.engine import render

    frames = int(round(params.example_seconds * card.sample_rate))
    written: dict[str, dict[str, Path]] = {}
    with atomic_dir(out_dir) as scratch:
        for segment in segments:
            x, y = segment.x[:frames], segment.y[:frames]
            sides = {"input": x, "target": y, "prediction": render(model, card, x, params, segment.knobs)}
            written[segment.capture] = {}
            for side, audio in sides.items():
                write_wav(scratch / segment.capture / f"{side}.wav", audio, card.sample_rate)
                written[segment.capture][side] = Path(out_dir) / segment.capture / f"{side}.wav"
    return written


# --- files -------------------------------------------------------------------------------------------

def rechunk(pieces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of arrays of any lengths into arrays of exactly `size` (the last one shorter):
    the exact renderer must only ever see a short chunk at the very end."""
    buffer = np.zeros(0, np.float32)
    for piece in pieces:
        buffer = np.concatenate([buffer, np.asarray(piece, np.float32)])
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if len(buffer):
        yield buffer


@dataclass(frozen=True)
class FileResult:
    source: Path
    target: Path
    seconds: float  # audio rendered
    wall_seconds: float
    sample_rate: int
    subtype: str
    clipped: int  # output samples beyond full scale (clipped in a PCM file)
    peak_dbfs: float

    @property
    def realtime_factor(self) -> float:
        return self.seconds / max(self.wall_seconds, 1e-9)


def _with_last(items: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    iterator = iter(items)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following is None
        current = following


def render_file(render_chunk: BlockRenderer | ExactRenderer, model_rate: int, source: Path,
                target: Path, *, subtype: str | None = None, channel: int | None = None, resample: bool = False,
                force: bool = False, progress: bool = True) -> FileResult:
    """Render `source` into `target` chunk by chunk, so memory does not grow with the file's length: at the
    source's rate and subtype unless told otherwise, exactly as long as the source, written atomically.
    `render_chunk` is a fresh stateful renderer of consecutive chunks (see `renderer`)."""
    source, target, chunk = Path(source), Path(target), render_chunk.chunk
    info = _check_render_io(source, target, channel, force)
    if info.samplerate != model_rate and not resample:
        raise CaptureError(f"the file is at {info.samplerate} Hz but the model was trained at {model_rate} Hz",
                           path=source, fix=f"export the DI at {model_rate} Hz, or pass --resample to convert it "
                                            "(soxr, high quality) and convert the result back")
    file_format, out_subtype = _target_format(target, subtype, info.subtype)
    column = 0 if channel is None else channel - 1
    resample = resample and info.samplerate != model_rate

    started = time.perf_counter()
    clipped, peak, written = 0, 0.0, 0
    full_scale = 1.0 if out_subtype.startswith("PCM") or out_subtype in {"ULAW", "ALAW"} else None
    with sf.SoundFile(str(source)) as reader, atomic_file(target) as scratch, \
            tqdm(total=info.frames, unit="sample", unit_scale=True, disable=not progress, desc=source.name) as bar, \
            _open_writer(scratch, target, info.samplerate, out_subtype, file_format) as writer:
        to_model = soxr.ResampleStream(info.samplerate, model_rate, 1, dtype="float32") if resample else None
        to_file = soxr.ResampleStream(model_rate, info.samplerate, 1, dtype="float32") if resample else None

        def write(samples: np.ndarray) -> None:
            try:
                writer.write(samples)
            except sf.LibsndfileError as exc:
                raise _write_error(exc, target, info.samplerate, out_subtype, file_format) from exc

        def model_rate_pieces() -> Iterator[np.ndarray]:
            for block, last in _with_last(reader.blocks(blocksize=chunk, dtype="float32", always_2d=True)):
                bar.update(len(block))
                piece = block[:, column]
                yield to_model.resample_chunk(piece, last=last) if to_model is not None else piece

        for piece, last in _with_last(rechunk(model_rate_pieces(), chunk)):
            out = render_chunk(piece)
            if to_file is not None:
                out = to_file.resample_chunk(out, last=last)
            out = out[: info.frames - written]  # a resampler may round the length up by a sample
            peak = max(peak, float(np.max(np.abs(out), initial=0.0)))
            if full_scale is not None:
                clipped += int(np.count_nonzero(np.abs(out) > full_scale))
                out = np.clip(out, -full_scale, full_scale)  # libsndfile would wrap around, not clip
            else:
                clipped += int(np.count_nonzero(np.abs(out) > 1.0))
            write(out)
            written += len(out)
        if written < info.frames:  # ... or down by one: pad with silence to the source's length
            write(np.zeros(info.frames - written, np.float32))
    return FileResult(source, target, info.frames / info.samplerate, time.perf_counter() - started,
                      info.samplerate, out_subtype, clipped, float(20 * np.log10(max(peak, 1e-12))))


def _check_render_io(source: Path, target: Path, channel: int | None, force: bool) -> sf._SoundFileInfo:
    if not source.is_file():
        raise CaptureError("input file not found", path=source, fix="check the path")
    if target.resolve() == source.resolve():
        raise AmpsimError("the output would overwrite the input", path=target, fix="choose another output path")
    if target.exists() and not force:
        raise AmpsimError("output file exists", path=target, fix="choose another path, or pass --force to replace it")
    try:
        info = sf.info(str(source))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise CaptureError(f"not a readable audio file ({exc})", path=source,
                           fix="export it again as WAV, FLAC or AIFF") from exc
    if info.frames == 0:
        raise CaptureError("the file has no audio (0 frames)", path=source, fix="export the DI track again")
    if info.channels > 1 and channel is None:
        raise CaptureError(f"the file has {info.channels} channels; a DI track has one", path=source,
                           fix="pass --channel 1 (left) or --channel 2 (right)")
    if channel is not None and not 1 <= channel <= info.channels:
        raise CaptureError(f"there is no channel {channel} (the file has {info.channels})", path=source,
                           fix=f"pass --channel between 1 and {info.channels}")
    return info


# Lossy codecs and the only containers libsndfile writes them in. Its check_format() also accepts MP3 inside
# WAV, which it then refuses to write, so a lossy subtype is carried over only into its own container.
LOSSY_CONTAINERS = {"MPEG_LAYER_I": "MP3", "MPEG_LAYER_II": "MP3", "MPEG_LAYER_III": "MP3", "VORBIS": "OGG",
                    "OPUS": "OGG"}
# What a lossy (or otherwise unwritable) source becomes in a PCM container: a decoded MP3 has no bit depth
# of its own, and 24 bits keep the quantisation noise of the model's output far below anything audible,
# where the containers' 16-bit default would not; every DAW reads it, unlike FLOAT in FLAC (impossible).
FALLBACK_SUBTYPE = "PCM_24"


def _target_format(target: Path, subtype: str | None, source_subtype: str) -> tuple[str, str]:
    """libsndfile format from the target's extension, and a subtype it can hold: the source's where the
    container can hold it, else 24-bit PCM, else (Ogg, MP3) the container's own codec."""
    extension = target.suffix.lstrip(".").upper()
    formats = {**{name: name for name in sf.available_formats()}, "AIF": "AIFF", "OGA": "OGG"}
    if extension not in formats:
        raise AmpsimError(f"cannot write audio with the extension `{target.suffix}`", path=target,
                          fix="name the output .wav, .flac or .aiff")
    file_format = formats[extension]

    def holds(candidate: str) -> bool:
        return sf.check_format(file_format, candidate) and LOSSY_CONTAINERS.get(candidate, file_format) == file_format

    if subtype is not None:
        if not holds(subtype):
            choices = [name for name in sf.available_subtypes(file_format) if holds(name)]
            raise AmpsimError(f"{file_format} files cannot hold subtype {subtype}", path=target,
                              fix=f"choose one of {', '.join(choices)}")
        return file_format, subtype
    for candidate in (source_subtype, FALLBACK_SUBTYPE):
        if holds(candidate):
            return file_format, candidate
    return file_format, sf.default_subtype(file_format)


def _open_writer(scratch: Path, target: Path, sample_rate: int, subtype: str, file_format: str) -> sf.SoundFile:
    try:
        return sf.SoundFile(str(scratch), "w", sample_rate, 1, subtype, format=file_format)
    except sf.LibsndfileError as exc:
        raise _write_error(exc, target, sample_rate, subtype, file_format) from exc


def _write_error(exc: sf.LibsndfileError, target: Path, sample_rate: int, subtype: str,
                 file_format: str) -> AmpsimError:
    """libsndfile's refusal (a rate MP3 or FLAC cannot hold, an encoding the container lacks, a full disk) as
    an error naming the file, not a traceback through the scratch file's name."""
    return AmpsimError(f"cannot write {file_format} {subtype} at {sample_rate} Hz: {exc.error_string}", path=target,
                       fix="write a .wav (PCM_24 or FLOAT holds any rate), or pass another --subtype; "
                           "check there is space on the disk")


def audio_files(folder: Path) -> list[Path]:
    """The audio files directly inside `folder` (hidden files skipped), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


def render_paths(render_chunk: BlockRenderer | ExactRenderer, card: ModelCard, source: Path, target: Path,
                 method: str, *, knobs: dict[str, float] | None = None, subtype: str | None = None,
                 channel: int | None = None, resample: bool = False, force: bool = False, progress: bool = True,
                 report: Callable[[str], None] = print) -> list[FileResult]:
    """Render a file into a file, or every audio file of a folder into a folder of the same names, with the
    stream renderer `render_chunk` (reset for every file; `method` names it in the report). A bad file in a
    folder is reported and skipped; the others are still rendered, then the failures are raised."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise AmpsimError("the input is a folder, so the output must be one too", path=target,
                              fix="give an output folder")
        if target.resolve() == source.resolve():
            raise AmpsimError("the output folder is the input folder", path=target,
                              fix="choose another output folder (inputs are never overwritten)")
        jobs = [(f, target / f.name) for f in audio_files(source)]
        if not jobs:
            raise AmpsimError("no audio files in the folder", path=source, fix="put .wav/.flac/.aiff DI files there")
    else:
        jobs = [(source, target)]
    setting = "".join(f", {name}={value:g}" for name, value in sorted((knobs or {}).items()))
    results, failures = [], []
    for src, dst in jobs:
        render_chunk.reset()
        try:
            result = render_file(render_chunk, card.sample_rate, src, dst, subtype=subtype, channel=channel,
                                 resample=resample, force=force, progress=progress)
        except AmpsimError as exc:
            if not source.is_dir():
                raise
            failures.append(exc.message)
            continue
        results.append(result)
        clipping = ""
        if result.clipped:
            clipping = f"; {result.clipped} samples beyond full scale" + (
                " (clipped)" if result.subtype.startswith("PCM") else " (kept: float file)")
        report(f"{result.target}: {result.seconds:.1f} s at {result.sample_rate} Hz {result.subtype}, {method}{setting}, "
               f"{result.realtime_factor:.1f}x real time, peak {result.peak_dbfs:+.1f} dBFS{clipping}")
    if failures:
        listed = "".join(f"\n- {failure}" for failure in failures)
        raise AmpsimError(f"{len(failures)} of {len(jobs)} files failed (the others were rendered):{listed}\n",
                          path=source, fix="correct those files and render them again")
    return results
