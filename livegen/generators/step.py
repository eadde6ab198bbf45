"""Playing a step generator live: plan ahead, keep state, roll back on a control change.

A step generator (the Char-RNN) extends its music one step at a time. `StepPlayer` runs it
in an inference thread of its own: it keeps the plan `lookahead` ahead of the playhead,
puts every planned MIDI message into the timeline with its due time, and keeps the
generator's state after every step. When the controls change enough to matter, the
planned messages due after `now + commit` are dropped and the music is regenerated from
the state saved at that moment, under the new controls (rollback). Control latency is
measured for every rollback, from the reading that caused the change to the moment the
first step under the new controls is in the plan: a note, or the model's decision to
rest (a rest puts no message in the timeline, yet it is the answer to the change).

The contract with a step generator (see `StepGenerator`): a step either emits events at
the state's current time or advances the time without emitting (the event vocabulary
works so). Hence the messages of the steps after a checkpoint are all due later than the
checkpoint's time, and dropping "after t" separates kept from regenerated music exactly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from livegen.control import Controls
from livegen.music.events import TimedEvent
from livegen.stats import Samples
from livegen.timeline import Timeline

log = logging.getLogger(__name__)

NOTE_ON, NOTE_OFF = 0x90, 0x80
# Plan at least this far ahead of now, even after a hiccup: a message planned for "now"
# is already late by the time the output thread sees it.
MIN_LEAD_S = 0.005
# A plan that ran dry by more than this is a stalled generator, not a hiccup: its notes
# are ended and it starts afresh.
STALL_S = 0.25
# State is kept this far behind the playhead; rollback never reaches further back.
KEEP_BEHIND_S = 1.0


class StepState(Protocol):
    @property
    def time(self) -> float:
        """Seconds of music planned so far, from the generator's start."""


class StepGenerator(Protocol):
    """What StepPlayer needs of a step generator. States are immutable values."""

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
    at: float         # monotonic time the state has reached
    origin: float     # monotonic time of the generator's time zero, then
    state: Any


@dataclass(slots=True)
class PlayerStats:
    step: Samples            # seconds per generator step
    control_latency: Samples  # seconds from Reading.t to the first step planned under it
    steps: int = 0
    rollbacks: int = 0
    budget_overruns: int = 0  # control latencies over the budget
    late: int = 0             # plan ran dry: re-anchored
    stalls: int = 0           # plan ran dry badly: notes ended, generator restarted
    failures: int = 0         # the generator raised

    @classmethod
    def empty(cls) -> PlayerStats:
        return cls(step=Samples(), control_latency=Samples())


class StepPlayer:
    """Runs one step generator in its own inference thread against the timeline."""

    def __init__(self, generator: StepGenerator, timeline: Timeline, *, channel: int,
                 lookahead_s: float, commit_s: float, latency_budget_s: float,
                 rollback_threshold: float, controls: Controls,
                 release: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.generator = generator
        self.tag = generator.name
        self.timeline = timeline
        self.channel = channel - 1
        self.lookahead_s = lookahead_s
        self.commit_s = commit_s
        self.latency_budget_s = latency_budget_s
        self.rollback_threshold = rollback_threshold
        self.release = release  # ends the notes a tag started (the output's ledger)
        self.clock = clock
        self.stats = PlayerStats.empty()
        self._controls = controls
        self._pending: deque[Controls] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.alive_at = 0.0  # monotonic time of the loop's last turn (for the watchdog)

    # ------------------------------------------------------------ from the event loop

    def start(self, origin: float) -> None:
        """Start planning; the generator's time zero falls on monotonic time `origin`."""
        self._thread = threading.Thread(target=self._run, args=(origin,),
                                        name=f"infer-{self.tag}", daemon=True)
        self._thread.start()

    def set_controls(self, controls: Controls) -> None:
        """Hand new controls to the inference thread. Every change is judged in order, so
        the music does not depend on how often the inference thread happens to wake."""
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

    # ------------------------------------------------------------ the inference thread

    def _run(self, origin: float) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._plan(origin)
                return
            except Exception:
                log.exception("%s failed; its notes are ended and it restarts", self.tag)
                self._restart_cleanly()
                failures += 1
                self.stats.failures += 1
                self._stopping.wait(min(5.0, 0.1 * 2 ** failures))
                origin = self.clock() + self.lookahead_s / 2

    def _restart_cleanly(self) -> None:
        self.timeline.drop_tag(self.tag)
        self.release(self.tag)

    def _plan(self, origin: float) -> None:
        plan = _Plan(self, origin)
        while not self._stopping.is_set():
            now = self.clock()
            self.alive_at = now
            while self._pending:
                plan.change(self._pending.popleft(), now)
            planned_until = plan.until
            if planned_until >= now + self.lookahead_s:
                self._wake.wait(planned_until - now - self.lookahead_s + 0.001)
                self._wake.clear()
                continue
            if planned_until < now + MIN_LEAD_S:
                plan.fell_behind(now + MIN_LEAD_S - planned_until, now)
            plan.step()
            plan.forget_before(now - KEEP_BEHIND_S)

    def _record_latency(self, latency: float) -> None:
        self.stats.control_latency.record(latency)
        if latency > self.latency_budget_s:
            self.stats.budget_overruns += 1

    def _message(self, event: TimedEvent, controls: Controls) -> tuple[int, int, int]:
        if event.velocity == 0:
            return (NOTE_OFF | self.channel, event.pitch, 0)
        velocity = round(event.velocity * controls.velocity_scale)
        return (NOTE_ON | self.channel, event.pitch, min(127, max(1, velocity)))


class _Plan:
    """The inference thread's plan: the generator's state, where it stands in time, and
    the state saved after every step (for rollback)."""

    def __init__(self, player: StepPlayer, origin: float) -> None:
        self.player = player
        self.gen = player.generator
        self.origin = origin          # monotonic time of the generator's time zero
        self.state = self.gen.initial()
        self.index = 0                # steps taken: seeds the step's randomness
        self.controls = player._controls
        self.basis = self.controls    # the controls the plan was last regenerated under
        self.checkpoints: deque[Checkpoint] = deque()
        self.latency_from: float | None = None  # Reading.t of a change not yet answered
        self._save()

    @property
    def until(self) -> float:
        return self.origin + self.state.time

    def _save(self) -> None:
        self.checkpoints.append(Checkpoint(self.index, self.until, self.origin, self.state))

    def step(self, controls: Controls | None = None) -> None:
        player = self.player
        controls = controls or self.controls
        started = time.perf_counter()
        self.state, events = self.gen.step(self.state, controls, self.index)
        player.stats.step.record(time.perf_counter() - started)
        player.stats.steps += 1
        self.index += 1
        if events:
            player.timeline.add_many(
                [(self.origin + e.time, player._message(e, controls)) for e in events],
                player.tag)
        if self.latency_from is not None:
            # The first step under the new controls is in the plan (a note, or the
            # decision to rest): the change has been answered.
            player._record_latency(player.clock() - self.latency_from)
            self.latency_from = None
        self._save()

    def change(self, new: Controls, now: float) -> None:
        """Apply new controls: regenerate after now + commit if the change matters.

        Judged against the basis, not the last controls: a slow drift accumulates until it
        matters, then rolls back once.
        """
        player = self.player
        if self.gen.changed(self.basis, new, player.rollback_threshold):
            cut = max(new.t + player.commit_s, now + MIN_LEAD_S)
            first = self.checkpoints[0]
            if first.index == 0 and cut <= first.at:
                # The music has not started yet: start it under the new controls.
                player.timeline.drop_tag(player.tag)
                self.state, self.index = first.state, 0
                self.checkpoints.clear()
                self._save()
            # Plan up to the cut under the controls in force, as a plan that had kept up
            # would have: the music then depends on the changes, not on when this thread
            # woke to see them.
            while self.until <= cut < now + player.lookahead_s:
                self.step()
            if self._roll_back(cut) and self.until < cut:
                self.state = self.gen.wait_until(self.state, cut - self.origin, new,
                                                 self.index)
                self.index += 1
                self._save()
            self.basis = new
            self.latency_from = new.t
        self.controls = player._controls = new

    def _roll_back(self, cut: float) -> bool:
        """Drop the plan after `cut` and return to the state saved there; False when
        nothing was planned after `cut`."""
        checkpoints = self.checkpoints
        if checkpoints[-1].at <= cut or checkpoints[0].at > cut:
            # Nothing planned after the cut, or (just after a restart) no state saved
            # before it: the new controls take over from the next step.
            return False
        while len(checkpoints) > 1 and checkpoints[-1].at > cut:
            checkpoints.pop()
        self.player.timeline.drop_after(cut, self.player.tag)
        self.player.stats.rollbacks += 1
        restored = checkpoints[-1]
        self.index, self.origin, self.state = restored.index, restored.origin, restored.state
        return True

    def fell_behind(self, behind: float, now: float) -> None:
        player = self.player
        if behind > STALL_S:
            player.stats.stalls += 1
            log.warning("%s fell %.0f ms behind: its notes are ended and it starts again",
                        player.tag, behind * 1e3)
            player._restart_cleanly()
            self.state, self.index = self.gen.initial(), 0
            self.origin = now + MIN_LEAD_S
        else:
            player.stats.late += 1
            self.origin += behind  # play on from now: a short pause, no pile-up
        self.checkpoints.clear()
        self._save()

    def forget_before(self, t: float) -> None:
        checkpoints = self.checkpoints
        while len(checkpoints) > 1 and checkpoints[1].at < t:
            checkpoints.popleft()
