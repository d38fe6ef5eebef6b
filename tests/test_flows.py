"""The Prefect flows under prefect_test_harness: train runs the real DVC pipeline as an experiment in a
project copy, registers and promotes; a failing pipeline fails the flow at once and registers nothing; the
render flow renders a folder with the promoted model and skips what that version already rendered."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("keras")

from conftest import PROJECT, run_tool, tool_env, write_capture  # noqa: E402

sys.path.insert(0, str(PROJECT / "pipeline"))


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_train_flow_registers_promotes_then_fails_loudly_on_a_bad_capture_and_render_flow_skips_done_files(
        harness, project_copy, isolated_mlflow, pair, monkeypatch):
    import flows

    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(project_copy.parent / "dvc-site-cache"))
    from mlflow.tracking import MlflowClient

    summary = flows.train(project=str(project_copy), device="demo", overrides={"train.max_steps": 2}, promote=True)
    assert summary["name"] == "demo" and summary["version"] == "1"
    assert summary["promotion"]["promoted"] is True
    client = MlflowClient(isolated_mlflow)
    assert str(client.get_model_version_by_alias("demo", "render").version) == "1"
    assert (project_copy / "models" / "promoted.json").is_file()

    # a device whose amp side is silent (a cable left out): validation refuses it, the flow fails without
    # retrying, nothing is registered
    dry, wet = pair
    write_capture(project_copy.parent, "no-amp", dry, np.zeros_like(wet))
    run_tool(project_copy, "ampsim", "add", str(project_copy.parent / "no-amp"), "--device", "no-amp")
    state = flows.train(project=str(project_copy), device="no-amp", promote=True, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="capture validation failed"):
        state.result()
    assert "no-amp" not in [m.name for m in client.search_registered_models()]
    assert len(client.search_model_versions("name = 'demo'")) == 1

    # the render flow: two DI files rendered with models:/demo@render at gain 0.5, then skipped, then one
    # re-rendered; the same files at another gain setting are new renderings
    dis, out = project_copy.parent / "dis", project_copy.parent / "rendered"
    dis.mkdir()
    for index, name in enumerate(("take1.wav", "take2.flac")):
        sf.write(dis / name, (0.3 * dry[index * 48000 : (index + 1) * 48000]).astype(np.float32), 48000)
    first = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.5}, device="demo",
                                dask_workers=2)
    assert len(first["rendered"]) == 2 and first["skipped"] == []
    assert sf.info(str(out / "take2.flac")).frames == 48000
    # two Dask workers rendered what one process renders file after file, on the ONNX graph registered with
    # the version, within the register stage's tolerance of Keras
    from ampsim.core.metrics import esr
    from ampsim.core.params import RenderParams, load_params, section
    from ampsim.deployment.registry import download_registered, load_registered
    from ampsim.inference.engine import renderer
    from ampsim.inference.files import render_paths
    from ampsim.inference.runtime import graph_runtime
    from ampsim.modelling.card import RUNTIME_FILE

    folder, card, _ = download_registered("models:/demo/1", isolated_mlflow)
    assert (folder / RUNTIME_FILE).is_file()
    model, _, _ = load_registered("models:/demo/1", isolated_mlflow)
    params = section(load_params(project_copy / "params.yaml"), "render", RenderParams)
    on_onnx, on_keras = project_copy.parent / "on-onnx", project_copy.parent / "on-keras"
    render_paths(graph_runtime(folder, card, params, {"gain": 0.5}), card, dis, on_onnx, "onnx", progress=False,
                 report=lambda line: None)
    render_paths(renderer(model, card, "fast", params, {"gain": 0.5}), card, dis, on_keras, "fast", progress=False,
                 report=lambda line: None)
    for name in ("take1.wav", "take2.flac"):
        reference = sf.read(on_onnx / name, dtype="float64")[0]
        assert esr(reference, sf.read(out / name, dtype="float64")[0]) < 1e-9 and np.sum(reference**2) > 0
        assert esr(sf.read(on_keras / name, dtype="float64")[0], reference) < params.runtime_tolerance_esr
    # `ampsim render --model models:/...` renders a registered version on its graph too
    cli = subprocess.run(["ampsim", "render", str(dis / "take1.wav"), str(project_copy.parent / "cli.wav"),
                          "--model", "models:/demo/1", "--knob", "gain=0.5"], cwd=project_copy, capture_output=True,
                         text=True, env={**tool_env(), "MLFLOW_TRACKING_URI": isolated_mlflow})
    assert cli.returncode == 0 and "ONNX Runtime" in cli.stdout, cli.stderr
    assert esr(sf.read(on_onnx / "take1.wav", dtype="float64")[0],
               sf.read(project_copy.parent / "cli.wav", dtype="float64")[0]) < 1e-9
    second = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.5})
    assert second["rendered"] == [] and len(second["skipped"]) == 2
    sf.write(dis / "take1.wav", (0.5 * dry[:48000]).astype(np.float32), 48000)  # a new take under the same name
    third = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.5})
    assert len(third["rendered"]) == 1 and "take1.wav" in third["rendered"][0]
    brighter = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.7})
    assert len(brighter["rendered"]) == 2


def test_gpu_concurrency_limit_takes_its_slots_from_the_setting(harness):
    import flows
    from prefect.client.orchestration import get_client

    for slots in (1, 1, 3):  # created, left as it is, then resized
        flows.ensure_gpu_limit(slots)
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name("gpu").limit == slots


def test_the_nightly_flow_retrains_exactly_the_devices_whose_captures_changed(harness, project_copy, pair,
                                                                             monkeypatch):
    import flows
    import yaml
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    from ampsim.core.tracking import tracking_uri

    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(project_copy.parent / "dvc-site-cache"))
    # `dvc repro` and `ampsim promote` below, and the flows, all on the copy's own store (its mlflow.db)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    client = MlflowClient(tracking_uri(project_copy))
    assert str(project_copy) in client.tracking_uri
    dry, wet = pair
    takes = project_copy.parent / "takes"

    def add(device: str, gain: float, *flags: str) -> None:
        write_capture(takes / f"{gain:g}", device, dry, gain * wet)
        run_tool(project_copy, "ampsim", "add", str(takes / f"{gain:g}" / device), "--device", device, *flags)

    # two small devices trained once (the demo left out: it would only slow the test down)
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["devices"], params["recipes"] = [], {}
    params["prefect"]["gpu_slots"] = 2
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for device, gain in (("steady", 0.9), ("night-a", 0.8)):
        add(device, gain)
    run_tool(project_copy, "dvc", "repro")
    steady_lock = {k: v for k, v in yaml.safe_load((project_copy / "dvc.lock").read_text())["stages"].items()
                   if k.endswith("@steady")}
    assert len(steady_lock) == 6
    versions = {d: len(client.search_model_versions(f"name = '{d}'")) for d in ("steady", "night-a", "night-b")}
    assert versions["night-b"] == 0
    run_tool(project_copy, "ampsim", "promote", "night-a", str(versions["night-a"]))  # the holder to beat

    # a new take of one device, the first of another: one scheduled run trains those two, each as its own
    # flow run, and leaves the third alone
    add("night-a", 0.7, "--force")
    add("night-b", 0.5)
    result = flows.retrain_changed(project=str(project_copy))
    assert sorted(result["trained"]) == ["night-a", "night-b"] and result["unchanged"] == ["steady"]
    for device in ("night-a", "night-b"):
        assert int(result["trained"][device]["version"]) == versions[device] + 1
    # each through its gate: the first of its name is promoted; a retrained one only if it scores better,
    # and a loser is kept registered, unpromoted, without failing the night
    assert result["trained"]["night-b"]["promotion"]["promoted"] is True
    assert result["trained"]["night-a"]["promotion"]["holder_version"] == str(versions["night-a"])
    assert len(client.search_model_versions("name = 'steady'")) == versions["steady"]
    assert {k: v for k, v in yaml.safe_load((project_copy / "dvc.lock").read_text())["stages"].items()
            if k.endswith("@steady")} == steady_lock
    with get_client(sync_client=True) as prefect_client:
        names = [run.name for run in prefect_client.read_flow_runs()]
        assert prefect_client.read_global_concurrency_limit_by_name("gpu").limit == 2  # prefect.gpu_slots
    assert names.count("train-night-a") == 1 and names.count("train-night-b") == 1
    assert "train-steady" not in names
    # and then nothing is left to do
    assert flows.retrain_changed(project=str(project_copy))["trained"] == {}


def test_every_deployment_runs_a_flow_of_flows_py_with_parameters_it_takes():
    import inspect

    import flows
    import yaml

    deployments = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    assert {d["name"] for d in deployments} == {"retrain-nightly", "train", "render"}
    for deployment in deployments:
        path, name = deployment["entrypoint"].split(":")
        assert path == "pipeline/flows.py"
        accepted = inspect.signature(getattr(flows, name).fn).parameters
        assert set(deployment["parameters"]) <= set(accepted), deployment["name"]
    nightly = next(d for d in deployments if d["name"] == "retrain-nightly")
    assert nightly["entrypoint"].endswith(":retrain_changed") and nightly["schedules"][0]["active"]


def test_the_render_task_travels_to_a_dask_worker_without_the_pipeline_folder_or_keras(tmp_path):
    """A worker on another host has ampsim installed, not pipeline/: the task must arrive by value, and a
    worker rendering on ONNX Runtime must not pay Keras' import."""
    import cloudpickle
    import flows

    payload = tmp_path / "render_one.pkl"
    payload.write_bytes(cloudpickle.dumps(flows.render_one))
    code = ("import pickle, sys; task = pickle.load(open(sys.argv[1], 'rb')); "
            "print(task.name, 'keras' in sys.modules, any('pipeline' in p for p in sys.path))")
    result = subprocess.run([sys.executable, "-c", code, str(payload)], cwd=tmp_path, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["render_one", "False", "False"]
