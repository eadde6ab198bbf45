"""The Char-RNN as a live step generator: steering answers a register change at once, the
playability rules hold, steps repeat under a seed, wait_until lands on its time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livegen.control import Controls
from livegen.generators.charrnn import CharRNN
from livegen.generators.charrnn_step import CharRNNStep, PlayState
from livegen.music.events import TimedEvent

MODEL = Path(__file__).resolve().parents[1] / "models" / "charrnn.json"


@pytest.fixture(scope="module")
def model() -> CharRNN:
    return CharRNN(MODEL)


def play(gen: CharRNNStep, seconds: float, controls_at) -> list[TimedEvent]:
    state, index, played = gen.initial(), 0, []
    while state.time < seconds:
        state, events = gen.step(state, controls_at(state.time), index)
        index += 1
        played.extend(events)
    return played


def note_ons(events: list[TimedEvent], start: float, end: float) -> list[int]:
    return [e.pitch for e in events if e.velocity and start <= e.time < end]


def test_steering_moves_to_a_new_register_within_half_a_second(model: CharRNN) -> None:
    def controls_at(t: float) -> Controls:
        return Controls(pitch=0.1 if t < 6.0 else 0.9, density=0.6)

    steered, free = [], []
    for seed in range(4):
        steered += note_ons(play(CharRNNStep(model, seed=seed), 7.0, controls_at), 6.0, 6.5)
        free += note_ons(play(CharRNNStep(model, seed=seed, steer=False), 7.0, controls_at),
                         6.0, 6.5)
    target = 50 + 8.5 * 4  # the middle of pitch bin 8
    assert len(steered) >= 4
    assert abs(np.mean(steered) - target) <= 6, steered
    # Unsteered, the model is still in the old register half a second on: why steering.
    assert np.mean(free) < np.mean(steered) - 12, (free, steered)


def test_a_note_held_too_long_is_ended(model: CharRNN) -> None:
    gen = CharRNNStep(model, seed=3, max_held_s=0.05)
    sounding: dict[int, float] = {}
    for event in play(gen, 6.0, lambda t: Controls(density=0.2)):
        if event.velocity:
            sounding[event.pitch] = event.time
        elif event.pitch in sounding:
            assert event.time - sounding.pop(event.pitch) <= 0.05 + 0.011


def test_same_seed_same_steps_and_another_seed_differs(model: CharRNN) -> None:
    def tokens(seed: int) -> list[int]:
        gen, state, out = CharRNNStep(model, seed=seed), None, []
        state = gen.initial()
        for index in range(300):
            state, _ = gen.step(state, Controls(), index)
            out.append(state.token)
        return out

    assert tokens(5) == tokens(5)
    assert tokens(5) != tokens(6)


def test_wait_until_advances_silently_to_the_time(model: CharRNN) -> None:
    gen = CharRNNStep(model, seed=1)
    state: PlayState = gen.initial()
    later = gen.wait_until(state, 2.345, Controls(pitch=0.9), 0)
    assert later.time == pytest.approx(2.35, abs=0.006)
    assert later.decoder.sounding == state.decoder.sounding
    assert state.time == 0.0  # the old state is untouched: rollback keeps it


def test_a_change_matters_when_the_model_input_moves(model: CharRNN) -> None:
    gen = CharRNNStep(model, seed=1)
    base = Controls(pitch=0.5, density=0.5)
    assert not gen.changed(base, Controls(pitch=0.52, density=0.5), 0.02)  # same bin
    assert gen.changed(base, Controls(pitch=0.7, density=0.5), 0.02)
    assert gen.changed(base, Controls(pitch=0.5, density=0.5, key=7), 0.02)
    assert gen.changed(base, Controls(pitch=0.5, density=0.5, temperature=1.3), 0.02)
    assert not gen.changed(base, Controls(pitch=0.5, density=0.5, velocity=0.76), 0.02)
