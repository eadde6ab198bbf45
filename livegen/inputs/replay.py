"""Record every Reading to a JSONL trace, and play a trace back as an input.

A trace starts with a header line, then one line per reading:
    {"livegen_trace": 1, "created": "2026-11-22T17:00:00", "inputs": ["cam", "arm"]}
    {"t": 0.033412, "source": "cam", "values": {"hand.x": 0.41, "hand.y": 0.77}}
`t` is seconds since the engine started. A replay input named NAME plays back the
readings whose source is NAME at their original times, so swapping `type = "camera"` for
`type = "replay"` (or `livegen run --replay TRACE`) reruns a performance without hardware.
Replayed readings carry their nominal time, so the same trace, seed and config give the
same music.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
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

    async def readings(self) -> AsyncIterator[Reading]:
        origin = self.origin if self.origin is not None else time.monotonic()
        while True:
            for t, _source, values in self.records:
                due = origin + t / self.config.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                clean = finite_values(values, self.stats)
                if clean is not None:
                    yield Reading(self.name, due, clean)
            if not self.config.loop:
                # The trace is over; the input stays quiet (its controls go stale).
                await asyncio.Event().wait()
            origin += (self.records[-1][0] if self.records else 1.0) / self.config.speed
