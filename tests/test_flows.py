"""The Prefect flows under prefect_test_harness: train runs the real DVC pipeline as an experiment in a
project copy, registers and promotes; a failing pipeline fails the flow at once and registers nothing; the
render flow renders a folder with the promoted model and skips what that version already rendered."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("keras")

from conftest import PROJECT, run_tool, write_capture  # noqa: E402

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
    first = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.5}, device="demo")
    assert len(first["rendered"]) == 2 and first["skipped"] == []
    assert sf.info(str(out / "take2.flac")).frames == 48000
    second = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.5})
    assert second["rendered"] == [] and len(second["skipped"]) == 2
    sf.write(dis / "take1.wav", (0.5 * dry[:48000]).astype(np.float32), 48000)  # a new take under the same name
    third = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.5})
    assert len(third["rendered"]) == 1 and "take1.wav" in third["rendered"][0]
    brighter = flows.render_folder(str(dis), str(out), project=str(project_copy), knobs={"gain": 0.7})
    assert len(brighter["rendered"]) == 2


def test_gpu_concurrency_limit_is_created_with_one_slot(harness):
    import flows
    from prefect.client.orchestration import get_client

    flows.ensure_gpu_limit()
    flows.ensure_gpu_limit()  # idempotent
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("gpu").limit == 1


@pytest.mark.parametrize("code, kind", [(1, "PipelineFailed"), (75, "TransientFailure"), (137, "TransientFailure")])
def test_retry_is_decided_by_the_stage_exit_code_that_dvc_reports(tmp_path, code, kind):
    import subprocess

    from ampsim.deployment import orchestration
    from conftest import tool_env

    env = {**tool_env(), "DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache")}
    (tmp_path / "dvc.yaml").write_text("stages:\n  render:\n    foreach: [amp]\n    do:\n      cmd: exit 0\n"
                                       f"  register:\n    foreach: [amp]\n    do:\n      cmd: exit {code}\n")
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "one stage"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True)
    with pytest.raises(getattr(orchestration, kind), match=f"exited with {code}"):
        orchestration.run_experiment(tmp_path, {}, "amp")
    assert orchestration.stage_exit_codes(f"ERROR: failed to reproduce 'fails': failed to run: exit {code}, "
                                          f"exited with {code}") == [code]
