"""Prefect 3 flows: scheduling and retries around the ampsim library. No pipeline logic lives here: the
stage graph is dvc.yaml, the steps are `ampsim.deployment.orchestration`, `ampsim.deployment.registry` and `ampsim.inference.engine`.

- `train`: `dvc exp run -S ...` (one GPU job at a time: the `gpu` concurrency limit), then the model version
  the run registered, then optionally promotion through the gate. A failure of the pipeline (validation, a
  bad param) fails the flow at once; only transient failures (a lock held, a killed worker) are retried.
- `render`: every DI file of a folder through the promoted model, skipping files that the same model
  version already rendered from the same audio.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.concurrency.sync import concurrency

from ampsim.core.quiet import quiet_backends

quiet_backends()  # before the imports below bring in Keras and TensorFlow

from ampsim.core.params import MlflowParams, RenderParams, load_params, section  # noqa: E402
from ampsim.core.tracking import tracking_uri  # noqa: E402
from ampsim.deployment.orchestration import (TransientFailure, pipeline_changed, record_rendered, registered_version, render_plan, run_experiment)  # noqa: E402
from ampsim.deployment.registry import load_registered, promote_and_record, promoted_uri  # noqa: E402
from ampsim.inference.engine import render, renderer  # noqa: E402
from ampsim.inference.files import audio_files, render_file  # noqa: E402

GPU_LIMIT = "gpu"  # global concurrency limit: at most one training job on the GPU host at a time


def _retry_transient_only(task, task_run, state) -> bool:
    try:
        state.result()
    except TransientFailure:
        return True
    except Exception:  # noqa: BLE001 - anything else is the input's fault: fail now
        return False
    return False


def ensure_gpu_limit(slots: int = 1) -> None:
    """Create the `gpu` limit on the Prefect server if it is missing, so one GPU job at a time holds
    even on a server nobody configured."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=_retry_transient_only)
def experiment(project: str, overrides: dict[str, Any], device: str) -> dict[str, Any]:
    with concurrency(GPU_LIMIT, occupy=1):
        result = run_experiment(Path(project), overrides, device)
    return {k: v for k, v in dataclasses.asdict(result).items() if k != "log"}


@task
def promote_task(project: str, name: str, version: str, alias: str, force: bool) -> dict[str, Any]:
    params = load_params(Path(project) / "params.yaml")
    render_params = section(params, "render", RenderParams)
    decision = promote_and_record(tracking_uri(Path(project)), name, version, alias, force=force,
                                  prepared=Path(project) / "data" / "prepared" / name,
                                  models_dir=Path(project) / "models",
                                  render_fn=lambda model, card, x, knobs: render(model, card, x, render_params, knobs))
    get_run_logger().info(decision.message())
    return dataclasses.asdict(decision)


@flow(name="train")
def train(project: str = ".", device: str = "demo", overrides: dict[str, Any] | None = None, promote: bool = False,
          force: bool = False, only_if_changed: bool = False) -> dict[str, Any] | None:
    """Run one device's DVC stages as an experiment, find the model version it registered (the registered
    model is named after the device), optionally promote it."""
    from mlflow.tracking import MlflowClient

    logger = get_run_logger()
    project = str(Path(project).resolve())
    if only_if_changed and not pipeline_changed(Path(project)):
        logger.info("captures, params and code unchanged since the last run: nothing to train")
        return None
    ensure_gpu_limit()
    result = experiment(project, overrides or {}, device)
    name, version = registered_version(MlflowClient(tracking_uri(Path(project))), result["run_id"])
    logger.info(f"trained run {result['run_id']}: registered {name} v{version}, "
                f"validation ESR {result['metrics'].get('esr')}")
    summary = {"run_id": result["run_id"], "name": name, "version": version, "metrics": result["metrics"]}
    if promote:
        alias = section(load_params(Path(project) / "params.yaml"), "mlflow", MlflowParams).render_alias
        summary["promotion"] = promote_task(project, name, version, alias, force)
    return summary


@task
def render_one(model_uri: str, project: str, source: str, target: str, knobs: dict[str, float] | None,
               key: str) -> str:
    params = section(load_params(Path(project) / "params.yaml"), "render", RenderParams)
    model, card, version = load_registered(model_uri, tracking_uri(Path(project)))
    result = render_file(renderer(model, card, params.method, params, knobs), card.sample_rate, Path(source),
                         Path(target), force=True, progress=False)
    record_rendered(Path(target).parent, Path(source), key)
    return f"{result.target}: {result.seconds:.1f} s, {result.realtime_factor:.1f}x real time"


@flow(name="render")
def render_folder(input_dir: str, output_dir: str, model: str | None = None, project: str = ".",
                  knobs: dict[str, float] | None = None, device: str | None = None) -> dict[str, list[str]]:
    """Render every DI file of `input_dir` into `output_dir` with `model` (a registry URI), else the promoted
    model of `device`, else the model promoted last; at the knob settings `knobs` for a conditioned model."""
    logger = get_run_logger()
    project = str(Path(project).resolve())
    alias = section(load_params(Path(project) / "params.yaml"), "mlflow", MlflowParams).render_alias
    model_uri = model or (f"models:/{device}@{alias}" if device else promoted_uri(Path(project) / "models", alias))
    _, _, version = load_registered(model_uri, tracking_uri(Path(project)))
    # the same file at another knob setting is another rendering: the setting is part of the key
    key = f"{version.name}/{version.version}" + "".join(f" {k}={v:g}" for k, v in sorted((knobs or {}).items()))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    todo, done = render_plan(audio_files(Path(input_dir)), Path(output_dir), key)
    logger.info(f"{model_uri} is {key}: {len(todo)} file(s) to render, {len(done)} already rendered by it")
    rendered = [render_one(f"models:/{version.name}/{version.version}", project, str(source),
                           str(Path(output_dir) / source.name), knobs, key) for source in todo]
    return {"rendered": rendered, "skipped": [str(source) for source in done]}
