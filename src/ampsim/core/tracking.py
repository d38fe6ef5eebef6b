"""MLflow tracking: where the store is, and one run per training that evaluate and render add to.

The default store is a SQLite file at the project root with artifacts beside it, both resolved to absolute
paths, so `dvc exp run --temp` (which runs in a copy under .dvc/tmp/exps/) logs to the same database.
`MLFLOW_TRACKING_URI` points everything at a server instead.
"""

from __future__ import annotations

import dataclasses
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ampsim.core.errors import AmpsimError

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


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


class Tracker:
    """One MLflow run, addressed by id (no active-run global), created on `start` or re-opened by id."""

    def __init__(self, uri: str, experiment: str, root: Path | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if uri.startswith("sqlite:") and root is not None:
                location = (Path(root).resolve() / ARTIFACTS_DIR).as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
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

    def log_model(self, model, card, name: str = "model") -> str:
        """The Keras flavour with a (-1, -1, input_size) float32 signature; returns the model URI."""
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
        return info.model_uri
