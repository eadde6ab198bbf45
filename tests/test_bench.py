"""The arithmetic behind `livegen bench engine`'s switch-over figures, and short runs of
the bench itself through JACK: per player, with MIDI inputs and output.connect
connections."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from livegen.bench import BENCH_VELOCITIES, bench_engine, engine_hand, switch_over

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


def test_switch_over_counts_one_channel_and_with_heard_only_leaves_out_a_change_never_heard(
        ) -> None:
    jumps = [10.0, 11.0, 14.0]  # low from 11, high from 14
    received = [(11.5, (0x91, 60, HIGH)),   # channel 2: old, then new
                (12.5, (0x91, 60, LOW)),
                (12.0, (0x90, 60, HIGH)),   # channel 1 is another player's
                (14.5, (0x91, 60, LOW))]    # the change at 14: only old notes before the end
    heard = switch_over(jumps, sorted(received), channel=2, heard_only=True)
    np.testing.assert_allclose(heard.switch_over_ms, [500.0], atol=1e-6)
    np.testing.assert_allclose(heard.first_note_ms, [1500.0], atol=1e-6)
    assert heard.unheard == 1 and heard.untold() == ""


def test_switch_over_is_not_told_when_the_velocities_do_not_follow_the_velocity_control(
        ) -> None:
    jumps = [float(t) for t in range(10, 20)]
    deaf = [(t + 0.5, note_on(HIGH)) for t in jumps]  # one velocity, whatever is asked
    assert "one velocity class" in switch_over(jumps, deaf).untold()
    wrong = [(t + 0.5, note_on(LOW if k % 2 == 0 else HIGH)) for k, t in enumerate(jumps)]
    assert "do not follow" in switch_over(jumps, wrong).untold()
    right = [(t + 0.5, note_on(HIGH if k % 2 == 0 else LOW)) for k, t in enumerate(jumps)]
    assert switch_over(jumps, right).untold() == ""
    # A change that came too late to be heard before the end tells nothing either way.
    assert "run longer" in switch_over(jumps[:2], [], end=11.5, hearing_s=4.0).untold()


def rows_of(text: str, player: str) -> list[str]:
    """The rows of `player`'s part of the engine table (up to the next part)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{player}, "))
    rows = []
    for line in lines[start + 1:]:
        if line.endswith(":") and not line.startswith(" "):
            break
        rows.append(line)
    return rows


@pytest.mark.jack
def test_bench_engine_reports_each_player_with_midi_inputs_and_connections(
        jack_server: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engine(["--generator", "charrnn", "--generator", "langevin",
                         "--seconds", "4", "--midi-inputs", "2", "--connections", "2"]) == 0
    text = capsys.readouterr().out
    assert "layered, each on its own channel" in text
    assert re.search(r"^scenario: 2 MIDI input\(s\) .*; 2 output\.connect connection\(s\)",
                     text, re.M), text
    step = rows_of(text, "charrnn")
    assert [row.split(" (n=")[0] for row in step[:2]] == ["control latency", "generator step"]
    assert int(step[1].split("(n=")[1].split(")")[0]) > 0, step  # it played
    segment = rows_of(text, "langevin")
    assert [row.split(" (n=")[0] for row in segment[:2]] == ["segment planning",
                                                             "control latency"]
    assert int(segment[0].split("(n=")[1].split(")")[0]) > 0, segment
    # A 4-s run is too short to hear a change that comes every 2.5 segments: said so.
    assert any("switch-over not measured" in row for row in segment), segment
    assert re.search(r"^send lateness \(n=[1-9]", text, re.M), text
    assert re.search(r"^langevin: segments [1-9]", text, re.M), text
    # The work measured was done: both inputs read the knob, both connections got music.
    inputs = re.search(r"the MIDI inputs made (\d+), (\d+) readings of (\d+)", text)
    assert inputs and min(int(inputs[1]), int(inputs[2])) > 0 and int(inputs[3]) > 0, text
    connections = re.search(r"the connections received (\d+), (\d+) messages", text)
    assert connections and min(int(connections[1]), int(connections[2])) > 0, text


@pytest.mark.jack
def test_bench_engine_measures_the_switch_over_of_the_char_rnn_without_a_scenario(
        jack_server: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engine(["--seconds", "3"]) == 0
    text = capsys.readouterr().out
    assert "scenario: no MIDI inputs; no output.connect connections" in text
    rows = rows_of(text, "charrnn")
    assert [row.split(" (n=")[0] for row in rows[:3]] == [
        "control latency", "generator step", "switch-over at the receiver"], rows
