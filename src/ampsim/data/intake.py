"""`ampsim add`: bring a capture into the project the way DVC users expect.

The two files are checked (libsndfile reads them, same rate, about the same length), copied into the
device's folder as input.<ext> / output.<ext> whatever they were called (the originals are never touched),
described in a capture.yaml, put under DVC with `dvc add`, and the device is appended to params.yaml's
`devices`, so the next `dvc repro` trains it (and only it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import yaml

from ampsim.core.errors import AmpsimError, CaptureError
from ampsim.core.knobs import check_value
from ampsim.data.captures import INPUT_STEM, META_FILE, check_capture_name, check_latency, holds_capture, side_file

# Names that say which side a file is, when a folder's files are not called input.* / output.*.
DRY_WORDS = ("input", "di", "dry", "in", "reamp_in", "clean")
WET_WORDS = ("output", "wet", "out", "amp", "processed", "target")
LENGTH_TOLERANCE_SECONDS = 1.0  # a pair recorded together differs by its latency, not by seconds


@dataclass(frozen=True)
class Added:
    device: str
    folder: Path  # where the capture now lives
    input: Path
    output: Path
    dvc_file: Path | None


def _audio_files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and not path.name.startswith("."):
            try:
                sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError):
                continue  # a LICENSE, a README: not audio
            found.append(path)
    return found


def _side(path: Path) -> str | None:
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    dry, wet = bool(words & set(DRY_WORDS)), bool(words & set(WET_WORDS))
    return "input" if dry and not wet else "output" if wet and not dry else None


def pick_pair(sources: list[Path]) -> tuple[Path, Path]:
    """(dry, wet) from a folder (its two audio files, told apart by their names) or from two files given
    in that order."""
    if len(sources) == 2 and all(p.is_file() for p in sources):
        return sources[0], sources[1]
    if len(sources) != 1 or not sources[0].is_dir():
        raise AmpsimError("give a capture folder, or the dry (DI) file and the wet file, in that order",
                          path=", ".join(map(str, sources)),
                          fix="e.g. `ampsim add takes/ds1/ --device ds1` or `ampsim add di.wav amp.wav --device ds1`")
    folder = sources[0]
    audio = _audio_files(folder)
    if len(audio) != 2:
        raise CaptureError(f"the folder holds {len(audio)} audio files ({', '.join(p.name for p in audio) or 'none'}); "
                           "a capture is two: the dry DI and the amp's recording", path=folder,
                           fix="pass the two files instead: `ampsim add DI_FILE WET_FILE --device NAME`")
    sides = {_side(p): p for p in audio}
    if set(sides) != {"input", "output"}:
        raise CaptureError(f"cannot tell which of {audio[0].name} and {audio[1].name} is the dry DI", path=folder,
                           fix="pass them in order: `ampsim add DI_FILE WET_FILE --device NAME`")
    return sides["input"], sides["output"]


def quick_check(dry: Path, wet: Path) -> None:
    """What can be told from the headers, before anything is copied (`validate` checks the rest)."""
    infos = {}
    for path in (dry, wet):
        try:
            infos[path] = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise CaptureError(f"not an audio file libsndfile reads ({exc})", path=path,
                               fix="export it as WAV, FLAC or AIFF") from exc
        if infos[path].frames == 0:
            raise CaptureError("the file holds no audio", path=path, fix="export the recording again")
    a, b = infos[dry], infos[wet]
    if a.samplerate != b.samplerate:
        raise CaptureError(f"the DI is at {a.samplerate} Hz and the amp's recording at {b.samplerate} Hz", path=wet,
                           fix="export both tracks at the rate they were recorded at (any rate: the device trains at it)")
    if abs(a.duration - b.duration) > LENGTH_TOLERANCE_SECONDS:
        raise CaptureError(f"the DI lasts {a.duration:.1f} s and the amp's recording {b.duration:.1f} s: not one "
                           "take recorded twice at once", path=wet,
                           fix="export both tracks from the same start to the same end")


def setting_name(knobs: dict[str, float]) -> str:
    return "-".join(f"{name}-{value:g}" for name, value in sorted(knobs.items()))


def capture_folder(captures: Path, device: str, knobs: dict[str, float], setting: str | None, force: bool) -> Path:
    """Where the capture goes: the device folder itself (one capture), or a folder per knob setting."""
    device_dir = Path(captures) / device
    if not knobs:
        if device_dir.exists() and any(device_dir.iterdir()) and not force:
            raise AmpsimError(f"device '{device}' already has captures", path=device_dir,
                              fix="choose another --device, add this one at a knob setting (--knob NAME=VALUE), "
                                  "or pass --force to replace it")
        return device_dir
    if device_dir.is_dir() and holds_capture(device_dir):
        raise AmpsimError(f"device '{device}' holds one capture without knobs, so it cannot take a knob setting",
                          path=device_dir, fix=f"add it as a new device, or re-add the first capture with its --knob "
                                               f"values after removing {device_dir}")
    folder = device_dir / check_capture_name(setting or setting_name(knobs))
    if folder.exists() and not force:
        raise AmpsimError(f"device '{device}' already has the setting {folder.name}", path=folder,
                          fix="pass --force to replace it, or --setting NAME to add it under another name")
    return folder


def check_device_rate(device_dir: Path, dry: Path, replacing: Path) -> None:
    """A device trains at its captures' own rate, so a new knob setting must share it: refused here, before
    anything is copied (`validate` holds captures put in by hand to the same rule)."""
    if not device_dir.is_dir() or holds_capture(device_dir):
        return
    rate = sf.info(str(dry)).samplerate
    for folder in sorted(p for p in device_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder == replacing or not holds_capture(folder):
            continue
        theirs = side_file(folder, INPUT_STEM)
        their_rate = sf.info(str(theirs)).samplerate
        if their_rate != rate:
            raise CaptureError(f"the DI is at {rate} Hz, but the device's capture {folder.name!r} is at {their_rate} "
                               f"Hz ({theirs}): the captures of one device share one rate", path=dry,
                               fix=f"export this capture at {their_rate} Hz, or add it as a device of its own "
                                   "(another --device)")


def describe(source_meta: dict, device: str, knobs: dict[str, float], dry: Path, wet: Path,
             latency: int | None = None) -> str:
    meta = dict(source_meta)
    meta.setdefault("device", device)
    meta.setdefault("notes", f"added from {dry} and {wet}")
    if knobs:
        meta["knobs"] = {**(meta.get("knobs") or {}), **knobs}
    if latency is not None:
        meta["latency_samples"] = latency
    return yaml.safe_dump(meta, sort_keys=False)


def params_with_device(text: str, device: str, params_file: Path) -> str | None:
    """params.yaml's text with `device` appended to its `devices` list and given an empty entry in `recipes`
    (the train stage depends on it), comments and layout kept; None when both are there already. Worked out
    before anything is copied, so a file it cannot edit stops the add."""
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise AmpsimError(f"not valid YAML ({exc})", path=params_file, fix="correct the YAML syntax") from exc
    listed = loaded.get("devices") or []
    edited = text if device in listed else _with_listed_device(text, listed, device, params_file)
    if device not in (loaded.get("recipes") or {}):
        edited = _with_recipe_entry(edited, device, params_file)
    return None if edited == text else edited


def _with_recipe_entry(text: str, device: str, params_file: Path) -> str:
    """`device: {}` added to the `recipes` mapping (block or flow style), or a new `recipes:` section."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^recipes:", line)), None)
    if start is None:
        edited = text.rstrip("\n") + f"\n\nrecipes:\n  {device}: {{}}\n"
    elif re.match(r"^recipes:\s*(\{|null|~)", lines[start]):  # flow style, or empty
        recipes = {**(yaml.safe_load(text).get("recipes") or {}), device: {}}
        lines[start] = "recipes: " + yaml.safe_dump(recipes, default_flow_style=True, sort_keys=False).strip() + "\n"
        edited = "".join(lines)
    else:  # block style: after the section's last entry line, at the entries' indentation
        last, indents = start, []
        for index in range(start + 1, len(lines)):
            if re.match(r"^\S", lines[index]):
                break
            entry = re.match(r"^(\s+)[^\s#]", lines[index])
            if entry:
                last = index
                indents.append(entry.group(1))
        lines.insert(last + 1, f"{indents[0] if indents else '  '}{device}: {{}}\n")
        edited = "".join(lines)
    if device not in (yaml.safe_load(edited).get("recipes") or {}):
        raise AmpsimError("could not add the device to params.yaml's `recipes`", path=params_file,
                          fix=f"write `recipes: {{{device}: {{}}}}` by hand")
    return edited


def params_with_recipe_setting(text: str, device: str, section: str, key: str, value: Any, params_file: Path) -> str:
    """params.yaml's text with `recipes.<device>.<section>.<key>` set, the rest of the file as it was. The
    device's entry becomes one flow-style line (as `ampsim add` writes it), keeping the comment on its first
    line; comments inside a block-style entry are not kept."""
    recipes = yaml.safe_load(text).get("recipes") or {}
    entry = {name: dict(settings) for name, settings in (recipes.get(device) or {}).items()}
    entry[section] = {**entry.get(section, {}), key: value}
    flow = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10**6).strip()
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^recipes:", line)), None)
    if start is not None and re.match(r"^recipes:\s*\{", lines[start]):  # flow style: the whole section on one line
        lines[start] = "recipes: " + yaml.safe_dump({**recipes, device: entry}, default_flow_style=True,
                                                    sort_keys=False, width=10**6).strip() + "\n"
    elif start is not None:
        for index in range(start + 1, len(lines)):
            if re.match(r"^\S", lines[index]):
                break
            header = re.match(rf"^(\s+){re.escape(device)}:\s*([^#]*?)\s*(#.*)?$", lines[index].rstrip("\n"))
            if header:
                end = index + 1  # a block-style entry (no value on its header): the deeper lines up to its last setting
                for below in range(index + 1, len(lines)) if not header.group(2) else ():
                    if not re.match(rf"^{header.group(1)}\s+\S", lines[below]):
                        break
                    if not lines[below].lstrip().startswith("#"):
                        end = below + 1
                comment = f"  {header.group(3)}" if header.group(3) else ""
                lines[index:end] = [f"{header.group(1)}{device}: {flow}{comment}\n"]
                break
    edited = "".join(lines)
    try:
        done = (yaml.safe_load(edited).get("recipes") or {}).get(device) == entry
    except yaml.YAMLError:
        done = False
    if not done:
        raise AmpsimError(f"could not set `recipes.{device}.{section}.{key}` in params.yaml", path=params_file,
                          fix=f"write `{device}: {flow}` under `recipes:` by hand")
    return edited


def _with_listed_device(text: str, listed: list, device: str, params_file: Path) -> str:
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^devices:", line)), None)
    if start is None:
        edited = text.rstrip("\n") + f"\n\ndevices:\n  - {device}\n"
    elif re.match(r"^devices:\s*\[", lines[start]):  # flow style: devices: [demo]
        lines[start] = f"devices: [{', '.join([*map(str, listed), device])}]\n"
        edited = "".join(lines)
    else:  # block style: after the last item, at the items' indentation
        end, indent = start + 1, None
        while end < len(lines) and (re.match(r"^\s*(-|#|$)", lines[end]) and not re.match(r"^\S", lines[end])
                                    or lines[end].startswith("-")):
            if re.match(r"^\s*-", lines[end]):
                indent = re.match(r"^(\s*)-", lines[end]).group(1)
                last = end
            end += 1
        lines.insert(last + 1 if indent is not None else start + 1, f"{indent if indent is not None else '  '}- {device}\n")
        edited = "".join(lines)
    if device not in (yaml.safe_load(edited).get("devices") or []):
        raise AmpsimError("could not add the device to params.yaml's `devices` list", path=params_file,
                          fix=f"write `devices: [..., {device}]` by hand")
    return edited


def dvc_add(path: Path, project: Path) -> Path:
    """`dvc add` the device folder: the audio goes into DVC's cache, a small .dvc file into git."""
    result = subprocess.run([sys.executable, "-m", "dvc", "add", str(path.relative_to(project))], cwd=project,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise AmpsimError(f"`dvc add {path.relative_to(project)}` failed: {result.stderr.strip()[-600:]}",
                          path=path, fix="run it yourself to see DVC's full message; the files were copied")
    return path.with_name(path.name + ".dvc")


def refuse_generated(project: Path, device: str) -> None:
    """A device a pipeline stage writes (the demo) is not a place for recordings: `dvc repro` replaces it."""
    pipeline = Path(project) / "dvc.yaml"
    stages = (yaml.safe_load(pipeline.read_text()) or {}).get("stages", {}) if pipeline.is_file() else {}
    for name, stage in stages.items():
        if f"data/captures/{device}" in [str(out) for out in stage.get("outs", [])]:
            raise AmpsimError(f"device '{device}' is generated by the `{name}` stage", path=pipeline,
                              fix="choose another --device name")


def add_capture(sources: list[Path], device: str, knobs: dict[str, float], *, project: Path, setting: str | None = None,
                force: bool = False, use_dvc: bool = True, latency: int | None = None) -> Added:
    project = Path(project).resolve()
    check_capture_name(device)
    check_latency(latency, "--latency")
    refuse_generated(project, device)
    params_file = project / "params.yaml"
    params_text = params_with_device(params_file.read_text(), device, params_file)
    knobs = {name: check_value(name, value, "--knob") for name, value in knobs.items()}
    dry, wet = pick_pair([Path(s) for s in sources])
    quick_check(dry, wet)
    captures = project / "data" / "captures"
    target = capture_folder(captures, device, knobs, setting, force)
    check_device_rate(captures / device, dry, target)
    source_meta = {}
    if (dry.parent / META_FILE).is_file() and dry.parent == wet.parent:
        source_meta = yaml.safe_load((dry.parent / META_FILE).read_text()) or {}
    # Copied into a scratch folder first: an interrupted add leaves the project as it was.
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.adding-") as scratch:
        staged = Path(scratch) / "capture"
        staged.mkdir()
        copied_dry = staged / f"input{dry.suffix.lower()}"
        copied_wet = staged / f"output{wet.suffix.lower()}"
        shutil.copyfile(dry, copied_dry)  # contents only: read-only sources stay read-only, copies do not
        shutil.copyfile(wet, copied_wet)
        (staged / META_FILE).write_text(describe(source_meta, device, knobs, dry, wet, latency))
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    device_dir = captures / device
    dvc_file = dvc_add(device_dir, project) if use_dvc else None
    if params_text is not None:
        params_file.write_text(params_text)
    return Added(device, target, target / copied_dry.name, target / copied_wet.name, dvc_file)
