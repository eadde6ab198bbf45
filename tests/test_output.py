"""The output thread and its note ledger, with the MIDI-file recorder as the sink that
shows what was sent; sink failure and recovery; the no-MIDI-system error."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mido
import pytest
from conftest import sounding_notes

from livegen.config import OutputConfig
from livegen.output import Output
from livegen.panic import panic_messages
from livegen.ports import NoMidiSystemError, midi_client
from livegen.sinks import MidiFileRecorder
from livegen.timeline import Timeline

ON, OFF, CC = 0x90, 0x80, 0xB0
NO_SERVER = f"livegen-no-such-server-{os.getpid()}"


def file_only(**settings: object) -> OutputConfig:
    return OutputConfig(**{"port": "", "panic_channels": (1, 2), **settings})


Recorded = Callable[..., tuple[Output, MidiFileRecorder]]


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    """Makes Outputs whose only sink is a recorder: recorded(**settings) -> (output,
    recorder). Closes them at the end."""
    outputs: list[Output] = []

    def make(**settings: object) -> tuple[Output, MidiFileRecorder]:
        recorder = MidiFileRecorder(tmp_path / f"take{len(outputs)}.mid")
        output = Output(file_only(**settings), Timeline(), openers=[lambda: recorder])
        outputs.append(output)
        return output, recorder

    yield make
    for output in outputs:
        output.close()


def messages(recorder: MidiFileRecorder) -> list[tuple[int, ...]]:
    return [message for _, message in recorder.messages()]


def notes(recorder: MidiFileRecorder) -> list[tuple[int, ...]]:
    return [m for m in messages(recorder) if m[0] & 0xF0 in (ON, OFF)]


def play(output: Output, plan: list[tuple[float, tuple[int, int, int]]], tag: str = "",
         after: float = 0.1) -> float:
    """Start the output, plan `plan` (times relative to now + 50 ms), wait until done."""
    output.start()
    t0 = time.monotonic() + 0.05
    output.timeline.add_many([(t0 + t, m) for t, m in plan], tag=tag)
    time.sleep(0.05 + max(t for t, _ in plan) + after)
    return t0


def test_panic_messages_end_sustain_and_notes_on_each_channel() -> None:
    assert panic_messages([1, 16]) == [(CC, 64, 0), (CC, 123, 0), (CC | 15, 64, 0),
                                       (CC | 15, 123, 0)]
    every = panic_messages([3], every_note=True)
    assert every[:128] == [(OFF | 2, pitch, 0) for pitch in range(128)]
    assert every[128:] == [(CC | 2, 64, 0), (CC | 2, 123, 0)]


def test_start_sends_all_notes_off_on_the_panic_channels(recorded: Recorded) -> None:
    output, recorder = recorded()
    output.start()
    assert messages(recorder) == panic_messages([1, 2])


def test_stop_ends_every_sounding_note_then_all_notes_off(recorded: Recorded) -> None:
    output, recorder = recorded()
    play(output, [(0.0, (ON, 60, 100)), (0.01, (ON | 1, 64, 90)), (0.02, (ON, 67, 80)),
                  (0.03, (OFF, 67, 0))])
    assert output.stats().notes_sounding == 2
    assert output.alive
    output.close()
    assert not output.alive
    sent = messages(recorder)
    n = len(panic_messages([1, 2]))
    assert sent[-n:] == panic_messages([1, 2])
    assert sorted(sent[-n - 2:-n]) == [(OFF, 60, 0), (OFF | 1, 64, 0)]
    assert sounding_notes(sent[:-n]) == set()  # explicit note-offs, not only CC 123


def test_a_retrigger_ends_the_sounding_note_and_the_new_one_keeps_sounding(
        recorded: Recorded) -> None:
    output, recorder = recorded()
    play(output, [(0.0, (ON, 60, 100)), (0.05, (ON, 60, 90)), (0.10, (OFF, 60, 0)),
                  (0.20, (OFF, 60, 0))])
    sent = [(t, m) for t, m in recorder.messages() if m[0] & 0xF0 in (ON, OFF)]
    assert [m for _, m in sent] == [(ON, 60, 100), (OFF, 60, 0), (ON, 60, 90), (OFF, 60, 0)]
    # The first note's own note-off (at 0.10) does not cut the second note short.
    assert sent[3][0] - sent[0][0] > 0.15


def test_a_note_longer_than_max_note_s_is_released(recorded: Recorded) -> None:
    output, recorder = recorded(max_note_s=0.1)
    play(output, [(0.0, (ON, 60, 100)), (0.4, (OFF, 60, 0)), (0.4, (ON, 62, 100)),
                  (0.45, (OFF, 62, 0))])
    sent = [(t, m) for t, m in recorder.messages() if m[0] & 0xF0 in (ON, OFF)]
    assert [m for _, m in sent] == [(ON, 60, 100), (OFF, 60, 0), (ON, 62, 100), (OFF, 62, 0)]
    held = sent[1][0] - sent[0][0]
    assert 0.1 <= held < 0.35  # released by the ledger, long before its planned note-off
    assert output.stats().notes_released == 1


def test_release_ends_a_generators_notes_and_drops_its_plan(recorded: Recorded) -> None:
    output, recorder = recorded()
    output.start()
    now = time.monotonic()
    output.timeline.add_many([(now + 0.02, (ON, 60, 100)), (now + 30, (OFF, 60, 0))], "gen-a")
    output.timeline.add_many([(now + 0.02, (ON, 64, 100)), (now + 30, (OFF, 64, 0))], "gen-b")
    time.sleep(0.1)
    output.release("gen-a")
    time.sleep(0.1)
    assert notes(recorder) == [(ON, 60, 100), (ON, 64, 100), (OFF, 60, 0)]
    assert {e.tag for e in output.timeline.pop_due(now + 60)} == {"gen-b"}
    assert output.stats().notes_sounding == 1


def test_an_exception_still_ends_every_note(recorded: Recorded) -> None:
    output, recorder = recorded()
    with pytest.raises(RuntimeError), output:
        output.timeline.add(time.monotonic(), (ON, 60, 100))
        time.sleep(0.05)
        raise RuntimeError("a generator crashed")
    assert sounding_notes(notes(recorder)) == set()
    assert notes(recorder)[-1] == (OFF, 60, 0)


class FlakySink:
    """A sink that raises on its `fail_at`-th message, as a port whose server died does."""

    def __init__(self, opened: list[FlakySink], fail_at: int) -> None:
        self.name = f"flaky #{len(opened) + 1}"
        self.fail_at = fail_at
        self.got: list[tuple[int, ...]] = []
        self.closed = False
        opened.append(self)

    def send(self, message: tuple[int, ...], t: float) -> None:
        if len(self.got) + 1 == self.fail_at:
            raise OSError("MIDI server went away")
        self.got.append(message)

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_is_reopened_while_the_others_carry_on(tmp_path: Path) -> None:
    opened: list[FlakySink] = []
    recorder = MidiFileRecorder(tmp_path / "beside.mid")
    n_panic = len(panic_messages([1, 2]))
    output = Output(file_only(), Timeline(), openers=[
        lambda: FlakySink(opened, fail_at=n_panic + 5 if not opened else 0),
        lambda: recorder])
    plan = [(i * 0.1, (ON if i % 2 == 0 else OFF, 60 + i // 2, 100 if i % 2 == 0 else 0))
            for i in range(20)]
    play(output, plan)
    output.close()
    assert len(opened) == 2, "the failed sink was not reopened"
    assert opened[0].closed
    assert output.stats().sink_failures == 1
    assert notes(recorder) == [m for _, m in plan]  # the recorder missed nothing
    second = opened[1].got
    assert second[:n_panic] == panic_messages([1, 2])  # reopened: all notes off first
    assert second[n_panic:n_panic + 2] != []
    assert set(second[n_panic:]) <= {m for _, m in plan} | set(panic_messages([1, 2]))


class HeldSink:
    """A sink that, on a control change 1, holds the output thread inside send() until let
    go: the stop then comes while the thread is between taking its events and the next."""

    name = "held"

    def __init__(self) -> None:
        self.got: list[tuple[int, ...]] = []
        self.holding, self.let_go = threading.Event(), threading.Event()

    def send(self, message: tuple[int, ...], t: float) -> None:
        if message == (CC, 1, 0):
            self.holding.set()
            self.let_go.wait(5.0)
        self.got.append(message)

    def close(self) -> None:
        pass


def test_what_was_due_at_the_stop_still_goes_out_except_note_ons() -> None:
    sink = HeldSink()
    output = Output(file_only(), Timeline(), openers=[lambda: sink])
    output.start()
    output.timeline.add(time.monotonic(), (CC, 1, 0))
    assert sink.holding.wait(5.0)
    # Queued while the thread is held, as the engine queues a clock stop at shutdown.
    now = time.monotonic()
    output.timeline.add_many([(now, (0xFC,)), (now, (ON, 60, 100)), (now, (CC, 7, 90)),
                              (now + 60.0, (CC, 7, 10))])
    threading.Timer(0.1, sink.let_go.set).start()
    output.close()  # the thread finds itself stopping when it returns from the send
    after = sink.got[sink.got.index((CC, 1, 0)) + 1:]
    n = len(panic_messages([1, 2]))
    assert after[:-n] == [(0xFC,), (CC, 7, 90)], "the due stop and CC were lost, or a note-on sent"
    assert after[-n:] == panic_messages([1, 2])


def test_the_recorder_writes_what_was_sent_as_a_midi_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "take.mid"
    recorder = MidiFileRecorder(path)
    sent = [(10.0, (CC, 64, 0)), (10.5, (ON, 60, 100)), (10.75, (0xC0 | 2, 5)),
            (11.25, (OFF, 60, 0))]
    for t, message in sent:
        recorder.send(message, t)
    recorder.send((0xF0, 1, 2, 3, 0xF7), 11.5)  # longer than a plan's message: left out
    recorder.close()
    midi = mido.MidiFile(path)
    seconds, read = 0.0, []
    for message in midi:
        seconds += message.time
        if not message.is_meta:
            read.append((round(seconds, 3), tuple(message.bytes())))
    assert read == [(t - 10.0, m) for t, m in sent]
    assert not list(tmp_path.glob("**/*.partial"))


def test_the_recorder_writes_to_the_temp_folder_when_its_own_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    recorder = MidiFileRecorder(blocker / "take.mid")
    recorder.send((ON, 60, 1), 1.0)
    with caplog.at_level(logging.ERROR, logger="livegen.output"):
        recorder.close()
    assert recorder.path != blocker / "take.mid"
    assert recorder.path.is_file()
    assert "cannot write" in caplog.text
    recorder.path.unlink()


def test_stats_count_messages_and_measure_lateness(recorded: Recorded) -> None:
    output, _ = recorded()
    play(output, [(i * 0.01, (ON, 60, 100) if i % 2 == 0 else (OFF, 60, 0))
                  for i in range(40)])
    stats = output.stats()
    assert stats.messages == len(panic_messages([1, 2])) + 40
    assert 0.0 <= stats.lateness_p50_ms <= stats.lateness_p99_ms <= stats.lateness_max_ms
    assert stats.lateness_p99_ms < 100.0  # a loose bound: timing figures live in the bench
    assert len(output.lateness()) == 40


def test_no_midi_system_is_one_line_that_names_the_fixes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", NO_SERVER)
    with pytest.raises(NoMidiSystemError) as caught:
        midi_client("jack", "livegen-test")
    text = str(caught.value)
    assert "\n" not in text
    assert NO_SERVER in text
    assert "jackd -S -d dummy -r 48000 -p 64" in text and "output.record" in text


def test_without_require_port_the_output_falls_back_to_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", NO_SERVER)
    cfg = OutputConfig(api="jack", port="livegen-test", record=tmp_path / "only.mid")
    with caplog.at_level(logging.WARNING, logger="livegen.output"):
        output = Output.open(cfg)
    with output:
        assert not output.has_port
        assert output.sink_names == [f"file {tmp_path / 'only.mid'}"]
    assert (tmp_path / "only.mid").is_file()
    assert "no MIDI system reachable" in caplog.text
    with pytest.raises(NoMidiSystemError):
        Output.open(OutputConfig(api="jack", port="livegen-test", require_port=True))


def test_livegen_play_without_a_midi_system_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    song = tmp_path / "song.mid"
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=90, time=0),
                            mido.Message("note_off", note=60, time=480)])
    mido.MidiFile(tracks=[track]).save(song)
    config = tmp_path / "config.toml"
    config.write_text('[output]\napi = "jack"\nrequire_port = true\n')
    done = subprocess.run(
        [sys.executable, "-m", "livegen.cli", "play", str(song), "--config", str(config)],
        env={**os.environ, "JACK_DEFAULT_SERVER": NO_SERVER}, capture_output=True,
        text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("livegen: no MIDI system reachable (JACK: no server")
