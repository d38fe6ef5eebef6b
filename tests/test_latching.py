"""The stream check (`ampsim.inference.latching`): a recurrent model whose state latches after something loud
plays on wrong as one stream, where short blocks recover; evaluate reports it, and a model that recovers
passes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from conftest import PROJECT, RATE  # noqa: E402

from ampsim.core.params import RenderParams, load_params, section  # noqa: E402
from ampsim.data.windows import Segment  # noqa: E402
from ampsim.inference.latching import stream_check  # noqa: E402
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.models import ModelCard  # noqa: E402


def _two_cells(latches: bool):
    """LSTM(2) by hand (Keras gate order i, f, c, o). Cell 0 opens only above 0.5 and then, if `latches`,
    never forgets (forget gate ~1): one loud burst and it holds +1 for ever. Cell 1 follows the input."""
    model = lstm_model(2, 1, False)
    kernel = np.zeros((1, 8), np.float32)
    bias = np.zeros(8, np.float32)
    kernel[0, 0], bias[0] = 50.0, -25.0  # i, cell 0: open above x = 0.5
    bias[1] = 1.0  # i, cell 1: about half open
    bias[2], bias[3] = (20.0 if latches else -20.0), -20.0  # f: cell 0 remembers (or not); cell 1 forgets
    bias[4] = 5.0  # c candidate, cell 0: +1
    kernel[0, 5] = 1.0  # c candidate, cell 1: the input
    bias[6:8] = 20.0  # o: both open
    model.get_layer("lstm_1").set_weights([kernel, np.zeros((2, 8), np.float32), bias])
    model.get_layer("head").set_weights([np.array([[0.5], [1.0]], np.float32), np.zeros(1, np.float32)])
    return model


def _quiet_take_with_one_burst(seconds: float = 6.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.2 * np.sin(2 * np.pi * 110 * t)
    burst = (t >= 2.0) & (t < 2.05)
    x[burst] = 0.9 * np.sign(np.sin(2 * np.pi * 110 * t[burst]))
    return x.astype(np.float32)


@pytest.mark.parametrize("latches", [True, False])
def test_a_state_that_latches_after_a_burst_is_found_where_it_is(latches):
    render_params = section(load_params(PROJECT / "params.yaml"), "render", RenderParams)
    card = ModelCard("lstm", RATE, 1, 1024, 768, ["take"], None, 4800, 1e-9, 0.01, knobs=[], device="amp")
    x = _quiet_take_with_one_burst()
    truth = _two_cells(latches=False).predict(x[None, :, None], verbose=0).reshape(-1)  # the gear recovers
    split = 4 * RATE
    train, val = [Segment("take", x[:split], truth[:split])], [Segment("take", x[split:], truth[split:])]
    check = stream_check(_two_cells(latches), card, train, val, render_params)
    if latches:  # +0.5 from 2.05 s on as one stream; blocks after 3 s start clean (second 2 is wrong both ways)
        assert check.latched_seconds == 3 and check.worst == "take: 3 s latched, the first at 3 s"
        assert check.esr_stream > 3 * check.esr_blocks  # wrong for ~4 s as one stream, ~1 s in blocks
        assert "latches" in check.warning() and "train.random_seed" in check.warning()
    else:
        assert check.latched_seconds == 0 and check.warning() is None
        assert check.esr_stream < 1e-6 and check.esr_blocks < 1e-6
    assert set(check.as_metrics()) == {"stream_esr", "stream_esr_in_blocks", "stream_latched_seconds"}
