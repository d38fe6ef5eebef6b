"""The CPU benchmark: quality vs training time, render speed, training throughput against a physical
bound, peak memory. Each figure is measured in the same run as what it is compared with; timings are
medians of several runs. Prints one table and writes JSON.

    make bench                       # the whole benchmark, about 22 minutes on a 2-core CPU
    .venv/bin/python bench/run.py --quality-minutes 1 --repeats 1 --out /tmp/quick.json   # a smoke run

Needs ../shared/captures/boss-ds1 (the real capture the figures are about).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import cpu_model  # noqa: E402  (bench/ is not a package)

PROJECT = Path(__file__).resolve().parents[1]
BOSS = PROJECT.parent / "shared" / "captures" / "boss-ds1"
RATE = 48000


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def matmul_gflops(repeats: int) -> float:
    """The machine's float32 matrix-multiply rate through numpy's BLAS: the physical bound we compare with."""
    a, b = (np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32) for _ in range(2))
    a @ b
    seconds = median_seconds(lambda: a @ b, max(repeats, 5))
    return 2 * 2048**3 / seconds / 1e9


def lstm_macs_per_sample(sizes: list[tuple[int, int]], head: int) -> int:
    """Multiply-adds of one forward time step: 4H(I + H) per LSTM layer (I inputs, H units), plus the head."""
    return sum(4 * h * (i + h) for i, h in sizes) + head


def prepare_boss(work: Path, params_file: Path) -> Path:
    from ampsim.cli import main

    captures = work / "captures" / "boss-ds1"
    captures.mkdir(parents=True)
    for name in ("input.wav", "output.wav"):
        os.symlink(BOSS / name, captures / name)
    assert main(["--params", str(params_file), "normalize", "--captures", str(work / "captures"),
                 "--out", str(work / "normalized")]) == 0
    assert main(["--params", str(params_file), "validate", "--normalized", str(work / "normalized"),
                 "--out", str(work / "prepared"), "--reports", str(work / "validate")]) == 0
    return work / "prepared"


def quality_vs_time(prepared: Path, work: Path, params: dict, marks: list[float]) -> dict:
    """Train the default model on boss-ds1 for max(marks) minutes; the validation ESR (whole validation
    audio, exact rendering, the weights of that moment) each time training time passes a mark."""
    from ampsim.cli import _train_config
    from ampsim.core.metrics import esr
    from ampsim.core.params import RenderParams, section
    from ampsim.data.windows import load_split, read_manifest
    from ampsim.inference.engine import render_exact
    from ampsim.modelling.training import train

    params = json.loads(json.dumps(params))
    params["train"]["max_minutes"] = max(marks)
    params["train"]["max_steps"] = 10**6
    params["fit"]["patience"] = 10**6  # the curve, not early stopping
    config = _train_config(params, "params.yaml", read_manifest(prepared)["sample_rate"])
    render_params = section(params, "render", RenderParams)
    val = load_split(prepared, "val")
    target = np.concatenate([s.y for s in val])
    pending, curve = sorted(marks), []

    def score(model, state, trained_ir=None):
        while pending and state["seconds"] / 60 >= pending[0]:
            prediction = np.concatenate([render_exact(model, s.x, render_params.exact_chunk_samples,
                                                      render_params.jit_compile) for s in val])
            curve.append({"minutes": pending.pop(0), "trained_minutes": round(state["seconds"] / 60, 2),
                          "step": state["step"], "val_esr": esr(target, prediction)})
            print(f"  quality: {curve[-1]}", flush=True)

    summary = train(prepared, work / "model", work / "train", work / "ckpt", config, progress=False, log=print,
                    on_step=score)
    return {"curve": curve, "summary": summary,
            "peak_rss_mb_after_training": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def render_speed(model, card, x: np.ndarray, methods: list[str], params, repeats: int) -> dict:
    """× real time of each method on `x` (median of `repeats` after a first run that compiles), and the
    ESR of each against `exact`. "sliding-window-2018" is the 2018 method as the post ran it: Keras predict
    over the windows, no XLA."""
    from ampsim.core.metrics import esr
    from ampsim.inference.engine import renderer

    seconds = len(x) / card.sample_rate
    outputs, rows = {}, {}
    for method in methods:
        if method == "sliding-window-2018":
            render_chunks = renderer(model, card, "sliding-window", dataclasses.replace(params, jit_compile=False))
        else:
            render_chunks = renderer(model, card, method, params)
        started = time.perf_counter()
        outputs[method] = render_chunks(x)  # the first run compiles (one trace per batch shape)
        first = time.perf_counter() - started

        def again():
            render_chunks.reset()
            render_chunks(x)

        # a method slower than ~real time is timed by its first run alone (compiling is a fraction of it)
        taken = first if first > 20 else median_seconds(again, repeats)
        rows[method] = {"x_real_time": seconds / taken, "seconds": taken, "first_run_seconds": first}
    for method in methods:
        rows[method]["esr_vs_exact"] = esr(outputs["exact"], outputs[method]) if "exact" in outputs else None
    return {"audio_seconds": seconds, "methods": rows}


def train_throughput(model, batch: int, window: int, loss, repeats: int) -> float:
    """Samples per second of `train_on_batch` (median over batches, after compiling)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, window, 1)).astype(np.float32) * 0.1
    model.train_on_batch(x, x)
    seconds = median_seconds(lambda: model.train_on_batch(x, x), max(repeats, 5))
    return batch * window / seconds


def render_peak_memory(model_dir: Path, work: Path, minutes: list[float], method: str) -> dict:
    """Peak resident memory of `ampsim render` (a fresh process each) on DI files of these lengths."""
    rows = {}
    source = sf.read(BOSS / "input.wav", dtype="float32")[0]
    for length in minutes:
        path = work / f"di-{length:g}min.wav"
        frames = int(length * 60 * RATE)
        sf.write(path, np.resize(source, frames), RATE, subtype="PCM_24")
        probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                 "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode)")
        out = subprocess.run([sys.executable, "-c", probe, str(Path(sys.executable).parent / "ampsim"),
                              "--params", str(PROJECT / "params.yaml"), "render", str(path),
                              str(work / f"out-{length:g}min.wav"), "--model", str(model_dir), "--method", method,
                              "--force", "--quiet"], capture_output=True, text=True, check=True).stdout.split()
        assert out[2] == "0", f"render of {path} failed"
        rows[f"{length:g} min"] = {"peak_rss_mb": int(out[0]) / 1024, "wall_seconds": float(out[1]),
                                   "audio_mb": frames * 4 / 2**20}
    return rows


def machine() -> dict:
    info = {"date": dt.date.today().isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "cpu": cpu_model()}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    import keras
    import tensorflow as tf

    info.update(keras=keras.__version__, tensorflow=tf.__version__, backend=keras.backend.backend())
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quality-minutes", default="2,5,10,15", help="training-time marks (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--out", default=str(PROJECT / "bench" / "results.json"))
    args = parser.parse_args()
    if not (BOSS / "input.wav").is_file():
        print(f"bench: the real capture is missing: {BOSS}", file=sys.stderr)
        return 1

    from ampsim.core.params import FitParams, LstmParams, RenderParams, load_params, section
    from ampsim.data.windows import load_split
    from ampsim.inference.warmup import context_candidates, measure_context, with_warmup
    from ampsim.modelling.architectures.lstm2018 import lstm2018_model
    from ampsim.modelling.architectures.streaming_lstm import lstm_model
    from ampsim.modelling.losses import tail_mse
    from ampsim.modelling.models import ModelCard, load_model

    params = load_params(PROJECT / "params.yaml")
    render_params = section(params, "render", RenderParams)
    lstm = section(params, "lstm", LstmParams)
    fit = section(params, "fit", FitParams)
    results: dict = {"machine": machine()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ampsim-bench-") as tmp:
        work = Path(tmp)
        prepared = prepare_boss(work / "boss", PROJECT / "params.yaml")

        print("1/6 quality vs training time (default params, boss-ds1)", flush=True)
        marks = [float(m) for m in args.quality_minutes.split(",")]
        results["quality"] = quality_vs_time(prepared, work / "quality", params, marks)

        print("2/6 the machine's matrix-multiply rate", flush=True)
        gflops = matmul_gflops(args.repeats)
        results["matmul_gflops"] = gflops

        print("3/6 render speed", flush=True)
        di = sf.read(BOSS / "input.wav", dtype="float32")[0]
        default_model, default_card = load_model(work / "quality" / "model")
        default_card = with_warmup(default_model, default_card, load_split(prepared, "val"),
                                   load_split(prepared, "train"), render_params)  # as the register stage does
        results["render_default"] = render_speed(default_model, default_card, np.resize(di, 60 * RATE),
                                                 ["fast", "exact"], render_params, args.repeats)
        # The 2018 model: its weights drawn at a trained model's scale (training it takes hours on a CPU);
        # speed does not depend on the values, and the warm-up is measured for these weights as after training.
        seed = lstm2018_model(64)
        rng = np.random.default_rng(2018)
        seed.set_weights([rng.normal(0, 0.15, w.shape).astype(np.float32) for w in seed.get_weights()])
        context, context_esr = measure_context(seed, di, context_candidates(4800, 96000),
                                               int(render_params.block_ms * RATE / 1000), render_params)
        seed_card = ModelCard("lstm2018", RATE, 1, 5280, 480, ["boss-ds1"], None, context, context_esr, None)
        results["render_seed"] = render_speed(seed, seed_card, np.resize(di, 60 * RATE),
                                              ["sliding-window-2018", "fast", "exact"],
                                              render_params, args.repeats)
        results["render_seed"]["context_samples"] = context
        results["render_default"]["context_samples"] = default_card.context_samples

        print("4/6 training throughput", flush=True)
        from ampsim.modelling.losses import esr_dc_loss

        lstm_mac = lstm_macs_per_sample([(1, lstm.hidden_size)] + [(lstm.hidden_size, lstm.hidden_size)]
                                        * (lstm.num_layers - 1), lstm.hidden_size)
        seed_mac = lstm_macs_per_sample([(1, 64), (64, 64), (64, 1)], 0)
        throughput = {}
        for name, model, batch, window, loss, macs in (
                ("lstm", lstm_model(lstm.hidden_size, lstm.num_layers, lstm.input_skip), lstm.batch_size,
                 lstm.segment_samples, esr_dc_loss(lstm.warmup_samples, fit.pre_emphasis, fit.dc_weight), lstm_mac),
                ("lstm2018", lstm2018_model(64), 16, 5280, tail_mse(480), seed_mac)):
            rate = train_throughput(model, batch, window, loss, args.repeats)
            bound = gflops * 1e9 / (2 * 3 * macs)  # forward + backward ~ 3x the forward multiply-adds
            throughput[name] = {"samples_per_second": rate, "macs_per_sample_forward": macs,
                                "bound_samples_per_second": bound, "share_of_bound": rate / bound,
                                "batch": [batch, window]}
        results["train_throughput"] = throughput

        print("5/6 peak memory of rendering long files", flush=True)
        results["render_memory"] = render_peak_memory(work / "quality" / "model", work, [1.0, 10.0], "fast")

        print("6/6 one 3-minute take in a fresh process: ONNX Runtime against Keras", flush=True)
        from startup import one_take

        from ampsim.inference.runtime import verified_graph
        from ampsim.modelling.models import save_model

        release = work / "release"
        save_model(default_model, default_card, release, runtime_graph=verified_graph(
            default_model, default_card, di[: int(render_params.context_probe_seconds * RATE)], render_params))
        results["startup"] = one_take(release, di, RATE, 3.0, {}, args.repeats)
    results["bench_minutes"] = (time.perf_counter() - started) / 60
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(table(results))
    print(f"\nwritten {args.out}")
    return 0


def table(r: dict) -> str:
    lines = [f"ampsim CPU benchmark, {r['machine']['date']}, {r['machine'].get('cpu', '?')}, "
             f"{r['machine']['cpus']} CPUs, TF {r['machine']['tensorflow']} / Keras {r['machine']['keras']}", ""]
    lines.append("quality vs training time (default lstm, boss-ds1 time split, whole validation audio, exact)")
    for row in r["quality"]["curve"]:
        lines.append(f"  {row['minutes']:>5g} min  step {row['step']:>4}  val ESR {row['val_esr']:.4f}")
    lines.append("")
    lines.append("render speed (x real time, median) and ESR against exact")
    for key, label in (("render_default", "default lstm"), ("render_seed", "2018 seed")):
        for method, row in r[key]["methods"].items():
            esr = "" if row["esr_vs_exact"] is None else f"  ESR vs exact {row['esr_vs_exact']:.2e}"
            lines.append(f"  {label:<13} {method:<20} {row['x_real_time']:8.2f}x{esr}")
    seed = r["render_seed"]["methods"]
    lines.append(f"  2018 model: fast / its 2018 sliding window = "
                 f"{seed['fast']['x_real_time'] / seed['sliding-window-2018']['x_real_time']:.1f}x (target >= 20); "
                 f"default model fast = {r['render_default']['methods']['fast']['x_real_time']:.0f}x "
                 f"real time (target >= 50)")
    lines.append("")
    lines.append(f"training throughput (numpy matmul: {r['matmul_gflops']:.1f} GFLOP/s float32)")
    for name, row in r["train_throughput"].items():
        lines.append(f"  {name:<5} batch {row['batch'][0]} x {row['batch'][1]}: {row['samples_per_second']:,.0f} "
                     f"samples/s, {row['macs_per_sample_forward']:,} MAC/sample forward, bound "
                     f"{row['bound_samples_per_second']:,.0f}/s, share {100 * row['share_of_bound']:.1f} %")
    lines.append("")
    lines.append("peak memory of `ampsim render --method fast` (fresh process)")
    for length, row in r["render_memory"].items():
        lines.append(f"  {length:>7}: {row['peak_rss_mb']:.0f} MB peak RSS ({row['audio_mb']:.0f} MB of audio as "
                     f"float32), {row['wall_seconds']:.1f} s wall")
    lines.append(f"  training process peak RSS: {r['quality']['peak_rss_mb_after_training']:.0f} MB")
    if "startup" in r:
        from startup import table as startup_table

        lines += ["", startup_table(r["startup"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
