"""Look at an MLflow store the way a person would: start `mlflow server` on it (free loopback port), open the
experiment in headless Chromium (driven over the DevTools protocol with `websockets`, no browser download),
save screenshots of the experiment's landing page and of its runs table, and print what they show: which tab
the experiment opens on (training runs, not GenAI traces with "No data"), the run names, and the Dataset and
Source columns. MLflow 3.17 chooses that tab by its sidebar switch "GenAI | Model training" (per browser, GenAI
in a new one), so the page is opened three ways: in a fresh browser, with ?workflowType=machine_learning, and
after clicking "Model training".

    python bench/mlflow_ui_check.py mlflow.db                # a store: SQLite file or any tracking URI
    python bench/mlflow_ui_check.py --demo                   # a temporary store: 3 runs via start_training
    python bench/mlflow_ui_check.py --demo --out /tmp/mlflow-ui --experiment ampsim

Needs a Chromium (`apt-get install chromium`); not run in CI. Exit status 0 when, on "Model training", the
page shows every run with its dataset and source; 1 when not; 2 without a Chromium.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ampsim.core.tracking import EXPERIMENT_KIND_TAG, Tracker  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, seconds: float, log: Path) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def demo_store(folder: Path) -> str:
    """A git + DVC repository with two capture sets (one `dvc add`ed, one a stage output in dvc.lock) and a
    store with three training runs made by `Tracker.start_training`, with made-up losses."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "ampsim", "GIT_AUTHOR_EMAIL": "a@example.com",
           "GIT_COMMITTER_NAME": "ampsim", "GIT_COMMITTER_EMAIL": "a@example.com"}
    dvc = str(Path(sys.executable).parent / "dvc")
    repo = folder / "repo"
    (repo / "data" / "captures" / "boss-ds1").mkdir(parents=True)

    def run(*command: str) -> None:
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)

    run("git", "init", "-q", "-b", "main")
    run("git", "remote", "add", "origin", "https://github.com/example/ampsim.git")
    run(dvc, "init", "-q")
    for name in ("input.wav", "output.wav"):
        (repo / "data" / "captures" / "boss-ds1" / name).write_bytes(random.Random(name).randbytes(4096))
    run(dvc, "add", "-q", "data/captures/boss-ds1")
    run(dvc, "stage", "add", "-q", "-n", "demo", "-o", "data/captures/demo",
        "mkdir -p data/captures/demo && echo dry > data/captures/demo/input.wav && echo wet > data/captures/demo/output.wav")
    run(dvc, "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "captures")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = Tracker(uri, "ampsim", folder)
    for device, architecture, experiment in (("boss-ds1", "lstm", None), ("boss-ds1", "lstm2018", "pithy-gnat"),
                                             ("demo", "lstm", None)):
        if experiment:
            os.environ["DVC_EXP_NAME"] = experiment
        tracker.start_training(device=device, architecture=architecture, params={"train": {"steps": 10}},
                               tags={}, data_path=Path("data/captures") / device, root=repo)
        os.environ.pop("DVC_EXP_NAME", None)
        for step in range(10):
            tracker.log_metrics({"train_loss": 1 / (step + 1), "val_loss": 1.2 / (step + 1)}, step)
        tracker.client.set_terminated(tracker.run_id)
    return uri


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 << 20, open_timeout=20)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, ready: str, seconds: float = 45) -> None:
        """Open `url` and wait until the JS expression `ready` is true (the React app renders late)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if self.evaluate(f"Boolean({ready})"):
                time.sleep(1.5)  # let the last requests (metrics, datasets) fill in
                return
        print(f"  (gave up waiting after {seconds:.0f} s for: {ready})")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def text(self) -> str:
        return self.evaluate("document.body.innerText") or ""


TABLE_JS = r"""(() => {
  // MLflow 3's runs table is an ag-grid: header cells and row cells carry a col-id, and a run's cells are
  // split over the pinned and the scrolling part of the grid, joined here by row-index.
  const header = {};
  document.querySelectorAll('.ag-header-cell[col-id]').forEach(c => {
    const name = c.innerText.replace(/\s+/g, ' ').trim();
    if (name) header[c.getAttribute('col-id')] = name;
  });
  const rows = {};
  document.querySelectorAll('.ag-row[row-index]').forEach(r => {
    const row = rows[r.getAttribute('row-index')] ??= {};
    r.querySelectorAll('.ag-cell[col-id]').forEach(c => {
      const name = header[c.getAttribute('col-id')];
      if (name) row[name] = c.innerText.replace(/\s+/g, ' ').trim();
    });
  });
  return {columns: Object.values(header), rows: Object.keys(rows).sort((a, b) => a - b).map(k => rows[k])};
})()"""

CLICK_JS = """(() => {
  const label = [...document.querySelectorAll('[role=button] span')].find(e => e.textContent.trim() === %s);
  if (!label) return false;
  label.closest('[role=button]').click();
  return true;
})()"""


def text_has(*words: str) -> str:
    return " || ".join(f"document.body.innerText.includes({json.dumps(w)})" for w in words)


def landing(page: Page, url: str, names: list[str], shot: Path) -> tuple[str, bool, int]:
    """Open the experiment's own address (as the experiments list links it) and say where it landed."""
    page.goto(url, text_has("No data", *names[:1]))
    page.screenshot(shot)
    text = page.text()
    return page.evaluate("location.href"), "No data" in text, sum(n in text for n in names)


def check(uri: str, experiment: str | None, out: Path, browser: str) -> bool:
    from mlflow.tracking import MlflowClient

    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-ui-"))
    port, debug_port = free_port(), free_port()
    log = scratch / "server.log"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", uri, "--workers", "1"],
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    chrome = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", server, 120, log)
        client = MlflowClient(tracking_uri=base)
        found = [e for e in client.search_experiments() if experiment in (None, e.name) and e.name != "Default"]
        if not found:
            raise SystemExit(f"no experiment {experiment or '(other than Default)'} in {uri}")
        exp = found[0]
        runs = client.search_runs([exp.experiment_id])
        names = [r.info.run_name for r in runs]
        print(f"experiment {exp.name!r} (id {exp.experiment_id}), {EXPERIMENT_KIND_TAG}="
              f"{exp.tags.get(EXPERIMENT_KIND_TAG)!r}, {len(runs)} runs in the store: {names}")

        chrome_log = scratch / "chromium.log"
        chrome = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                                   "--disable-dev-shm-usage", "--no-first-run", f"--remote-debugging-port={debug_port}",
                                   "--remote-allow-origins=*", f"--user-data-dir={scratch / 'profile'}",
                                   "about:blank"],
                                  stdout=chrome_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        targets = json.loads(wait_http(f"http://127.0.0.1:{debug_port}/json/list", chrome, 60, chrome_log))
        page = Page(next(t for t in targets if t.get("type") == "page")["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1800, height=900, deviceScaleFactor=1, mobile=False)
        home = f"{base}/#/experiments/{exp.experiment_id}"

        # A fresh browser profile: MLflow 3.17's sidebar switch "GenAI | Model training" starts on GenAI.
        url, no_data, shown = landing(page, home, names, out / "landing-fresh-browser.png")
        print(f"(a0) fresh browser: {home} opened {url}\n"
              f"     'No data' shown: {no_data}; run names shown: {shown}/{len(names)} "
              f"-> {out / 'landing-fresh-browser.png'}")
        # The address with the switch in it (what a link can carry), then the switch clicked (what the browser
        # remembers) and the plain address again.
        url, no_data, shown = landing(page, f"{home}?workflowType=machine_learning", names, out / "landing.png")
        print(f"(a) {home}?workflowType=machine_learning opened {url}\n"
              f"    'No data' shown: {no_data}; run names shown: {shown}/{len(names)} -> {out / 'landing.png'}")
        shows_runs = bool(names) and shown == len(names) and "/runs" in url and not no_data
        page.goto(home, text_has("No data", *names[:1]))
        clicked = page.evaluate(CLICK_JS % json.dumps("Model training"))
        stored = page.evaluate("localStorage.getItem('mlflow.workflowType_v1')")
        url, no_data, shown = landing(page, home, names, out / "runs.png")
        shows_runs = shows_runs and shown == len(names) and "/runs" in url and not no_data
        print(f"(b) clicked the sidebar switch 'Model training': {clicked} (the browser stores "
              f"mlflow.workflowType_v1={stored}); {home} now opens {url}\n"
              f"    'No data' shown: {no_data}; run names shown: {shown}/{len(names)} -> {out / 'runs.png'}")
        table = page.evaluate(TABLE_JS) or {"columns": [], "rows": []}
        print(f"    runs table columns: {table['columns']}")
        filled = {"Dataset": 0, "Source": 0}
        for row in table["rows"]:
            for column in filled:
                filled[column] += bool(row.get(column, "").strip(" -"))
            print("    " + " | ".join(f"{k}: {row.get(k, '')}" for k in ("Run Name", "Dataset", "Source")))
        print(f"    runs with a Dataset: {filled['Dataset']}/{len(names)}, with a Source: {filled['Source']}/{len(names)}")
        ok = shows_runs and all(v == len(names) for v in filled.values())
        print("OK: on 'Model training' the experiment opens on its training runs, with datasets and sources"
              if ok else "NOT OK")
        return ok
    finally:
        if chrome is not None:
            stop(chrome)
        stop(server)
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", nargs="?", help="SQLite file (mlflow.db) or tracking URI")
    parser.add_argument("--demo", action="store_true", help="make a temporary store with three training runs")
    parser.add_argument("--experiment", help="experiment name (default: the first one other than Default)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mlflow-ui"), help="where the screenshots go")
    parser.add_argument("--browser", help="Chromium executable (default: found on PATH)")
    args = parser.parse_args(argv)
    browser = args.browser or next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if not browser:
        print(f"no Chromium found (tried {', '.join(BROWSERS)}); apt-get install chromium", file=sys.stderr)
        return 2
    if args.demo:
        keep = Path(tempfile.mkdtemp(prefix="ampsim-ui-demo-"))
        print(f"demo store and repository in {keep}")
        uri = demo_store(keep)
    elif args.store:
        uri = args.store if "://" in args.store else f"sqlite:///{Path(args.store).resolve()}"
    else:
        parser.error("give a store or --demo")
    return 0 if check(uri, args.experiment, args.out, browser) else 1


if __name__ == "__main__":
    sys.exit(main())
