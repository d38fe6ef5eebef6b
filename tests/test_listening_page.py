"""The listening page the render stage writes (reports/<device>/index.html), opened as a guitarist opens it:
from file:// in a browser, after a real device's stages. Headless Chromium reads it over the DevTools protocol
(tests/browser.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from ampsim.cli import main  # noqa: E402
from ampsim.core.metrics import esr  # noqa: E402
from ampsim.inference.listening import Example, model_facts, page_html, passage_scores, run_link  # noqa: E402
from browser import Browser, find_chromium  # noqa: E402
from conftest import PROJECT, tiny_params  # noqa: E402

SETTINGS = ("gain-0.2", "gain-0.5", "gain-0.8")  # of the demo set; gain-0.5 is held out whole (split: val)
SIDES = ["dry", "amp", "model"]


# --- passages ------------------------------------------------------------------------------------------

def test_passage_esr_and_level_have_the_known_values_and_the_last_passage_may_be_short():
    target = np.concatenate([np.full(100, 1.0), np.full(100, 0.5), np.full(50, 0.25)]).astype(np.float32)
    prediction = target * np.repeat([0.9, 0.5, 1.0], [100, 100, 50])  # errors of 10 %, 50 %, none
    scores, level = passage_scores(target, prediction, 100)
    np.testing.assert_allclose(scores, [0.01, 0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(level, [0.0, 20 * np.log10(0.5), 20 * np.log10(0.25)], atol=1e-9)  # dBFS
    for index, start in enumerate(range(0, 250, 100)):  # each passage's ESR is the project's ESR of its slice
        assert scores[index] == pytest.approx(esr(target[start:start + 100], prediction[start:start + 100]), abs=1e-12)
    with pytest.raises(ValueError):
        passage_scores(target, prediction, 0)


def test_the_mlflow_run_is_linked_where_the_ui_shows_it():
    local = run_link("abc", "3", "sqlite:////somewhere/mlflow.db", "http://127.0.0.1:5000")
    assert local.url == "http://127.0.0.1:5000/#/experiments/3/runs/abc" and local.serve == "ampsim ui"
    server = run_link("abc", "3", "https://mlflow.example.com/", "http://127.0.0.1:5000")
    assert server.url == "https://mlflow.example.com/#/experiments/3/runs/abc" and server.serve is None
    assert run_link("abc", None, "sqlite:///x.db", "http://127.0.0.1:5000").url is None  # --no-mlflow: no id known
    assert run_link(None, None, "sqlite:///x.db", "http://127.0.0.1:5000").run_id is None


def test_every_name_on_the_page_is_escaped():
    from ampsim.modelling.models import ModelCard

    card = ModelCard("lstm", 48000, 2, 1024, 768, ["a<zz"], None, knobs=["<gain>"])
    item = Example("a<zz", {"<gain>": 0.5}, False, {side: f"render/a%3Czz/{side}.wav" for side in SIDES},
                   {"figure <1>": "render/a%3Czz/waveform.png"}, 0.5, np.array([0.01]), np.array([-6.0]), 0.01)
    text = page_html("<title>", model_facts(card, None, None, run_link(None, None, "sqlite:///x", "http://h")),
                     [item], None)
    assert "a&lt;zz" in text and "&lt;gain&gt;" in text and "figure &lt;1&gt;" in text and "&lt;title&gt;" in text
    assert "<zz" not in text and "<gain>" not in text and "--no-mlflow" in text


# --- the page in a browser ---------------------------------------------------------------------------

@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found:
        return found
    if os.environ.get("AMPSIM_SKIP_BROWSER") == "1":
        pytest.skip("no Chromium, and AMPSIM_SKIP_BROWSER=1")
    pytest.fail("the listening page is checked in a headless Chromium, and none was found (chromium, "
                "chromium-browser, google-chrome): `apt-get install chromium`, or set AMPSIM_SKIP_BROWSER=1 to skip")


@pytest.fixture
def device(tmp_path, demo_set, monkeypatch) -> Path:
    """Three demo settings through the stages as dvc.yaml runs them (tiny training, logged to the test's
    MLflow store), in a project-like folder; returns the page."""
    monkeypatch.chdir(tmp_path)
    params = str(tiny_params(PROJECT / "params.yaml", tmp_path / "params.yaml"))
    for name in SETTINGS:
        (tmp_path / "captures" / name).mkdir(parents=True)
        for side in ("input.wav", "output.wav"):
            os.symlink(demo_set / name / side, tmp_path / "captures" / name / side)
        shutil.copy(demo_set / name / "capture.yaml", tmp_path / "captures" / name)
    steps = [["normalize", "--captures", "captures", "--out", "normalized"],
             ["validate", "--normalized", "normalized", "--out", "prepared", "--reports", "reports/validate"],
             ["train", "--prepared", "prepared", "--model", "trained", "--reports", "reports/train", "--checkpoint",
              "checkpoint", "--quiet"],
             ["evaluate", "--prepared", "prepared", "--model", "trained", "--history", "reports/train/loss.csv",
              "--out", "reports/evaluate"],
             ["render-examples", "--device", "demo", "--prepared", "prepared", "--model", "trained", "--out",
              "reports/render", "--page", "reports/index.html", "--summary", "reports/train/summary.json",
              "--metrics", "reports/evaluate/metrics.json"]]
    for step in steps:
        assert main(["--params", params, *step]) == 0, step[0]
    return tmp_path / "reports" / "index.html"


PLAYERS_JS = """[...document.querySelectorAll("section.capture")].map((section) => ({
  capture: section.dataset.capture, heldOut: section.dataset.heldOut, text: section.querySelector("h2").innerText,
  players: [...section.querySelectorAll("audio")].map((a) => ({side: a.dataset.side, src: a.getAttribute("src"),
    ready: a.readyState, error: a.error && a.error.code, seconds: a.duration})),
  images: [...section.querySelectorAll("img")].map((i) => ({src: i.getAttribute("src"), width: i.naturalWidth})),
  passages: section.querySelectorAll("button.passage").length}))"""


def test_the_listening_page_plays_every_capture_side_by_side_in_a_browser(chromium, device, tmp_path):
    card = json.loads((tmp_path / "trained" / "card.json").read_text())
    with Browser(chromium) as browser:
        page = browser.page()
        page.listen()
        page.open(device.as_uri())
        page.wait_for("[...document.querySelectorAll('audio')].every((a) => a.readyState >= 1 || a.error)")
        sections = page.evaluate(PLAYERS_JS)
        seek = page.evaluate("""(() => {
          const section = document.querySelector("section.capture[data-held-out=true]");
          const button = section.querySelectorAll("button.passage")[1];
          button.click();
          return {start: Number(button.dataset.start), at: [...section.querySelectorAll("audio")].map((a) => a.currentTime)};
        })()""")
        offline = page.evaluate("document.querySelectorAll('script[src], link[href], iframe, [src^=http]').length")
        run = page.evaluate("[...document.querySelectorAll('table.card a')].map((a) => a.href)")
        page.screenshot(tmp_path / "listening.png")
        errors = page.errors()
    print(f"screenshot: {tmp_path / 'listening.png'}")

    assert errors == []
    assert [s["capture"] for s in sections] == list(SETTINGS)  # every validation capture, in the manifest's order
    for section in sections:
        assert [p["side"] for p in section["players"]] == SIDES, section  # one player per side, in that order
        for player in section["players"]:
            assert not player["src"].startswith(("/", "file:", "http")), player  # relative: works in any clone
            assert (device.parent / player["src"]).is_file()
            assert player["error"] is None and player["ready"] >= 1 and player["seconds"] == pytest.approx(1.0, abs=1e-3)
        assert [Path(i["src"]).name for i in section["images"]] == ["waveform.png", "spectrogram.png"]
        assert all(i["width"] > 0 for i in section["images"])
        assert section["passages"] == 2  # 1 s examples (TINY_TRAINING) in 0.5 s passages
        assert "gain" in section["text"]  # the knob setting
    held_out = [s for s in sections if s["heldOut"] == "true"]
    assert [s["capture"] for s in held_out] == ["gain-0.5"] and "held out" in held_out[0]["text"]
    assert "gain-0.5" not in card["captures"]
    assert seek["start"] == 0.5 and seek["at"] == [0.5, 0.5, 0.5]  # a passage moves the three players to it
    assert offline == 0
    assert len(run) == 1 and run[0].endswith(f"/runs/{card['mlflow_run_id']}")
