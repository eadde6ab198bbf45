"""Music planned in beats, heard in time: a player's messages on their way to the timeline.

A player plans in beats. `BeatPlan` turns each planned message's beat into a due time
through the clock's Grid of the moment (snapped to the quantize grid when asked), puts it
in the timeline under the player's tag, and remembers it until it is due. When the Grid
changes (a tempo, a followed clock's pulse), the messages not yet due are re-timed, so the
music follows the tempo at once with no jump in position and no regeneration; when the
player rolls back, the messages after the cut are withdrawn by their beat, never by their
due time, so quantizing can never keep a withdrawn message or withdraw a kept one.

Re-timing and withdrawing leave alone what is due within `lead` of now: the output thread
may be sending it already. While the transport stands still (a stop, or a followed clock
waiting for its Start) nothing has a time: what is planned is kept back and goes out at its
beat once the transport runs, so a player may plan the music a Continue or a Start will
play before it comes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rtmidi.midiconstants import NOTE_OFF, NOTE_ON

from livegen.clock import Grid
from livegen.timeline import Message, Timeline

# The quantize settings: grid spacing in beats.
QUANTIZE_BEATS: dict[str, float | None] = {"off": None, "1/8": 0.5, "1/16": 0.25,
                                           "1/16t": 1.0 / 6.0}
# A re-time that moves no message by more than this is not worth touching the timeline.
RETIME_TOLERANCE_S = 0.0002
_EPSILON = 1e-9


@dataclass(slots=True)
class _Planned:
    beat: float      # where the player put it
    heard: float     # where it sounds: `beat` on the quantize grid
    message: Message
    due: float       # the due time it was last put in the timeline with


class BeatPlan:
    """One player's messages, planned in beats and published to the timeline."""

    def __init__(self, timeline: Timeline, tag: str, grid: Callable[[], Grid],
                 quantize: str = "off", lead_s: float = 0.005) -> None:
        self.timeline = timeline
        self.tag = tag
        self.grid_of = grid
        self.step = QUANTIZE_BEATS[quantize]
        self.lead_s = lead_s
        self.grid = grid()
        self._entries: deque[_Planned] = deque()
        self._onsets: dict[int, float] = {}  # channel << 7 | pitch -> quantized onset beat

    def heard_beat(self, beat: float, message: Message) -> float:
        """The beat at which a message planned for `beat` sounds: on the quantize grid,
        never earlier than planned (an earlier time could already be past or before a cut),
        a note-off at least one grid step after its note-on."""
        step = self.step
        if step is None:
            return beat
        snapped = math.ceil(beat / step - _EPSILON) * step
        kind = message[0] & 0xF0
        if kind in (NOTE_ON, NOTE_OFF):
            key = (message[0] & 0x0F) << 7 | message[1]
            if kind == NOTE_ON and message[2]:
                self._onsets[key] = snapped
            else:
                onset = self._onsets.get(key)
                if onset is not None and snapped <= onset:
                    snapped = onset + step
        return snapped

    def add(self, events: Iterable[tuple[float, Message]]) -> None:
        """Plan messages at their beats (in the order given). While the transport stands
        still they are kept, with no time yet, and go out when it runs (`follow`)."""
        grid = self.grid
        published = []
        for beat, message in events:
            heard = self.heard_beat(beat, message)
            due = grid.time_at(heard) if grid.running else math.inf
            self._entries.append(_Planned(beat, heard, message, due))
            published.append((due, message))
        if published and grid.running:
            self.timeline.add_many(published, self.tag)

    def withdraw_after(self, beat: float, now: float) -> None:
        """Roll back: forget the messages planned after `beat` and take back those of them
        not yet due."""
        entries = self._entries
        while entries and entries[-1].beat > beat:
            entries.pop()
        self._republish(now)

    def withdraw_all(self, now: float) -> None:
        """Forget everything planned; take back what is not yet due."""
        self._entries.clear()
        self._onsets.clear()
        self._republish(now)

    def follow(self, now: float) -> bool:
        """Take the clock's newest Grid; re-time what is not yet due when it moved any
        of it. True when the Grid changed."""
        grid = self.grid_of()
        if grid is self.grid:
            return False
        old, self.grid = self.grid, grid
        limit = now + self.lead_s
        if not grid.running:
            self._republish(now)  # nothing has a time: take back what is not yet due
            return True
        moved = any(abs(grid.time_at(e.heard) - e.due) > RETIME_TOLERANCE_S
                    for e in self._entries if e.due > limit)
        if moved or not old.running:
            self._republish(now)
        return True

    def _republish(self, now: float) -> None:
        limit = now + self.lead_s
        self.timeline.drop_after(limit, self.tag)
        grid = self.grid
        if not grid.running:  # kept, with no time, until the transport runs again
            for entry in self._entries:
                if entry.due > limit:
                    entry.due = math.inf
            return
        republished = []
        for entry in self._entries:
            if entry.due > limit:  # taken back just now: put it back at its new time
                entry.due = max(grid.time_at(entry.heard), limit)
                republished.append((entry.due, entry.message))
        if republished:
            self.timeline.add_many(republished, self.tag)

    def forget_before(self, t: float) -> None:
        """Drop the bookkeeping of messages due before `t` (sent by now)."""
        entries = self._entries
        while entries and entries[0].due < t:
            entries.popleft()

    @property
    def pending(self) -> int:
        return len(self._entries)
