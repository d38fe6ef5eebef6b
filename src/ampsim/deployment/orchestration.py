"""What the Prefect flows in pipeline/ do, as plain functions: run the DVC pipeline as an experiment, find
the model version it registered, and render a folder with the promoted model, skipping files already
rendered by the same version. DVC owns the stage graph; this only calls it.

Retry or not is decided by exit codes, never by the wording of a message:
- DVC exits 0 when every stage ran; when a stage's command fails, it exits 255 and reports
  "ERROR: failed to reproduce '<stage>': failed to run: <cmd>, exited with <N>" (DVC 3.x), N being the
  stage command's own exit code, which is read from that line.
- N = 1 (`EXIT_USER_ERROR`: an AmpsimError, e.g. capture validation, a bad param): PipelineFailed, no retry.
- N = 75 (`EXIT_TRANSIENT`: ampsim's TransientError, e.g. a server unreachable): TransientFailure, retried.
- any other N (killed by a signal: 128+n, -n; a crash with a traceback: 1 as well, so it is not retried),
  or DVC failing before any stage ran (no "exited with" line: its lock held by another run, a git
  or cache error): TransientFailure, retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ampsim.core.errors import EXIT_USER_ERROR, AmpsimError

RENDER_LEDGER = ".ampsim-rendered.json"
# DVC 3.x's report of a stage command that failed, with that command's exit code
_STAGE_EXIT = re.compile(r"failed to reproduce '[^']*': failed to run: .*, exited with (-?\d+)")


class PipelineFailed(AmpsimError):
    """The pipeline refused the input (validation, params): retrying will not help."""


class TransientFailure(AmpsimError):
    """The pipeline stopped for a reason a retry may clear (a lock held, a killed worker, a lost server)."""


@dataclass(frozen=True)
class ExperimentResult:
    run_id: str
    card: dict[str, Any]
    metrics: dict[str, Any]
    log: str


def tool_env() -> dict[str, str]:
    """This environment, with this interpreter's scripts (dvc, ampsim) first on PATH for DVC's stages."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def changed_devices(project: Path, devices: list[str]) -> list[str]:
    """The devices whose model `dvc repro` would retrain or re-release: DVC's own status of each device's last
    stages with everything upstream (its captures, the demo generator, params, code), one device at a time so
    that a shared change (the code, a shared param) marks every device it reaches and nothing else."""
    changed = []
    for device in devices:
        command = [sys.executable, "-m", "dvc", "status", "--json", "--with-deps", f"render@{device}",
                   f"register@{device}"]
        result = subprocess.run(command, cwd=project, capture_output=True, text=True, env=tool_env())
        if result.returncode != 0:
            raise TransientFailure(f"`dvc status` of {device} failed: {result.stderr.strip()[-400:]}", path=project)
        if json.loads(result.stdout or "{}"):
            changed.append(device)
    return changed


def run_experiment(project: Path, overrides: dict[str, Any], device: str, name: str | None = None) -> ExperimentResult:
    """`dvc exp run [-n NAME] -S key=value ... render@<device> register@<device>` in `project`: the device's
    stages only, all of them (render is not upstream of register), so the experiment's dvc.lock is whole; the
    results stay in the workspace (models/<device>/, reports/<device>/). Raises PipelineFailed or
    TransientFailure with DVC's own words when it fails."""
    project = Path(project)
    command = ["dvc", "exp", "run", *(["--name", name] if name else []),
               *[f"--set-param={key}={value}" for key, value in overrides.items()], f"render@{device}",
               f"register@{device}"]
    result = subprocess.run([sys.executable, "-m", *command], cwd=project, capture_output=True, text=True, env=tool_env())
    log = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-15:])
        kind = PipelineFailed if EXIT_USER_ERROR in stage_exit_codes(log) else TransientFailure
        raise kind(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{tail}\n", path=project,
                   fix="read the message above; nothing was registered")
    card = json.loads((project / "models" / device / "release" / "card.json").read_text())
    metrics_file = project / "reports" / device / "evaluate" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    if not card.get("mlflow_run_id"):
        raise PipelineFailed("the experiment ran without MLflow", path=project, fix="do not pass --no-mlflow")
    return ExperimentResult(card["mlflow_run_id"], card, metrics, log)


def stage_exit_codes(log: str) -> list[int]:
    """The exit codes of the stage commands that DVC reports failed in `log` (empty: DVC failed itself)."""
    return [int(code) for code in _STAGE_EXIT.findall(log)]


def registered_version(client, run_id: str) -> tuple[str, str]:
    """(name, version) that the register stage registered for `run_id`."""
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        raise PipelineFailed(f"MLflow run {run_id} registered no model version",
                             fix="check that the register stage ran and logged to the same MLflow store")
    latest = max(versions, key=lambda v: int(v.version))
    return latest.name, str(latest.version)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render_plan(sources: list[Path], output_dir: Path, model_key: str) -> tuple[list[Path], list[Path]]:
    """Split `sources` into (to render, already rendered by `model_key` from the same audio)."""
    ledger = read_ledger(output_dir)
    todo, done = [], []
    for source in sources:
        entry = ledger.get(source.name)
        fresh = (entry is not None and entry.get("model") == model_key and (output_dir / source.name).is_file()
                 and entry.get("source_sha256") == file_digest(source))
        (done if fresh else todo).append(source)
    return todo, done


def read_ledger(output_dir: Path) -> dict[str, Any]:
    path = Path(output_dir) / RENDER_LEDGER
    return json.loads(path.read_text()) if path.is_file() else {}


def record_rendered(output_dir: Path, source: Path, model_key: str) -> None:
    from ampsim.core.audio import write_text

    ledger = read_ledger(output_dir)
    ledger[source.name] = {"model": model_key, "source_sha256": file_digest(source)}
    write_text(Path(output_dir) / RENDER_LEDGER, json.dumps(ledger, indent=2, sort_keys=True) + "\n")
