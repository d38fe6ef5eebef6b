"""Prefect 3 flows: scheduling and retries around the ampsim library. No pipeline logic lives here: the
stage graph is dvc.yaml, the steps are `ampsim.deployment.orchestration`, `ampsim.deployment.registry` and `ampsim.inference.engine`.

- `train`: `dvc exp run -S ...` (as many at once as the `gpu` concurrency limit has slots: params.yaml
  `prefect.gpu_slots`), then the model version the run registered, then optionally promotion through the
  gate. A failure of the pipeline (validation, a bad param) fails the flow at once; only transient failures
  (a lock held, a killed worker) are retried.
- `retrain-changed`: every device whose captures, params or code changed since its last run (DVC's status),
  each as its own `train` flow run, promoted through its gate; the others untouched. The nightly schedule.
- `render`: every DI file of a folder through the promoted model on a Dask cluster (`prefect.dask_address`,
  else a local one of `prefect.dask_workers` processes), skipping files that the same model version
  already rendered from the same audio.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import cloudpickle
from prefect import flow, get_run_logger, task, unmapped
from prefect.concurrency.sync import concurrency

from ampsim.core.quiet import quiet_backends

quiet_backends()  # before anything brings in Keras and TensorFlow (training, promotion, a model without a graph)

from ampsim.core.params import MlflowParams, PrefectParams, RenderParams, load_params, section  # noqa: E402
from ampsim.core.tracking import tracking_uri  # noqa: E402
from ampsim.deployment.orchestration import (TransientFailure, changed_devices, record_rendered,  # noqa: E402
                                             registered_version, render_plan, run_experiment)
from ampsim.deployment.registry import (download_registered, promote_and_record, promoted_uri,  # noqa: E402
                                        version_renderer)
from ampsim.inference.files import audio_files, render_file  # noqa: E402

# Dask workers (another process, maybe another host) receive the tasks of this file by value: they need ampsim
# installed, not this folder on their path.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

GPU_LIMIT = "gpu"  # global concurrency limit: training runs at once, `prefect.gpu_slots` of them


def _retry_transient_only(task, task_run, state) -> bool:
    try:
        state.result()
    except TransientFailure:
        return True
    except Exception:  # noqa: BLE001 - anything else is the input's fault: fail now
        return False
    return False


def _settings(project: str) -> PrefectParams:
    return section(load_params(Path(project) / "params.yaml"), "prefect", PrefectParams)


def ensure_gpu_limit(slots: int) -> None:
    """Give the `gpu` limit on the Prefect server `slots` slots (creating it if missing), so the setting holds
    even on a server nobody configured."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, slots)


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=_retry_transient_only)
def experiment(project: str, overrides: dict[str, Any], device: str) -> dict[str, Any]:
    with concurrency(GPU_LIMIT, occupy=1):
        result = run_experiment(Path(project), overrides, device)
    return {k: v for k, v in dataclasses.asdict(result).items() if k != "log"}


@task
def promote_task(project: str, name: str, version: str, alias: str, force: bool) -> dict[str, Any]:
    from ampsim.inference.engine import render

    params = load_params(Path(project) / "params.yaml")
    render_params = section(params, "render", RenderParams)
    decision = promote_and_record(tracking_uri(Path(project)), name, version, alias, force=force,
                                  prepared=Path(project) / "data" / "prepared" / name,
                                  models_dir=Path(project) / "models",
                                  render_fn=lambda model, card, x, knobs: render(model, card, x, render_params, knobs),
                                  refusal_raises=False)  # the gate said no: the version stays registered, unpromoted
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
    if only_if_changed and not changed_devices(Path(project), [device]):
        logger.info(f"{device}: captures, params and code unchanged since its last run: nothing to train")
        return None
    ensure_gpu_limit(_settings(project).gpu_slots)
    result = experiment(project, overrides or {}, device)
    name, version = registered_version(MlflowClient(tracking_uri(Path(project))), result["run_id"])
    logger.info(f"trained run {result['run_id']}: registered {name} v{version}, "
                f"validation ESR {result['metrics'].get('esr')}")
    summary = {"run_id": result["run_id"], "name": name, "version": version, "metrics": result["metrics"]}
    if promote:
        alias = section(load_params(Path(project) / "params.yaml"), "mlflow", MlflowParams).render_alias
        summary["promotion"] = promote_task(project, name, version, alias, force)
    return summary


@flow(name="retrain-changed")
def retrain_changed(project: str = ".", promote: bool = True, force: bool = False) -> dict[str, Any]:
    """Retrain every device of params.yaml whose captures, params or code changed since its last run, each
    as its own `train` flow run (promoted through its gate), and leave the others alone. A device that fails
    does not stop the others; the flow fails at the end, naming it."""
    logger = get_run_logger()
    project = str(Path(project).resolve())
    devices = load_params(Path(project) / "params.yaml").get("devices") or []
    changed = changed_devices(Path(project), devices)
    logger.info(f"{len(changed)} of {len(devices)} device(s) changed: {', '.join(changed) or 'none'}")
    trained, failed = {}, {}
    for device in changed:
        state = train.with_options(flow_run_name=f"train-{device}")(
            project=project, device=device, promote=promote, force=force, return_state=True)
        if state.is_completed():
            trained[device] = state.result()
        else:
            failed[device] = state.message or "failed"
    if failed:
        raise RuntimeError(f"{len(failed)} device(s) failed to retrain: "
                           + "; ".join(f"{device}: {message}" for device, message in failed.items()))
    return {"trained": trained, "unchanged": [device for device in devices if device not in changed]}


@task
def render_one(model_uri: str, project: str, source: str, target: str, knobs: dict[str, float] | None,
               threads: int | None) -> str:
    params = section(load_params(Path(project) / "params.yaml"), "render", RenderParams)
    params = dataclasses.replace(params, workers=threads or params.workers)
    render_chunk, card, _, _ = version_renderer(model_uri, tracking_uri(Path(project)), params, knobs)
    result = render_file(render_chunk, card.sample_rate, Path(source), Path(target), force=True, progress=False)
    return f"{result.target}: {result.seconds:.1f} s, {result.realtime_factor:.1f}x real time"


def dask_runner(project: str, address: str | None = None, workers: int | None = None):
    """Prefect's Dask task runner: the cluster at `address` (else `prefect.dask_address`), or else a local
    cluster of `workers` (else `prefect.dask_workers`) processes, one task at a time each."""
    from prefect_dask import DaskTaskRunner

    settings = _settings(project)
    address = address or settings.dask_address
    if address:
        return DaskTaskRunner(address=address)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # this run's server, a temporary one included: without it, each
        api_url = str(client.api_url)               # worker process would start a temporary server of its own
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers or settings.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None,
                                          "env": {"PREFECT_API_URL": api_url}})


@flow(name="render-files")
def render_files(model_uri: str, project: str, sources: list[str], output_dir: str, knobs: dict[str, float] | None,
                 key: str, threads: int | None = None) -> list[str]:
    """Map the files over the flow's task runner (Dask: one file per task), recording each as it finishes."""
    targets = [str(Path(output_dir) / Path(source).name) for source in sources]
    futures = render_one.map(unmapped(model_uri), unmapped(project), sources, targets, unmapped(knobs),
                               unmapped(threads))
    rendered, failed = [], []
    for source, future in zip(sources, futures):
        try:
            rendered.append(future.result())
        except Exception as exc:  # noqa: BLE001 - the others are kept and recorded; the flow fails below
            failed.append(f"{source}: {exc}")
            continue
        record_rendered(Path(output_dir), Path(source), key)  # here, not on a worker: one writer of the ledger
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(sources)} file(s) failed (the others were rendered): "
                           + "; ".join(failed))
    return rendered


@flow(name="render")
def render_folder(input_dir: str, output_dir: str, model: str | None = None, project: str = ".",
                  knobs: dict[str, float] | None = None, device: str | None = None, dask_address: str | None = None,
                  dask_workers: int | None = None, threads_per_file: int | None = None) -> dict[str, list[str]]:
    """Render every DI file of `input_dir` into `output_dir` with `model` (a registry URI), else the promoted
    model of `device`, else the model promoted last; at the knob settings `knobs` for a conditioned model.
    The files are spread over a Dask cluster (`dask_address`/`dask_workers`, else params.yaml `prefect`), each
    file rendered on `threads_per_file` threads (else `render.workers`): workers x threads should fit the cores."""
    logger = get_run_logger()
    project = str(Path(project).resolve())
    alias = section(load_params(Path(project) / "params.yaml"), "mlflow", MlflowParams).render_alias
    model_uri = model or (f"models:/{device}@{alias}" if device else promoted_uri(Path(project) / "models", alias))
    _, _, version = download_registered(model_uri, tracking_uri(Path(project)))
    # the same file at another knob setting is another rendering: the setting is part of the key
    key = f"{version.name}/{version.version}" + "".join(f" {k}={v:g}" for k, v in sorted((knobs or {}).items()))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    todo, done = render_plan(audio_files(Path(input_dir)), Path(output_dir), key)
    logger.info(f"{model_uri} is {key}: {len(todo)} file(s) to render, {len(done)} already rendered by it")
    rendered = []
    if todo:
        runner = dask_runner(project, dask_address, dask_workers)
        rendered = render_files.with_options(task_runner=runner)(
            f"models:/{version.name}/{version.version}", project, [str(s) for s in todo], output_dir, knobs, key,
            threads_per_file)
    return {"rendered": rendered, "skipped": [str(source) for source in done]}
