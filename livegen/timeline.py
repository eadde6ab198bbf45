"""The plan of pending MIDI: messages with absolute due times, shared between threads.

Generators (in the event loop or their inference threads) add planned messages and roll
them back when the controls change; the output thread takes what is due. Due times are
`time.monotonic()` seconds. A message is a tuple of ints, `(status, data1, data2)`, or
shorter for the messages that are (program change and channel pressure take one data
byte, real-time messages such as clock none): no per-event objects beyond the one tuple
each event is stored as.

Events with the same due time come out in the order they were added, so a note-off and a
note-on of the same pitch planned for the same instant keep their meaning.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

Message = tuple[int, ...]


class Event(NamedTuple):
    """One planned message. Compares by (due, seq): ties keep insertion order."""

    due: float
    seq: int
    message: Message
    tag: str


class Timeline:
    """A thread-safe plan of timed MIDI messages.

    Writers: `add`, `add_many`, `drop_after`, `drop_tag`. The one reader (the output thread)
    uses `wait` to sleep until the next due time and `pop_due` to take what is due.
    """

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = itertools.count()
        # The condition's lock guards the heap; waiters are woken when the earliest due
        # time moves earlier (or on wake()), never on every add.
        self._changed = threading.Condition(threading.Lock())
        self._woken = False

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, message: Message, tag: str = "") -> None:
        """Plan `message` for monotonic time `due` under `tag` (the generator's name)."""
        event = Event(due, next(self._seq), message, tag)
        with self._changed:
            heapq.heappush(self._heap, event)
            if self._heap[0] is event:
                self._changed.notify_all()

    def add_many(self, events: Iterable[tuple[float, Message]], tag: str = "") -> None:
        """Plan several `(due, message)` pairs under one tag, in the order given."""
        with self._changed:
            head = self._heap[0] if self._heap else None
            for due, message in events:
                heapq.heappush(self._heap, Event(due, next(self._seq), message, tag))
            if self._heap and self._heap[0] is not head:
                self._changed.notify_all()

    def drop_after(self, t: float, tag: str) -> list[Event]:
        """Roll back: remove `tag`'s events due after `t`; return them in due order."""
        return self._drop(lambda e: e.tag == tag and e.due > t)

    def drop_tag(self, tag: str) -> list[Event]:
        """Remove every pending event of `tag`; return them in due order."""
        return self._drop(lambda e: e.tag == tag)

    def clear(self) -> list[Event]:
        """Remove every pending event; return them in due order."""
        return self._drop(lambda e: True)

    def _drop(self, doomed: Callable[[Event], bool]) -> list[Event]:
        dropped: list[Event] = []
        kept: list[Event] = []
        with self._changed:
            for event in self._heap:
                (dropped if doomed(event) else kept).append(event)
            if dropped:
                heapq.heapify(kept)
                self._heap = kept
        dropped.sort()
        return dropped

    def next_due(self) -> float | None:
        """The due time of the earliest pending event, or None when the plan is empty."""
        with self._changed:
            return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> list[Event]:
        """Take every event due at or before `now`, in order (due time, then insertion)."""
        due: list[Event] = []
        with self._changed:
            heap = self._heap
            while heap and heap[0].due <= now:
                due.append(heapq.heappop(heap))
        return due

    def wait(self, lead: float = 0.0, timeout: float | None = None) -> float | None:
        """Sleep until the earliest event is due within `lead` seconds.

        Returns early when `timeout` seconds pass or `wake()` is called. An event added
        while waiting that is due sooner than the one being waited for shortens the wait.
        Returns the earliest due time (None when the plan is empty); the caller compares
        it with the clock to see whether it woke for an event.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                if self._woken:
                    self._woken = False
                    break
                now = time.monotonic()
                head = self._heap[0].due if self._heap else None
                if head is not None and head - lead <= now:
                    break
                until = None if head is None else head - lead
                if deadline is not None:
                    if deadline <= now:
                        break
                    until = deadline if until is None else min(until, deadline)
                self._changed.wait(None if until is None else until - now)
            return self._heap[0].due if self._heap else None

    def wake(self) -> None:
        """Make the current (or the next) `wait` return at once."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()
