"""`livegen run` end to end: a replayed performance steers the Char-RNN into a real JACK
port, a second JACK client listens. Signals, reload, garbage on the MIDI input, replay
determinism, sd_notify, and the demo."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
from conftest import JackReceiver, JackSender, sounding_notes, unique_name, wait_for_port

from livegen.music.events import read_midi

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "charrnn.json"
RATE_HZ = 30


def write_trace(path: Path, segments: list[tuple[float, dict[str, float]]],
                source: str = "hand") -> Path:
    """A trace of `source` holding each segment's values until the next one starts;
    segments are (start seconds, values), the last one lasting 60 s."""
    lines = [json.dumps({"livegen_trace": 1, "created": "test", "inputs": [source]})]
    ends = [start for start, _ in segments[1:]] + [segments[-1][0] + 60.0]
    for (start, values), end in zip(segments, ends, strict=True):
        t = start
        while t < end:
            lines.append(json.dumps({"t": round(t, 4), "source": source, "values": values}))
            t += 1.0 / RATE_HZ
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(path: Path, trace: Path, *, port: str = "", seed: int = 7,
                 extra: str = "", pitch_rule: str = "", record: Path | None = None,
                 connect: str = "") -> Path:
    """A daemon's config; `connect` names a receiver the daemon joins itself before its
    first message (a test that connects after the port appears may miss the first)."""
    output = f'api = "jack"\nport = "{port}"\nrequire_port = true' if port else 'port = ""'
    if connect:
        output += f'\nconnect = ["{connect}"]'
    if record is not None:
        output += f'\nrecord = "{record}"'
    path.write_text(f"""
[engine]
seed = {seed}

[output]
{output}
panic_channels = [1]

[generators.charrnn]
model = "{MODEL}"

[inputs.hand]
type = "replay"
path = "{trace}"

[[map]]
source = "hand.y"
target = "pitch"
{pitch_rule}

[[map]]
source = "hand.x"
target = "density"
{extra}
""")
    return path


class Daemon:
    """`livegen run` as a subprocess; its log goes to a file the test can read."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = config.with_suffix(".log")
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "livegen.cli", "run", "--config", str(config), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=ROOT)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, fragment: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while fragment not in self.text():
            assert self.process.poll() is None, f"livegen exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {fragment!r} in the log:\n{self.text()}"
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0, sig: int | None = signal.SIGTERM) -> int:
        """Signal it (unless sig is None: then let it end by itself) and wait."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log.close()


def note_ons(arrivals: list[tuple[float, tuple[int, ...]]], start: float,
             end: float) -> list[int]:
    return [m[1] for t, m in arrivals if m[0] & 0xF0 == 0x90 and m[2] > 0 and start <= t < end]


@pytest.mark.jack
def test_a_step_up_in_pitch_raises_the_notes_that_follow(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.1, "x": 0.8}),
                                               (4.0, {"y": 0.9, "x": 0.8})])
    port = unique_name("livegen-e2e")
    stats = tmp_path / "stats.json"
    daemon = Daemon(write_config(tmp_path / "c.toml", trace, port=port), "--duration", "7",
                    "--stats-json", str(stats))
    daemons.append(daemon)
    jack_receiver.connect(f"{port}:out")
    assert daemon.stop(sig=None) == 0, daemon.text()  # --duration ends it
    jack_receiver.settle()
    arrivals = jack_receiver.arrivals
    origin = json.loads(stats.read_text())["origin"]  # the music's time zero (monotonic)
    before = note_ons(arrivals, origin + 1.5, origin + 4.0)
    after = note_ons(arrivals, origin + 4.2, origin + 6.2)
    assert len(before) >= 3 and len(after) >= 3, (before, after)
    assert sum(after) / len(after) >= sum(before) / len(before) + 8, (before, after)
    assert sounding_notes(jack_receiver.messages) == set()


@pytest.mark.jack
def test_sigterm_mid_stream_leaves_no_note_sounding(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.9})])
    port = unique_name("livegen-e2e")
    daemon = Daemon(write_config(tmp_path / "c.toml", trace, port=port))
    daemons.append(daemon)
    jack_receiver.connect(f"{port}:out")
    jack_receiver.wait_for(12, timeout=20)
    assert daemon.stop() == 0, daemon.text()
    jack_receiver.settle()
    notes = jack_receiver.notes()
    assert len(notes) >= 12, daemon.text()
    assert sounding_notes(jack_receiver.messages) == set()
    assert sounding_notes(notes) == set()  # explicit note-offs, not only all-notes-off
    assert "Traceback" not in daemon.text()


@pytest.mark.jack
def test_sighup_applies_a_valid_config_and_keeps_the_running_one_for_an_invalid_one(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.9})])
    port = unique_name("livegen-e2e")
    config = write_config(tmp_path / "c.toml", trace, port=port,
                          pitch_rule="out_range = [0.05, 0.05]")
    daemon = Daemon(config)
    daemons.append(daemon)
    jack_receiver.connect(f"{port}:out")
    daemon.wait_for_log("ready in")
    time.sleep(2.5)
    write_config(config, trace, port=port, pitch_rule="out_range = [0.95, 0.95]")
    reloaded_at = time.monotonic()
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("reload: ")
    time.sleep(4.0)
    config.write_text(config.read_text().replace('target = "density"', 'target = "densty"'))
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("keeping the running config")
    count = len(jack_receiver.notes())
    time.sleep(1.5)
    assert len(jack_receiver.notes()) > count, "the music stopped after a failed reload"
    assert daemon.stop() == 0, daemon.text()
    jack_receiver.settle()  # the last note-offs may still be on their way to the receiver
    log = daemon.text()
    assert "applied" in log and "did you mean 'density'?" in log
    arrivals = jack_receiver.arrivals
    low = note_ons(arrivals, reloaded_at - 2.0, reloaded_at)
    # The Char-RNN moves to a new register within a second or two.
    high = note_ons(arrivals, reloaded_at + 2.0, reloaded_at + 4.0)
    assert low and high, (low, high)
    # Same port, new mapping: the music moved up.
    assert sum(high) / len(high) >= sum(low) / len(low) + 8, (low, high)
    assert sounding_notes(jack_receiver.messages) == set()


@pytest.mark.jack
def test_garbage_on_the_midi_input_does_not_stop_the_output(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.9})])
    port, knobs = unique_name("livegen-e2e"), unique_name("livegen-knobs")
    config = write_config(tmp_path / "c.toml", trace, port=port, extra=f"""
[inputs.knobs]
type = "midi"
virtual = true
port = "{knobs}"
api = "jack"

[[map]]
source = "knobs.cc.74"
target = "temperature"
""")
    stats = tmp_path / "stats.json"
    daemon = Daemon(config, "--stats-json", str(stats))
    daemons.append(daemon)
    jack_receiver.connect(f"{port}:out")
    wait_for_port(f"{knobs}:in")
    sender = JackSender(unique_name("livegen-garbage"))
    try:
        sender.connect(f"{knobs}:in")
        jack_receiver.wait_for(4, timeout=20)
        garbage = [[0x45, 0x12], [0xF0, 1, 2, 3, 0xF7], [0xF4], [0x12, 0x34, 0x56],
                   [0xB0, 74], [0xF1, 0x80]]
        for i in range(60):
            sender.send(garbage[i % len(garbage)])
            if i % 10 == 0:
                sender.send([0xB0, 74, 20 + i])  # real knob moves in between
            time.sleep(0.01)
        count = len(jack_receiver.notes())
        time.sleep(1.5)
        assert len(jack_receiver.notes()) > count, "no notes after the garbage"
    finally:
        sender.close()
    assert daemon.stop() == 0, daemon.text()
    jack_receiver.settle()  # the last note-offs may still be on their way to the receiver
    figures = json.loads(stats.read_text())
    knobs_figures = figures["inputs"]["knobs"]
    assert knobs_figures["readings"] >= 6
    assert sum(knobs_figures["dropped"].values()) >= 30, knobs_figures
    assert knobs_figures["restarts"] == 0
    assert sounding_notes(jack_receiver.messages) == set()


# The daemon's recorder writes 960 ticks per beat at 120 bpm: a time in its file is the
# send time rounded to the nearest tick, 0.52 ms.
RECORDER_TICK_S = 0.5 / 960


def recorded_note_ons(path: Path) -> list[tuple[float, int, int]]:
    """(seconds, pitch, velocity) of every note-on in a recorded MIDI file, in the order
    they were sent. (read_midi sorts notes by start, then pitch: two notes of a chord sent
    a few µs apart can land a tick apart in one recording and not in another, and swap.)"""
    ons, now = [], 0.0
    for message in mido.MidiFile(path):  # delta times in seconds, through the tempo map
        now += message.time
        if message.type == "note_on" and message.velocity:
            ons.append((now, message.note, message.velocity))
    return ons


def assert_same_music(first: list[tuple[float, int, int]],
                      second: list[tuple[float, int, int]], tolerance_s: float,
                      context: object = "") -> None:
    """The same notes (pitch and velocity, in order), at the same times give or take
    `tolerance_s` (once the two files' time zeros are lined up on the first note)."""
    assert [on[1:] for on in first] == [on[1:] for on in second], context
    offset = second[0][0] - first[0][0]
    worst = max(abs(b[0] - a[0] - offset) for a, b in zip(first, second, strict=True))
    assert worst <= tolerance_s, (worst, tolerance_s, context)


def replay_run(config: Path, trace: Path, seconds: float,
               stats: Path) -> dict[str, object]:
    """`livegen run --replay` for `seconds`; its figures."""
    done = subprocess.run([sys.executable, "-m", "livegen.cli", "run", "--config", str(config),
                           "--duration", str(seconds), "--replay", str(trace),
                           "--stats-json", str(stats)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(stats.read_text())


def lateness_s(figures: dict) -> float:
    """The worst send lateness the run's output measured, in seconds."""
    return figures["output"]["lateness_max_ms"] / 1e3


def test_the_same_trace_seed_and_config_play_the_same_music(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.2, "x": 0.7}),
                                               (1.5, {"y": 0.8, "x": 0.3}),
                                               (3.0, {"y": 0.5, "x": 0.9})])
    runs = []
    for run in range(2):
        record = tmp_path / f"run{run}.mid"
        config = write_config(tmp_path / f"c{run}.toml", trace, seed=11, record=record)
        figures = replay_run(config, trace, 5, tmp_path / f"stats{run}.json")
        runs.append((recorded_note_ons(record), figures))
    (first, a), (second, b) = runs
    assert len(first) >= 10
    # The music is the same to the µs; each file holds send times, each late by up to
    # its output's measured lateness, rounded to the recorder's tick.
    assert_same_music(first, second, lateness_s(a) + lateness_s(b) + 2 * RECORDER_TICK_S,
                      (a["generators"], b["generators"]))


def test_sd_notify_ready_watchdog_and_stopping_reach_a_real_socket(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.5})])
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify")
    server.bind(address)
    server.settimeout(20)
    started = time.monotonic()
    daemon = Daemon(write_config(tmp_path / "c.toml", trace),
                    env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    daemons.append(daemon)
    try:
        messages = [server.recv(4096).decode()]
        ready_s = time.monotonic() - started
        assert messages[0].startswith("READY=1"), messages
        while sum(m == "WATCHDOG=1" for m in messages) < 3:
            messages.append(server.recv(4096).decode())
        daemon.send(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.append(server.recv(4096).decode())
    finally:
        server.close()
    assert daemon.stop() == 0, daemon.text()
    assert ready_s < 15  # loose: a shared machine; `livegen bench engine` measures it


def test_demo_plays_records_and_draws_without_importing_torch(tmp_path: Path) -> None:
    code = ("import sys; from livegen.cli import main; "
            f"status = main(['demo', '--seconds', '3', '--out', {str(tmp_path)!r}]); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch'); "
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "no torch" in done.stdout
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert read_midi(tmp_path / "demo.mid"), "the demo recorded no notes"


@pytest.mark.jack
def test_follows_incoming_midi_clock_and_sends_it_on(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.5})])
    port, master = unique_name("livegen-e2e"), unique_name("livegen-master")
    sender = JackSender(master)
    try:
        config = write_config(tmp_path / "c.toml", trace, port=port,
                              connect=jack_receiver.name, extra=f"""
[clock]
bpm = 120
source = "midi"
follow_port = "{master}"
send = true
""")
        stats = tmp_path / "stats.json"
        daemon = Daemon(config, "--stats-json", str(stats))
        daemons.append(daemon)
        daemon.wait_for_log("input clock: listening on")
        pulse = 60.0 / 90.0 / 24  # the master plays at 90 bpm
        sender.send([0xFA])
        next_pulse = time.monotonic()
        for _ in range(24 * 10):  # ten beats
            next_pulse += pulse
            time.sleep(max(0.0, next_pulse - time.monotonic()))
            sender.send([0xF8])
        assert daemon.stop() == 0, daemon.text()
    finally:
        sender.close()
    jack_receiver.settle()
    clock = [(t, m[0]) for t, m in jack_receiver.arrivals if m[0] >= 0xF8]
    assert clock[0][1] == 0xFA and clock[-1][1] == 0xFC
    ticks = [t for t, status in clock if status == 0xF8]
    # The last two beats, once the tempo estimate has settled on the master's.
    tail = [b - a for a, b in itertools.pairwise(ticks)][-48:-4]
    assert len(tail) > 30
    mean = sum(tail) / len(tail)
    assert abs(mean - pulse) < 0.1 * pulse, (mean, pulse, stats.read_text())
