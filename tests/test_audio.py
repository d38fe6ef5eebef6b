import numpy as np
import pytest
import soundfile as sf

from ampsim.core.audio import atomic_dir, read_audio
from ampsim.core.errors import CaptureError


@pytest.mark.parametrize(
    "fmt, subtype, full_scale",
    [("WAV", "PCM_16", 2**15), ("WAV", "PCM_24", 2**23), ("WAV", "PCM_32", 2**31),
     ("FLAC", "PCM_16", 2**15), ("FLAC", "PCM_24", 2**23), ("AIFF", "PCM_16", 2**15)],
)
def test_pcm_is_scaled_by_its_full_scale(tmp_path, fmt, subtype, full_scale):
    codes = np.array([-full_scale, -full_scale // 2, 0, 1, full_scale // 4, full_scale - 1], dtype=np.int64)
    path = tmp_path / f"x.{fmt.lower()}"
    dtype = "int16" if subtype == "PCM_16" else "int32"
    shift = 0 if subtype != "PCM_24" else 8  # libsndfile takes 24-bit data left-aligned in int32
    sf.write(path, (codes << shift).astype(dtype), 48000, subtype=subtype, format=fmt)
    decoded = read_audio(path)
    assert decoded.samples.dtype == np.float32
    assert decoded.subtype == subtype
    np.testing.assert_allclose(decoded.samples[:, 0], codes / full_scale, rtol=0, atol=1e-7)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_float_files_pass_through_unscaled(tmp_path, subtype):
    values = np.array([-1.5, -0.25, 0.0, 0.5, 1.25])
    sf.write(tmp_path / "f.wav", values, 44100, subtype=subtype)
    decoded = read_audio(tmp_path / "f.wav")
    assert decoded.sample_rate == 44100
    np.testing.assert_allclose(decoded.samples[:, 0], values, atol=1e-7)


def test_unreadable_files_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    sf.write(tmp_path / "ok.wav", np.zeros(4800), 48000)
    (tmp_path / "truncated.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:20])
    for name, words in [("empty.wav", "empty"), ("text.wav", "not a readable audio file"),
                        ("truncated.wav", "truncated"), ("missing.wav", "not found")]:
        with pytest.raises(CaptureError) as caught:
            read_audio(tmp_path / name)
        assert name in caught.value.message and words in caught.value.message and "Fix:" in caught.value.message


def test_atomic_dir_keeps_the_previous_output_when_the_block_fails(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as scratch:
        (scratch / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as scratch:
            (scratch / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no scratch folder left behind


def test_scratch_left_by_a_killed_run_is_cleared_on_the_next_run(tmp_path):
    target = tmp_path / "out"
    killed = tmp_path / ".out.tmp-abc123"  # what a SIGKILLed run leaves behind
    killed.mkdir()
    (killed / "partial.wav").write_bytes(b"half")
    with atomic_dir(target) as scratch:
        (scratch / "a.txt").write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_written_wavs_are_byte_reproducible(tmp_path):
    """Stage outputs are hashed by DVC: the same audio must give the same bytes at any time."""
    import time

    from ampsim.core.audio import write_wav

    audio = np.linspace(-0.5, 0.5, 4800, dtype=np.float32)
    write_wav(tmp_path / "a.wav", audio, 48000)
    time.sleep(1.1)  # libsndfile's PEAK chunk carries a timestamp with one-second resolution
    write_wav(tmp_path / "b.wav", audio, 48000)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    np.testing.assert_array_equal(read_audio(tmp_path / "a.wav").samples[:, 0], audio)
