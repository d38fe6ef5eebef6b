"""The knob set: one amp at four gain settings learnt as one knob-conditioned model, one setting never seen.

The four JCM900 channel-A teachers (../shared/teachers: gain 4, 6, 8 and 10 of one Marshall JCM900) play
ampsim's reamp signal: four captures of one device, at `knobs: {gain: 0.4 | 0.6 | 0.8 | 1.0}`, with 0.8 held
out whole (`split: val`). ampsim's own stages prepare and train them as `dvc repro` would (normalize,
validate with its one-rig-one-latency rule, train with params.yaml's recipe), for a training-time budget.
The model then plays real guitar DI it never heard (bench/panel.py's test DI) at each setting, and is scored
at lag 0 against that setting's teacher: the held-out 0.8 is the figure that says whether the knob learnt
the amp or only its recorded positions. For it, the run also prints its ESR with the model's level fitted and
at the knob positions beside it (a model whose knob learnt the wrong taper plays the setting best elsewhere).

    .venv/bin/python bench/knobset.py --minutes 10     # writes `knobset` into bench/results.json
    .venv/bin/python bench/knobset.py --set lstm.knob_drive=true --key knobset_drive --out /tmp/drive.json
    .venv/bin/python bench/knobset.py --set lstm.knob_drive=true --keep /tmp/kept   # keeps the model to study
    # the README's recipe for a knob set:
    python bench/knobset.py --minutes 15 --set lstm.knob_drive=true --set lstm.knob_bends=true --set fit.patience=0 \
        --set lstm.hidden_size=24 --set fit.weight_decay=0.01 --set train.knob_levels=interpolated
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from panel import RATE, at_lag_zero, reamp_di, test_di  # noqa: E402  (bench/ is not a package)
from quality import PROJECT, candidate_params, esr, merge_results  # noqa: E402
from teachers import TEACHERS, load_teacher, play  # noqa: E402

SETTINGS = {0.4: "Tim_R_JCM90050WDualVerbChAG4.nam", 0.6: "Tim_R_JCM90050WDualVerbCHAG6.nam",
            0.8: "Tim_R_JCM90050WDualVerbChAG8.nam", 1.0: "Tim_R_JCM90050WDualVerbchAG10.nam"}
HELD_OUT = 0.8


def write_device(device: Path, di: np.ndarray, test_x: np.ndarray) -> dict[float, np.ndarray]:
    """One capture per setting (the held-out one `split: val`); returns each setting's answer to the test DI."""
    answers = {}
    for gain, teacher in SETTINGS.items():
        net = load_teacher(TEACHERS / teacher)
        folder = device / f"gain-{gain:g}"
        folder.mkdir(parents=True)
        sf.write(folder / "input.wav", di, RATE, subtype="FLOAT")
        sf.write(folder / "output.wav", play(net, di).astype(np.float32), RATE, subtype="FLOAT")
        split = "val" if gain == HELD_OUT else "time"
        (folder / "capture.yaml").write_text(f"device: JCM900 channel A\nsplit: {split}\nknobs: {{gain: {gain:g}}}\n")
        answers[gain] = play(net, test_x)
    return answers


def budget_params(work: Path, minutes: float, overrides: list[str]) -> Path:
    """params.yaml with `overrides` (SECTION.KEY=VALUE), trained for `minutes` of training time instead of a
    step count."""
    params = candidate_params(overrides)
    params["train"].update(max_minutes=minutes, max_steps=10**6)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stages(params: Path, work: Path) -> None:
    from ampsim.cli import main

    stages = [["normalize", "--captures", str(work / "jcm900"), "--out", str(work / "normalized")],
              ["validate", "--normalized", str(work / "normalized"), "--out", str(work / "prepared"),
               "--reports", str(work / "validate")],
              ["train", "--device", "jcm900", "--prepared", str(work / "prepared"), "--model", str(work / "model"),
               "--reports", str(work / "train"), "--checkpoint", str(work / "checkpoint")],
              ["evaluate", "--prepared", str(work / "prepared"), "--model", str(work / "model"),
               "--history", str(work / "train" / "loss.csv"), "--out", str(work / "evaluate")]]
    for stage in stages:
        if main(["--params", str(params), *stage]) != 0:
            raise SystemExit(f"bench/knobset.py: {stage[0]} failed")


def knob_player(work: Path, test_x: np.ndarray) -> Callable[[float], np.ndarray]:
    """The trained model as a function of its gain knob: its answer to the test DI at that setting, rendered as
    evaluation renders it (a streaming LSTM as one stream from a zero state, as a plugin plays it) and moved to
    lag 0 by that setting's latency (a position between recorded ones: the held-out setting's)."""
    from ampsim.core.params import RenderParams, load_params, section
    from ampsim.inference.engine import render
    from ampsim.modelling.models import load_model

    model, card = load_model(work / "model")
    render_params = section(load_params(PROJECT / "params.yaml"), "render", RenderParams)
    latency = json.loads((work / "validate" / "summary.json").read_text())["delay_samples"]

    def played(gain: float) -> np.ndarray:
        output = render(model, card, test_x, render_params, {"gain": gain}).reshape(-1).astype(np.float64)
        return at_lag_zero(output, latency.get(f"gain-{gain:g}", latency[f"gain-{HELD_OUT:g}"]))

    return played


def test_scores(played: Callable[[float], np.ndarray], answers: dict[float, np.ndarray]) -> dict:
    """Test ESR at lag 0 per setting: the model at that gain against that setting's teacher. For the held-out
    setting, where its miss lies: its ESR once the model's level is fitted (a miss in level alone), and at knob
    positions beside it (a knob whose taper the model learnt off its true position plays the setting best
    elsewhere)."""
    predictions = {gain: played(gain) for gain in answers}
    scores = {f"{gain:g}": esr(answers[gain], prediction) for gain, prediction in predictions.items()}
    at_setting, target = predictions[HELD_OUT], answers[HELD_OUT]
    level = float(at_setting @ target / (at_setting @ at_setting))
    beside = {f"{HELD_OUT + step:g}": esr(target, played(HELD_OUT + step)) for step in (-0.1, -0.05, 0.05, 0.1)}
    return {"test_esr_lag0": scores, "held_out_diagnosis": {
        "esr_level_fitted": esr(target, level * at_setting), "level_db": float(20 * np.log10(abs(level))),
        "esr_at_knob": beside}}


def neighbour_mix(answers: dict[float, np.ndarray]) -> dict:
    """What the recorded neighbours allow at the held-out setting: its teacher's answer fitted by least squares
    from the answers of the settings just below and above it (a knob that only blends them scores this)."""
    below = max(gain for gain in answers if gain < HELD_OUT)
    above = min(gain for gain in answers if gain > HELD_OUT)
    pair = np.stack([answers[below], answers[above]], axis=1)
    target = answers[HELD_OUT]
    weights = np.linalg.lstsq(pair, target, rcond=None)[0]
    return {"neighbours": [below, above], "weights": weights.tolist(), "esr": esr(target, pair @ weights)}


def driven_neighbour(test_x: np.ndarray, answers: dict[float, np.ndarray], taps: int = 64) -> dict:
    """What a knob that sets the drive allows: the held-out setting's answer as the setting below it played
    harder (the best of 0-12 dB in 3 dB steps, then its level fitted), and that through the best `taps`-tap
    EQ (least squares). The case for `lstm.knob_drive`."""
    below = max(gain for gain in answers if gain < HELD_OUT)
    net, target = load_teacher(TEACHERS / SETTINGS[below]), answers[HELD_OUT]

    def residual(columns: np.ndarray) -> float:
        fit = columns @ np.linalg.lstsq(columns, target, rcond=None)[0]
        return float(np.sum((target - fit) ** 2) / np.sum(target**2))

    driven = {db: play(net, test_x * 10 ** (db / 20)) for db in (0, 3, 6, 9, 12)}
    level_only = {db: residual(answer[:, None]) for db, answer in driven.items()}
    best = min(level_only, key=level_only.get)
    lagged = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.zeros(taps - 1), driven[best]]), taps)
    return {"neighbour": below, "drive_db": best, "esr_by_drive_db": level_only, "esr": level_only[best],
            "esr_with_eq": residual(lagged[:, ::-1]), "eq_taps": taps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training-time budget")
    parser.add_argument("--seconds", type=float, help="use only the reamp signal's first SECONDS (a smoke run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a params.yaml setting for this run (repeatable), e.g. lstm.knob_drive=true")
    parser.add_argument("--key", default="knobset", help="the key it writes (default %(default)s)")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON file to merge the result into")
    parser.add_argument("--keep", type=Path, help="keep the trained model and the stage reports in this folder")
    parser.add_argument("--teachers-only", action="store_true",
                        help="no training: only what the teachers allow at the held-out setting (a blend of its "
                             "neighbours, a neighbour driven harder), in a minute")
    args = parser.parse_args()

    test_x = test_di()
    if args.teachers_only:
        answers = {gain: play(load_teacher(TEACHERS / teacher), test_x) for gain, teacher in SETTINGS.items()}
        result = {"date": dt.date.today().isoformat(), "held_out_gain": HELD_OUT,
                  "neighbour_mix": neighbour_mix(answers), "driven_neighbour": driven_neighbour(test_x, answers)}
        print_teacher_bounds(result)
        merge_results(args.out, args.key, result)
        return
    di = reamp_di(args.seconds)
    with tempfile.TemporaryDirectory(prefix="ampsim-knobset-") as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"  # the project's store stays clean
        answers = write_device(work / "jcm900", di, test_x)
        from ampsim.modelling.backend import use_backend

        use_backend(yaml.safe_load((PROJECT / "params.yaml").read_text())["train"]["backend"])
        run_stages(budget_params(work, args.minutes, args.overrides), work)
        validation = json.loads((work / "evaluate" / "metrics.json").read_text())
        train = json.loads((work / "train" / "summary.json").read_text())
        latency = json.loads((work / "validate" / "summary.json").read_text())["delay_samples"]
        scored = test_scores(knob_player(work, test_x), answers)
        test, diagnosis = scored["test_esr_lag0"], scored["held_out_diagnosis"]
        if args.keep:
            for part in ("model", "train", "validate", "evaluate"):
                shutil.copytree(work / part, args.keep / part, dirs_exist_ok=True)
    result = {"date": dt.date.today().isoformat(), "minutes": args.minutes, "held_out_gain": HELD_OUT,
              "settings": args.overrides, "steps": train["steps"], "latency_samples": latency,
              "validation_esr": {name.removeprefix("gain-"): entry["esr"]
                                 for name, entry in validation["captures"].items()},
              "test_esr_lag0": test, "held_out_diagnosis": diagnosis,
              "neighbour_mix": neighbour_mix(answers), "driven_neighbour": driven_neighbour(test_x, answers)}
    print(f"JCM900 knob set, {args.minutes:g} training minutes ({train['steps']} steps), held out: gain {HELD_OUT:g}"
          + (f", {' '.join(args.overrides)}" if args.overrides else ""))
    print("  gain | latency | validation ESR | test ESR (real guitar DI, lag 0)")
    for gain in SETTINGS:
        key = f"{gain:g}"
        mark = "  (held out)" if gain == HELD_OUT else ""
        print(f"  {key:>4} | {latency[f'gain-{key}']:>7} | {result['validation_esr'][key]:>14.4f} | "
              f"{test[key]:.4f}{mark}")
    print(f"  held out {HELD_OUT:g}: with its level fitted ({diagnosis['level_db']:+.2f} dB) "
          f"{diagnosis['esr_level_fitted']:.4f}; at knob "
          + ", ".join(f"{knob}: {value:.4f}" for knob, value in diagnosis["esr_at_knob"].items()))
    print_teacher_bounds(result)
    merge_results(args.out, args.key, result)


def print_teacher_bounds(result: dict) -> None:
    mix, driven = result["neighbour_mix"], result["driven_neighbour"]
    print(f"  the held-out setting as the best mix of gains {mix['neighbours'][0]:g} and {mix['neighbours'][1]:g}: "
          f"ESR {mix['esr']:.4f}")
    print(f"  ... as gain {driven['neighbour']:g} played {driven['drive_db']:g} dB harder: ESR {driven['esr']:.4f}, "
          f"and through the best {driven['eq_taps']}-tap EQ: {driven['esr_with_eq']:.4f}")


if __name__ == "__main__":
    main()
