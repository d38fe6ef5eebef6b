"""The MLflow model registry: every training run becomes a version of its device's registered model (named
after the device), and an alias (`render` by default) names the version users render with.

Promotion is gated: the candidate's validation ESR must beat the alias holder's *on the same validation
data*, and a recurrent candidate must play its captures as one stream without a latched state (evaluate's
stream check), as a plugin plays it. Each version carries a fingerprint of the validation audio it was scored on; when the two differ,
both models are rendered over the validation data at hand and scored afresh. MLflow stages are deprecated:
aliases only. Registered models load in Keras safe mode (no code from the file runs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ampsim.core import metrics
from ampsim.core.audio import write_text
from ampsim.core.errors import AmpsimError
from ampsim.core.params import RenderParams
from ampsim.data.windows import Segment
from ampsim.modelling.card import RUNTIME_FILE, ModelCard

PROMOTED_FILE = "promoted.json"
URI_PATTERN = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def validation_fingerprint(segments: list[Segment]) -> str:
    """Identifies the validation audio a score was measured on."""
    digest = hashlib.sha256()
    for s in segments:
        digest.update(s.capture.encode())
        digest.update(np.ascontiguousarray(s.x).tobytes())
        digest.update(np.ascontiguousarray(s.y).tobytes())
        if s.knobs:  # the same audio at another knob setting is other validation data
            digest.update(json.dumps(s.knobs, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def source_revision(root: Path) -> dict[str, str]:
    """The git commit the run came from (and whether the tree had changes), and DVC's experiment names
    when `dvc exp run` ran it."""
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True)
        tags["git_commit"] = commit.stdout.strip()
        tags["git_dirty"] = str(bool(status.stdout.strip())).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["git_commit"] = "unknown"
    for variable, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def _client(uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri) if uri else MlflowClient()


def logged_model(client, run_id: str):
    """The model a training run logged (`tracker.log_model`), as MLflow's LoggedModel."""
    import mlflow

    run = client.get_run(run_id)
    mlflow.set_tracking_uri(client.tracking_uri)
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run_id}'", output_format="list")
    if not found:
        raise AmpsimError(f"MLflow run {run_id} logged no model", fix="retrain (`dvc repro -f train`)")
    return max(found, key=lambda logged: logged.creation_timestamp)  # the release logged last


def register(client, run_id: str, name: str, tags: dict[str, str]) -> str:
    """Register the run's latest logged model as a new version of `name` (or update the tags of the version
    that model already is); return the version number."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="ampsim models of one device, one version per "
                                                         "training run; the `render` alias is what users render with")
    logged = logged_model(client, run_id)
    # The same logged model registered again (the stage rerun on the same release) keeps its version; a new
    # release of the run (a re-measured warm-up) is a new version.
    existing = [v for v in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                if getattr(v, "model_id", None) == logged.model_id or v.source == logged.model_uri]
    if existing:
        version = existing[0].version
    else:
        version = client.create_model_version(name, logged.model_uri, run_id=run_id, model_id=logged.model_id).version
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    return str(version)


@dataclass(frozen=True)
class Decision:
    name: str
    alias: str
    version: str
    candidate_esr: float
    holder_version: str | None
    holder_esr: float | None
    same_data: str  # "tags" (both scored on the same data), "rescored" (both scored afresh here), "none"
    promoted: bool
    forced: bool
    reason: str
    latched_seconds: float = 0.0  # evaluate's stream check: seconds its state latched as one stream

    def message(self) -> str:
        against = (f"{self.alias}@v{self.holder_version} ESR {self.holder_esr:.5f}" if self.holder_version
                   else f"no current holder of @{self.alias}")
        how = {"tags": "scored on the same validation data", "rescored": "both re-scored on this validation data",
               "none": ""}[self.same_data]
        verdict = "promoted" if self.promoted else "refused"
        return (f"{self.name} v{self.version} ESR {self.candidate_esr:.5f} vs {against}"
                f"{' (' + how + ')' if how else ''}: {verdict}{' (forced)' if self.forced else ''} — {self.reason}")


def _tag_float(version, key: str) -> float | None:
    try:
        return float(version.tags[key])
    except (KeyError, ValueError):
        return None


def promote(client, name: str, version: str, alias: str, *, force: bool = False,
            rescore: Callable[[str], tuple[float, str]] | None = None) -> Decision:
    """Point `alias` at `version` if its validation ESR beats the current holder's on the same validation
    data (or `force`). `rescore(model_uri)` returns (ESR, fingerprint) on the validation data at hand; it is
    used when the two versions were scored on different data. The decision is tagged on the candidate."""
    from mlflow.exceptions import MlflowException

    try:
        candidate = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise AmpsimError(f"registered model {name} has no version {version}",
                          fix="list them in the MLflow UI (Models) or with `ampsim promote --help`") from exc
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    candidate_esr = _tag_float(candidate, "val_esr")
    if candidate_esr is None:
        raise AmpsimError(f"{name} v{version} has no validation ESR", fix="run `dvc repro evaluate` for its run")
    if holder is not None and str(holder.version) == str(version):
        return Decision(name, alias, str(version), candidate_esr, str(version), candidate_esr, "tags", True, False,
                        f"v{version} already holds @{alias}")
    holder_esr, same = None, "none"
    if holder is not None:
        holder_esr = _tag_float(holder, "val_esr")
        if holder.tags.get("val_data") and holder.tags.get("val_data") == candidate.tags.get("val_data"):
            same = "tags"
        elif rescore is not None:
            candidate_esr, data = rescore(f"models:/{name}/{version}")
            holder_esr, _ = rescore(f"models:/{name}/{holder.version}")
            same = "rescored"
        elif not force:
            raise AmpsimError(f"v{version} and the @{alias} holder v{holder.version} were scored on different "
                              "validation data", fix="pass --prepared with the validation data to score both "
                                                     "on, or --force")
    better = holder is None or holder_esr is None or candidate_esr < holder_esr
    latched = _tag_float(candidate, "stream_latched_seconds") or 0.0
    promoted = (better and not latched) or force
    reason = (f"its state latches as one stream ({latched:g} s of its captures play far worse than in short blocks): "
              "a plugin would play it wrong" if latched else
              "first model for this alias" if holder is None else
              "lower validation ESR" if better else "not better than the current holder")
    decision = Decision(name, alias, str(version), candidate_esr, None if holder is None else str(holder.version),
                        holder_esr, same, promoted, force and not (better and not latched), reason, latched)
    client.set_model_version_tag(name, str(version), f"promotion.{alias}", json.dumps(dataclasses.asdict(decision)))
    if promoted:
        client.set_registered_model_alias(name, alias, str(version))
    return decision


def write_promoted(folder: Path, decision: Decision, run_id: str, architecture: str | None) -> Path:
    """models/promoted.json: which version each alias names, in git so that DVC and reviewers see changes."""
    path = Path(folder) / PROMOTED_FILE
    table = json.loads(path.read_text()) if path.is_file() else {}
    table.setdefault(decision.name, {})[decision.alias] = {
        "version": decision.version, "model_uri": f"models:/{decision.name}/{decision.version}", "run_id": run_id,
        "val_esr": decision.candidate_esr, "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": architecture,
    }
    write_text(path, json.dumps(table, indent=2, sort_keys=True) + "\n")
    return path


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    match = URI_PATTERN.match(uri)
    if not match:
        raise AmpsimError(f"not a registry model URI: {uri}", fix="write models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"], match["version"]


def resolve_version(client, uri: str):
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_uri(uri)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise AmpsimError(f"{uri} does not exist in the registry at {client.tracking_uri}",
                          fix=f"promote a version first (`ampsim promote {name} VERSION --alias {alias or 'render'}`)"
                              " or set MLFLOW_TRACKING_URI to the right store") from exc


def download_registered(uri: str, tracking_uri: str | None = None):
    """Download a registered model's files (no Keras import); returns (folder, card, version)."""
    import mlflow
    from mlflow.models import Model

    client = _client(tracking_uri)
    version = resolve_version(client, uri)
    mlflow.set_tracking_uri(client.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{version.name}/{version.version}"))
    card_fields = Model.load(local / "MLmodel").metadata.get("ampsim_card")
    if card_fields is None:
        raise AmpsimError(f"{uri} has no ampsim model card", fix="register a model logged by ampsim train")
    return local, ModelCard(**card_fields), version


@functools.lru_cache(maxsize=4)
def fetched_version(version_uri: str, tracking_uri: str | None = None):
    """`download_registered`, once per process: for a version URI (models:/NAME/N), whose files never change."""
    return download_registered(version_uri, tracking_uri)


@functools.lru_cache(maxsize=2)
def loaded_version(version_uri: str, tracking_uri: str | None = None):
    """`load_registered`, once per process, for a version URI."""
    return load_registered(version_uri, tracking_uri)


def version_renderer(version_uri: str, tracking_uri: str, params: RenderParams, knobs: dict[str, float] | None):
    """(renderer, card, version, runtime) of a registered version: its ONNX graph where it has one and `params`
    ask for `fast` on ONNX Runtime (Keras is then never imported), else Keras. A process (a Dask worker)
    fetches each version once, whatever number of files it renders with it."""
    from ampsim.inference.runtime import graph_runtime

    if params.runtime == "onnx" and params.method == "fast":
        folder, card, version = fetched_version(version_uri, tracking_uri)
        render_chunk = graph_runtime(folder, card, params, knobs)
        if render_chunk is not None:
            return render_chunk, card, version, "onnx"
    from ampsim.inference.engine import renderer

    model, card, version = loaded_version(version_uri, tracking_uri)
    return renderer(model, card, params.method, params, knobs), card, version, "keras"


def load_registered(uri: str, tracking_uri: str | None = None):
    """Download a registered model and load it in Keras safe mode with its card; returns (model, card, version)."""
    import keras

    local, card, version = download_registered(uri, tracking_uri)
    keras_files = sorted(local.rglob("*.keras"))
    if not keras_files:
        raise AmpsimError(f"{uri} holds no .keras file", path=local, fix="register a model logged by ampsim")
    return keras.saving.load_model(keras_files[0], compile=False, safe_mode=True), card, version


def rescorer(segments: list[Segment], render_fn: Callable, tracking_uri: str | None = None):
    """A `rescore` for `promote`: load a registered model and score it on `segments`."""
    fingerprint = validation_fingerprint(segments)

    def rescore(uri: str) -> tuple[float, str]:
        model, card, _ = load_registered(uri, tracking_uri)
        prediction = np.concatenate([render_fn(model, card, s.x, s.knobs) for s in segments])
        return metrics.esr(np.concatenate([s.y for s in segments]), prediction), fingerprint

    return rescore


def promote_and_record(tracking: str, name: str, version: str, alias: str, *, force: bool, prepared: Path,
                       models_dir: Path, render_fn: Callable, refusal_raises: bool = True) -> Decision:
    """`promote` against the store at `tracking`, re-scoring on `prepared` when needed, then record the
    promotion in `models_dir`/promoted.json. Refusal raises, with both figures in the message, unless
    `refusal_raises` is off (a scheduled retraining: a new version that loses is kept, not promoted)."""
    from ampsim.data.windows import load_split

    client = _client(tracking)
    rescore = None
    if (Path(prepared) / "manifest.json").is_file():
        rescore = rescorer(load_split(Path(prepared), "val"), render_fn, tracking)
    decision = promote(client, name, version, alias, force=force, rescore=rescore)
    if not decision.promoted:
        if not refusal_raises:
            return decision
        fix = ("retrain it with another train.random_seed (whether a state latches differs from run to run) or a larger "
               "train.latch_fallbacks, or pass --force to promote it anyway" if decision.latched_seconds else
               "train a better model, or pass --force to promote it anyway")
        raise AmpsimError(decision.message(), fix=fix)
    promoted = client.get_model_version(name, decision.version)
    write_promoted(Path(models_dir), decision, promoted.run_id, promoted.tags.get("architecture"))
    return decision


def promoted_uri(models_dir: Path, alias: str) -> str:
    """models:/NAME@ALIAS of the model last promoted to `alias` here (from promoted.json)."""
    path = Path(models_dir) / PROMOTED_FILE
    table = json.loads(path.read_text()) if path.is_file() else {}
    names = [name for name, aliases in table.items() if alias in aliases]
    if not names:
        raise AmpsimError(f"no model has been promoted to @{alias} here", path=path,
                          fix="promote one with `ampsim promote NAME VERSION`")
    latest = max(names, key=lambda name: table[name][alias]["promoted_at"])
    return f"models:/{latest}@{alias}"


def release(tracker, device: str, model, card: ModelCard, scores: dict, segments: list[Segment], root: Path,
            runtime_graph: bytes | None = None) -> str:
    """Log the release model (with its ONNX graph, where it has one) to its training run and register it as a
    version of `device`; returns the version. Tagged with the scores and the validation data they were
    measured on, to gate promotion."""
    tracker.log_model(model, card, extra_files=None if runtime_graph is None else {RUNTIME_FILE: runtime_graph})
    tags = {"val_esr": scores["esr"], "val_esr_pre_emphasis": scores["esr_pre_emphasis"], "val_mse": scores["mse"],
            "mse_2018": scores["mse_2018"], "val_data": validation_fingerprint(segments),
            **({"stream_latched_seconds": scores["stream_latched_seconds"]} if "stream_latched_seconds" in scores else {}),
            "architecture": card.architecture, "captures": ",".join(card.captures), "device": device,
            **source_revision(root)}
    return register(tracker.client, tracker.run_id, device, tags)
