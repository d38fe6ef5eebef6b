"""The listening page of a device (reports/<device>/index.html): guitarists judge a model by ear, so for every
capture the render stage wrote, the page puts the dry DI, the amp and the model side by side, with the knob
setting, the waveform overlay and spectrograms, the ESR and level of each passage, and the model card.

The page is static: it opens from file:// (no server), fetches nothing from the network, and refers to the
audio and figures by paths relative to itself, so it works in any clone after `dvc pull`."""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote

import numpy as np

from ampsim.core.audio import read_audio, write_text
from ampsim.core.metrics import esr as example_esr
from ampsim.data.windows import Segment
from ampsim.inference import plots

if TYPE_CHECKING:  # the page is drawn from the WAVs and the card: no Keras needed
    from ampsim.modelling.models import ModelCard

SIDES = {"dry": "input", "amp": "target", "model": "prediction"}  # player label -> WAV of the render stage
WAVEFORM_FILE, SPECTROGRAM_FILE = "waveform.png", "spectrogram.png"
SILENCE = 1e-20  # the energy floor of `metrics.esr`, so that a passage's ESR is that function's on its slice


def passage_scores(target: np.ndarray, prediction: np.ndarray, passage_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """ESR and level (RMS of the amp, dBFS) of consecutive passages of `passage_samples`; the last one is
    shorter when the example does not divide evenly, so that every sample is scored."""
    if passage_samples < 1 or len(target) == 0:
        raise ValueError(f"cannot split {len(target)} samples into passages of {passage_samples}")
    target = np.asarray(target, np.float64)
    error = target - np.asarray(prediction, np.float64)
    starts = np.arange(0, len(target), passage_samples)
    signal_energy = np.add.reduceat(target**2, starts)
    error_energy = np.add.reduceat(error**2, starts)
    lengths = np.diff(np.append(starts, len(target)))
    level = 10 * np.log10(np.maximum(signal_energy / lengths, SILENCE))
    return error_energy / np.maximum(signal_energy, SILENCE), level


@dataclass(frozen=True)
class RunLink:
    """Where the model's MLflow run is shown."""

    run_id: str | None  # None: trained with --no-mlflow
    url: str | None  # the run's page, when the experiment's id is known
    ui: str  # the MLflow UI's address
    serve: str | None  # the command that serves that UI first (a local store); None: a tracking server


def run_link(run_id: str | None, experiment_id: str | None, tracking_uri: str, local_ui: str) -> RunLink:
    """A tracking server is its own UI; a local store is seen through `ampsim ui`, which serves it at
    `local_ui`. Without the experiment's id (rendered with --no-mlflow) there is no address, only the run id."""
    server = tracking_uri.startswith(("http://", "https://"))
    ui = tracking_uri.rstrip("/") if server else local_ui
    url = f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if run_id and experiment_id is not None else None
    return RunLink(run_id, url, ui, None if server else "ampsim ui")


@dataclass(frozen=True)
class Example:
    """One capture's example as the page shows it; paths are relative to the page."""

    capture: str
    knobs: dict[str, float]
    held_out: bool  # a setting the model never trained on
    audio: dict[str, str]  # player label -> WAV
    figures: dict[str, str]  # caption -> PNG
    passage_seconds: float
    passage_esr: np.ndarray
    passage_level_dbfs: np.ndarray
    esr: float  # over the whole example


def _relative(path: Path, page_dir: Path) -> str:
    return quote(Path(os.path.relpath(path, page_dir)).as_posix())


def _draw(path: Path, draw: Callable[[Path], None]) -> None:
    """Draw a figure atomically. Matplotlib picks the format from the file name, so the scratch file keeps
    the name, in a private folder beside it."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        draw(scratch / path.name)
        os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def example(segment: Segment, card: ModelCard, render_dir: Path, page_dir: Path, passage_seconds: float) -> Example:
    """Score a capture's rendered example passage by passage and draw its figures beside its audio."""
    folder = Path(render_dir) / segment.capture
    sides = {name: read_audio(folder / f"{name}.wav") for name in SIDES.values()}
    audio = {name: sides[name].samples[:, 0] for name in sides}
    rate = sides["target"].sample_rate
    _draw(folder / WAVEFORM_FILE, lambda path: plots.waveform_overlay(
        path, {f"{segment.capture}: amp vs model": (audio["target"], audio["prediction"])}, rate))
    _draw(folder / SPECTROGRAM_FILE, lambda path: plots.spectrograms(path, {segment.capture: audio}, rate))
    passage_samples = max(1, int(round(passage_seconds * rate)))
    esr, level = passage_scores(audio["target"], audio["prediction"], passage_samples)
    return Example(segment.capture, dict(segment.knobs), segment.held_out or segment.capture not in card.captures,
                   {label: _relative(folder / f"{name}.wav", page_dir) for label, name in SIDES.items()},
                   {"waveform overlay, amp vs model": _relative(folder / WAVEFORM_FILE, page_dir),
                    "spectrograms: dry, amp, model": _relative(folder / SPECTROGRAM_FILE, page_dir)},
                   passage_samples / rate, esr, level, example_esr(audio["target"], audio["prediction"]))


def _read_json(path: Path | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path is not None else None


def write_listening_page(page: Path, render_dir: Path, card: ModelCard, segments: list[Segment],
                         passage_seconds: float, run: RunLink, *, title: str, summary: Path | None = None,
                         metrics: Path | None = None) -> Path:
    """Write the page (atomically) for the examples `render_examples` wrote into `render_dir` from `segments`.
    `summary` (training's summary.json) and `metrics` (evaluate's metrics.json) fill in the model card."""
    page = Path(page)
    examples = [example(segment, card, render_dir, page.parent, passage_seconds) for segment in segments]
    facts = model_facts(card, _read_json(summary), _read_json(metrics), run)
    write_text(page, page_html(title, facts, examples, _read_json(metrics)))
    return page


# --- the model card ----------------------------------------------------------------------------------

def _latency(card: ModelCard) -> str:
    values = sorted(set(card.latency_samples.values()))
    if not values:
        return "not recorded"
    low, high = (f"{1000 * samples / card.sample_rate:.2f} ms" for samples in (values[0], values[-1]))
    if len(values) == 1:
        return f"{values[0]} samples ({low}) compensated"
    return f"{values[0]} to {values[-1]} samples ({low} to {high}) compensated, by capture"


def _training(summary: dict | None) -> str:
    if summary is None:
        return "not given"
    return (f"{summary['steps']} steps, the best at step {summary['best_step']} ({summary['stopped']}; "
            f"{summary['minutes']:.1f} min)")


def _validation(card: ModelCard, metrics: dict | None) -> str:
    if metrics is None:
        return f"{card.validation_esr:.4f}" if card.validation_esr is not None else "not given"
    held_out = metrics.get("esr_held_out")
    unseen = f"; at the held-out setting {held_out:.4f}" if held_out is not None else ""
    return f"{metrics['esr']:.4f} over {metrics['val_seconds']:.1f} s of validation audio{unseen}"


def _cab_ir(card: ModelCard) -> str:
    if card.cab_ir is None:
        return "none: the network alone"
    from ampsim.modelling import cab_ir

    taps = len(cab_ir.decode(card.cab_ir))
    return f"{taps} taps ({1000 * taps / card.sample_rate:.0f} ms) after the network, fitted after training"


def model_facts(card: ModelCard, summary: dict | None, metrics: dict | None, run: RunLink) -> list[tuple[str, str]]:
    """The model card as (label, HTML) rows; the values are escaped here, the run's link built here."""
    architecture = card.architecture + (f", {summary['parameters']:,} weights" if summary else "")
    if run.run_id is None:
        mlflow = "none: the model was trained with --no-mlflow"
    else:
        where = (f'<a href="{html.escape(run.url)}">{html.escape(run.url)}</a>' if run.url
                 else f"in the MLflow UI at {html.escape(run.ui)}")
        serve = f" (serve it first: <code>{html.escape(run.serve)}</code> in the project folder)" if run.serve else ""
        mlflow = f"<code>{html.escape(run.run_id)}</code>, {where}{serve}"
    rows = [("architecture", architecture), ("training", _training(summary)),
            ("loss", card.loss_name or "not recorded"), ("sample rate", f"{card.sample_rate} Hz"),
            ("knobs", ", ".join(card.knobs) or "none (one setting)"), ("latency", _latency(card)),
            ("cab IR", _cab_ir(card)), ("validation ESR", _validation(card, metrics)),
            ("trained on", ", ".join(card.captures))]
    return [(label, html.escape(value)) for label, value in rows] + [("MLflow run", mlflow)]


# --- the page ----------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1250px; padding: 0 1rem; color: #222; }
table.card th { text-align: left; white-space: nowrap; padding-right: 1.5rem; font-weight: 600; vertical-align: top; }
section.capture { border-top: 1px solid #ccc; margin-top: 1.5rem; padding-top: 0.5rem; }
section.capture.held-out { border-top: 3px solid #b35900; }
.held-out-mark { background: #b35900; color: white; padding: 0.1rem 0.5rem; border-radius: 0.3rem; font-size: 0.85rem; }
.players { display: grid; grid-template-columns: repeat(3, 1fr); gap: 1rem; }
.players figure { margin: 0; } .players audio { width: 100%; }
.passages { display: flex; flex-wrap: wrap; gap: 2px; margin: 0.8rem 0; }
button.passage { border: 1px solid #999; border-radius: 0.2rem; padding: 0.2rem 0.4rem; cursor: pointer;
  background: hsl(calc(120 - 120 * var(--badness)), 70%, 82%); font: inherit; font-size: 0.8rem; line-height: 1.3; }
button.passage span { display: block; }
.figures img { max-width: 100%; display: block; }
.figures figure { margin: 0.5rem 0; }
"""

# Inline, so that the page needs nothing from the network and opens from file://.
SCRIPT = """
"use strict";
// A passage moves the capture's three players to it together: the same notes dry, through the amp, through the model.
document.querySelectorAll("button.passage").forEach((button) => {
  button.addEventListener("click", () => {
    const start = Number(button.dataset.start);
    button.closest("section.capture").querySelectorAll("audio").forEach((player) => { player.currentTime = start; });
  });
});
// One player at a time: two sounding together cannot be compared.
document.addEventListener("play", (event) => {
  document.querySelectorAll("audio").forEach((player) => { if (player !== event.target) player.pause(); });
}, true);
"""

INTRO = ("Each capture's opening seconds of validation audio (never trained on): the dry DI, the amp and the "
         "model. Below the players, the ESR of each passage, Σ(amp − model)² / Σ amp² (0 is perfect, 1 as bad as "
         "silence; green at 0.001 and below, red at 1), and the amp's level there: a model often struggles "
         "where the playing is loud, or quiet. Click a passage to move the three players to it.")


def _badness(esr: float) -> float:
    """ESR on a log scale from 0.001 (0: green) to 1 (1: red), the range where models are told apart by ear."""
    return float(np.clip((np.log10(max(esr, 1e-6)) + 3) / 3, 0, 1))


def _passages_html(item: Example) -> str:
    buttons = []
    for index, (esr, level) in enumerate(zip(item.passage_esr, item.passage_level_dbfs)):
        start = index * item.passage_seconds
        buttons.append(f'<button type="button" class="passage" data-start="{start:.6g}" '
                       f'style="--badness: {_badness(esr):.3f}" title="play from {start:.2f} s">'
                       f'<span>{start:.1f} s</span><span>ESR {esr:.3g}</span><span>{level:.1f} dBFS</span></button>')
    return f'<div class="passages">{"".join(buttons)}</div>'


def _capture_html(item: Example, metrics: dict | None) -> str:
    name = html.escape(item.capture)
    setting = ", ".join(f"{html.escape(knob)} {value:g}" for knob, value in sorted(item.knobs.items())) or "no knobs"
    mark = ' <span class="held-out-mark">held out: a setting the model never trained on</span>' if item.held_out else ""
    scored = ((metrics or {}).get("captures") or {}).get(item.capture)
    validation = f"; over its whole validation audio {scored['esr']:.4f}" if scored else ""
    players = "".join(f'<figure><figcaption>{html.escape(label)}</figcaption><audio controls preload="metadata" '
                      f'data-side="{html.escape(label)}" src="{html.escape(src)}"></audio></figure>'
                      for label, src in item.audio.items())
    figures = "".join(f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}, {name}">'
                      f'<figcaption>{html.escape(caption)}</figcaption></figure>'
                      for caption, src in item.figures.items())
    return (f'<section class="capture{" held-out" if item.held_out else ""}" data-capture="{name}" '
            f'data-held-out="{str(item.held_out).lower()}">\n<h2>{name}: {setting}{mark}</h2>\n'
            f'<p>ESR of this example {item.esr:.4f}{validation}</p>\n<div class="players">{players}</div>\n'
            f'{_passages_html(item)}\n<div class="figures">{figures}</div>\n</section>')


def page_html(title: str, facts: list[tuple[str, str]], examples: list[Example], metrics: dict | None) -> str:
    """The whole page; `facts` are HTML already (see `model_facts`), everything else is escaped here."""
    card = "".join(f"<tr><th>{html.escape(label)}</th><td>{value}</td></tr>" for label, value in facts)
    captures = "\n".join(_capture_html(item, metrics) for item in examples)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(INTRO)}</p>
<h2>Model card</h2>
<table class="card">{card}</table>
{captures}
<script>{SCRIPT}</script>
</body>
</html>
"""
