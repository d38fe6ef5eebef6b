"""The `ampsim` command: one subcommand per stage. Each parses its arguments, reads params.yaml and calls
the library; errors a user can fix are printed as one paragraph with exit code 1, no traceback (75 for a
transient failure a retry may clear: core/errors.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ampsim.core.errors import AmpsimError

RELEASES = Path("models")  # models/<device>/release: what the register stage leaves for rendering and export
UI_HOST, UI_PORT = "127.0.0.1", 5000  # where `ampsim ui` serves the MLflow UI unless told otherwise


def _params(args: argparse.Namespace) -> dict:
    from ampsim.core.params import load_params

    return load_params(args.params)


def _write_demo(out: Path, gain: float, split: str, force: bool, params: dict, source: str) -> None:
    from ampsim.core.params import DemoParams, section
    from ampsim.data.demo import write_demo_capture

    print(write_demo_capture(out, gain, split, force, section(params, "demo", DemoParams, source)))


def cmd_demo_capture(args: argparse.Namespace) -> None:
    from ampsim.core.params import DemoParams, section

    params = _params(args)
    gain = section(params, "demo", DemoParams, args.params).gain if args.gain is None else args.gain
    _write_demo(Path(args.out), gain, args.split, args.force, params, args.params)


def cmd_demo_set(args: argparse.Namespace) -> None:
    from ampsim.core.params import DemoParams, section
    from ampsim.data.demo import demo_set_name

    params = _params(args)
    demo = section(params, "demo", DemoParams, args.params)
    for gain in demo.set_gains:
        split = "val" if demo.held_out_gain is not None and gain == demo.held_out_gain else "time"
        _write_demo(Path(args.captures) / demo_set_name(gain), gain, split, args.force, params, args.params)


def cmd_signal(args: argparse.Namespace) -> None:
    import soundfile as sf

    from ampsim.core.audio import write_wav
    from ampsim.data.signal import reamp_signal

    if args.rate < 8000:
        raise AmpsimError(f"--rate {args.rate} is too low for a guitar signal", fix="use 44100, 48000, 88200 or 96000")
    signal = reamp_signal(args.rate)
    try:
        write_wav(Path(args.out), signal.audio, args.rate, subtype=args.subtype)
    except (ValueError, RuntimeError, sf.LibsndfileError) as exc:
        raise AmpsimError(f"cannot write it ({exc})", path=args.out,
                          fix="name a .wav file in a writable folder, and a subtype WAV holds (PCM_24, FLOAT)") from exc
    print(f"wrote {args.out}: {len(signal.audio) / args.rate:.1f} s at {args.rate} Hz ({args.subtype})")
    for name, (start, stop) in signal.sections.items():
        print(f"  {name:<13} {start / args.rate:7.2f} - {stop / args.rate:7.2f} s")
    print("re-amp it through your gear (README: Re-amping with `ampsim signal`), then `ampsim add DI WET --device NAME`")


def cmd_normalize(args: argparse.Namespace) -> None:
    from ampsim.core.params import NormalizeParams, section
    from ampsim.data.normalize import normalize_captures

    params = section(_params(args), "normalize", NormalizeParams, args.params)
    table = normalize_captures(Path(args.captures), Path(args.out), params)
    for name, entry in table.items():
        i, o = entry["input"], entry["output"]
        print(f"{name}: {i['seconds']:.2f} s at {i['sample_rate']} Hz, input peak {i['peak_dbfs']:.1f} dBFS, "
              f"output peak {o['peak_dbfs']:.1f} dBFS ({params.mode})")


def cmd_validate(args: argparse.Namespace) -> None:
    from ampsim.core.params import ValidateParams, section
    from ampsim.data.validate import validate_captures

    summary = validate_captures(Path(args.normalized), Path(args.out), Path(args.reports),
                                section(_params(args), "validate", ValidateParams, args.params))
    for name in summary["delay_samples"]:
        print(f"{name}: {summary['latency'][name]}")
        print(f"{name}: {summary['replicate'][name]}")
    for warning in summary["latency_warnings"]:
        print(f"ampsim validate: warning: {warning}", file=sys.stderr)
    print(f"train {summary['train_seconds']:.1f} s, validation {summary['val_seconds']:.1f} s; "
          f"report in {args.reports}/report.json, Data Docs in {args.reports}/data_docs/index.html")


def _train_config(params: dict, source: str, sample_rate: int):
    from ampsim.modelling.training import train_config

    return train_config(params, sample_rate, source)


def _tracker(params: dict, source: str):
    from ampsim.core.params import MlflowParams, section
    from ampsim.core.tracking import Tracker

    return Tracker.for_project(section(params, "mlflow", MlflowParams, source).experiment)


def _reopen_run(params: dict, source: str, run_id: str | None):
    """The training run to add results to, or None (with a warning) when the store no longer has it."""
    tracker = _tracker(params, source)
    try:
        if run_id is None:
            raise AmpsimError("the model card names no MLflow run", fix="retrain with `dvc repro -f train`")
        tracker.resume(run_id)
    except AmpsimError as exc:
        print(f"ampsim: warning: not logging to MLflow: {exc.message}", file=sys.stderr)
        return None
    return tracker


def cmd_train(args: argparse.Namespace) -> None:
    from ampsim.core.params import TrainParams, device_params, section
    from ampsim.data.windows import read_manifest
    from ampsim.modelling.backend import use_backend

    shared = _params(args)
    tracker = None if args.no_mlflow else _tracker(shared, args.params)  # an unreachable server first: exit 75
    manifest = read_manifest(Path(args.prepared))
    params = device_params(shared, args.device, args.params, cabinet=manifest.get("cabinet", False))
    if params.get("cabinet"):
        print(f"ampsim train: the captures ring for {manifest['ringing_ms']:g} ms, like a cabinet: training with "
              f"train.cabinet_recipe {params['train']['cabinet_recipe']} laid over the defaults")
    use_backend(section(params, "train", TrainParams, args.params).backend)
    from ampsim.inference.cab_ir_fit import fit_cab_ir
    from ampsim.inference.latching import first_unlatched
    from ampsim.modelling.training import train
    from ampsim.modelling.warm_start import start_folder

    config = _train_config(params, args.params, manifest["sample_rate"])
    captures = Path(args.captures) / args.device if args.device else None
    train(Path(args.prepared), Path(args.model), Path(args.reports), Path(args.checkpoint), config,
          tracker=tracker, all_params=params, progress=not args.quiet, device=args.device, data_path=captures,
          start=start_folder(captures) if captures is not None else None, ship_check=first_unlatched,
          cab_ir_fit=fit_cab_ir)
    if tracker is not None:
        print(f"MLflow run {tracker.run_id} in {tracker.uri}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ampsim.core.params import EvaluateParams, Lstm2018Params, RenderParams, section
    from ampsim.data.windows import load_split, samples
    from ampsim.inference.evaluation import PLOTS_DIR, evaluate, flat_metrics
    from ampsim.inference.latching import StreamRender, stream_check
    from ampsim.modelling.models import load_model

    params = _params(args)
    metric_2018 = section(params, "lstm2018", Lstm2018Params, args.params)  # the 2018 metric's windows, for every model
    model, card = load_model(Path(args.model))
    segments = load_split(Path(args.prepared), "val")
    render_params = section(params, "render", RenderParams, args.params)
    stream = stream_check(model, card, load_split(Path(args.prepared), "train"), segments,
                          StreamRender.of(render_params))
    result = evaluate(model, card, segments, section(params, "evaluate", EvaluateParams, args.params),
                      render_params, samples(metric_2018.window_ms, card.sample_rate),
                      samples(metric_2018.tail_ms, card.sample_rate),
                      Path(args.history), card.loss_name or "training loss", Path(args.out),
                      extra=stream.as_metrics() if stream else None)
    tracker = None if args.no_mlflow else _reopen_run(params, args.params, card.mlflow_run_id)
    if tracker is not None:
        tracker.log_metrics(flat_metrics(result))
        tracker.log_artifacts(Path(args.out) / PLOTS_DIR, "plots")
    print(f"validation ({result['val_seconds']:.1f} s): ESR {result['esr']:.4f}, ESR pre-emphasis "
          f"{result['esr_pre_emphasis']:.4f}, 2018 tail MSE {result['mse_2018']:.3g}, level {result['level_db']:+.2f} dB")
    if stream is not None:
        print(f"as one stream, every capture whole (as a plugin plays): ESR {stream.esr_stream:.4f}, in 1 s blocks "
              f"{stream.esr_blocks:.4f}, {stream.latched_seconds} s latched")
        if stream.warning():
            print(stream.warning(), file=sys.stderr)


def cmd_register(args: argparse.Namespace) -> None:
    import dataclasses

    from ampsim.core.params import RenderParams, section
    from ampsim.core.tracking import project_root
    from ampsim.data.windows import load_split
    from ampsim.deployment.registry import release
    from ampsim.inference.runtime import verified_graph
    from ampsim.inference.warmup import describe, with_warmup
    from ampsim.modelling.models import load_model, save_model

    params = _params(args)
    render_params = section(params, "render", RenderParams, args.params)
    model, card = load_model(Path(args.model))
    val, train = load_split(Path(args.prepared), "val"), load_split(Path(args.prepared), "train")
    scores = json.loads(Path(args.metrics).read_text())
    card = dataclasses.replace(with_warmup(model, card, val, train, render_params), validation_esr=scores["esr"],
                               device=args.device)
    probe = val[0].x[: int(render_params.context_probe_seconds * card.sample_rate)]
    graph = verified_graph(model, card, probe, render_params, val[0].knobs)
    save_model(model, card, Path(args.out), runtime_graph=graph)
    runtime = "ONNX Runtime" if graph else "Keras (no ONNX graph for this architecture)"
    print(f"{args.device}: {describe(card, render_params)}; renders on {runtime}; validation ESR "
          f"{scores['esr']:.4f}; ready in {args.out}")
    tracker = None if args.no_mlflow else _reopen_run(params, args.params, card.mlflow_run_id)
    if tracker is not None:
        version = release(tracker, args.device, model, card, scores, val, project_root(), runtime_graph=graph)
        print(f"registered {args.device} v{version} in {tracker.uri} (promote it: ampsim promote {args.device} {version})")


def cmd_add(args: argparse.Namespace) -> None:
    from ampsim.core.knobs import parse_knob
    from ampsim.data.intake import add_capture

    added = add_capture([Path(s) for s in args.sources], args.device, dict(parse_knob(k) for k in args.knob),
                        project=Path.cwd(), setting=args.setting, force=args.force, use_dvc=not args.no_dvc,
                        latency=args.latency)
    print(f"added {added.input.name} (DI) and {added.output.name} as {added.folder}"
          + (f", tracked by {added.dvc_file}" if added.dvc_file else ""))
    print(f"next: `dvc repro` trains device '{added.device}' (and only it), then `git add params.yaml "
          f"{added.dvc_file or added.folder} && git commit` and `dvc push`")


def cmd_init_from(args: argparse.Namespace) -> None:
    from ampsim.core.params import TrainParams, device_params, section
    from ampsim.data.captures import check_capture_name
    from ampsim.modelling.backend import use_backend

    device = check_capture_name(args.device)
    use_backend(section(device_params(_params(args), device, args.params), "train", TrainParams, args.params).backend)
    from ampsim.deployment.init_from import init_from

    started = init_from(Path.cwd(), device, args.source, use_dvc=not args.no_dvc)
    print(f"{device} starts from {started.resolved}; kept in {started.folder}"
          + (f", tracked by {started.dvc_file}" if started.dvc_file else ""))
    print(f"next: `dvc repro` fine-tunes device '{device}' (recipes.{device}.train.init_from is set), then "
          f"`git add params.yaml {started.dvc_file or started.folder} && git commit`")


def cmd_import(args: argparse.Namespace) -> None:
    from ampsim.core.params import EvaluateParams, Lstm2018Params, RenderParams, section
    from ampsim.data.captures import check_capture_name
    from ampsim.deployment.nam_import import default_folder, import_nam

    params = _params(args)
    device = check_capture_name(args.device)
    out = Path(args.out) if args.out else default_folder(device, Path(args.model))
    prepared = Path(args.prepared) if args.prepared else Path("data") / "prepared" / device
    metric_2018 = section(params, "lstm2018", Lstm2018Params, args.params)
    result = import_nam(args.model, device, out, prepared, section(params, "evaluate", EvaluateParams, args.params),
                        section(params, "render", RenderParams, args.params),
                        (metric_2018.window_ms, metric_2018.tail_ms),
                        tracker=None if args.no_mlflow else _tracker(params, args.params))
    card = result.card
    print(f"imported {args.model}: {card.architecture} at {card.sample_rate} Hz, written to {result.folder}")
    if result.scores is not None:
        print(f"validation ESR on {device}'s captures {result.scores['esr']:.4f} (pre-emphasis "
              f"{result.scores['esr_pre_emphasis']:.4f})")
    else:
        print(result.note)
    if result.version is not None:
        gate = f" (promote it: ampsim promote {device} {result.version})" if result.scores is not None else ""
        print(f"registered {device} v{result.version}, tagged imported{gate}")


def cmd_promote(args: argparse.Namespace) -> None:
    from ampsim.core.params import MlflowParams, RenderParams, section
    from ampsim.core.tracking import project_root, tracking_uri
    from ampsim.deployment.registry import promote_and_record
    from ampsim.inference.engine import render

    params = _params(args)
    alias = args.alias or section(params, "mlflow", MlflowParams, args.params).render_alias
    render_params = section(params, "render", RenderParams, args.params)
    prepared = Path(args.prepared) if args.prepared else Path("data/prepared") / args.name
    decision = promote_and_record(tracking_uri(project_root()), args.name, args.version, alias, force=args.force,
                                  prepared=prepared, models_dir=Path(args.models),
                                  render_fn=lambda model, card, x, knobs: render(model, card, x, render_params, knobs))
    print(decision.message())
    print(f"models:/{args.name}@{alias} -> v{decision.version}; recorded in {Path(args.models) / 'promoted.json'}")


def cmd_race(args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    from ampsim.core.params import RaceParams, device_params, section
    from ampsim.core.tracking import project_root, tracking_uri
    from ampsim.deployment.orchestration import registered_version
    from ampsim.deployment.race import apply_winner, race_recipe, run_race, table, winner

    params = _params(args)
    settings = section(params, "race", RaceParams, args.params)
    if args.device not in (params.get("devices") or []):
        raise AmpsimError(f"device '{args.device}' is not in `devices`", path=args.params,
                          fix="add its captures with `ampsim add` first")
    unknown = sorted(set(args.candidate or []) - set(settings.candidates))
    if unknown:
        raise AmpsimError(f"no race candidate named {', '.join(unknown)}", path=args.params,
                          fix=f"use names under `race.candidates`: {', '.join(settings.candidates)}")
    candidates = {name: recipe for name, recipe in settings.candidates.items()
                  if not args.candidate or name in args.candidate}
    own, minutes = (params.get("recipes") or {}).get(args.device), args.minutes or settings.minutes
    for recipe in candidates.values():  # a mistyped key stops here, not minutes into the race
        device_params({**params, "recipes": {args.device: race_recipe(own, recipe, minutes)}}, args.device, args.params)
    project = project_root()
    entries = run_race(project, args.device, own, candidates, minutes)
    print(table(entries))
    best = winner(entries)
    _, version = registered_version(MlflowClient(tracking_uri(project)), best.run_id)
    if args.no_apply:
        print(f"winner {best.candidate} (not applied): `dvc exp apply {best.experiment}` brings it into the workspace")
    else:
        apply_winner(project, best)
        print(f"applied {best.candidate}: params.yaml `recipes.{args.device}`, dvc.lock and the model are its own now; "
              f"commit them (`git add params.yaml dvc.lock reports/{args.device} && git commit`)")
    print(f"registered {args.device} v{version}; `ampsim promote {args.device} {version}` puts it through the gate")


def cmd_ui(args: argparse.Namespace) -> None:
    """The MLflow UI on this project's store, with the address that opens the experiment on its training runs
    (MLflow 3 starts a new browser on its GenAI view, whatever the experiment's kind)."""
    import os
    import shutil

    tracker = _tracker(_params(args), args.params)
    url = f"http://{args.host}:{args.port}/#/experiments/{tracker.experiment_id}?workflowType=machine_learning"
    print(f"open {url}", flush=True)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", tracker.uri, "--host", args.host, "--port", str(args.port)])


def cmd_render_examples(args: argparse.Namespace) -> None:
    from ampsim.core.params import RenderParams, section
    from ampsim.core.tracking import project_root, tracking_uri
    from ampsim.data.windows import load_split
    from ampsim.inference.files import render_examples
    from ampsim.inference.listening import run_link, write_listening_page
    from ampsim.modelling.models import load_model

    params = _params(args)
    render_params = section(params, "render", RenderParams, args.params)
    model, card = load_model(Path(args.model))
    segments = load_split(Path(args.prepared), "val")
    written = render_examples(model, card, segments, render_params, Path(args.out))
    tracker = None if args.no_mlflow else _reopen_run(params, args.params, card.mlflow_run_id)
    if args.page:  # after the audio: the page is drawn from the WAVs as written
        run = run_link(card.mlflow_run_id, tracker.experiment_id if tracker else None,
                       tracker.uri if tracker else tracking_uri(project_root()), f"http://{UI_HOST}:{UI_PORT}")
        page = write_listening_page(Path(args.page), Path(args.out), card, segments, render_params.passage_seconds,
                                    run, title=f"ampsim: {args.device or card.device or 'the model'}, by ear",
                                    summary=Path(args.summary) if args.summary else None,
                                    metrics=Path(args.metrics) if args.metrics else None)
        print(f"listening page: {page}")
    if tracker is not None:
        tracker.log_artifacts(Path(args.out), "audio")
    for capture, files in written.items():
        print(f"{capture}: " + ", ".join(str(path) for path in files.values()))


def _model_path(reference: str) -> str:
    """A device name as its release folder; anything else (a path, a registry URI) as it is."""
    release = RELEASES / reference / "release"
    if not reference.startswith("models:/") and not Path(reference).exists() and release.is_dir():
        return str(release)
    return reference


def _load_model(reference: str):
    """A model by registry URI (models:/NAME@ALIAS), by path, or by device name (its release folder)."""
    from ampsim.modelling.models import load_model

    reference = _model_path(reference)
    if reference.startswith("models:/"):
        from ampsim.core.tracking import project_root, tracking_uri
        from ampsim.deployment.registry import load_registered

        model, card, version = load_registered(reference, tracking_uri(project_root()))
        print(f"{reference}: version {version.version} (run {version.run_id})", file=sys.stderr)
        return model, card
    return load_model(Path(reference))


def _stream_renderer(reference: str, params, knobs: dict[str, float]):
    """(renderer, card, runtime) for a registry URI or a release folder: its ONNX graph where it has one and
    `params` ask for `fast` on ONNX Runtime, else Keras."""
    if reference.startswith("models:/"):
        from ampsim.core.tracking import project_root, tracking_uri
        from ampsim.deployment.registry import version_renderer

        render_chunk, card, version, runtime = version_renderer(reference, tracking_uri(project_root()), params, knobs)
        print(f"{reference}: version {version.version} (run {version.run_id})", file=sys.stderr)
        return render_chunk, card, runtime
    if params.runtime == "onnx" and params.method == "fast" and Path(reference).is_dir():
        from ampsim.inference.runtime import released_runtime

        released = released_runtime(Path(reference), params, knobs)
        if released is not None:
            return *released, "onnx"
    from ampsim.inference.engine import renderer
    from ampsim.modelling.models import load_model

    model, card = load_model(Path(reference))
    return renderer(model, card, params.method, params, knobs), card, "keras"


def cmd_render(args: argparse.Namespace) -> None:
    import dataclasses

    from ampsim.core.params import RenderParams, section
    from ampsim.inference.files import render_paths

    from ampsim.core.knobs import parse_knob

    params = section(_params(args), "render", RenderParams, args.params)
    params = dataclasses.replace(params, method=args.method or params.method, runtime=args.runtime or params.runtime)
    knobs = dict(parse_knob(text) for text in args.knob)
    render_chunk, card, runtime = _stream_renderer(_model_path(args.model), params, knobs)
    label = "fast on ONNX Runtime" if runtime == "onnx" else params.method
    render_paths(render_chunk, card, Path(args.input), Path(args.output), label, knobs=knobs, subtype=args.subtype,
                 channel=args.channel, resample=args.resample, force=args.force, progress=not args.quiet)


def cmd_export(args: argparse.Namespace) -> None:
    from ampsim.core.knobs import parse_knob
    from ampsim.core.params import ExportParams, section
    from ampsim.deployment.export import LoudnessProbe, export, export_pack
    from ampsim.deployment.plugin_metadata import capture_facts, loudness_input_path, read_loudness_input

    params = section(_params(args), "export", ExportParams, args.params)
    knobs = dict(parse_knob(text) for text in args.knob)
    if args.grid is not None and args.format != "nam":
        raise AmpsimError(f"--grid writes a pack of .nam files; {args.format} keeps the model's knobs",
                          fix="use --format nam with --grid, or drop --grid")
    model, card = _load_model(args.model)
    prepared = Path(args.prepared) if args.prepared else Path("data/prepared") / (card.device or "")
    facts = capture_facts(prepared, card.captures)
    if facts is None:
        print(f"ampsim export: note: {prepared}/manifest.json does not describe the captures "
              f"{', '.join(card.captures)}: the file states no interface levels, latency or data checks "
              "(pass --prepared with the model's prepared data)", file=sys.stderr)
    reference = loudness_input_path(params.loudness_input) if args.format == "nam" else None
    probe = None if reference is None else LoudnessProbe(read_loudness_input(reference), params.jit_compile)
    metadata = {**params.metadata, **({"name": args.name} if args.name else {})}
    options = {"metadata": metadata, "knobs": knobs, "facts": facts, "probe": probe}
    if args.grid is not None:
        folder = export_pack(model, card, Path(args.output), params, points=args.grid, **options)
        print(f"wrote a pack of {len(list(folder.glob('*.nam')))} settings into {folder}:\n")
        print((folder / "README.md").read_text())
        return
    written = export(model, card, args.format, Path(args.output), params, **options)
    print(f"wrote {written} ({args.format}, {card.architecture}, trained at {card.sample_rate} Hz)")
    if card.cab_ir is not None and args.format != "keras":
        from ampsim.deployment.export import ir_path

        print(f"wrote {ir_path(written, args.format)}: the model's cab IR. Load it in the plugin's IR slot: the "
              "model was trained and scored with it")
    if args.format == "nam":
        from ampsim.deployment.plugin_metadata import summary

        print(f"\n{summary(json.loads(written.read_text()))}")


# Raw text (the subcommand table below must keep its columns), so wrapped by hand.
DESCRIPTION = """\
ampsim learns a guitar amp or pedal from a capture (a dry DI recording and the same take recorded
through the amp), then plays any DI track through the trained model or exports it to a plugin."""
EPILOG = """\
usual order:
  signal OUT.wav           the reamp signal to play through your gear (then `ampsim add DI WET`)
  demo-capture, demo-set   write a synthetic capture to try it (or put yours in data/captures/<name>/)
  normalize, validate      decode, check and split the captures          `dvc repro` runs these five
  train, evaluate          fit the model, score and register it          stages in this order (only
  render-examples          write example WAVs to listen to               those whose inputs changed)
  promote NAME VERSION     point the `render` alias at the new model if it is better
  render IN OUT            play your DI tracks through the model
  export MODEL             write it for NAM or AIDA-X

`ampsim COMMAND --help` explains a command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ampsim", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sig = sub.add_parser("signal", help="write ampsim's reamp signal: play it through your gear to make a capture",
                         description="Write ampsim's reamp signal (about 3 minutes): marker blips for the "
                                     "latency, sine sweeps and noise at rising levels, guitar-like playing from soft "
                                     "to hard, a passage played twice (the replicate check) and a validation "
                                     "passage. validate recognises a capture made with it, trimmed or at another "
                                     "level, and uses its markers and passages.")
    sig.add_argument("out", help="WAV file to write, e.g. reamp.wav")
    sig.add_argument("--rate", type=int, default=48000,
                     help="sample rate in Hz: your session's (44100, 48000, 88200, 96000; default %(default)s)")
    sig.add_argument("--subtype", default="PCM_24", help="WAV subtype (default %(default)s)")
    sig.set_defaults(func=cmd_signal)

    demo = sub.add_parser("demo-capture", help="write the synthetic demo capture (DI through a virtual amp)",
                          description="Write a deterministic synthetic capture: DI through the documented "
                                      "virtual amp of ampsim.data.demo. Length, seed, latency from params.yaml demo.")
    demo.add_argument("--out", required=True, help="capture folder to write, e.g. data/captures/demo")
    demo.add_argument("--gain", type=float, help="the virtual amp's gain knob, 0-1 (default: params demo.gain)")
    demo.add_argument("--split", choices=["time", "val"], default="time",
                      help="time: train on the first 80 %%, validate on the rest; val: hold the whole capture out "
                           "(an unseen knob setting) (default: %(default)s)")
    demo.add_argument("--force", action="store_true", help="overwrite an existing demo capture")
    demo.set_defaults(func=cmd_demo_capture)

    dset = sub.add_parser("demo-set", help="write the parametric demo: the virtual amp at every demo.set_gains",
                          description="Write one synthetic capture per gain in params demo.set_gains "
                                      "(gain-<gain>, the same DI through the virtual amp, `knobs: {gain: ...}`); "
                                      "demo.held_out_gain is held out whole (split: val).")
    dset.add_argument("--captures", required=True, help="the demo device's folder, e.g. data/captures/demo")
    dset.add_argument("--force", action="store_true", help="overwrite existing demo captures")
    dset.set_defaults(func=cmd_demo_set)

    norm = sub.add_parser("normalize", help="decode captures to float32 at full scale and record statistics",
                          description="Stage 1. Decode every capture of a device folder to float32 "
                                      "±1.0 and write per-side statistics. Raw captures are never modified.")
    norm.add_argument("--captures", required=True, help="a device folder: one capture, or one folder per knob setting")
    norm.add_argument("--out", required=True, help="output folder (replaced atomically)")
    norm.set_defaults(func=cmd_normalize)

    val = sub.add_parser("validate", help="check pairs (Great Expectations), align, split train/validation",
                         description="Stage 2. Check every normalised pair, compensate its measured delay and "
                                     "split it into train/validation. Exits 1 listing every failed check.")
    val.add_argument("--normalized", required=True, help="output folder of `ampsim normalize`")
    val.add_argument("--out", required=True, help="prepared data folder (replaced atomically)")
    val.add_argument("--reports", required=True, help="folder for report.json, summary.json and Data Docs")
    val.set_defaults(func=cmd_validate)

    train = sub.add_parser("train", help="train the model chosen in params.yaml (resumes an interrupted run)",
                           description="Stage 3. Train `train.architecture` on the prepared train split, "
                                       "validating on fixed windows after every step. A checkpoint after every "
                                       "step lets a killed run resume. Logs to MLflow.")
    train.add_argument("--device", help="the device trained (names the MLflow run; its captures are the run's dataset)")
    train.add_argument("--captures", default="data/captures", help="folder of device folders (default: %(default)s)")
    train.add_argument("--prepared", required=True, help="output folder of `ampsim validate`")
    train.add_argument("--model", required=True, help="folder for model.keras and card.json (replaced atomically)")
    train.add_argument("--reports", required=True, help="folder for loss.csv and summary.json")
    train.add_argument("--checkpoint", required=True, help="checkpoint folder (kept until training finishes)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="score the model on the validation split, draw the figures",
                        description="Stage 4. Render the validation audio, compute the 2018 tail MSE, ESR, "
                                    "pre-emphasised ESR and level, draw waveform, spectrogram and loss plots.")
    ev.add_argument("--prepared", required=True, help="output folder of `ampsim validate`")
    ev.add_argument("--model", required=True, help="folder written by `ampsim train`")
    ev.add_argument("--history", required=True, help="loss.csv written by `ampsim train`")
    ev.add_argument("--out", required=True, help="folder for metrics.json and plots/")
    ev.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("render-examples", help="write input/target/prediction WAVs of the validation audio",
                        description="Stage 5. For every capture, the opening `render.example_seconds` of its "
                                    "validation audio as input.wav, target.wav and prediction.wav, for listening; "
                                    "with --page, a static page that plays them side by side with the ESR of "
                                    "each passage (`render.passage_seconds`), figures and the model card.")
    ex.add_argument("--prepared", required=True, help="output folder of `ampsim validate`")
    ex.add_argument("--model", required=True, help="folder written by `ampsim train`")
    ex.add_argument("--out", required=True, help="folder of example WAVs (replaced atomically)")
    ex.add_argument("--page", help="also write the listening page here (the render stage: reports/<device>/index.html), "
                                   "which refers to the WAVs and figures in --out by relative paths")
    ex.add_argument("--device", help="the device's name, for the page's title")
    ex.add_argument("--summary", help="training's summary.json: the steps, for the page's model card")
    ex.add_argument("--metrics", help="evaluate's metrics.json: the validation ESR, for the page's model card")
    ex.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    ex.set_defaults(func=cmd_render_examples)

    rg = sub.add_parser("register", help="measure the fast-render warm-up, release the model, register it in MLflow",
                        description="Stage 6. Measure the warm-up `fast` rendering needs (render.* settings: "
                                    "changing them never retrains), write the model with its card as the device's "
                                    "release, log it to its training run and register it as a new version of the "
                                    "device's model.")
    rg.add_argument("--device", required=True, help="the device: the registered model's name")
    rg.add_argument("--prepared", required=True, help="output folder of `ampsim validate`")
    rg.add_argument("--model", required=True, help="folder written by `ampsim train`")
    rg.add_argument("--metrics", required=True, help="metrics.json written by `ampsim evaluate`")
    rg.add_argument("--out", required=True, help="release folder: model.keras and card.json (replaced atomically)")
    rg.add_argument("--no-mlflow", action="store_true", help="do not log or register in MLflow")
    rg.set_defaults(func=cmd_register)

    ad = sub.add_parser("add", help="add a capture of a device: check, copy, `dvc add`, list it in params.yaml",
                        description="Add a capture to data/captures/DEVICE/ (with --knob: "
                                    "data/captures/DEVICE/<setting>/): a quick check of the two files, a copy named "
                                    "input.<ext> / output.<ext> (any format libsndfile reads, whatever the files are "
                                    "called; the originals are never touched), a capture.yaml, `dvc add` of the "
                                    "device folder, and the device appended to params.yaml `devices`. Run from the "
                                    "project root.")
    ad.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="a capture folder (its two audio files, told apart by their names: input/di/dry vs "
                         "output/wet/amp), or the DI file and the amp's file, in that order")
    ad.add_argument("--device", required=True, help="device name, e.g. ds1 or jcm800 (letters, digits, . _ -)")
    ad.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                    help="the knob setting of this capture, 0-1, e.g. --knob gain=0.7 (one per knob): captures of "
                         "one device at several settings train one conditioned model")
    ad.add_argument("--setting", help="the setting's folder name (default: from the knobs, e.g. gain-0.7)")
    ad.add_argument("--latency", type=int, metavar="N",
                    help="the rig's latency in samples, as a loop-back measured it (capture.yaml latency_samples); "
                         "default: `validate` measures the onset of the gear's response")
    ad.add_argument("--force", action="store_true", help="replace the device's capture (or that setting)")
    ad.add_argument("--no-dvc", action="store_true", help="copy and describe only; no `dvc add`")
    ad.set_defaults(func=cmd_add)

    rd = sub.add_parser("render", help="play DI audio through a trained model (a file, or a folder of files)",
                        description="Render IN into OUT (or every audio file of folder IN into folder OUT) at the "
                                    "input's rate and subtype, the same length. `fast` renders blocks side by "
                                    "side after the model's measured warm-up; `exact` is one continuous stream.")
    rd.add_argument("input", help="DI file (WAV/FLAC/AIFF/...) or folder of them")
    rd.add_argument("output", help="output file or folder (never the input)")
    rd.add_argument("--model", required=True, help="a device (its models/DEVICE/release), a model folder, a "
                                                  ".keras export, or models:/NAME@ALIAS from the MLflow registry")
    rd.add_argument("--method", choices=["fast", "exact", "sliding-window"],
                    help="default: params render.method; sliding-window is the 2018 model's own method")
    rd.add_argument("--runtime", choices=["onnx", "keras"],
                    help="default: params render.runtime; onnx renders a release's ONNX graph (fast method) "
                         "without importing Keras")
    rd.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                    help="a knob-conditioned model's setting, 0-1, e.g. --knob gain=0.7 (one per knob)")
    rd.add_argument("--subtype", help="output subtype, e.g. PCM_24 or FLOAT (default: the input's where the output "
                                     "format holds it, else PCM_24, else the format's own codec)")
    rd.add_argument("--channel", type=int, help="which channel of a multi-channel input is the DI (1 = first)")
    rd.add_argument("--resample", action="store_true",
                    help="convert an input at another rate to the model's and the result back (soxr)")
    rd.add_argument("--force", action="store_true", help="replace existing output files")
    rd.add_argument("--quiet", action="store_true", help="no progress bar")
    rd.set_defaults(func=cmd_render)

    xp = sub.add_parser("export", help="write a model for a real-time plugin: .nam (NAM), AIDA-X JSON, or .keras",
                        description="Export a trained model. nam: Neural Amp Modeler's LSTM file with NAM's "
                                    "metadata (a knob-conditioned model at a baked --knob setting, or a --grid pack), "
                                    "and a summary to paste; aidax: RTNeural JSON for AIDA-X (one LSTM layer, knobs "
                                    "live); keras: the Keras file plus card.")
    xp.add_argument("model", help="a device (its models/DEVICE/release), a model folder, a .keras export, or "
                                  "models:/NAME@ALIAS")
    xp.add_argument("--format", required=True, choices=["nam", "aidax", "keras"])
    xp.add_argument("-o", "--output", required=True, help="file to write (.nam, .json or .keras), or the "
                                                          "pack's folder with --grid")
    xp.add_argument("--name", help="model name in the file's metadata (default: export.metadata.name, "
                                   "else the capture names)")
    xp.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                    help="nam: bake this setting of a knob-conditioned model into the file, e.g. --knob gain=0.6 "
                         "(one per knob)")
    xp.add_argument("--grid", type=int, metavar="N",
                    help="nam: write a pack into the new folder -o: N settings (0 to 1) of every knob not fixed by "
                         "--knob, all combinations, with a README table of the settings and their loudness")
    xp.add_argument("--prepared",
                    help="prepared data of the model's captures: their levels, latency and data checks go into the "
                         "file (default: data/prepared/DEVICE, the model's device)")
    xp.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="bring a NAM model (.nam: LSTM or WaveNet, 0.5.x-0.7.x) in as a version of a device",
                        description="Read a .nam file (checked whole before anything is built), score it on the "
                                    "device's prepared captures where it has any (so it can enter the promotion "
                                    "gate beside your own training), and register it in MLflow as a new version "
                                    "of the device, tagged imported, with the file's metadata. It renders and "
                                    "exports like any model (`--model models/DEVICE/imported/NAME` or "
                                    "`models:/DEVICE/VERSION`).")
    im.add_argument("model", help="the .nam file")
    im.add_argument("--device", required=True, help="the device it models (its registered model's name)")
    im.add_argument("--prepared", help="validation data to score on (default: data/prepared/DEVICE, the device's)")
    im.add_argument("--out", help="model folder to write (default: models/DEVICE/imported/FILE-NAME)")
    im.add_argument("--no-mlflow", action="store_true", help="do not register it in MLflow")
    im.set_defaults(func=cmd_import)

    st = sub.add_parser("init-from", help="fine-tune a device: start its training from another model's weights",
                        description="Check SOURCE against the device's recipe (architecture, size, knobs: a plain "
                                    "model can start a knob-conditioned one, its knob weights at zero), keep it "
                                    "beside the device's captures (data/captures/DEVICE/.start, versioned by DVC "
                                    "with them) and set recipes.DEVICE.train.init_from. `dvc repro` then trains "
                                    "the device from it.")
    st.add_argument("device", help="the device to fine-tune (in params.yaml's devices, with captures)")
    st.add_argument("source", help="another device (its released model), models:/NAME@ALIAS or models:/NAME/VERSION, "
                                   "a .nam file, or a .keras file")
    st.add_argument("--no-dvc", action="store_true", help="do not `dvc add` the captures folder again")
    st.set_defaults(func=cmd_init_from)

    pr = sub.add_parser("promote", help="point a registry alias (default `render`) at a model version, if it is better",
                        description="Promote NAME VERSION to an alias if its validation ESR beats the current "
                                    "holder's on the same validation data (re-scoring both on --prepared when "
                                    "they were scored on different data). Prints and tags the decision and "
                                    "records it in models/promoted.json.")
    pr.add_argument("name", help="the device, which is its registered model's name (printed by `ampsim register`)")
    pr.add_argument("version", help="model version number")
    pr.add_argument("--alias", help="default: params mlflow.render_alias")
    pr.add_argument("--force", action="store_true", help="promote even if it is not better (recorded as forced)")
    pr.add_argument("--prepared", help="validation data for re-scoring (default: data/prepared/NAME, the device's)")
    pr.add_argument("--models", default="models", help="folder of promoted.json (default: %(default)s)")
    pr.set_defaults(func=cmd_promote)

    ra = sub.add_parser("race", help="race training recipes for one device as DVC experiments; apply the winner",
                        description="Each candidate of params.yaml `race.candidates` (or those named) trains the device "
                                    "for `race.minutes` as one `dvc exp run` of its stages, over the device's own "
                                    "`recipes` entry; each is evaluated and registered. The lowest validation ESR wins "
                                    "and is applied to the workspace (`dvc exp apply`). Run from the project root.")
    ra.add_argument("device", help="a device listed in params.yaml `devices`")
    ra.add_argument("--candidate", action="append", help="race only this candidate (repeatable)")
    ra.add_argument("--minutes", type=float, help="training minutes each (default: params race.minutes)")
    ra.add_argument("--no-apply", action="store_true", help="leave the workspace as the last candidate left it")
    ra.set_defaults(func=cmd_race)

    ui = sub.add_parser("ui", help="the MLflow UI on this project's runs (prints the address to open)",
                        description="Start `mlflow ui` on the project's store (MLFLOW_TRACKING_URI, else mlflow.db) and "
                                    "print the address that opens experiment `mlflow.experiment` on its training runs.")
    ui.add_argument("--host", default=UI_HOST, help="(default: %(default)s)")
    ui.add_argument("--port", type=int, default=UI_PORT, help="(default: %(default)s)")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ampsim.core.quiet import quiet_backends

    quiet_backends()  # before any command imports TensorFlow or JAX
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AmpsimError as exc:
        print(f"ampsim {args.command}: error: {exc.message}", file=sys.stderr)
        return exc.exit_code  # 1: the input is at fault; 75: transient (core/errors.py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
