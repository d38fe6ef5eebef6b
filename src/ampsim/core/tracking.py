"""MLflow tracking: where the store is, and one run per training that evaluate and render add to.

The default store is a SQLite file at the project root with artifacts beside it, both resolved to absolute
paths, so `dvc exp run --temp` (which runs in a copy under .dvc/tmp/exps/) logs to the same database.
`MLFLOW_TRACKING_URI` points everything at a server instead.

A training run (`Tracker.start_training`) is named device/architecture/DVC experiment, carries MLflow's own
source tags (git commit, branch, repo URL) and logs its capture set as a dataset input whose digest is DVC's
hash of it, so the runs table shows which data and which code each model came from.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ampsim.core.errors import AmpsimError, TransientError

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"

# What an experiment holds, as MLflow 3 records it: the UI's kind selector writes this tag (ExperimentKind
# CUSTOM_MODEL_DEVELOPMENT = "custom_model_development" in server/js/build; Python only sets it in
# mlflow/demo/generators/traces.py, to "genai_development"). MLflow 3.17's own UI, though, picks an
# experiment's landing tab from its sidebar switch "GenAI | Model training" (kept per browser in localStorage
# `mlflow.workflowType_v1`, or `?workflowType=machine_learning` in the address), not from this tag.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# What `dvc exp run` exports to stage commands (dvc/repo/experiments/queue/base.py): the experiment's name
# and the commit it started from; outside an experiment the run is the workspace's.
DVC_EXP_NAME = "DVC_EXP_NAME"
DVC_EXP_BASELINE_REV = "DVC_EXP_BASELINE_REV"
WORKSPACE = "workspace"
# A dataset digest column holds 36 characters: exactly a DVC directory hash ("<md5>.dir").
DIGEST_LENGTH = 36
FALLBACK_PREFIX = "nodvc-"


def project_root(cwd: Path | None = None) -> Path:
    """The project folder, also when a DVC experiment runs in a temporary copy under .dvc/tmp/exps/."""
    cwd = Path(cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / STORE_FILE}"


def cpu_description() -> str:
    """The processor a run trained on, e.g. "AMD EPYC 7B13 x 2": the same seeded run gives the same weights on
    the same processor and core count, but other x86 CPUs round differently (their vector units, the
    compiled kernels' choices), so two machines' figures differ slightly and the run says which it was."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    return f"{name} x {os.cpu_count()}"


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """params.yaml as MLflow params: nested keys joined with dots, values as text."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def pip_requirements() -> list[str]:
    """Pinned from what is installed: explicit, and it spares MLflow's ~13 s dependency scan."""
    names = ["keras", "tensorflow", "numpy", "h5py"]
    return [f"{name}=={metadata.version(name)}" for name in names]


def dvc_experiment() -> str:
    """The DVC experiment this process runs in (`dvc exp run` sets DVC_EXP_NAME), else "workspace"."""
    return os.environ.get(DVC_EXP_NAME) or WORKSPACE


def training_run_name(device: str, architecture: str, experiment: str | None = None) -> str:
    return f"{device}/{architecture}/{experiment or dvc_experiment()}"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_remote(root: Path) -> str | None:
    url = _git(root, "remote", "get-url", "origin")
    if url:
        return url
    remotes = (_git(root, "remote") or "").split()
    return _git(root, "remote", "get-url", remotes[0]) if remotes else None


@dataclasses.dataclass(frozen=True)
class GitSource:
    """The checkout a run comes from; commit is None outside a git repository."""

    path: Path
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    remote: str | None = None

    def tags(self) -> dict[str, str]:
        """MLflow's own source tags (the runs table's Source column) and ampsim.git_dirty."""
        tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": self.remote or str(self.path)}
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
            tags["mlflow.source.git.dirty"] = tags["ampsim.git_dirty"] = str(self.dirty).lower()
        if self.branch:
            tags["mlflow.source.git.branch"] = self.branch
        if self.remote:
            tags["mlflow.source.git.repoURL"] = self.remote
        return tags


def git_source(root: Path) -> GitSource:
    """Commit, branch (none when detached, as in a `dvc exp run --temp` copy), whether tracked files have
    changes, and the remote (the project's, when a DVC temporary copy has none)."""
    root = Path(root).resolve()
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return GitSource(root)
    top = Path(_git(root, "rev-parse", "--show-toplevel") or root)
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    remote = _git_remote(root)
    if remote is None and project_root(root) != root:
        remote = _git_remote(project_root(root))
    return GitSource(top, commit, _git(root, "symbolic-ref", "--short", "-q", "HEAD") or None,
                     None if status is None else bool(status), remote)


@dataclasses.dataclass(frozen=True)
class DataHash:
    """DVC's hash of a path ("<md5>" for a file, "<md5>.dir" for a folder) and where it came from: the
    path's .dvc file, a dvc.lock, computed with dvc-data (not yet tracked), or `fallback` (a digest of our
    own, prefixed "nodvc-", when dvc-data cannot be used)."""

    digest: str
    origin: str
    record: Path | None = None
    nfiles: int | None = None
    size: int | None = None


def _relative(path: Path, top: Path) -> str:
    try:
        return path.relative_to(top).as_posix()
    except ValueError:
        return str(path)


def _same(a: Path, b: Path) -> bool:
    return os.path.normpath(a.resolve()) == os.path.normpath(b.resolve())


def _recorded_out(record: Path, outs: list, path: Path, origin: str) -> DataHash | None:
    for out in outs or []:
        if isinstance(out, dict) and out.get("md5") and out.get("path") and _same(record.parent / out["path"], path):
            return DataHash(str(out["md5"]), origin, record, out.get("nfiles"), out.get("size"))
    return None


def recorded_dvc_hash(path: Path, root: Path | None = None) -> DataHash | None:
    """The md5 DVC recorded for `path`: in `<path>.dvc`, else in the outs of a dvc.lock in the path's folder
    or any folder above it up to `root` (stage outputs are relative to their dvc.lock)."""
    path = Path(path).resolve()
    dvcfile = path.with_name(path.name + ".dvc")
    if dvcfile.is_file():
        found = _recorded_out(dvcfile, (yaml.safe_load(dvcfile.read_text()) or {}).get("outs"), path, ".dvc")
        if found:
            return found
    stop = Path(root).resolve() if root else None
    for folder in path.parents:
        lock = folder / "dvc.lock"
        if lock.is_file():
            for stage in ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).values():
                found = _recorded_out(lock, (stage or {}).get("outs"), path, "dvc.lock")
                if found:
                    return found
        if stop is None or folder == stop or folder == folder.parent:
            break
    return None


def _fallback_hash(path: Path) -> DataHash:
    digest = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    value = FALLBACK_PREFIX + digest.hexdigest()[: DIGEST_LENGTH - len(FALLBACK_PREFIX)]
    return DataHash(value, "fallback", None, len(files), sum(f.stat().st_size for f in files))


def computed_dvc_hash(path: Path) -> DataHash:
    """What `dvc add` would record for `path`, computed with dvc-data's own builder (the function DVC's
    outputs use; stable from dvc-data 0.x to 3.x), without writing to any cache. `.dvcignore` is not
    applied. Falls back to `_fallback_hash` when dvc-data is missing or its API changed."""
    import tempfile

    path = Path(path).resolve()
    try:
        from dvc_data.hashfile.build import build
        from dvc_data.hashfile.db import HashFileDB
        from dvc_objects.fs.local import LocalFileSystem

        fs = LocalFileSystem()
        with tempfile.TemporaryDirectory() as scratch:
            _, meta, obj = build(HashFileDB(fs, scratch), os.fspath(path), fs, "md5", dry_run=True)
        return DataHash(str(obj.hash_info.value), "computed", None, meta.nfiles, meta.size)
    except (ImportError, TypeError, AttributeError):
        return _fallback_hash(path)


def dvc_hash(path: Path, root: Path | None = None) -> DataHash:
    return recorded_dvc_hash(path, root) or computed_dvc_hash(path)


class Tracker:
    """One MLflow run, addressed by id (no active-run global), created on `start` or re-opened by id."""

    def __init__(self, uri: str, experiment: str, root: Path | None = None, *, kind: str = TRAINING_KIND):
        """Finds or creates `experiment`, marked as holding model training (`kind`) unless it already says
        what it holds."""
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
        except Exception as exc:  # MlflowException or a requests error once MLflow's retries are spent
            if not uri.startswith(("http://", "https://")):
                raise
            raise TransientError(f"the MLflow server at {uri} cannot be reached ({exc.__class__.__name__})",
                                 fix="start it (or unset MLFLOW_TRACKING_URI to log to the project's mlflow.db) "
                                     "and run the stage again; nothing was trained") from exc
        if found is None:
            location = None
            if uri.startswith("sqlite:") and root is not None:
                location = (Path(root).resolve() / ARTIFACTS_DIR).as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                               tags={EXPERIMENT_KIND_TAG: kind})
        else:
            self.experiment_id = found.experiment_id
            if not found.tags.get(EXPERIMENT_KIND_TAG):
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, kind)
        self.run_id: str | None = None

    @classmethod
    def for_project(cls, experiment: str, root: Path | None = None) -> Tracker:
        root = project_root(root)
        return cls(tracking_uri(root), experiment, root)

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        return self.run_id

    def start_training(self, *, device: str, architecture: str, params: dict[str, Any], tags: dict[str, str],
                       data_path: Path | None = None, root: Path | None = None) -> str:
        """Start the training run of `device`, named device/architecture/DVC experiment ("workspace" outside
        `dvc exp run`): params flattened as in `start`, `tags`, MLflow's source tags for the checkout at `root`
        (default: the working directory, which under `dvc exp run --temp` is DVC's copy), ampsim.device /
        ampsim.architecture / ampsim.dvc_experiment / ampsim.cpu, and the capture set `data_path` (relative to `root`)
        as a training dataset input named `device` whose digest is DVC's hash of it. Returns the run id."""
        root = Path(root or Path.cwd()).resolve()
        experiment = dvc_experiment()
        run_tags = {**git_source(root).tags(), "mlflow.user": getpass.getuser(), **tags,
                    "ampsim.device": device, "ampsim.architecture": architecture,
                    "ampsim.dvc_experiment": experiment, "ampsim.cpu": cpu_description()}
        if os.environ.get(DVC_EXP_BASELINE_REV):
            run_tags["ampsim.dvc_baseline_rev"] = os.environ[DVC_EXP_BASELINE_REV]
        run_id = self.start(training_run_name(device, architecture, experiment), params, run_tags)
        if data_path is not None and (root / data_path).exists():  # a run outside a project has no capture set
            self.log_capture_set(device, root / data_path, root)
        return run_id

    def log_capture_set(self, device: str, path: Path, root: Path | None = None) -> DataHash:
        """`path` as this run's training dataset: name `device`, digest DVC's hash, source the path (and the
        git remote and commit when known), profile where the hash came from."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        path = Path(path).resolve()
        root = Path(root or Path.cwd()).resolve()
        found = dvc_hash(path, root)
        git = git_source(root)
        source: dict[str, Any] = {"uri": str(path), "path": _relative(path, git.path)}
        if found.record is not None:
            source["dvc_file"] = _relative(found.record, git.path)
        if git.remote:
            source["git_remote"] = git.remote
        if git.commit:
            source["git_commit"] = git.commit
        profile = {"dvc_hash": found.digest, "from": found.origin, "nfiles": found.nfiles, "size": found.size}
        dataset = Dataset(name=device, digest=found.digest, source_type="local", source=json.dumps(source),
                          profile=json.dumps({k: v for k, v in profile.items() if v is not None}))
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])
        return found

    def resume(self, run_id: str) -> str:
        try:
            self.client.get_run(run_id)
        except Exception as exc:  # MlflowException: the store does not know this run
            raise AmpsimError(f"MLflow run {run_id} not found in {self.uri} ({exc.__class__.__name__})",
                              fix="retrain (`dvc repro -f train`) or set MLFLOW_TRACKING_URI to the store "
                                  "the model was trained with") from exc
        self.run_id = run_id
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(1000 * time.time())
        items = [Metric(k, float(v), stamp, 0 if step is None else step) for k, v in metrics.items() if np.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_model(self, model, card, name: str = "model", extra_files: dict[str, bytes] | None = None) -> str:
        """The Keras flavour with a (-1, -1, input_size) float32 signature, plus `extra_files` (name: content)
        beside it in the logged model (the release's ONNX graph); returns the model URI."""
        import tempfile

        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, card.input_size), "audio")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 1), "output")]),
        )
        self._mlflow.set_tracking_uri(self.uri)
        with self._mlflow.start_run(run_id=self.run_id):
            info = self._mlflow.keras.log_model(model, name=name, signature=signature,
                                                pip_requirements=pip_requirements(),
                                                metadata={"ampsim_card": dataclasses.asdict(card)})
        if extra_files:
            with tempfile.TemporaryDirectory(prefix="ampsim-model-files-") as scratch:
                for file_name, content in extra_files.items():
                    (Path(scratch) / file_name).write_bytes(content)
                self.client.log_model_artifacts(info.model_id, scratch)
        return info.model_uri
