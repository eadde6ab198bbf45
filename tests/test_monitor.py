"""The live monitor page: in a real browser (Debian's Chromium, headless, driven through
chromedriver's WebDriver HTTP protocol), over a real WebSocket, against a running daemon;
and the tap the roll reads, against the real output thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_engine import ROOT, Daemon

from livegen.config import OutputConfig
from livegen.monitor import TappedTimeline
from livegen.output import Output
from livegen.sinks import MidiFileRecorder

MODEL = ROOT / "models" / "charrnn.json"
ARTEFACTS = ROOT / "out" / "test-artefacts"
BROWSER_MISSING = ("chromium or chromedriver is missing: install them (Debian: apt-get "
                   "install chromium chromium-driver; scripts/test does it as root)")
# Flags that let Chromium run headless as root in a container, and keep it off the network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1100")
END, HOME = "\ue010", "\ue011"  # WebDriver's keys


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebDriver:
    """A Chromium session through chromedriver, spoken to in WebDriver's HTTP protocol
    with urllib and json (all this test needs of Selenium, in a few lines)."""

    def __init__(self, user_data: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(["chromedriver", f"--port={self.port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "chromedriver did not start within 30 s"
                time.sleep(0.1)
        options = {"binary": shutil.which("chromium"),
                   "args": [*CHROMIUM_FLAGS, f"--user-data-dir={user_data}"]}
        session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}})
        self.session = f"/session/{session['sessionId']}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self.call("POST", f"{self.session}/url", {"url": url})

    def run(self, script: str) -> Any:
        return self.call("POST", f"{self.session}/execute/sync",
                         {"script": script, "args": []})

    def element(self, css: str) -> str:
        found = self.call("POST", f"{self.session}/element",
                          {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def click(self, css: str) -> None:
        self.call("POST", f"{self.session}/element/{self.element(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self.call("POST", f"{self.session}/element/{self.element(css)}/value", {"text": text})

    def clear(self, css: str) -> None:
        self.call("POST", f"{self.session}/element/{self.element(css)}/clear", {})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("GET", f"{self.session}/screenshot")))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("DELETE", self.session)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(BROWSER_MISSING)
        pytest.skip(BROWSER_MISSING)
    user_data = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    driver = WebDriver(user_data)
    yield driver
    driver.close()


def monitor_config(path: Path, *, port: int, extra: str = "") -> Path:
    """A daemon with two Char-RNNs in switch mode, the simulated performer on density, the
    page's sliders on pitch and velocity, and the monitor on `port`; no MIDI system needed
    (the output plays to nothing; the page reads what it takes from the plan)."""
    path.write_text(f"""
[engine]
seed = 2
generators = ["a", "b"]
generator = "a"
presets = "{path.parent / 'presets.toml'}"

[output]
port = ""

[generators.a]
type = "charrnn"
model = "{MODEL}"

[generators.b]
type = "charrnn"
model = "{MODEL}"
channel = 2

[inputs.sim]
type = "sim"

[inputs.page]
type = "page"
keys = ["pitch", "velocity"]

[monitor]
enabled = true
port = {port}

[[map]]
source = "sim.hand.x"
target = "density"
out_range = [0.6, 1.0]

[[map]]
source = "page.pitch"
target = "pitch"

[[map]]
source = "page.velocity"
target = "velocity"
{extra}
""")
    return path


def get_state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "state", timeout=30) as response:
        return json.loads(response.read())


def until(what: Callable[[], Any], timeout: float = 20.0, message: str = "") -> Any:
    """Wait until what() is truthy (the machine is shared: loose deadlines); return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, message or f"not within {timeout} s"
        time.sleep(0.1)


def driver_of(state: dict[str, Any], target: str) -> dict[str, Any]:
    return next(row for row in state["drivers"] if row["target"] == target)


def test_the_page_shows_the_roll_and_its_sliders_and_buttons_steer_the_daemon(
        tmp_path: Path, browser: WebDriver) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    stats = tmp_path / "stats.json"
    daemon = Daemon(monitor_config(tmp_path / "c.toml", port=port), "--stats-json",
                    str(stats))
    try:
        daemon.wait_for_log(f"monitor: the page is at {url}")
        browser.open(url)
        # The page connects and the roll fills: notes arrive and are drawn, and keep
        # arriving (the roll moves).
        until(lambda: browser.run("return window.monitor.noteCount") >= 3, 30,
              "no notes reached the page")
        first = browser.run("return [window.monitor.noteCount, window.monitor.frames]")
        time.sleep(2.0)
        later = browser.run("return [window.monitor.noteCount, window.monitor.frames, "
                            "window.monitor.litPixels()]")
        assert later[0] > first[0] and later[1] > first[1], (first, later)
        assert later[2] > 50, "the roll drew nothing"
        assert browser.run("return document.getElementById('connection').textContent") \
            == "live"

        # A slider is one more input: its moves are readings of `page`, mapped by the rule.
        browser.type("#slider-pitch", END)
        state = until(lambda: (s := get_state(url))["controls"]["pitch"] == 1.0 and s)
        assert driver_of(state, "pitch")["by"] == "page.pitch"
        browser.type("#slider-pitch", HOME)
        until(lambda: get_state(url)["controls"]["pitch"] == 0.0)

        # The buttons: pause and resume, switch, store and recall a preset.
        browser.click("#pause")
        until(lambda: get_state(url)["state"]["paused"] is True)
        until(lambda: browser.run("return document.getElementById('pause').textContent")
              == "Resume")
        browser.click("#pause")
        until(lambda: get_state(url)["state"]["paused"] is False)
        browser.click("#generator-choice option[value='b']")
        browser.click("#switch")
        until(lambda: get_state(url)["state"]["generator"] == "b")
        browser.clear("#preset-number")
        browser.type("#preset-number", "4")
        browser.click("#store")
        until(lambda: get_state(url)["state"]["preset"] == 4)
        stored = tomllib.loads((tmp_path / "presets.toml").read_text())["presets"]["4"]
        assert stored["generator"] == "b" and stored["pitch"] == 0.0
        until(lambda: "4 preset 4" in browser.run(
            "return document.getElementById('stored').textContent"))
        browser.click("#generator-choice option[value='a']")
        browser.click("#switch")
        until(lambda: get_state(url)["state"]["generator"] == "a")
        browser.click("#recall")
        until(lambda: get_state(url)["state"]["generator"] == "b")
        until(lambda: browser.run("return window.monitor.last.state.generator") == "b")
        browser.click("#panic")
        until(lambda: browser.run("return document.getElementById('reply').textContent")
              == "panic: done")

        # The figures reach the page: each input's rate, each generator's step time.
        until(lambda: "sim" in browser.run(
            "return document.getElementById('inputs').textContent"))
        shot = tmp_path / "monitor.png"
        browser.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTEFACTS / "monitor.png")
    finally:
        assert daemon.stop() == 0, daemon.text()
    figures = json.loads(stats.read_text())
    assert figures["inputs"]["page"]["readings"] >= 2
    assert figures["surface"]["generator"] == "b"
    assert "Traceback" not in daemon.text()


def test_a_websocket_from_another_origin_is_refused_and_a_busy_port_is_one_line(
        tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    daemon = Daemon(monitor_config(tmp_path / "c.toml", port=port))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    second = Daemon(monitor_config(tmp_path / "d.toml", port=blocker.getsockname()[1]))

    async def talk() -> tuple[int, dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(url + "ws", headers={"Origin": "http://evil.test"})
            except aiohttp.WSServerHandshakeError as refused:
                status = refused.status
            else:
                status = 101
            async with session.ws_connect(url + "ws", origin=url.rstrip("/")) as page:
                hello = await page.receive_json(timeout=30)
                frame = await page.receive_json(timeout=30)
                await page.send_json({"do": "slider", "key": "loudness", "value": 0.5})
                reply = await page.receive_json(timeout=30)
                while reply["type"] != "reply":
                    reply = await page.receive_json(timeout=30)
        return status, {"hello": hello, "frame": frame}, reply

    try:
        daemon.wait_for_log(f"monitor: the page is at {url}")
        status, first, reply = asyncio.run(talk())
        second.wait_for_log("ready in")
    finally:
        blocker.close()
        assert daemon.stop() == 0, daemon.text()
        assert second.stop() == 0, second.text()
    assert status == 403
    assert first["hello"]["type"] == "hello" and first["frame"]["type"] == "frame"
    assert [s["key"] for s in first["hello"]["sliders"]] == ["pitch", "velocity"]
    assert reply["ok"] is False and "not one of the page's sliders" in reply["message"]
    assert "refused a WebSocket from http://evil.test" in daemon.text()
    lines = [line for line in second.text().splitlines() if "monitor: cannot serve" in line]
    assert len(lines) == 1 and "playing on without the page" in lines[0], second.text()


def test_the_tap_holds_every_event_the_output_thread_takes_in_order(tmp_path: Path) -> None:
    timeline = TappedTimeline(capacity=64)
    recorder = tmp_path / "tap.mid"
    output = Output(OutputConfig(port="", realtime=False), timeline,
                    openers=[lambda: MidiFileRecorder(recorder)])
    now = time.monotonic()
    planned = [(now + 0.05 + i * 0.004, (0x90, 40 + i % 40, 64 + i % 2)) for i in range(150)]
    with output:
        timeline.add_many(planned, "lead")
        cursor, taken = 0, []
        deadline = time.monotonic() + 20
        while len(taken) < len(planned) and time.monotonic() < deadline:
            events, cursor = timeline.taken_since(cursor)  # read on the way, as the page does
            taken += events
            time.sleep(0.05)
    assert [(e.due, e.message) for e in taken] == planned
    assert {e.tag for e in taken} == {"lead"}
    # A reader a whole ring behind gets what the ring still holds, the newest, in order.
    events, count = timeline.taken_since(0)
    assert count == len(planned) and [e.message for e in events] == [
        m for _, m in planned[-64:]]
