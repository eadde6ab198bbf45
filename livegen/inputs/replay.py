"""Record every Reading to a JSONL trace, and play a trace back as an input.

A trace starts with a header line, then one line per reading:
    {"livegen_trace": 1, "created": "2026-11-22T17:00:00", "inputs": ["cam", "arm"]}
    {"t": 0.033412, "source": "cam", "values": {"hand.x": 0.41, "hand.y": 0.77}}
`t` is seconds since the music's time zero (the engine's origin). A replay input named
NAME plays back the readings whose source is NAME at their original times, so swapping
`type = "camera"` for `type = "replay"` (or `livegen run --replay TRACE`) reruns a
performance without hardware. A replayed reading carries its nominal time, origin + t, not
the moment the loop woke to hand it over.

When every input of a run is a replay, the engine plays them as one `Replay`: all their
readings merged in trace order, handed over a little before they are due (see
engine.py), so that the same trace, seed and config give the same music on a loaded
machine too, and `livegen render` can play them on a virtual clock.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from livegen.config import ReplayInputConfig
from livegen.errors import LivegenError
from livegen.inputs.base import InputStats, Reading, finite_values

log = logging.getLogger(__name__)

TRACE_VERSION = 1


class TraceWriter:
    """Appends readings to a JSONL trace; line-buffered so a killed run keeps its trace."""

    def __init__(self, path: Path, origin: float, inputs: Iterable[str]) -> None:
        self.origin = origin
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file: IO[str] = path.open("w", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise LivegenError(f"cannot write the trace {path}: {exc.strerror}") from None
        header = {"livegen_trace": TRACE_VERSION,
                  "created": datetime.datetime.now().isoformat(timespec="seconds"),
                  "inputs": sorted(inputs)}
        self.file.write(json.dumps(header) + "\n")

    def write(self, reading: Reading) -> None:
        record = {"t": round(reading.t - self.origin, 6), "source": reading.source,
                  "values": dict(reading.values)}
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.file.close()


def read_trace(path: Path) -> list[tuple[float, str, dict[str, float]]]:
    """All records of a trace as (t, source, values), in time order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LivegenError(f"cannot read the trace {path}: {exc.strerror}; record one with "
                           "`livegen run --record PATH`") from None
    if not lines or '"livegen_trace"' not in lines[0]:
        raise LivegenError(f"{path} is not a livegen trace (no header line); record one with "
                           "`livegen run --record PATH`")
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            item = json.loads(line)
            records.append((float(item["t"]), str(item["source"]), dict(item["values"])))
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: not a trace record, skipped", path, number)
    records.sort(key=lambda r: r[0])
    return records


class ReplayInput:
    """Plays back the readings of one source from a trace, at their recorded times."""

    def __init__(self, name: str, config: ReplayInputConfig, source: str | None = None) -> None:
        self.name = name
        self.config = config
        self.source = source or name  # the recorded input this one stands in for
        self.stats = InputStats()
        self.origin: float | None = None  # set by the engine to its start time
        self.records = [r for r in read_trace(config.path) if r[1] == self.source]
        if not self.records:
            log.warning("trace %s holds no readings from %r", config.path, self.source)

    @property
    def length(self) -> float:
        """Seconds from time zero to this input's last reading (one pass, at its speed)."""
        return self.records[-1][0] / self.config.speed if self.records else 0.0

    def stamped(self, origin: float) -> Iterator[Reading]:
        """Every reading, in time order, stamped with its due time: origin + t / speed
        (looping if configured). Readings with a value that is not a finite number are
        dropped and counted."""
        start = origin
        while True:
            for t, _source, values in self.records:
                clean = finite_values(values, self.stats)
                if clean is not None:
                    yield Reading(self.name, start + t / self.config.speed, clean)
            if not self.config.loop or not self.records:
                return
            # One pass lasts until the last reading; a trace whose readings all sit at 0 s
            # repeats every second (not without time passing).
            start += (self.records[-1][0] or 1.0) / self.config.speed

    async def readings(self) -> AsyncIterator[Reading]:
        """The readings at their due times, for a run that mixes replays with live
        inputs (a run of replays only plays them as one `Replay`)."""
        origin = self.origin if self.origin is not None else time.monotonic()
        for reading in self.stamped(origin):
            delay = reading.t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield reading
        # The trace is over; the input stays quiet (its controls go stale).
        await asyncio.Event().wait()


class Replay:
    """The readings of several replay inputs as one stream in trace order (readings at
    the same time in the order the inputs are given), each counted in its input's stats
    as the supervisor counts a live input's."""

    def __init__(self, inputs: Sequence[ReplayInput], origin: float) -> None:
        self.inputs = {source.name: source for source in inputs}
        self.origin = origin
        # heapq.merge is lazy (looping inputs never end) and stable: ties keep input order.
        self._merged = heapq.merge(*(source.stamped(origin) for source in inputs),
                                   key=lambda reading: reading.t)
        self._next = next(self._merged, None)

    @property
    def length(self) -> float:
        """Seconds from time zero to the last reading of one pass through the trace."""
        return max((source.length for source in self.inputs.values()), default=0.0)

    def peek(self) -> Reading | None:
        """The next reading, or None when the trace is over."""
        return self._next

    def pop(self) -> Reading:
        """Take the next reading (peek first: there must be one)."""
        reading = self._next
        if reading is None:
            raise IndexError("the replay is over")
        self._next = next(self._merged, None)
        self.inputs[reading.source].stats.readings += 1
        return reading
