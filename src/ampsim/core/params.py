"""Typed access to params.yaml, the single source of every knob.

Each stage reads its own section into a dataclass without defaults, so a knob missing from params.yaml
is an error that names the key, never a silent fallback to a value hidden in code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ampsim.core.errors import AmpsimError

T = TypeVar("T")


@dataclass(frozen=True)
class NormalizeParams:
    mode: str  # "fullscale" keeps the recorded level; "peak" applies one gain per side
    peak_target: float
    clip_level: float  # a sample at or above this magnitude counts as clipped


@dataclass(frozen=True)
class ValidateParams:
    max_delay_ms: float
    max_length_mismatch_ms: float
    min_seconds: float
    min_rms_dbfs: float
    max_output_clipped_fraction: float
    val_fraction: float
    align_seconds: float  # the latency is measured on this opening stretch of each capture
    latency_threshold: float  # the response's onset: its first tap at this fraction of the peak tap
    latency_margin_samples: int  # subtracted from the onset, so the compensation never exceeds the true latency
    latency_max_lead_samples: int  # an onset this far ahead of the DI is the estimate's ringing; beyond: an error
    latency_min_clarity: float  # the response's peak over the estimate's noise below which no onset is found
    latency_disagree_samples: int  # warn when onset and correlation peak, or a device's captures, differ more
    # a linear response that rings this long or longer is a cabinet's: the manifest says `cabinet` (the median over
    # the captures decides), and train lays train.cabinet_recipe over its defaults
    cabinet_ringing_ms: float
    replicate_max_esr: float  # the two wet takes of a passage the DI plays twice may differ by this self-ESR
    replicate_min_seconds: float  # shortest passage that counts as played twice
    replicate_match_esr: float  # ... when the two dry takes match this closely, block by block
    replicate_block_ms: float  # block length of that comparison


@dataclass(frozen=True)
class DemoParams:
    sample_rate: int
    seconds: float
    seed: int
    gain: float
    latency_ms: float
    set_gains: list[float]
    held_out_gain: float | None


@dataclass(frozen=True)
class TrainParams:
    architecture: str  # "lstm" (streaming), "lstm2018" (the 2018 model) or "wavenet" (NAM's WaveNet)
    backend: str  # the Keras backend training computes with: jax | tensorflow | torch
    random_seed: int  # weights and crops; a resumed run continues the same random stream
    max_steps: int
    max_minutes: float  # training-time budget summed over resumed runs; 0 means no limit
    init_from: str | None  # fine-tune: the source `ampsim init-from` fetched into the device's .start (None: random)
    latch_fallbacks: int  # earlier best steps kept in case the best latches as one stream (0: no check)
    cab_ir_taps: list[int]  # lengths of the cab IR fitted after the network, chosen on validation ([]: none)
    cab_ir_ridge: float  # the IR fit's ridge, times the network output's energy
    cabinet_recipe: dict[str, Any]  # laid over the defaults for a device whose captures ring like a cabinet ({}: none)
    knob_levels: str  # one knob's set: "interpolated" (its level between recorded settings on a line in dB) | "learnt"
    knob_level_step: float  # the table's spacing in knob positions (0-1)
    knob_level_seconds: float  # of the captures' DI the model plays at each position to measure its level


@dataclass(frozen=True)
class FitParams:
    """The optimiser and the loss of the streaming LSTM and the WaveNet (the 2018 model keeps its own)."""

    learning_rate: float  # Adam's, at the start
    final_learning_rate: float  # cosine decay to this over the training (its time budget, else max_steps)
    patience: int  # steps without a better validation loss before stopping
    plateau_steps: int  # steps without a better validation loss before going back to the best weights; 0 = never
    diverged_ratio: float  # a step's validation loss over this times the best: back to the best weights; 0 = never
    collapsed_loss: float  # ... or over this, once the best is under a quarter of it (a network gone silent); 0 = never
    back_to_best_factor: float  # either way, the learning rate is multiplied by this from then on
    adam_beta_2: float  # Adam's second-moment decay, in (0, 1)
    weight_decay: float  # AdamW's decoupled weight decay (0: Adam); never on biases nor on the knob drive and bends
    loss: str  # "esr_dc" (ESR after pre-emphasis + DC term) or "mse"
    pre_emphasis: float  # first-order pre-emphasis coefficient of the ESR; 0 = plain ESR
    dc_weight: float
    mrstft_weight: float  # + this x a multi-resolution STFT distance (0 = off); needs updates >= 2048 samples
    through_ir_taps: int  # train through a least-squares IR of this many taps, refitted every step; 0 = off
    through_ir_seconds: float  # of training audio the network plays for that refit
    through_ir_network_weight: float  # + this x the loss of the network alone (keeps DC and sub-bass out of it)
    through_ir_alone_steps: int  # the network trains alone (the IR the identity) this many steps; the IR fitted after


@dataclass(frozen=True)
class Lstm2018Params:
    units: int
    window_ms: float  # crop length (110 ms = 5280 samples at 48 kHz)
    tail_ms: float  # the loss sees only the last tail_ms of each crop (10 ms = 480 samples)
    batch_size: int
    batches_per_step: int
    learning_rate: float
    patience: int  # steps without a better validation loss before stopping
    val_windows: int  # fixed validation windows, the same every step and every run


@dataclass(frozen=True)
class LstmParams:
    hidden_size: int
    num_layers: int
    input_skip: bool  # y = x + f(x); .nam export needs it off
    knob_drive: bool  # a model with knobs: they also scale the audio into it (a gain in dB linear in each knob)
    knob_bends: bool  # ... and each knob bends (a learnt slope) at its interior recorded settings
    segment_samples: int  # training segment length, warm-up included
    warmup_samples: int  # first samples of each segment that only settle the state (no update, no loss)
    tbptt_samples: int  # an update every this many samples of a segment, the state carried across updates
    carry_state: bool | str  # each batch row plays on through the audio, its state carried from batch to batch;
    # "auto": so for a single capture, not for a knob set (its unseen setting interpolated worse so)
    batch_size: int  # segments side by side
    batches_per_step: int  # segment batches between validations
    val_segments: int


@dataclass(frozen=True)
class WavenetParams:
    layers: list[dict[str, Any]] | str  # layer arrays (channels, head_size, kernel_size, dilations, head_bias each), or a NAM preset name
    activation: str  # NAM's name: Tanh | ReLU | Sigmoid | Hardtanh
    gated: bool  # activation(first half) x sigmoid(second half) of a conv twice as wide (no .nam export)
    head_scale: float  # the output is head_scale x the last head rechannel
    output_samples: int  # scored samples per training window, after receptive field - 1 of lead-in
    batch_size: int
    batches_per_step: int
    val_windows: int  # fixed validation windows (evenly spaced over the validation audio)


@dataclass(frozen=True)
class EvaluateParams:
    overlay_ms: float  # length of the waveform overlay plot
    spectrogram_seconds: float  # validation audio shown in the spectrograms
    max_tail_windows: int  # cap on the fixed window set of the 2018 metric (evenly spaced)
    pre_emphasis: float  # coefficient of the pre-emphasised ESR metric


@dataclass(frozen=True)
class RenderParams:
    example_seconds: float  # per capture, from the start of its validation audio
    passage_seconds: float  # the listening page's ESR and level per passage of this length
    method: str  # fast | exact | sliding-window (lstm2018 only)
    runtime: str  # onnx: a release's `fast` rendering on ONNX Runtime (no Keras import) | keras
    runtime_tolerance_esr: float  # the register stage refuses an ONNX graph further than this from Keras
    block_ms: float  # fast mode: length of each block rendered side by side (at least ...)
    blocks_per_context: int  # ... this many times the model's warm-up, which each block renders first
    blocks_per_batch: int  # fast mode: blocks per predict call
    workers: int  # fast mode: threads the batch is split over (XLA runs each recurrent loop on one core)
    exact_chunk_samples: int  # exact mode: samples per predict call (the state carries across calls)
    jit_compile: bool  # compile rendering with XLA (TensorFlow on CPU: much faster for recurrent loops)
    context_tolerance_esr: float  # fast-mode warm-up: the shortest whose ESR against exact is below this
    context_probe_seconds: float  # ... measured on this much of each capture's validation audio
    max_context_ms: float  # longest warm-up tried


@dataclass(frozen=True)
class PrefectParams:
    gpu_slots: int  # training runs at once (the `gpu` concurrency limit)
    dask_address: str | None  # the render flow's Dask scheduler; None: a local cluster
    dask_workers: int  # local cluster: worker processes


@dataclass(frozen=True)
class ExportParams:
    settle_seconds: float  # .nam initial state: where the model settles after this much silence
    loudness_input: str | None  # NAM's reference input for loudness/gain (its loudness_input.wav); None: unstated
    jit_compile: bool  # render the loudness reference with XLA
    aidax_interface_level_dbu: float  # AIDA-X in_gain/out_gain calibrate the model to an interface at this level
    metadata: dict[str, Any]  # .nam metadata: name, modeled_by, gear_type, gear_make, gear_model, tone_type


@dataclass(frozen=True)
class RaceParams:
    minutes: float  # training minutes each candidate gets
    candidates: dict[str, dict[str, Any]]  # name -> settings of train / an architecture section, as in `recipes`


@dataclass(frozen=True)
class MlflowParams:
    experiment: str
    render_alias: str  # the alias users render with (`models:/NAME@render`)


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AmpsimError("params file not found", path=path, fix="run from the project root or pass --params")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise AmpsimError("params file is not a YAML mapping", path=path, fix="restore params.yaml from git")
    return params


RECIPE_SECTIONS = ("train", "fit", "lstm2018", "lstm", "wavenet")  # what `recipes.<device>` may set


def device_params(params: dict[str, Any], device: str | None, source: Path | str = "params.yaml",
                  cabinet: bool = False) -> dict[str, Any]:
    """`params` with the device's entry of `recipes:` laid over the training sections it names, key by key:
    the settings that device trains with (and of `recipes`, its entry only, as a run records it). `cabinet`
    (validate found that the device's captures ring like a cabinet): `train.cabinet_recipe` goes beneath the
    device's entry, which still has the last word. No device, or no entry: the shared defaults."""
    merged = {key: value for key, value in params.items() if key != "recipes"}
    if cabinet:
        merged = lay_recipe(merged, (params.get("train") or {}).get("cabinet_recipe") or {}, "train.cabinet_recipe",
                            source)
        merged["cabinet"] = True
    recipe = (params.get("recipes") or {}).get(device) if device is not None else None
    if not recipe:
        return merged
    merged = lay_recipe(merged, recipe, f"recipes.{device}", source)
    merged["recipes"] = {device: recipe}
    return merged


def lay_recipe(params: dict[str, Any], recipe: Any, where: str, source: Path | str) -> dict[str, Any]:
    """`params` with `recipe`'s settings laid over the training sections it names, key by key."""
    if not isinstance(recipe, dict):
        raise AmpsimError(f"`{where}` is not a mapping", path=source,
                          fix="write e.g. `{train: {architecture: wavenet}}`, or `{}`")
    merged = dict(params)
    for name, overrides in recipe.items():
        if name not in RECIPE_SECTIONS:
            raise AmpsimError(f"`{where}.{name}`: a recipe sets only {', '.join(RECIPE_SECTIONS)}",
                              path=source, fix=f"move `{name}` out of `{where}`")
        base = params.get(name)
        if not isinstance(overrides, dict) or not isinstance(base, dict):
            raise AmpsimError(f"`{where}.{name}` is not a mapping of `{name}:` keys", path=source,
                              fix=f"write e.g. `{name}: {{{next(iter(base or {'key': 0}))}: ...}}`")
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise AmpsimError(f"`{where}.{name}` sets unknown " + ", ".join(f"`{key}`" for key in unknown),
                              path=source, fix=f"use the keys of the `{name}:` section: {sorted(base)}")
        merged[name] = {**base, **overrides}
    return merged


def section(params: dict[str, Any], name: str, cls: type[T], source: Path | str = "params.yaml") -> T:
    """Build the dataclass `cls` from `params[name]`, naming any missing or unknown key."""
    values = params.get(name)
    if not isinstance(values, dict):
        raise AmpsimError(f"section `{name}` is missing", path=source, fix=f"add a `{name}:` section")
    expected = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(expected - values.keys())
    unknown = sorted(values.keys() - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"`{name}.{k}`" for k in missing))
        if unknown:
            parts.append("unknown " + ", ".join(f"`{name}.{k}`" for k in unknown))
        raise AmpsimError("; ".join(parts), path=source, fix=f"make `{name}:` list exactly {sorted(expected)}")
    return cls(**values)
