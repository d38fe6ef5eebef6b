"""Capture folders: input.<ext> (dry DI), output.<ext> (through the amp), each in any format libsndfile reads
(input.flac, output.aiff, ...), and an optional capture.yaml describing the device and how to use the pair. A
device folder `data/captures/<device>/` is one capture, or holds one capture folder per knob setting
(`data/captures/<device>/<setting>/`), which train one conditioned model."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ampsim.core.audio import AUDIO_EXTENSIONS
from ampsim.core.errors import CaptureError
from ampsim.core.knobs import check_set, check_value

# The names of the two sides in a capture folder, before the extension: input.wav, input.flac, ...
INPUT_STEM, OUTPUT_STEM = "input", "output"
# The sides once normalised (data/normalized, data/prepared): always float32 WAV under these names.
INPUT_FILE = f"{INPUT_STEM}.wav"
OUTPUT_FILE = f"{OUTPUT_STEM}.wav"
META_FILE = "capture.yaml"
SPLITS = ("time", "train", "val")  # time: split by time within the capture; train/val: the whole capture

MAX_NAME_LENGTH = 100  # file systems allow 255 bytes a folder name; stage outputs add suffixes to it
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_META_KEYS = {"device", "notes", "split", "channels", "knobs", "input_level_dbu", "output_level_dbu",
              "latency_samples"}
# The interface's calibration: the analog level, in dBu, of a full-scale (0 dBFS) sample on each side.
LEVEL_KEYS = ("input_level_dbu", "output_level_dbu")


def check_capture_name(name: str, where: Path | str | None = None) -> str:
    """A capture name becomes a folder name in every stage's output, so it must stay inside that folder."""
    if len(name) > MAX_NAME_LENGTH:
        raise CaptureError(f"name '{name[:40]}...' is {len(name)} characters long; a name becomes a folder and "
                           f"a registered model's name, so it may have at most {MAX_NAME_LENGTH}", path=where,
                           fix="choose a shorter name, e.g. 'marshall-jcm800_crunch'")
    if not _NAME.match(name) or ".." in name:
        raise CaptureError(
            f"capture name {name!r} is not allowed (it must not contain '..', '/' or spaces, nor start with '.')",
            path=where,
            fix="rename it using letters, digits, '.', '_' and '-' only, e.g. 'marshall-jcm800_crunch'",
        )
    return name


@dataclass(frozen=True)
class Capture:
    name: str
    folder: Path
    device: str = ""
    notes: str = ""
    split: str = "time"
    channels: dict[str, int] = field(default_factory=dict)  # which channel to take from a multi-channel file
    knobs: dict[str, float] = field(default_factory=dict)
    input_level_dbu: float | None = None  # dBu of 0 dBFS on the DI / re-amp side (None: not stated)
    output_level_dbu: float | None = None  # dBu of 0 dBFS on the recording input of the amp's side
    latency_samples: int | None = None  # the rig's latency, stated (None: validate measures it)

    @property
    def input_path(self) -> Path:
        return side_file(self.folder, INPUT_STEM)

    @property
    def output_path(self) -> Path:
        return side_file(self.folder, OUTPUT_STEM)

    @property
    def meta_path(self) -> Path:
        return self.folder / META_FILE


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.exists():
        return {"split": "time", "channels": {}, "knobs": {}, **dict.fromkeys(LEVEL_KEYS), "latency_samples": None}
    try:
        meta = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CaptureError(f"not valid YAML ({exc})", path=path, fix="correct the YAML syntax") from exc
    if not isinstance(meta, dict):
        raise CaptureError("must be a YAML mapping", path=path, fix="write `key: value` lines, e.g. `device: DS-1`")
    unknown = sorted(set(meta) - _META_KEYS)
    if unknown:
        raise CaptureError(
            f"unknown key(s) {unknown}", path=path, fix=f"use only {sorted(_META_KEYS)} (check the spelling)"
        )
    split = meta.get("split", "time")
    if split not in SPLITS:
        raise CaptureError(f"split {split!r} is not one of {list(SPLITS)}", path=path, fix="use split: time, train or val")
    channels = meta.get("channels") or {}
    if not isinstance(channels, dict) or not set(channels) <= {"input", "output"} or not all(
        isinstance(v, int) and v >= 0 for v in channels.values()
    ):
        raise CaptureError(
            f"channels {channels!r} is not a mapping of input/output to a channel index",
            path=path,
            fix="write e.g. `channels: {input: 0, output: 1}` (0 = left, 1 = right)",
        )
    knobs = meta.get("knobs") or {}
    if not isinstance(knobs, dict):
        raise CaptureError("knobs must be a mapping of knob name to 0-1 value", path=path, fix="e.g. `knobs: {gain: 0.6}`")
    knobs = {str(name): check_value(str(name), value, path) for name, value in knobs.items()}
    return {**meta, "split": split, "channels": channels, "knobs": knobs, **_levels(meta, path),
            "latency_samples": check_latency(meta.get("latency_samples"), path)}


def check_latency(value: Any, where: Path | str) -> int | None:
    """A stated latency: whole samples at the capture's rate (validate checks it against the search range)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CaptureError(f"latency_samples is {value!r}, not a whole number of samples", path=where,
                           fix="write the rig's latency in samples at the capture's rate, e.g. `latency_samples: 39` "
                               "(a loop-back cable through the interface measures it), or leave it out to have it "
                               "measured")
    return value


def _levels(meta: dict[str, Any], path: Path) -> dict[str, float | None]:
    levels = {}
    for key in LEVEL_KEYS:
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise CaptureError(f"{key} is {value!r}, not a level in dBu", path=path,
                               fix=f"write the analog level of a full-scale sample, e.g. `{key}: 12.2` (your "
                                   "interface's manual lists it as its maximum level in dBu), or leave it out")
        levels[key] = None if value is None else float(value)
    return levels


def side_file(folder: Path, stem: str) -> Path:
    """The one `<stem>.<ext>` audio file of a capture folder, whatever its format."""
    folder = Path(folder)
    found = sorted(p for p in folder.glob(f"{stem}.*")
                   if p.stem == stem and p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not found:
        role = "dry DI recording" if stem == INPUT_STEM else "recording through the amp"
        accepted = ", ".join(f"{stem}{ext}" for ext in sorted(AUDIO_EXTENSIONS))
        raise CaptureError(
            f"capture {folder.name!r} has no {stem} file (accepted names: {accepted})",
            path=folder / f"{stem}.wav",
            fix=f"add the {role} as {stem}.wav, {stem}.flac or {stem}.aiff (both sides are required)",
        )
    if len(found) > 1:
        raise CaptureError(
            f"capture {folder.name!r} has {len(found)} {stem} files: {' and '.join(p.name for p in found)}",
            path=folder,
            fix=f"keep one {stem} file per capture folder (move the others out; a second take is another capture)",
        )
    return found[0]


def load_capture(folder: Path) -> Capture:
    folder = Path(folder)
    name = check_capture_name(folder.name, folder)
    for stem in (INPUT_STEM, OUTPUT_STEM):
        side_file(folder, stem)
    meta = _read_meta(folder)
    return Capture(
        name=name,
        folder=folder,
        device=str(meta.get("device", "")),
        notes=str(meta.get("notes", "")),
        split=meta["split"],
        channels=dict(meta["channels"]),
        knobs={str(k): v for k, v in meta["knobs"].items()},
        input_level_dbu=meta["input_level_dbu"],
        output_level_dbu=meta["output_level_dbu"],
        latency_samples=meta["latency_samples"],
    )


def read_levels(folder: Path) -> dict[str, float | None]:
    """The interface calibration a capture folder's capture.yaml states (None where it states none)."""
    meta = _read_meta(Path(folder))
    return {key: meta[key] for key in LEVEL_KEYS}


def holds_capture(folder: Path) -> bool:
    """Whether `folder` is itself a capture (its input or output file is directly inside it)."""
    return any(p.is_file() and p.stem in ("input", "output") for p in Path(folder).iterdir())


def find_captures(device: Path) -> list[Capture]:
    """The captures of one device folder, sorted by name: the folder itself when it holds a capture, else
    each of its sub-folders (one per knob setting). Hidden entries and loose files are ignored."""
    root = Path(device)
    if not root.is_dir():
        raise CaptureError("device folder not found", path=root,
                           fix="add captures with `ampsim add FOLDER --device NAME` (or create data/captures/NAME/)")
    if holds_capture(root):
        return [load_capture(root)]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise CaptureError(
            "no captures found in the device folder",
            path=root,
            fix="put input.wav and output.wav in it (one capture), or one folder per knob setting holding "
                "them and a capture.yaml with its knobs (`ampsim add` does either)",
        )
    captures = [load_capture(folder) for folder in folders]
    # The captures of one device are trained together: they must all name the same knobs.
    check_set({c.name: c.knobs for c in captures}, {c.name: c.meta_path for c in captures})
    return captures
