"""Windows, rendering, the training loop (with resume after a kill), evaluation and MLflow, on boss-ds1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

keras = pytest.importorskip("keras")

from conftest import PROJECT, tiny_params, tool_env  # noqa: E402

from ampsim.cli import main  # noqa: E402
from ampsim.core.tracking import project_root, tracking_uri  # noqa: E402
from ampsim.data.windows import Pool, Segment, StreamRows, fixed_windows, random_windows, tiled_windows  # noqa: E402
from ampsim.modelling.training import load_checkpoint  # noqa: E402


# --- windows ------------------------------------------------------------------------------------------

def _two_captures() -> Pool:
    # capture "a" holds the values 0..999, capture "b" 10000..12999: a window mixing them is easy to spot
    a = np.arange(1000, dtype=np.float32)
    b = 10000 + np.arange(3000, dtype=np.float32)
    return Pool.of([Segment("a", a, -a), Segment("b", b, -b)])


def test_random_windows_stay_inside_one_capture_and_pair_x_with_y():
    pool = _two_captures()
    x, y = random_windows(pool, np.random.default_rng(0), 2000, 500)
    assert x.shape == y.shape == (2000, 500, 1)
    np.testing.assert_array_equal(y, -x)
    steps = np.diff(x[..., 0], axis=1)
    assert np.all(steps == 1)  # contiguous audio, never a jump from one capture into the next
    from_b = x[:, 0, 0] >= 10000
    # drawn in proportion to usable length: 2501 starts in b vs 501 in a
    assert 0.78 < from_b.mean() < 0.88


def test_fixed_windows_are_the_same_every_time_and_cover_both_captures():
    pool = _two_captures()
    first, _ = fixed_windows(pool, 16, 500)
    second, _ = fixed_windows(pool, 16, 500)
    np.testing.assert_array_equal(first, second)
    assert np.all(np.diff(first[..., 0], axis=1) == 1)
    assert (first[:, 0, 0] < 1000).any() and (first[:, 0, 0] >= 10000).any()


def test_random_windows_refuse_captures_shorter_than_a_window():
    from ampsim.core.errors import AmpsimError

    with pytest.raises(AmpsimError, match="shorter than one training window"):
        random_windows(_two_captures(), np.random.default_rng(0), 4, 5000)


def test_stream_rows_play_on_where_they_ended_and_restart_inside_one_capture():
    pool, rng = _two_captures(), np.random.default_rng(0)
    rows = StreamRows.fresh(64)
    x, y, restarted = rows.next(pool, rng, 300)
    assert restarted.all() and x.shape == y.shape == (64, 300, 1)
    np.testing.assert_array_equal(y, -x)
    for _ in range(12):
        previous_end = x[:, -1, 0]
        x, _, restarted = rows.next(pool, rng, 300)
        assert np.all(np.diff(x[..., 0], axis=1) == 1)  # one capture's contiguous audio
        np.testing.assert_array_equal(x[~restarted, 0, 0], previous_end[~restarted] + 1)  # played on
        assert 0 < restarted.sum() < 64
    # a row restarts only when its capture has no room left, and a resumed run plays on from the saved rows
    assert np.all((rows.positions - 300 >= 0))
    saved = StreamRows.of_state(json.loads(json.dumps(rows.state())))
    np.testing.assert_array_equal(saved.next(pool, np.random.default_rng(1), 300)[0],
                                  rows.next(pool, np.random.default_rng(1), 300)[0])


@pytest.mark.parametrize("length", [1, 479, 480, 481, 5280, 10_001])
def test_tiled_window_tails_rebuild_the_input_exactly(length):
    x = np.arange(1, length + 1, dtype=np.float32)
    windows = tiled_windows(x, 5280, 480)
    assert windows.shape == (-(-length // 480), 5280)
    np.testing.assert_array_equal(windows[:, -480:].reshape(-1)[:length], x)


# --- MLflow store location ------------------------------------------------------------------------------

def test_project_root_sees_through_dvc_experiment_temp_workspaces(tmp_path):
    assert project_root(tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12") == tmp_path / "proj"
    assert project_root(tmp_path / "proj") == tmp_path / "proj"


def test_tracking_uri_is_absolute_sqlite_at_the_root_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


# --- end to end on a real capture --------------------------------------------------------------------

def _mlflow_run(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client, client.get_run(run_id)


def _train_devices(tmp_path, prepared, *devices) -> dict:
    """`ampsim train` of each device on the same prepared data with tmp_path/params.yaml; their summary.json."""
    trained = {}
    for device in devices:
        assert main(["--params", str(tmp_path / "params.yaml"), "train", "--device", device, "--prepared",
                     str(prepared), "--model", str(tmp_path / device / "model"), "--reports",
                     str(tmp_path / device / "reports"), "--checkpoint", str(tmp_path / device / "ckpt"),
                     "--quiet"]) == 0
        trained[device] = json.loads((tmp_path / device / "reports" / "summary.json").read_text())
    return trained


def test_a_device_trains_with_its_own_recipe(tmp_path, boss_prepared, isolated_mlflow):
    import yaml

    params = yaml.safe_load(tiny_params(PROJECT / "params.yaml", tmp_path / "shared.yaml").read_text())
    params["recipes"] = {"ds1": {"train": {"max_steps": 2}, "lstm": {"hidden_size": 4}}, "other": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    trained = _train_devices(tmp_path, boss_prepared, "ds1", "other")
    # LSTM(H) -> Dense(1): 4H(H + 2) + H + 1 weights; ds1 has its own H and steps, the other the shared ones
    assert (trained["ds1"]["steps"], trained["ds1"]["parameters"]) == (2, 4 * 4 * 6 + 5)
    assert (trained["other"]["steps"], trained["other"]["parameters"]) == (3, 4 * 8 * 10 + 9)
    card = json.loads((tmp_path / "ds1" / "model" / "card.json").read_text())
    _, run = _mlflow_run(isolated_mlflow, card["mlflow_run_id"])
    assert run.data.params["lstm.hidden_size"] == "4" and run.data.params["recipes.ds1.lstm.hidden_size"] == "4"
    assert not any(name.startswith("recipes.other") for name in run.data.params)


def test_a_device_that_rings_like_a_cabinet_trains_through_the_ir_unless_its_recipe_says_otherwise(
        tmp_path, boss_prepared, isolated_mlflow, capsys):
    import shutil

    import yaml

    prepared = tmp_path / "prepared"
    shutil.copytree(boss_prepared, prepared)
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["cabinet"] is False  # boss-ds1 is a pedal: validate found no cabinet's ringing
    (prepared / "manifest.json").write_text(json.dumps({**manifest, "ringing_ms": 12.5, "cabinet": True}))
    params = yaml.safe_load(tiny_params(PROJECT / "params.yaml", tmp_path / "shared.yaml",
                                        train={"max_steps": 2}, lstm={"carry_state": True, "batch_size": 8}).read_text())
    params["train"]["cabinet_recipe"] = {"fit": {"through_ir_taps": 256, "through_ir_seconds": 2.0}}
    params["recipes"] = {"no-ir": {"fit": {"through_ir_taps": 0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    trained = _train_devices(tmp_path, prepared, "amp", "no-ir")
    assert trained["amp"]["through_ir_taps"] == 256 and "through_ir_taps" not in trained["no-ir"]
    assert "the captures ring for 12.5 ms, like a cabinet" in capsys.readouterr().out
    card = json.loads((tmp_path / "amp" / "model" / "card.json").read_text())
    _, run = _mlflow_run(isolated_mlflow, card["mlflow_run_id"])
    assert run.data.params["cabinet"] == "True" and run.data.params["fit.through_ir_taps"] == "256"


@pytest.mark.parametrize("architecture", ["lstm", "lstm2018"])
def test_tiny_end_to_end_train_evaluate_render_on_boss_ds1(tmp_path, boss_ds1, boss_prepared, isolated_mlflow,
                                                          architecture):
    params = str(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                             train={"architecture": architecture, "max_steps": 3, "max_minutes": 0}))
    model_dir, reports = tmp_path / "models" / "trained", tmp_path / "reports"
    assert main(["--params", params, "train", "--device", "ds1", "--prepared", str(boss_prepared), "--model",
                 str(model_dir), "--reports", str(reports / "train"), "--checkpoint", str(tmp_path / "ckpt"),
                 "--quiet"]) == 0
    card = json.loads((model_dir / "card.json").read_text())
    assert card["architecture"] == architecture and card["sample_rate"] == 48000
    if architecture == "lstm2018":
        assert (card["window_samples"], card["tail_samples"]) == (5280, 480)  # 110 ms / 10 ms at 48 kHz
    assert card["context_samples"] is None  # measured by the register stage, so render settings never retrain
    summary = json.loads((reports / "train" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["stopped"] == "max_steps 3 reached"
    assert np.isfinite(summary["best_val_loss"])
    if architecture != "wavenet":  # what shipped was checked as one stream over the whole capture
        assert summary["stream_checked"][str(summary["best_step"])] == 0 and summary["stream_check_seconds"] > 0
    if architecture == "lstm":  # the cab IR after the network: its length chosen on validation, none included
        by_taps = summary["cab_ir_val_esr"]
        assert set(by_taps) == {"0", "1024", "4096"} and by_taps[str(summary["cab_ir_taps"])] == min(by_taps.values())
        assert (card["cab_ir"] is None) == (summary["cab_ir_taps"] == 0)
    else:  # the 2018 model plays by its sliding window, as published
        assert "cab_ir_taps" not in summary and card["cab_ir"] is None
    history = (reports / "train" / "loss.csv").read_text().splitlines()
    assert history[0] == "step,train_loss,val_loss,minutes" and len(history) == 4
    assert not (tmp_path / "ckpt").exists()  # finished: the checkpoint is gone

    assert main(["--params", params, "evaluate", "--prepared", str(boss_prepared), "--model", str(model_dir),
                 "--history", str(reports / "train" / "loss.csv"), "--out", str(reports / "evaluate")]) == 0
    result = json.loads((reports / "evaluate" / "metrics.json").read_text())
    for key in ("mse_2018", "esr", "esr_pre_emphasis", "level_db"):
        assert np.isfinite(result[key])
    assert result["esr"] > 0 and result["captures"]["boss-ds1"]["esr"] == result["esr"]
    if architecture == "lstm":  # evaluation plays the network, then the IR training chose
        assert result["esr"] == pytest.approx(summary["cab_ir_val_esr"][str(summary["cab_ir_taps"])], rel=1e-3)
    assert result["val_seconds"] == pytest.approx(4.217, abs=0.01)
    if architecture == "wavenet":  # a convolution has no state to latch
        assert "stream_esr" not in result
    else:  # the whole capture (training part, then validation) as one stream and in blocks
        assert np.isfinite(result["stream_esr"]) and np.isfinite(result["stream_esr_in_blocks"])
        assert result["stream_latched_seconds"] >= 0
    for plot in ("waveform.png", "spectrograms.png", "loss.png"):
        assert (reports / "evaluate" / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["--params", params, "render-examples", "--prepared", str(boss_prepared), "--model",
                 str(model_dir), "--out", str(reports / "render")]) == 0
    for side in ("input", "target", "prediction"):
        info = sf.info(str(reports / "render" / "boss-ds1" / f"{side}.wav"))
        assert (info.samplerate, info.frames) == (48000, 48000)  # render.example_seconds: 1.0

    # the register stage: the warm-up that makes fast rendering match exact, and the validation ESR
    release = tmp_path / "models" / "release"
    assert main(["--params", params, "register", "--device", "ds1", "--prepared", str(boss_prepared), "--model",
                 str(model_dir), "--metrics", str(reports / "evaluate" / "metrics.json"), "--out", str(release)]) == 0
    card = json.loads((release / "card.json").read_text())
    assert card["context_samples"] >= (4800 if architecture == "lstm2018" else 480)
    assert card["context_esr"] <= 1e-6 and card["validation_esr"] == result["esr"] and card["device"] == "ds1"

    # the whole 21 s DI through `ampsim render`: fast mode within 1e-5 of one exact stream
    rendered = {}
    for method in ("fast", "exact") + (("sliding-window",) if architecture == "lstm2018" else ()):
        assert main(["--params", params, "render", str(boss_ds1 / "input.wav"), str(tmp_path / f"{method}.wav"),
                     "--model", str(release), "--method", method, "--subtype", "FLOAT", "--quiet"]) == 0
        rendered[method], rate = sf.read(tmp_path / f"{method}.wav", dtype="float32")
        assert rate == 48000 and len(rendered[method]) == sf.info(str(boss_ds1 / "input.wav")).frames
    from ampsim.core.metrics import esr

    assert esr(rendered["exact"], rendered["fast"]) <= 1e-5

    client, run = _mlflow_run(isolated_mlflow, card["mlflow_run_id"])
    assert run.data.params["train.architecture"] == architecture
    assert run.data.params["lstm.hidden_size"] == "8"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    assert run.data.metrics["val_esr"] == pytest.approx(result["esr"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/waveform.png", "plots/spectrograms.png", "plots/loss.png"}
    audio = {a.path for a in client.list_artifacts(run.info.run_id, "audio/boss-ds1")}
    assert "audio/boss-ds1/prediction.wav" in audio

    import mlflow

    mlflow.set_tracking_uri(isolated_mlflow)
    logged = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list")
    assert len(logged) == 1
    reloaded = mlflow.keras.load_model(logged[0].model_uri)
    from ampsim.modelling.models import load_model

    model, _ = load_model(model_dir)
    # registered under the device's name
    assert client.search_model_versions(f"name = 'ds1' and run_id = '{run.info.run_id}'")
    assert run.info.run_name.startswith(f"ds1/{architecture}/")
    probe = np.random.default_rng(5).standard_normal((1, 2000, 1)).astype(np.float32) * 0.2
    np.testing.assert_allclose(reloaded.predict(probe, verbose=0), model.predict(probe, verbose=0), atol=1e-6)


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path, boss_prepared):
    # Steps slow enough (~1 s) to kill one mid-run; the same params on the rerun, so the checkpoint fits.
    params = str(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                             train={"max_steps": 8, "max_minutes": 0},
                             lstm={"hidden_size": 8, "segment_samples": 2048, "warmup_samples": 256,
                                   "batch_size": 128, "batches_per_step": 6, "val_segments": 16}))
    command = [sys.executable, "-m", "ampsim.cli", "--params", params, "train", "--prepared", str(boss_prepared),
               "--model", "models/trained", "--reports", "reports/train", "--checkpoint", "ckpt", "--quiet"]
    state_file = tmp_path / "ckpt" / "state.json"
    process = subprocess.Popen(command, cwd=tmp_path, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.is_file() and json.loads(state_file.read_text())["step"] >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "training ended before it could be killed:\n" + process.stdout.read().decode()
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    saved = json.loads(state_file.read_text())
    killed_at = saved["step"]
    assert 2 <= killed_at < 8
    with np.load(tmp_path / "ckpt" / "best_steps.npz") as kept:  # the fallbacks a latched best would need
        assert kept["steps"][0] == saved["best_step"] and kept["val_losses"][0] == pytest.approx(saved["best_val"])
    assert not (tmp_path / "models" / "trained").exists()

    rerun = subprocess.run(command, cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from the checkpoint after step {killed_at}" in rerun.stdout
    summary = json.loads((tmp_path / "reports" / "train" / "summary.json").read_text())
    assert summary["steps"] == 8
    rows = (tmp_path / "reports" / "train" / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 9))
    before = [f"{h['val_loss']:.6g}" for h in saved["history"]]
    assert [r.split(",")[2] for r in rows[:killed_at]] == before  # the steps before the kill were kept
    # the resumed run logged to the same MLflow run: one val_loss per step, no gaps or repeats
    from mlflow.tracking import MlflowClient

    card = json.loads((tmp_path / "models" / "trained" / "card.json").read_text())
    assert card["mlflow_run_id"] == saved["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(m.step for m in client.get_metric_history(saved["run_id"], "val_loss")) == list(range(1, 9))


def test_checkpoint_of_another_job_is_not_resumed(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"key": "other-params", "step": 5}))
    for name in ("last.weights.h5", "best.weights.h5", "optimizer.npz"):
        (tmp_path / name).write_bytes(b"x")
    assert load_checkpoint(tmp_path, "this-job") is None
    assert load_checkpoint(tmp_path, "other-params")["step"] == 5
    (tmp_path / "optimizer.npz").unlink()  # a checkpoint missing a file is not resumed either
    assert load_checkpoint(tmp_path, "other-params") is None


def test_train_without_prepared_data_names_the_missing_manifest(tmp_path, ampsim_cli):
    code, _, err = ampsim_cli("train", "--prepared", str(tmp_path / "nope"), "--model", str(tmp_path / "m"),
                              "--reports", str(tmp_path / "r"), "--checkpoint", str(tmp_path / "c"), "--no-mlflow")
    assert code == 1
    assert "nope/manifest.json" in err and "dvc repro validate" in err


def test_two_trainings_of_the_same_job_give_identical_weights(tmp_path, boss_prepared):
    """Reproducible by default: a fixed number of steps, seeded, on the default backend (params.yaml's, in
    processes of their own as `dvc repro` runs them); not a time budget that depends on the machine."""
    params = str(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                             train={"max_steps": 3, "max_minutes": 0,
                                    "backend": _default_params()["train"]["backend"]}))
    weights = []
    for run in ("first", "second"):
        command = [sys.executable, "-m", "ampsim.cli", "--params", params, "train", "--prepared", str(boss_prepared),
                   "--model", f"{run}/model", "--reports", f"{run}/reports", "--checkpoint", f"{run}/ckpt",
                   "--quiet", "--no-mlflow"]
        result = subprocess.run(command, cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        from ampsim.modelling.models import load_model

        weights.append(load_model(tmp_path / run / "model")[0].get_weights())
    assert len(weights[0]) == len(weights[1])
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)
    first, second = ((tmp_path / run / "reports" / "loss.csv").read_text() for run in ("first", "second"))
    assert [row.split(",")[:3] for row in first.splitlines()] == [row.split(",")[:3] for row in second.splitlines()]


def _default_params() -> dict:
    import yaml

    return yaml.safe_load((PROJECT / "params.yaml").read_text())


@pytest.mark.parametrize("through_ir_taps", [0, 128])
def test_a_carried_state_training_resumes_exactly_where_it_was_stopped(tmp_path, boss_prepared, through_ir_taps):
    """lstm.carry_state: the rows' places and the trainer's carried state are in the checkpoint, so a run
    stopped after step 2 and resumed ends with the weights of a run never stopped; trained through an IR
    (`fit.through_ir_taps`), with the IR that step fitted and its carried history."""
    import yaml

    from ampsim.core.params import device_params
    from ampsim.modelling.models import load_model
    from ampsim.modelling.training import train, train_config

    params = yaml.safe_load(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                                        train={"max_steps": 4, "max_minutes": 0},
                                        lstm={"carry_state": True, "batch_size": 8},
                                        fit={"through_ir_taps": through_ir_taps, "through_ir_seconds": 1.0,
                                             "through_ir_alone_steps": 2}).read_text())  # first fitted at the stop
    config = train_config(device_params(params, None), 48000)

    class Stop(Exception):
        pass

    def stop_after_two(model, state, trained_ir):
        if state["step"] == 2:
            raise Stop

    def run(name, on_step=None):
        return train(boss_prepared, tmp_path / name / "model", tmp_path / name / "reports", tmp_path / name / "ckpt",
                     config, progress=False, log=lambda _: None, on_step=on_step)

    run("whole")
    with pytest.raises(Stop):
        run("stopped", stop_after_two)
    assert json.loads((tmp_path / "stopped" / "ckpt" / "state.json").read_text())["rows"]["positions"]
    assert run("stopped")["steps"] == 4
    whole, resumed = (load_model(tmp_path / name / "model")[0].get_weights() for name in ("whole", "stopped"))
    for a, b in zip(whole, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history = [(tmp_path / name / "reports" / "loss.csv").read_text().splitlines() for name in ("whole", "stopped")]
    assert [row.split(",")[1] for row in history[0]] == [row.split(",")[1] for row in history[1]]


def test_a_carried_state_trains_on_the_default_backend(tmp_path, boss_prepared):
    """The in-process tests run on TensorFlow; `dvc repro` trains on params.yaml's backend (JAX). With the
    default `carry_state: auto`, a single capture carries its state."""
    params = str(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                             train={"max_steps": 2, "max_minutes": 0, "backend": _default_params()["train"]["backend"]}))
    command = [sys.executable, "-m", "ampsim.cli", "--params", params, "train", "--prepared", str(boss_prepared),
               "--model", "model", "--reports", "reports", "--checkpoint", "ckpt", "--quiet", "--no-mlflow"]
    result = subprocess.run(command, cwd=tmp_path, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["carried_state"]  # carry_state: auto carries a single capture's


def test_carry_state_is_auto_by_default_and_a_wrong_value_is_named():
    from ampsim.core.errors import AmpsimError
    from ampsim.core.params import device_params
    from ampsim.modelling.architectures import carries_state
    from ampsim.modelling.training import recipe, train_config

    params = _default_params()
    plan = recipe(train_config(device_params(params, None), 48000))
    assert plan.carry == "auto" and carries_state(plan, 0) and not carries_state(plan, 1)
    params["lstm"]["carry_state"] = "yes"
    with pytest.raises(AmpsimError, match="lstm.carry_state") as error:
        recipe(train_config(device_params(params, None), 48000))
    assert "knob set" in error.value.fix


def test_a_run_gone_astray_goes_back_to_its_best_weights_with_a_fresh_optimiser(tmp_path, boss_prepared):
    """fit.plateau_steps: after that many steps without a better val_loss, the trainer holds the best step's
    weights again, Adam starts afresh and the learning rate is scaled down from then on."""
    import yaml

    from ampsim.core.params import device_params
    from ampsim.modelling.training import (Progress, back_to_best, gone_astray, prepare_job, save_checkpoint,
                                           train, train_config, train_step)

    params = yaml.safe_load(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml",
                                        fit={"plateau_steps": 2, "back_to_best_factor": 0.5}).read_text())
    config = train_config(device_params(params, None), 48000)
    job, _ = prepare_job(boss_prepared, config)
    bar = Progress(0, 0, 10, 0, enabled=False)
    train_step(job, config, bar)
    job.state.update(step=1, best_step=1, best_val=0.5)
    save_checkpoint(tmp_path / "ckpt", job.trainer, job.state, improved=True)
    def weights():
        return [keras.ops.convert_to_numpy(w) for w in job.trainer.trainable_weights]

    best = weights()
    train_step(job, config, bar)
    train_step(job, config, bar)
    job.state["step"] = 3
    assert gone_astray(job.state, job.plan) == "no better val_loss for 2 steps"
    assert any(not np.array_equal(a, b) for a, b in zip(best, weights()))
    back_to_best(job, tmp_path / "ckpt", "plateau", log=lambda _: None)
    for a, b in zip(best, weights()):
        np.testing.assert_array_equal(a, b)
    assert int(job.trainer.optimizer.iterations) == 0 and job.state["lr_scale"] == 0.5
    assert job.state["back_to_best"] == [3] and gone_astray(job.state, job.plan) is None
    # in a whole run: a learning rate of 0 never betters step 1, so every second step goes back to it
    params["fit"].update(learning_rate=0.0, final_learning_rate=0.0)
    params["train"]["max_steps"] = 6
    summary = train(boss_prepared, tmp_path / "model", tmp_path / "reports", tmp_path / "ckpt2",
                    train_config(device_params(params, None), 48000), progress=False, log=lambda _: None)
    assert summary["best_step"] == 1 and summary["back_to_best"] == [3, 5]


def test_a_step_whose_validation_loss_blows_up_goes_back_to_the_best_weights():
    """fit.diverged_ratio: a step's val_loss over that many times the best sends training back before the next
    step, once (the step it went back at is recorded), and not for a loss within the ratio."""
    from ampsim.modelling.architectures import Recipe
    from ampsim.modelling.training import gone_astray

    plan = Recipe(1, 1, 1, 1, 0.01, 0.001, 20, 1, None, "esr", diverged=4.0, back_factor=0.5)
    def state(*val_losses):
        best = min(range(len(val_losses)), key=val_losses.__getitem__)
        return {"step": len(val_losses), "best_step": best + 1, "best_val": val_losses[best], "back_to_best": [],
                "history": [{"step": i + 1, "val_loss": v} for i, v in enumerate(val_losses)]}

    assert gone_astray(state(0.5, 0.1, 0.35), plan) is None
    assert gone_astray(state(0.5, 0.1, 0.74), plan) == "val_loss 0.74, over 4x the best"
    assert gone_astray(state(0.5, 0.1, float("nan")), plan) is not None
    went_back = {**state(0.5, 0.1, 0.74), "back_to_best": [3]}
    assert gone_astray(went_back, plan) is None
    assert gone_astray(state(0.9), plan) is None  # the first step is the best so far
    assert gone_astray(state(0.5, 0.1, 0.74), Recipe(1, 1, 1, 1, 0.01, 0.001, 20, 1, None, "esr")) is None


def test_patience_stops_a_run_that_stopped_improving_and_0_lets_it_use_its_whole_budget():
    from types import SimpleNamespace

    from ampsim.modelling.architectures import Recipe
    from ampsim.modelling.training import stop_reason

    config = SimpleNamespace(train=SimpleNamespace(max_steps=100, max_minutes=15.0))
    stalled = {"step": 40, "best_step": 20, "seconds": 300.0}
    patient, never = (Recipe(1, 1, 1, 1, 0.01, 0.001, patience, 1, None, "esr") for patience in (20, 0))
    assert stop_reason(stalled, config, patient) == "early stopping: no better val_loss for 20 steps"
    assert stop_reason({**stalled, "step": 39}, config, patient) is None
    assert stop_reason(stalled, config, never) is None
    assert stop_reason({**stalled, "seconds": 900.0}, config, never) == "time budget of 15 min reached"
    assert stop_reason({**stalled, "step": 100}, config, never) == "max_steps 100 reached"


def test_the_default_guard_goes_back_after_a_collapse_and_lets_the_ordinary_spikes_be():
    """params.yaml's fit.diverged_ratio, on the DS-1's own validation losses: the panel run that collapsed at
    step 99 (0.0142 -> 1.011, 71x, never back; bench/RESULTS.md, session 21) goes back, and a spike of 7.7x its
    best, from which a run came back by itself to its best figure (session 20), does not."""
    import yaml

    from ampsim.core.params import device_params
    from ampsim.modelling.architectures import Recipe
    from ampsim.modelling.training import gone_astray, train_config

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    ratio = train_config(device_params(params, None), 48000).fit.diverged_ratio
    plan = Recipe(1, 1, 1, 1, 0.01, 0.001, 20, 1, None, "esr", diverged=ratio, back_factor=0.5)
    def after_best(best, last):
        return {"step": 2, "best_step": 1, "best_val": best, "back_to_best": [],
                "history": [{"step": 1, "val_loss": best}, {"step": 2, "val_loss": last}]}

    assert gone_astray(after_best(0.0141593, 1.01113), plan) is not None
    assert gone_astray(after_best(0.0141593, 0.0141593 * 7.7), plan) is None


def test_the_cabinet_recipe_goes_back_when_the_network_falls_silent():
    """train.cabinet_recipe's fit.collapsed_loss, on the 5150's own validation losses through its IR (seed 2018,
    bench/RESULTS.md, session 26): at a best of 0.0505 the run collapsed to 0.667 (13x, under the 20x ratio) and
    stayed there for 40 steps; it goes back. A spike to 0.239 at a best of 0.0250, from which seed 7 came back by
    itself, does not; nor does a wrong first IR (0.727 at a best of 0.161, from the steps alone), which the
    run learnt its way out of, as no good best exists yet to go back to."""
    import yaml

    from ampsim.core.params import device_params
    from ampsim.modelling.architectures import streaming_lstm
    from ampsim.modelling.training import gone_astray, train_config

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    cabinet = train_config(device_params(params, None, cabinet=True), 48000)
    plan = streaming_lstm.recipe(cabinet)
    plain = streaming_lstm.recipe(train_config(device_params(params, None), 48000))
    def after_best(best, last):
        return {"step": 2, "best_step": 1, "best_val": best, "back_to_best": [],
                "history": [{"step": 1, "val_loss": best}, {"step": 2, "val_loss": last}]}

    assert gone_astray(after_best(0.0505116, 0.666752), plan) == "val_loss 0.6668, over 0.5: collapsed"
    assert gone_astray(after_best(0.0505116, 0.666752), plain) is None  # devices without a cabinet: the ratio alone
    assert gone_astray(after_best(0.0250422, 0.238673), plan) is None
    assert gone_astray(after_best(0.16139, 0.726847), plan) is None
