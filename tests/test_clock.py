"""Musical time: tempo changes keep position; MIDI clock is followed; pulses are sent."""

from __future__ import annotations

import pytest

from livegen.clock import CLOCK_START, CLOCK_STOP, CLOCK_TICK, PPQN, Clock


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
