"""Which Keras backend a process computes with. Training picks its own (`train.backend`): on a CPU the JAX
backend's compiled recurrent loop trains the streaming LSTM 3-5x faster per timestep than TensorFlow's
(bench/RESULTS.md), while TensorFlow keeps the cuDNN kernel on a GPU. A saved model loads on any backend."""

from __future__ import annotations

import logging
import os
import sys

from ampsim.core.errors import AmpsimError

BACKENDS = ("jax", "tensorflow", "torch")


def use_backend(name: str) -> None:
    """Make `name` this process's Keras backend; Keras reads it once, when it is first imported."""
    if name not in BACKENDS:
        raise AmpsimError(f"unknown Keras backend `{name}`", path="params.yaml",
                          fix=f"set train.backend to one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:  # called in-process (tests, the benchmark): Keras is already on a backend
        import keras

        if keras.backend.backend() != name:
            print(f"ampsim: warning: training on {keras.backend.backend()}, which this process already runs, "
                  f"not train.backend {name}; `ampsim train` in a process of its own follows params.yaml",
                  file=sys.stderr)
        return
    os.environ["KERAS_BACKEND"] = name


def quiet_backends() -> None:
    """Silence TensorFlow's and JAX's start-up chatter (C++ log lines about CUDA drivers a CPU machine lacks,
    CPU instruction sets, XLA, tf.function retracing, absl warnings), which a new user reads as errors. Call
    it before TensorFlow or JAX is first imported: the C++ side reads its level once, at load. Real
    failures still show, as Python exceptions and `ampsim ...: error:` lines. `TF_CPP_MIN_LOG_LEVEL=0`
    brings every log line back.

    Not silenced: the "cudart_stub.cc ... Could not find cuda drivers" lines (and absl's "All log messages
    before absl::InitializeLog()" above them) that TensorFlow 2.21's libraries write as they load, before
    any level is read: they show with TF_CPP_MIN_LOG_LEVEL=3 set in the shell too."""
    # 3, not 2: on a machine without a GPU the C++ side logs "failed call to cuInit" at ERROR level. Only
    # logging changes; TF_ENABLE_ONEDNN_OPTS is left alone, as switching oneDNN off changes the numerics.
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if level.strip() not in {"2", "3"}:
        return  # the user asked for the logs
    # tf.function retracing and Keras' saving notes arrive through these Python loggers; JAX warns through
    # xla_bridge that it found no CUDA jaxlib ("An NVIDIA GPU may be present ...", "Platform 'cuda' ...").
    for name in ("tensorflow", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # absl must create its own logger class: set its level through absl, never before its import
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)
