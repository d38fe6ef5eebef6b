"""A headless Chromium for tests, driven over the DevTools protocol (CDP) with `websockets`: open a page, read
the DOM with JavaScript, and collect what the page reported as errors. No browser is downloaded: the system's
Chromium is used (`apt-get install chromium`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, sandbox-free (containers run as root) and quiet: no GPU, no first-run screens, and no traffic of
# Chromium's own (updates, sync, QUIC probes), so that a page that works here works offline.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def find_chromium() -> str | None:
    return next((found for name in EXECUTABLES if (found := shutil.which(name))), None)


class Browser:
    """A Chromium process with a profile of its own, removed on exit; `page()` is its first tab."""

    def __init__(self, executable: str, start_seconds: float = 60):
        self.profile = Path(tempfile.mkdtemp(prefix="ampsim-chromium-"))
        # Port 0: Chromium picks a free port and writes it into the profile, so that parallel tests never clash.
        self.process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}",
                                         "--remote-debugging-port=0", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.port = self._debugging_port(start_seconds)

    def _debugging_port(self, seconds: float) -> int:
        announced = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited at start (status {self.process.returncode})")
            lines = announced.read_text().splitlines() if announced.is_file() else []
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
            time.sleep(0.1)
        raise RuntimeError(f"Chromium did not open its debugging port within {seconds:.0f} s")

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as answer:
            targets = json.loads(answer.read())
        return Page(next(t for t in targets if t.get("type") == "page")["webSocketDebuggerUrl"])

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Page:
    """One tab. Events arriving while a command waits for its answer are kept in `events`, in order."""

    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=64 << 20, open_timeout=20)
        self.events: list[dict[str, Any]] = []
        self.last_id = 0

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=timeout))
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def listen(self) -> None:
        """Report JavaScript exceptions, console output and the browser's own log (failed loads) as events."""
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); an exception in it is raised here."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression[:80]}...: {answer['exceptionDetails'].get('text')} "
                               f"{answer['exceptionDetails'].get('exception', {}).get('description', '')}")
        return answer.get("result", {}).get("value")

    def open(self, url: str, seconds: float = 30) -> None:
        """Navigate and wait for the new document's load event (images and scripts loaded): polling
        document.readyState instead could read the old document's, before the new one replaces it."""
        self.events.clear()
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {answer['errorText']}")
        deadline = time.monotonic() + seconds
        while not any(event["method"] == "Page.loadEventFired" for event in self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{url} did not finish loading within {seconds:.0f} s")
            try:
                message = json.loads(self.socket.recv(timeout=left))
            except TimeoutError:
                continue
            if "method" in message:
                self.events.append(message)

    def wait_for(self, expression: str, seconds: float = 30) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or TimeoutError."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {seconds:.0f} s: {expression}")
            time.sleep(0.1)

    def errors(self) -> list[str]:
        """What the page reported as errors: uncaught exceptions, console.error and error entries of the
        browser's log (a resource that failed to load, a refused request)."""
        self.evaluate("0")  # a round trip: the events sent before its answer are in by then
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(arg.get("value", arg.get("description")))
                                                    for arg in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                found.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def screenshot(self, path: Path, width: int = 1300, height: int = 900, full_page: bool = True) -> Path:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        if full_page:
            tall = self.evaluate("document.documentElement.scrollHeight")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=int(tall), deviceScaleFactor=1,
                      mobile=False)
        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return Path(path)

    def close(self) -> None:
        self.socket.close()
