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
        self._pending: Controls | None = None
        self._lock = threading.Lock()
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
        """Hand new controls to the inference thread (the latest one wins)."""
        with self._lock:
            self._pending = controls
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
        gen = self.generator
        state = gen.initial()
        index = 0
        controls = self._controls
        basis = controls  # the controls the plan was last (re)generated under
        checkpoints: deque[Checkpoint] = deque([Checkpoint(0, origin + state.time, origin,
                                                           state)])
        latency_from: float | None = None  # Reading.t of a change not yet heard
        while not self._stopping.is_set():
            now = self.clock()
            self.alive_at = now
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                # Against the basis, not the last controls: a slow drift accumulates until
                # it matters, then rolls back once.
                if gen.changed(basis, pending, self.rollback_threshold):
                    basis = pending
                    cut = max(pending.t + self.commit_s, now + MIN_LEAD_S)
                    restored = self._roll_back(checkpoints, cut)
                    if restored is not None:
                        index, origin, state = restored.index, restored.origin, restored.state
                        if origin + state.time < cut:
                            state = gen.wait_until(state, cut - origin, pending, index)
                            index += 1
                            checkpoints.append(Checkpoint(index, origin + state.time, origin,
                                                          state))
                    latency_from = pending.t
                controls = self._controls = pending

            planned_until = origin + state.time
            if planned_until >= now + self.lookahead_s:
                self._wake.wait(planned_until - now - self.lookahead_s + 0.001)
                self._wake.clear()
                continue
            if planned_until < now + MIN_LEAD_S:
                behind = now + MIN_LEAD_S - planned_until
                if behind > STALL_S:
                    self.stats.stalls += 1
                    log.warning("%s fell %.0f ms behind: its notes are ended and it starts "
                                "again", self.tag, behind * 1e3)
                    self._restart_cleanly()
                    state, index = gen.initial(), 0
                    origin = now + MIN_LEAD_S
                else:
                    self.stats.late += 1
                    origin += behind  # play on from now: a short pause, no pile-up
                checkpoints.clear()
                checkpoints.append(Checkpoint(index, origin + state.time, origin, state))

            started = time.perf_counter()
            state, events = gen.step(state, controls, index)
            self.stats.step.record(time.perf_counter() - started)
            self.stats.steps += 1
            index += 1
            if events:
                self.timeline.add_many(
                    [(origin + e.time, self._message(e, controls)) for e in events], self.tag)
            if latency_from is not None:
                # The first step under the new controls is in the plan (a note, or the
                # decision to rest): the change has been answered.
                self._record_latency(self.clock() - latency_from)
                latency_from = None
            checkpoints.append(Checkpoint(index, origin + state.time, origin, state))
            while len(checkpoints) > 1 and checkpoints[1].at < now - KEEP_BEHIND_S:
                checkpoints.popleft()

    def _roll_back(self, checkpoints: deque[Checkpoint], cut: float) -> Checkpoint | None:
        """Drop the plan after `cut`; the checkpoint to regenerate from, or None when
        nothing was planned after `cut`."""
        if checkpoints[-1].at <= cut or checkpoints[0].at > cut:
            # Nothing planned after the cut, or (just after a restart) no state saved
            # before it: the new controls take over from the next step.
            return None
        while len(checkpoints) > 1 and checkpoints[-1].at > cut:
            checkpoints.pop()
        self.timeline.drop_after(cut, self.tag)
        self.stats.rollbacks += 1
        return checkpoints[-1]

    def _record_latency(self, latency: float) -> None:
        self.stats.control_latency.record(latency)
        if latency > self.latency_budget_s:
            self.stats.budget_overruns += 1

    def _message(self, event: TimedEvent, controls: Controls) -> tuple[int, int, int]:
        if event.velocity == 0:
            return (NOTE_OFF | self.channel, event.pitch, 0)
        velocity = round(event.velocity * controls.velocity_scale)
        return (NOTE_ON | self.channel, event.pitch, min(127, max(1, velocity)))
