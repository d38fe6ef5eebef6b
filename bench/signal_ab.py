"""Which reamp signal teaches real playing better: ampsim's signal at a git ref (the baseline) against the one in
the working tree (the candidate), on the panel's devices.

Each signal is played through the device's teacher and prepared by ampsim's normalize + validate, as
bench/panel.py does; ampsim's default recipe learns each capture, the two side by side (baseline on core 0,
candidate on core 1) for the same training-time budgets. Both are scored on the same test, real guitar DI
neither signal contains, at lag 0. The test ESR is the comparison: each side's validation ESR is on its own
signal's validation passage, so those two do not compare with each other, only with their own test ESR
(whether a signal's validation predicts real playing).

    .venv/bin/python bench/signal_ab.py --baseline 27ab13f --devices 5150 ds1 --budgets 5 10

Writes `signal_ab` into bench/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import types
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from panel import DEVICES, RATE, prepare_device, reamp_di, test_di  # noqa: E402  (bench/ is not a package)
from quality import PROJECT, machine_line, merge_results, run_sides  # noqa: E402

SIGNAL_MODULE = "src/ampsim/data/signal.py"


def signal_at(ref: str):
    """ampsim's reamp signal as the commit `ref` wrote it (its module, run from git's copy)."""
    source = subprocess.run(["git", "-C", str(PROJECT), "show", f"{ref}:{SIGNAL_MODULE}"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"signal_at_{ref}")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{ref}:{SIGNAL_MODULE}", "exec"), module.__dict__)
    return module.reamp_signal(RATE).audio


def compare_device(device: str, signals: dict, test_x, budgets: list[float], work: Path) -> dict:
    prepared, facts = {}, {}
    for side, di in signals.items():
        prepared[side], test_npz, facts[side] = prepare_device(device, di, test_x, work / side)
    commands = {side: [sys.executable, str(BENCH / "race.py"), "--worker", "--prepared", str(prepared[side]),
                       "--work", str(work / side / "train"), "--test-npz", str(work / side / "test.npz"),
                       "--budgets", *map(str, budgets)] for side in signals}
    rows = run_sides(commands, work, f"bench/signal_ab.py: {device}")
    ratios = {str(b["minutes"]): c["test_esr"] / b["test_esr"] for b, c in zip(rows["baseline"], rows["candidate"])}
    return {"facts": facts, **rows, "candidate_over_baseline": ratios}


def table(result: dict) -> str:
    lines = []
    for device, entry in result["devices"].items():
        latencies = ", ".join(f"{side} {facts['latency_samples']}" for side, facts in entry["facts"].items())
        lines += [f"{device} ({DEVICES[device]}): latency {latencies} samples",
                  "    budget | test ESR baseline candidate  cand/base | val ESR baseline candidate | steps"]
        for b, c in zip(entry["baseline"], entry["candidate"]):
            lines.append(f"  {b['minutes']:>4g} min | {b['test_esr']:>16.4f} {c['test_esr']:>9.4f} "
                         f"{entry['candidate_over_baseline'][str(b['minutes'])]:>10.2f} | "
                         f"{b['val_esr']:>15.4f} {c['val_esr']:>9.4f} | {b['steps']:>4} {c['steps']:>4}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git ref whose reamp signal is the baseline")
    parser.add_argument("--budgets", type=float, nargs="+", default=[5, 10], help="training minutes")
    parser.add_argument("--devices", nargs="+", default=["5150", "ds1"], choices=list(DEVICES))
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON file to merge `signal_ab` into")
    args = parser.parse_args()

    signals = {"baseline": signal_at(args.baseline), "candidate": reamp_di(None)}
    test_x = test_di()
    result = {"date": dt.date.today().isoformat(),
              "machine": machine_line(),
              "baseline": args.baseline, "budgets_minutes": sorted(args.budgets), "devices": {}}
    with tempfile.TemporaryDirectory(prefix="ampsim-signal-ab-") as tmp:
        for device in args.devices:
            print(f"{device}: both signals through {DEVICES[device]}", flush=True)
            result["devices"][device] = compare_device(device, signals, test_x, sorted(args.budgets),
                                                       Path(tmp) / device)
            print(table({"devices": {device: result["devices"][device]}}), flush=True)
    print(table(result))
    merge_results(args.out, "signal_ab", result)


if __name__ == "__main__":
    main()
