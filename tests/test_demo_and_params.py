import numpy as np
import pytest
import soundfile as sf
import yaml

from ampsim.core.errors import AmpsimError, CaptureError
from ampsim.core.params import NormalizeParams, device_params, load_params, section
from ampsim.data.captures import check_capture_name
from ampsim.data.demo import synth_di, virtual_amp
from conftest import PROJECT


def test_demo_device_is_generated_the_same_every_time(ampsim_cli, tmp_path, demo_set):
    """The demo device is a DVC stage's output, not files in git: the generator must be deterministic."""
    code, out, err = ampsim_cli("demo-set", "--captures", str(tmp_path))
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["gain-0.2", "gain-0.35", "gain-0.5", "gain-0.65", "gain-0.8"]
    for name in names:
        for side in ("input.wav", "output.wav"):
            assert (tmp_path / name / side).read_bytes() == (demo_set / name / side).read_bytes()
            assert sf.info(str(tmp_path / name / side)).samplerate == 48000
        meta = yaml.safe_load((tmp_path / name / "capture.yaml").read_text())
        assert meta["knobs"] == {"gain": float(name.rsplit("-", 1)[1])}
        assert meta["split"] == ("val" if name == "gain-0.5" else "time")  # the unseen middle setting
        assert "synthetic" in meta["notes"]
    stage = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["demo"]
    assert stage["outs"] == ["data/captures/demo"] and "demo" in load_params(PROJECT / "params.yaml")["devices"]


def test_demo_signal_is_deterministic_and_guitar_like():
    a = synth_di(4.0, 48000, seed=3)
    b = synth_di(4.0, 48000, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synth_di(4.0, 48000, seed=4))
    peak_dbfs = 20 * np.log10(np.abs(a).max())
    assert -12 < peak_dbfs < 0


def test_virtual_amp_gain_knob_adds_distortion():
    t = np.arange(48000) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)

    def harmonic_share(y):
        spectrum = np.abs(np.fft.rfft(y[4800:] * np.hanning(len(y) - 4800)))
        freqs = np.fft.rfftfreq(len(y) - 4800, 1 / 48000)
        fundamental = spectrum[np.abs(freqs - 220) < 5].sum()
        return 1 - fundamental / spectrum.sum()

    low, high = virtual_amp(tone, 48000, 0.0, 0.0), virtual_amp(tone, 48000, 1.0, 0.0)
    assert harmonic_share(high) > harmonic_share(low) + 0.05
    assert np.abs(high).max() < 1.0
    with pytest.raises(ValueError):
        virtual_amp(tone, 48000, 1.5, 0.0)


def test_params_section_names_missing_and_unknown_keys(tmp_path):
    params = load_params(PROJECT / "params.yaml")
    assert section(params, "normalize", NormalizeParams).mode == "fullscale"
    broken = yaml.safe_load((PROJECT / "params.yaml").read_text())
    del broken["normalize"]["clip_level"]
    broken["normalize"]["clip_levle"] = 0.9
    with pytest.raises(AmpsimError) as caught:
        section(broken, "normalize", NormalizeParams, "params.yaml")
    assert "missing `normalize.clip_level`" in caught.value.message
    assert "unknown `normalize.clip_levle`" in caught.value.message


def test_a_device_recipe_overrides_its_training_sections_key_by_key():
    params = load_params(PROJECT / "params.yaml")
    params["recipes"]["plain"] = {}
    assert device_params(params, "plain") == {k: v for k, v in params.items() if k != "recipes"}
    params["recipes"]["ds1"] = {"train": {"architecture": "wavenet"}, "wavenet": {"layers": "lite"}}
    ds1 = device_params(params, "ds1")
    assert ds1["train"] == {**params["train"], "architecture": "wavenet"}
    assert ds1["wavenet"] == {**params["wavenet"], "layers": "lite"} and ds1["lstm"] == params["lstm"]
    assert ds1["recipes"] == {"ds1": params["recipes"]["ds1"]}  # what its run records: its own entry only
    assert device_params(params, "other")["train"] == params["train"]  # no entry: the shared defaults


def test_a_device_that_rings_like_a_cabinet_gets_the_cabinet_recipe_beneath_its_own():
    params = load_params(PROJECT / "params.yaml")
    cabinet = params["train"]["cabinet_recipe"]
    assert cabinet["fit"]["through_ir_taps"] > 0  # the shipped default trains a cabinet through its IR
    amp = device_params(params, "amp", cabinet=True)
    assert amp["fit"] == {**params["fit"], **cabinet["fit"]} and amp["cabinet"] is True
    assert "cabinet" not in device_params(params, "amp")  # a pedal's captures: the defaults alone
    params["recipes"]["amp"] = {"fit": {"through_ir_taps": 0, "learning_rate": 0.004}}
    own = device_params(params, "amp", cabinet=True)  # the device's own entry has the last word
    assert own["fit"] == {**params["fit"], **cabinet["fit"], "through_ir_taps": 0, "learning_rate": 0.004}
    params["train"]["cabinet_recipe"] = {"fit": {"through_ir_tap": 512}}
    with pytest.raises(AmpsimError) as caught:
        device_params(params, "amp", cabinet=True)
    assert "`train.cabinet_recipe.fit` sets unknown `through_ir_tap`" in caught.value.message


@pytest.mark.parametrize("recipe, says", [
    ({"render": {"workers": 1}}, "`recipes.ds1.render`: a recipe sets only train, fit, lstm2018, lstm, wavenet"),
    ({"lstm": {"hiden_size": 32}}, "`recipes.ds1.lstm` sets unknown `hiden_size`"),
    ({"lstm": 32}, "`recipes.ds1.lstm` is not a mapping"),
    ("wavenet", "`recipes.ds1` is not a mapping"),
])
def test_a_wrong_device_recipe_names_the_key_and_the_fix(recipe, says):
    params = load_params(PROJECT / "params.yaml")
    params["recipes"]["ds1"] = recipe
    with pytest.raises(AmpsimError) as caught:
        device_params(params, "ds1")
    assert says in caught.value.message and caught.value.fix and "params.yaml" in str(caught.value)


@pytest.mark.parametrize("name", ["..", "a/../b", "a/b", "../escape", "with space", ".hidden", "a..b"])
def test_capture_names_that_could_escape_or_confuse_are_refused(name):
    with pytest.raises(CaptureError) as caught:
        check_capture_name(name)
    assert "not allowed" in caught.value.message and "Fix:" in caught.value.message


def test_demo_capture_refuses_an_unsafe_name(ampsim_cli, tmp_path):
    code, out, err = ampsim_cli("demo-capture", "--out", str(tmp_path / "bad..name"))
    assert code == 1 and "not allowed" in err and not (tmp_path / "bad..name").exists()


def test_every_subcommand_has_help(capsys):
    from ampsim.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo-capture", "normalize", "validate"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([name, "--help"])
        assert exited.value.code == 0
        assert "usage: ampsim" in capsys.readouterr().out
