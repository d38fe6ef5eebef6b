"""The `ampsim` command: one subcommand per stage. Each parses its arguments, reads params.yaml and calls
the library; errors a user can fix are printed as one paragraph with exit code 1, no traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ampsim.errors import AmpsimError


def _params(args: argparse.Namespace) -> dict:
    from ampsim.params import load_params

    return load_params(args.params)


def cmd_demo_capture(args: argparse.Namespace) -> None:
    from ampsim.audio import write_wav
    from ampsim.captures import INPUT_FILE, META_FILE, OUTPUT_FILE, check_capture_name
    from ampsim.demo import synth_di, virtual_amp
    from ampsim.params import AudioParams, DemoParams, section

    params = _params(args)
    audio, demo = section(params, "audio", AudioParams, args.params), section(params, "demo", DemoParams, args.params)
    gain = demo.gain if args.gain is None else args.gain
    out = Path(args.out)
    check_capture_name(out.name, out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise AmpsimError("folder exists and is not empty", path=out,
                          fix="choose another --out, or pass --force to regenerate the demo there")
    di = synth_di(demo.seconds, audio.sample_rate, demo.seed)
    wet = virtual_amp(di, audio.sample_rate, gain, demo.latency_ms)
    write_wav(out / INPUT_FILE, di, audio.sample_rate, subtype="PCM_16")
    write_wav(out / OUTPUT_FILE, wet, audio.sample_rate, subtype="PCM_16")
    meta = (f"device: ampsim virtual amp (synthetic, see `ampsim demo-capture --help`)\n"
            f"notes: synthetic DI (seed {demo.seed}) through the virtual amp at gain {gain}; not a recording\n"
            f"split: time\n")
    (out / META_FILE).write_text(meta)
    print(f"wrote {out / INPUT_FILE} and {out / OUTPUT_FILE} ({demo.seconds:g} s at {audio.sample_rate} Hz, gain {gain})")


def cmd_normalize(args: argparse.Namespace) -> None:
    from ampsim.normalize import normalize_captures
    from ampsim.params import NormalizeParams, section

    params = section(_params(args), "normalize", NormalizeParams, args.params)
    table = normalize_captures(Path(args.captures), Path(args.out), params)
    for name, entry in table.items():
        i, o = entry["input"], entry["output"]
        print(f"{name}: {i['seconds']:.2f} s at {i['sample_rate']} Hz, input peak {i['peak_dbfs']:.1f} dBFS, "
              f"output peak {o['peak_dbfs']:.1f} dBFS ({params.mode})")


def cmd_validate(args: argparse.Namespace) -> None:
    from ampsim.params import AudioParams, ValidateParams, section
    from ampsim.validate import validate_captures

    params = _params(args)
    audio = section(params, "audio", AudioParams, args.params)
    summary = validate_captures(Path(args.normalized), Path(args.out), Path(args.reports), audio.sample_rate,
                                section(params, "validate", ValidateParams, args.params))
    for name, delay in summary["delay_samples"].items():
        whole = summary["delay_whole_file_samples"][name]
        print(f"{name}: delay {delay} samples ({1000 * delay / audio.sample_rate:.2f} ms), compensated "
              f"(measured on the opening; {whole} over the whole file)")
    print(f"train {summary['train_seconds']:.1f} s, validation {summary['val_seconds']:.1f} s; "
          f"report in {args.reports}/report.json, Data Docs in {args.reports}/data_docs/index.html")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ampsim", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo-capture", help="write the synthetic demo capture (DI through a virtual amp)",
                          description="Write a deterministic synthetic capture: DI through the documented "
                                      "virtual amp of ampsim.demo. Length, seed, latency from params.yaml demo.")
    demo.add_argument("--out", required=True, help="capture folder to write, e.g. data/captures/demo")
    demo.add_argument("--gain", type=float, help="the virtual amp's gain knob, 0-1 (default: params demo.gain)")
    demo.add_argument("--force", action="store_true", help="overwrite an existing demo capture")
    demo.set_defaults(func=cmd_demo_capture)

    norm = sub.add_parser("normalize", help="decode captures to float32 at full scale and record statistics",
                          description="Stage 1. Decode every data/captures/<name>/{input,output}.wav to float32 "
                                      "±1.0 and write per-side statistics. Raw captures are never modified.")
    norm.add_argument("--captures", required=True, help="folder of capture folders")
    norm.add_argument("--out", required=True, help="output folder (replaced atomically)")
    norm.set_defaults(func=cmd_normalize)

    val = sub.add_parser("validate", help="check pairs (Great Expectations), align, split train/validation",
                         description="Stage 2. Check every normalised pair, compensate its measured delay and "
                                     "split it into train/validation. Exits 1 listing every failed check.")
    val.add_argument("--normalized", required=True, help="output folder of `ampsim normalize`")
    val.add_argument("--out", required=True, help="prepared data folder (replaced atomically)")
    val.add_argument("--reports", required=True, help="folder for report.json, summary.json and Data Docs")
    val.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AmpsimError as exc:
        print(f"ampsim {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
