from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ampsim.cli import main
from ampsim.data.demo import synth_di, virtual_amp

PROJECT = Path(__file__).resolve().parents[1]
SHARED_CAPTURES = PROJECT.parent / "shared" / "captures"
SHARED_TEACHERS = PROJECT.parent / "shared" / "teachers"
RATE = 48000
# bench/ holds NAM's own trainer and the teachers' loader, which tests use as references
sys.path.insert(0, str(PROJECT / "bench"))
# boss-ds1's wet side leads its DI (its response starts 15 samples ahead), so validate refuses it as it is;
# its capture.yaml must state the latency: the onset less the safety margin (bench/RESULTS.md).
BOSS_DS1_LATENCY = -19


@pytest.fixture(scope="session")
def params_file() -> Path:
    return PROJECT / "params.yaml"


@pytest.fixture(scope="session")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """10 s of synthetic DI (opening with 1.5 s of sweeps, as capture signals do) and the virtual amp's
    answer (0.5 ms latency)."""
    dry = synth_di(10.0, RATE, seed=7)
    return dry, virtual_amp(dry, RATE, gain=0.5, latency_ms=0.5)


def trained_like(model, seed: int, scale: float = 0.3):
    """Random weights at the scale of a trained model's (Keras' initialisers leave the head tiny)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, scale, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def decaying_di(seconds: float, seed: int) -> np.ndarray:
    """A repeated decaying low note with a little noise: DI-like input for rendering tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * 98 * t) * np.exp(-2 * (t % 0.5)) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def write_capture(root: Path, name: str, dry: np.ndarray, wet: np.ndarray, *, dry_rate: int = RATE,
                  wet_rate: int = RATE, subtype: str = "FLOAT", meta: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "input.wav", dry, dry_rate, subtype=subtype)
    sf.write(folder / "output.wav", wet, wet_rate, subtype=subtype)
    if meta is not None:
        (folder / "capture.yaml").write_text(yaml.safe_dump(meta))
    return folder


def run_ampsim(capsys, params_file: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--params", str(params_file), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ampsim_cli(capsys, params_file):
    def run(*args: str, params: Path | None = None) -> tuple[int, str, str]:
        return run_ampsim(capsys, params or params_file, *args)

    return run


def shared_or_skip(path: Path, what: str) -> Path:
    """A file of ../shared, which CI has: missing there is a failure, elsewhere a skip."""
    if not path.exists():
        message = f"{what} not found at {path} (../shared beside the project)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def nam_models():
    """NAM's own reader (neural-amp-modeler on PyTorch), which exports and imports are checked against."""
    try:
        import nam.models
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"neural-amp-modeler is not installed ({exc}); `make test` installs it")
        pytest.skip(f"neural-amp-modeler not installed ({exc}); run `make test`")
    return nam.models


@pytest.fixture(scope="session")
def boss_ds1() -> Path:
    return shared_or_skip(SHARED_CAPTURES / "boss-ds1" / "input.wav", "real capture").parent


def tree_digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # tools in a project copy use the copy's own store
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               GIT_AUTHOR_NAME="ampsim tests", GIT_AUTHOR_EMAIL="tests@ampsim.invalid",
               GIT_COMMITTER_NAME="ampsim tests", GIT_COMMITTER_EMAIL="tests@ampsim.invalid")
    return env


# Training knobs small enough for a test: a few seconds per stage on a 2-core CPU.
TINY_TRAINING = {
    # in-process tests share the process's backend (TensorFlow); subprocesses train on params.yaml's
    "train": {"max_steps": 3, "max_minutes": 0, "backend": "tensorflow"},
    "lstm": {"hidden_size": 8, "segment_samples": 1024, "warmup_samples": 256, "tbptt_samples": 256,
             "batch_size": 16, "batches_per_step": 2, "val_segments": 16},
    "lstm2018": {"units": 8, "batch_size": 4, "batches_per_step": 2, "val_windows": 16},
    "evaluate": {"max_tail_windows": 256, "spectrogram_seconds": 1.0},
    "render": {"example_seconds": 1.0, "context_probe_seconds": 1.0, "max_context_ms": 200.0},
}


def tiny_params(source: Path, target: Path, **overrides: dict) -> Path:
    """params.yaml with TINY_TRAINING (and `overrides`, section -> {key: value}) applied."""
    params = yaml.safe_load(Path(source).read_text())
    for name in {**TINY_TRAINING, **overrides}:
        params[name] = {**params[name], **TINY_TRAINING.get(name, {}), **overrides.get(name, {})}
    Path(target).write_text(yaml.safe_dump(params, sort_keys=False))
    return Path(target)


@pytest.fixture(autouse=True)
def isolated_mlflow(tmp_path_factory, monkeypatch) -> str:
    """Every test logs to a throwaway MLflow store, never the project's."""
    store = tmp_path_factory.getbasetemp() / "mlflow"
    store.mkdir(exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """The project's tracked files in a fresh git repo with one commit, as a clean clone would be, with
    training shrunk to TINY_TRAINING."""
    return copy_project(tmp_path)


def copy_project(tmp_path: Path) -> Path:
    """See `project_copy`: in `tmp_path`/project; its DVC remote is `tmp_path`/ampsim-dvc-storage."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True).stdout
    repo = tmp_path / "project"
    for rel in filter(None, files.decode().split("\0")):
        source = PROJECT / rel
        if source.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / rel)
    tiny_params(repo / "params.yaml", repo / "params.yaml")
    env = tool_env()
    env["DVC_SITE_CACHE_DIR"] = str(tmp_path / "dvc-site-cache")
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=repo, env=env, check=True)
    return repo


def run_tool(repo: Path, *command: str, check: bool = True, site_cache: Path | None = None) -> subprocess.CompletedProcess:
    env = tool_env()
    env["DVC_SITE_CACHE_DIR"] = str(site_cache or repo.parent / "dvc-site-cache")
    result = subprocess.run(list(command), cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """The demo device as the `demo` stage writes it (data/captures/demo), generated once per session."""
    folder = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["--params", str(PROJECT / "params.yaml"), "demo-set", "--captures", str(folder)]) == 0
    return folder


@pytest.fixture(scope="session")
def boss_prepared(tmp_path_factory, boss_ds1) -> Path:
    """boss-ds1 normalised, validated and split (time split) in a temp folder."""
    root = tmp_path_factory.mktemp("boss")
    captures = root / "captures"
    (captures / "boss-ds1").mkdir(parents=True)
    for name in ("input.wav", "output.wav"):
        os.symlink(boss_ds1 / name, captures / "boss-ds1" / name)
    (captures / "boss-ds1" / "capture.yaml").write_text(f"latency_samples: {BOSS_DS1_LATENCY}\n")
    params = str(PROJECT / "params.yaml")
    assert main(["--params", params, "normalize", "--captures", str(captures), "--out", str(root / "normalized")]) == 0
    assert main(["--params", params, "validate", "--normalized", str(root / "normalized"),
                 "--out", str(root / "prepared"), "--reports", str(root / "reports")]) == 0
    return root / "prepared"
