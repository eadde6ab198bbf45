"""What a segment generator is: a model that makes whole bars of music on the clock's grid.

The DCRNN and the Langevin chorale model are segment generators (DESIGN.md). A segment
player asks for segment n+1 while segment n plays, so it is ready before its bar line; a
generator only turns one `SegmentRequest` into one `Segment`. Time inside a segment is in
beats from the segment's first bar line, so the music follows the clock's tempo wherever
the tempo comes from.

A generator's answer must depend on the request alone (and the generator's seed): the
player may ask for the same bar again under newer controls (a re-plan), and replays must
repeat. Randomness is therefore seeded by (seed, bar index), and whatever the music
continues from comes in the request (`previous`), not from state the generator keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from livegen.clock import Grid
from livegen.control import Controls

STEPS_PER_BEAT = 4  # the 16th-note grid every segment generator thinks in


@dataclass(frozen=True, slots=True)
class SegmentNote:
    """One note of a segment: onset and length in beats from the segment's start."""

    beat: float
    length: float
    pitch: int      # MIDI 0..127
    velocity: int   # 1..127
    voice: int = 0  # which part of the texture (a chorale's soprano 0 .. bass 3)


@dataclass(frozen=True, slots=True)
class MelodyNote:
    """A note the performer played, in beats from the start of the segment it fell in."""

    beat: float
    length: float
    pitch: int


@dataclass(frozen=True, slots=True)
class SegmentRequest:
    """Everything a segment generator may use to make bars `bar` .. `bar + bars - 1`."""

    bar: int                    # index of the segment's first bar since the music began
    bars: int                   # how many bars the segment spans
    beats_per_bar: int
    bpm: float                  # the tempo the segment will most likely play at
    controls: Controls
    deadline: float             # time.monotonic() by which the segment must be returned
    previous: Segment | None = None  # the segment before this one, as it was played
    melody: tuple[MelodyNote, ...] = ()  # what the performer played during the last segment

    @property
    def beats(self) -> int:
        return self.bars * self.beats_per_bar

    @property
    def steps(self) -> int:
        """16th steps in the segment."""
        return self.beats * STEPS_PER_BEAT


@dataclass(frozen=True, slots=True)
class Segment:
    """What a generator made for one request. `figures` holds the generator's own
    measurements of this segment (model evaluations used, ms spent, ...) for the stats."""

    bar: int
    bars: int
    notes: tuple[SegmentNote, ...]
    figures: Mapping[str, float] = field(default_factory=dict)


class SegmentGenerator(Protocol):
    """What the segment player needs of a segment generator."""

    name: str
    bars: int  # bars per segment this generator makes (its ONNX graph's length)

    def warm_up(self) -> None:
        """Run the model once (graph optimisation, allocations) before the music starts."""

    def segment(self, request: SegmentRequest) -> Segment:
        """The music for `request`, ready before `request.deadline` (an anytime generator
        fits its work to the time left; any other should be well inside it)."""


def notes_in_order(notes: Sequence[SegmentNote]) -> tuple[SegmentNote, ...]:
    """Notes sorted by onset, then pitch: the order a segment carries them in."""
    return tuple(sorted(notes, key=lambda n: (n.beat, n.pitch, n.voice)))


def melody_notes(melody: Sequence[tuple[float, float, int]], grid: Grid, from_beat: float,
                 to_beat: float) -> tuple[MelodyNote, ...]:
    """The performer's notes (Controls.melody: monotonic on/off times) that began in beats
    [from_beat, to_beat), in beats from `from_beat`; a note still held, or held past
    `to_beat`, lasts to `to_beat`."""
    notes = []
    for on, off, pitch in melody:
        start = grid.beat_at(on)
        if not from_beat <= start < to_beat:
            continue
        end = to_beat if off == float("inf") else min(to_beat, grid.beat_at(off))
        notes.append(MelodyNote(start - from_beat, max(0.0, end - start), pitch))
    return tuple(notes)
