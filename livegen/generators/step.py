"""Playing a step generator live: plan ahead, keep state, roll back on a control change.

A step generator (the Char-RNN) extends its music one step at a time. `StepPlayer` runs it
in an inference thread of its own: it keeps the plan `lookahead` ahead of the playhead,
puts every planned MIDI message into the timeline with its due time, and keeps the
generator's state after every step. When the controls change enough to matter, the
planned messages due after `t + commit` (t: the time of the reading behind the change) are
dropped and the music is regenerated from the state saved at that moment, under the new
controls (rollback). Control latency is measured for every rollback, from the reading
that caused the change to the moment the first step under the new controls is in the
plan: a note, or the model's decision to rest (a rest puts no message in the timeline, yet
it is the answer to the change). A replayed change handed over before its time and
answered before it was due counts 0.

The music depends on the changes, never on when this thread happened to wake up and see
them. Each change is placed in the music's own time, on a 1 µs grid counted from its time
zero, and takes effect there wherever the plan stands when the thread sees it:
- a change that matters takes effect at its cut, `t + commit`. If the plan has passed the
  cut, it rolls back to it; if not, the change waits in a schedule until the plan gets
  there, and the step that crosses the cut is rolled back as if the plan had been ahead.
- a change too small to regenerate for takes effect from the first step that starts at or
  after `t + commit + lookahead`: without a rollback, a step the plan had already taken
  then would keep its old controls, and how many steps that is depends on scheduling.
Both are exact when the thread sees the change before `t + commit` (a replay hands its
readings over early for that reason). A change seen later is cut from the clock instead,
as soon as possible, and counted in `late_changes`. A player that keeps time (a replay's)
also never re-anchors a plan that ran dry: it catches up, the overdue notes going out at
once, so a starved thread costs the replay some late notes, not different music.

The contract with a step generator (see `StepGenerator`): a step either emits events at
the state's current time or advances the time without emitting (the event vocabulary
works so). Hence the messages of the steps after a checkpoint are all due later than the
checkpoint's time, and dropping "after t" separates kept from regenerated music exactly.

The player runs in its thread (`start`), or, for `livegen render`, on a virtual clock,
driven by the caller (`begin`, then `catch_up` whenever that clock moves): the same
planning and rollback, step for step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rtmidi.midiconstants import NOTE_OFF, NOTE_ON

from livegen.clock import Grid
from livegen.control import Controls
from livegen.generators.beats import BeatPlan
from livegen.inputs.base import Backoff
from livegen.music.events import TimedEvent
from livegen.stats import Samples
from livegen.timeline import Timeline

log = logging.getLogger(__name__)

# Plan at least this far ahead of now, even after a hiccup: a message planned for "now"
# is already late by the time the output thread sees it.
MIN_LEAD_S = 0.005
# A change seen too late for its cut is cut this far from the moment it is seen, and what
# is due sooner than this is never taken back (the output thread takes a message out of
# the timeline under its lock, so the margin covers only the thread's own wake-up, 0.8 ms
# ahead of the due time). Kept small: until the cut the old controls' notes still sound.
CUT_LEAD_S = 0.002
# A plan that ran dry by more than this is a stalled generator, not a hiccup: its notes
# are ended and it starts afresh.
STALL_S = 0.25
# A player that keeps time (a replay's) catches up from further behind than that: a replay
# on a loaded machine was seen starved for 0.3 s. Beyond this it restarts as any player.
KEEP_TIME_STALL_S = 2.0
# Every player catches up from this little behind (measured with MIN_LEAD_S added: a
# plan up to 20 ms behind now), keeping the music on its beats.
CATCH_UP_S = 0.025
# State is kept this far behind the playhead; rollback never reaches further back.
KEEP_BEHIND_S = 1.0
# A plan that reached the end of the run waits this long between looks at its changes.
FINISHED_IDLE_S = 0.5
# A paused plan (the followed clock stopped) waits this long for clock_changed().
PAUSED_IDLE_S = 0.1
# Times in the music are compared on this grid (decimal places of a second). A change's
# time comes as origin + offset, and (origin + offset) - origin is the offset give or take
# a rounding error that depends on the origin, so on the run; a cut that moved by that
# error could fall on the other side of a step. Rounding to 1 µs removes it.
MUSIC_TIME_DIGITS = 6
# Restarting a failed generator: 0.2 s, doubling up to 5 s; a generator that then ran
# well for a minute starts again from 0.2 s after its next failure.
RESTART_BACKOFF = Backoff(first=0.2, factor=2.0, cap=5.0, healthy_s=60.0)
# Without a clock's Grid, beats are seconds (tests of the planning alone).
SECONDS_GRID = Grid(t0=0.0, beat0=0.0, bpm=60.0, beats_per_bar=4)


class StepState(Protocol):
    @property
    def time(self) -> float:
        """Seconds of music planned so far, from the generator's start."""


class StepGenerator(Protocol):
    """What StepPlayer needs of a step generator. States are immutable values.

    Its music is timed in its own seconds, which are beats at the tempo its training data
    were played at: `seconds_per_beat` (0.5 for music learned at 120 bpm; 1.0 when the
    attribute is missing). The player turns them into beats, and the clock beats into
    time, so the music follows the tempo."""

    name: str

    def initial(self) -> StepState: ...

    def step(self, state: Any, controls: Controls,
             index: int) -> tuple[Any, Sequence[TimedEvent]]:
        """One step under `controls`; `index` counts steps from the start and seeds any
        randomness, so regenerating from a checkpoint under the same controls repeats."""

    def wait_until(self, state: Any, time: float, controls: Controls, index: int) -> Any:
        """The state advanced silently to `time` (seconds from the start), the new
        `controls` already in force."""

    def changed(self, old: Controls, new: Controls, threshold: float) -> bool:
        """Whether the music planned under `old` should be regenerated under `new`."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    index: int        # steps taken so far
    state: Any        # the generator's state then; state.time: where it stands in the music


@dataclass(frozen=True, slots=True)
class _Switch:
    """A change placed in the music: `controls` take over at music time `at`."""

    at: float                 # seconds from the music's time zero, on the 1 µs grid
    controls: Controls
    regenerate: bool          # roll back to `at` (a change that matters), or only switch
    latency_from: float       # the reading's time, for control latency


@dataclass(slots=True)
class PlayerStats:
    step: Samples            # seconds per generator step
    control_latency: Samples  # seconds from Reading.t to the first step planned under it
    steps: int = 0
    rollbacks: int = 0
    budget_overruns: int = 0  # control latencies over the budget
    late: int = 0             # plan ran dry: re-anchored (caught up, keeping time)
    stalls: int = 0           # plan ran dry badly: notes ended, generator restarted
    failures: int = 0         # the generator raised
    late_changes: int = 0     # changes seen after their cut: cut from the clock instead
    backoff_s: float = 0.0    # the wait before the latest restart

    @classmethod
    def empty(cls) -> PlayerStats:
        return cls(step=Samples(), control_latency=Samples())


class StepPlayer:
    """Runs one step generator in its own inference thread against the timeline."""

    kind = "step"

    def __init__(self, generator: StepGenerator, timeline: Timeline, *, channel: int,
                 lookahead_s: float, commit_s: float, latency_budget_s: float,
                 rollback_threshold: float, controls: Controls,
                 release: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff = RESTART_BACKOFF, keep_time: bool = False,
                 grid: Callable[[], Grid] = lambda: SECONDS_GRID,
                 quantize: str = "off", tag: str | None = None,
                 watchdog_s: float = 2.0) -> None:
        self.generator = generator
        self.watchdog_s = watchdog_s
        self.grid = grid  # the clock's Grid of the moment, read without a lock
        self.quantize = quantize
        self.seconds_per_beat = float(getattr(generator, "seconds_per_beat", 1.0))
        self.tag = tag or generator.name
        self.timeline = timeline
        self.channel = channel - 1
        self.lookahead_s = lookahead_s
        self.commit_s = commit_s
        self.latency_budget_s = latency_budget_s
        self.rollback_threshold = rollback_threshold
        self.release = release  # ends the notes a tag started (the output's ledger)
        self.clock = clock
        self.backoff = backoff
        self.keep_time = keep_time  # a plan that ran dry catches up instead of re-anchoring
        self.stats = PlayerStats.empty()
        self.end: float | None = None  # clock time after which nothing is played
        self.finished = False  # everything due before the end is in the timeline
        self._controls = controls
        self._pending: deque[Controls] = deque()
        self._commands: deque[tuple[str, float]] = deque()  # ("hold"|"play", beat)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._driven: _Plan | None = None  # the plan when driven by catch_up()
        self.alive_at = 0.0  # monotonic time of the loop's last turn (for the watchdog)

    # ------------------------------------------------------------ from the event loop

    def start(self, origin: float, end: float | None = None) -> None:
        """Start planning in the inference thread; the generator's time zero falls on
        clock time `origin`. With `end`, nothing due at or after it is played."""
        self.end = end
        self._thread = threading.Thread(target=self._run, args=(origin,),
                                        name=f"infer-{self.tag}", daemon=True)
        self._thread.start()

    def hold(self, beat: float) -> None:
        """Play nothing from `beat` on: another generator takes over there."""
        self._commands.append(("hold", beat))
        self._wake.set()

    def play_from(self, beat: float) -> None:
        """Play on from `beat`: the music continues where it was held."""
        self._commands.append(("play", beat))
        self._wake.set()

    def stuck(self, now: float) -> bool:
        """A step takes about a millisecond and the thread never rests longer than a
        fraction of a second: silence this long means it is stuck (in ONNX Runtime)."""
        return self.running and now - self.alive_at > self.watchdog_s

    def figures(self) -> dict[str, Any]:
        s = self.stats
        return {"kind": "step", "step_ms": s.step.summary(),
                "control_latency_ms": s.control_latency.summary(),
                "steps": s.steps, "rollbacks": s.rollbacks,
                "budget_overruns": s.budget_overruns, "late": s.late, "stalls": s.stalls,
                "failures": s.failures, "late_changes": s.late_changes,
                # what the generator counts of its own (the Char-RNN: its guards)
                **({"guards": self.generator.figures()}
                   if hasattr(self.generator, "figures") else {})}

    def clock_changed(self) -> None:
        """The clock published a new Grid (tempo, transport): look at it now."""
        self._wake.set()

    def set_controls(self, controls: Controls) -> None:
        """Hand new controls to the planning. Every change is judged in order, so the
        music does not depend on how often the inference thread happens to wake."""
        self._pending.append(controls)  # deque.append is atomic: no lock needed
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

    # ------------------------------------------------------------ on a virtual clock

    def begin(self, origin: float, end: float | None = None) -> None:
        """Plan without a thread (render): nothing happens until `catch_up`. A generator
        that raises is not restarted: the exception reaches the caller."""
        self.end = end
        self._driven = _Plan(self, origin)

    def catch_up(self) -> None:
        """Do at once what the inference thread would do at the clock's present time:
        take the changes handed over, then plan to the lookahead (or to the end)."""
        if self._driven is None:
            raise RuntimeError("StepPlayer.catch_up() needs begin() first")
        now = self.clock()
        while self._turn(self._driven, now) is None:
            pass

    # ------------------------------------------------------------ the inference thread

    def _run(self, origin: float) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = self.clock()
            try:
                self._plan(origin)
                return
            except Exception:
                log.exception("%s failed; its notes are ended and it restarts", self.tag)
                self._restart_cleanly()
                self.stats.failures += 1
                # As inputs/base.py's supervisor does: a generator that ran well for a
                # while starts again from the first delay, instead of keeping the longest
                # wait of an old burst of failures for the rest of the show.
                if self.clock() - started >= self.backoff.healthy_s:
                    failures = 0
                failures += 1
                self.stats.backoff_s = self.backoff.delay(failures)
                self._stopping.wait(self.stats.backoff_s)
                origin = self.clock() + self.lookahead_s / 2

    def _restart_cleanly(self) -> None:
        self.timeline.drop_tag(self.tag)
        self.release(self.tag)

    def _plan(self, origin: float) -> None:
        plan = _Plan(self, origin)
        while not self._stopping.is_set():
            idle = self._turn(plan, self.clock())
            if idle is not None:
                self._wake.wait(idle)
                self._wake.clear()

    def _turn(self, plan: _Plan, now: float) -> float | None:
        """One turn of planning at clock time `now`: place the changes handed over, apply
        those the plan has reached, then take one step (None) or return how long the plan
        may rest before it needs another."""
        self.alive_at = now
        plan.follow_clock(now)
        while self._commands:
            plan.command(*self._commands.popleft(), now)
        while self._pending:
            plan.schedule(self._pending.popleft(), now)
        if plan.paused or plan.held:
            return PAUSED_IDLE_S
        plan.apply_reached()
        self.finished = plan.finished  # a rollback before the end takes it back
        if self.finished:
            return FINISHED_IDLE_S
        horizon = now + self.lookahead_s
        if plan.until >= horizon:
            return plan.until - horizon + 0.001
        if plan.until < now:
            # Ran dry: the next step's music would be due already. (Not merely close: a
            # change cut CUT_LEAD_S from now leaves the plan there, and is not late.)
            plan.fell_behind(now + MIN_LEAD_S - plan.until, now)
        else:
            plan.behind = False
        plan.step()
        plan.forget_before(now - KEEP_BEHIND_S)
        return None

    def _record_latency(self, latency: float) -> None:
        self.stats.control_latency.record(latency)
        if latency > self.latency_budget_s:
            self.stats.budget_overruns += 1

    def _message(self, event: TimedEvent, controls: Controls, beat: float,
                 beats_per_bar: int) -> tuple[int, int, int]:
        if event.velocity == 0:
            return (NOTE_OFF | self.channel, event.pitch, 0)
        # A generator that shapes its dynamics by the metre is told the clock beat the note
        # falls on (planned, so replays repeat it); others are scaled by the control.
        dynamics = getattr(self.generator, "dynamics", None)
        if dynamics is not None:
            velocity = dynamics(event, beat, beats_per_bar, controls)
        else:
            velocity = round(event.velocity * controls.velocity_scale)
        return (NOTE_ON | self.channel, event.pitch, min(127, max(1, velocity)))


class _Plan:
    """The inference thread's plan: the generator's state, where it stands in the music,
    the state saved after every step (for rollback), and the changes not yet reached.

    Every time here is music time (the generator's own seconds from its time zero, which
    falls on beat `origin_beat`), except `until` and the `now` arguments, which are clock
    times: they say when to plan, never what. The clock's Grid turns one into the other;
    `published` holds what was planned, in beats, on its way to the timeline."""

    def __init__(self, player: StepPlayer, origin: float) -> None:
        self.player = player
        self.gen = player.generator
        self.spb = player.seconds_per_beat
        self.published = BeatPlan(player.timeline, player.tag, player.grid, player.quantize,
                                  lead_s=CUT_LEAD_S)
        grid = self.published.grid
        self.origin_beat = grid.beat_at(origin)  # the beat of the music's time zero
        self.started = grid.started      # the transport Start this plan belongs to
        self.paused = not grid.running
        self.held = False                # switch mode: another generator plays
        self.state = self.gen.initial()
        self.index = 0                # steps taken: seeds the step's randomness
        self.controls = player._controls
        self.basis = self.controls    # the controls the plan was last regenerated under
        self.checkpoints: deque[Checkpoint] = deque()
        self.switches: deque[_Switch] = deque()  # placed changes, in music time order
        self.latency_from: float | None = None  # a change not yet answered
        self.behind = False           # ran dry and catching up (a player keeping time)
        self._save()

    def beat_of(self, music: float) -> float:
        return self.origin_beat + music / self.spb

    def clock_time(self, music: float) -> float:
        return self.published.grid.time_at(self.beat_of(music))

    def music_time(self, t: float) -> float:
        """Clock time `t` in music time, on the 1 µs grid."""
        beat = self.published.grid.beat_at(t)
        return round((beat - self.origin_beat) * self.spb, MUSIC_TIME_DIGITS)

    @property
    def until(self) -> float:
        """The clock time the plan reaches."""
        return self.clock_time(self.state.time)

    @property
    def end(self) -> float | None:
        end = self.player.end
        return None if end is None else self.music_time(end)

    @property
    def finished(self) -> bool:
        end = self.end
        return end is not None and self.state.time >= end

    def _save(self) -> None:
        self.checkpoints.append(Checkpoint(self.index, self.state))

    def step(self) -> None:
        player = self.player
        controls = self.controls
        started = time.perf_counter()
        self.state, events = self.gen.step(self.state, controls, self.index)
        player.stats.step.record(time.perf_counter() - started)
        player.stats.steps += 1
        self.index += 1
        end = self.end
        if end is not None:
            events = [e for e in events if e.time < end]
        if events:
            bar = self.published.grid.beats_per_bar
            planned = []
            for event in events:
                beat = self.beat_of(event.time)
                planned.append((beat, player._message(event, controls, beat, bar)))
            self.published.add(planned)
        if self.latency_from is not None:
            # The first step under the new controls is in the plan (a note, or the
            # decision to rest): the change has been answered.
            player._record_latency(max(0.0, player.clock() - self.latency_from))
            self.latency_from = None
        self._save()

    # ------------------------------------------------------------ the clock's changes

    def follow_clock(self, now: float) -> None:
        """Take the clock's newest Grid: a new tempo re-times what is planned (no
        regeneration); a stop pauses the music at the stop's beat (its notes ended), a
        continue resumes it there, a start begins it again from the top."""
        if not self.published.follow(now):
            return
        grid = self.published.grid
        if grid.started != self.started:
            self.started = grid.started
            self._restart_from_the_top()
        if not grid.running and not self.paused:
            self._pause_at(grid.beat0, now)
        elif grid.running and self.paused:
            self.paused = False

    def command(self, what: str, beat: float, now: float) -> None:
        """Switch mode: hold at `beat` (paused there, its notes ended by the engine), or
        play on from `beat` (the music continues from where it was held)."""
        if what == "hold":
            self.held = True
            cut = round((beat - self.origin_beat) * self.spb, MUSIC_TIME_DIGITS)
            if self._roll_back(cut) and self.state.time < cut:
                self.state = self.gen.wait_until(self.state, cut, self.controls, self.index)
                self.index += 1
                self._save()
            self.published.withdraw_after(beat, now)
        else:
            self.held = False
            self.origin_beat = beat - self.state.time / self.spb
            self._adopt_newest_controls()
            self.checkpoints.clear()
            self._save()

    def _pause_at(self, beat: float, now: float) -> None:
        self.paused = True
        cut = round((beat - self.origin_beat) * self.spb, MUSIC_TIME_DIGITS)
        if self._roll_back(cut) and self.state.time < cut:
            self.state = self.gen.wait_until(self.state, cut, self.controls, self.index)
            self.index += 1
            self._save()
        self.published.withdraw_all(now)
        self.player.release(self.player.tag)

    def _restart_from_the_top(self) -> None:
        player = self.player
        self.published.withdraw_all(player.clock())
        player.release(player.tag)
        self.state, self.index = self.gen.initial(), 0
        self.origin_beat = 0.0
        self._adopt_newest_controls()
        self.checkpoints.clear()
        self._save()

    def _adopt_newest_controls(self) -> None:
        """The music (re)starts here: under the newest controls handed over, whose placed
        changes (placed on a clock that stood still) are dropped, not lost."""
        self.switches.clear()
        self.controls = self.basis = self.player._controls

    # ------------------------------------------------------------ control changes

    def schedule(self, new: Controls, now: float) -> None:
        """Place a change in the music (see the module's docstring).

        Judged against the basis, not the last controls: a slow drift accumulates until it
        matters, then rolls back once. A change replaces the placed changes due at or after
        its own place: each Controls holds every target, so the newer one holds theirs.
        """
        player = self.player
        regenerate = self.gen.changed(self.basis, new, player.rollback_threshold)
        cut = new.t + player.commit_s
        if new.t <= self.clock_time(0.0):
            # A reading from at or before time zero (a replay's first, handed over early):
            # nothing has gone out, so the music starts under it, at any tempo.
            cut = new.t
        # Too late for its cut: something due after it may be on its way out. Not so
        # before the music starts (a reading from before time zero): nothing has been sent
        # yet, and a cut at or before time zero starts the music under the new controls
        # whenever it is seen.
        if cut < now + CUT_LEAD_S and now + CUT_LEAD_S > self.clock_time(0.0):
            player.stats.late_changes += 1
            log.debug("%s: a change came %.1f ms after its cut; cut from the clock",
                      player.tag, (now + CUT_LEAD_S - cut) * 1e3)
            cut = now + CUT_LEAD_S
        at = self.music_time(cut if regenerate else cut + player.lookahead_s)
        while self.switches and self.switches[-1].at >= at:
            self.switches.pop()
        self.switches.append(_Switch(at, new, regenerate, new.t))
        if regenerate:
            self.basis = new
        player._controls = new  # a restarted plan starts under the newest controls

    def apply_reached(self) -> None:
        """Apply the placed changes the plan has reached: a change that matters once the
        plan stands at or past its cut (rolling back to it), a small one once the next
        step would start at or after its place."""
        while self.switches and self.switches[0].at <= self.state.time:
            self._switch(self.switches.popleft())

    def _switch(self, switch: _Switch) -> None:
        new = switch.controls
        if switch.regenerate:
            cut = switch.at
            first = self.checkpoints[0]
            if first.index == 0 and cut <= first.state.time:
                # The music has not started yet: start it under the new controls.
                self.published.withdraw_all(self.player.clock())
                self.state, self.index = first.state, 0
                self.checkpoints.clear()
                self._save()
            elif self._roll_back(cut) and self.state.time < cut:
                self.state = self.gen.wait_until(self.state, cut, new, self.index)
                self.index += 1
                self._save()
            self.latency_from = switch.latency_from
        self.controls = new

    def _roll_back(self, cut: float) -> bool:
        """Drop the plan after music time `cut` and return to the state saved there;
        False when nothing was planned after `cut`."""
        checkpoints = self.checkpoints
        if checkpoints[-1].state.time <= cut or checkpoints[0].state.time > cut:
            # Nothing planned after the cut, or (just after a restart) no state saved
            # before it: the new controls take over from the next step.
            return False
        while len(checkpoints) > 1 and checkpoints[-1].state.time > cut:
            checkpoints.pop()
        restored = checkpoints[-1]
        # Withdrawn by beat: the kept steps' messages lie at or before the restored
        # state's time and the dropped ones' after the cut, whatever quantizing does to
        # their due times.
        self.published.withdraw_after(self.beat_of(restored.state.time),
                                      self.player.clock())
        self.player.stats.rollbacks += 1
        self.index, self.state = restored.index, restored.state
        return True

    def fell_behind(self, behind: float, now: float) -> None:
        player = self.player
        if behind <= CATCH_UP_S or (player.keep_time and behind <= KEEP_TIME_STALL_S):
            # Keep the music's time (and what is placed in it): the plan catches up. A
            # hiccup of a few ms (a slow step just after a rollback) costs a note a few ms
            # late, not a music moved off the clock's beats.
            if not self.behind:
                self.behind = True
                player.stats.late += 1
                if behind > CATCH_UP_S:
                    log.warning("%s fell %.0f ms behind: catching up; the notes due "
                                "meanwhile are late", player.tag, behind * 1e3)
            return
        if behind > (KEEP_TIME_STALL_S if player.keep_time else STALL_S):
            log.warning("%s fell %.0f ms behind: its notes are ended and it starts again",
                        player.tag, behind * 1e3)
            player._restart_cleanly()
            self.published.withdraw_all(now)
            player.stats.stalls += 1  # counted once handled: a reader sees the notes ended
            self.state, self.index = self.gen.initial(), 0
            self.origin_beat = self.published.grid.beat_at(now + MIN_LEAD_S)
        else:
            player.stats.late += 1
            # Play on from now: a short pause, no pile-up.
            self.origin_beat += behind / self.published.grid.beat_s
        # The music's time moved against the clock: the placed changes take over now.
        while self.switches:
            switch = self.switches.popleft()
            self.controls = switch.controls
            if switch.regenerate:
                self.latency_from = switch.latency_from
        self.checkpoints.clear()
        self._save()

    def forget_before(self, t: float) -> None:
        checkpoints = self.checkpoints
        keep_from = self.music_time(t)
        while len(checkpoints) > 1 and checkpoints[1].state.time < keep_from:
            checkpoints.popleft()
        self.published.forget_before(t)
