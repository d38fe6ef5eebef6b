"""NAM's own trainer on our data: the reference side of the quality-vs-training-time benchmark.

Trains NAM's default model (the packed WaveNet of `nam.train.core`) with NAM's LightningModule, data
config, loss, optimiser, LR schedule, batch size and ny, as `nam.train.core.train` would, on aligned
float32 arrays, and scores it each time training time passes a budget. Everything it can, it calls from
NAM rather than restating it; what differs from `core.train` is said where it is done:

* NAM's input-file detection, latency calibration and data checks are skipped: they need NAM's standard
  reamp signal, and our captures are not it (our arrays are aligned already, so latency is 0).
* The clock is ours, not Lightning's `max_time`: Lightning's Timer counts validation epochs and our
  scoring too, and the budgets are of training time alone.
* No `.ckpt`/`.nam` files besides the per-submodel best checkpoints NAM's export is built from.

    from nam_reference import train_nam   # with bench/ on sys.path
    rows = train_nam(x_train, y_train, x_val, y_val, 48000, [2, 5, 10, 15], threads=2)
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
from nam.models.losses import esr as nam_esr
from nam.train import core
from nam.train.lightning_module import PackedBestCheckpoint, PackedLightningModule, PackedMaskCallback
from nam.util import filter_warnings
from pytorch_lightning.utilities.warnings import PossibleUserWarning

BATCH_SIZE = 16  # nam.train.core.train's defaults
NY = core._NY_DEFAULT
PRE_EMPHASIS = 0.85


def train_nam(train_x, train_y, val_x, val_y, sample_rate: int, budgets_minutes, threads: int | None = None,
              seed: int = 0, log=print, *, batch_size: int = BATCH_SIZE, ny: int = NY, test=None) -> list[dict]:
    """Train NAM's default model for max(budgets_minutes) of training time (validation epochs and our
    scoring excluded) and score, at each budget, the model NAM would export had it stopped there.

    Returns one dict per budget, in increasing order: minutes, epochs (fractional), steps,
    train_seconds (training time at the snapshot, just past the budget), val_esr, val_esr_pre_emphasis,
    train_esr and parameters of NAM's full-quality submodel (`submodel`), and the same figures of
    every submodel under `submodels`. batch_size and ny are NAM's unless a test shrinks them. `test`
    (optional): a callable given a function that renders any float32 input with the full-quality submodel
    of the model as exported, at the level of the y given here; the figures it returns join each row."""
    budgets = sorted(budgets_minutes)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="nam_reference_") as work:
            work = Path(work)
            torch.manual_seed(seed)  # as core.train, before the model is made
            model_config = core._get_packed_model_config()
            model = PackedLightningModule.init_from_config(model_config)
            data_config = _data_config(work, train_x, train_y, val_x, val_y, sample_rate, ny)
            train_loader, val_loader = core._get_dataloaders(data_config, _learning_config(batch_size), model)
            if len(train_loader) == 0:
                raise ValueError(f"too little training audio for one batch: needs "
                                 f"{batch_size * ny + model.net.receptive_field - 1} samples")
            best = PackedBestCheckpoint(dirpath=work / "best")
            score = _Scorer(model_config, best, train_loader.dataset, val_loader.dataset, test,
                            _target_gain(val_y, val_loader.dataset.y))
            snapshots = _BudgetSnapshots([60.0 * m for m in budgets], score, log)
            trainer = pl.Trainer(
                # no epoch cap (core.train's is 100 epochs): the budget ends training
                accelerator="cpu", max_epochs=-1, default_root_dir=work, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                # NAM's mask keeps the packed off-block weights zero (part of its training);
                # our clock comes last so that it also pauses while NAM's checkpoint is written.
                callbacks=[best, PackedMaskCallback(), snapshots])
            with filter_warnings("ignore", category=PossibleUserWarning):  # num_workers, as core.train
                trainer.fit(model, train_loader, val_loader)
            return snapshots.rows
    finally:
        torch.set_num_threads(previous_threads)


def _data_config(work: Path, train_x, train_y, val_x, val_y, sample_rate: int, ny: int) -> dict:
    """NAM's data config (core._get_data_config's shape) over WAV files of the two splits.

    Separate files per split rather than one file with start/stop: a split that starts inside a file
    needs silent input before it (NAM's pre-silence check), which only NAM's reamp signal has."""
    # NAM refuses a target that reaches 1.0 ("Output clipped"). The joint hook below rescales the target
    # to -18 dBFS RMS anyway, so a common gain changes nothing else (and ESR is scale-free).
    peak = max(np.abs(train_y).max(), np.abs(val_y).max())
    gain = 0.99 / peak if peak >= 1.0 else 1.0
    paths = {}
    for name, audio in {"train_x": train_x, "train_y": train_y * gain,
                        "val_x": val_x, "val_y": val_y * gain}.items():
        paths[name] = work / f"{name}.wav"
        sf.write(paths[name], np.asarray(audio, dtype=np.float32), sample_rate, subtype="FLOAT")
    return {
        "train": {"ny": ny, "x_path": paths["train_x"], "y_path": paths["train_y"]},
        "validation": {"ny": None, "x_path": paths["val_x"], "y_path": paths["val_y"]},
        "common": {"delay": 0, "allow_unequal_lengths": True},
        "joint": [{"name": "nam.data.normalize_joint_dataset_output", "kwargs": {"level_rms_dbfs": -18.0}}],
    }


def _learning_config(batch_size: int) -> dict:
    """core._get_configs' dataloader settings (its epoch cap is replaced by the time budget)."""
    return {
        "train_dataloader": {"batch_size": batch_size, "shuffle": True, "pin_memory": True,
                             "drop_last": True, "num_workers": 0},
        "val_dataloader": {},
    }


class _BudgetSnapshots(pl.Callback):
    """The training clock: counts from the start of training, less validation epochs and scoring; at the
    first batch end past each budget it scores with the clock stopped, and after the last it stops."""

    def __init__(self, budgets_s: list[float], score, log):
        self.pending, self.score, self.report, self.rows = list(budgets_s), score, log, []
        self.started = self.paused_at = None
        self.excluded = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started - self.excluded

    def on_train_start(self, trainer, pl_module):
        self.started = time.monotonic()

    def on_validation_start(self, trainer, pl_module):
        self.paused_at = time.monotonic()

    def on_validation_end(self, trainer, pl_module):
        if self.started is not None:  # not the sanity check before training, which is off the clock
            self.excluded += time.monotonic() - self.paused_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trained = self.elapsed()
        if not self.pending or trained < self.pending[0]:
            return
        paused_at = time.monotonic()
        figures = self.score(pl_module)
        epochs = trainer.current_epoch + (batch_idx + 1) / trainer.num_training_batches
        while self.pending and trained >= self.pending[0]:
            row = {"minutes": self.pending.pop(0) / 60, "epochs": round(epochs, 3), "steps": trainer.global_step,
                   "train_seconds": round(trained, 2), **figures}
            self.report(f"  nam: {row['minutes']:g} min, {row['epochs']:g} epochs: val ESR {row['val_esr']:.4g}, "
                        f"train ESR {row['train_esr']:.4g} ({row['submodel']})")
            self.rows.append(row)
        if not self.pending:
            trainer.should_stop = True
        self.excluded += time.monotonic() - paused_at


class _Scorer:
    """Scores what NAM would export had training stopped now.

    core.train ends with each packed submodel taken from its own best validation epoch
    (PackedBestCheckpoint + _apply_packed_best_checkpoints), and stopping mid-epoch (max_time) triggers
    one more validation that can still win. So per submodel: the current weights if their NAM
    validation loss beats that submodel's best so far, else its best checkpoint."""

    def __init__(self, model_config: dict, best: PackedBestCheckpoint, train_set, val_set, test=None,
                 target_gain: float = 1.0):
        self.model_config, self.best = model_config, best
        self.train_set, self.val_set = train_set, val_set
        self.test, self.target_gain = test, target_gain

    def __call__(self, pl_module) -> dict:
        # Loading checkpoints builds throwaway nets from NAM's config, which draws random numbers: keep
        # them out of the training's stream, so a snapshot never changes what follows it.
        with torch.random.fork_rng(), torch.no_grad():
            current = copy.deepcopy(pl_module.net).eval()
            current_losses = _nam_val_losses(_predict(current, self.val_set.x), self.val_set.y, current)
            best_losses = [self.best.best.get(i, {}).get("best_metric", np.inf) for i in range(len(current_losses))]
            # PackedBestCheckpoint replaces a submodel's best only with a strictly lower loss
            paths = [path if best_loss <= loss else None
                     for path, best_loss, loss in zip(self.best.checkpoint_paths, best_losses, current_losses)]
            exported = PackedLightningModule(net=current)
            core._apply_packed_best_checkpoints(exported, self.model_config, paths)
            return self._figures(exported.net, expected_losses=np.minimum(best_losses, current_losses))

    def _figures(self, net, expected_losses) -> dict:
        val_prediction = _predict(net, self.val_set.x)
        train_prediction = _predict(net, self.train_set.x)
        losses = _nam_val_losses(val_prediction, self.val_set.y, net)
        # _apply_packed_best_checkpoints only warns when a checkpoint fails to load: make that loud.
        if not np.allclose(losses, expected_losses, rtol=1e-3, atol=1e-7):
            raise RuntimeError(f"exported NAM model's validation losses {losses} are not the expected {expected_losses}")
        val_y, train_y = self.val_set.y.numpy(), self.train_set.y.numpy()
        submodels = [{
            "name": name,
            "val_esr": esr(val_y, val_prediction[i]),
            "val_esr_pre_emphasis": esr(pre_emphasis(val_y), pre_emphasis(val_prediction[i])),
            "train_esr": esr(train_y, train_prediction[i]),
            "parameters": sum(p.numel() for p in net.extract_submodel(i).parameters()),
        } for i, name in enumerate(net.submodel_names)]
        # NAM exports all submodels in one SlimmableContainer; the last (max_value 1.0) is what it plays at
        # full quality and whose metadata the container carries: that is the headline.
        full_quality = submodels[-1]
        tested = self.test(lambda x: self._full_quality_at_callers_level(net, x)) if self.test else {}
        return {**{k: v for k, v in full_quality.items() if k != "name"}, "submodel": full_quality["name"],
                "submodels": submodels, **tested}

    def _full_quality_at_callers_level(self, net, x: np.ndarray) -> np.ndarray:
        """The full-quality submodel's output for x, at the level of the y train_nam was given: the model
        learnt its target at NAM's level (_target_gain)."""
        return _predict(net, torch.from_numpy(np.asarray(x, np.float32)))[-1] / self.target_gain


def _target_gain(y: np.ndarray, scaled: torch.Tensor) -> float:
    """The gain NAM's data config put on the target (the clip guard, then the joint -18 dBFS RMS hook)."""
    return float(np.sqrt(np.mean(scaled.numpy().astype(np.float64) ** 2) / np.mean(np.asarray(y, np.float64) ** 2)))


def _predict(net, x: torch.Tensor) -> np.ndarray:
    """(submodels, len(x)): the whole signal in one pass. pad_start puts receptive_field - 1 zeros
    before x, so prediction[:, i] is the output for x[..i], aligned with y[i]."""
    return net(x, pad_start=True).numpy()


def _nam_val_losses(prediction: np.ndarray, y: torch.Tensor, net) -> list[float]:
    """NAM's validation loss per submodel (its "esr" val_loss, what PackedBestCheckpoint ranks by): its
    validation datum has no padding, so it starts receptive_field - 1 samples into the audio."""
    skip = net.receptive_field - 1
    target = y[None, skip:]
    return [float(nam_esr(torch.from_numpy(p[None, skip:]), target)) for p in prediction]


def esr(y: np.ndarray, prediction: np.ndarray) -> float:
    y, prediction = np.asarray(y, np.float64), np.asarray(prediction, np.float64)
    return float(np.sum((y - prediction) ** 2) / np.sum(y**2))


def pre_emphasis(z: np.ndarray) -> np.ndarray:
    return z[1:] - PRE_EMPHASIS * z[:-1]
