"""The panel: ampsim against NAM's own trainer on six real devices, scored on real guitar DI neither trained on.

Each device is a teacher, a NAM model of real gear (../shared/teachers, its README): ampsim's reamp signal
(`ampsim.data.signal.reamp_signal`, about three minutes) played through it with NAM's own loader is the
capture. ampsim's normalize + validate prepare it as they would any capture (`split: time`; validate measures
the latency itself, and the figure it chose is reported; it holds out the signal's marked validation passage).
Both trainers learn that same aligned split side by side, as in bench/quality.py: ampsim on core 0, NAM's
default packed WaveNet on core 1, for the same training-time budgets, in the same run. ampsim trains each
device as `dvc repro` would: params.yaml's defaults, with `train.cabinet_recipe` laid over them when validate
finds that the capture rings like a cabinet; --recipe DEVICE=CANDIDATE (a candidate of params.yaml's
`race.candidates`) lays a race's winner over that, as a device's `recipes` entry would.

At each budget each side's model as it would ship (its best validation weights so far) is scored on the test
DI: real guitar playing that neither signal contains (the TS9 capture's dry side, resampled to 48 kHz, then
the boss-ds1 capture's closing guitar phrases), rendered by the same teacher. The score is the ESR against the
teacher's output at lag 0: both sides learnt a target shifted back by the latency validate compensated, so
their output is shifted forward by it again before scoring, and a model that answers late or early pays for
it. Validation ESRs (on the aligned validation passage, as quality.py reports them) are printed beside.

Prints a table per device, then per budget the median over devices of each side's test ESR and the ratio of
the medians, and flags devices whose test ESR at the largest budget is over 0.03. Writes `panel` into
bench/results.json, merged by device: a run on some devices keeps the others measured at the same commit
(`code`), so a panel too long for one sitting is finished device by device from one frozen worktree.

    make bench-panel                                          # 2, 5, 10, 15 min on all six, 2 to 3.5 hours
    .venv/bin/python bench/panel.py --devices ds1 klon        # two more devices into the same panel (same commit)
    .venv/bin/python bench/panel.py --devices klon --budgets 0.2 --seconds 40 --out /tmp/panel.json  # smoke

The four JCM900 teachers are a knob set (one amp, four gains), benchmarked separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from quality import PROJECT, ampsim_side, machine_line, merge_results, nam_side, prepare_capture, run_sides  # noqa: E402  (bench/ is not a package)
from teachers import TEACHERS, load_teacher, play  # noqa: E402

SHARED = PROJECT.parent / "shared"
DEVICES = {  # short name: teacher file (../shared/teachers/README.md)
    "5150": "Helga_B_5150_BlockLetter_-_NoBoost.nam",
    "ds1": "Keith_B_DS1_g6_t5.nam",
    "klon": "Keith_B_klone_g6_t6_o5.nam",
    "bug333-clean": "Phillipe_P_Bug333-Clean-ESR0_002.nam",
    "bug333-crunch-cab": "Phillipe_P_Bug333-Crunch-NoDrive-Cab-ESR0_005.nam",
    "fortin-grind": "Tudor_N_Fortin_Grind_Mini_Knob5_standard.nam",
}
# A device's race winner, where it is not what params.yaml gives it by itself. The two amps with a cabinet won
# through the IR (bench/RESULTS.md, session 18), which train.cabinet_recipe now gives every device that rings like
# a cabinet; the DS-1 won with LSTM(32) by validation at 10 and 15 minutes on two seeds (session 20: test 0.0074
# against 0.0126, 0.0094 against 0.0099 at 15). The 5150's four random starts spread 0.020-0.037 at 15 minutes
# with one recipe; a race of them chose seed 7 by validation at 5 minutes (session 33).
RECIPES = {"ds1": "lstm32", "5150": "seed-7"}
RATE = 48000
TEST_DI = {"ts9-guitarml": "the whole dry side", "boss-ds1": "its last 25 % (guitar phrases; it opens with sweeps)"}
HEADROOM = 0.98  # validate counts output samples at 0.999 as clipped: a louder render is turned down to this peak
FLAG_ESR = 0.03


# --- the audio: the capture's DI, the test DI, and the teacher that plays them -------------------------

def reamp_di(seconds: float | None) -> np.ndarray:
    """ampsim's reamp signal, cut to its first `seconds` for a smoke run (its opening, which validate
    measures the latency on, is kept)."""
    from ampsim.data.signal import reamp_signal

    audio = reamp_signal(RATE).audio
    return audio if seconds is None else audio[: int(seconds * RATE)]


def test_di() -> np.ndarray:
    """Real guitar DI at 48 kHz that neither the reamp signal nor any teacher's training contains."""
    import soxr

    ts9, ts9_rate = sf.read(SHARED / "captures" / "ts9-guitarml" / "input.wav", dtype="float32")
    ds1, ds1_rate = sf.read(SHARED / "captures" / "boss-ds1" / "input.wav", dtype="float32")
    assert ds1_rate == RATE, ds1_rate
    return np.concatenate([soxr.resample(ts9, ts9_rate, RATE), ds1[int(0.75 * len(ds1)):]]).astype(np.float32)


# --- one device: its capture, prepared by ampsim, and its test audio -----------------------------------

def prepare_device(device: str, di: np.ndarray, test_x: np.ndarray, work: Path,
                   teacher: str | None = None) -> tuple[Path, Path, dict]:
    """Re-amp the DI and the test DI through the device's teacher (`teacher`: a file in ../shared/teachers,
    default the panel's for `device`), write the capture, and run ampsim's normalize + validate on it. Returns
    the prepared dir, the test audio (for the workers) and the facts."""
    teacher = teacher or DEVICES[device]
    net = load_teacher(TEACHERS / teacher)
    wet, test_y = play(net, di), play(net, test_x)  # float64
    # One gain for both renders, so that the test target is at the level the models learnt.
    gain = min(1.0, HEADROOM / float(np.max(np.abs(wet))))
    capture = work / "teacher" / device
    capture.mkdir(parents=True)
    for name, audio in (("input.wav", di), ("output.wav", wet * gain)):
        sf.write(capture / name, np.asarray(audio, np.float32), RATE, subtype="FLOAT")
    prepared = prepare_capture(capture, work / "stages", "split: time\n")
    validated = json.loads((work / "stages" / "validate" / "summary.json").read_text())
    latency = validated["delay_samples"][device]
    test = work / "test.npz"
    np.savez(test, x=test_x, y=(test_y * gain).astype(np.float32), latency=latency)
    return prepared, test, {"teacher": teacher, "latency_samples": latency, "teacher_gain": gain,
                            "capture_seconds": len(di) / RATE, "ringing_ms": validated["ringing_ms"][device],
                            "cabinet": validated["cabinet"]}


def at_lag_zero(prediction: np.ndarray, latency: int) -> np.ndarray:
    """A model's output moved to the teacher's time: it learnt wet[n + latency] from dry[..n] (validate's
    alignment), so its answer for teacher sample n is its output at n - latency; zeros where it has none."""
    moved = np.zeros_like(prediction)
    if latency >= 0:
        moved[latency:] = prediction[: len(prediction) - latency]
    else:  # a negative latency (a DI recorded late): the output is moved earlier
        moved[:latency] = prediction[-latency:]
    return moved


def lag_zero_scorer(test_npz: Path):
    """What a side's worker scores each budget's model with: test ESR on the whole test audio, at lag 0, and
    the parts of it that `error_where` names."""
    test = np.load(test_npz)
    x, y, latency = test["x"], test["y"].astype(np.float64), int(test["latency"])

    def score(render) -> dict:
        prediction = at_lag_zero(np.asarray(render(x), np.float64).reshape(-1), latency)
        return {"test_esr": float(np.sum((y - prediction) ** 2) / np.sum(y**2)), **error_where(x, y, prediction)}

    return score


QUIET_FRAME_SECONDS = 0.05
LOW_BAND_HZ = (80.0, 200.0)


def error_where(x: np.ndarray, y: np.ndarray, prediction: np.ndarray) -> dict:
    """Two parts of the test ESR (each over the target's whole energy): the error while the DI is under its
    median level (50 ms frames), and the error in 80-200 Hz. Runs of the cabinet recipe differed there by 3x
    while their validation agreed: real playing's quiet half is notes ringing out, which a high-gain amp plays
    loud, and the reamp signal has few (bench/RESULTS.md, session 26)."""
    error, energy = y - prediction, np.sum(y**2)
    frame = int(QUIET_FRAME_SECONDS * RATE)
    frames = len(x) // frame
    levels = np.sqrt(np.mean(np.square(x[: frames * frame].reshape(frames, frame), dtype=np.float64), axis=1))
    quiet = levels <= np.median(levels)
    power, freqs = np.abs(np.fft.rfft(error)) ** 2, np.fft.rfftfreq(len(error), 1 / RATE)
    low_share = np.sum(power[(freqs >= LOW_BAND_HZ[0]) & (freqs < LOW_BAND_HZ[1])]) / np.sum(power)
    quiet_error = np.sum(np.square(error[: frames * frame].reshape(frames, frame)[quiet]))
    return {"test_esr_quiet_half": float(quiet_error / energy),
            "test_esr_80_200_hz": float(low_share * np.sum(error**2) / energy)}


# --- the two sides, each in a process of its own, as bench/quality.py runs them ------------------------

def recipe_overrides(candidate: str | None) -> list[str]:
    """A race candidate of params.yaml as `section.key=value` overrides (quality.py's --set); none: []."""
    if candidate is None:
        return []
    from ampsim.core.params import load_params

    candidates = load_params(PROJECT / "params.yaml")["race"]["candidates"]
    if candidate not in candidates:
        raise SystemExit(f"bench/panel.py: no race candidate {candidate!r} in params.yaml (race.candidates: "
                         f"{', '.join(candidates)})")
    return [f"{name}.{key}={json.dumps(value)}" for name, settings in candidates[candidate].items()
            for key, value in settings.items()]


def side_by_side(device: str, prepared: Path, test_npz: Path, budgets: list[float], work: Path,
                 overrides: list[str]) -> dict:
    """Both sides at once, ampsim on core 0 and NAM on core 1 (this file's worker mode, which calls
    quality.py's ampsim_side / nam_side with the test scorer); their rows and the test ESR ratios."""
    commands = {side: [sys.executable, __file__, "--side", side, "--prepared", str(prepared), "--work",
                        str(work / side), "--test-npz", str(test_npz), "--budgets", *map(str, budgets),
                        *(f"--set={o}" for o in (overrides if side == "ampsim" else []))]
                for side in ("ampsim", "nam")}
    results = run_sides(commands, work, f"bench/panel.py: {device}")
    ratios = {str(a["minutes"]): a["test_esr"] / n["test_esr"] for a, n in zip(results["ampsim"], results["nam"])}
    return {**results, "ampsim_over_nam": ratios}


def worker(side: str, prepared: Path, work: Path, budgets: list[float], test_npz: Path,
           overrides: list[str]) -> list[dict]:
    score = lag_zero_scorer(test_npz)
    return ampsim_side(prepared, work, budgets, overrides, test=score) if side == "ampsim" \
        else nam_side(prepared, budgets, test=score)


# --- the report ----------------------------------------------------------------------------------------

def summarise(devices: dict, budgets: list[float]) -> tuple[list[dict], dict]:
    """Per budget, each side's median test ESR over the devices and the ratio of the medians; and the
    devices over FLAG_ESR at the largest budget, per side."""
    medians = []
    for i, budget in enumerate(sorted(budgets)):  # both sides' rows are in increasing budget order
        ampsim, nam = (float(np.median([row[side][i]["test_esr"] for row in devices.values()]))
                       for side in ("ampsim", "nam"))
        medians.append({"minutes": budget, "ampsim_test_esr": ampsim, "nam_test_esr": nam,
                        "ampsim_over_nam": ampsim / nam})
    flagged = {side: {device: row[side][-1]["test_esr"] for device, row in devices.items()
                      if row[side][-1]["test_esr"] > FLAG_ESR} for side in ("ampsim", "nam")}
    return medians, flagged


def table(panel: dict) -> str:
    lines = []
    for device, row in panel["devices"].items():
        lines += [f"{device} ({row['teacher']}): latency {row['latency_samples']} samples (validate's choice), "
                  f"teacher gain {row['teacher_gain']:.3g}, ampsim's recipe {recipe_name(row)}",
                  "    budget | test ESR ampsim     NAM  ampsim/NAM | val ESR ampsim     NAM | "
                  "ampsim steps  NAM epochs"]
        for a, n in zip(row["ampsim"], row["nam"]):
            lines.append(f"  {a['minutes']:>4g} min | {a['test_esr']:>15.4f} {n['test_esr']:>7.4f} "
                         f"{row['ampsim_over_nam'][str(a['minutes'])]:>11.2f} | {a['val_esr']:>14.4f} "
                         f"{n['val_esr']:>7.4f} | {a['steps']:>12} {n['epochs']:>11.1f}")
    lines += [f"median over {len(panel['devices'])} device(s)",
              "    budget | test ESR ampsim     NAM  ratio of the medians"]
    for median in panel["medians"]:
        lines.append(f"  {median['minutes']:>4g} min | {median['ampsim_test_esr']:>15.4f} "
                     f"{median['nam_test_esr']:>7.4f} {median['ampsim_over_nam']:>21.2f}")
    largest = f"{max(panel['budgets_minutes']):g}"
    for side, devices in panel["flagged"].items():
        named = ", ".join(f"{device} {value:.4f}" for device, value in devices.items()) or "none"
        lines.append(f"{side}: test ESR over {FLAG_ESR} at {largest} min: {named}")
    return "\n".join(lines)


def recipe_name(row: dict) -> str:
    """What ampsim trained a device with, in the table's words."""
    base = "params.yaml" + (f" + cabinet_recipe (rings {row['ringing_ms']:.1f} ms)" if row.get("cabinet") else "")
    return f"{base} + {row['recipe']}" if row.get("recipe") else base


def chosen_recipes(specs: list[str]) -> dict[str, str]:
    """RECIPES with the command line's DEVICE=CANDIDATE on top (CANDIDATE `params.yaml`: none)."""
    recipes = dict(RECIPES)
    for spec in specs:
        device, _, candidate = spec.partition("=")
        if device not in DEVICES or not candidate:
            raise SystemExit(f"bench/panel.py: --recipe {spec}: expected DEVICE=CANDIDATE, DEVICE one of "
                             f"{', '.join(DEVICES)}")
        recipes[device] = candidate
    return {device: candidate for device, candidate in recipes.items() if candidate != "params.yaml"}


def code_version() -> str:
    """The commit the benchmark runs, `+changes` when its tree differs from it (then runs do not merge)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "src", "bench", "params.yaml") else "")


def kept_devices(path: Path, code: str, budgets: list[float], capture_seconds: float) -> dict:
    """The devices an earlier run of this same code, budgets and capture wrote to `path`'s panel (merged
    with this run's, which replace theirs); none if anything differs."""
    earlier = json.loads(path.read_text()).get("panel", {}) if path.is_file() else {}
    same = (earlier.get("code") == code and "+changes" not in code and earlier.get("budgets_minutes") == budgets
            and earlier.get("capture_seconds") == capture_seconds)
    if same:
        print(f"keeping {', '.join(earlier['devices'])} from the panel in {path} (same code, {code})", flush=True)
    return dict(earlier["devices"]) if same else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10, 15], help="training minutes")
    parser.add_argument("--devices", nargs="+", default=list(DEVICES), choices=list(DEVICES))
    parser.add_argument("--seconds", type=float, help="use only the reamp signal's first SECONDS (a smoke run)")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON file to merge `panel` into")
    parser.add_argument("--recipe", action="append", default=[], metavar="DEVICE=CANDIDATE",
                        help="train DEVICE with this race candidate of params.yaml (default: RECIPES; "
                             "DEVICE=params.yaml for params.yaml as it is)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("ampsim", "nam"), help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--test-npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        rows = worker(args.side, args.prepared, args.work, args.budgets, args.test_npz, args.overrides)
        args.out.write_text(json.dumps(rows, indent=2))
        return

    recipes = chosen_recipes(args.recipe)
    overrides = {device: recipe_overrides(recipes.get(device)) for device in args.devices}  # a typo stops here
    for device in args.devices:
        if not (TEACHERS / DEVICES[device]).is_file():
            raise SystemExit(f"bench/panel.py: {TEACHERS / DEVICES[device]} not found (the teachers live in ../shared)")
    di, test_x = reamp_di(args.seconds), test_di()
    code = code_version()
    panel = {"date": dt.date.today().isoformat(), "code": code,
             "machine": machine_line(),
             "budgets_minutes": sorted(args.budgets), "capture_seconds": len(di) / RATE,
             "test_di": {"seconds": len(test_x) / RATE, "parts": TEST_DI},
             "devices": kept_devices(args.out, code, sorted(args.budgets), len(di) / RATE)}
    with tempfile.TemporaryDirectory(prefix="ampsim-panel-") as tmp:
        for device in args.devices:
            work = Path(tmp) / device
            print(f"{device}: re-amping through {DEVICES[device]}; ampsim's recipe {recipes.get(device, 'params.yaml')} "
                  f"{' '.join(overrides[device])}", flush=True)
            prepared, test_npz, facts = prepare_device(device, di, test_x, work)
            if facts["cabinet"]:
                print(f"{device}: rings for {facts['ringing_ms']:g} ms, like a cabinet: train.cabinet_recipe", flush=True)
            panel["devices"][device] = {**facts, "recipe": recipes.get(device), "date": dt.date.today().isoformat(),
                                        **side_by_side(device, prepared, test_npz, args.budgets, work,
                                                       overrides[device])}
            # Written after every device: a device takes ~33 minutes, and a stopped run keeps what it measured.
            panel["medians"], panel["flagged"] = summarise(panel["devices"], args.budgets)
            merge_results(args.out, "panel", panel)
    print(table(panel))


if __name__ == "__main__":
    main()
