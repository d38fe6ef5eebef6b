"""Rendering: the three methods agree where they should, files of any length stream through in chunks,
and bad input gets a clear refusal with nothing overwritten."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

keras = pytest.importorskip("keras")

from ampsim.core import metrics  # noqa: E402
from ampsim.core.params import RenderParams, load_params, section  # noqa: E402
from ampsim.inference.engine import BlockPlan, render_exact, render_fast, render_sliding_window
from ampsim.inference.files import rechunk
from ampsim.inference.warmup import context_candidates, measure_context
from ampsim.modelling.architectures.lstm2018 import lstm2018_model  # noqa: E402
from ampsim.modelling.architectures.streaming_lstm import lstm_model  # noqa: E402
from ampsim.modelling.models import ModelCard, save_model  # noqa: E402

RATE = 48000


from conftest import decaying_di as _di, trained_like as _trained_like  # noqa: E402


@pytest.fixture(scope="module")
def render_params(params_file) -> RenderParams:
    return section(load_params(params_file), "render", RenderParams)


# --- the methods -------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [100, 480, 4321])
def test_lstm2018_sliding_window_render_keeps_the_input_length_and_matches_window_by_window(length):
    model = lstm2018_model(units=4)
    x = np.random.default_rng(3).standard_normal(length).astype(np.float32) * 0.3
    window, hop = 960, 96
    out = render_sliding_window(model, x, window, hop, jit_compile=True)
    assert out.shape == (length,)
    padded = np.concatenate([np.zeros(window - hop, np.float32), x, np.zeros(window, np.float32)])
    for k in (0, (length - 1) // hop):  # first and last block, each from its own zero-state window
        alone = model.predict(padded[k * hop : k * hop + window][None, :, None], verbose=0)[0, -hop:, 0]
        stop = min((k + 1) * hop, length)
        np.testing.assert_allclose(out[k * hop : stop], alone[: stop - k * hop], atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_exact_render_in_chunks_is_the_whole_sequence_and_causal(jit_compile):
    model = _trained_like(lstm_model(8, 2, False), seed=1)
    x = _di(0.3, seed=4)
    whole = model.predict(x[None, :, None], verbose=0)[0, :, 0]
    out = render_exact(model, x, 1000, jit_compile)  # 14 chunks and a short last one
    assert out.shape == x.shape
    np.testing.assert_allclose(out, whole, atol=1e-5)
    np.testing.assert_allclose(render_exact(model, x[:2500], 1000, jit_compile), out[:2500], atol=1e-6)


@pytest.mark.parametrize("architecture", ["lstm", "lstm2018"])
def test_fast_render_matches_exact_within_1e_5_with_the_measured_warm_up(architecture, render_params):
    model = _trained_like(lstm_model(16, 1, False) if architecture == "lstm" else lstm2018_model(16), seed=2)
    probe, other = _di(2.0, seed=5), _di(3.0, seed=6)
    shortest = 480 if architecture == "lstm" else 4800
    context, error = measure_context(model, probe, context_candidates(shortest, 48000), 4800, render_params)
    assert error <= render_params.context_tolerance_esr and shortest <= context < 48000
    plan = BlockPlan(block=max(4800, context), context=context, blocks=8)  # several batches, a short last one
    exact = render_exact(model, other, 16384, True)
    fast = render_fast(model, other, plan, True)
    assert fast.shape == other.shape
    assert metrics.esr(exact, fast) <= 1e-5
    assert np.sum(exact**2) > 1.0
    # without the zero-state start, the opening block would differ: the exact start is what makes them equal
    np.testing.assert_allclose(fast[: plan.block], exact[: plan.block], atol=1e-5)


def test_rechunk_regroups_a_stream_without_losing_or_reordering_samples():
    pieces = [np.arange(a, b, dtype=np.float32) for a, b in [(0, 3), (3, 3), (3, 20), (20, 21), (21, 45)]]
    chunks = list(rechunk(pieces, 8))
    assert [len(c) for c in chunks] == [8, 8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(45))


# --- files ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = _trained_like(lstm_model(16, 1, False), seed=7)
    card = ModelCard("lstm", RATE, 1, 1024, 768, ["test"], None, 960, 1e-9, 0.1)
    folder = tmp_path_factory.mktemp("model") / "trained"
    save_model(model, card, folder)
    return folder


def test_render_file_streams_any_length_at_the_inputs_rate_and_subtype(tmp_path, model_dir, ampsim_cli):
    from ampsim.modelling.models import load_model

    x = _di(4.3, seed=8) * 0.5
    sf.write(tmp_path / "di.flac", x, RATE, subtype="PCM_24")
    for method in ("exact", "fast"):
        code, out, err = ampsim_cli("render", str(tmp_path / "di.flac"), str(tmp_path / f"{method}.flac"),
                                    "--model", str(model_dir), "--method", method, "--quiet")
        assert code == 0, err
        assert "x real time" in out and method in out
        info = sf.info(str(tmp_path / f"{method}.flac"))
        assert (info.samplerate, info.frames, info.subtype, info.format) == (RATE, len(x), "PCM_24", "FLAC")
    model, _ = load_model(model_dir)
    reference = render_exact(model, sf.read(tmp_path / "di.flac", dtype="float32")[0], 1 << 20, True)
    exact, _ = sf.read(tmp_path / "exact.flac", dtype="float32")
    fast, _ = sf.read(tmp_path / "fast.flac", dtype="float32")
    assert metrics.esr(reference, exact) <= 1e-6  # 65536-sample chunks = one stream (up to 24-bit rounding)
    assert metrics.esr(exact, fast) <= 1e-5
    assert sf.read(tmp_path / "di.flac", dtype="float32")[0].shape == x.shape  # the input is untouched


def test_render_refuses_to_overwrite_the_input_or_an_existing_output(tmp_path, model_dir, ampsim_cli):
    sf.write(tmp_path / "di.wav", _di(0.5, seed=9), RATE, subtype="PCM_16")
    before = (tmp_path / "di.wav").read_bytes()
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "di.wav"), "--model", str(model_dir))
    assert code == 1 and "would overwrite the input" in err and "di.wav" in err
    (tmp_path / "out.wav").write_bytes(b"keep me")
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "out.wav"), "--model", str(model_dir))
    assert code == 1 and "output file exists" in err and "--force" in err
    assert (tmp_path / "out.wav").read_bytes() == b"keep me" and (tmp_path / "di.wav").read_bytes() == before
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "out.wav"), "--model", str(model_dir),
                              "--force", "--quiet")
    assert code == 0 and sf.info(str(tmp_path / "out.wav")).frames == RATE // 2


def test_render_names_a_rate_mismatch_and_resamples_only_when_asked(tmp_path, model_dir, ampsim_cli):
    from scipy.signal import resample_poly

    x44 = resample_poly(_di(2.0, seed=10), 147, 160).astype(np.float32)
    sf.write(tmp_path / "di44.wav", x44, 44100, subtype="FLOAT")
    code, _, err = ampsim_cli("render", str(tmp_path / "di44.wav"), str(tmp_path / "out.wav"), "--model", str(model_dir))
    assert code == 1 and "44100 Hz" in err and "48000 Hz" in err and "--resample" in err
    assert not (tmp_path / "out.wav").exists()
    code, _, err = ampsim_cli("render", str(tmp_path / "di44.wav"), str(tmp_path / "out.wav"), "--model", str(model_dir),
                              "--resample", "--method", "exact", "--quiet")
    assert code == 0, err
    out, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 44100 and len(out) == len(x44)
    # the same as converting by hand, rendering at 48 kHz and converting back (up to the resamplers' edges)
    from ampsim.modelling.models import load_model

    model, _ = load_model(model_dir)
    by_hand = resample_poly(render_exact(model, resample_poly(x44, 160, 147).astype(np.float32), 1 << 20, True), 147, 160)
    middle = slice(4410, len(x44) - 4410)
    assert metrics.esr(by_hand[middle], out[middle]) < 1e-3


def test_render_asks_which_channel_of_a_stereo_file_and_clips_pcm_with_a_report(tmp_path, model_dir, ampsim_cli):
    stereo = np.stack([np.zeros(RATE // 4, np.float32), _di(0.25, seed=11)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, RATE, subtype="PCM_16")
    code, _, err = ampsim_cli("render", str(tmp_path / "stereo.wav"), str(tmp_path / "out.wav"), "--model", str(model_dir))
    assert code == 1 and "2 channels" in err and "--channel" in err
    code, out, err = ampsim_cli("render", str(tmp_path / "stereo.wav"), str(tmp_path / "out.wav"), "--model",
                                str(model_dir), "--channel", "2", "--quiet")
    assert code == 0, err
    right, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert right.ndim == 1 and np.sum(right**2) > 0

    # a model that gains 20 dB: a 16-bit output clips, and says so
    loud = _trained_like(lstm_model(16, 1, True), seed=12)
    head = loud.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 0, bias * 0 + 3.0])
    save_model(loud, ModelCard("lstm", RATE, 1, 1024, 768, ["loud"], None, 480, 1e-9, 1.0), tmp_path / "loud")
    sf.write(tmp_path / "mono.wav", stereo[:, 1], RATE, subtype="PCM_16")
    code, out, err = ampsim_cli("render", str(tmp_path / "mono.wav"), str(tmp_path / "clip.wav"), "--model",
                                str(tmp_path / "loud"), "--quiet")
    assert code == 0 and "samples beyond full scale (clipped)" in out
    clipped, _ = sf.read(tmp_path / "clip.wav", dtype="float32")
    assert np.max(clipped) <= 1.0 and np.min(clipped) >= -1.0 and np.max(clipped) > 0.99  # clipped, not wrapped


def test_render_folder_to_folder_renders_the_good_files_and_names_the_bad_one(tmp_path, model_dir, ampsim_cli):
    dis = tmp_path / "dis"
    dis.mkdir()
    sf.write(dis / "riff.wav", _di(0.5, seed=13), RATE, subtype="PCM_24")
    sf.write(dis / "solo.flac", _di(0.7, seed=14), RATE, subtype="PCM_16")
    (dis / "broken.wav").write_bytes(b"RIFF\x00\x00")
    (dis / "notes.txt").write_text("not audio")
    code, out, err = ampsim_cli("render", str(dis), str(tmp_path / "wet"), "--model", str(model_dir), "--quiet")
    assert code == 1 and "broken.wav" in err and "1 of 3 files failed" in err
    assert sorted(p.name for p in (tmp_path / "wet").iterdir()) == ["riff.wav", "solo.flac"]
    assert sf.info(str(tmp_path / "wet" / "solo.flac")).frames == int(0.7 * RATE)
    # one compiled renderer serves the folder, reset for each file: a file renders as it does alone
    code, _, err = ampsim_cli("render", str(dis / "solo.flac"), str(tmp_path / "alone.flac"), "--model",
                              str(model_dir), "--quiet")
    assert code == 0, err
    np.testing.assert_array_equal(sf.read(tmp_path / "alone.flac")[0], sf.read(tmp_path / "wet" / "solo.flac")[0])
    code, _, err = ampsim_cli("render", str(dis), str(dis), "--model", str(model_dir))
    assert code == 1 and "the output folder is the input folder" in err


def test_sliding_window_is_only_for_the_2018_model_and_old_cards_fall_back_clearly(tmp_path, model_dir, ampsim_cli):
    sf.write(tmp_path / "di.wav", _di(0.2, seed=15), RATE)
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "o.wav"), "--model", str(model_dir),
                              "--method", "sliding-window")
    assert code == 1 and "2018 model's method" in err
    old = ModelCard("lstm", RATE, 1, 1024, 768, ["old"], None)  # a card from before the warm-up was measured
    save_model(lstm_model(8, 1, False), old, tmp_path / "old")
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "o.wav"), "--model", str(tmp_path / "old"),
                              "--method", "fast")
    assert code == 1 and "--method exact" in err and "render the released model (`--model DEVICE`" in err
    code, _, err = ampsim_cli("render", str(tmp_path / "di.wav"), str(tmp_path / "o.wav"), "--model", str(tmp_path / "old"),
                              "--method", "exact", "--quiet")
    assert code == 0, err


def test_fast_blocks_grow_with_the_measured_warm_up_so_it_never_dominates(render_params):
    from ampsim.inference.engine import fast_plan

    short = ModelCard("lstm", RATE, 1, 1024, 768, ["test"], None, 960, 1e-9, 0.1)
    assert fast_plan(short, render_params).block == round(render_params.block_ms * RATE / 1000)
    # a model that needs 2 s of warm-up (the old demo model): blocks of 4 x 2 s, not 0.5 s that cost 5x the audio
    slow = ModelCard("lstm", RATE, 1, 1024, 768, ["test"], None, 96000, 1e-9, 0.1)
    plan = fast_plan(slow, render_params)
    assert plan.block == 96000 * render_params.blocks_per_context
    assert (plan.block + plan.context) / plan.block <= 1 + 1 / render_params.blocks_per_context


def test_render_writes_a_subtype_the_output_container_holds_whatever_the_input(tmp_path, model_dir, ampsim_cli):
    # MP3 in a WAV crashed libsndfile ("unsupported encoding"): lossy input becomes 24-bit PCM in a PCM
    # container and keeps its codec in its own; a lossless subtype is kept where the container holds it
    x = _di(0.4, seed=16) * 0.5
    sources = {"take.mp3": "MPEG_LAYER_III", "take16.flac": "PCM_16", "take24.wav": "PCM_24", "takef.wav": "FLOAT"}
    for name, subtype in sources.items():
        sf.write(tmp_path / name, x, RATE, subtype=subtype)
    cases = [("take.mp3", "out.wav", "PCM_24"), ("take.mp3", "out.flac", "PCM_24"), ("take.mp3", "out.aiff", "PCM_24"),
             ("take.mp3", "out.mp3", "MPEG_LAYER_III"), ("take.mp3", "out.ogg", "VORBIS"),
             ("take16.flac", "out.wav", "PCM_16"), ("take24.wav", "out.flac", "PCM_24"),
             ("take24.wav", "out.mp3", "MPEG_LAYER_III"), ("takef.wav", "out.flac", "PCM_24")]
    for source, target, expected in cases:
        out = tmp_path / f"{source}-{target}"
        code, stdout, err = ampsim_cli("render", str(tmp_path / source), str(out), "--model", str(model_dir),
                                       "--method", "exact", "--quiet", "--force")
        assert code == 0, (source, target, err)
        info = sf.info(str(out))
        assert (info.subtype, info.frames) == (expected, sf.info(str(tmp_path / source)).frames), (source, target)
        assert expected in stdout
        rendered, _ = sf.read(out, dtype="float32")
        assert np.sum(rendered**2) > 0


def test_render_turns_libsndfile_refusals_into_errors_naming_the_output(tmp_path, model_dir, ampsim_cli):
    sf.write(tmp_path / "take.mp3", _di(0.3, seed=17) * 0.5, RATE, subtype="MPEG_LAYER_III")
    sf.write(tmp_path / "take24.wav", _di(0.3, seed=17) * 0.5, RATE, subtype="PCM_24")
    # libsndfile's check_format accepts MP3 in a WAV, then cannot write it
    code, _, err = ampsim_cli("render", str(tmp_path / "take24.wav"), str(tmp_path / "out.wav"), "--model",
                              str(model_dir), "--subtype", "MPEG_LAYER_III", "--quiet")
    assert code == 1 and "out.wav" in err and "cannot hold subtype MPEG_LAYER_III" in err and "PCM_24" in err
    code, _, err = ampsim_cli("render", str(tmp_path / "take.mp3"), str(tmp_path / "out.flac"), "--model",
                              str(model_dir), "--subtype", "FLOAT", "--quiet")
    assert code == 1 and "FLAC files cannot hold subtype FLOAT" in err
    # MP3 holds no 96 kHz: the refusal names the output and a way out, no traceback, no file left behind
    from scipy.signal import resample_poly

    sf.write(tmp_path / "hires.flac", resample_poly(_di(0.3, seed=18) * 0.5, 2, 1), 2 * RATE, subtype="PCM_24")
    code, _, err = ampsim_cli("render", str(tmp_path / "hires.flac"), str(tmp_path / "out.mp3"), "--model",
                              str(model_dir), "--resample", "--quiet")
    assert code == 1 and "out.mp3: cannot write MP3 MPEG_LAYER_III at 96000 Hz" in err and ".wav" in err
    assert "Traceback" not in err and not (tmp_path / "out.mp3").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hires.flac", "take.mp3", "take24.wav"]
