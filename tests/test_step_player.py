"""StepPlayer: plans ahead to the lookahead, rolls back after t + commit on a control
change, measures control latency, ends a failing generator's notes and restarts it (its
backoff reset after a healthy run); on a virtual clock, the same music whenever it sees a
change, and nothing after the end."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import pytest

from livegen.control import Controls
from livegen.generators.step import NOTE_OFF, NOTE_ON, StepPlayer
from livegen.inputs.base import Backoff
from livegen.music.events import TimedEvent
from livegen.timeline import Timeline


@dataclass(frozen=True)
class ArpState:
    time: float = 0.0
    phase: int = 0          # 0: note-on, 1: wait, 2: note-off, 3: wait
    pitch: int = 0


class Arpeggio:
    """A plain step generator for the player's tests: 50 ms notes, 50 ms rests, its pitch
    set by controls.pitch. It keeps the contract: events at the current time, or a wait."""

    name = "arp"

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def initial(self) -> ArpState:
        return ArpState()

    def step(self, state: ArpState, controls: Controls, index: int):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("model blew up")
        if state.phase == 0:
            pitch = 40 + round(controls.pitch * 40)
            return (dataclasses.replace(state, phase=1, pitch=pitch),
                    [TimedEvent(state.time, pitch, 100)])
        if state.phase == 2:
            return dataclasses.replace(state, phase=3), [TimedEvent(state.time, state.pitch, 0)]
        return dataclasses.replace(state, phase=(state.phase + 1) % 4,
                                   time=round(state.time + 0.05, 6)), []

    def wait_until(self, state: ArpState, time: float, controls: Controls,
                   index: int) -> ArpState:
        return dataclasses.replace(state, time=time)

    def changed(self, old: Controls, new: Controls, threshold: float) -> bool:
        return abs(old.pitch - new.pitch) > threshold


class Released:
    def __init__(self) -> None:
        self.tags: list[str] = []

    def __call__(self, tag: str) -> None:
        self.tags.append(tag)


def make_player(gen: Arpeggio, timeline: Timeline, released: Released,
                lookahead_s: float = 0.4) -> StepPlayer:
    return StepPlayer(gen, timeline, channel=3, lookahead_s=lookahead_s, commit_s=0.02,
                      latency_budget_s=0.010, rollback_threshold=0.01,
                      controls=Controls(pitch=0.0), release=released)


def wait_for(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_plans_up_to_the_lookahead_and_no_further() -> None:
    timeline, released = Timeline(), Released()
    player = make_player(Arpeggio(), timeline, released)
    origin = time.monotonic() + 0.05
    player.start(origin)
    try:
        wait_for(lambda: timeline.next_due() is not None)
        time.sleep(0.1)
        pending = timeline.pop_due(float("inf"))
        assert pending[0].message == (NOTE_ON | 2, 40, 100)  # channel 3 -> status nibble 2
        last = max(e.due for e in pending)
        assert origin + 0.3 <= last <= time.monotonic() + 0.4 + 0.06
    finally:
        player.stop()


def test_a_control_change_rolls_back_after_commit_and_regenerates() -> None:
    timeline, released = Timeline(), Released()
    player = make_player(Arpeggio(), timeline, released)
    player.start(time.monotonic() + 0.01)
    try:
        wait_for(lambda: len(timeline) > 6)
        time.sleep(0.05)
        change_t = time.monotonic()
        player.set_controls(Controls(version=1, t=change_t, pitch=1.0))
        wait_for(lambda: player.stats.control_latency.count == 1)
        time.sleep(0.05)
        events = timeline.pop_due(float("inf"))
        ons = [(e.due, e.message[1]) for e in events if e.message[0] == NOTE_ON | 2]
        assert all(p == 40 for due, p in ons if due <= change_t + 0.02)
        assert all(p == 80 for due, p in ons if due > change_t + 0.02)
        assert any(p == 80 for _, p in ons)
        assert player.stats.rollbacks == 1
        assert player.stats.control_latency.values()[0] < 0.5  # loose: a shared machine
    finally:
        player.stop()


def test_small_changes_do_not_roll_back() -> None:
    timeline, released = Timeline(), Released()
    player = make_player(Arpeggio(), timeline, released)
    player.start(time.monotonic())
    try:
        wait_for(lambda: len(timeline) > 4)
        player.set_controls(Controls(version=1, t=time.monotonic(), pitch=0.005))
        time.sleep(0.05)
        assert player.stats.rollbacks == 0
    finally:
        player.stop()


def test_same_controls_same_music() -> None:
    """Steps are a function of state, controls and index: two players agree exactly."""
    runs = []
    for _ in range(2):
        timeline, released = Timeline(), Released()
        player = make_player(Arpeggio(), timeline, released)
        origin = time.monotonic() + 0.05
        player.start(origin)
        wait_for(lambda timeline=timeline: len(timeline) >= 8)
        player.stop()
        runs.append([(round(e.due - origin, 6), e.message)
                     for e in timeline.pop_due(float("inf"))][:8])
    assert runs[0] == runs[1]


def test_a_failing_generator_ends_its_notes_and_restarts() -> None:
    timeline, released = Timeline(), Released()
    player = make_player(Arpeggio(fail_at=5), timeline, released)
    player.start(time.monotonic())
    try:
        wait_for(lambda: player.stats.failures == 1)
        assert released.tags == ["arp"]
        wait_for(lambda: len(timeline) > 2)  # planning again
        assert player.running
    finally:
        player.stop()
    assert not player.running


@pytest.mark.parametrize("stall_s", [0.05, 0.4])
def test_a_plan_that_runs_dry_is_counted(stall_s: float) -> None:
    timeline, released = Timeline(), Released()
    gate = threading.Event()

    class Slow(Arpeggio):
        def step(self, state, controls, index):
            if index == 3 and not gate.is_set():
                gate.set()
                time.sleep(stall_s + 0.05)
            return super().step(state, controls, index)

    player = make_player(Slow(), timeline, released, lookahead_s=0.02)
    player.start(time.monotonic())
    try:
        wait_for(lambda: player.stats.late + player.stats.stalls >= 1)
        if stall_s > 0.25:
            wait_for(lambda: player.stats.stalls >= 1)
            assert set(released.tags) == {"arp"}
    finally:
        player.stop()


# ---------------------------------------------------------------- exact, on any schedule

class Clock:
    """A virtual clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def played(player_clock: Clock, timeline: Timeline, player: StepPlayer, handovers,
           until: float, stride: float = 0.02,
           starved: tuple[float, float] = (0.0, 0.0)) -> list[tuple[float, tuple[int, ...]]]:
    """Drive a player on a virtual clock up to `until`, handing each (clock time,
    controls) of `handovers` over at its time, and not letting it plan while the clock is
    within `starved`; every message it planned, in the order it fell due."""
    sent = []
    pending = sorted(handovers, key=lambda h: h[0])
    while player_clock.now < until:
        while pending and pending[0][0] <= player_clock.now:
            player.set_controls(pending.pop(0)[1])
        if not starved[0] <= player_clock.now < starved[1]:
            player.catch_up()
        sent += [(round(e.due, 9), e.message) for e in timeline.pop_due(player_clock.now)]
        player_clock.now = round(player_clock.now + stride, 9)
    return sent + [(round(e.due, 9), e.message) for e in timeline.pop_due(float("inf"))]


@pytest.mark.parametrize("change", [
    Controls(version=1, t=1.037, pitch=1.0),                   # matters: rolled back to
    Controls(version=1, t=1.037, pitch=0.005, velocity=0.5),   # small: no rollback
])
def test_a_change_plays_the_same_music_however_early_or_late_the_player_sees_it(
        change: Controls) -> None:
    """Seen long before its cut (the plan has not got there), just before (the plan has
    passed it: rollback), or between: the same messages at the same times."""
    runs = {}
    for seen_at in (0.3, 0.6, 0.8, 0.95, 1.04):
        clock, timeline = Clock(0.0), Timeline()
        player = StepPlayer(Arpeggio(), timeline, channel=1, lookahead_s=0.4, commit_s=0.02,
                            latency_budget_s=0.01, rollback_threshold=0.01,
                            controls=Controls(pitch=0.0), release=Released(), clock=clock)
        player.begin(origin=0.0)
        runs[seen_at] = played(clock, timeline, player, [(seen_at, change)], until=3.0)
        assert player.stats.late_changes == 0
    first = runs[0.3]
    for seen_at, run in runs.items():
        assert run == first, f"seen at {seen_at} s"
    if change.pitch == 1.0:
        # Before the cut (1.057 s) the old pitch, after it only the new one.
        ons = [(due, m[1]) for due, m in first if m[0] & 0xF0 == NOTE_ON]
        assert {p for due, p in ons if due <= 1.057} == {40}
        assert {p for due, p in ons if due > 1.057} == {80}
    else:
        # The small change takes over from the first step at or after cut + lookahead.
        velocities = [(due, m[2]) for due, m in first if m[0] & 0xF0 == NOTE_ON]
        assert {v for due, v in velocities if due < 1.457} == {100}
        assert {v for due, v in velocities if due >= 1.457} == {67}


def test_a_change_from_before_the_music_starts_is_never_late() -> None:
    """A reading from before time zero, seen after its cut but before the music starts:
    nothing has been sent, so the music starts under it, as when seen in good time."""
    runs = []
    for seen_at in (-0.5, -0.02):
        clock, timeline = Clock(-0.6), Timeline()
        player = StepPlayer(Arpeggio(), timeline, channel=1, lookahead_s=0.4, commit_s=0.02,
                            latency_budget_s=0.01, rollback_threshold=0.01,
                            controls=Controls(pitch=0.0), release=Released(), clock=clock)
        player.begin(origin=0.0)
        runs.append(played(clock, timeline, player,
                           [(seen_at, Controls(version=1, t=-0.1, pitch=1.0))], until=1.0))
        assert player.stats.late_changes == 0
    assert runs[0] == runs[1]
    assert {m[1] for _, m in runs[0] if m[0] & 0xF0 == NOTE_ON} == {80}


def test_a_change_seen_after_its_cut_is_counted_late() -> None:
    clock, timeline = Clock(0.0), Timeline()
    player = StepPlayer(Arpeggio(), timeline, channel=1, lookahead_s=0.4, commit_s=0.02,
                        latency_budget_s=0.01, rollback_threshold=0.01,
                        controls=Controls(pitch=0.0), release=Released(), clock=clock)
    player.begin(origin=0.0)
    sent = played(clock, timeline, player, [(1.1, Controls(version=1, t=1.0, pitch=1.0))],
                  until=2.0)
    assert player.stats.late_changes == 1
    # Cut from the clock instead: nothing sent before it was seen is taken back.
    assert {m[1] for due, m in sent if m[0] & 0xF0 == NOTE_ON and due <= 1.1} == {40}


@pytest.mark.parametrize("keep_time", [True, False])
def test_a_player_that_keeps_time_catches_up_instead_of_moving_the_music(
        keep_time: bool) -> None:
    """Starved for 0.6 s (longer than its lookahead), a replay's player plays the same
    notes at the same planned times, the overdue ones late; a live player re-anchors."""
    runs = []
    for starved in ((0.0, 0.0), (0.5, 1.1)):
        clock, timeline = Clock(-0.1), Timeline()
        player = StepPlayer(Arpeggio(), timeline, channel=1, lookahead_s=0.4, commit_s=0.02,
                            latency_budget_s=0.01, rollback_threshold=0.01,
                            controls=Controls(pitch=0.0), release=Released(), clock=clock,
                            keep_time=keep_time)
        player.begin(origin=0.0)
        runs.append(sorted(played(clock, timeline, player,
                                  [(0.2, Controls(version=1, t=1.3, pitch=1.0))],
                                  until=2.5, starved=starved)))
        assert player.stats.late == (1 if starved[1] else 0)
    assert (runs[0] == runs[1]) is keep_time


def test_nothing_is_planned_at_or_after_the_end() -> None:
    clock, timeline = Clock(0.0), Timeline()
    gen = Arpeggio()
    player = StepPlayer(gen, timeline, channel=1, lookahead_s=0.4, commit_s=0.02,
                        latency_budget_s=0.01, rollback_threshold=0.01,
                        controls=Controls(pitch=0.0), release=Released(), clock=clock)
    player.begin(origin=0.5, end=1.5)
    sent = played(clock, timeline, player, [], until=4.0)
    assert sent and max(due for due, _ in sent) < 1.5
    assert (1.45, (NOTE_OFF, 40, 0)) in sent  # the last note ends before the end
    assert gen.calls <= 40  # one second of steps (4 per 100 ms): it stops at the end


def test_a_generator_that_ran_well_restarts_after_the_first_delay_again() -> None:
    """The restart backoff grows over a burst of failures and starts again from its first
    delay once the generator has run healthily for a while."""
    timeline, released = Timeline(), Released()
    backoffs: list[float] = []
    healthy_s = 0.5

    class Flaky(Arpeggio):
        def __init__(self) -> None:
            super().__init__()
            self.plans = 0
            self.plan_started = 0.0

        def initial(self) -> ArpState:
            self.plans += 1
            self.plan_started = time.monotonic()
            if self.plans > 1:
                backoffs.append(player.stats.backoff_s)
            return super().initial()

        def step(self, state, controls, index):
            # Plans 1-4 fail at once, plan 5 after running well for longer than
            # healthy_s, plan 6 plays on.
            if self.plans <= 4 or (self.plans == 5 and
                                   time.monotonic() - self.plan_started > healthy_s + 0.2):
                raise RuntimeError("model blew up")
            return super().step(state, controls, index)

    player = StepPlayer(Flaky(), timeline, channel=1, lookahead_s=0.05, commit_s=0.02,
                        latency_budget_s=0.01, rollback_threshold=0.01,
                        controls=Controls(), release=released,
                        backoff=Backoff(first=0.01, factor=2.0, cap=5.0, healthy_s=healthy_s))
    player.start(time.monotonic())
    try:
        wait_for(lambda: len(backoffs) == 5, timeout=10.0)
    finally:
        player.stop()
    assert player.stats.failures == 5
    assert backoffs == [0.01, 0.02, 0.04, 0.08, 0.01]
