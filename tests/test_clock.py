"""Musical time: tempo changes keep position; MIDI clock is followed; pulses are sent."""

from __future__ import annotations

import math

import pytest

from livegen.clock import (
    CLOCK_START,
    CLOCK_STOP,
    CLOCK_TICK,
    MAX_BPM,
    MAX_PULSES_PER_CALL,
    MIN_BPM,
    PPQN,
    Clock,
)


def test_beats_and_bars_at_the_internal_tempo() -> None:
    clock = Clock(bpm=120, beats_per_bar=4, origin=10.0)
    assert clock.beat_at(11.0) == pytest.approx(2.0)
    assert clock.time_at(8.0) == pytest.approx(14.0)
    assert clock.next_bar(10.1) == pytest.approx(12.0)
    assert clock.next_bar(12.0) == pytest.approx(12.0)


def test_tempo_change_does_not_move_the_position() -> None:
    clock = Clock(bpm=120, origin=0.0)
    clock.set_tempo(60, 1.0)
    assert clock.beat_at(1.0) == pytest.approx(2.0)
    assert clock.beat_at(2.0) == pytest.approx(3.0)


def test_follows_incoming_midi_clock_tempo_and_stop() -> None:
    clock = Clock(bpm=100, origin=0.0)
    clock.on_midi(CLOCK_START, 5.0)
    pulse = 60.0 / 90.0 / PPQN  # a sender at 90 bpm
    assert not clock.running  # waits for the first pulse, which is beat 0
    for i in range(3 * PPQN + 1):
        clock.on_midi(CLOCK_TICK, 5.0 + i * pulse)
    assert clock.following
    assert clock.bpm == pytest.approx(90.0, rel=1e-6)
    assert clock.beat_at(5.0 + 3 * PPQN * pulse) == pytest.approx(3.0, abs=1e-9)
    assert clock.beat_at(5.0 + 3.5 * PPQN * pulse) == pytest.approx(3.5, abs=1e-6)
    clock.on_midi(CLOCK_STOP, 8.0)
    assert clock.beat_at(9.0) == clock.beat_at(8.0)


def test_pulses_to_send_fall_on_the_24_ppqn_grid() -> None:
    clock = Clock(bpm=120, origin=0.0)
    pulses = clock.pulses_between(0.0, 1.0)  # two beats
    assert len(pulses) == 2 * PPQN
    assert pulses[1] - pulses[0] == pytest.approx(0.5 / PPQN)
    assert clock.pulses_between(1.0, 1.0) == []


def test_joins_a_clock_that_is_already_running_without_a_start() -> None:
    clock = Clock(bpm=120, origin=0.0)
    pulse = 60.0 / 100.0 / PPQN
    for i in range(2 * PPQN):
        clock.on_midi(CLOCK_TICK, 1.0 + i * pulse)
    assert clock.following and clock.bpm == pytest.approx(100.0, rel=1e-6)


def test_a_tempo_of_zero_or_a_billion_is_held_to_the_musical_range() -> None:
    clock = Clock(bpm=120, origin=0.0)
    clock.set_tempo(0.0, 1.0)  # was a ZeroDivisionError at the next beat_s
    assert clock.bpm == MIN_BPM
    assert clock.beat_at(4.0) == pytest.approx(2.0 + 3.0 * MIN_BPM / 60.0)
    clock.set_tempo(1e9, 4.0)  # was pulses planned until memory ran out
    assert clock.bpm == MAX_BPM
    assert len(clock.pulses_between(4.0, 5.0)) == MAX_BPM / 60.0 * PPQN
    clock.set_tempo(-50.0, 5.0)
    assert clock.bpm == MIN_BPM


def test_a_tempo_that_is_not_a_number_is_refused_and_the_clock_keeps_its_tempo(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(bpm=120, origin=0.0)
    for bad in (math.nan, math.inf, -math.inf):
        clock.set_tempo(bad, 1.0)
    assert clock.bpm == 120.0 and clock.beat_at(1.0) == pytest.approx(2.0)
    assert "refused" in caplog.text
    with pytest.raises(ValueError):
        Clock(bpm=math.nan)


def test_pulses_between_never_plans_an_unbounded_list() -> None:
    clock = Clock(bpm=MAX_BPM, origin=0.0)
    pulses = clock.pulses_between(0.0, 1e5)  # 28 hours: 12 million pulses uncapped
    assert len(pulses) == MAX_PULSES_PER_CALL
    assert pulses[1] - pulses[0] == pytest.approx(60.0 / MAX_BPM / PPQN)
    assert clock.pulses_between(0.0, math.nan) == []
    assert clock.pulses_between(math.nan, 1.0) == []


def test_a_runaway_clock_sender_is_followed_within_the_musical_range() -> None:
    clock = Clock(bpm=120, origin=0.0)
    clock.on_midi(CLOCK_START, 0.0)
    for i in range(PPQN + 1):
        clock.on_midi(CLOCK_TICK, 1.0 + i * 1e-6)  # a million pulses a second
    assert clock.bpm == MAX_BPM
    assert len(clock.pulses_between(2.0, 3.0)) <= MAX_BPM / 60.0 * PPQN + 1
