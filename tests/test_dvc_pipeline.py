"""The real DVC pipeline in temporary git repos holding a copy of the project (never the real data/), walked
through as a studio would: build the demo, add a second device, change a setting, push, and pull into a fresh
clone. The module's fixtures build on one another, each step once; each test checks one promise."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
import yaml
from dvc.repo import Repo
from mlflow.tracking import MlflowClient
from scipy import signal

from conftest import (BOSS_DS1_LATENCY, PROJECT, SHARED_CAPTURES, copy_project, run_tool, shared_or_skip, tool_env,
                      write_capture)

STAGES = ("normalize", "validate", "train", "evaluate", "render", "register")


def ran(result, stage: str) -> bool:
    return f"Running stage '{stage}'" in result.stdout


def skipped(result, stage: str) -> bool:
    return f"Stage '{stage}' didn't change, skipping" in result.stdout


def commit(repo, message: str) -> None:
    run_tool(repo, "git", "add", "-A")
    run_tool(repo, "git", "commit", "-qm", message)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("studio"))


@pytest.fixture(scope="module")
def built(studio):
    """`dvc repro` on a fresh clone: what `make repro` runs after its set-up."""
    return run_tool(studio, "dvc", "repro")


@pytest.fixture(scope="module")
def with_ds1(built, studio, boss_ds1):
    added = run_tool(studio, "ampsim", "add", str(boss_ds1), "--device", "ds1", "--latency", str(BOSS_DS1_LATENCY))
    status = run_tool(studio, "dvc", "status")
    repro = run_tool(studio, "dvc", "repro")
    after = run_tool(studio, "dvc", "status")
    commit(studio, "add ds1")
    return added, status, repro, after


@pytest.fixture(scope="module")
def retuned(with_ds1, studio):
    """A warm-up search setting changed: it feeds only the register stage."""
    params = yaml.safe_load((studio / "params.yaml").read_text())
    params["render"]["block_ms"] = 250.0
    (studio / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro = run_tool(studio, "dvc", "repro")
    commit(studio, "render.block_ms 250")
    return repro


@pytest.fixture(scope="module")
def pulled(retuned, studio):
    pushed = run_tool(studio, "dvc", "push")
    clone = studio.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(studio), str(clone)], check=True, env=tool_env())
    pull = run_tool(clone, "dvc", "pull")
    return clone, pushed, pull, run_tool(clone, "dvc", "status"), run_tool(clone, "dvc", "repro")


def test_repro_on_a_fresh_clone_builds_the_demo_device(built, studio):
    assert ran(built, "demo")
    for stage in STAGES:
        assert ran(built, f"{stage}@demo")
    assert "gain-0.2: latency 23 samples (0.48 ms), compensated (device (smallest of its captures)" in built.stdout
    assert "registered demo v1" in built.stdout
    assert (studio / "models" / "demo" / "release" / "model.keras").is_file()
    for setting in ("gain-0.2", "gain-0.5", "gain-0.8"):
        assert (studio / "reports" / "demo" / "render" / setting / "prediction.wav").is_file()
    assert (studio / "reports" / "demo" / "validate" / "data_docs" / "index.html").is_file()
    shown = run_tool(studio, "dvc", "metrics", "show").stdout
    assert "reports/demo/evaluate/metrics.json" in shown and "esr_held_out" in shown
    # the run went to the copy's own MLflow store at its root, named by device and architecture
    card = json.loads((studio / "models" / "demo" / "release" / "card.json").read_text())
    assert card["device"] == "demo" and card["context_samples"] > 0
    client = MlflowClient(f"sqlite:///{studio / 'mlflow.db'}")
    run = client.get_run(card["mlflow_run_id"])
    assert run.info.run_name == "demo/lstm/workspace"
    assert "val_esr" in run.data.metrics and run.data.params["train.architecture"] == "lstm"
    assert run.info.artifact_uri.startswith((studio / "mlartifacts").as_uri())
    assert client.get_model_version("demo", "1").run_id == run.info.run_id
    # every output is git-ignored or DVC-tracked, except what is meant for git: the lock and the metrics
    for_git = {"dvc.lock", "reports/demo/evaluate/metrics.json", "reports/demo/train/loss.csv",
               "reports/demo/train/summary.json", "reports/demo/validate/summary.json"}
    status = run_tool(studio, "git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    assert [line for line in status if line.startswith("??") and line[3:] not in for_git] == []


def test_adding_a_device_trains_only_that_device(with_ds1, studio):
    added, status, repro, _ = with_ds1
    assert "data/captures/ds1.dvc" in added.stdout
    assert (studio / "data" / "captures" / "ds1.dvc").is_file()
    assert yaml.safe_load((studio / "params.yaml").read_text())["devices"] == ["demo", "ds1"]
    assert "@ds1" in status.stdout and "@demo" not in status.stdout  # only the new device is out of date
    for stage in STAGES:
        assert ran(repro, f"{stage}@ds1") and not ran(repro, f"{stage}@demo")
    assert skipped(repro, "train@demo")
    assert f"ds1: latency {BOSS_DS1_LATENCY} samples" in repro.stdout and "registered ds1 v1" in repro.stdout
    client = MlflowClient(f"sqlite:///{studio / 'mlflow.db'}")
    assert {m.name for m in client.search_registered_models()} == {"demo", "ds1"}  # a model per device
    # the audio is in DVC's cache, not in git
    tracked = run_tool(studio, "git", "ls-files", "data/captures").stdout.split()
    assert tracked == ["data/captures/.gitignore", "data/captures/ds1.dvc"]


def test_dvc_status_is_clean_after_repro(with_ds1):
    assert "Data and pipelines are up to date" in with_ds1[3].stdout


def test_a_changed_param_reruns_only_what_it_feeds(retuned):
    for device in ("demo", "ds1"):
        assert ran(retuned, f"register@{device}")
        for stage in ("normalize", "validate", "train", "evaluate", "render"):
            assert not ran(retuned, f"{stage}@{device}")
    assert "registered ds1 v2" in retuned.stdout  # re-measured warm-up: a new version, no retraining


def test_a_device_recipe_puts_only_that_device_out_of_date(retuned, studio):
    params_file = studio / "params.yaml"
    text = params_file.read_text()
    assert yaml.safe_load(text)["recipes"]["ds1"] == {}  # `ampsim add` gave ds1 its entry
    params = yaml.safe_load(text)
    params["recipes"]["ds1"] = {"train": {"architecture": "wavenet"}, "wavenet": {"layers": "nano"}}
    try:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        status = run_tool(studio, "dvc", "status").stdout
    finally:
        params_file.write_text(text)
    assert "train@ds1" in status and "modified:           recipes.ds1" in status
    assert "@demo" not in status


def test_push_then_pull_in_a_fresh_clone_is_up_to_date_and_renders(pulled, boss_ds1, studio):
    clone, pushed, pull, status, repro = pulled
    assert "pushed" in pushed.stdout
    assert "Data and pipelines are up to date" in status.stdout
    assert "Running stage" not in repro.stdout  # nothing retrains
    assert (clone / "data" / "captures" / "ds1" / "input.wav").is_file()
    rendered = run_tool(clone, "ampsim", "render", str(boss_ds1 / "input.wav"), "out.wav", "--model", "ds1",
                        "--quiet")
    assert "fast" in rendered.stdout
    assert sf.info(str(clone / "out.wav")).frames == sf.info(str(boss_ds1 / "input.wav")).frames


def test_failed_validation_fails_repro_and_records_nothing(project_copy, pair):
    dry, wet = pair
    write_capture(project_copy / "data", "noamp", dry, np.zeros_like(wet))
    run_tool(project_copy, "ampsim", "add", "data/noamp", "--device", "noamp")
    result = run_tool(project_copy, "dvc", "repro", "validate@noamp", check=False)
    assert result.returncode != 0
    assert ("capture 'noamp' (data/captures/noamp/output.wav): output is not silent failed: measured -200 dBFS"
            in result.stderr)
    assert not (project_copy / "data" / "prepared" / "noamp").exists()
    assert "validate@noamp" in run_tool(project_copy, "dvc", "status").stdout  # not recorded as done


def test_captures_at_44_1_and_50_khz_train_at_their_own_rate_with_no_params_edit(project_copy, tmp_path):
    # a real 44.1 kHz capture as it comes, and a real capture at an unusual rate (the same, resampled to 50 kHz)
    ts9 = shared_or_skip(SHARED_CAPTURES / "ts9-guitarml" / "input.wav", "real capture").parent
    odd = tmp_path / "ts9-50k"
    odd.mkdir()
    for side in ("input", "output"):
        audio, _ = sf.read(ts9 / f"{side}.wav", dtype="float32", frames=20 * 44100)
        sf.write(odd / f"{side}.wav", signal.resample_poly(audio, 500, 441).astype(np.float32), 50000, "FLOAT")
    settings = {k: v for k, v in yaml.safe_load((project_copy / "params.yaml").read_text()).items()
                if k not in ("devices", "recipes")}
    run_tool(project_copy, "ampsim", "add", str(ts9), "--device", "ts9")
    run_tool(project_copy, "ampsim", "add", str(odd), "--device", "ts9-50k")
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    assert {k: v for k, v in params.items() if k not in ("devices", "recipes")} == settings
    assert params["devices"] == ["demo", "ts9", "ts9-50k"]

    repro = run_tool(project_copy, "dvc", "repro", "register@ts9", "register@ts9-50k")
    assert "registered ts9 v1" in repro.stdout and "registered ts9-50k v1" in repro.stdout
    assert not ran(repro, "train@demo")
    for device, rate in (("ts9", 44100), ("ts9-50k", 50000)):
        card = json.loads((project_copy / "models" / device / "release" / "card.json").read_text())
        assert card["sample_rate"] == rate
        run_tool(project_copy, "ampsim", "export", device, "--format", "nam", "-o", f"{device}.nam")
        assert json.loads((project_copy / f"{device}.nam").read_text())["sample_rate"] == rate
        run_tool(project_copy, "ampsim", "export", device, "--format", "aidax", "-o", f"{device}.json")
        assert json.loads((project_copy / f"{device}.json").read_text())["metadata"]["samplerate"] == rate
        di = project_copy / "data" / "captures" / device / "input.wav"
        run_tool(project_copy, "ampsim", "render", str(di), f"{device}.wav", "--model", device, "--quiet")
        assert (sf.info(str(project_copy / f"{device}.wav")).samplerate, sf.info(str(project_copy / f"{device}.wav")).frames) \
            == (rate, sf.info(str(di)).frames)
    # another rate than the model's is converted only when asked
    refused = run_tool(project_copy, "ampsim", "render", str(odd / "input.wav"), "x.wav", "--model", "ts9", check=False)
    assert refused.returncode == 1 and "50000 Hz" in refused.stderr and "--resample" in refused.stderr


def test_second_repro_while_one_runs_is_refused_by_dvcs_lock(project_copy):
    # Hold the repository lock exactly as a running `dvc repro` does, then start another one.
    with Repo(str(project_copy)).lock:
        result = run_tool(project_copy, "dvc", "repro", "normalize@demo", check=False)
    assert result.returncode != 0
    assert "Unable to acquire lock" in result.stderr
    assert not (project_copy / "data" / "normalized" / "demo").exists()
    # and once the first one is done, a repro goes through
    assert run_tool(project_copy, "dvc", "repro", "normalize@demo").returncode == 0


@pytest.fixture(scope="module")
def raced(pulled, studio):
    """`ampsim race ds1` between two small recipes, after the push-and-pull walk (it commits first)."""
    params = yaml.safe_load((studio / "params.yaml").read_text())
    params["race"] = {"minutes": 0.05, "candidates": {"lstm8": {}, "lstm4": {"lstm": {"hidden_size": 4}}}}
    (studio / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(studio, "race settings")
    race = run_tool(studio, "ampsim", "race", "ds1")
    return race, run_tool(studio, "dvc", "status"), yaml.safe_load((studio / "params.yaml").read_text())


def test_a_race_registers_every_candidate_and_applies_the_winner(raced, studio):
    race, status, params = raced
    rows = {line.split()[0]: line for line in race.stdout.splitlines() if line.startswith(("lstm8 ", "lstm4 "))}
    assert set(rows) == {"lstm8", "lstm4"}
    winner = next(name for name, line in rows.items() if line.endswith("<- winner"))
    assert min(rows, key=lambda name: float(rows[name].split()[1])) == winner  # the lowest validation ESR
    entry = params["recipes"]["ds1"]  # the winner's entry, applied
    assert entry["train"]["max_minutes"] == 0.05 and entry.get("lstm", {}).get("hidden_size") == (
        4 if winner == "lstm4" else None)
    assert params["recipes"]["demo"] == yaml.safe_load((PROJECT / "params.yaml").read_text())["recipes"]["demo"]
    assert "Data and pipelines are up to date" in status.stdout  # the winner's lock and outputs came with it
    card = json.loads((studio / "models" / "ds1" / "release" / "card.json").read_text())
    client = MlflowClient(f"sqlite:///{studio / 'mlflow.db'}")
    versions = {str(v.version): v.run_id for v in client.search_model_versions("name = 'ds1'")}
    assert len(versions) == 4  # v1 added, v2 re-measured warm-up, then one per candidate
    announced = race.stdout.split("registered ds1 v")[1].split(";")[0]
    assert versions[announced] == card["mlflow_run_id"]  # the model in the workspace is the winner's version
    assert f"`ampsim promote ds1 {announced}`" in race.stdout
    assert client.get_run(card["mlflow_run_id"]).data.params["recipes.ds1.train.max_minutes"] == "0.05"


@pytest.fixture(scope="module")
def finetuned(raced, studio):
    """`ampsim init-from` on ds1 after the race: a source that does not fit, then ds1's own release, repro,
    and the same source again once that release has changed."""
    run_tool(studio, "git", "add", "-A")
    run_tool(studio, "git", "commit", "-qm", "race winner", "--allow-empty")
    refused = run_tool(studio, "ampsim", "init-from", "ds1", "demo", check=False)  # knob-conditioned -> plain
    refused_status = run_tool(studio, "dvc", "status")
    started = run_tool(studio, "ampsim", "init-from", "ds1", "ds1")
    status = run_tool(studio, "dvc", "status")
    repro = run_tool(studio, "dvc", "repro")
    after = run_tool(studio, "dvc", "status")
    commit(studio, "ds1 fine-tuned from its last release")
    run_tool(studio, "ampsim", "init-from", "ds1", "ds1")  # the same setting; the release it names has changed
    return refused, refused_status, started, status, repro, after, run_tool(studio, "dvc", "status")


def test_init_from_fine_tunes_one_device_and_dvc_follows_the_starting_model(finetuned, studio):
    refused, refused_status, started, status, repro, after, changed = finetuned
    assert refused.returncode == 1 and "takes 1 knob(s), this device's model 0" in refused.stderr
    assert "Data and pipelines are up to date" in refused_status.stdout  # nothing was written
    assert "device ds1's released model" in started.stdout and "data/captures/ds1.dvc" in started.stdout
    assert yaml.safe_load((studio / "params.yaml").read_text())["recipes"]["ds1"]["train"]["init_from"] == "ds1"
    assert "train@ds1" in status.stdout and "@demo" not in status.stdout
    assert ran(repro, "train@ds1") and not ran(repro, "train@demo")
    assert "starting from ds1 (data/captures/ds1/.start): validation loss" in repro.stdout
    assert "registered ds1 v5" in repro.stdout
    assert "Data and pipelines are up to date" in after.stdout
    summary = json.loads((studio / "reports" / "ds1" / "train" / "summary.json").read_text())
    assert summary["init_from"] == "ds1"
    # the starting model's content is the dependency, not only the setting that names it
    assert "train@ds1" in changed.stdout and "@demo" not in changed.stdout
