"""Which Keras backend a process computes with. Training picks its own (`train.backend`): on a CPU the JAX
backend's compiled recurrent loop trains the streaming LSTM 3-5x faster per timestep than TensorFlow's
(bench/RESULTS.md), while TensorFlow keeps the cuDNN kernel on a GPU. A saved model loads on any backend."""

from __future__ import annotations

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
    # The same commit trains the same weights anywhere: XLA on a CPU (JAX) is deterministic as it is;
    # TensorFlow picks among nondeterministic kernels unless told not to.
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
