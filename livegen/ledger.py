"""The note ledger: which notes are sounding, since when, and who started them.

Every note that is turned on is turned off. The ledger is what makes that true: the output
asks it, for each note-on and note-off it is about to send, what really goes out (a note
struck again while it sounds is ended first, and one of its note-offs is then swallowed so
it cannot cut the new note short; a note-off for a note already ended is dropped), and it
hands out the notes to end when a generator is released, when a note has sounded too
long, and at stop.

Preallocated: one slot per (channel, pitch), 2,048 in all, so a note-on allocates nothing
(the output thread runs it for every note). Used by the output thread and, on a virtual
clock, by `livegen render`, so both play the same.
"""

from __future__ import annotations

import numpy as np
from rtmidi.midiconstants import NOTE_OFF

from livegen.timeline import Message

SLOTS = 16 * 128


def note_slot(status: int, pitch: int) -> int:
    """The ledger slot of a note: channel << 7 | pitch."""
    return (status & 0x0F) << 7 | pitch


def note_off(key: int) -> Message:
    return (NOTE_OFF | key >> 7, key & 0x7F, 0)


class NoteLedger:
    """Sounding notes by slot: how many times struck, when last struck, by which tag."""

    def __init__(self) -> None:
        self._count = np.zeros(SLOTS, np.int32)
        self._since = np.zeros(SLOTS, np.float64)
        self._tag: list[str] = [""] * SLOTS
        self._sounding = 0

    def __len__(self) -> int:
        """How many notes are sounding."""
        return self._sounding

    def strike(self, key: int, t: float, tag: str) -> bool:
        """A note-on for slot `key` at time t, started by `tag`. True when the note was
        already sounding: the caller sends a note-off first."""
        count = int(self._count[key])
        self._count[key] = count + 1
        self._since[key] = t
        self._tag[key] = tag
        if count == 0:
            self._sounding += 1
        return count > 0

    def lift(self, key: int) -> bool:
        """A note-off for slot `key`. True when it is to be sent: the note sounds and this
        is the last of its note-offs (one per strike)."""
        count = int(self._count[key])
        if count == 0:
            return False  # already ended: max_note_s, a release, or sink recovery
        self._count[key] = count - 1
        if count > 1:
            return False
        self._sounding -= 1
        return True

    def _end(self, keys: np.ndarray) -> list[Message]:
        self._count[keys] = 0
        self._sounding -= keys.size
        return [note_off(int(key)) for key in keys]

    def held_since(self, oldest: float) -> list[tuple[float, Message]]:
        """End the notes struck at or before `oldest` (held too long): when each was
        struck, and its note-off, oldest first."""
        if not self._sounding:
            return []
        keys = np.flatnonzero((self._count > 0) & (self._since <= oldest))
        keys = keys[np.argsort(self._since[keys], kind="stable")]
        struck = self._since[keys].tolist()
        return list(zip(struck, self._end(keys), strict=True))

    def release(self, tag: str) -> list[Message]:
        """End the notes `tag` started: their note-offs."""
        if not self._sounding:
            return []
        keys = np.flatnonzero(self._count > 0)
        return self._end(np.array([k for k in keys if self._tag[k] == tag], np.int64))

    def release_all(self) -> list[Message]:
        """End every sounding note: their note-offs."""
        return self._end(np.flatnonzero(self._count > 0))
