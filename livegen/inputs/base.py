"""What every input yields, the small interface each input family offers (and the `Check`
it answers `livegen devices`), and the supervisor that keeps inputs alive.

An input is anything with a `name` and an async `readings()` iterator. Inputs whose drivers
block (a camera, a serial port) read in a thread of their own (`ThreadedInput`) and hand
each reading to the event loop with `loop.call_soon_threadsafe`. An input that fails is
restarted with exponential backoff by `supervise`; the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


# What a value key looks like: names of letters, digits, '_' and '-', joined by dots
# ('hand.y', 'cc.74', 'fader'); a map rule's source is INPUT.KEY.
VALUE_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True, slots=True)
class Reading:
    """One observation from one input: `values` maps keys like 'hand.y' to floats."""

    source: str
    t: float  # time.monotonic() when the data entered the process
    values: Mapping[str, float]


@dataclass(slots=True)
class InputStats:
    """Counters an input keeps; `dropped` counts bad data by reason ('nan', 'garbage').

    `figures` holds an input's own measurements by name (a camera's 'fps' and
    'process_ms_p99'), updated from its reader thread, read by stats reports.
    """

    readings: int = 0
    restarts: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    last_error: str = ""
    figures: dict[str, float] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n


class Input(Protocol):
    name: str
    stats: InputStats

    def readings(self) -> AsyncIterator[Reading]: ...


@dataclass(frozen=True, slots=True)
class Check:
    """Whether an input could start now, and a line that says why or why not: what a
    family's config answers `livegen devices` (InputConfig.reachable)."""

    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'reachable' if self.ok else 'NOT reachable'}: {self.detail}"


def check_serial_device(port: str) -> Check:
    """Whether `port` is a serial device this user may open (a JeVois, an EMG dongle)."""
    path = Path(port)
    if not path.exists():
        return Check(False, f"{port}: no such device; plug it in, and for the stable "
                            "/dev/livegen-* names install devices/99-livegen.rules")
    target = os.path.realpath(path)
    if not stat.S_ISCHR(os.stat(path).st_mode):
        return Check(False, f"{port} -> {target} is not a serial device")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(False, f"{port}: no permission; add your user to group 'dialout' "
                            "and log in again")
    shown = port if target == port else f"{port} -> {target}"
    return Check(True, shown)


class InputEnded(Exception):
    """The input's source ended (a file ran out, a device went away): restart it."""


class DeviceAbsent(Exception):
    """The input's device is not there (unplugged, or not plugged in yet). The supervisor
    looks for it again every ABSENT_RETRY_S, however long it has been missing, so that a
    controller plugged in mid-show is heard within seconds."""


ABSENT_RETRY_S = 2.0


def finite_values(values: Mapping[str, float], stats: InputStats) -> dict[str, float] | None:
    """The values as floats, or None (counted as dropped) when any is NaN or infinite."""
    clean = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            stats.drop("not a number")
            return None
        if not math.isfinite(number):
            stats.drop("nan")
            return None
        clean[key] = number
    return clean


class LineReader:
    """Splits a serial byte stream into text lines (a JeVois, an Arduino); over-long runs
    without a newline are counted as garbage and dropped."""

    max_line = 256

    def __init__(self, stats: InputStats) -> None:
        self.stats = stats
        self.pending = b""

    def feed(self, data: bytes) -> list[str]:
        """The complete lines in `pending + data`, decoded; keeps the unfinished rest."""
        *lines, self.pending = (self.pending + data).split(b"\n")
        if len(self.pending) > self.max_line:
            self.stats.drop("garbage")
            self.pending = b""
        text = []
        for line in lines:
            if len(line) > self.max_line:
                self.stats.drop("garbage")
                continue
            stripped = line.strip(b"\r\x00 \t")
            if stripped:
                text.append(stripped.decode("ascii", errors="replace"))
        return text


class Emit(Protocol):
    """How a reader thread hands over one observation. `t` is when its data entered the
    process (a camera frame's arrival, before tracking); None means now."""

    def __call__(self, values: Mapping[str, float], t: float | None = None) -> None: ...


class ThreadedInput:
    """Base for inputs whose driver blocks: subclasses implement `run(emit, stopping)`.

    `run` is called in a daemon thread; it calls `emit(values)` (or `emit(values, t)`) for
    each observation and returns (or raises) when its source ends or fails, which ends
    `readings()` with an exception so the supervisor restarts the input. It must return
    soon after `stopping.is_set()`.
    """

    name: str
    queue_size = 256  # readings buffered while the loop is busy; the oldest are dropped

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = InputStats()

    def run(self, emit: Emit, stopping: threading.Event) -> None:
        raise NotImplementedError

    async def readings(self) -> AsyncIterator[Reading]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Reading | BaseException] = asyncio.Queue(self.queue_size)
        stopping = threading.Event()

        def put(item: Reading | BaseException) -> None:
            if queue.full():
                queue.get_nowait()
                self.stats.drop("overflow")
            queue.put_nowait(item)

        def emit(values: Mapping[str, float], t: float | None = None) -> None:
            if t is None:
                t = time.monotonic()
            clean = finite_values(values, self.stats)
            if clean is not None and not stopping.is_set():
                loop.call_soon_threadsafe(put, Reading(self.name, t, clean))

        def body() -> None:
            try:
                self.run(emit, stopping)
                outcome: BaseException = InputEnded(f"{self.name}: source ended")
            except Exception as exc:  # handed to the supervisor, which logs and restarts
                outcome = exc
            if not stopping.is_set():
                # The loop may have closed while the driver ran (shutdown): nobody is left to
                # tell, and a traceback from a dying thread would only be noise.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(put, outcome)

        thread = threading.Thread(target=body, name=f"input-{self.name}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopping.set()
            # The thread notices `stopping` within its own read timeout; do not block the
            # loop waiting for it.
            await asyncio.to_thread(thread.join, 2.0)
            if thread.is_alive():
                log.warning("input %s: reader thread did not stop within 2 s", self.name)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: first, first*factor, ... up to cap; reset after `healthy_s`."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    healthy_s: float = 10.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * self.factor ** max(0, failures - 1))


async def supervise(source: Input, deliver: Callable[[Reading], None],
                    backoff: Backoff = Backoff()) -> None:
    """Run `source` forever, passing each reading to `deliver`; restart it on failure.

    Returns only when cancelled. A run that lasted `backoff.healthy_s` resets the backoff,
    so a flaky cable does not push the delay to its cap for good.
    """
    failures = 0
    while True:
        started = time.monotonic()
        try:
            async for reading in source.readings():
                source.stats.readings += 1
                deliver(reading)
            raise InputEnded(f"{source.name}: source ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            source.stats.last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - started >= backoff.healthy_s:
                failures = 0
            failures += 1
            source.stats.restarts += 1
            delay = backoff.delay(failures)
            if isinstance(exc, DeviceAbsent):
                delay = min(delay, ABSENT_RETRY_S)
                # Said once, not every ABSENT_RETRY_S while the device stays away.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "input %s: %s; looking for it every %g s", source.name, exc,
                        ABSENT_RETRY_S)
            else:
                log.warning("input %s failed (%s); restarting in %.3g s", source.name,
                            source.stats.last_error, delay)
            await asyncio.sleep(delay)
