"""Fine-tuning (`train.init_from`) against training from scratch, on a neighbouring setting of one amp.

The JCM900 channel-A teachers (../shared/teachers) at gain 6 and gain 8 play ampsim's reamp signal: two
captures of one amp, prepared by ampsim's normalize + validate. ampsim's default recipe first learns gain 6
(`--neighbour-minutes` of training, one core): the neighbouring model. Then gain 8 is learnt twice, side by
side, one core each, for the same training-time budgets: from scratch, and from the gain-6 model (what
`ampsim init-from jcm-g8 jcm-g6` sets up). Each budget's model as it would ship (its best validation weights
so far) is scored as the panel scores: on real guitar DI neither trained on, played by the gain-8 teacher,
at lag 0. Prints the table and the ratio fine-tuned/scratch, and writes `finetune` into bench/results.json.

    .venv/bin/python bench/finetune.py                     # 1 and 2 min after a 5-min neighbour, ~15 min
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
from knobset import SETTINGS  # noqa: E402  (bench/ is not a package)
from panel import lag_zero_scorer, prepare_device, reamp_di, test_di  # noqa: E402
from quality import ampsim_side, machine_line, merge_results, run_sides  # noqa: E402

NEIGHBOUR, TARGET = 0.6, 0.8


def worker(side: str, prepared: Path, work: Path, budgets: list[float], test_npz: Path | None,
           start: Path | None) -> list[dict]:
    score = lag_zero_scorer(test_npz) if test_npz else None
    overrides = [f"train.init_from=gain {NEIGHBOUR:g}"] if side == "finetuned" else []
    return ampsim_side(prepared, work, budgets, overrides, test=score, start=start if side == "finetuned" else None)


def table(result: dict) -> str:
    lines = [f"JCM900 channel A, gain {TARGET:g}: from scratch vs from the gain-{NEIGHBOUR:g} model "
             f"({result['neighbour']['minutes']:g} min, its validation ESR on its own setting "
             f"{result['neighbour']['val_esr']:.4f})",
             "    budget | test ESR scratch  finetuned  finetuned/scratch | val ESR scratch  finetuned | steps"]
    for s, f in zip(result["scratch"], result["finetuned"]):
        lines.append(f"  {s['minutes']:>4g} min | {s['test_esr']:>16.4f} {f['test_esr']:>10.4f} "
                     f"{f['test_esr'] / s['test_esr']:>18.2f} | {s['val_esr']:>15.4f} {f['val_esr']:>10.4f} | "
                     f"{s['steps']} / {f['steps']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 2], help="training minutes on the target")
    parser.add_argument("--neighbour-minutes", type=float, default=5.0, help="training minutes of the neighbour")
    parser.add_argument("--seconds", type=float, help="use only the reamp signal's first SECONDS (a smoke run)")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON file to merge `finetune` into")
    parser.add_argument("--side", choices=("scratch", "finetuned", "neighbour"), help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--test-npz", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        rows = worker(args.side, args.prepared, args.work, args.budgets, args.test_npz, args.start)
        args.out.write_text(json.dumps(rows, indent=2))
        return

    di, test_x = reamp_di(args.seconds), test_di()
    with tempfile.TemporaryDirectory(prefix="ampsim-finetune-") as tmp:
        work = Path(tmp)
        prepared = {}
        for gain in (NEIGHBOUR, TARGET):
            print(f"gain {gain:g}: re-amping through {SETTINGS[gain]}", flush=True)
            prepared[gain] = prepare_device(f"jcm-g{gain:g}", di, test_x, work / f"g{gain:g}", SETTINGS[gain])
        command = [sys.executable, __file__, "--prepared"]
        neighbour = run_sides({"neighbour": [*command, str(prepared[NEIGHBOUR][0]), "--work", str(work / "neighbour"),
                                             "--side", "neighbour", "--budgets", str(args.neighbour_minutes)]},
                              work, "bench/finetune.py: the neighbour")["neighbour"][-1]
        target, test_npz, facts = prepared[TARGET]
        sides = run_sides({side: [*command, str(target), "--work", str(work / side), "--side", side,
                                  "--budgets", *map(str, args.budgets), "--test-npz", str(test_npz),
                                  "--start", str(work / "neighbour" / "model")]
                           for side in ("scratch", "finetuned")}, work, "bench/finetune.py: gain 0.8")
    result = {"date": dt.date.today().isoformat(),
              "machine": machine_line(),
              "neighbour": {"teacher": SETTINGS[NEIGHBOUR], **neighbour}, "target": facts, **sides}
    print(table(result))
    merge_results(args.out, "finetune", result)


if __name__ == "__main__":
    main()
