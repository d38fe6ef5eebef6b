"""The real DVC pipeline in a temporary git repo holding a copy of the project (never the real data/)."""

import json
import shutil

import yaml
from dvc.repo import Repo
from mlflow.tracking import MlflowClient

from conftest import run_tool


def test_repro_runs_then_reruns_only_what_changed(project_copy, boss_ds1):
    first = run_tool(project_copy, "dvc", "repro")
    for stage in ("normalize", "validate", "train", "evaluate", "render"):
        assert f"Running stage '{stage}'" in first.stdout
    assert "demo-gain-0.2: delay 30 samples" in first.stdout
    assert (project_copy / "reports" / "validate" / "data_docs" / "index.html").is_file()
    assert (project_copy / "models" / "trained" / "model.keras").is_file()
    for setting in ("demo-gain-0.2", "demo-gain-0.5", "demo-gain-0.8"):
        assert (project_copy / "reports" / "render" / setting / "prediction.wav").is_file()
    shown = run_tool(project_copy, "dvc", "metrics", "show").stdout
    assert "reports/evaluate/metrics.json" in shown and "esr_pre_emphasis" in shown
    assert "esr_held_out" in shown and "captures.demo-gain-0.5.knob_gain" in shown  # the per-setting table
    # the run went to the copy's own MLflow store at its root (absolute SQLite path), with its artifacts
    card = json.loads((project_copy / "models" / "trained" / "card.json").read_text())
    client = MlflowClient(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = client.get_run(card["mlflow_run_id"])
    assert "val_esr" in run.data.metrics and run.data.params["train.architecture"] == "lstm"
    assert run.info.artifact_uri.startswith((project_copy / "mlartifacts").as_uri())
    status = run_tool(project_copy, "dvc", "status")
    assert "Data and pipelines are up to date" in status.stdout
    untracked = run_tool(project_copy, "git", "status", "--porcelain", "--untracked-files=all").stdout
    assert "??" not in untracked  # every output is git-ignored

    # a knob only validate reads: normalize is skipped
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["validate"]["val_fraction"] = 0.25
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = run_tool(project_copy, "dvc", "repro")
    assert "Stage 'normalize' didn't change, skipping" in second.stdout
    assert "Running stage 'validate'" in second.stdout and "Running stage 'train'" in second.stdout

    # a knob only render reads: nothing is retrained
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["render"]["example_seconds"] = 0.5
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fourth = run_tool(project_copy, "dvc", "repro")
    assert "Stage 'train' didn't change, skipping" in fourth.stdout and "Running stage 'render'" in fourth.stdout

    # a new capture that does not set the set's knob is refused, naming it and the knob; set, it trains
    shutil.copytree(boss_ds1, project_copy / "data" / "captures" / "boss-ds1")
    refused = run_tool(project_copy, "dvc", "repro", check=False)
    assert refused.returncode != 0
    assert "capture 'boss-ds1' does not set the knob 'gain'" in refused.stderr
    (project_copy / "data" / "captures" / "boss-ds1" / "capture.yaml").write_text("knobs: {gain: 1.0}\n")
    assert "normalize" in run_tool(project_copy, "dvc", "status").stdout
    third = run_tool(project_copy, "dvc", "repro")
    assert "Running stage 'normalize'" in third.stdout and "boss-ds1: delay 39 samples" in third.stdout
    assert "Running stage 'train'" in third.stdout
    assert "Data and pipelines are up to date" in run_tool(project_copy, "dvc", "status").stdout
    metrics = run_tool(project_copy, "dvc", "metrics", "show").stdout
    assert "delay_samples.boss-ds1" in metrics


def test_failed_validation_fails_repro_and_records_nothing(project_copy, pair):
    from conftest import write_capture

    dry, wet = pair
    write_capture(project_copy / "data" / "captures", "halfrate", dry, wet, wet_rate=44100,
                  meta={"knobs": {"gain": 0.5}})
    result = run_tool(project_copy, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "capture 'halfrate' (data/captures/halfrate/output.wav): output sample rate failed" in result.stderr
    assert not (project_copy / "data" / "prepared").exists()
    assert "validate" in run_tool(project_copy, "dvc", "status").stdout  # not recorded as done


def test_second_repro_while_one_runs_is_refused_by_dvcs_lock(project_copy):
    # Hold the repository lock exactly as a running `dvc repro` does, then start another one.
    with Repo(str(project_copy)).lock:
        result = run_tool(project_copy, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "Unable to acquire lock" in result.stderr
    assert not (project_copy / "data" / "normalized").exists()
    # and once the first one is done, a repro goes through
    assert run_tool(project_copy, "dvc", "repro").returncode == 0
