"""One take, wall-clock: `ampsim render` of a 3-minute DI in a fresh process, on ONNX Runtime (the release's
graph) and on Keras, side by side in the same run (median of `--repeats` each); then the same take again in a
warm process (the renderer made once). Targets (issue 22): >= 50x real time fresh, >= 100x warm; the two
runtimes' outputs within ESR 1e-6.

    .venv/bin/python bench/startup.py                          # the demo's release, gain 0.5
    .venv/bin/python bench/startup.py --model models/ds1/release --minutes 3
`make bench` runs it on the boss-ds1 model it trains (bench/run.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

PROJECT = Path(__file__).resolve().parents[1]


def fresh_render(release: Path, take: Path, out: Path, runtime: str, knobs: dict[str, float]) -> float:
    """Wall seconds of `ampsim render` in a new process, start-up included."""
    command = [str(Path(sys.executable).parent / "ampsim"), "--params", str(PROJECT / "params.yaml"), "render",
               str(take), str(out), "--model", str(release), "--runtime", runtime, "--force", "--quiet",
               *[f"--knob={name}={value:g}" for name, value in knobs.items()]]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def warm_render(release: Path, x: np.ndarray, knobs: dict[str, float]) -> float:
    """Seconds of the second rendering of `x` by one ONNX Runtime renderer in this process."""
    from ampsim.core.params import RenderParams, load_params, section
    from ampsim.inference.runtime import released_runtime

    found = released_runtime(release, section(load_params(PROJECT / "params.yaml"), "render", RenderParams), knobs)
    if found is None:
        raise SystemExit(f"{release} has no ONNX graph with a measured warm-up: run its register stage")
    render_chunks, _ = found
    render_chunks(x)
    render_chunks.reset()
    started = time.perf_counter()
    render_chunks(x)
    return time.perf_counter() - started


def one_take(release: Path, di: np.ndarray, rate: int, minutes: float, knobs: dict[str, float], repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ampsim-startup-") as tmp:
        take = Path(tmp) / "take.wav"
        x = np.resize(di, int(minutes * 60 * rate)).astype(np.float32)
        sf.write(take, x, rate, subtype="PCM_24")
        x = sf.read(take, dtype="float32")[0]
        seconds = len(x) / rate
        rows = {}
        for runtime in ("onnx", "keras"):
            walls = [fresh_render(release, take, Path(tmp) / f"{runtime}.wav", runtime, knobs) for _ in range(repeats)]
            wall = statistics.median(walls)
            rows[runtime] = {"wall_seconds": wall, "x_real_time": seconds / wall, "walls": walls}
        outputs = {runtime: sf.read(Path(tmp) / f"{runtime}.wav", dtype="float64")[0] for runtime in rows}
        error = float(np.sum((outputs["keras"] - outputs["onnx"]) ** 2) / np.sum(outputs["keras"] ** 2))
        warm = warm_render(release, x, knobs)
    return {"audio_seconds": seconds, "fresh": rows, "warm_seconds": warm, "warm_x_real_time": seconds / warm,
            "esr_onnx_vs_keras": error, "onnx_over_keras_speed": rows["keras"]["wall_seconds"] / rows["onnx"]["wall_seconds"]}


def table(result: dict) -> str:
    fresh = result["fresh"]
    return "\n".join([
        f"one {result['audio_seconds']:.0f} s take, `ampsim render` in a fresh process (wall-clock, start-up included)",
        f"  ONNX Runtime  {fresh['onnx']['wall_seconds']:6.2f} s  {fresh['onnx']['x_real_time']:6.1f}x real time "
        f"(target >= 50)",
        f"  Keras         {fresh['keras']['wall_seconds']:6.2f} s  {fresh['keras']['x_real_time']:6.1f}x real time",
        f"  ONNX / Keras: {result['onnx_over_keras_speed']:.1f}x faster; outputs ESR {result['esr_onnx_vs_keras']:.1e} "
        "(target <= 1e-6)",
        f"  warm (renderer made once): {result['warm_seconds']:.2f} s, {result['warm_x_real_time']:.0f}x real time "
        "(target >= 100)"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(PROJECT / "models" / "demo" / "release"), help="a release folder")
    parser.add_argument("--di", default=str(PROJECT / "data" / "captures" / "demo" / "gain-0.5" / "input.wav"),
                        help="DI audio, repeated to the take's length")
    parser.add_argument("--knob", action="append", default=None, metavar="NAME=VALUE",
                        help="the model's knob setting (default for the demo: gain=0.5)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    card = json.loads((Path(args.model) / "card.json").read_text())
    knobs = dict((k, float(v)) for k, v in (item.split("=", 1) for item in args.knob)) if args.knob is not None \
        else {name: 0.5 for name in card.get("knobs", [])}
    di, rate = sf.read(args.di, dtype="float32")
    result = one_take(Path(args.model), di if di.ndim == 1 else di[:, 0], rate, args.minutes, knobs, args.repeats)
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
