"""Bringing a NAM model in: `ampsim import MODEL.nam --device NAME`.

Guitarists own many `.nam` files. Read into ampsim, a downloaded model can be scored on your own capture
beside your own training, enter the same promotion gate, render, and be written again as `.nam` (or, an
LSTM, as AIDA-X). Each architecture module reads its own part of the file (`from_nam`); this module checks
the file as a whole, before anything is allocated, since it is untrusted input:

- a readable JSON object no larger than MAX_FILE_BYTES, with `version`, `architecture`, `config`, `weights`;
- `version` 0.5.0 to 0.7.x (NAM's released plugin writes and reads 0.5.x, NAM 0.13 writes 0.7.0);
- an architecture ampsim reads (NAM's LSTM and plain WaveNet), with every size within bounds;
- exactly the number of weights its config implies, every one finite;
- `sample_rate` (48 kHz where an old file leaves it out, as NAM assumes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ampsim.core.errors import AmpsimError
from ampsim.modelling.architectures import nam_reader
from ampsim.modelling.models import ModelCard

MAX_FILE_BYTES = 64 * 2**20  # a standard WaveNet's file is ~300 kB; the largest models sharing sites hold, ~10 MB
READABLE_VERSIONS = ((0, 5), (0, 7))  # major.minor, inclusive
DEFAULT_SAMPLE_RATE = 48000  # NAM's assumption for files that do not say
SAMPLE_RATES = (8000, 384000)
IMPORT_FIX = "import a .nam file as NAM's trainer or ampsim wrote it (versions 0.5.0-0.7.x, LSTM or WaveNet)"


@dataclass(frozen=True)
class NamFile:
    path: Path
    version: str
    architecture: str
    config: dict
    weights: np.ndarray
    sample_rate: int
    metadata: dict = field(default_factory=dict)


def _refuse(path: Path, problem: str, fix: str = IMPORT_FIX) -> AmpsimError:
    return AmpsimError(problem, path=path, fix=fix)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise _refuse(path, "no such .nam file", "check the path")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise _refuse(path, f"{path.stat().st_size / 2**20:.0f} MiB is larger than any NAM model "
                            f"({MAX_FILE_BYTES // 2**20} MiB at most)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(path, f"not a .nam file (not JSON: {exc})") from None
    if not isinstance(document, dict) or not {"version", "architecture", "config", "weights"} <= set(document):
        raise _refuse(path, "not a .nam file (a .nam file is a JSON object with version, architecture, config "
                            "and weights)")
    return document


def _check_version(path: Path, version: Any) -> str:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", str(version))
    if match is None or not READABLE_VERSIONS[0] <= (int(match[1]), int(match[2])) <= READABLE_VERSIONS[1]:
        raise _refuse(path, f".nam version {version!r} is not one ampsim reads (0.5.0 to 0.7.x)",
                      "re-export the model with NAM's trainer 0.13 or earlier, or the NAM plugin's 0.5.x files")
    return str(version)


def _weights(path: Path, values: Any, expected: int) -> np.ndarray:
    if not isinstance(values, list) or len(values) != expected:
        count = f"{len(values):,}" if isinstance(values, list) else "no list of"
        raise _refuse(path, f"the file holds {count} weights; its config needs {expected:,}",
                      "the file is truncated or was edited by hand: download or export it again")
    try:
        weights = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise _refuse(path, "some weights are not numbers", "download or export the file again") from None
    if weights.ndim != 1:
        raise _refuse(path, "the weights are not a flat list of numbers", "download or export the file again")
    if not np.all(np.isfinite(weights)):
        raise _refuse(path, f"{int(np.sum(~np.isfinite(weights)))} weights are NaN or infinite",
                      "the model diverged when it was trained: use another file")
    return weights


def read_nam_file(path: str | Path) -> NamFile:
    """The file, checked whole: every problem is refused naming the file, before a model is built."""
    path = Path(path)
    document = _read_json(path)
    version = _check_version(path, document["version"])
    architecture, config = document["architecture"], document["config"]
    if not isinstance(config, dict):
        raise _refuse(path, "`config` is not a JSON object")
    try:
        expected = nam_reader(str(architecture)).nam_weight_count(config)
    except AmpsimError as exc:
        raise AmpsimError(exc.problem, path=path, fix=exc.fix) from None
    rate = document.get("sample_rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1] \
            or rate != int(rate):
        raise _refuse(path, f"sample_rate {rate!r} is not a whole number of Hz in {SAMPLE_RATES[0]}..{SAMPLE_RATES[1]}")
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    return NamFile(path, version, str(architecture), config, _weights(path, document["weights"], expected),
                   int(rate), metadata)


def imported_model(nam: NamFile, device: str):
    """The file's model as ampsim's architecture, and its card (no captures, no training run)."""
    module = nam_reader(nam.architecture)
    try:
        imported = module.from_nam(nam.config, nam.weights)
    except AmpsimError as exc:
        raise AmpsimError(exc.problem, path=nam.path, fix=exc.fix) from None
    card = ModelCard(module.NAME, nam.sample_rate, 1, imported.window_samples, imported.tail_samples, [], None,
                     device=device, imported_from=nam.path.name)
    return imported.model, card


def provenance(nam: NamFile) -> dict[str, str]:
    """What the file says of itself, as MLflow tags (`nam.*`) of the imported version."""
    tags = {"ampsim.imported": "true", "nam.file": nam.path.name, "nam.version": nam.version,
            "nam.architecture": nam.architecture, "nam.sample_rate": str(nam.sample_rate)}
    for key, value in nam.metadata.items():
        if value is not None and not isinstance(value, (dict, list)):
            tags[f"nam.{key}"] = str(value)[:500]
        elif isinstance(value, dict):  # e.g. the date, the trainer's training block: kept whole
            tags[f"nam.{key}"] = json.dumps(value, sort_keys=True)[:5000]
    return tags


def default_folder(device: str, path: Path) -> Path:
    """models/DEVICE/imported/NAME: the file's name as a folder name (spaces and the like become '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-")[:100] or "model"
    return Path("models") / device / "imported" / name


@dataclass(frozen=True)
class Imported:
    card: ModelCard
    folder: Path
    scores: dict | None  # on the device's validation audio; None where it has no prepared captures
    version: str | None  # the registered version; None without MLflow
    note: str | None = None  # why it was not scored


def _validation(prepared: Path | None, card: ModelCard):
    """The device's prepared captures, when there are any at the model's rate (else why not)."""
    from ampsim.data.windows import MANIFEST_FILE, load_split, read_manifest

    if prepared is None or not (Path(prepared) / MANIFEST_FILE).is_file():
        return None, None, (f"not scored: {card.device} has no prepared captures (`ampsim add` one, `dvc repro "
                            f"validate@{card.device}`, then import again to score it and enter the promotion gate)")
    rate = read_manifest(Path(prepared))["sample_rate"]
    if rate != card.sample_rate:
        return None, None, (f"not scored: the model plays at {card.sample_rate} Hz, {card.device}'s captures are at "
                            f"{rate} Hz")
    return load_split(Path(prepared), "val"), load_split(Path(prepared), "train"), None


def import_nam(path: str | Path, device: str, out: Path, prepared: Path | None, evaluate_params, render_params,
               window_2018_ms: tuple[float, float], tracker=None, root: Path | None = None) -> Imported:
    """Read the file, score it on the device's captures (and measure its fast-render warm-up) where it has
    any, save it to `out` atomically, and register it as a new version of `device`, marked imported with the
    file's own metadata. Nothing is written or registered when the file is refused."""
    from ampsim.data.windows import samples
    from ampsim.deployment.registry import register, release
    from ampsim.inference.evaluation import score
    from ampsim.inference.warmup import with_warmup
    from ampsim.modelling.models import save_model

    nam = read_nam_file(path)
    model, card = imported_model(nam, device)
    val, train, note = _validation(prepared, card)
    scores = None
    if val is not None:
        card = with_warmup(model, card, val, train, render_params)
        scores, _ = score(model, card, val, evaluate_params, render_params,
                          samples(window_2018_ms[0], card.sample_rate), samples(window_2018_ms[1], card.sample_rate))
        card = replace(card, validation_esr=scores["esr"])
    version = None
    if tracker is not None:
        run_id = tracker.start(f"{device}/imported/{nam.path.stem}",
                               {"nam": {"architecture": nam.architecture, "config": nam.config}},
                               {**provenance(nam), "ampsim.device": device, "ampsim.architecture": card.architecture})
        card = replace(card, mlflow_run_id=run_id)
        tracker.client.log_artifact(run_id, str(nam.path), "nam")
        if scores is not None:
            tracker.log_metrics({k: v for k, v in scores.items() if isinstance(v, (int, float))})
            version = release(tracker, device, model, card, scores, val, root or Path.cwd())
        else:
            tracker.log_model(model, card)
            version = register(tracker.client, run_id, device, {"architecture": card.architecture, "device": device,
                                                                "imported": "true"})
        tracker.client.set_model_version_tag(device, version, "imported", "true")
        tracker.client.set_model_version_tag(device, version, "nam_file", nam.path.name)
    save_model(model, card, Path(out))
    return Imported(card, Path(out), scores, version, note)
