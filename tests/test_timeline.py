"""The timeline: order, ties, rollback, and waking the output thread."""

from __future__ import annotations

import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from livegen.timeline import Timeline

ON, OFF = 0x90, 0x80


def test_pop_due_takes_only_what_is_due_in_due_order() -> None:
    timeline = Timeline()
    timeline.add(3.0, (ON, 62, 90))
    timeline.add(1.0, (ON, 60, 90))
    timeline.add(2.0, (ON, 61, 90))
    assert timeline.next_due() == 1.0
    assert [e.message[1] for e in timeline.pop_due(2.0)] == [60, 61]
    assert len(timeline) == 1
    assert timeline.pop_due(2.9) == []
    assert [e.due for e in timeline.pop_due(3.0)] == [3.0]
    assert timeline.next_due() is None


def test_ties_keep_insertion_order_so_a_retrigger_stays_off_then_on() -> None:
    timeline = Timeline()
    timeline.add(1.0, (ON, 60, 90), tag="a")
    timeline.add_many([(2.0, (OFF, 60, 0)), (2.0, (ON, 60, 80))], tag="a")
    timeline.add(2.0, (ON, 64, 70), tag="b")
    timeline.add(2.0, (ON, 67, 70), tag="a")
    assert [e.message for e in timeline.pop_due(5.0)] == [
        (ON, 60, 90), (OFF, 60, 0), (ON, 60, 80), (ON, 64, 70), (ON, 67, 70)]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 127)), max_size=200))
def test_everything_added_comes_out_once_sorted_by_due_then_insertion(
        events: list[tuple[int, int]]) -> None:
    timeline = Timeline()
    for due, pitch in events:
        timeline.add(float(due), (ON, pitch, 1))
    out = timeline.pop_due(float("inf"))
    expected = sorted(enumerate(events), key=lambda item: (item[1][0], item[0]))
    assert [(e.due, e.message[1]) for e in out] == [(float(d), p) for _, (d, p) in expected]


def test_drop_after_rolls_back_one_tag_after_a_time() -> None:
    timeline = Timeline()
    for i in range(6):
        timeline.add(float(i), (ON, 60 + i, 90), tag="charrnn")
        timeline.add(float(i), (ON, 40 + i, 90), tag="dcrnn")
    dropped = timeline.drop_after(2.5, "charrnn")
    assert [(e.due, e.message[1]) for e in dropped] == [(3.0, 63), (4.0, 64), (5.0, 65)]
    left = timeline.pop_due(10.0)
    assert [e.message[1] for e in left if e.tag == "charrnn"] == [60, 61, 62]
    assert [e.message[1] for e in left if e.tag == "dcrnn"] == [40, 41, 42, 43, 44, 45]


def test_drop_tag_removes_all_of_a_tag_and_keeps_the_rest_in_order() -> None:
    timeline = Timeline()
    timeline.add_many([(1.0, (ON, 60, 1)), (2.0, (OFF, 60, 0))], tag="gone")
    timeline.add_many([(0.5, (ON, 70, 1)), (2.0, (OFF, 70, 0))], tag="kept")
    assert [e.message[1] for e in timeline.drop_tag("gone")] == [60, 60]
    assert timeline.drop_tag("gone") == []
    assert [(e.due, e.tag) for e in timeline.pop_due(9.0)] == [(0.5, "kept"), (2.0, "kept")]


def test_wait_wakes_early_when_an_earlier_event_is_added() -> None:
    timeline = Timeline()
    now = time.monotonic()
    timeline.add(now + 60.0, (ON, 60, 1))
    woke = []

    def waiter() -> None:
        woke.append(timeline.wait(timeout=20.0))

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    soon = time.monotonic() + 0.05
    timeline.add(soon, (ON, 61, 1))
    thread.join(timeout=10.0)
    assert not thread.is_alive()
    assert woke == [soon]
    assert time.monotonic() >= soon


def test_wait_returns_lead_seconds_before_the_due_time() -> None:
    timeline = Timeline()
    due = time.monotonic() + 0.2
    timeline.add(due, (ON, 60, 1))
    assert timeline.wait(lead=0.1, timeout=5.0) == due
    assert due - 0.1 <= time.monotonic() < due


def test_wait_ends_on_timeout_and_on_wake() -> None:
    timeline = Timeline()
    start = time.monotonic()
    assert timeline.wait(timeout=0.05) is None
    assert time.monotonic() - start >= 0.05
    threading.Timer(0.05, timeline.wake).start()
    start = time.monotonic()
    assert timeline.wait(timeout=20.0) is None
    assert time.monotonic() - start < 10.0


def test_adds_from_many_threads_lose_nothing() -> None:
    timeline = Timeline()

    def writer(base: int) -> None:
        for i in range(500):
            timeline.add(float(i), (ON, base, i % 128), tag=str(base))

    threads = [threading.Thread(target=writer, args=(b,)) for b in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = timeline.pop_due(1e9)
    assert len(out) == 2000
    assert [e.due for e in out] == sorted(e.due for e in out)
    for base in range(4):  # each writer's events stay in its own order
        assert [e.message[2] for e in out if e.tag == str(base)] == [i % 128 for i in range(500)]
