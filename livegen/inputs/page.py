"""The monitor page's sliders as an input (`[inputs.NAME] type = "page"`).

Each slider on the page is one key of this input (config `keys`, e.g. pitch, density),
0..1. The monitor (livegen/monitor.py) hands each move over with `push`, stamped with the
moment its WebSocket message arrived; from there it is a Reading like any other: mapped
by [[map]] rules (`source = "page.pitch"`), recorded with --record, counted in the stats.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from livegen.config import InputConfig, setting
from livegen.inputs.base import VALUE_KEY, InputStats, Reading

log = logging.getLogger(__name__)

PAGE_KEYS = ("pitch", "density", "temperature", "velocity")


@dataclass(frozen=True, slots=True)
class PageInputConfig(InputConfig):
    """The monitor page's sliders as an input: each key is a slider (0..1) whose moves
    become readings of this input, mapped by [[map]] rules like any other input's."""
    keys: tuple[str, ...] = setting(PAGE_KEYS, doc="one slider per key, e.g. 'pitch' (a map "
                                                   "source NAME.pitch)")
    # A slider stays where it was left, like a knob: its controls hold.
    stale_after: float = setting(3600.0, lo=0.05, hi=3600.0,
                                 doc="seconds of silence before its controls go neutral")

    def offered_keys(self) -> tuple[str, ...]:
        return self.keys

    def check(self, path: str, problems: list[str]) -> None:
        for i, key in enumerate(self.keys):
            if not VALUE_KEY.fullmatch(key):
                problems.append(f"{path}.keys[{i}]: {key!r} is not a key name; use letters, "
                                "digits, '_', '-' and dots, e.g. 'pitch'")
        if len(set(self.keys)) != len(self.keys):
            problems.append(f"{path}.keys: a key is named twice; give each slider once")


class PageInput:
    """Readings from the monitor page's sliders; `push` is called on the event loop."""

    queue_size = 256  # slider moves buffered while the loop is busy; the oldest are dropped

    def __init__(self, name: str, config: PageInputConfig) -> None:
        self.name = name
        self.config = config
        self.stats = InputStats()
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(self.queue_size)

    def push(self, values: Mapping[str, float], t: float | None = None) -> bool:
        """Hand over slider values (key -> 0..1); False (counted as dropped) when a key is
        not one of this input's or a value is not a number in 0..1."""
        clean: dict[str, float] = {}
        for key, value in values.items():
            if key not in self.config.keys:
                self.stats.drop("unknown key")
                return False
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.stats.drop("not a number")
                return False
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                self.stats.drop("out of range")
                return False
            clean[key] = float(value)
        if not clean:
            return False
        if self._queue.full():
            self._queue.get_nowait()
            self.stats.drop("overflow")
        self._queue.put_nowait(Reading(self.name, time.monotonic() if t is None else t,
                                       clean))
        return True

    async def readings(self) -> AsyncIterator[Reading]:
        while True:
            yield await self._queue.get()
