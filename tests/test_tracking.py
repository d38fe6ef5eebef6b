"""Tracker.start_training against a temporary SQLite store: the experiment kind MLflow's UI reads, the run
name from DVC's experiment, MLflow's source tags from a real git repository, and the capture set logged as a
dataset whose digest is the hash real `dvc add` / `dvc repro` record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mlflow")

from ampsim.core.tracking import (  # noqa: E402
    EXPERIMENT_KIND_TAG,
    FALLBACK_PREFIX,
    TRAINING_KIND,
    Tracker,
    _fallback_hash,
    computed_dvc_hash,
)

DVC = Path(sys.executable).parent / "dvc"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "DVC_NO_ANALYTICS": "1"}


def _run(repo: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _no_dvc_experiment(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository on branch `main` with one commit and a capture folder not yet tracked by anything."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(repo, "git", "init", "-q", "-b", "main")
    (repo / "params.yaml").write_text("train:\n  steps: 1\n")
    capture = repo / "data" / "captures" / "amp"
    capture.mkdir(parents=True)
    (capture / "input.wav").write_bytes(os.urandom(3000))
    (capture / "output.wav").write_bytes(os.urandom(3000))
    _run(repo, "git", "add", "params.yaml")
    _run(repo, "git", "commit", "-q", "-m", "start")
    return repo


@pytest.fixture
def dvc_repo(repo) -> Path:
    if not DVC.exists():
        pytest.skip(f"no dvc at {DVC}")
    _run(repo, str(DVC), "init", "-q")
    _run(repo, "git", "commit", "-q", "-m", "dvc init")
    return repo


def _train(uri: str, root: Path | None = None, **kwargs):
    tracker = Tracker(uri, "ampsim", root)
    run_id = tracker.start_training(device=kwargs.pop("device", "amp"), architecture="lstm",
                                    params={"train": {"steps": 1}}, tags={"stage": "train"}, root=root, **kwargs)
    return tracker, tracker.client.get_run(run_id)


def test_new_and_existing_experiments_are_marked_as_model_training(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    tracker = Tracker(uri, "fresh")
    assert client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND

    old = client.create_experiment("old")  # as an earlier ampsim (or MLflow's default) made it
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    Tracker(uri, "old")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND

    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    Tracker(uri, "chosen")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_run_name_and_tags_outside_and_inside_a_dvc_experiment(uri, repo, monkeypatch):
    _, run = _train(uri, repo)
    assert run.info.run_name == "amp/lstm/workspace"
    tags = run.data.tags
    assert (tags["ampsim.device"], tags["ampsim.architecture"], tags["ampsim.dvc_experiment"]) == (
        "amp", "lstm", "workspace")
    assert tags["stage"] == "train"
    assert run.data.params == {"train.steps": "1"}
    assert tags["ampsim.cpu"].endswith(f" x {os.cpu_count()}") and len(tags["ampsim.cpu"]) > len(" x 1")

    monkeypatch.setenv("DVC_EXP_NAME", "pithy-gnat")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    _, run = _train(uri, repo, device="boss-ds1")
    assert run.info.run_name == "boss-ds1/lstm/pithy-gnat"
    assert run.data.tags["ampsim.dvc_experiment"] == "pithy-gnat"
    assert run.data.tags["ampsim.dvc_baseline_rev"] == "abc123"


def test_source_tags_of_a_clean_and_a_dirty_checkout(uri, repo):
    head = _run(repo, "git", "rev-parse", "HEAD")
    _, run = _train(uri, repo)
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == str(repo.resolve())
    assert tags["ampsim.git_dirty"] == tags["mlflow.source.git.dirty"] == "false"

    (repo / "params.yaml").write_text("train:\n  steps: 2\n")
    _run(repo, "git", "remote", "add", "origin", "https://example.com/me/ampsim.git")
    _, run = _train(uri, repo)
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["ampsim.git_dirty"] == tags["mlflow.source.git.dirty"] == "true"
    assert tags["mlflow.source.name"] == tags["mlflow.source.git.repoURL"] == "https://example.com/me/ampsim.git"

    _run(repo, "git", "checkout", "-q", "--detach")
    _, run = _train(uri, repo)
    assert "mlflow.source.git.branch" not in run.data.tags


def test_no_git_repository_still_names_the_source(uri, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    _, run = _train(uri, plain)
    assert run.data.tags["mlflow.source.name"] == str(plain.resolve())
    assert "mlflow.source.git.commit" not in run.data.tags


def _dataset(run):
    (found,) = run.inputs.dataset_inputs
    assert [(t.key, t.value) for t in found.tags] == [("mlflow.data.context", "training")]
    return found.dataset


def test_dataset_digest_is_the_md5_dvc_add_records(uri, dvc_repo):
    capture = Path("data/captures/amp")
    computed = computed_dvc_hash(dvc_repo / capture)  # before DVC knows the folder
    _run(dvc_repo, str(DVC), "add", "-q", str(capture))
    out = yaml.safe_load((dvc_repo / "data/captures/amp.dvc").read_text())["outs"][0]
    assert out["md5"].endswith(".dir")
    assert computed.digest == out["md5"] and computed.origin == "computed"

    _run(dvc_repo, "git", "remote", "add", "origin", "https://example.com/me/ampsim.git")
    _, run = _train(uri, dvc_repo, data_path=capture)
    dataset = _dataset(run)
    assert (dataset.name, dataset.digest, dataset.source_type) == ("amp", out["md5"], "local")
    source = json.loads(dataset.source)
    assert source["uri"] == str((dvc_repo / capture).resolve())
    assert source["path"] == "data/captures/amp" and source["dvc_file"] == "data/captures/amp.dvc"
    assert source["git_remote"] == "https://example.com/me/ampsim.git"
    assert source["git_commit"] == run.data.tags["mlflow.source.git.commit"]
    profile = json.loads(dataset.profile)
    assert profile == {"dvc_hash": out["md5"], "from": ".dvc", "nfiles": 2, "size": 6000}


def test_dataset_digest_of_a_stage_output_is_its_dvc_lock_hash(uri, dvc_repo):
    _run(dvc_repo, str(DVC), "stage", "add", "-q", "-n", "demo", "-o", "data/captures/demo",
         "mkdir -p data/captures/demo && echo dry > data/captures/demo/input.wav && "
         "echo wet > data/captures/demo/output.wav")
    _run(dvc_repo, str(DVC), "repro", "-q")
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())
    (out,) = lock["stages"]["demo"]["outs"]
    _, run = _train(uri, dvc_repo, device="demo", data_path=Path("data/captures/demo"))
    dataset = _dataset(run)
    assert (dataset.name, dataset.digest) == ("demo", out["md5"])
    assert json.loads(dataset.source)["dvc_file"] == "dvc.lock"
    assert json.loads(dataset.profile)["from"] == "dvc.lock"


def test_untracked_capture_set_gets_the_hash_dvc_would_record(uri, repo):
    _, run = _train(uri, repo, data_path=Path("data/captures/amp"))
    dataset = _dataset(run)
    assert dataset.digest == computed_dvc_hash(repo / "data/captures/amp").digest
    assert json.loads(dataset.profile)["from"] == "computed"


def test_fallback_digest_is_named_and_fits_mlflows_digest_column(repo):
    found = _fallback_hash(repo / "data/captures/amp")
    assert found.digest.startswith(FALLBACK_PREFIX) and len(found.digest) == 36
    assert (found.origin, found.nfiles, found.size) == ("fallback", 2, 6000)
    assert found.digest != _fallback_hash(repo / "data/captures").digest


def test_an_unreachable_mlflow_server_is_a_transient_failure_with_its_own_exit_code(tmp_path, monkeypatch, ampsim_cli):
    """Exit 75, not 1: the orchestration retries it (deployment/orchestration.py), unlike bad input."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    code, _, err = ampsim_cli("train", "--prepared", str(tmp_path / "prepared"), "--model", str(tmp_path / "m"),
                              "--reports", str(tmp_path / "r"), "--checkpoint", str(tmp_path / "c"))
    assert code == 75, err
    assert f"the MLflow server at http://127.0.0.1:{port} cannot be reached" in err

