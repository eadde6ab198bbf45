"""Musical time on the one clock (time.monotonic): tempo, beats, bars.

The clock runs on its internal tempo, or follows incoming MIDI clock (24 pulses per
quarter note, with start/stop/continue), or is placed by an Ableton Link session
(livegen.link), and can produce outgoing clock pulses. Position
is kept as an anchor (time, beat) and a tempo, so a tempo change never makes it jump.

Generators plan in beats. The clock publishes every change of tempo, position or
transport as a new `Grid`, an immutable snapshot that an inference thread reads without
a lock (one attribute read) and uses to turn beats into due times.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

from rtmidi.midiconstants import SONG_CONTINUE, SONG_START, SONG_STOP, TIMING_CLOCK

log = logging.getLogger(__name__)

PPQN = 24
# The tempi livegen plays at: the config's clock.bpm, a `tempo` rule's out_range and a
# followed MIDI clock are all held to this range, so a beat is never zero or infinitely
# long and the clock pulses planned ahead stay a handful.
MIN_BPM, MAX_BPM = 20.0, 300.0
# One call never plans more pulses than this (over 80 s at MAX_BPM): a caller that asks
# for a span far longer than the lookahead gets its first pulses, never a list that
# grows until memory runs out.
MAX_PULSES_PER_CALL = 24_000
# Realtime messages by their use here (rtmidi.midiconstants holds the MIDI standard's table).
CLOCK_TICK, CLOCK_START, CLOCK_CONTINUE, CLOCK_STOP = (TIMING_CLOCK, SONG_START, SONG_CONTINUE,
                                                      SONG_STOP)
# Incoming clock: tempo is the mean pulse interval over the last beat; pulses further
# apart than this mean the sender stopped without saying so.
_MAX_PULSE_GAP_S = 1.0


@dataclass(frozen=True, slots=True)
class Grid:
    """Musical time as it stands from monotonic time `t0` on: beat `beat0` falls at `t0`
    and the beats follow at `bpm`. While the transport is stopped (`running` False) the
    position stands still at `beat0` and no beat has a time yet."""

    t0: float
    beat0: float
    bpm: float
    beats_per_bar: int
    running: bool = True
    started: int = 0  # counts transport Starts: a new count means "from the top"

    @property
    def beat_s(self) -> float:
        return 60.0 / self.bpm

    def beat_at(self, t: float) -> float:
        """The (fractional) beat at monotonic time t; frozen while stopped."""
        if not self.running:
            return self.beat0
        return self.beat0 + (t - self.t0) / self.beat_s

    def time_at(self, beat: float) -> float:
        """The monotonic time at which `beat` falls, at this tempo (as if running)."""
        return self.t0 + (beat - self.beat0) * self.beat_s

    def bar_of(self, beat: float) -> int:
        """The index of the bar `beat` falls in (bar 0 starts at beat 0)."""
        return math.floor(beat / self.beats_per_bar + 1e-9)


class Clock:
    """Tempo and position. Not thread-safe: owned by the event loop, which publishes each
    change as `grid` for the generators' threads."""

    def __init__(self, bpm: float, beats_per_bar: int = 4, origin: float = 0.0) -> None:
        self.beats_per_bar = beats_per_bar
        if not math.isfinite(bpm):
            raise ValueError(f"tempo {bpm!r} bpm is not a finite number")
        self._bpm = bounded_bpm(bpm)
        self._anchor_t = origin
        self._anchor_beat = 0.0
        self.running = True
        self.following = False
        self._pulses: deque[float] = deque(maxlen=PPQN + 1)
        self._next_pulse_beat = 0.0
        self._starts = 0
        self.grid = Grid(origin, 0.0, self._bpm, beats_per_bar)
        self._publish()

    def _publish(self) -> None:
        self.grid = Grid(self._anchor_t, self._anchor_beat, self._bpm, self.beats_per_bar,
                         self.running, self._starts)

    def anchor(self, t: float) -> None:
        """Beat 0 falls at monotonic time t (the music's start)."""
        self._anchor_t, self._anchor_beat = t, 0.0
        self._publish()

    @property
    def bpm(self) -> float:
        return self._bpm

    @property
    def beat_s(self) -> float:
        return 60.0 / self._bpm

    def beat_at(self, t: float) -> float:
        """The (fractional) beat at monotonic time t; frozen while stopped."""
        if not self.running:
            return self._anchor_beat
        return self._anchor_beat + (t - self._anchor_t) / self.beat_s

    def time_at(self, beat: float) -> float:
        """The monotonic time at which `beat` falls, at the current tempo."""
        return self._anchor_t + (beat - self._anchor_beat) * self.beat_s

    def next_bar(self, t: float) -> float:
        """The time of the first bar line at or after t."""
        beat = self.beat_at(t)
        bar_beat = -(-beat // self.beats_per_bar) * self.beats_per_bar
        return self.time_at(bar_beat)

    def set_tempo(self, bpm: float, t: float) -> None:
        """Change tempo at time t without moving the position. A tempo outside
        MIN_BPM..MAX_BPM is held to the nearest end; a non-finite one (or time) is refused
        with a warning and the tempo stays as it was."""
        if not (math.isfinite(bpm) and math.isfinite(t)):
            log.warning("clock: tempo %r at t=%r refused (not a finite number); staying at "
                        "%.1f bpm", bpm, t, self._bpm)
            return
        self._anchor_beat = self.beat_at(t)
        self._anchor_t = t
        self._bpm = bounded_bpm(bpm)
        self._publish()

    # ------------------------------------------------------------ following MIDI clock

    def on_midi(self, status: int, t: float) -> None:
        """Feed one realtime message (tick, start, continue, stop) received at time t.

        After Start the first pulse is beat 0; after Continue, pulses carry on from where
        Stop left off; pulses without a Start (a clock already running) carry on from the
        position the clock had. Each pulse anchors the position exactly (pulse k = beat k/24), so
        tempo estimates never accumulate into drift; between pulses the position moves at
        the tempo measured over the last beat.
        """
        if status in (CLOCK_START, CLOCK_CONTINUE):
            self.following = True
            self.running = False  # until the first pulse
            self._pulses.clear()
            if status == CLOCK_START:
                self._next_pulse_beat = 0.0
                self._starts += 1
            self._anchor_beat, self._anchor_t = self._next_pulse_beat, t
            self._publish()
        elif status == CLOCK_STOP:
            self._anchor_beat = self.beat_at(t)
            self._anchor_t = t
            self.running = False
            self._publish()
        elif status == CLOCK_TICK:
            if not self.following:
                # Joining a clock that is already running (its Start came before we
                # listened): carry on from the pulse nearest our own position.
                self.following = True
                self._next_pulse_beat = round(self.beat_at(t) * PPQN) / PPQN
            if self._pulses and t - self._pulses[-1] > _MAX_PULSE_GAP_S:
                self._pulses.clear()
            self._pulses.append(t)
            if len(self._pulses) >= 2:
                interval = (self._pulses[-1] - self._pulses[0]) / (len(self._pulses) - 1)
                if interval > 0:
                    # Pulses anchor the position themselves; the tempo only carries it
                    # between pulses, so holding a runaway sender's tempo in range costs
                    # nothing audible and keeps the pulses we send bounded.
                    self._bpm = bounded_bpm(60.0 / (interval * PPQN))
            self._anchor_t, self._anchor_beat = t, self._next_pulse_beat
            self._next_pulse_beat += 1.0 / PPQN
            self.running = True
            self._publish()

    # ------------------------------------------------------------ following Ableton Link

    def place(self, t: float, beat: float, bpm: float) -> None:
        """An external timeline (an Ableton Link session, livegen.link) puts `beat` at
        monotonic time t, the beats following at `bpm`. Its tempo is taken as it is (Link
        holds it to 20..999 bpm): holding it to MIN_BPM..MAX_BPM would lose the phase."""
        if not (math.isfinite(t) and math.isfinite(beat) and math.isfinite(bpm) and bpm > 0):
            log.warning("clock: beat %r at t=%r, %r bpm refused (not finite); the clock "
                        "holds", beat, t, bpm)
            return
        self.following = True
        self._anchor_t, self._anchor_beat, self._bpm = t, beat, bpm
        self._publish()

    def stop(self, t: float) -> None:
        """The transport stops at time t: the position stands still there."""
        self._anchor_beat = self.beat_at(t)
        self._anchor_t = t
        self.running = False
        self._publish()

    def start_from_top(self, t: float, bpm: float) -> None:
        """The transport starts: the music begins again from the top, beat 0 at time t
        (a new `Grid.started` count)."""
        self._starts += 1
        self.running = True
        self.place(t, 0.0, bpm)

    # ------------------------------------------------------------ sending MIDI clock

    def pulses_between(self, start: float, end: float) -> list[float]:
        """Times of the clock pulses (24 per beat) in [start, end), at most
        MAX_PULSES_PER_CALL of them (the first ones)."""
        if not self.running or not end > start:  # also refuses NaN
            return []
        first_pulse = self.beat_at(start) * PPQN
        last_pulse = self.beat_at(end) * PPQN
        if not (math.isfinite(first_pulse) and math.isfinite(last_pulse)):
            return []
        first = math.ceil(first_pulse)
        count = min(MAX_PULSES_PER_CALL, max(0, math.ceil(last_pulse - first)))
        if count == MAX_PULSES_PER_CALL:
            log.warning("clock: %.0f s of clock pulses asked for at once; sending the "
                        "first %d", end - start, count)
        return [self.time_at((first + k) / PPQN) for k in range(count)]


def bounded_bpm(bpm: float) -> float:
    """bpm held to MIN_BPM..MAX_BPM (finite input expected)."""
    return min(MAX_BPM, max(MIN_BPM, bpm))
