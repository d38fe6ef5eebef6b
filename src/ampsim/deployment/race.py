"""A race of training recipes for one device, as DVC experiments.

No single recipe learns every kind of gear best (bench/RESULTS.md: the panel): a small LSTM is "great" on a
pedal in minutes and learns little of an amp whose response includes a cabinet, where a WaveNet's 85 ms of
receptive field does. So each candidate recipe trains the device for the same minutes as one `dvc exp run`
(its `recipes.<device>` entry set), is evaluated and registered like any run; the lowest validation ESR
wins, and `dvc exp apply` brings the winner's params.yaml entry, dvc.lock and model into the workspace.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ampsim.core.errors import AmpsimError
from ampsim.core.params import RECIPE_SECTIONS
from ampsim.deployment.orchestration import ExperimentResult, run_experiment, tool_env

UNLIMITED_STEPS = 10**9  # a race is timed, not counted: every candidate gets the same minutes


@dataclass(frozen=True)
class Entry:
    candidate: str
    experiment: str  # the DVC experiment's name (`dvc exp show`, `dvc exp apply`)
    recipe: dict[str, Any]  # the device's `recipes` entry it ran with
    run_id: str  # its MLflow training run
    validation_esr: float
    steps: int  # training steps it reached in the minutes


def race_recipe(own: dict[str, Any], candidate: dict[str, Any], minutes: float) -> dict[str, Any]:
    """A candidate's `recipes.<device>` entry: the device's own entry, the candidate's settings laid over it
    section by section, and the race's time budget."""
    recipe = {name: dict(settings) for name, settings in (own or {}).items()}
    for name, settings in candidate.items():
        if name not in RECIPE_SECTIONS or not isinstance(settings, dict):
            raise AmpsimError(f"race candidate sets `{name}`; a recipe sets only {', '.join(RECIPE_SECTIONS)}, "
                              "each a mapping", path="params.yaml",
                              fix="e.g. `lstm32: {lstm: {hidden_size: 32}}` under `race.candidates`")
        recipe[name] = {**recipe.get(name, {}), **settings}
    recipe["train"] = {**recipe.get("train", {}), "max_minutes": float(minutes), "max_steps": UNLIMITED_STEPS}
    return recipe


def run_race(project: Path, device: str, own: dict[str, Any], candidates: dict[str, dict[str, Any]],
             minutes: float, log: Callable[[str], None] = print,
             run: Callable[..., ExperimentResult] = run_experiment) -> list[Entry]:
    """Each candidate as a DVC experiment of the device's stages, one after another (all cores each)."""
    if not candidates:
        raise AmpsimError("the race has no candidates", path="params.yaml", fix="list some under `race.candidates`")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    # `dvc exp run -S` merges a mapping into the entry it finds (and refuses new keys without `++`): every
    # candidate starts from the files as they were, so none inherits the last one's settings.
    start = {name: (Path(project) / name).read_text() for name in ("params.yaml", "dvc.lock")
             if (Path(project) / name).is_file()}
    entries = []
    for candidate, settings in candidates.items():
        for name, text in start.items():
            (Path(project) / name).write_text(text)
        recipe = race_recipe(own, settings, minutes)
        experiment = f"{device}-{candidate}-{stamp}"
        log(f"race {device}: {candidate} for {minutes:g} min ({experiment})")
        flow = yaml.safe_dump(recipe, default_flow_style=True, sort_keys=False, width=10**6).strip()
        result = run(project, {f"++recipes.{device}": flow}, device, name=experiment)
        trained = json.loads((Path(project) / "reports" / device / "train" / "summary.json").read_text())
        entries.append(Entry(candidate, experiment, recipe, result.run_id, float(result.metrics["esr"]),
                             int(trained["steps"])))
        log(f"race {device}: {candidate}: validation ESR {entries[-1].validation_esr:.4f}")
    return entries


def winner(entries: list[Entry]) -> Entry:
    return min(entries, key=lambda entry: entry.validation_esr)


def apply_winner(project: Path, entry: Entry) -> None:
    """`dvc exp apply`: the winner's params.yaml, dvc.lock and outputs in the workspace, to commit."""
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "apply", entry.experiment], cwd=project,
                            capture_output=True, text=True, env=tool_env())
    if result.returncode != 0:
        raise AmpsimError(f"`dvc exp apply {entry.experiment}` failed: {result.stderr.strip()[-400:]}",
                          path=project, fix="run it yourself; the race's experiments are in `dvc exp show`")


def table(entries: list[Entry]) -> str:
    best = winner(entries)
    lines = ["candidate            validation ESR   steps  experiment"]
    lines += [f"{entry.candidate:<20} {entry.validation_esr:>14.4f}  {entry.steps:>6}  {entry.experiment}"
              + ("   <- winner" if entry is best else "") for entry in entries]
    return "\n".join(lines)
