"""A race of ampsim recipes on the panel's devices: which recipe learns which kind of gear best per CPU-minute.

The panel (bench/panel.py) puts ampsim's default recipe against NAM's trainer; this puts ampsim's candidate
recipes against each other, on the same captures (ampsim's reamp signal through a teacher, prepared by
ampsim's normalize + validate) and the same test (real guitar DI, lag 0). Candidates run two at a time, one
per core, for the same training-time budgets, so a pair always shares what else loads the machine. The
winner per device is the candidate with the lowest *validation* ESR at the largest budget (what a user's
own race can see); its test ESR is printed beside, to show whether validation picks well.

    .venv/bin/python bench/race.py --devices 5150 ds1 --budgets 2 5 \\
        --candidate 'lstm16' --candidate 'lstm32;lstm.hidden_size=32' \\
        --candidate 'wavenet;train.architecture=wavenet'

A candidate is `NAME[;SECTION.KEY=VALUE;...]` (values read as YAML, as bench/quality.py's --set). Writes
`race` into bench/results.json (merged by device and candidate, so races on other devices are kept).

`--steps`: the budgets are step counts, and the learning rate follows the step rather than the clock. A run
then repeats exactly (JAX on a CPU, on one machine), so two candidates differ only by what their settings change:
a controlled pair, where two runs by the clock differ by the machine's noise too. Run both sides of a pair in the
same session: on another session's machine the same seed and data took another path (bench/RESULTS.md, session
31), and `machine` records the CPU model for that reason. Candidates may differ by seed alone
(`'s7;train.random_seed=7'`). Written as `race_steps`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from panel import DEVICES, lag_zero_scorer, prepare_device, reamp_di, test_di  # noqa: E402  (bench/ is not a package)
from quality import ampsim_side, candidate_params, machine_line, run_sides  # noqa: E402


def parse_candidate(spec: str) -> tuple[str, list[str]]:
    name, *overrides = [part.strip() for part in spec.split(";") if part.strip()]
    candidate_params(overrides)  # a mistyped setting stops here, before any audio is rendered
    return name, overrides


def race_device(device: str, prepared: Path, test_npz: Path, candidates: dict[str, list[str]],
                budgets: list[float], work: Path, by_steps: bool = False) -> dict:
    """Every candidate on one device, two at a time (core 0 and core 1); their rows by name."""
    rows, names = {}, list(candidates)
    for first in range(0, len(names), 2):
        pair = names[first:first + 2]
        commands = {name: [sys.executable, __file__, "--worker", "--prepared", str(prepared), "--work",
                           str(work / name), "--test-npz", str(test_npz), "--budgets", *map(str, budgets),
                           *(["--steps"] if by_steps else []), *(f"--set={o}" for o in candidates[name])]
                    for name in pair}
        print(f"{device}: {' | '.join(pair)}", flush=True)
        rows.update(run_sides(commands, work, f"bench/race.py: {device}"))
    return rows


def winner(rows: dict[str, list[dict]]) -> str:
    return min(rows, key=lambda name: rows[name][-1]["val_esr"])


def table(race: dict) -> str:
    lines = []
    for device, entry in race["devices"].items():
        lines += [f"{device} ({entry['teacher']}): latency {entry['latency_samples']} samples",
                  "    candidate             budget | val ESR  test ESR  train ESR | latched s | steps  parameters"]
        for name, rows in entry["candidates"].items():
            for row in rows:
                lines.append(f"    {name:<20} {row['minutes']:>4g} min | {row['val_esr']:>7.4f}  "
                             f"{row['test_esr']:>8.4f}  {row['train_esr']:>9.4f} | {row.get('latched_seconds')!s:>9} | "
                             f"{row['steps']:>5}  {row['parameters']:>10}")
        best = winner(entry["candidates"])
        lines.append(f"    winner by validation: {best} (test ESR {entry['candidates'][best][-1]['test_esr']:.4f})")
    return "\n".join(lines)


def merge_race(path: Path, race: dict, under: str = "race") -> None:
    results = json.loads(path.read_text()) if path.is_file() else {}
    kept = results.setdefault(under, {"devices": {}})
    kept.update({key: value for key, value in race.items() if key not in ("devices", "settings")})
    kept.setdefault("settings", {}).update(race["settings"])
    for device, entry in race["devices"].items():
        old = kept["devices"].setdefault(device, {"candidates": {}})
        old.update({key: value for key, value in entry.items() if key != "candidates"})
        old["candidates"].update(entry["candidates"])
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[2, 5], help="training minutes (steps with --steps)")
    parser.add_argument("--steps", action="store_true", help="budgets in steps, the learning rate by step: runs repeat")
    parser.add_argument("--devices", nargs="+", default=list(DEVICES), choices=list(DEVICES))
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME[;SECTION.KEY=VALUE...]")
    parser.add_argument("--seconds", type=float, help="use only the reamp signal's first SECONDS (a smoke run)")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON file to merge `race` into")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--test-npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rows = ampsim_side(args.prepared, args.work, args.budgets, args.overrides,
                           test=lag_zero_scorer(args.test_npz), by_steps=args.steps)
        args.out.write_text(json.dumps(rows, indent=2))
        return

    candidates = dict(parse_candidate(spec) for spec in args.candidate or ["params.yaml"])
    di, test_x = reamp_di(args.seconds), test_di()
    race = {"date": dt.date.today().isoformat(),
            "machine": machine_line(),
            f"budgets_{'steps' if args.steps else 'minutes'}": sorted(args.budgets), "settings": candidates,
            "devices": {}}
    with tempfile.TemporaryDirectory(prefix="ampsim-race-") as tmp:
        for device in args.devices:
            work = Path(tmp) / device
            print(f"{device}: re-amping through {DEVICES[device]}", flush=True)
            prepared, test_npz, facts = prepare_device(device, di, test_x, work)
            rows = race_device(device, prepared, test_npz, candidates, sorted(args.budgets), work, args.steps)
            race["devices"][device] = {**facts, "candidates": rows, "winner_by_validation": winner(rows)}
    print(table(race))
    merge_race(args.out, race, "race_steps" if args.steps else "race")


if __name__ == "__main__":
    main()
