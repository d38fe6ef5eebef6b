"""Taking a trained model to the real-time plugins guitarists use.

- `.nam` (Neural Amp Modeler), architecture "LSTM": per layer the row-major 4H x (I+H) matrix [W_ih | W_hh]
  in gate order i, f, g, o, the summed bias (4H), the initial hidden and cell state (H each); then the
  head's weight (H) and bias (1). The initial state is where the model settles on silence, so the plugin
  starts quiet. NAM has no input skip and no knobs. Architecture "WaveNet" (`wavenet`): its layer arrays'
  config and NAM's flat weight order. Each architecture writes its own payload (its `nam`).
  File version 0.5.4: the released NAM plugin (v0.7.13) loads 0.5.x only, NAM's core since then 0.5.0-0.7.0,
  and NAM's Python loader does not check; 0.5.4 is the newest version that all of them accept.
- Baking a knob setting: a conditioned model's knobs are constant input channels, so their share of the first
  layer's gates, knobs @ W_knobs, is a constant that folds exactly into that layer's bias. The result is a
  plain one-input LSTM that plays the model at that setting; `--grid N` bakes a pack of settings.
- AIDA-X (RTNeural's Keras JSON): `in_shape` [null, null, I], `in_skip`, then the architecture's layers
  (`aidax_layers`: an `lstm` and a `dense` layer). The plugin loads one LSTM layer of a few sizes only, with one or two knob channels after the audio, which stay
  live knobs. `in_gain` / `out_gain` (dB, applied by the plugin before and after the model) calibrate the model
  to an interface at `export.aidax_interface_level_dbu`, as NAM's plugin does with its calibration level.
- `keras`: the Keras file itself (any backend loads it) with the model card beside it.
- A model with a cab IR (`ampsim.modelling.cab_ir`) exports the network as above and the IR beside it, a mono
  WAV for the plugin's own IR slot, which plays it after the model: `NAME.nam-ir.wav`, `NAME.aidax-ir.wav`
  (`cab-ir.wav` in a pack). The `keras` format keeps it in the card.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ampsim import __version__
from ampsim.core.audio import atomic_dir, write_text, write_wav
from ampsim.core.errors import AmpsimError
from ampsim.core.knobs import knob_vector, level_gain
from ampsim.core.params import ExportParams
from ampsim.deployment.plugin_metadata import (GAIN_SCALES, CaptureFacts, date_now, gain_index, loudness_db, rms,
                                               size_label, training_block, user_fields)
from ampsim.inference.engine import exact_renderer, settled_state
from ampsim.modelling import cab_ir
from ampsim.modelling.architectures import architecture
from ampsim.modelling.models import CARD_FILE, MODEL_FILE, ModelCard, save_model

FORMATS = ("nam", "aidax", "keras")
NAM_FILE_VERSION = "0.5.4"
AIDAX_MAX_KNOBS = 2  # AIDA-X models take input sizes 1 (audio), 2 or 3 (audio and one or two knobs)
EXTENSIONS = {"nam": ".nam", "aidax": ".json", "keras": ".keras"}


@dataclasses.dataclass(frozen=True)
class LoudnessProbe:
    """How to measure NAM's loudness and gain: its reference input, rendered with or without XLA."""

    reference: np.ndarray
    jit_compile: bool


def bake(model: keras.Model, card: ModelCard, knobs: dict[str, float]) -> tuple[keras.Model, ModelCard]:
    """The model at one setting of its knobs as a plain one-input model (unchanged for a model without
    knobs). Exact: the knob channels are constant, so their share of the first layer's gates is a constant
    that moves into its bias; the level its knob-level table sets there moves into its output."""
    vector = knob_vector(card.knobs, knobs, f"the model ({', '.join(card.captures)})")
    if not card.knobs:
        return model, card
    gain = level_gain(card.knob_levels, card.knobs, vector)
    return (architecture(card.architecture).bake_knobs(model, vector, gain),
            dataclasses.replace(card, input_size=1, knobs=[], knob_levels=None))


def setting_of(card: ModelCard, knobs: dict[str, float]) -> dict[str, float]:
    """A knob setting in the model's knob order (checked: every knob given, none unknown, each 0-1)."""
    vector = knob_vector(card.knobs, knobs, f"the model ({', '.join(card.captures)})")
    return {name: round(float(value), 6) for name, value in zip(card.knobs, vector)}


def setting_text(setting: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in setting.items())


def loudness_and_gain(model: keras.Model, state: list[np.ndarray], probe: LoudnessProbe | None) -> dict[str, Any]:
    """NAM's `loudness` and `gain` of the model as the plugin plays it (from `state`); None without a probe."""
    if probe is None:
        return {"loudness": None, "gain": None}
    renderer = exact_renderer(model, len(probe.reference), probe.jit_compile, initial_state=state)
    levels = []
    for scale in GAIN_SCALES:  # each scale from the same initial state, as NAM renders them
        renderer.reset()
        levels.append(rms(renderer(scale * probe.reference)))
    return {"loudness": loudness_db(levels[-1]), "gain": gain_index(np.array(levels))}


def nam_metadata(card: ModelCard, user: dict[str, Any], facts: CaptureFacts | None, setting: dict[str, float],
                 sound: dict[str, Any], size: str) -> dict[str, Any]:
    name = user.get("name") or card.device or "-".join(card.captures)
    levels = facts.levels if facts is not None else {"input_level_dbu": None, "output_level_dbu": None}
    return {
        "date": date_now(),
        "name": f"{name} ({setting_text(setting)})" if setting else name,
        **user_fields(user),
        **sound,
        **levels,
        "training": training_block(card, facts),
        # ampsim's own fields for the sharing sites, in a block of their own so that no future NAM key collides
        "ampsim": {"size": size, "knobs": setting,
                   "captures": card.captures},
    }


def _refuse_unbaked_knobs(card: ModelCard) -> None:
    example = " ".join(f"--knob {name}=0.5" for name in card.knobs) or "--knob NAME=0.5"
    knobs = ", ".join(card.knobs) or f"{card.input_size - 1} extra input(s)"
    raise AmpsimError(f"this model is conditioned on knobs ({knobs}); .nam files have no knobs",
                      fix=f"bake a setting into the file ({example}), or a pack of settings (--grid N), or export "
                          "it with --format aidax (one or two live knobs)")


def to_nam(model: keras.Model, card: ModelCard, metadata: dict[str, Any], settle_seconds: float, *,
           knobs: dict[str, float] | None = None, facts: CaptureFacts | None = None,
           probe: LoudnessProbe | None = None) -> dict[str, Any]:
    """The .nam document of a model, at the knob setting `knobs` for a conditioned one; its architecture
    writes its own `architecture`, `config` and weights (refusing what NAM cannot express)."""
    if card.input_size != 1 + len(card.knobs) or (card.knobs and not knobs):
        _refuse_unbaked_knobs(card)
    setting = setting_of(card, knobs or {})
    model, card = bake(model, card, setting)
    state = settled_state(model, settle_seconds, card.sample_rate)  # [h_1, c_1, ...] each (1, H); [] if stateless
    payload = architecture(card.architecture).nam(model, state)
    weights = np.concatenate(payload.weights).astype(np.float64)
    return {
        "version": NAM_FILE_VERSION,
        "architecture": payload.architecture,
        "config": payload.config,
        "weights": weights.tolist(),
        "sample_rate": card.sample_rate,
        "metadata": nam_metadata(card, metadata, facts, setting, loudness_and_gain(model, state, probe), payload.size),
    }


def aidax_gains(facts: CaptureFacts | None, interface_level_dbu: float | None) -> dict[str, float]:
    """AIDA-X's `in_gain` / `out_gain` (dB) for a player whose interface has 0 dBFS = `interface_level_dbu`,
    as NAM's plugin calibrates: input by (interface - model input level), output by (model output level -
    interface). Only the sides whose level the captures state."""
    if facts is None or interface_level_dbu is None:
        return {}
    gains = {}
    if facts.levels["input_level_dbu"] is not None:
        gains["in_gain"] = interface_level_dbu - facts.levels["input_level_dbu"]
    if facts.levels["output_level_dbu"] is not None:
        gains["out_gain"] = facts.levels["output_level_dbu"] - interface_level_dbu
    return gains


def to_aidax(model: keras.Model, card: ModelCard, *, metadata: dict[str, Any] | None = None,
             facts: CaptureFacts | None = None, interface_level_dbu: float | None = None) -> dict[str, Any]:
    """The AIDA-X (RTNeural) document of a one-layer streaming model; its knobs stay live in the plugin."""
    kind = architecture(card.architecture)
    if "aidax" not in kind.FORMATS:
        raise AmpsimError(f"AIDA-X loads one LSTM layer and a dense head; this model is {kind.DESCRIPTION}",
                          fix=f"export it as {' or '.join(f for f in kind.FORMATS if f != 'aidax')}")
    if card.input_size > 1 + AIDAX_MAX_KNOBS:
        raise AmpsimError(f"AIDA-X takes at most {AIDAX_MAX_KNOBS} knobs beside the audio; this model has "
                          f"{card.input_size - 1} ({', '.join(card.knobs)})",
                          fix="train on captures that set one or two knobs")
    if card.knob_levels:
        raise AmpsimError(f"this model sets its level between recorded settings of {card.knob_levels['knob']} "
                          "(train.knob_levels: interpolated); AIDA-X feeds its knobs to the LSTM alone and cannot "
                          "apply it", fix="export it as .nam with a setting baked in (--format nam --knob "
                                          "NAME=VALUE, or --grid N), or retrain with train.knob_levels: learnt")
    layers = kind.aidax_layers(model)
    units = layers[0]["shape"][-1]
    user = metadata or {}
    return {
        "in_shape": [None, None, card.input_size],
        "in_skip": int(kind.has_input_skip(model)),
        **aidax_gains(facts, interface_level_dbu),
        "layers": layers,
        # `samplerate` is the key AIDA-X reads; the rest is what a tone-sharing site asks for
        "metadata": {"samplerate": card.sample_rate, "name": user.get("name") or card.device or "-".join(card.captures),
                     **user_fields(user), "architecture": "LSTM", "size": size_label(1, units),
                     "validation_esr": card.validation_esr},
        # the plugin feeds its parameter knobs after the audio, in this order
        "ampsim": {"version": __version__, "sample_rate": card.sample_rate, "captures": card.captures,
                   "validation_esr": card.validation_esr, "knobs": card.knobs},
    }


# The plugins turn an IR down as they load it: NAM's by 18 dB and by 48 kHz over the rate it runs at
# (AudioDSPTools' ImpulseResponse), AIDA-X by 12 dB after its convolver. The file is that much louder, as 32-bit
# float (past full scale where it must be), so that the plugin plays the network and the IR as ampsim does.
PLUGIN_IR_GAIN_DB = {"nam": 18.0, "aidax": 12.0}


def plugin_ir(ir: np.ndarray, plugin: str, sample_rate: int) -> np.ndarray:
    """The IR as the plugin's IR slot must load it to play it at the level ampsim does."""
    gain = 10 ** (PLUGIN_IR_GAIN_DB[plugin] / 20) * (sample_rate / 48000 if plugin == "nam" else 1.0)
    return (np.asarray(ir, np.float64) * gain).astype(np.float32)


def ir_path(out: Path, file_format: str) -> Path:
    """Where the IR of the `file_format` export `out` goes: NAME.nam-ir.wav beside NAME.nam."""
    return Path(out).with_name(f"{Path(out).stem}.{file_format}-ir.wav")


def write_plugin_ir(card: ModelCard, plugin: str, path: Path) -> dict[str, Any] | None:
    """Write the model's cab IR for `plugin` at `path`; what the exported file says of it (None: no IR)."""
    ir = cab_ir.decode(card.cab_ir)
    if ir is None:
        return None
    write_wav(path, plugin_ir(ir, plugin, card.sample_rate), card.sample_rate, "FLOAT")
    return {"file": Path(path).name, "taps": len(ir),
            "note": "load it in the plugin's IR slot: the model was trained and scored with it"}


def _check_extension(out: Path, file_format: str) -> None:
    if out.suffix != EXTENSIONS[file_format]:
        raise AmpsimError(f"a {file_format} export is a `{EXTENSIONS[file_format]}` file", path=out,
                          fix=f"name the output *{EXTENSIONS[file_format]}")


def export(model: keras.Model, card: ModelCard, file_format: str, out: Path, params: ExportParams, *,
           metadata: dict[str, Any], knobs: dict[str, float], facts: CaptureFacts | None,
           probe: LoudnessProbe | None) -> Path:
    """Write `model` as `file_format` to `out` atomically (a .nam at the knob setting `knobs`); return the
    path written."""
    out = Path(out)
    if file_format not in FORMATS:
        raise AmpsimError(f"unknown export format `{file_format}`", fix=f"use one of {', '.join(FORMATS)}")
    _check_extension(out, file_format)
    allowed = architecture(card.architecture).FORMATS
    if file_format not in allowed:
        raise AmpsimError(f"a `{card.architecture}` model does not export to {file_format}",
                          fix=f"use --format {' or --format '.join(allowed)}")
    if knobs and file_format != "nam":
        raise AmpsimError(f"--knob bakes a setting into a .nam file; {file_format} keeps the model's knobs",
                          fix="drop --knob (AIDA-X turns the knobs live in the plugin), or use --format nam")
    if file_format == "nam":
        document = to_nam(model, card, metadata, params.settle_seconds, knobs=knobs, facts=facts, probe=probe)
        if ir := write_plugin_ir(card, "nam", ir_path(out, "nam")):  # the IR first: no model without its IR
            document["metadata"]["ampsim"]["cab_ir"] = ir
        write_text(out, json.dumps(document) + "\n")
    elif file_format == "aidax":
        document = to_aidax(model, card, metadata=metadata, facts=facts,
                            interface_level_dbu=params.aidax_interface_level_dbu)
        if ir := write_plugin_ir(card, "aidax", ir_path(out, "aidax")):
            document["ampsim"]["cab_ir"] = ir
        write_text(out, json.dumps(document) + "\n")
    else:
        folder = out.parent / f".{out.name}.export"
        save_model(model, card, folder)
        shutil.move(str(folder / CARD_FILE), out.with_suffix(".card.json"))
        shutil.move(str(folder / MODEL_FILE), out)
        shutil.rmtree(folder, ignore_errors=True)
    return out


# --- a pack of baked settings ---------------------------------------------------------------------------

PACK_README = "README.md"
PACK_IR = "cab-ir.wav"


def grid_settings(card: ModelCard, fixed: dict[str, float], points: int) -> list[dict[str, float]]:
    """`points` evenly spaced values (0 to 1) of every knob not in `fixed`, all combinations."""
    if not card.knobs:
        raise AmpsimError("this model has no knobs, so there is no setting to grid",
                          fix="drop --grid: export it as one .nam file")
    free = [name for name in card.knobs if name not in fixed]
    if not free:
        raise AmpsimError(f"--knob already sets every knob ({', '.join(card.knobs)}); nothing is left to grid",
                          fix="drop --grid for one file, or drop the --knob of the knob to grid")
    if points < 2:
        raise AmpsimError(f"--grid {points} gives no range of settings", fix="use --grid 2 or more (e.g. --grid 5)")
    values = np.round(np.linspace(0.0, 1.0, points), 6)
    return [{**fixed, **dict(zip(free, map(float, combo)))} for combo in itertools.product(values, repeat=len(free))]


def _pack_file(base: str, setting: dict[str, float]) -> str:
    stem = "_".join([base, *(f"{name}-{value:.2f}" for name, value in setting.items())])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem) + ".nam"


def _pack_readme(title: str, knobs: list[str], rows: list[tuple[str, dict[str, float], dict]], has_ir: bool) -> str:
    show = lambda value, form: "n/a" if value is None else format(value, form)  # noqa: E731
    lines = [f"# {title}: {len(rows)} knob settings for NAM", "",
             "NAM files have no knobs: each file here is the model with one setting baked in. Loudness and gain "
             "are NAM's (dB RMS and 0-1 compression on NAM's reference input); n/a where export.loudness_input "
             "was not set.", "",
             "| file | " + " | ".join(knobs) + " | loudness (dB) | NAM gain (0-1) |",
             "|---|" + "---|" * len(knobs) + "---|---|"]
    for file, setting, meta in rows:
        lines.append(f"| {file} | " + " | ".join(f"{setting[k]:g}" for k in knobs)
                     + f" | {show(meta['loudness'], '.1f')} | {show(meta['gain'], '.2f')} |")
    if has_ir:
        lines += ["", f"Load {PACK_IR} in NAM's IR slot with any of them: the model was trained and scored with it."]
    return "\n".join(lines) + "\n"


def export_pack(model: keras.Model, card: ModelCard, out: Path, params: ExportParams, *, metadata: dict[str, Any],
                knobs: dict[str, float], points: int, facts: CaptureFacts | None,
                probe: LoudnessProbe | None) -> Path:
    """A folder of .nam files, one per setting of `grid_settings`, and a README table of the settings and
    their loudness; written atomically into the new folder `out`."""
    out = Path(out)
    if out.suffix == ".nam" or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise AmpsimError("a pack is written into a new folder", path=out,
                          fix="name a folder that does not exist yet (or is empty), e.g. -o packs/my-amp")
    settings = grid_settings(card, knobs, points)  # each setting is checked against the model's knobs on baking
    base = metadata.get("name") or card.device or "-".join(card.captures)
    rows = []
    with atomic_dir(out) as scratch:
        ir = write_plugin_ir(card, "nam", scratch / PACK_IR)  # one IR for every setting: the knobs are the network's
        for setting in settings:
            document = to_nam(model, card, metadata, params.settle_seconds, knobs=setting, facts=facts, probe=probe)
            if ir:
                document["metadata"]["ampsim"]["cab_ir"] = ir
            file = _pack_file(base, setting_of(card, setting))
            write_text(scratch / file, json.dumps(document) + "\n")
            rows.append((file, document["metadata"]["ampsim"]["knobs"], document["metadata"]))
        (scratch / PACK_README).write_text(_pack_readme(base, card.knobs, rows, ir is not None))
    return out
