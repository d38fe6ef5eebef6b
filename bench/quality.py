"""Quality per CPU-minute, side by side: ampsim's default recipe (params.yaml as it is) against NAM's own
trainer (its default packed WaveNet, through `bench/nam_reference.py`), on the same split of the same
capture, for the same training-time budgets, in the same run.

The two train at the same time, each pinned to one core of the machine, so that whatever else loads the
machine loads both alike. At each budget each side's model as it would ship (the weights of its best
validation step so far) renders the whole validation audio and the whole training audio, and is scored:
validation ESR (what the ratio compares), pre-emphasised validation ESR, and the fit on the training
stretch. Prints a table and the ratio ampsim / NAM of validation ESR per budget; writes `quality_vs_nam`
and `ampsim_over_nam` into bench/results.json (a `--set` candidate: `quality_vs_nam_candidates`).

    make bench-quality                                    # 2, 5, 10, 15 min on boss-ds1 and the demo, ~35 min
    .venv/bin/python bench/quality.py --budgets 0.5 1 --datasets boss-ds1 --out /tmp/q.json   # a smoke run
    .venv/bin/python bench/quality.py --set train.architecture=wavenet --out /tmp/q.json      # a candidate

Datasets: `boss-ds1` (../shared/captures/boss-ds1, a real DS-1) and `demo` (the shipped demo's gain-0.8
capture alone, since NAM's models take no knobs), each split in time by ampsim's validate (last 20 %).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
DATASETS = {"boss-ds1": PROJECT.parent / "shared" / "captures" / "boss-ds1",
            "demo": PROJECT / "data" / "captures" / "demo" / "gain-0.8"}  # `dvc repro demo` writes it
PRE_EMPHASIS = 0.85
# What each dataset's capture.yaml states. boss-ds1's wet side leads its DI: its response starts 15 samples
# before the DI (validate refuses it as it is), and a least-squares model of it predicts the pedal best from
# DI samples 9-16 ahead (bench/RESULTS.md). So its latency is stated: the onset less validate's margin.
CAPTURE_YAML = {"boss-ds1": "split: time\nlatency_samples: -19\n", "demo": "split: time\n"}


def esr(target: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.sum((target - prediction) ** 2) / np.sum(target**2))


def pre_emphasised(x: np.ndarray) -> np.ndarray:
    return x[1:] - PRE_EMPHASIS * x[:-1]


def scores(val_y, val_prediction, train_y, train_prediction) -> dict:
    return {"val_esr": esr(val_y, val_prediction),
            "val_esr_pre_emphasis": esr(pre_emphasised(val_y), pre_emphasised(val_prediction)),
            "train_esr": esr(train_y, train_prediction)}


def prepare_capture(capture: Path, work: Path, capture_yaml: str) -> Path:
    """ampsim's normalize + validate on the capture (linked, never copied): the aligned time split."""
    from ampsim.cli import main

    folder = work / "captures" / capture.name
    folder.mkdir(parents=True)
    for name in ("input.wav", "output.wav"):
        os.symlink(capture.resolve() / name, folder / name)
    (folder / "capture.yaml").write_text(capture_yaml)
    for stage, args in (("normalize", ["--captures", str(work / "captures"), "--out", str(work / "normalized")]),
                        ("validate", ["--normalized", str(work / "normalized"), "--out", str(work / "prepared"),
                                      "--reports", str(work / "validate")])):
        if main(["--params", str(PROJECT / "params.yaml"), stage, *args]) != 0:
            raise SystemExit(f"bench/quality.py: {stage} failed on {capture}")
    return work / "prepared"


def split_arrays(prepared: Path) -> dict[str, np.ndarray]:
    from ampsim.data.windows import load_split

    (train,), (val,) = load_split(prepared, "train"), load_split(prepared, "val")
    return {"train_x": train.x, "train_y": train.y, "val_x": val.x, "val_y": val.y}


# --- the two sides, each in a process of its own --------------------------------------------------------

def candidate_params(overrides: list[str], cabinet: bool = False) -> dict:
    """params.yaml with `section.key=value` overrides (values read as YAML): the recipe a run benchmarks.
    `cabinet` (the prepared capture's manifest says it rings like one): train.cabinet_recipe beneath them,
    as `ampsim train` lays it."""
    import yaml

    from ampsim.core.params import device_params, load_params

    params = device_params(load_params(PROJECT / "params.yaml"), None, cabinet=cabinet)
    for override in overrides:
        dotted, _, value = override.partition("=")
        section_name, _, key = dotted.partition(".")
        if section_name not in params or not key or key not in params[section_name]:
            raise SystemExit(f"bench/quality.py: --set {override}: no such setting in params.yaml")
        params[section_name][key] = yaml.safe_load(value)
    return params


def ampsim_side(prepared: Path, work: Path, budgets: list[float], overrides: list[str], test=None,
                start: Path | None = None, by_steps: bool = False) -> list[dict]:
    """`test` (optional): a callable given a function that renders any input with the model as it would ship;
    the `test_*` figures it returns join each budget's row (bench/panel.py scores on audio of its own).
    `start`: a model folder to fine-tune from (`train.init_from`), as `ampsim init-from` keeps one.
    `by_steps`: the budgets are step counts, and the learning rate follows the step, not the clock, so that a
    run repeats exactly (JAX on a CPU) and two runs differ only by what their settings change."""
    from ampsim.core.params import RenderParams, TrainParams, section
    from ampsim.modelling.backend import use_backend

    from ampsim.data.windows import load_split, read_manifest

    manifest = read_manifest(prepared)
    params = candidate_params(overrides, cabinet=manifest.get("cabinet", False))
    use_backend(section(params, "train", TrainParams).backend)
    from ampsim.cli import _train_config
    from ampsim.inference.cab_ir_fit import fit_cab_ir
    from ampsim.inference.engine import render_exact
    from ampsim.inference.latching import StreamRender, first_unlatched
    from ampsim.modelling import cab_ir
    from ampsim.modelling.best_steps import BestSteps
    from ampsim.modelling.models import ModelCard
    from ampsim.modelling.training import train

    if by_steps:
        params["train"].update(max_minutes=0, max_steps=int(max(budgets)))
    else:
        params["train"].update(max_minutes=max(budgets), max_steps=10**6)
    for name in ("fit", "lstm2018"):  # the whole budget, as NAM's side trains (the 2018 model has its own)
        params[name]["patience"] = 10**6
    config = _train_config(params, "params.yaml", manifest["sample_rate"])
    render_params = section(params, "render", RenderParams)
    data = split_arrays(prepared)
    pending, rows = sorted(budgets), []
    # At each budget, the model training would ship then: the best step that does not latch as one stream,
    # followed by the cab IR fitted to it (train.cab_ir_taps).
    best_steps = BestSteps(config.train.latch_fallbacks + 1)
    segments = load_split(prepared, "train"), load_split(prepared, "val")
    card = ModelCard(config.train.architecture, config.sample_rate, 1, 0, 0, [], None)

    def score(model, state, trained_ir=None):
        if state["best_step"] == state["step"]:
            best_steps.add(state["step"], state["best_val"], model.get_weights(), trained_ir)
        while pending and (state["step"] if by_steps else state["seconds"] / 60) >= pending[0]:
            current = model.get_weights()
            step, checked = first_unlatched(model, card, best_steps.candidates(), *segments,
                                            render=StreamRender.of(render_params), trained_irs=best_steps.trained_irs)
            shipped, cab = fit_cab_ir(model, card, *segments, config.train.cab_ir_taps, config.train.cab_ir_ridge,
                                      log=lambda line: print(f"  ampsim {line}", flush=True),
                                      render=StreamRender.of(render_params))
            ir = cab_ir.decode(shipped.cab_ir)

            def play(x):
                return cab_ir.apply(ir, render_exact(model, x, render_params.exact_chunk_samples,
                                                     render_params.jit_compile))

            rendered = {side: play(data[f"{side}_x"]) for side in ("val", "train")}
            tested = test(play) if test else {}
            model.set_weights(current)
            budget = pending.pop(0)
            rows.append({"minutes": round(state["seconds"] / 60, 2) if by_steps else budget, "steps": state["step"],
                         "best_step": step,
                         "parameters": int(model.count_params()), "latched_seconds": checked.get(step),
                         "passed_over": {k: v for k, v in checked.items() if k != step}, **cab,
                         "back_to_best": list(state["back_to_best"]), "learning_rate_scale": state["lr_scale"],
                         **scores(data["val_y"], rendered["val"], data["train_y"], rendered["train"]), **tested})
            print(f"  ampsim {rows[-1]}", flush=True)

    train(prepared, work / "model", work / "train", work / "ckpt", config, progress=False, on_step=score, start=start,
          ship_check=first_unlatched)
    return rows


def nam_side(prepared: Path, budgets: list[float], test=None) -> list[dict]:
    """`test` (optional): as ampsim_side's, given NAM's model as it would export (its full-quality submodel)."""
    sys.path.insert(0, str(BENCH))
    from nam_reference import train_nam

    data = split_arrays(prepared)
    rows = train_nam(data["train_x"], data["train_y"], data["val_x"], data["val_y"], 48000, budgets, threads=1,
                     log=lambda line: print(f"  nam {line}", flush=True), test=test)
    return [{**{key: row[key] for key in ("minutes", "epochs", "parameters", "val_esr", "val_esr_pre_emphasis",
                                          "train_esr")},
             **{key: value for key, value in row.items() if key.startswith("test_")}} for row in rows]


def run_sides(commands: dict[str, list[str]], work: Path, what: str) -> dict[str, list[dict]]:
    """Run each side's worker command (`--out` added) at once, the first pinned to core 0 and the second to
    core 1, so whatever else loads the machine loads both alike; their rows."""
    procs = {}
    for core, (side, command) in enumerate(commands.items()):
        out = work / f"{side}.json"
        procs[side] = (subprocess.Popen([*command, "--out", str(out)],
                                        preexec_fn=lambda core=core: os.sched_setaffinity(0, {core})), out)
    while any(process.poll() is None for process, _ in procs.values()):
        failed = [side for side, (process, _) in procs.items() if process.poll() not in (None, 0)]
        if failed:  # one side alone would measure nothing: stop the other
            for process, _ in procs.values():
                process.kill()
            raise SystemExit(f"{what}: the {failed[0]} side failed")
        time.sleep(1)
    if any(process.returncode != 0 for process, _ in procs.values()):
        raise SystemExit(f"{what}: a side failed")
    return {side: json.loads(out.read_text()) for side, (_, out) in procs.items()}


def side_by_side(dataset: str, budgets: list[float], work: Path, overrides: list[str]) -> dict:
    """Both sides at once, ampsim on core 0 and NAM on core 1; their rows and the ratios."""
    prepared = prepare_capture(DATASETS[dataset], work, CAPTURE_YAML[dataset])
    commands = {side: [sys.executable, __file__, "--side", side, "--prepared", str(prepared), "--work",
                        str(work / side), "--budgets", *map(str, budgets), *(f"--set={o}" for o in overrides)]
                for side in ("ampsim", "nam")}
    results = run_sides(commands, work, f"bench/quality.py: {dataset}")
    ratios = {str(a["minutes"]): a["val_esr"] / n["val_esr"] for a, n in zip(results["ampsim"], results["nam"])}
    return {**results, "ampsim_over_nam": ratios}


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows of it."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def machine_line() -> str:
    """The CPU count and model a benchmark ran on. A steps-driven run repeats exactly on the same CPU model
    (sessions 31 and 32), and took another path on another session's machine (bench/RESULTS.md, session 31)."""
    return f"{os.cpu_count()} CPUs, {cpu_model()}"


def merge_results(path: Path, key: str, value: dict) -> None:
    """Set `key` in the results JSON at `path`, keeping every other benchmark's figures."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = value
    partial = path.with_name(path.name + ".partial")  # replaced in one step: a stopped run leaves no half file
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(path)
    print(f"wrote {path}")


def table(quality: dict) -> str:
    lines = []
    for dataset, result in quality["datasets"].items():
        lines.append(f"{dataset}: validation ESR (pre-emphasised) | fit on the training stretch, best weights so far")
        for a, n in zip(result["ampsim"], result["nam"]):
            lines.append(f"  {a['minutes']:>4g} min  ampsim {a['val_esr']:.4f} ({a['val_esr_pre_emphasis']:.4f}) | "
                         f"{a['train_esr']:.4f}  step {a['steps']:>4}   NAM {n['val_esr']:.4f} "
                         f"({n['val_esr_pre_emphasis']:.4f}) | {n['train_esr']:.4f}  epoch {n['epochs']:.1f}   "
                         f"ampsim/NAM {result['ampsim_over_nam'][str(a['minutes'])]:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10, 15], help="training minutes")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON file to merge `quality` into")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="benchmark params.yaml with this setting changed (repeatable), e.g. lstm.hidden_size=32")
    parser.add_argument("--side", choices=("ampsim", "nam"), help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        rows = ampsim_side(args.prepared, args.work, args.budgets, args.overrides) if args.side == "ampsim" \
            else nam_side(args.prepared, args.budgets)
        args.out.write_text(json.dumps(rows, indent=2))
        return

    candidate_params(args.overrides)  # a mistyped --set stops here, not in a worker after the set-up
    for dataset in args.datasets:
        if not (DATASETS[dataset] / "input.wav").is_file():
            raise SystemExit(f"bench/quality.py: {DATASETS[dataset]} not found (boss-ds1 lives in ../shared/captures)")
    quality = {"date": dt.date.today().isoformat(), "machine": machine_line(),
               "budgets_minutes": args.budgets, "ampsim_settings": args.overrides or "params.yaml", "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="ampsim-quality-") as tmp:
        for dataset in args.datasets:
            quality["datasets"][dataset] = side_by_side(dataset, args.budgets, Path(tmp) / dataset, args.overrides)
    # One number per budget: the boss-ds1 ratio (the real capture), as the issue asks.
    first = quality["datasets"].get("boss-ds1") or next(iter(quality["datasets"].values()))
    quality["ampsim_over_nam"] = first["ampsim_over_nam"]
    print(table(quality))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.overrides:  # a candidate: kept beside the default's figures, never in their place
        candidates = results.setdefault("quality_vs_nam_candidates", {})
        earlier = candidates.setdefault(" ".join(args.overrides), quality)
        earlier["datasets"].update(quality["datasets"])  # a run on another dataset adds to the candidate's
    else:
        results["quality_vs_nam"] = quality  # `quality` is bench/run.py's curve of the default model alone
        results["ampsim_over_nam"] = quality["ampsim_over_nam"]
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
