"""The live monitor page: what the daemon plays and hears, in a browser, and a few hands
on it (`[monitor] enabled = true`; http://127.0.0.1:8765/ by default).

Served from the daemon's own event loop by aiohttp (an AppRunner and a TCPSite: no second
process, no thread). One page, livegen/monitor.html, plain JavaScript with no build step
and nothing fetched from elsewhere. While at least one page is connected, a task sends it
over a WebSocket, `rate_hz` times a second (20 by default), a frame of JSON:
- the notes the output took from the plan since the last frame (the piano roll);
- the controls, and which input (or preset) drives each;
- the clock (bpm, running, following, bar and beat) and the surface's state (generator,
  paused, preset);
and once a second the figures: each input's readings per second, dropped data and
restarts, each generator's step or plan time, control latency and overruns, the output's
recent send lateness. With no page connected the task does not run.

What it costs the music. The roll is read from a `TappedTimeline`: the output thread, as
it takes the due events from the plan, also stores a reference to each in a preallocated
ring (no allocation, no lock, no I/O); the page's task reads the ring on the loop. All the
rest happens on the event loop at the page's rate. `livegen bench engine --pages 2`
measures send lateness and control latency without and with two pages open.

From the page (a JSON message each): panic, pause, resume, switch (a generator), store
and recall (a preset), and slider moves, which become readings of the config's
`type = "page"` input (livegen/inputs/page.py), mapped by [[map]] rules like any input.
A WebSocket from a page served elsewhere (another Origin) is refused, so a web site open in
the same browser cannot press panic. GET /state gives the same data as JSON (scripts,
tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSMsgType, web
from rtmidi.midiconstants import ALL_NOTES_OFF, CONTROL_CHANGE, NOTE_OFF, NOTE_ON

from livegen import presets
from livegen.config import PRESET_SOURCE, split_scope
from livegen.errors import LivegenError
from livegen.inputs.page import PageInput
from livegen.output import RELEASE_TAG_PREFIX
from livegen.stats import Samples
from livegen.timeline import Event, Timeline

log = logging.getLogger(__name__)

TAP_SIZE = 4096        # events the output thread remembers for the page (~ minutes of notes)
ROLL_SIZE = 16384      # note events the monitor keeps for pages that connect later
HISTORY_S = 12.0       # a page that connects is sent this much of the roll at once
FIGURES_S = 1.0        # how often the figures go out
RATE_WINDOW_S = 1.0    # readings per second are counted over at least this long
LATENESS_RECENT = 2048  # the page's send lateness: over the last this many messages
MAX_MESSAGE = 64 * 1024
# Roll event kinds, as the page reads them: [t, tag, kind, channel, pitch, velocity].
OFF, ON, RELEASE, ALL_OFF = 0, 1, 2, 3
SHARED_TARGETS = ("generator", "pitch", "density", "key", "temperature", "top_p",
                  "velocity", "tempo")


class TappedTimeline(Timeline):
    """A Timeline that remembers the last TAP_SIZE events the output thread took from it.

    `pop_due` runs in the output thread: it stores a reference to each event it hands out
    in a preallocated ring and then counts them, so a reader that reads the count first
    sees only complete slots. `taken_since` runs on the loop.
    """

    def __init__(self, capacity: int = TAP_SIZE) -> None:
        super().__init__()
        self.taken: list[Event | None] = [None] * capacity
        self.taken_count = 0

    def pop_due(self, now: float) -> list[Event]:
        due = super().pop_due(now)
        if due:
            ring, n = self.taken, self.taken_count
            size = len(ring)
            for event in due:
                ring[n % size] = event
                n += 1
            self.taken_count = n
        return due

    def taken_since(self, cursor: int) -> tuple[list[Event], int]:
        """The events taken since count `cursor`, oldest first, and the count now. Those
        the ring no longer holds (the reader fell a whole ring behind) are skipped."""
        count, size = self.taken_count, len(self.taken)
        start = max(cursor, count - size)
        events = [self.taken[i % size] for i in range(start, count)]
        lapped = self.taken_count - size - start  # overwritten while they were read
        if lapped > 0:
            events = events[lapped:]
        return [e for e in events if e is not None], count


@dataclass(slots=True)
class _Page:
    """One connected page: its socket, how far into the roll it has been sent, and the
    send in flight (a slow page skips frames; it is never waited for)."""

    socket: web.WebSocketResponse
    roll_cursor: int
    sending: asyncio.Future[None] | None = None
    skipped: int = 0
    drivers_sent: int = -1  # the version of the drivers table it has


@dataclass(slots=True)
class MonitorStats:
    frame_ms: Samples = field(default_factory=lambda: Samples(4096))  # building + encoding
    frames: int = 0
    skipped: int = 0
    actions: int = 0


class Monitor:
    """The page's server on the engine's loop: `await start()`, then `await close()`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cfg = engine.cfg.monitor
        self.pages: list[_Page] = []
        self.address: tuple[str, int] | None = None
        self.stats = MonitorStats()
        self.sliders: dict[str, float] = {}  # the page input's last values, for every page
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._roll: deque[list[Any]] = deque(maxlen=ROLL_SIZE)
        self._roll_count = 0       # note events ever put in the roll
        self._tap_cursor = 0       # how far into the timeline's tap the roll has read
        # Readings per second, by input: (when, readings then, the rate over the last
        # window of at least RATE_WINDOW_S).
        self._rates: dict[str, tuple[float, int, float | None]] = {}
        self._figures: dict[str, Any] = {}
        self._figures_at = -math.inf
        # What a frame repeats from the last, encoded once: the controls (by version) and
        # the drivers table (sent to a page only when it changed).
        self._controls_version = -1
        self._controls_json = "{}"
        self._drivers: list[dict[str, Any]] = []
        self._drivers_json = "[]"
        self._drivers_version = 0

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}/" if self.address else ""

    async def start(self) -> None:
        """Serve the page. A port that cannot be had is one error line; the music plays on."""
        app = web.Application(client_max_size=MAX_MESSAGE)
        app.router.add_get("/", self._page)
        app.router.add_get("/state", self._state)
        app.router.add_get("/ws", self._socket)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            log.error("monitor: cannot serve on %s:%d (%s); playing on without the page "
                      "(free the port, or set another [monitor] port)", self.cfg.host,
                      self.cfg.port, exc.strerror or exc)
            return
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.address = (host, port)
        self._tap_cursor = getattr(self.engine.timeline, "taken_count", 0)
        log.info("monitor: the page is at %s", self.url)

    async def close(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        for page in list(self.pages):
            with contextlib.suppress(Exception):
                await page.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ HTTP

    async def _page(self, request: web.Request) -> web.Response:
        html = importlib.resources.files("livegen").joinpath("monitor.html").read_text(
            encoding="utf-8")
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _state(self, request: web.Request) -> web.Response:
        self._read_tap()
        state = {**self.hello(), **self.frame_state(), "figures": self.figures()}
        return web.json_response(state)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            log.warning("monitor: refused a WebSocket from %s (not this page's origin)",
                        origin)
            raise web.HTTPForbidden(text="livegen monitor: the WebSocket is for the page "
                                         "this server serves")
        # No compression: on loopback it would only cost the loop time.
        socket = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_MESSAGE,
                                       compress=False)
        await socket.prepare(request)
        self._read_tap()
        since = self._now() - HISTORY_S
        backlog = sum(1 for event in self._roll if event[0] >= since)
        page = _Page(socket, self._roll_count - backlog)
        await socket.send_str(json.dumps({"type": "hello", **self.hello()}))
        self.pages.append(page)
        log.info("monitor: a page connected (%d open)", len(self.pages))
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.get_running_loop().create_task(self._push(),
                                                                  name="monitor-push")
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                reply = self.act(message.data, time.monotonic())
                if reply is not None:
                    await socket.send_str(json.dumps(reply))
        finally:
            self.pages.remove(page)
            log.info("monitor: a page left (%d open)", len(self.pages))
        return socket

    # ------------------------------------------------------------ the push

    async def _push(self) -> None:
        """While pages are open: sample, build and send a frame to each, rate_hz a second."""
        period = 1.0 / self.cfg.rate_hz
        loop = asyncio.get_running_loop()
        budget = self.engine.cfg.engine.latency_budget_ms / 1e3
        while self.pages:
            # The music first: while a control change is being planned (within the latency
            # budget of its reading) the frame waits, so the loop holds the GIL then as
            # little as it can (on a loaded machine a thread preempted while holding it
            # stalls the inference thread for a whole time slice).
            wait = self.engine.mapper.controls.t + budget - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.perf_counter()
            self._read_tap()
            # What every page gets is encoded once; the events (and the drivers table,
            # when it changed) once for each page that is at a different place.
            shared = self._shared_frame()
            if loop.time() - self._figures_at >= FIGURES_S:
                self._figures_at = loop.time()
                shared += ',"figures":' + _compact(self.figures())
            texts: dict[tuple[int, bool], str] = {}
            for page in list(self.pages):
                if page.sending is not None and not page.sending.done():
                    page.skipped += 1
                    self.stats.skipped += 1
                    continue
                with_drivers = page.drivers_sent != self._drivers_version
                key = (page.roll_cursor, with_drivers)
                if key not in texts:
                    events, _ = self._roll_since(page.roll_cursor)
                    texts[key] = (shared + ',"events":' + _compact(events)
                                  + (',"drivers":' + self._drivers_json if with_drivers
                                     else "") + "}")
                page.roll_cursor, page.drivers_sent = self._roll_count, self._drivers_version
                page.sending = asyncio.ensure_future(page.socket.send_str(texts[key]))
                page.sending.add_done_callback(_quiet)
            self.stats.frames += 1
            self.stats.frame_ms.record(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, period - (time.perf_counter() - started)))

    def _now(self) -> float:
        return time.monotonic() - self.engine.origin

    def _read_tap(self) -> None:
        """Move what the output took from the plan since the last look into the roll."""
        timeline = self.engine.timeline
        if not isinstance(timeline, TappedTimeline):
            return
        events, self._tap_cursor = timeline.taken_since(self._tap_cursor)
        origin = self.engine.origin
        for due, _seq, message, tag in events:
            t = round(due - origin, 4)
            if not message:
                if tag.startswith(RELEASE_TAG_PREFIX):
                    self._add([t, tag[len(RELEASE_TAG_PREFIX):], RELEASE, 0, 0, 0])
                continue
            kind = message[0] & 0xF0
            channel = message[0] & 0x0F
            if kind in (NOTE_ON, NOTE_OFF) and len(message) == 3:
                on = kind == NOTE_ON and message[2] > 0
                self._add([t, tag, ON if on else OFF, channel + 1, message[1], message[2]])
            elif kind == CONTROL_CHANGE and len(message) == 3 and message[1] == ALL_NOTES_OFF:
                self._add([t, tag, ALL_OFF, channel + 1, 0, 0])

    def _add(self, event: list[Any]) -> None:
        self._roll.append(event)
        self._roll_count += 1

    def _roll_since(self, cursor: int) -> tuple[list[list[Any]], int]:
        held = len(self._roll)
        first = self._roll_count - held  # the count of the oldest event still held
        start = max(cursor, first)
        events = [self._roll[i - first] for i in range(start, self._roll_count)]
        return events, self._roll_count

    # ------------------------------------------------------------ what a frame holds

    def hello(self) -> dict[str, Any]:
        """What a page needs once: the generators, the sliders, the presets."""
        engine = self.engine
        cfg = engine.cfg
        rules = {rule.spec.source: rule.spec.target for rule in engine.mapper.rules}
        page = self._page_input()
        sliders = [{"key": key, "target": rules.get(f"{page.name}.{key}", ""),
                    "value": self.sliders.get(key)}
                   for key in (page.config.keys if page is not None else ())]
        try:
            stored = presets.load(cfg.engine.presets)
        except LivegenError as exc:
            stored = {}
            log.warning("monitor: %s", exc)
        return {
            "generators": list(cfg.playing),
            "mode": cfg.engine.mode,
            "channels": {name: cfg.generator(name).channel or cfg.output.channel
                         for name in cfg.playing},
            "sliders": sliders,
            "page_input": page.name if page is not None else None,
            "presets": [[n, str(p.get("name", f"preset {n}"))] for n, p in sorted(stored.items())],
            "max_note_s": cfg.output.max_note_s,
            "beats_per_bar": cfg.clock.beats_per_bar,
            "rate_hz": self.cfg.rate_hz,
        }

    def frame_state(self) -> dict[str, Any]:
        """The fast part of a frame: the time, the controls and their drivers, the clock,
        the surface's state."""
        engine = self.engine
        controls = engine.mapper.controls
        return {
            "now": round(time.monotonic() - engine.origin, 4),
            "controls": {**presets.control_values(controls), "version": controls.version},
            "drivers": self.drivers(with_values=True),
            "clock": self._clock(),
            "state": engine.surface_state(),
        }

    def _shared_frame(self) -> str:
        """A frame's JSON without its closing brace: what every page gets this time."""
        engine = self.engine
        controls = engine.mapper.controls
        if controls.version != self._controls_version:
            self._controls_version = controls.version
            self._controls_json = _compact({**presets.control_values(controls),
                                            "version": controls.version})
        drivers = self.drivers(with_values=False)
        if drivers != self._drivers:
            self._drivers, self._drivers_json = drivers, _compact(drivers)
            self._drivers_version += 1
        now = round(time.monotonic() - engine.origin, 4)
        return (f'{{"type":"frame","now":{now},"controls":{self._controls_json},'
                f'"clock":{_compact(self._clock())},'
                f'"state":{_compact(engine.surface_state())}')

    def _clock(self) -> dict[str, Any]:
        clock = self.engine.clock
        grid = clock.grid
        beat = grid.beat_at(time.monotonic())
        return {"bpm": round(clock.bpm, 2), "running": clock.running,
                "following": clock.following,
                "bar": math.floor(beat / grid.beats_per_bar) + 1,
                "beat": math.floor(beat % grid.beats_per_bar) + 1}

    def drivers(self, with_values: bool = True) -> list[dict[str, Any]]:
        """Each control and what drives it: a rule's source, a preset, or its neutral.
        Without values, a shared target's row has none (a page reads the controls)."""
        mapper = self.engine.mapper
        controls = mapper.controls
        rules = {rule.spec.target: rule for rule in mapper.rules}
        rows = []
        targets = list(SHARED_TARGETS) + [t for t in rules if t not in SHARED_TARGETS]
        for target in targets:
            rule = rules.get(target)
            scope, bare = split_scope(target)
            slot = rule.slot if rule is not None else (None, target, None)
            if slot in mapper.recalled:
                by, value = PRESET_SOURCE, mapper.recalled[slot]
            elif rule is not None and rule.output is not None:
                by, value = rule.spec.source, rule.output
            else:
                by = f"{rule.spec.source} (silent: neutral)" if rule is not None else "neutral"
                value = None
            if scope is None and bare in SHARED_TARGETS:
                value = getattr(controls, bare) if with_values else None
            rows.append({"target": target, "value": _rounded(value), "by": by})
        return rows

    def figures(self) -> dict[str, Any]:
        """The slow part: inputs' health, generators' figures, the output's lateness."""
        engine = self.engine
        now = time.monotonic()
        inputs = {}
        for name, (source, _task) in engine.inputs.items():
            readings = source.stats.readings
            then, before, rate = self._rates.get(name, (now, readings, None))
            if now - then >= RATE_WINDOW_S:
                rate = (readings - before) / (now - then)
                self._rates[name] = (now, readings, rate)
            elif name not in self._rates:
                self._rates[name] = (now, readings, None)
            inputs[name] = {"type": type(source).__name__.removesuffix("Input").lower(),
                            "per_s": None if rate is None else round(rate, 1),
                            "readings": readings,
                            "dropped": dict(source.stats.dropped),
                            "restarts": source.stats.restarts,
                            "error": source.stats.last_error}
        generators = {name: player.figures() for name, player in engine.players.items()}
        output: dict[str, Any] = {}
        if engine.output is not None:
            # Not output.stats(): its percentiles over the whole 65536-message ring would
            # hold the loop for milliseconds once the show has run a while.
            recent = engine.output.lateness()[-LATENESS_RECENT:]
            if recent.size:
                p50, p99 = np.percentile(recent, [50, 99]) * 1e3
                output["lateness_ms"] = {"p50": round(float(p50), 3),
                                         "p99": round(float(p99), 3),
                                         "max": round(float(recent.max() * 1e3), 3),
                                         "n": int(recent.size)}
            output.update(taken=getattr(engine.timeline, "taken_count", 0),
                          sinks=engine.output.sink_names)
        frame = self.stats.frame_ms.summary()
        self._figures = {"inputs": inputs, "generators": generators, "output": output,
                         "monitor": {"pages": len(self.pages), "frames": self.stats.frames,
                                     "skipped": self.stats.skipped,
                                     "frame_ms_p99": round(frame.get("p99", 0.0), 3)}}
        return self._figures

    # ------------------------------------------------------------ from the page

    def act(self, text: str, t: float) -> dict[str, Any] | None:
        """Do what a page asks (a JSON object with `do`); the reply says how it went.
        Slider moves are not answered (the next frame shows them)."""
        try:
            action = json.loads(text)
            what = action["do"]
        except (ValueError, KeyError, TypeError):
            return {"type": "reply", "ok": False,
                    "message": "not an action: send JSON like {\"do\": \"panic\"}"}
        self.stats.actions += 1
        engine = self.engine
        try:
            if what == "slider":
                self._slide(action, t)
                return None
            if what == "panic":
                engine.panic()
            elif what == "pause":
                engine.pause()
            elif what == "resume":
                engine.resume()
            elif what == "switch":
                engine.switch(str(action.get("generator", "")), t)
            elif what in ("store", "recall"):
                number = action.get("preset")
                if isinstance(number, bool) or not isinstance(number, int):
                    raise LivegenError(f"{what}: give a preset number 1..128")
                if what == "store":
                    engine.store_preset(number, str(action.get("name", "")))
                else:
                    engine.recall_preset(number, t)
            else:
                raise LivegenError(f"unknown action {what!r} (panic, pause, resume, switch, "
                                   "store, recall, slider)")
        except LivegenError as exc:
            log.warning("monitor: %s", exc)
            return {"type": "reply", "do": what, "ok": False, "message": str(exc)}
        reply: dict[str, Any] = {"type": "reply", "do": what, "ok": True}
        if what == "store":
            reply["presets"] = self.hello()["presets"]
        return reply

    def _slide(self, action: dict[str, Any], t: float) -> None:
        page = self._page_input()
        if page is None:
            raise LivegenError("no slider input: add [inputs.page] type = \"page\" and [[map]] "
                               "rules from page.KEY")
        key, value = action.get("key"), action.get("value")
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(
                value, int | float) or not page.push({key: float(value)}, t):
            raise LivegenError(f"slider: {key!r} = {value!r} is not one of the page's "
                               f"sliders ({', '.join(page.config.keys)}) at 0..1")
        self.sliders[key] = float(value)

    def _page_input(self) -> PageInput | None:
        for source, _task in self.engine.inputs.values():
            if isinstance(source, PageInput):
                return source
        return None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _quiet(sending: asyncio.Future[None]) -> None:
    """A page that went away while a frame was on its way: nothing to do about it."""
    if not sending.cancelled():
        sending.exception()
