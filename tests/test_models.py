"""Model shapes, the 2018 model's weight count, losses, and streaming = whole-sequence."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ampsim.modelling.architectures.lstm2018 import lstm2018_model  # noqa: E402
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.losses import (  # noqa: E402
    MRSTFT_RESOLUTIONS, esr, esr_dc_loss, mrstft, pre_emphasis, tail_mse, with_mrstft)
from ampsim.modelling.models import streaming_twin  # noqa: E402


def test_lstm2018_model_is_the_2018_stack_with_50184_weights():
    model = lstm2018_model()
    assert [type(layer).__name__ for layer in model.layers[1:]] == ["LSTM", "LSTM", "LSTM"]
    assert [layer.units for layer in model.layers[1:]] == [64, 64, 1]
    assert model.count_params() == 50_184
    window = np.zeros((2, 5280, 1), dtype=np.float32)
    assert model.predict(window, verbose=0).shape == (2, 5280, 1)


def test_tail_mse_scores_only_the_last_samples():
    rng = np.random.default_rng(0)
    y_true = rng.standard_normal((3, 5280, 1)).astype(np.float32)
    y_pred = y_true.copy()
    y_pred[:, :-480] += 5.0  # errors outside the tail must not count
    y_pred[:, -480:] += 0.1
    value = float(keras.ops.convert_to_numpy(tail_mse(480)(y_true, y_pred)))
    assert value == pytest.approx(0.01, rel=1e-4)


def test_esr_and_pre_emphasis_match_numpy():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((2, 1000, 1)).astype(np.float32)
    y_hat = y + 0.1 * rng.standard_normal(y.shape).astype(np.float32)
    expected = np.sum((y - y_hat) ** 2) / np.sum(y**2)
    assert float(keras.ops.convert_to_numpy(esr(y, y_hat))) == pytest.approx(expected, rel=1e-4)
    emphasised = keras.ops.convert_to_numpy(pre_emphasis(y, 0.85))
    np.testing.assert_allclose(emphasised, y[:, 1:] - 0.85 * y[:, :-1], atol=1e-6)
    loss = esr_dc_loss(warmup=100, pre_emphasis_coefficient=0.85, dc_weight=1.0)
    shifted = y.copy()
    shifted[:, :100] += 10.0  # the warm-up is ignored
    assert float(keras.ops.convert_to_numpy(loss(y, shifted))) == pytest.approx(0.0, abs=1e-6)


def _numpy_mrstft(y, y_hat, resolutions):
    """The MR-STFT distance written out in numpy: a centred, reflect-padded Hann STFT per resolution."""
    total = 0.0
    for fft_length, hop, window in resolutions:
        mags = []
        for signal in (y[..., 0], y_hat[..., 0]):
            padded = np.pad(signal, [(0, 0), (fft_length // 2, fft_length // 2)], mode="reflect")
            starts = np.arange(0, padded.shape[1] - fft_length + 1, hop)
            hann = np.zeros(fft_length)
            left = (fft_length - window) // 2
            hann[left : left + window] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
            frames = padded[:, starts[:, None] + np.arange(fft_length)] * hann
            mags.append(np.sqrt(np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + 1e-7))
        target, predicted = mags
        total += np.linalg.norm(target - predicted) / np.linalg.norm(target)
        total += np.mean(np.abs(np.log(target) - np.log(predicted)))
    return total / len(resolutions)


def test_mrstft_matches_numpy_and_ignores_the_warmup():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((2, 4096, 1)).astype(np.float32)
    y_hat = (0.8 * y + 0.05 * rng.standard_normal(y.shape)).astype(np.float32)
    value = float(keras.ops.convert_to_numpy(mrstft(y, y_hat)))
    assert value == pytest.approx(_numpy_mrstft(y, y_hat, MRSTFT_RESOLUTIONS), rel=2e-3)
    assert float(keras.ops.convert_to_numpy(mrstft(y, y))) == pytest.approx(0.0, abs=1e-3)
    base = esr_dc_loss(warmup=100, pre_emphasis_coefficient=0.85, dc_weight=1.0)
    assert with_mrstft(base, 100, 0.0, "esr_dc", 3996, "lstm.tbptt_samples") is base
    combined = with_mrstft(base, 100, 0.5, "esr_dc", 3996, "lstm.tbptt_samples")
    assert combined.__name__ == "esr_dc+mrstft"
    spoiled = y.copy()
    spoiled[:, :100] += 10.0  # the warm-up is ignored by both terms
    assert float(keras.ops.convert_to_numpy(combined(y, spoiled))) == pytest.approx(0.0, abs=1e-3)
    expected = float(keras.ops.convert_to_numpy(base(y, y_hat))) + 0.5 * float(
        keras.ops.convert_to_numpy(mrstft(y[:, 100:], y_hat[:, 100:])))
    assert float(keras.ops.convert_to_numpy(combined(y, y_hat))) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("input_skip", [False, True])
def test_streaming_block_by_block_equals_whole(input_skip):
    keras.utils.set_random_seed(0)
    model = lstm_model(hidden_size=8, num_layers=2, input_skip=input_skip)
    twin = streaming_twin(model)
    rng = np.random.default_rng(2)
    audio = (0.3 * rng.standard_normal((1, 3000, 1))).astype(np.float32)
    whole = model.predict(audio, verbose=0)
    states = [np.zeros((1, 8), np.float32) for _ in range(4)]
    blocks = []
    for start in range(0, 3000, 700):  # uneven last block on purpose
        out, *states = twin.predict([audio[:, start : start + 700], *states], verbose=0)
        blocks.append(out)
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), whole, atol=1e-6)


def test_lstm2018_model_streams_too():
    model = lstm2018_model(units=4)
    twin = streaming_twin(model)
    audio = np.random.default_rng(3).standard_normal((1, 500, 1)).astype(np.float32)
    whole = model.predict(audio, verbose=0)
    states = [np.zeros((1, n), np.float32) for n in (4, 4, 4, 4, 1, 1)]
    first, *states = twin.predict([audio[:, :250], *states], verbose=0)
    second, *_ = twin.predict([audio[:, 250:], *states], verbose=0)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-6)


@pytest.mark.parametrize("broken", ["model", "card"])
def test_a_corrupt_model_file_names_the_file_and_the_fix(tmp_path, broken):
    from ampsim.core.errors import AmpsimError
    from ampsim.modelling.models import ModelCard, load_model, save_model

    save_model(lstm_model(4, 1, False), ModelCard("lstm", 48000, 1, 1024, 768, ["a"], None), tmp_path / "model")
    damaged = tmp_path / "model" / ("model.keras" if broken == "model" else "card.json")
    damaged.write_text("garbage\n")
    with pytest.raises(AmpsimError) as caught:
        load_model(tmp_path / "model")
    assert caught.value.path == damaged and "dvc checkout" in caught.value.fix
    assert f"not a readable {'Keras model' if broken == 'model' else 'model card'}" in caught.value.message
