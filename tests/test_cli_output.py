"""What a user sees of the `ampsim` command itself: a whole-sentence --help with the usual order of the
commands, and no TensorFlow/JAX log chatter around a command's own output or its errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ampsim.cli import DESCRIPTION, main
from conftest import PROJECT, RATE, decaying_di


def test_help_says_what_ampsim_does_in_whole_sentences_and_the_usual_order(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert DESCRIPTION in text and DESCRIPTION.rstrip().endswith(".")
    assert "learns a guitar amp" in text and "through the amp)" in text
    order = text[text.index("usual order:"):]
    positions = [order.index(name) for name in ("demo-capture", "normalize", "validate", "train", "evaluate",
                                                "render-examples", "promote", "render IN", "export")]
    assert positions == sorted(positions)
    assert "dvc repro" in order


# C++ and Python log lines of TensorFlow, XLA and JAX that read as errors on a CPU machine
CHATTER = ("failed call to cuInit", "cpu_feature_guard", "rebuild TensorFlow", "oneDNN custom operations",
           "XLA service", "StreamExecutor", "Compiled cluster using XLA", "retracing", "An NVIDIA GPU may be present",
           "Platform 'cuda'", "WARNING:absl", "cudart_stub", "absl::InitializeLog", "I0000 ", "W0000 ", "E0000 ")


def test_ampsim_keeps_tensorflow_logs_out_of_its_output_but_not_its_errors(tmp_path):
    keras = pytest.importorskip("keras")
    from ampsim.modelling.architectures.streaming_lstm import lstm_model
    from ampsim.modelling.models import ModelCard, save_model

    keras.utils.set_random_seed(0)
    save_model(lstm_model(8, 1, False), ModelCard("lstm", RATE, 1, 1024, 768, ["t"], None, 960, 1e-9, 0.1),
               tmp_path / "model")
    sf.write(tmp_path / "di.wav", decaying_di(0.3, seed=1), RATE, subtype="PCM_24")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT / "src"), env.get("PYTHONPATH", "")])

    def ampsim(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ampsim.cli", "--params", str(PROJECT / "params.yaml"), *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    render = ["render", str(tmp_path / "di.wav"), str(tmp_path / "out.wav"), "--model", str(tmp_path / "model"),
              "--quiet", "--method", "fast"]
    done = ampsim(*render)  # renders: TensorFlow compiles and runs
    assert done.returncode == 0, done.stderr
    assert "out.wav" in done.stdout
    failed = ampsim(*render)  # the output exists now: a user's error, after the model has loaded
    assert failed.returncode == 1
    assert "ampsim render: error:" in failed.stderr and "output file exists" in failed.stderr
    for result in (done, failed):
        assert not [line for line in result.stderr.splitlines() if any(words in line for words in CHATTER)], \
            result.stderr
    assert np.sum(sf.read(tmp_path / "out.wav")[0] ** 2) > 0
