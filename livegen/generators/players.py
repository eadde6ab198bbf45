"""What the engine drives every generator through, and the player of segment generators.

A player runs one generator in an inference thread of its own and puts what it plans in
the timeline (through a BeatPlan, so the music follows the clock). The engine sees the
same small surface for every kind (`Player`): start, hand over controls, the clock
changed, hold at a bar line and play on from one (switch mode), stop; whether its thread
still turns (`alive_at`, `stuck`) and its figures. StepPlayer (step.py) plays a step
generator; SegmentPlayer (here) plays a segment generator.

The segment player asks for segment n+1 while segment n plays, so it is ready before its
bar line (a generator that listens to the performer, `plan_ahead_beats`, is asked as late
as it says, so that it hears the bar before). New controls take effect at the next
boundary whose planning has not begun; a
change that arrives while a segment is being planned re-plans it when the time left allows
(the planning took less than half of what is left). Control latency for a segment
generator runs from the reading to the bar line at which it is heard; the planning time
is reported beside it, and a plan that took longer than its share of the bar is counted
over budget. A segment not ready at its bar line is counted as missed and the bar is filled
by the fallback: the last segment again (music goes on, in time), or a rest when there is
none. A generator that raises is counted, its notes are ended, and it is asked again for
the next segment after a backoff.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rtmidi.midiconstants import NOTE_OFF, NOTE_ON

from livegen.clock import Grid
from livegen.control import Controls
from livegen.generators.beats import BeatPlan
from livegen.generators.segment import Segment, SegmentGenerator, SegmentRequest, melody_notes
from livegen.inputs.base import Backoff
from livegen.stats import Samples
from livegen.timeline import Timeline

log = logging.getLogger(__name__)

TURN_S = 0.25          # the longest the thread sleeps between looks (keeps alive_at fresh)
RECENT_CONTROLS = 64  # controls remembered for planning by time (see _controls_at)
LEAD_S = 0.005         # what is due this soon is left alone by re-timing and withdrawing
MARGIN_S = 0.02        # a segment is wanted this long before its bar line
RESTART_BACKOFF = Backoff(first=0.2, factor=2.0, cap=5.0, healthy_s=60.0)


class Player(Protocol):
    """What the engine needs of every player (StepPlayer, SegmentPlayer)."""

    tag: str
    alive_at: float

    def start(self, origin: float, end: float | None = None) -> None: ...

    def set_controls(self, controls: Controls) -> None: ...

    def clock_changed(self) -> None: ...

    def hold(self, beat: float) -> None:
        """Play nothing from `beat` on (switch mode: another generator takes over)."""

    def play_from(self, beat: float) -> None:
        """Play (again) from `beat` on."""

    def stop(self, timeout: float = 2.0) -> None: ...

    @property
    def running(self) -> bool: ...

    def stuck(self, now: float) -> bool:
        """Whether the thread has not turned for longer than its own work allows."""

    def figures(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class SegmentStats:
    plan: Samples = field(default_factory=Samples)             # seconds per segment planned
    control_latency: Samples = field(default_factory=Samples)  # reading -> its bar line
    segments: int = 0
    replans: int = 0
    missed: int = 0           # bar lines reached with no segment: filled by the fallback
    budget_overruns: int = 0  # plans that took more than their share of the bar
    failures: int = 0         # the generator raised
    figures: dict[str, float] = field(default_factory=dict)  # the generator's own, last


class SegmentPlayer:
    """Runs one segment generator in its own inference thread against the timeline."""

    kind = "segment"

    def __init__(self, generator: SegmentGenerator, timeline: Timeline, *, channel: int,
                 grid: Callable[[], Grid], controls: Controls,
                 release: Callable[[str], None], budget_share: float = 0.5,
                 fallback: str = "repeat", tag: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff = RESTART_BACKOFF, watchdog_s: float = 2.0) -> None:
        self.generator = generator
        self.tag = tag or generator.name
        self.timeline = timeline
        self.channel = channel - 1
        self.grid = grid
        self.release = release
        self.budget_share = budget_share  # of a bar: the planning budget
        self.fallback = fallback
        # A generator that listens to the performer (Langevin's harmonise) says how late it
        # may be asked: that many beats before its bar line, hearing the bar until then.
        # Any other is asked one segment ahead.
        self.plan_ahead_beats: float | None = getattr(generator, "plan_ahead_beats", None)
        self.clock = clock
        self.backoff = backoff
        self.watchdog_s = watchdog_s
        self.stats = SegmentStats()
        self.end: float | None = None
        self._controls = controls
        self._newest = controls
        # Recent controls in the order handed over: a segment is planned under the newest
        # whose time had come when its planning was due (a replay hands readings over
        # early, so which bar hears them must not depend on when the thread wakes).
        self._recent: deque[Controls] = deque([controls], maxlen=RECENT_CONTROLS)
        self._commands: deque[tuple[str, float]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.alive_at = 0.0
        self._allowed_s = watchdog_s  # how long the thread may go without turning now

    # ------------------------------------------------------------ from the event loop

    def start(self, origin: float, end: float | None = None) -> None:
        """Play from the first bar line at or after clock time `origin`."""
        self.end = end
        grid = self.grid()
        first_bar = math.ceil(grid.beat_at(origin) / grid.beats_per_bar - 1e-9)
        self.alive_at = self.clock()
        self._thread = threading.Thread(target=self._run, args=(first_bar,),
                                        name=f"infer-{self.tag}", daemon=True)
        self._thread.start()

    def set_controls(self, controls: Controls) -> None:
        self._newest = controls  # one reference: atomic; taken at the next planning
        self._recent.append(controls)  # deque.append is atomic too
        self._wake.set()

    def clock_changed(self) -> None:
        self._wake.set()

    def hold(self, beat: float) -> None:
        self._commands.append(("hold", beat))
        self._wake.set()

    def play_from(self, beat: float) -> None:
        self._commands.append(("play", beat))
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: inference thread did not stop within %.1f s", self.tag,
                            timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stuck(self, now: float) -> bool:
        return self.running and now - self.alive_at > self._allowed_s

    def figures(self) -> dict[str, Any]:
        s = self.stats
        return {"kind": "segment", "plan_ms": s.plan.summary(),
                "control_latency_ms": s.control_latency.summary(),
                "segments": s.segments, "replans": s.replans, "missed": s.missed,
                "budget_overruns": s.budget_overruns, "failures": s.failures,
                "generator": dict(s.figures)}

    # ------------------------------------------------------------ the inference thread

    def _run(self, first_bar: int) -> None:
        plan = BeatPlan(self.timeline, self.tag, self.grid, lead_s=LEAD_S)
        state = _State(next_bar=first_bar, started=plan.grid.started)
        failures, healthy_since = 0, self.clock()
        while not self._stopping.is_set():
            now = self.clock()
            self.alive_at = now
            self._allowed_s = self.watchdog_s
            self._follow(plan, state, now)
            wait = self._turn(plan, state, now)
            if wait is None:
                continue
            if wait < 0:  # the generator failed: back off, then go on from the next bar
                if self.clock() - healthy_since >= self.backoff.healthy_s:
                    failures = 0
                failures += 1
                self._stopping.wait(self.backoff.delay(failures))
                healthy_since = self.clock()
                continue
            self._wake.wait(min(wait, TURN_S))
            self._wake.clear()

    def _follow(self, plan: BeatPlan, state: _State, now: float) -> None:
        """The clock's changes (tempo re-times what is planned; transport pauses, resumes,
        restarts) and the engine's commands (hold at, play from a beat)."""
        if plan.follow(now):
            grid = plan.grid
            if grid.started != state.started:  # a Start: from the top
                state.started = grid.started
                if not state.ready_at_top:
                    state.next_bar, state.previous = 0, None
                    plan.withdraw_all(now)
                    self.release(self.tag)
            if not grid.running and not state.paused:
                # A stop: what sounds is ended and what is planned withdrawn; the bar a
                # Continue will play is planned again while the transport stands still.
                state.paused = True
                state.next_bar = math.ceil(grid.beat0 / grid.beats_per_bar - 1e-9)
                plan.withdraw_all(now)
                self.release(self.tag)
            elif grid.running and state.paused:
                state.paused = False
            if grid.running:
                state.ready_at_top = False
        while self._commands:
            command, beat = self._commands.popleft()
            bar = math.ceil(beat / plan.grid.beats_per_bar - 1e-9)
            if command == "hold":
                state.held = True
                plan.withdraw_after(beat - 1e-9, now)
            else:
                state.held = False
                state.next_bar = bar

    def _turn(self, plan: BeatPlan, state: _State, now: float) -> float | None:
        """Plan the next segment when its time has come. Returns how long to wait, None
        to turn again at once, or -1 after the generator failed."""
        if state.held:
            return TURN_S
        grid = plan.grid
        bar_beats = grid.beats_per_bar
        ahead_beats = (self.generator.bars * bar_beats if self.plan_ahead_beats is None
                       else self.plan_ahead_beats)
        if not grid.running:
            # The transport stands still: plan the segment the music goes on with (from
            # the top, for a clock waiting for its first Start) so it is ready at once.
            if state.next_bar * bar_beats - grid.beat0 > ahead_beats:
                return TURN_S
            if grid.beat0 < 1e-9 and state.next_bar == 0:
                state.ready_at_top = True
            return self._plan(plan, state, grid, now + bar_beats * grid.beat_s, now)
        bar_start = grid.time_at(state.next_bar * bar_beats)
        if self.end is not None and bar_start >= self.end:
            return TURN_S
        ahead_s = ahead_beats * grid.beat_s
        if now < bar_start - ahead_s:  # one segment ahead (or as late as it asks), no more
            return bar_start - ahead_s - now
        if now > bar_start - LEAD_S:
            self._miss(plan, state, now)
            return None
        return self._plan(plan, state, grid, bar_start, bar_start - ahead_s)

    def _controls_at(self, t: float) -> Controls:
        """The newest controls handed over whose time is at or before t."""
        recent = list(self._recent)
        for controls in reversed(recent):
            if controls.t <= t:
                return controls
        return recent[0]

    def _plan(self, plan: BeatPlan, state: _State, grid: Grid,
              bar_start: float, due: float) -> float | None:
        """Make the segment for state.next_bar, heard from `bar_start`, under the controls
        of `due` (when its planning was due), re-planned under a change that comes while
        it is made if time allows."""
        bar_beats = grid.beats_per_bar
        deadline = bar_start - MARGIN_S
        budget = self.budget_share * bar_beats * grid.beat_s
        controls = self._controls_at(due)
        while True:
            first_beat = state.next_bar * bar_beats
            melody = melody_notes(controls.melody, grid,
                                  first_beat - self.generator.bars * bar_beats, first_beat)
            request = SegmentRequest(
                bar=state.next_bar, bars=self.generator.bars, beats_per_bar=bar_beats,
                bpm=grid.bpm, controls=controls, deadline=deadline,
                previous=state.previous, melody=melody)
            started = self.clock()
            self._allowed_s = max(0.0, deadline - started) + self.watchdog_s
            try:
                segment = self.generator.segment(request)
            except Exception:
                log.exception("%s failed; its notes are ended and it goes on from the "
                              "next bar", self.tag)
                self.stats.failures += 1
                plan.withdraw_all(self.clock())
                self.release(self.tag)
                state.next_bar += self.generator.bars
                state.previous = None
                return -1
            took = self.clock() - started
            self.alive_at = self.clock()
            self.stats.plan.record(took)
            if took > budget:
                self.stats.budget_overruns += 1
            newer = self._controls_at(self.clock())
            left = deadline - self.clock()
            if newer.version > controls.version and took < left / 2:
                self.stats.replans += 1  # a change came while planning, and time allows
                controls = newer
                continue
            break
        if plan.grid.running and self.clock() > bar_start - LEAD_S:
            self._miss(plan, state, self.clock())
            return None
        self._publish(plan, state, segment, controls, bar_start)
        return None

    def _publish(self, plan: BeatPlan, state: _State, segment: Segment,
                 controls: Controls, bar_start: float) -> None:
        first_beat = state.next_bar * plan.grid.beats_per_bar
        plan.add(segment_messages(segment.notes, first_beat, self.channel,
                                  controls.velocity_scale))
        self.stats.segments += 1
        self.stats.figures = dict(segment.figures)
        if controls.version != state.heard_version and controls.t > 0 and plan.grid.running:
            # This bar line is where the change is heard.
            self.stats.control_latency.record(max(0.0, bar_start - controls.t))
            state.heard_version = controls.version
        state.previous = segment
        state.next_bar += self.generator.bars
        plan.forget_before(self.clock() - 1.0)

    def _miss(self, plan: BeatPlan, state: _State, now: float) -> None:
        """The bar line came with nothing planned: fill it with the fallback."""
        self.stats.missed += 1
        log.warning("%s: no segment ready for bar %d; %s", self.tag, state.next_bar,
                    "repeating the last one" if self.fallback == "repeat"
                    and state.previous is not None else "resting")
        bar_beats = plan.grid.beats_per_bar
        if self.fallback == "repeat" and state.previous is not None:
            first_beat = state.next_bar * bar_beats
            heard_from = plan.grid.beat_at(now + LEAD_S)
            notes = [n for n in state.previous.notes if first_beat + n.beat >= heard_from]
            plan.add(segment_messages(notes, first_beat, self.channel,
                                      self._newest.velocity_scale))
        state.next_bar += self.generator.bars


@dataclass(slots=True)
class _State:
    next_bar: int
    started: int
    previous: Segment | None = None
    paused: bool = False
    held: bool = False
    heard_version: int = -1
    ready_at_top: bool = False  # bar 0 planned while waiting for a Start


def segment_messages(notes: Sequence[Any], first_beat: float, channel: int,
                     velocity_scale: float = 1.0) -> list[tuple[float, tuple[int, int, int]]]:
    """(beat, message) for a segment's notes from `first_beat`: note-offs before note-ons
    at the same beat, so a repeated pitch is struck again rather than cut."""
    timed = []
    for note in notes:
        velocity = min(127, max(1, round(note.velocity * velocity_scale)))
        on = first_beat + note.beat
        timed.append((on, 1, (NOTE_ON | channel, note.pitch, velocity)))
        timed.append((on + max(note.length, 1e-3), 0, (NOTE_OFF | channel, note.pitch, 0)))
    timed.sort(key=lambda item: (item[0], item[1]))
    return [(beat, message) for beat, _, message in timed]
