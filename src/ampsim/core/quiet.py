"""Quiet output: TensorFlow's and JAX's start-up chatter is not for the user (a CPU machine is told at length
that it has no GPU); real errors still show."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

# What TensorFlow's C++ side writes while its libraries load, before any log level applies.
LOAD_NOISE = re.compile(r"All log messages before absl::InitializeLog\(\)|cudart_stub\.cc|cuda_executor|"
                        r"oneDNN custom operations are on|rebuild TensorFlow with the appropriate compiler flags|"
                        r"This TensorFlow binary is optimized to use available CPU instructions")


@contextmanager
def filtered_stderr(noise: re.Pattern = LOAD_NOISE) -> Iterator[None]:
    """Capture the process's stderr (file descriptor 2, where C++ libraries write) for the duration, then
    pass on every line that is not `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class _QuietLoad(importlib.abc.MetaPathFinder):
    """Loads the module `name`, the first time anything imports it, with `filtered_stderr`."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once: the real finders locate the module
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with filtered_stderr():
                load(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_backends() -> None:
    """Silence TensorFlow's and JAX's start-up chatter (C++ log lines about CUDA drivers a CPU machine lacks,
    CPU instruction sets, XLA, tf.function retracing, absl warnings), which a new user reads as errors. Call
    it before TensorFlow or JAX is first imported: the C++ side reads its level once, at load. Real
    failures still show, as Python exceptions and `ampsim ...: error:` lines. `TF_CPP_MIN_LOG_LEVEL=0`
    brings every log line back.

    The "cudart_stub.cc ... Could not find cuda drivers" line (and absl's "All log messages before
    absl::InitializeLog()" around it) is written by TensorFlow's libraries as they load, before any level is
    read (TF_CPP_MIN_LOG_LEVEL=3 in the shell does not stop it): the first `import tensorflow` runs with the
    process's stderr captured, and whatever else it wrote is passed on."""
    # 3, not 2: on a machine without a GPU the C++ side logs "failed call to cuInit" at ERROR level. Only
    # logging changes; TF_ENABLE_ONEDNN_OPTS is left alone, as switching oneDNN off changes the numerics.
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if level.strip() not in {"2", "3"}:
        return  # the user asked for the logs
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietLoad) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietLoad("tensorflow"))
    # tf.function retracing and Keras' saving notes arrive through these Python loggers; JAX warns through
    # xla_bridge that it found no CUDA jaxlib ("An NVIDIA GPU may be present ...", "Platform 'cuda' ...").
    for name in ("tensorflow", "jax._src.xla_bridge"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        if not any(isinstance(f, _BelowError) for f in logger.filters):
            logger.addFilter(_BelowError())  # holds even if a library lowers the level again
    # MLflow announces, at INFO, each database it creates or migrates (every new store: every fresh clone).
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # absl must create its own logger class: set its level through absl, never before its import
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)
