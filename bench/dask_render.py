"""The render flow on Dask: the same folder of DI takes rendered by a local cluster of 1 worker and of 2, in one
run, with the same registered model; prints both wall-clock times (the cluster's start-up included, Prefect's
temporary server not: a first, untimed flow run starts it), the speed-up
and the largest ESR between the two renderings of a file (they must agree).

    .venv/bin/python bench/dask_render.py                        # models:/demo@render, 16 takes of 2 minutes
    .venv/bin/python bench/dask_render.py --model models:/ds1/3 --takes 16 --seconds 60 --workers 1,2,4

Needs a registered model in the project's MLflow store (`dvc repro` registers the demo; `ampsim promote`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "pipeline"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models:/demo@render", help="a registry URI")
    parser.add_argument("--di", default=str(PROJECT / "data" / "captures" / "demo" / "gain-0.5" / "input.wav"))
    parser.add_argument("--knob", action="append", default=["gain=0.5"], metavar="NAME=VALUE")
    parser.add_argument("--takes", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--workers", default="1,2", help="local cluster sizes, compared with the first")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per file on each worker (1: one core per worker; render.workers otherwise)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    import flows

    knobs = {name: float(value) for name, value in (item.split("=", 1) for item in args.knob)}
    di, rate = sf.read(args.di, dtype="float32")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ampsim-dask-") as tmp:
        takes = Path(tmp) / "takes"
        takes.mkdir()
        for index in range(args.takes):  # different audio per take: each starts elsewhere in the DI
            start = index * len(di) // args.takes
            sf.write(takes / f"take{index:02d}.wav", np.resize(np.roll(di, -start), int(args.seconds * rate)), rate,
                     subtype="PCM_24")
        # Untimed: the first flow run of a process starts Prefect's temporary server (without PREFECT_API_URL)
        warm_up = Path(tmp) / "warm-up"
        warm_up.mkdir()
        sf.write(warm_up / "take.wav", di[:rate], rate, subtype="PCM_24")
        flows.render_folder(str(warm_up), str(Path(tmp) / "warm-up-out"), model=args.model, project=str(PROJECT),
                            knobs=knobs, dask_workers=1)
        for workers in [int(w) for w in args.workers.split(",")]:
            out = Path(tmp) / f"out-{workers}"
            started = time.perf_counter()
            flows.render_folder(str(takes), str(out), model=args.model, project=str(PROJECT), knobs=knobs,
                                dask_workers=workers, threads_per_file=args.threads)
            rows[workers] = {"wall_seconds": time.perf_counter() - started, "folder": out}
        first = next(iter(rows.values()))
        audio_seconds = args.takes * args.seconds
        for row in rows.values():
            row["x_real_time"] = audio_seconds / row["wall_seconds"]
            row["speed_up"] = first["wall_seconds"] / row["wall_seconds"]
            row["max_esr_vs_first"] = max(
                float(np.sum((a - b) ** 2) / np.sum(a**2))
                for a, b in ((sf.read(first["folder"] / f.name, dtype="float64")[0],
                              sf.read(row["folder"] / f.name, dtype="float64")[0]) for f in sorted(takes.iterdir())))
        for row in rows.values():
            del row["folder"]  # a temporary path: not a figure
    print(f"render flow on a local Dask cluster: {args.takes} takes x {args.seconds:g} s, {args.model}, "
          f"{args.threads} thread(s) per file")
    for workers, row in rows.items():
        print(f"  {workers} worker(s): {row['wall_seconds']:6.1f} s wall, {row['x_real_time']:5.1f}x real time, "
              f"speed-up {row['speed_up']:.2f}x, max ESR vs {next(iter(rows))} worker(s) {row['max_esr_vs_first']:.1e}")
    if args.out:
        Path(args.out).write_text(json.dumps({str(k): v for k, v in rows.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
