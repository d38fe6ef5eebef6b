"""Running a trained model over audio. Every method returns exactly as many samples as it is given.

- `exact`: one continuous stream from a zero state, the recurrent state carried from chunk to chunk, so a
  file of any length is rendered in constant memory. The reference the other methods are measured against.
- `fast`: the audio cut into blocks that are rendered side by side as one batch (a recurrent net on a CPU is
  bound by its per-timestep overhead, so many short sequences beat one long one). Each block is preceded by
  `context` samples of the audio before it, whose output is thrown away: the state has settled by the time
  the block starts. The context is measured for each model after training (`measure_context`).
- `sliding-window` (`lstm2018` only): the 2018 method: 110 ms windows every 10 ms, each from a zero state,
  keeping the last 10 ms. It is `fast` with block = 10 ms and context = 100 ms. The original lost samples at
  both ends; here the input is zero-padded so the output always has the input's length.

A knob-conditioned model renders at one setting of its knobs per stream: the renderers take the audio alone
and add the knob channels themselves, so files, chunks and warm-up history stay plain mono audio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from ampsim import metrics
from ampsim.architectures import architecture
from ampsim.audio import atomic_dir, atomic_file, write_wav
from ampsim.errors import AmpsimError, CaptureError
from ampsim.knobs import knob_vector, with_knobs
from ampsim.models import ModelCard, streaming_twin
from ampsim.params import RenderParams
from ampsim.windows import Segment, samples

METHODS = ("fast", "exact", "sliding-window")
WINDOWS_PER_BATCH = 256  # sliding window: 256 x 5280 x 4 bytes = 5.4 MB of input per predict batch


@dataclass(frozen=True)
class BlockPlan:
    """How `fast` (and `sliding-window`) cut the audio: up to `blocks` blocks of `block` samples per batch,
    each after `context` samples of warm-up."""

    block: int
    context: int
    blocks: int
    # The first block of a stream starts from the zero state, as `exact` does, instead of after `context`
    # samples of silence (a model's state on silence is not zero). `sliding-window` keeps 2018's padding.
    exact_start: bool = True

    @property
    def chunk(self) -> int:
        return self.block * self.blocks


def _compiled(model: keras.Model, jit_compile: bool) -> keras.Model:
    """A view of `model` (same layers and weights, the caller's model left uncompiled) whose predict
    function XLA compiles when asked: on a CPU, XLA turns the recurrent loop into native code (measured
    30-50x faster for one stream; training is another matter)."""
    view = keras.Model(model.inputs, model.outputs, name=f"{model.name}_render")
    view.compile(jit_compile=jit_compile)
    return view


class BlockRenderer:
    """Renders consecutive chunks of one stream by blocks with warm-up; remembers the last `context` input
    samples so that a block at a chunk boundary gets the same warm-up as any other."""

    def __init__(self, model: keras.Model, plan: BlockPlan, jit_compile: bool, workers: int = 1,
                 knobs: np.ndarray | None = None):
        self.model, self.plan = _compiled(model, jit_compile), plan
        self.knobs = np.zeros(0, np.float32) if knobs is None else np.asarray(knobs, np.float32)
        # XLA runs one recurrent loop on one core: a batch split over `workers` threads uses the others.
        # Only on TensorFlow: the JAX backend's predict donates the model's state buffers, so two threads
        # cannot predict with one model at once.
        threads = workers if keras.backend.backend() == "tensorflow" else 1
        self.workers = max(1, min(threads, plan.blocks))
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the compiled function is kept)."""
        self.history = np.zeros(self.plan.context, np.float32)
        self.at_start = self.plan.exact_start

    @property
    def chunk(self) -> int:
        """Samples per call that fill exactly one batch."""
        return self.plan.chunk

    def __call__(self, x: np.ndarray) -> np.ndarray:
        plan = self.plan
        x = np.asarray(x, np.float32)
        out = np.empty(len(x), np.float32)
        for start in range(0, len(x), plan.chunk):
            part = x[start : start + plan.chunk]
            count = -(-len(part) // plan.block)
            # Batches of `blocks` rows, or a power of two for a short last one: few shapes, few compilations.
            rows = min(plan.blocks, 1 << (count - 1).bit_length())
            padded = np.zeros(plan.context + rows * plan.block, np.float32)
            padded[: plan.context] = self.history
            padded[plan.context : plan.context + len(part)] = part
            batch = np.lib.stride_tricks.sliding_window_view(padded, plan.context + plan.block)[:: plan.block][:rows]
            batch = batch.copy()
            if self.at_start:  # the opening block first, then silence: its output starts from the zero state
                batch[0] = np.roll(batch[0], -plan.context)
                batch[0, plan.block :] = 0.0
            predicted = self._predict(batch)[:count]
            tails = predicted[:, plan.context :]
            if self.at_start:
                tails[0] = predicted[0, : plan.block]
                self.at_start = False
            out[start : start + len(part)] = tails.reshape(-1)[: len(part)]
            self.history = padded[len(part) : len(part) + plan.context].copy()
        return out


    def _predict(self, batch: np.ndarray) -> np.ndarray:
        if self.workers == 1 or len(batch) < self.workers:
            return np.asarray(self.model.predict_on_batch(with_knobs(batch, self.knobs)))[..., 0]
        from concurrent.futures import ThreadPoolExecutor

        parts = np.array_split(batch, self.workers)
        with ThreadPoolExecutor(self.workers) as pool:
            outputs = list(pool.map(lambda part: np.asarray(self.model.predict_on_batch(with_knobs(part, self.knobs))),
                                    parts))
        return np.concatenate(outputs)[..., 0]


class ExactRenderer:
    """Renders consecutive chunks of one stream through the streaming twin, carrying every layer's (h, c)."""

    def __init__(self, model: keras.Model, chunk: int, jit_compile: bool,
                 initial_state: list[np.ndarray] | None = None, knobs: np.ndarray | None = None):
        self.twin = _compiled(streaming_twin(model), jit_compile)
        self.chunk = chunk
        self.knobs = np.zeros(0, np.float32) if knobs is None else np.asarray(knobs, np.float32)
        self.initial_state = initial_state or [np.zeros((1, int(t.shape[-1])), np.float32)
                                               for t in self.twin.inputs[1:]]
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the compiled function is kept)."""
        self.state = list(self.initial_state)
        self.finished = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.finished:
            raise RuntimeError("a chunk shorter than `chunk` ends the stream; feed whole chunks until the last")
        x = np.asarray(x, np.float32)
        out = np.empty(len(x), np.float32)
        for start in range(0, len(x), self.chunk):
            part = x[start : start + self.chunk]
            padded = np.zeros(self.chunk, np.float32)
            padded[: len(part)] = part
            audio, *state = self.twin.predict_on_batch([with_knobs(padded[None], self.knobs), *self.state])
            out[start : start + len(part)] = np.asarray(audio)[0, : len(part), 0]
            if len(part) < self.chunk:  # padding ran past the stream's end: nothing may follow this chunk
                self.finished = True
            self.state = [np.asarray(s) for s in state]
        return out


def settled_state(model: keras.Model, seconds: float, sample_rate: int) -> list[np.ndarray]:
    """Every layer's (h, c) after `seconds` of silence: where a plugin's stream starts (no start-up thump)."""
    twin = streaming_twin(model)
    zeros = [np.zeros((1, int(t.shape[-1])), np.float32) for t in twin.inputs[1:]]
    silence = np.zeros((1, max(int(seconds * sample_rate), 1), 1), np.float32)
    _, *state = twin.predict_on_batch([silence, *zeros])
    return [np.asarray(s) for s in state]


def sliding_window_plan(window: int, hop: int) -> BlockPlan:
    return BlockPlan(hop, window - hop, WINDOWS_PER_BATCH, exact_start=False)


def render_sliding_window(model: keras.Model, x: np.ndarray, window: int, hop: int, jit_compile: bool) -> np.ndarray:
    """The 2018 method with its length bugs fixed: len(output) == len(x)."""
    return BlockRenderer(model, sliding_window_plan(window, hop), jit_compile)(x)


def render_exact(model: keras.Model, x: np.ndarray, chunk: int, jit_compile: bool,
                 knobs: np.ndarray | None = None) -> np.ndarray:
    return ExactRenderer(model, chunk, jit_compile, knobs=knobs)(x)


def render_fast(model: keras.Model, x: np.ndarray, plan: BlockPlan, jit_compile: bool, workers: int = 1,
                knobs: np.ndarray | None = None) -> np.ndarray:
    return BlockRenderer(model, plan, jit_compile, workers, knobs)(x)


def fast_plan(card: ModelCard, params: RenderParams) -> BlockPlan:
    """The block plan for `fast` mode: the model's measured context, and blocks long enough that rendering
    each block's warm-up adds at most 1 / render.blocks_per_context to the work (a model that needs 2 s of
    warm-up renders 8 s blocks, not 0.5 s ones that would cost 5x the audio)."""
    if card.context_samples is None:
        raise AmpsimError("this model has no measured warm-up context for fast rendering",
                          fix="retrain it with this version of ampsim, or render with --method exact")
    block = max(samples(params.block_ms, card.sample_rate), card.context_samples * params.blocks_per_context)
    return BlockPlan(block=block, context=card.context_samples, blocks=params.blocks_per_batch)


def renderer(model: keras.Model, card: ModelCard, method: str, params: RenderParams,
             knobs: dict[str, float] | None = None) -> BlockRenderer | ExactRenderer:
    """A stateful renderer of consecutive chunks of one stream with `method`, at the knob settings `knobs`
    (required for a knob-conditioned model, refused for any other)."""
    if method not in METHODS:
        raise AmpsimError(f"unknown render method `{method}`", fix=f"use one of {', '.join(METHODS)}")
    allowed = architecture(card.architecture).RENDER_METHODS
    if method not in allowed:
        raise AmpsimError(f"a `{card.architecture}` model does not render with `{method}`"
                          + (": the sliding window is the 2018 model's method" if method == "sliding-window" else ""),
                          fix=f"use --method {' or --method '.join(allowed)}")
    vector = knob_vector(card.knobs, knobs, f"the model ({', '.join(card.captures)})")
    if method == "exact":
        return ExactRenderer(model, params.exact_chunk_samples, params.jit_compile, knobs=vector)
    if method == "fast":
        if card.context_samples is None and card.context_esr is not None:
            # measured, and no warm-up up to render.max_context_ms made blocks match one stream
            return ExactRenderer(model, params.exact_chunk_samples, params.jit_compile, knobs=vector)
        return BlockRenderer(model, fast_plan(card, params), params.jit_compile, params.workers, vector)
    return BlockRenderer(model, sliding_window_plan(card.window_samples, card.tail_samples), params.jit_compile,
                         params.workers)


def render(model: keras.Model, card: ModelCard, x: np.ndarray, params: RenderParams,
           knobs: dict[str, float] | None = None) -> np.ndarray:
    """How evaluation renders: by the architecture's own method (the 2018 model by its sliding window, the
    streaming model exactly), at the knob settings `knobs`."""
    return renderer(model, card, architecture(card.architecture).EVALUATION_METHOD, params, knobs)(x)


def context_candidates(minimum: int, maximum: int) -> list[int]:
    """Doubling warm-up lengths from `minimum` up to `maximum` (both included)."""
    candidates = []
    length = max(minimum, 1)
    while length < maximum:
        candidates.append(length)
        length *= 2
    return candidates + [maximum]


def measure_context(model: keras.Model, x: np.ndarray, candidates: Iterable[int], block: int,
                    params: RenderParams, knobs: np.ndarray | None = None) -> tuple[int | None, float]:
    """The warm-up for `fast` mode: twice the shortest with which fast matches exact on `x` within
    `params.context_tolerance_esr` (ESR between the two; the factor 2 is margin for audio unlike `x`), and
    the ESR measured with it. (None, ESR of the longest candidate) when none matches: the model's state
    does not forget its start within `max_context_ms`, and `fast` falls back to `exact`."""
    candidates = list(candidates)
    reference = render_exact(model, x, params.exact_chunk_samples, params.jit_compile, knobs)

    def error(context: int) -> float:
        plan = BlockPlan(max(block, context), context, params.blocks_per_batch)
        return metrics.esr(reference, render_fast(model, x, plan, params.jit_compile, params.workers, knobs))

    for context in candidates:
        if error(context) <= params.context_tolerance_esr:
            margin = min(2 * context, candidates[-1])
            return margin, error(margin)
    return None, error(candidates[-1])


def render_examples(model: keras.Model, card: ModelCard, segments: list[Segment], params: RenderParams,
                    out_dir: Path) -> dict[str, dict[str, Path]]:
    """For each validation segment, its opening `params.example_seconds` as input/target/prediction WAVs for
    listening. The folder is replaced atomically."""
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
            sf.SoundFile(str(scratch), "w", info.samplerate, 1, out_subtype, format=file_format) as writer:
        to_model = soxr.ResampleStream(info.samplerate, model_rate, 1, dtype="float32") if resample else None
        to_file = soxr.ResampleStream(model_rate, info.samplerate, 1, dtype="float32") if resample else None

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
            writer.write(out)
            written += len(out)
        if written < info.frames:  # ... or down by one: pad with silence to the source's length
            writer.write(np.zeros(info.frames - written, np.float32))
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


def _target_format(target: Path, subtype: str | None, source_subtype: str) -> tuple[str, str]:
    """libsndfile format from the target's extension, and a subtype it can hold (the source's by default)."""
    extension = target.suffix.lstrip(".").upper()
    formats = {**{name: name for name in sf.available_formats()}, "AIF": "AIFF", "OGA": "OGG"}
    if extension not in formats:
        raise AmpsimError(f"cannot write audio with the extension `{target.suffix}`", path=target,
                          fix="name the output .wav, .flac or .aiff")
    file_format = formats[extension]
    if subtype is not None:
        if not sf.check_format(file_format, subtype):
            raise AmpsimError(f"{file_format} files cannot hold subtype {subtype}", path=target,
                              fix=f"choose one of {', '.join(sf.available_subtypes(file_format))}")
        return file_format, subtype
    if sf.check_format(file_format, source_subtype):
        return file_format, source_subtype
    return file_format, sf.default_subtype(file_format)


AUDIO_EXTENSIONS = {".wav", ".flac", ".aif", ".aiff", ".ogg", ".oga", ".w64", ".rf64", ".caf", ".mp3"}


def audio_files(folder: Path) -> list[Path]:
    """The audio files directly inside `folder` (hidden files skipped), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


def render_paths(model: keras.Model, card: ModelCard, source: Path, target: Path, method: str,
                 params: RenderParams, *, knobs: dict[str, float] | None = None, subtype: str | None = None,
                 channel: int | None = None, resample: bool = False, force: bool = False, progress: bool = True,
                 report: Callable[[str], None] = print) -> list[FileResult]:
    """Render a file into a file, or every audio file of a folder into a folder of the same names. A bad
    file in a folder is reported and skipped; the others are still rendered, then the failures are raised."""
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
    render_chunk = renderer(model, card, method, params, knobs)  # compiled once, reset for every file
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
