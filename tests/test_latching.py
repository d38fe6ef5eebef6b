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
from ampsim.inference.latching import StreamRender, first_unlatched, stream_check  # noqa: E402
from ampsim.modelling import cab_ir  # noqa: E402
from ampsim.modelling.best_steps import BestSteps  # noqa: E402
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
    check = stream_check(_two_cells(latches), card, train, val, StreamRender.of(render_params))
    if latches:  # +0.5 from 2.05 s on as one stream; blocks after 3 s start clean (second 2 is wrong both ways)
        assert check.latched_seconds == 3 and check.worst == "take: 3 s latched, the first at 3 s"
        assert check.esr_stream > 3 * check.esr_blocks  # wrong for ~4 s as one stream, ~1 s in blocks
        assert "latches" in check.warning() and "train.random_seed" in check.warning()
    else:
        assert check.latched_seconds == 0 and check.warning() is None
        assert check.esr_stream < 1e-6 and check.esr_blocks < 1e-6
    assert set(check.as_metrics()) == {"stream_esr", "stream_esr_in_blocks", "stream_latched_seconds"}


def _take_and_card():
    card = ModelCard("lstm", RATE, 1, 1024, 768, ["take"], None, knobs=[])
    x = _quiet_take_with_one_burst()
    truth = _two_cells(latches=False).predict(x[None, :, None], verbose=0).reshape(-1)
    split = 4 * RATE
    return card, [Segment("take", x[:split], truth[:split])], [Segment("take", x[split:], truth[split:])]


def test_training_ships_the_best_step_that_does_not_latch(tmp_path):
    card, train, val = _take_and_card()
    kept = BestSteps(keep=3)
    for step, latches in ((3, False), (7, False), (9, True)):  # each a new best; the best (step 9) latches
        kept.add(step, 1.0 / step, _two_cells(latches).get_weights())
    kept.save(tmp_path / "best_steps.npz")  # as the checkpoint keeps them, so that a resumed run can choose too
    resumed = BestSteps(keep=3)
    resumed.load(tmp_path / "best_steps.npz")
    assert [s for s, _ in resumed.candidates()] == [9, 7, 3] and resumed.val_loss(7) == 1.0 / 7
    model, said = _two_cells(latches=True), []
    step, checked = first_unlatched(model, card, resumed.candidates(), train, val, log=said.append)
    assert (step, checked) == (7, {9: 3, 7: 0})
    assert "step 9 latches as one stream (take: 3 s latched, the first at 3 s" in said[0] and len(said) == 1
    np.testing.assert_array_equal(model.get_weights()[2], _two_cells(latches=False).get_weights()[2])

    every_one_latches = [(9, _two_cells(True).get_weights()), (7, _two_cells(True).get_weights())]
    step, checked = first_unlatched(model, card, every_one_latches, train, val, log=said.append)
    assert (step, checked) == (9, {9: 3, 7: 3}) and "every one of the 2 best steps kept latches" in said[-1]
    kept_one = BestSteps(keep=1)
    for step in (1, 2, 3):
        kept_one.add(step, 1.0 / step, [np.zeros(1)])
    assert [s for s, _ in kept_one.candidates()] == [3]


def test_a_step_trained_through_an_ir_is_checked_through_it(tmp_path):
    """A network trained through an IR plays no cabinet of its own: alone against the target every second is
    about as bad, and a latched one hardly stands out (the 5150 shipped a step that went silent as one stream,
    session 24). Through the IR it was trained through, a latched second is as plain as on any other model."""
    card, train, val = _take_and_card()
    ir = np.zeros(64, np.float32)
    ir[40] = -10.0  # a level and a delay that the network leaves to the IR
    train, val = ([Segment(s.capture, s.x, cab_ir.apply(ir, s.y), s.knobs) for s in part] for part in (train, val))
    kept = BestSteps(keep=2)
    kept.add(6, 1.0 / 6, _two_cells(latches=False).get_weights(), ir)
    kept.add(7, 1.0 / 7, _two_cells(latches=False).get_weights(), ir)
    kept.add(9, 1.0 / 9, _two_cells(latches=True).get_weights(), ir)  # step 6 and its IR drop out
    kept.save(tmp_path / "best_steps.npz")
    resumed = BestSteps(keep=2)
    resumed.load(tmp_path / "best_steps.npz")
    assert sorted(resumed.trained_irs) == [7, 9]
    np.testing.assert_array_equal(resumed.trained_irs[9], ir)

    model = _two_cells(latches=True)
    assert first_unlatched(model, card, resumed.candidates(), train, val, log=lambda _: None) == (9, {9: 0})  # blind
    said = []
    step, checked = first_unlatched(model, card, resumed.candidates(), train, val, log=said.append,
                                    trained_irs=resumed.trained_irs)
    assert (step, checked) == (7, {9: 3, 7: 0}) and "step 9 latches as one stream" in said[0]
