"""StepPlayer: plans ahead to the lookahead, rolls back after now + commit on a control
change, measures control latency, ends a failing generator's notes and restarts it."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import pytest

from livegen.control import Controls
from livegen.generators.step import NOTE_ON, StepPlayer
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
