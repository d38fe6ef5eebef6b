"""bench/nam_reference.py: NAM's own trainer, snapshotted at training-time budgets."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

RATE = 16000  # NAM's net doesn't care; fewer samples per second of audio keeps the test fast


@pytest.mark.slow
def test_train_nam_scores_each_budget():
    from nam_reference import train_nam

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(3 * RATE)).astype(np.float32)
    y = np.tanh(3 * x).astype(np.float32)
    split = int(0.8 * len(x))
    # NAM's batch of 16 would take a minute a step on 2 cores: 2 windows of NAM's ny make one batch, and
    # (with this much audio) one epoch, so the budgets see validation epochs and best checkpoints.
    rows = train_nam(x[:split], y[:split], x[split:], y[split:], RATE, [0.1, 0.05], threads=2, batch_size=2)

    assert [row["minutes"] for row in rows] == [0.05, 0.1]
    for row in rows:
        assert row["submodel"] == "channels_8" and row["parameters"] == row["submodels"][-1]["parameters"] > 0
        assert [s["name"] for s in row["submodels"]] == ["channels_3", "channels_8"]
        assert row["epochs"] >= 1 and row["train_seconds"] >= 60 * row["minutes"]
        for figure in ("val_esr", "val_esr_pre_emphasis", "train_esr"):
            assert math.isfinite(row[figure])
    # the untrained net's output is ~0 (NAM's head_scale 0.01), so ESR ~1: training must have beaten that
    assert rows[-1]["val_esr"] < 1 and rows[-1]["train_esr"] < 1
