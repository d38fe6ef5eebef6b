"""The GPU check, run by bench/gpu.sh on a lent GPU machine (JAX there, no TensorFlow): three figures.

1. Time per 2018 step (100 batches of 16 random 110 ms crops, MSE on the last 10 ms, LSTM 64-64-1) against
   the post's ~42 s on a GTX 1080.
2. The default model's training throughput (params.yaml's recipe: samples per second and updates per second).
3. The validation ESR on boss-ds1 after `--minutes` (5) of training with params.yaml as it is.

Prints each figure as it comes and writes them to `--out` (JSON). Runs on a CPU too, as a smoke check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
POST_SECONDS_PER_STEP = 42.0  # the 2018 post: ~42 s a step (100 batches) on a GTX 1080


def seconds_per_2018_step(batches: int) -> float:
    import keras
    import numpy as np

    from ampsim.modelling.architectures.lstm2018 import lstm2018_model
    from ampsim.modelling.losses import tail_mse

    model = lstm2018_model(64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=tail_mse(480))
    x = np.random.default_rng(0).standard_normal((16, 5280, 1)).astype(np.float32) * 0.1
    model.train_on_batch(x, x)  # compiles
    started = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(x, x)
    return (time.perf_counter() - started) * 100 / batches


def default_throughput(seconds: float) -> dict:
    import numpy as np

    from ampsim.cli import _train_config
    from ampsim.core.params import load_params
    from ampsim.modelling.training import build_model, build_trainer, recipe, train_batch

    config = _train_config(load_params(PROJECT / "params.yaml"), "params.yaml", 48000)
    plan = recipe(config)
    trainer = build_trainer(config, plan, build_model(config))
    x = np.random.default_rng(0).standard_normal((plan.batch_size, plan.window, 1)).astype(np.float32) * 0.1
    train_batch(trainer, plan, x, np.tanh(3 * x))  # compiles
    batches, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        train_batch(trainer, plan, x, np.tanh(3 * x))
        batches += 1
    taken = time.perf_counter() - started
    updates = (plan.window - plan.warmup) // plan.tbptt if plan.tbptt else 1
    return {"samples_per_second": batches * plan.batch_size * plan.window / taken,
            "updates_per_second": batches * updates / taken}


def boss_esr(prepared: Path, minutes: float) -> dict:
    sys.path.insert(0, str(BENCH))
    from quality import ampsim_side

    with tempfile.TemporaryDirectory() as tmp:
        (row,) = ampsim_side(prepared, Path(tmp), [minutes])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=BENCH / "gpu-kit" / "prepared",
                        help="boss-ds1 after normalize + validate (`make gpu-kit`)")
    parser.add_argument("--prepare-only", action="store_true", help="write --prepared from ../shared and stop")
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes on boss-ds1")
    parser.add_argument("--batches", type=int, default=20, help="2018 batches timed (a step is 100)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu.json")
    args = parser.parse_args()
    if args.prepare_only:
        sys.path.insert(0, str(BENCH))
        from quality import CAPTURE_YAML, DATASETS, prepare_capture

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(prepare_capture(DATASETS["boss-ds1"], Path(tmp), CAPTURE_YAML["boss-ds1"]), args.prepared, dirs_exist_ok=True)
        return
    import keras

    figures = {"backend": keras.backend.backend(), "devices": _devices()}
    print(json.dumps(figures), flush=True)
    figures["seconds_per_2018_step"] = seconds_per_2018_step(args.batches)
    figures["post_over_ours"] = POST_SECONDS_PER_STEP / figures["seconds_per_2018_step"]
    print(f"2018 step: {figures['seconds_per_2018_step']:.2f} s (post: ~{POST_SECONDS_PER_STEP:g} s on a GTX 1080, "
          f"{figures['post_over_ours']:.1f}x)", flush=True)
    figures["default_model"] = default_throughput(30.0)
    print(f"default model: {figures['default_model']}", flush=True)
    figures["boss_ds1"] = boss_esr(args.prepared, args.minutes)
    print(f"boss-ds1 after {args.minutes:g} min: {figures['boss_ds1']}", flush=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


def _devices() -> list[str]:
    try:
        import jax

        return [str(d) for d in jax.devices()]
    except ImportError:
        return []


if __name__ == "__main__":
    main()
