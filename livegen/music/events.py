"""The event vocabulary (Performance RNN form) and conversions MIDI <-> notes <-> events <-> tokens.

The vocabulary is the table `VOCABULARY`, written once; every token constant and conversion
here reads it. A token sequence encodes absolute time from 0 s on a 10 ms grid:

    note-on   0..127    pitch 0..127 starts sounding at the current time
    note-off  128..255  pitch 0..127 stops
    shift     256..355  the current time advances by 1..100 steps of 10 ms
    velocity  356..387  bin 1..32 becomes the velocity of the following note-ons

Representation rules (what a round trip keeps):
- Times are quantised to the nearest 10 ms step, absolute times rather than gaps, so the error
  per event is at most 5 ms and never accumulates. Gaps over 1 s are repeated shifts.
- A pitch is either sounding or not, so same-pitch notes cannot overlap: a later note of the
  same pitch cuts the earlier one at its start and sounds until the last of their ends
  (the key stays down as long as any of them holds it). Notes of the same pitch starting at
  the same time are one note, with the longer end and the louder velocity.
- Zero-length rule: a note whose start and end fall on the same 10 ms step is extended to one
  step (10 ms), so that it is neither lost nor left sounding; every note in a token sequence
  made here lasts at least one step.
- Decoding accepts any token sequence: a note-off for a pitch not sounding is ignored, a
  note-on for a pitch already sounding ends that note and starts a new one, and notes still
  sounding at the end are ended at the final time.

MIDI files: read_midi, write_midi, and midi_file, where a file's track is built (tempo,
ticks, end of track) for write_midi and for the output's recorder (sinks.MidiFileRecorder).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import mido

SHIFT_S = 0.01
STEPS_PER_SECOND = round(1 / SHIFT_S)
MAX_SHIFT_STEPS = 100
VELOCITY_BINS = 32
MIDI_PITCHES = 128
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0 as mido does


@dataclass(frozen=True, slots=True)
class TokenRange:
    """One kind of event: `size` consecutive tokens from `first`, meaning the values
    `first_value`, `first_value + 1`, ... (a pitch, a number of steps, a velocity bin)."""

    kind: str
    first: int
    size: int
    first_value: int

    @property
    def stop(self) -> int:
        return self.first + self.size

    def token(self, value: int) -> int:
        """The token meaning `value`; ValueError when the range has no such value."""
        index = value - self.first_value
        if not 0 <= index < self.size:
            last = self.first_value + self.size - 1
            raise ValueError(f"{self.kind} value {value} is outside {self.first_value}..{last}")
        return self.first + index

    def value(self, token: int) -> int:
        """The value a token of this range means (the caller checks `token in self`)."""
        return token - self.first + self.first_value

    def __contains__(self, token: object) -> bool:
        return isinstance(token, numbers.Integral) and self.first <= token < self.stop


def _lay_out(*kinds: tuple[str, int, int]) -> tuple[TokenRange, ...]:
    ranges = []
    first = 0
    for kind, size, first_value in kinds:
        ranges.append(TokenRange(kind, first, size, first_value))
        first += size
    return tuple(ranges)


VOCABULARY = _lay_out(
    ("on", MIDI_PITCHES, 0),
    ("off", MIDI_PITCHES, 0),
    ("shift", MAX_SHIFT_STEPS, 1),
    ("vel", VELOCITY_BINS, 1),
)
NOTE_ON_RANGE, NOTE_OFF_RANGE, TIME_SHIFT_RANGE, VELOCITY_RANGE = VOCABULARY
NOTE_ON = NOTE_ON_RANGE.first
NOTE_OFF = NOTE_OFF_RANGE.first
TIME_SHIFT = TIME_SHIFT_RANGE.first
VELOCITY = VELOCITY_RANGE.first
VOCAB_SIZE = VOCABULARY[-1].stop


def velocity_to_bin(velocity: int) -> int:
    """The velocity bin 1..32 of a MIDI velocity 1..127: (v - 1) // 4 + 1."""
    if not 1 <= velocity <= 127:
        raise ValueError(f"velocity {velocity} is outside 1..127 (0 means note-off)")
    return (velocity - 1) // 4 + 1


def bin_to_velocity(velocity_bin: int) -> int:
    """The MIDI velocity a bin 1..32 decodes to: 1 + (bin - 1) * 4 (so 1, 5, ..., 125)."""
    if not 1 <= velocity_bin <= VELOCITY_BINS:
        raise ValueError(f"velocity bin {velocity_bin} is outside 1..{VELOCITY_BINS}")
    return 1 + (velocity_bin - 1) * 4


# A decoder that has seen no velocity token plays mezzo-forte.
DEFAULT_VELOCITY_BIN = velocity_to_bin(64)


def time_to_step(seconds: float) -> int:
    """The nearest 10 ms step to a time in seconds (halves round up)."""
    return math.floor(seconds * STEPS_PER_SECOND + 0.5)


def step_to_time(step: int) -> float:
    """The time in seconds of a 10 ms step."""
    return step / STEPS_PER_SECOND


def token_name(token: int) -> str:
    """A readable name for debugging: "on 60", "off 60", "shift 35", "vel 12"."""
    for token_range in VOCABULARY:
        if token in token_range:
            return f"{token_range.kind} {token_range.value(token)}"
    raise ValueError(f"token {token!r} is outside the vocabulary 0..{VOCAB_SIZE - 1}")


@dataclass(frozen=True, slots=True)
class Note:
    """A note: MIDI pitch 0..127, velocity 1..127, start <= end in seconds from 0."""

    pitch: int
    velocity: int
    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0 <= self.pitch < MIDI_PITCHES:
            raise ValueError(f"note pitch {self.pitch} is outside 0..127")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"note velocity {self.velocity} is outside 1..127")
        if not (math.isfinite(self.end) and 0 <= self.start <= self.end):
            raise ValueError(f"note times {self.start}..{self.end} need 0 <= start <= end < inf")


@dataclass(frozen=True, slots=True)
class TimedEvent:
    """A MIDI note event at `time` seconds: pitch 0..127, velocity 1..127, or 0 for note-off."""

    time: float
    pitch: int
    velocity: int


def _resolve_same_pitch(notes: Iterable[tuple]) -> list[tuple]:
    """(start, end, pitch, velocity) tuples with same-pitch overlaps resolved as the module
    docstring says; works on seconds and on integer steps alike. Sorted by start, pitch."""
    by_pitch: dict[int, list[tuple]] = defaultdict(list)
    for start, end, pitch, velocity in notes:
        by_pitch[pitch].append((start, end, velocity))
    resolved = []
    for pitch, group in by_pitch.items():
        group.sort()
        merged: list[list] = []
        for start, end, velocity in group:
            if merged and merged[-1][0] == start:
                merged[-1][1] = max(merged[-1][1], end)
                merged[-1][2] = max(merged[-1][2], velocity)
            else:
                merged.append([start, end, velocity])
        held_until = merged[0][1]
        for (start, end, velocity), following in itertools.pairwise([*merged, None]):
            held_until = max(held_until, end)
            if following is not None and following[0] < held_until:
                resolved.append((start, following[0], pitch, velocity))
            else:
                resolved.append((start, held_until, pitch, velocity))
    resolved.sort(key=lambda n: (n[0], n[2], n[1]))
    return resolved


def canonical_notes(notes: Iterable[Note]) -> list[Note]:
    """The notes as events can express them, in continuous time: same-pitch overlaps resolved
    (module docstring), sorted by start then pitch. events_to_notes(notes_to_events(notes))
    returns exactly this."""
    resolved = _resolve_same_pitch((n.start, n.end, n.pitch, n.velocity) for n in notes)
    return [Note(pitch, velocity, start, end) for start, end, pitch, velocity in resolved]


def _quantized(notes: Iterable[Note]) -> list[tuple[int, int, int, int]]:
    """(start_step, end_step, pitch, velocity_bin): rounded, zero-length notes extended to one
    step, then same-pitch overlaps resolved, so every note lasts at least one step."""
    stepped = []
    for note in notes:
        start = time_to_step(note.start)
        end = max(time_to_step(note.end), start + 1)
        stepped.append((start, end, note.pitch, velocity_to_bin(note.velocity)))
    return _resolve_same_pitch(stepped)


def quantize_notes(notes: Iterable[Note]) -> list[Note]:
    """The notes as a token round trip gives them back: times on the 10 ms grid, velocities
    decoded from their bins, zero-length notes one step long, same-pitch overlaps resolved;
    sorted by start then pitch. Equals tokens_to_notes(notes_to_tokens(notes))."""
    return [
        Note(pitch, bin_to_velocity(velocity_bin), step_to_time(start), step_to_time(end))
        for start, end, pitch, velocity_bin in _quantized(notes)
    ]


def notes_to_events(notes: Iterable[Note]) -> list[TimedEvent]:
    """Note-on and note-off events of the canonical notes, sorted by time. At equal times
    note-offs come before note-ons, except the note-off of a zero-length note, which follows
    its own note-on."""
    keyed = []
    for note in canonical_notes(notes):
        off_order = 0 if note.end > note.start else 2
        on = TimedEvent(note.start, note.pitch, note.velocity)
        keyed.append(((note.start, 1, note.pitch), on))
        keyed.append(((note.end, off_order, note.pitch), TimedEvent(note.end, note.pitch, 0)))
    keyed.sort(key=lambda item: item[0])
    return [event for _, event in keyed]


def events_to_notes(events: Iterable[TimedEvent]) -> list[Note]:
    """Notes from events taken in time order (list order among equal times), decoded like
    tokens: a note-off for a silent pitch is ignored, a note-on for a sounding pitch ends that
    note and starts a new one, notes sounding at the end end at the last event's time.
    Sorted by start then pitch."""
    ordered = sorted(events, key=lambda event: event.time)
    sounding: dict[int, tuple[float, int]] = {}
    notes = []
    for event in ordered:
        if event.pitch in sounding:
            start, velocity = sounding.pop(event.pitch)
            notes.append(Note(event.pitch, velocity, start, event.time))
        if event.velocity > 0:
            sounding[event.pitch] = (event.time, event.velocity)
    final_time = ordered[-1].time if ordered else 0.0
    notes.extend(
        Note(pitch, velocity, start, final_time) for pitch, (start, velocity) in sounding.items()
    )
    notes.sort(key=lambda note: (note.start, note.pitch, note.end))
    return notes


def notes_to_tokens(notes: Iterable[Note]) -> list[int]:
    """Tokens of the notes, from time 0 (leading silence is kept as shifts). A velocity token
    precedes the first note-on and every note-on whose velocity bin differs from the last."""
    actions = []
    for start, end, pitch, velocity_bin in _quantized(notes):
        actions.append((start, 1, pitch, velocity_bin))
        actions.append((end, 0, pitch, 0))
    # At a shared step note-offs (kind 0) go first: every note lasts at least one step, so
    # an off at this step always belongs to a note that started earlier.
    actions.sort()
    tokens: list[int] = []
    step = 0
    current_bin = None
    for action_step, kind, pitch, velocity_bin in actions:
        gap = action_step - step
        while gap > 0:
            shift = min(gap, MAX_SHIFT_STEPS)
            tokens.append(TIME_SHIFT_RANGE.token(shift))
            gap -= shift
        step = action_step
        if kind == 0:
            tokens.append(NOTE_OFF_RANGE.token(pitch))
            continue
        if velocity_bin != current_bin:
            tokens.append(VELOCITY_RANGE.token(velocity_bin))
            current_bin = velocity_bin
        tokens.append(NOTE_ON_RANGE.token(pitch))
    return tokens


def events_to_tokens(events: Iterable[TimedEvent]) -> list[int]:
    """Tokens of the notes the events make (events_to_notes, then notes_to_tokens)."""
    return notes_to_tokens(events_to_notes(events))


class TokenDecoder:
    """Streaming decoder: feed tokens one at a time, get the events they make.

    The state is three ints (step count, velocity bin, bitmask of sounding pitches), so
    `copy()` is cheap enough to snapshot at every planned event for rollback.
    """

    __slots__ = ("_sounding", "_step", "_velocity_bin")

    def __init__(self) -> None:
        self._step = 0
        self._velocity_bin = DEFAULT_VELOCITY_BIN
        self._sounding = 0

    @property
    def step(self) -> int:
        """The current time in 10 ms steps since the start."""
        return self._step

    @property
    def time(self) -> float:
        """The current time in seconds since the start."""
        return step_to_time(self._step)

    @property
    def velocity(self) -> int:
        """The MIDI velocity the next note-on will have."""
        return bin_to_velocity(self._velocity_bin)

    @property
    def sounding(self) -> frozenset[int]:
        """The pitches sounding now."""
        return frozenset(p for p in range(MIDI_PITCHES) if self._sounding >> p & 1)

    def copy(self) -> TokenDecoder:
        """An independent decoder in the same state."""
        twin = TokenDecoder.__new__(TokenDecoder)
        twin._step = self._step
        twin._velocity_bin = self._velocity_bin
        twin._sounding = self._sounding
        return twin

    def feed(self, token: int) -> list[TimedEvent]:
        """The events one token makes at the current time: none (shift, velocity, note-off of
        a silent pitch), one, or for a note-on of a sounding pitch its note-off then the
        note-on. ValueError for a token outside the vocabulary."""
        token = int(token)
        if 0 <= token < NOTE_OFF:
            pitch = token - NOTE_ON
            bit = 1 << pitch
            time = self.time
            on = TimedEvent(time, pitch, bin_to_velocity(self._velocity_bin))
            if self._sounding & bit:
                return [TimedEvent(time, pitch, 0), on]
            self._sounding |= bit
            return [on]
        if NOTE_OFF <= token < TIME_SHIFT:
            pitch = token - NOTE_OFF
            bit = 1 << pitch
            if not self._sounding & bit:
                return []
            self._sounding &= ~bit
            return [TimedEvent(self.time, pitch, 0)]
        if TIME_SHIFT <= token < VELOCITY:
            self._step += TIME_SHIFT_RANGE.value(token)
            return []
        if VELOCITY <= token < VOCAB_SIZE:
            self._velocity_bin = VELOCITY_RANGE.value(token)
            return []
        raise ValueError(f"token {token} is outside the vocabulary 0..{VOCAB_SIZE - 1}")

    def finish(self) -> list[TimedEvent]:
        """Note-offs at the current time for every pitch still sounding, lowest first."""
        time = self.time
        events = [TimedEvent(time, pitch, 0) for pitch in sorted(self.sounding)]
        self._sounding = 0
        return events


def tokens_to_events(tokens: Iterable[int]) -> list[TimedEvent]:
    """The events a token sequence makes, ending every note still sounding at the final time
    (exactly what a TokenDecoder fed the same tokens, then finished, yields)."""
    decoder = TokenDecoder()
    events = []
    for token in tokens:
        events.extend(decoder.feed(token))
    events.extend(decoder.finish())
    return events


def tokens_to_notes(tokens: Iterable[int]) -> list[Note]:
    """The notes a token sequence makes, sorted by start then pitch."""
    return events_to_notes(tokens_to_events(tokens))


def read_midi(source: str | os.PathLike | BinaryIO, *, include_drums: bool = False) -> list[Note]:
    """The notes of a type 0 or 1 MIDI file (a path or a binary file object), all tracks and
    channels merged, times in seconds through the file's tempo map, sorted by start then pitch.

    A note-on with velocity 0 is a note-off. Same-pitch notes on one channel that overlap are
    kept as separate notes: each note-off ends the oldest sounding one (first in, first out);
    notes never ended end at the file's last event; stray note-offs are ignored. Channel 10
    (drums) is left out unless `include_drums`.
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            midi = mido.MidiFile(filename=os.fspath(source))
        else:
            midi = mido.MidiFile(file=source)
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise ValueError(f"{source}: not a readable MIDI file ({exc})") from exc
    if midi.type == 2:
        raise ValueError(f"{source}: MIDI type 2 (independent sequences) is not supported")

    ticks_per_beat = midi.ticks_per_beat
    tempo = 500_000  # microseconds per beat until the first set_tempo, as the standard says
    tempo_tick = 0
    tempo_seconds = 0.0
    tick = 0
    seconds = 0.0
    open_notes: dict[tuple[int, int], deque[tuple[float, int]]] = defaultdict(deque)
    notes = []
    for message in mido.merge_tracks(midi.tracks):
        tick += message.time
        # Seconds from the last tempo change, not summed deltas, so rounding never adds up.
        seconds = tempo_seconds + (tick - tempo_tick) * tempo / (ticks_per_beat * 1_000_000)
        if message.type == "set_tempo":
            tempo, tempo_tick, tempo_seconds = message.tempo, tick, seconds
            continue
        if message.type not in ("note_on", "note_off"):
            continue
        if message.channel == DRUM_CHANNEL and not include_drums:
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            open_notes[key].append((seconds, message.velocity))
        elif open_notes[key]:
            start, velocity = open_notes[key].popleft()
            notes.append(Note(message.note, velocity, start, seconds))
    for (_, pitch), starts in open_notes.items():
        notes.extend(Note(pitch, velocity, start, seconds) for start, velocity in starts)
    notes.sort(key=lambda note: (note.start, note.pitch, note.end))
    return notes


def midi_file(
    timed: Iterable[tuple[float, mido.Message]],
    *,
    tempo: int = 500_000,
    ticks_per_beat: int = 960,
) -> mido.MidiFile:
    """A type 0 MIDI file of (seconds from 0, message) pairs in time order: a set_tempo
    (`tempo` µs per beat) first, each message at its absolute time rounded to a tick (so
    rounding never drifts), end_of_track last. write_midi and the output's recorder
    (sinks.MidiFileRecorder) both write through it."""
    ticks_per_second = ticks_per_beat * 1_000_000 / tempo
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    last_tick = 0
    for seconds, message in timed:
        tick = round(seconds * ticks_per_second)
        track.append(message.copy(time=tick - last_tick))
        last_tick = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    return midi


def write_midi(
    notes: Iterable[Note],
    target: str | os.PathLike | BinaryIO,
    *,
    bpm: float = 120.0,
    channel: int = 0,
    program: int | None = None,
    ticks_per_beat: int = 960,
) -> None:
    """Write the notes as a type 0 MIDI file (a path or a binary file object) at a fixed
    tempo on one channel, with a program change first when `program` is given.

    read_midi gives back canonical_notes(notes) with times within half a tick (at 120 bpm and
    960 ticks per beat, 0.26 ms).
    """
    if not 0 <= channel <= 15:
        raise ValueError(f"channel {channel} is outside 0..15 (mido counts channels from 0)")
    if program is not None and not 0 <= program <= 127:
        raise ValueError(f"program {program} is outside 0..127")
    if not bpm > 0:
        raise ValueError(f"bpm {bpm} must be positive")
    timed = []
    if program is not None:
        timed.append((0.0, mido.Message("program_change", channel=channel, program=program)))
    for event in notes_to_events(notes):  # sorted by time
        kind = "note_on" if event.velocity > 0 else "note_off"
        timed.append((event.time, mido.Message(kind, channel=channel, note=event.pitch,
                                               velocity=event.velocity)))
    midi = midi_file(timed, tempo=round(60_000_000 / bpm), ticks_per_beat=ticks_per_beat)
    if isinstance(target, (str, os.PathLike)):
        midi.save(filename=os.fspath(target))
    else:
        midi.save(file=target)

