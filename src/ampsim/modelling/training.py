"""The training loop: steps of N batches of random windows, validation on a fixed window set after every
step, the best weights kept, early stopping, a time budget, and a checkpoint after every step so that a
killed run resumes where it stopped (losing at most the step in progress). The last few best steps are kept
(`best_steps`), so that the caller's `ship_check` (the train stage's: `ampsim.inference.latching`, which plays
each as one stream) can ship the best one that does not latch.

What each architecture trains on (its recipe: window, batch, loss, schedule) is in its own module in
`ampsim.modelling.architectures`; a recipe with `tbptt` trains a twin that carries its state from update to update
(and with `carry`, from batch to batch, each batch row playing on through the audio: `StreamRows`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from ampsim.core.audio import atomic_dir, write_text
from ampsim.core.errors import AmpsimError
from ampsim.core.knobs import interior_settings, knob_names
from ampsim.core.params import FitParams, Lstm2018Params, LstmParams, TrainParams, WavenetParams, section
from ampsim.data.windows import Pool, Segment, StreamRows, fixed_windows, load_split, random_windows
from ampsim.modelling import knob_levels
from ampsim.modelling.architectures import Recipe, architecture, carries_state
from ampsim.modelling.best_steps import BestSteps
from ampsim.modelling.carried_lstm import copy_weights, reset_carried_state, zero_carried_rows
from ampsim.modelling.models import ModelCard, save_model
from ampsim.modelling.through_ir import (current_ir, filtered, hold_level, refit, set_ir, through_fir,
                                        with_network_term)
from ampsim.modelling.warm_start import start_from

STATE_FILE = "state.json"
LAST_WEIGHTS = "last.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
BEST_STEPS_FILE = "best_steps.npz"
HISTORY_COLUMNS = ("step", "train_loss", "val_loss", "minutes")


@dataclass(frozen=True)
class TrainConfig:
    sample_rate: int
    train: TrainParams
    fit: FitParams
    lstm2018: Lstm2018Params
    lstm: LstmParams
    wavenet: WavenetParams


def train_config(params: dict, sample_rate: int, source: Path | str = "params.yaml") -> TrainConfig:
    """The training settings in `params` (a device's, `device_params`) for audio at `sample_rate` (the
    device's own: its prepared manifest's)."""
    train, fit = section(params, "train", TrainParams, source), section(params, "fit", FitParams, source)
    check_cab_ir_settings(train, fit, source)
    check_guard_settings(fit, source)
    knob_levels.check_settings(train.knob_levels, train.knob_level_step, train.knob_level_seconds, source)
    return TrainConfig(sample_rate=sample_rate,
                       train=train,
                       fit=fit,
                       lstm2018=section(params, "lstm2018", Lstm2018Params, source),
                       lstm=section(params, "lstm", LstmParams, source),
                       wavenet=section(params, "wavenet", WavenetParams, source))


def check_cab_ir_settings(train: TrainParams, fit: FitParams, source: Path | str) -> None:
    """The IR's lengths and ridge, and the IR training goes through, checked before training rather than after it."""
    taps = train.cab_ir_taps
    if not isinstance(taps, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in taps):
        raise AmpsimError(f"train.cab_ir_taps is {taps!r}: it must be a list of IR lengths in samples", path=source,
                          fix="write e.g. `cab_ir_taps: [1024, 4096]`, or `[]` for no cab IR")
    _require_number("train.cab_ir_ridge", train.cab_ir_ridge, "1.0e-6", source)
    if isinstance(fit.through_ir_taps, bool) or not isinstance(fit.through_ir_taps, int) or fit.through_ir_taps < 0 \
            or fit.through_ir_taps == 1:
        raise AmpsimError(f"fit.through_ir_taps is {fit.through_ir_taps!r}: it must be 0 (off) or an IR length >= 2",
                          path=source, fix="write e.g. `through_ir_taps: 1024`, or 0 to train the network alone")
    if fit.through_ir_taps:
        _require_number("fit.through_ir_seconds", fit.through_ir_seconds, "30.0", source, positive=True)
        _require_number("fit.through_ir_network_weight", fit.through_ir_network_weight, "0.001", source)
        _require_whole_number("fit.through_ir_alone_steps", fit.through_ir_alone_steps, source,
                              fix="write e.g. `through_ir_alone_steps: 6`, or 0 to refit from the first step")


def check_guard_settings(fit: FitParams, source: Path | str) -> None:
    """The settings that keep a run from going astray or send it back to its best step, checked before training: a
    wrong one would only show as a run that never goes back, or goes back every step."""
    beta_2 = fit.adam_beta_2
    _require_number("fit.adam_beta_2", beta_2, "0.99", source, positive=True)
    if beta_2 >= 1:
        raise AmpsimError(f"fit.adam_beta_2 is {beta_2!r}: at 1 or over, Adam never forgets a gradient's size",
                          path=source, fix="write e.g. `adam_beta_2: 0.999` (Adam's default)")
    _require_number("fit.weight_decay", fit.weight_decay, "0.01", source)
    _require_number("fit.diverged_ratio", fit.diverged_ratio, "20", source)
    _require_number("fit.collapsed_loss", fit.collapsed_loss, "0.5", source)
    _require_whole_number("fit.plateau_steps", fit.plateau_steps, source,
                          fix="write e.g. `plateau_steps: 10`, or 0 never to go back on a plateau")
    factor = fit.back_to_best_factor
    _require_number("fit.back_to_best_factor", factor, "0.5", source, positive=True)
    if factor > 1:
        raise AmpsimError(f"fit.back_to_best_factor is {factor!r}: going back raises the learning rate that went "
                          "astray", path=source, fix="write e.g. `back_to_best_factor: 0.5`, or 1 to keep it")


def through_ir_guard_warning(fit: FitParams) -> str | None:
    """Training through the IR with no guard, or one too loose to fire: such runs blew up and never came back
    (bench/RESULTS.md, session 18); a guard at 2x fired on their noise and lost to 20x (session 23)."""
    if not fit.through_ir_taps or 0 < fit.diverged_ratio <= 20:
        return None
    return (f"warning: training through the IR (fit.through_ir_taps) going back only after a step over "
            f"{fit.diverged_ratio:g}x the best (fit.diverged_ratio; 0 = never): such runs blew up and never came "
            "back (bench/RESULTS.md, session 18); set fit.diverged_ratio: 20")


def _require_number(setting: str, value, example: str, source: Path | str, positive: bool = False) -> None:
    """A numeric setting that must be >= 0 (or > 0), named with an example when it is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 if positive else value >= 0):
        raise AmpsimError(f"{setting} is {value!r}: it must be a number {'>' if positive else '>='} 0", path=source,
                          fix=f"write e.g. `{setting.split('.')[-1]}: {example}`")


def _require_whole_number(setting: str, value, source: Path | str, fix: str) -> None:
    """A count of steps that must be 0 or more, named with the fix when it is not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AmpsimError(f"{setting} is {value!r}: it must be a whole number of steps, 0 or more", path=source,
                          fix=fix)


def build_model(config: TrainConfig, knobs: int = 0, carried_batch: int | None = None,
                knots: list[list[float]] | None = None) -> keras.Model:
    """The chosen architecture; `knobs` extra constant input channels for a knob-conditioned capture set, and
    `knots` each knob's interior recorded settings (`core.knobs.interior_settings`); `carried_batch`: its training
    twin that carries the state across updates."""
    return architecture(config.train.architecture).build(config, knobs, carried_batch, knots)


def recipe(config: TrainConfig) -> Recipe:
    return architecture(config.train.architecture).recipe(config)


def build_trainer(config: TrainConfig, plan: Recipe, model: keras.Model, knobs: int = 0,
                  knots: list[list[float]] | None = None) -> keras.Model:
    """What takes the updates, compiled: `model` itself, or for truncated back-propagation its twin that
    carries the state across updates (the weights are copied back into `model` to validate and save)."""
    trainer = model if plan.tbptt is None else build_model(config, knobs, carried_batch=plan.batch_size, knots=knots)
    if config.fit.through_ir_taps:
        if plan.tbptt is None:
            raise AmpsimError(f"fit.through_ir_taps: a `{config.train.architecture}` model does not train by truncated "
                              "back-propagation, so no IR can carry its past from update to update", path="params.yaml",
                              fix="set fit.through_ir_taps: 0 for this architecture (train.cab_ir_taps still fits an "
                                  "IR after it), or train the streaming LSTM")
        trainer = through_fir(trainer, config.fit.through_ir_taps)
        loss = with_network_term(plan.chunk_loss or plan.loss, config.fit.through_ir_network_weight,
                                 config.fit.dc_weight)
    else:
        loss = plan.chunk_loss or plan.loss
    trainer.compile(optimizer=optimizer(plan), loss=loss)
    return trainer


# AdamW decays these variables not: a bias sets a level or a gate's resting point, and the knob drive and bends set
# how far a knob moves the model; decayed, a knob set's recorded settings would drift towards one another.
NOT_DECAYED = ["bias", "drive", "bend"]


def optimizer(plan: Recipe) -> keras.optimizers.Optimizer:
    """Adam, or with the recipe's weight decay AdamW (decoupled, Loshchilov & Hutter 2019) on the kernels only."""
    if not plan.weight_decay:
        return keras.optimizers.Adam(plan.learning_rate, beta_2=plan.adam_beta_2)
    adamw = keras.optimizers.AdamW(plan.learning_rate, weight_decay=plan.weight_decay, beta_2=plan.adam_beta_2)
    adamw.exclude_from_weight_decay(var_names=NOT_DECAYED)
    return adamw


def learning_rate(plan: Recipe, progress: float) -> float:
    """Cosine decay from the recipe's learning rate to its final one as training goes from 0 to 1."""
    progress = min(max(progress, 0.0), 1.0)
    return plan.final_learning_rate + 0.5 * (plan.learning_rate - plan.final_learning_rate) * (1 + np.cos(np.pi * progress))


def train_batch(trainer: keras.Model, plan: Recipe, x: np.ndarray, y: np.ndarray,
                restarted: np.ndarray | None = None) -> float:
    """Train on one batch of windows; returns the mean loss of its updates. `restarted` (a recipe that carries
    the state from batch to batch): the rows whose state starts anew; the others go on from where they ended."""
    if plan.tbptt is None:
        return float(trainer.train_on_batch(x, y))
    if restarted is None:
        reset_carried_state(trainer)
        trainer.predict_on_batch(x[:, : plan.warmup])  # the state settles; no update
        first = plan.warmup
    else:
        zero_carried_rows(trainer, restarted)
        first = 0
    losses = [trainer.train_on_batch(x[:, start : start + plan.tbptt], y[:, start : start + plan.tbptt])
              for start in range(first, x.shape[1], plan.tbptt)]
    return float(np.mean([float(loss) for loss in losses]))


def fingerprint(config: TrainConfig, train_pool: Pool, val_pool: Pool, start: str | None = None) -> str:
    """Identifies a training job: a checkpoint is resumed only by the same params on the same audio (and from
    the same starting weights, `start` their digest)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    if start is not None:
        digest.update(start.encode())
    for array in (train_pool.x, train_pool.y, train_pool.knobs, val_pool.x, val_pool.y, val_pool.knobs):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# --- checkpoints -------------------------------------------------------------------------------------

def _optimizer_arrays(optimizer: keras.optimizers.Optimizer) -> dict[str, np.ndarray]:
    return {f"v{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}


def save_checkpoint(folder: Path, model: keras.Model, state: dict[str, Any], improved: bool,
                    best_steps: BestSteps | None = None) -> None:
    """Replace the checkpoint folder atomically: a kill during the write keeps the previous checkpoint."""
    previous_best = Path(folder) / BEST_WEIGHTS
    with atomic_dir(folder) as scratch:
        if best_steps is not None:
            best_steps.save(scratch / BEST_STEPS_FILE)
        model.save_weights(scratch / LAST_WEIGHTS)
        if improved or not previous_best.is_file():
            model.save_weights(scratch / BEST_WEIGHTS)
        else:
            shutil.copy2(previous_best, scratch / BEST_WEIGHTS)
        np.savez(scratch / OPTIMIZER_FILE, **_optimizer_arrays(model.optimizer))
        (scratch / STATE_FILE).write_text(json.dumps(state))


def load_checkpoint(folder: Path, key: str) -> dict[str, Any] | None:
    """The saved state if `folder` holds a complete checkpoint of this job, else None."""
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    complete = all((folder / name).is_file() for name in (LAST_WEIGHTS, BEST_WEIGHTS, OPTIMIZER_FILE))
    return state if complete and state.get("key") == key else None


def restore(model: keras.Model, folder: Path) -> None:
    model.load_weights(Path(folder) / LAST_WEIGHTS)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    with np.load(Path(folder) / OPTIMIZER_FILE) as saved:
        arrays = [saved[k] for k in sorted(saved.files)]
    if len(arrays) != len(optimizer.variables):
        raise AmpsimError("checkpoint optimizer state does not fit the model", path=folder,
                          fix="delete the checkpoint folder to restart training from scratch")
    for variable, array in zip(optimizer.variables, arrays):
        variable.assign(array)


# --- the loop ------------------------------------------------------------------------------------------

class Progress:
    """One tqdm bar: over the time budget when there is one (its ETA is then the real time left), else
    over the batches up to max_steps; the postfix shows step, batch loss and best validation loss."""

    def __init__(self, budget_seconds: float, spent_seconds: float, total_batches: int, done_batches: int,
                 enabled: bool):
        from tqdm import tqdm

        self.by_time = budget_seconds > 0
        total, initial = (round(budget_seconds), round(spent_seconds)) if self.by_time else (total_batches, done_batches)
        self.bar = tqdm(total=total, initial=min(initial, total), unit="s" if self.by_time else "batch",
                        disable=not enabled, mininterval=1.0, dynamic_ncols=True, desc="train",
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
                        if self.by_time else None)

    def update(self, spent_seconds: float, **fields: Any) -> None:
        if self.by_time:
            self.bar.update(max(min(round(spent_seconds), self.bar.total) - self.bar.n, 0))
        else:
            self.bar.update(1)
        self.bar.set_postfix(fields, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _history_csv(history: list[dict[str, float]]) -> str:
    lines = [",".join(HISTORY_COLUMNS)]
    lines += [",".join(f"{row[c]:.6g}" if c != "step" else str(row[c]) for c in HISTORY_COLUMNS) for row in history]
    return "\n".join(lines) + "\n"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@dataclass
class Job:
    """Everything one training job works with: the data, the model and its trainer, the random stream and
    the state that a checkpoint saves (step, time, best validation loss, history, MLflow run)."""

    plan: Recipe
    knobs: list[str]
    knots: list[list[float]]  # per knob, its interior recorded settings
    captures: list[str]
    train_pool: Pool
    val_x: np.ndarray
    val_y: np.ndarray
    model: keras.Model  # validated after every step; its best weights are saved
    trainer: keras.Model  # takes the updates (the model itself, or its state-carrying twin)
    rng: np.random.Generator
    state: dict[str, Any]
    latency_samples: dict[str, int]  # per capture: what validate compensated, for the model card
    segments: tuple[list[Segment], list[Segment]]  # training, and the validation that chooses the best step
    best_steps: BestSteps  # the last few best steps' weights, to ship the best that does not latch
    rows: StreamRows | None = None  # a recipe that carries the state across batches: where each row plays on
    # Training through the IR (`fit.through_ir_taps`): the fixed training windows its refit plays, and its ridge.
    refit_windows: tuple[np.ndarray, np.ndarray] | None = None
    refit_ridge: float = 0.0


def prepare_job(prepared: Path, config: TrainConfig, start: Path | None = None) -> tuple[Job, str]:
    """The job's data, model and trainer from a fresh start (random weights, or with `train.init_from` set
    the starting model kept in the folder `start`); and its key (see `fingerprint`)."""
    plan = recipe(config)
    train_segments, val_segments = load_split(prepared, "train"), load_split(prepared, "val")
    knobs = knob_names(s.knobs for s in train_segments + val_segments)
    knots = interior_settings(knobs, [s.knobs for s in train_segments])
    # Settings held out whole (`split: val`) measure interpolation: they are scored after training, but
    # never choose the best step, or they would no longer be unseen.
    selecting = [s for s in val_segments if not s.held_out] or val_segments
    train_pool, val_pool = Pool.of(train_segments, knobs), Pool.of(selecting, knobs)
    val_x, val_y = fixed_windows(val_pool, plan.val_count, plan.window)
    keras.utils.set_random_seed(config.train.random_seed)
    model = build_model(config, len(knobs), knots=knots)
    start_digest = None
    if config.train.init_from:
        start_digest = start_from(model, start if start is not None else Path("(no device folder)"),
                                  config.train.architecture, len(knobs), "this device's recipe")
    trainer = build_trainer(config, plan, model, len(knobs), knots)
    if start_digest is not None and trainer is not model:
        copy_weights(model, trainer)
    if trainer is not model:
        model.compile(loss=plan.loss)
    state = {"step": 0, "seconds": 0.0, "train_seconds": 0.0, "best_val": float("inf"), "best_step": 0,
             "history": [], "run_id": None, "stopped": None, "lr_scale": 1.0, "back_to_best": []}
    latency = {s.capture: s.latency_samples for s in train_segments + val_segments if s.latency_samples is not None}
    job = Job(plan, knobs, knots, sorted({s.capture for s in train_segments}), train_pool, val_x, val_y, model, trainer,
              np.random.default_rng(config.train.random_seed), state, latency, (train_segments, selecting),
              BestSteps(config.train.latch_fallbacks + 1 if config.train.latch_fallbacks > 0 else 0),
              StreamRows.fresh(plan.batch_size) if carries_state(plan, len(knobs)) else None)
    if config.fit.through_ir_taps:
        count = max(1, round(config.fit.through_ir_seconds * config.sample_rate / plan.window))
        job.refit_windows, job.refit_ridge = fixed_windows(train_pool, count, plan.window), config.train.cab_ir_ridge
    return job, fingerprint(config, train_pool, val_pool, start_digest)


def resume_or_start(job: Job, key: str, checkpoint_dir: Path, start_run: Callable[[bool], str | None],
                    log: Callable[[str], None]) -> None:
    """Continue from `checkpoint_dir` when it holds this job's checkpoint, else start clean (a checkpoint of
    other params or audio is deleted). `start_run(resumed)` opens the MLflow run (None: not tracked)."""
    saved = load_checkpoint(checkpoint_dir, key)
    if saved is None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        job.state.update(key=key, run_id=start_run(False))
        return
    restore(job.trainer, checkpoint_dir)
    job.best_steps.load(Path(checkpoint_dir) / BEST_STEPS_FILE)
    job.rng.bit_generator.state = saved["rng"]
    job.state.update(saved)
    if job.rows is not None:
        job.rows = StreamRows.of_state(saved["rows"])
    log(f"resuming from the checkpoint after step {saved['step']} ({_minutes(saved['seconds'])} trained, "
        f"best val_loss {saved['best_val']:.4g} at step {saved['best_step']})")
    job.state["run_id"] = start_run(True) if saved.get("run_id") is None else saved["run_id"]


def stop_reason(state: dict[str, Any], config: TrainConfig, plan: Recipe) -> str | None:
    if state["step"] >= config.train.max_steps:
        return f"max_steps {config.train.max_steps} reached"
    if config.train.max_minutes and state["seconds"] >= 60.0 * config.train.max_minutes:
        return f"time budget of {config.train.max_minutes:g} min reached"
    if plan.patience and state["best_step"] > 0 and state["step"] - state["best_step"] >= plan.patience:
        return f"early stopping: no better val_loss for {plan.patience} steps"
    return None


# A collapse counts once the best is under this share of `plan.collapsed`: a wrong first IR (best 0.161 after the
# steps alone, on the 5150), which runs learn their way out of, is left alone (bench/RESULTS.md, session 26).
COLLAPSED_BEST_SHARE = 0.25


def gone_astray(state: dict[str, Any], plan: Recipe) -> str | None:
    """Why training goes back to its best weights before the next step, else None: no better validation loss
    for `plan.plateau` steps (counted from the best step or the last return to it), or the last step's over
    `plan.diverged` times the best, or over `plan.collapsed` once the best is under a quarter of it. A network
    that falls silent scores an ESR near 1, which a ratio misses where the best is over 1/ratio: trained through a
    cabinet's IR, the 5150's best was 0.05 and its collapses 13-17x that, under the 20x (bench/RESULTS.md,
    session 26)."""
    if state["best_step"] == 0 or state["step"] in state["back_to_best"]:
        return None
    since = max([state["best_step"], *state["back_to_best"]])
    if plan.plateau > 0 and state["step"] - since >= plan.plateau:
        return f"no better val_loss for {plan.plateau} steps"
    last = state["history"][-1]["val_loss"]  # a best step exists, so the history has it
    if plan.diverged > 0 and not last <= plan.diverged * state["best_val"]:
        return f"val_loss {last:.4g}, over {plan.diverged:g}x the best"
    if plan.collapsed > 0 and not last <= plan.collapsed and state["best_val"] <= COLLAPSED_BEST_SHARE * plan.collapsed:
        return f"val_loss {last:.4g}, over {plan.collapsed:g}: collapsed"
    return None


def back_to_best(job: Job, checkpoint_dir: Path, why: str, log: Callable[[str], None]) -> None:
    """A run gone astray (a recurrent net's loss can jump and not come back, and a carried state with it): the
    best step's weights again, a fresh Adam, whose moments point where the run went, and a lower learning rate
    from here on."""
    state, optimizer = job.state, job.trainer.optimizer
    job.trainer.load_weights(Path(checkpoint_dir) / BEST_WEIGHTS)
    reset_carried_state(job.trainer)
    for variable in optimizer.variables:
        if variable is not optimizer.learning_rate:
            variable.assign(np.zeros(tuple(variable.shape), variable.dtype))
    state["lr_scale"] *= job.plan.back_factor
    state["back_to_best"].append(state["step"])
    log(f"step {state['step']}: {why}; back to step {state['best_step']}'s weights at {state['lr_scale']:g}x the "
        "learning rate")


def train_step(job: Job, config: TrainConfig, bar: Progress) -> tuple[float, float]:
    """`batches_per_step` batches of random windows; returns (mean loss, seconds spent)."""
    plan, state = job.plan, job.state
    budget = 60.0 * config.train.max_minutes
    started = time.perf_counter()
    losses = []
    for _ in range(plan.batches_per_step):
        spent = state["seconds"] + time.perf_counter() - started
        progress = spent / budget if budget else state["step"] / config.train.max_steps
        job.trainer.optimizer.learning_rate.assign(learning_rate(plan, progress) * state["lr_scale"])
        if job.rows is None:
            x, y = random_windows(job.train_pool, job.rng, plan.batch_size, plan.window)
            losses.append(train_batch(job.trainer, plan, x, y))
        else:
            x, y, restarted = job.rows.next(job.train_pool, job.rng, plan.scored)
            losses.append(train_batch(job.trainer, plan, x, y, restarted))
        bar.update(state["seconds"] + time.perf_counter() - started, step=state["step"] + 1,
                   loss=f"{losses[-1]:.4g}", best_val=f"{state['best_val']:.4g}")
    train_loss = float(np.mean(losses))
    if not np.isfinite(train_loss):
        raise AmpsimError(f"training diverged at step {state['step'] + 1} (loss {train_loss})",
                          fix="lower the learning rate in params.yaml and run again")
    return train_loss, time.perf_counter() - started


def validate_step(job: Job) -> float:
    """The model's validation loss; trained through an IR, on its output through the IR the trainer holds."""
    if job.trainer is not job.model:
        copy_weights(job.trainer, job.model)
    if job.refit_windows is None:
        return float(job.model.evaluate(job.val_x, job.val_y, batch_size=min(len(job.val_x), 512), verbose=0))
    played = job.model.predict(job.val_x, batch_size=len(job.val_x), verbose=0)
    return float(job.plan.loss(job.val_y, filtered(current_ir(job.trainer), played)))


def refit_ir(job: Job) -> None:
    """Training through an IR: the IR after the step just trained, fitted to what the network now plays. Not
    before step `fit.through_ir_alone_steps` (the caller's test): the first refit of an untrained network can be a
    wrong IR (norm 16, gain 4.8 on the crunch + cab at seed 11), the network then learns to play near silence
    through it, the next refit is as wrong, and the run learns nothing (bench/RESULTS.md, session 24)."""
    copy_weights(job.trainer, job.model)
    x, y = job.refit_windows
    previous = current_ir(job.trainer)
    ir, gain = refit(job.model, x, y, job.plan.warmup, len(previous), job.refit_ridge, previous)
    set_ir(job.trainer, hold_level(job.trainer, ir, gain))


def trained_ir(job: Job) -> np.ndarray | None:
    """The IR the network was validated through at this step (training through an IR), else None."""
    return None if job.refit_windows is None else current_ir(job.trainer)


def record_step(job: Job, train_loss: float, val_loss: float, trained: float, elapsed: float) -> bool:
    """Add the step to the state; returns whether it is the best so far."""
    state = job.state
    state["step"] += 1
    state["seconds"] += elapsed
    state["train_seconds"] += trained
    improved = val_loss < state["best_val"]
    if improved:
        state["best_val"], state["best_step"] = val_loss, state["step"]
        # validate_step copied the weights in
        job.best_steps.add(state["step"], val_loss, job.model.get_weights(), trained_ir(job))
    state["history"].append({"step": state["step"], "train_loss": train_loss, "val_loss": val_loss,
                             "minutes": state["seconds"] / 60})
    state["rng"] = job.rng.bit_generator.state
    if job.rows is not None:
        state["rows"] = job.rows.state()  # with the trainer's carried state (its weights), a resumed run plays on
    return improved


# (model, card, candidates: (step, weights) best first, training segments, validation segments, log=,
# trained_irs=: the IR each step was trained through, by step) -> the step it loaded into the model, and each
# checked step's latched seconds: `ampsim.inference.latching.first_unlatched`
ShipCheck = Callable[..., tuple[int, dict[int, int]]]
# (model, card, training segments, validation segments, lengths, ridge, log=) -> the card with the cab IR chosen,
# and what to report: `ampsim.inference.cab_ir_fit.fit_cab_ir`
CabIRFit = Callable[..., tuple[ModelCard, dict[str, Any]]]


def ship_unlatched(job: Job, model: keras.Model, card: ModelCard, log: Callable[[str], None],
                   ship_check: ShipCheck | None) -> dict[str, Any]:
    """Load into `model` the best step that `ship_check` passes (`model` holds the best step's weights already;
    without a check, or no steps kept, it keeps them). Returns the step, its validation loss, the latched
    seconds of each step checked, and the check's seconds."""
    state, started = job.state, time.perf_counter()
    if ship_check is None or not job.best_steps.steps:
        return {"step": state["best_step"], "val_loss": state["best_val"], "checked": {}, "seconds": 0.0}
    step, checked = ship_check(model, card, job.best_steps.candidates(), *job.segments, log=log,
                               trained_irs=job.best_steps.trained_irs)
    return {"step": step, "val_loss": job.best_steps.val_loss(step), "checked": {str(k): v for k, v in checked.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def level_table(job: Job, config: TrainConfig, model: keras.Model, card: ModelCard,
                log: Callable[[str], None]) -> tuple[ModelCard, dict[str, Any]]:
    """`card` with the knob set's level table (`train.knob_levels: interpolated`), and what to report."""
    if config.train.knob_levels != "interpolated" or not job.knobs:
        return card, {}
    recorded = sorted({float(s.knobs[name]) for s in job.segments[0] for name in job.knobs})
    count = max(1, round(config.train.knob_level_seconds * config.sample_rate / job.plan.window))
    windows = fixed_windows(job.train_pool, count, job.plan.window)[0][..., 0]
    table, report = knob_levels.fit_levels(model, job.knobs, recorded, windows, config.train.knob_level_step,
                                           job.plan.window - job.plan.scored, log)
    return dataclasses.replace(card, knob_levels=table), report


def train(prepared: Path, model_dir: Path, reports_dir: Path, checkpoint_dir: Path, config: TrainConfig,
          tracker=None, all_params: dict | None = None, progress: bool = True,
          log: Callable[[str], None] = print,
          on_step: Callable[..., None] | None = None,
          device: str | None = None, data_path: Path | None = None, start: Path | None = None,
          ship_check: ShipCheck | None = None, cab_ir_fit: CabIRFit | None = None) -> dict[str, Any]:
    """Train, resuming from `checkpoint_dir` when it holds this job's checkpoint; write the best model to
    `model_dir`, the loss history and summary to `reports_dir`; return the summary. `on_step(model, state,
    trained_ir=)` is called after every step, outside the timed training (the benchmark scores the model there);
    `trained_ir` is the IR the step was validated through (training through an IR), else None.
    `device` and `data_path` (its captures) name the MLflow run and its dataset; `start`: the folder of the
    starting model `train.init_from` trains from; `ship_check` chooses among the best steps kept (see
    `ShipCheck`; None: the best on validation ships); `cab_ir_fit` fits the IR that follows the shipped
    network (`train.cab_ir_taps`; None: no IR)."""
    # --- set-up: data, model, and the checkpoint or MLflow run to continue --------------------------------
    job, key = prepare_job(prepared, config, start)
    if warning := through_ir_guard_warning(config.fit):
        log(warning)
    if config.train.init_from:
        log(f"starting from {config.train.init_from} ({start}): validation loss {validate_step(job):.4g} before training")
    plan, state, architecture_name = job.plan, job.state, config.train.architecture

    def start_run(resumed: bool) -> str | None:
        if tracker is None:
            return None
        tags = {"ampsim.captures": ",".join(job.captures)}
        if resumed:
            tags["ampsim.resumed_without_run"] = "true"
        return tracker.start_training(device=device or "-".join(job.captures), architecture=architecture_name,
                                      params=all_params or {}, tags=tags, data_path=data_path)

    resume_or_start(job, key, checkpoint_dir, start_run, log)
    if tracker is not None and state["run_id"] is not None and tracker.run_id is None:
        try:
            tracker.resume(state["run_id"])
        except AmpsimError:
            state["run_id"] = start_run(True)

    # --- the loop: train a step, validate, log, checkpoint ------------------------------------------------
    batch_samples = plan.batch_size * (plan.window if job.rows is None else plan.scored)  # carried rows: no warm-up
    bar = Progress(60.0 * config.train.max_minutes, state["seconds"], config.train.max_steps * plan.batches_per_step,
                   state["step"] * plan.batches_per_step, progress)
    try:
        while (reason := stop_reason(state, config, plan)) is None:
            if why := gone_astray(state, plan):  # before the step, so that a resumed run returns where this one would
                back_to_best(job, checkpoint_dir, why, log)
            started = time.perf_counter()
            train_loss, trained = train_step(job, config, bar)
            if job.refit_windows is not None and state["step"] + 1 >= config.fit.through_ir_alone_steps:
                refit_ir(job)
            val_loss = validate_step(job)
            improved = record_step(job, train_loss, val_loss, trained, time.perf_counter() - started)
            # Logged before the checkpoint: a run killed in between repeats this step's metrics, never loses them.
            if tracker is not None:
                tracker.log_metrics({"train_loss": train_loss, "val_loss": val_loss,
                                     "learning_rate": float(job.trainer.optimizer.learning_rate),
                                     "samples_per_second": plan.batches_per_step * batch_samples / trained},
                                    step=state["step"])
            save_checkpoint(checkpoint_dir, job.trainer, state, improved, job.best_steps)
            if on_step is not None:
                on_step(job.model, state, trained_ir=trained_ir(job))
        state["stopped"] = reason
    finally:
        bar.close()

    # --- the best weights, saved uncompiled, with the history and summary --------------------------------
    job.trainer.load_weights(Path(checkpoint_dir) / BEST_WEIGHTS)
    inference = build_model(config, len(job.knobs), knots=job.knots)  # no training-only loss closure in the saved file
    copy_weights(job.trainer, inference)
    card = ModelCard(architecture=architecture_name, sample_rate=config.sample_rate,
                     input_size=1 + len(job.knobs), window_samples=plan.window, tail_samples=plan.scored,
                     captures=job.captures, mlflow_run_id=state["run_id"], knobs=job.knobs,
                     latency_samples=job.latency_samples, loss_name=plan.loss_name)
    shipped = ship_unlatched(job, inference, card, log, ship_check)
    card, levels = level_table(job, config, inference, card, log)
    cab = {}
    if cab_ir_fit is not None:
        card, cab = cab_ir_fit(inference, card, *job.segments, config.train.cab_ir_taps, config.train.cab_ir_ridge,
                               log=log)
    save_model(inference, card, model_dir)
    summary = {
        "architecture": architecture_name,
        "parameters": int(inference.count_params()),
        "steps": state["step"],
        "best_step": shipped["step"],
        "best_val_loss": shipped["val_loss"],
        "loss": plan.loss_name,
        "minutes": round(state["seconds"] / 60, 3),
        "samples_per_second": round(state["step"] * plan.batches_per_step * batch_samples
                                    / max(state["train_seconds"], 1e-9)),
        "stopped": state["stopped"],
        **({"carried_state": job.rows is not None} if plan.tbptt is not None else {}),
        **({"init_from": config.train.init_from} if config.train.init_from else {}),
        **({"back_to_best": state["back_to_best"]} if state["back_to_best"] else {}),
        **({"through_ir_taps": config.fit.through_ir_taps, "through_ir_alone_steps": config.fit.through_ir_alone_steps}
           if config.fit.through_ir_taps else {}),
        **({"stream_checked": shipped["checked"], "stream_check_seconds": shipped["seconds"]} if shipped["checked"] else {}),
        **levels,
        **cab,
    }
    write_text(Path(reports_dir) / "loss.csv", _history_csv(state["history"]))
    write_text(Path(reports_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
    if tracker is not None:
        tracker.log_metrics({"best_val_loss": shipped["val_loss"], "best_step": shipped["step"],
                             "train_minutes": state["seconds"] / 60,
                             **({"cab_ir_taps": cab["cab_ir_taps"]} if cab else {})})
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: the next run of this job starts fresh
    log(f"trained {summary['steps']} steps in {_minutes(state['seconds'])} ({summary['stopped']}); best val_loss "
        f"{summary['best_val_loss']:.4g} at step {summary['best_step']}; {summary['samples_per_second']:,} samples/s")
    return summary
