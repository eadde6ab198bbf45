"""The arithmetic behind `livegen bench engine`'s switch-over figures."""

from __future__ import annotations

import itertools

import numpy as np

from livegen.bench import BENCH_VELOCITIES, engine_hand, switch_over

LOW, HIGH = (round(80 * v / 0.75) for v in BENCH_VELOCITIES)


def note_on(velocity: int) -> tuple[int, int, int]:
    return (0x90, 60, velocity)


def test_switch_over_is_the_last_old_note_after_a_change_and_first_note_the_first_new() -> None:
    jumps = [10.0, 11.0, 12.0]  # v: high from 10, low from 11, high from 12
    received = [(10.5, note_on(HIGH)),
                (11.004, note_on(HIGH)),   # old (planned before the change at 11): 4 ms
                (11.2, note_on(LOW)),      # the first under it: 200 ms
                (11.5, (0x80, 60, 0)),     # note-offs do not count
                (12.1, note_on(HIGH))]     # the change at 12: nothing old after it
    heard = switch_over(jumps, received)
    np.testing.assert_allclose(heard.switch_over_ms, [4.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(heard.first_note_ms, [200.0, 100.0], atol=1e-6)


def test_the_bench_hand_jumps_about_as_often_as_asked_and_flips_its_velocity() -> None:
    readings = engine_hand(60.0, 0.5)
    flips = [r for a, r in itertools.pairwise(readings) if a[3] != r[3]]
    assert 90 <= len(flips) <= 150
    gaps = np.diff([r[0] for r in flips])
    assert gaps.min() >= 0.25 and gaps.max() <= 0.75  # never in step with a fixed beat
    assert len(set(np.round(gaps, 3))) > 5
