"""livegen's output through a real JACK server to a second, independent JACK client."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
from conftest import (
    JackReceiver,
    XrunCounter,
    retried_on_xruns,
    sounding_notes,
    unique_name,
    wait_for_port,
)

from livegen import bench, ports
from livegen.config import OutputConfig
from livegen.errors import LivegenError
from livegen.music.events import read_midi
from livegen.output import Output
from livegen.panic import panic_messages
from livegen.ports import jack_connections
from livegen.timeline import Timeline

pytestmark = pytest.mark.jack

ON, OFF, CC = 0x90, 0x80, 0xB0
CHANNELS = (1, 2, 3)


def port_config(**settings: object) -> tuple[OutputConfig, str]:
    """An output config with a port name no one else uses, and that port's full name."""
    name = unique_name("livegen-test")
    cfg = OutputConfig(**{"api": "jack", "port": name, "panic_channels": CHANNELS,
                          "require_port": True, **settings})
    return cfg, f"{name}:out"


def mixed_plan(n_messages: int, seed: int = 7) -> list[tuple[float, tuple[int, int, int]]]:
    """Four voices on two channels that overlap each other; each voice plays its notes back
    to back, often striking the same pitch again at the instant the last one ends (the
    note-off and the note-on share a due time and must keep their order)."""
    rng = random.Random(seed)
    plan: list[tuple[float, int, tuple[int, int, int]]] = []
    voices = [(0, 36), (0, 52), (1, 64), (1, 76)]  # (channel, lowest pitch)
    t = [0.0] * len(voices)
    pitch = [low for _, low in voices]
    while len(plan) < n_messages:
        v = rng.randrange(len(voices))
        channel, low = voices[v]
        if rng.random() > 0.4:  # else: the same pitch again
            pitch[v] = low + rng.randrange(12)
        length = rng.choice([0.004, 0.011, 0.023, 0.047])
        plan.append((t[v], 1, (ON | channel, pitch[v], rng.randrange(1, 128))))
        plan.append((t[v] + length, 0, (OFF | channel, pitch[v], 0)))
        t[v] += length
    plan.sort(key=lambda item: (item[0], item[1]))  # stable: a voice's own order stays
    return [(due, message) for due, _, message in plan]


def assert_same(received: list[tuple[int, ...]], sent: list[tuple[int, ...]]) -> None:
    for i, (got, expected) in enumerate(zip(received, sent, strict=False)):
        assert got == expected, f"message {i}: {got} arrived where {expected} was sent"
    assert len(received) == len(sent)


def test_1000_scheduled_messages_arrive_in_order_and_no_note_sounds_after_stop(
        jack_xruns: XrunCounter) -> None:
    plan = mixed_plan(1200)
    assert len({due for due, _ in plan}) < len(plan)  # there are ties to keep in order

    def attempt() -> None:
        cfg, port = port_config()
        receiver = JackReceiver(unique_name("livegen-test-rx"))
        try:
            with Output.open(cfg, Timeline()) as output:
                receiver.connect(port)
                t0 = time.monotonic() + 0.2
                output.timeline.add_many([(t0 + due, message) for due, message in plan])
                receiver.wait_for(len(plan), timeout=plan[-1][0] + 10)
            receiver.settle()
        finally:
            receiver.close()
        assert_same(receiver.notes(), [message for _, message in plan])
        assert sounding_notes(receiver.messages) == set()
        assert receiver.messages[-2 * len(CHANNELS):] == panic_messages(CHANNELS)

    retried_on_xruns(jack_xruns, attempt)


def write_song(path: Path, seconds: float) -> None:
    """Three-note chords, each held half a second, one after another: some notes are
    always sounding."""
    track = mido.MidiTrack()
    ticks = 480  # at 120 bpm: 0.5 s
    for i in range(int(seconds * 2)):
        root = 48 + i % 12
        for pitch in (root, root + 4, root + 7):
            track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=root, time=ticks))
        track.append(mido.Message("note_off", note=root + 4, time=0))
        track.append(mido.Message("note_off", note=root + 7, time=0))
    mido.MidiFile(tracks=[track]).save(path)


def test_sigterm_to_livegen_play_mid_stream_leaves_no_note_sounding(
        tmp_path: Path, jack_receiver: JackReceiver) -> None:
    song = tmp_path / "chords.mid"
    write_song(song, seconds=30)
    cfg, port = port_config()
    config = tmp_path / "config.toml"
    config.write_text(f'[output]\napi = "jack"\nport = "{cfg.port}"\n'
                      f"panic_channels = [1, 2]\nrequire_port = true\n")
    player = subprocess.Popen(
        [sys.executable, "-m", "livegen.cli", "play", str(song), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        jack_receiver.connect(port)
        jack_receiver.wait_for(9, timeout=20)  # a few chords in, notes are sounding
        before = jack_receiver.messages
        player.send_signal(signal.SIGTERM)
        _, stderr = player.communicate(timeout=20)
    finally:
        if player.poll() is None:
            player.kill()
    assert player.returncode == 0, stderr
    assert sounding_notes(before) != set(), "the test must stop notes mid-stream"
    jack_receiver.settle()
    after = jack_receiver.messages[len(before):]
    assert sounding_notes(jack_receiver.messages) == set()
    # Explicit note-offs, then all-notes-off, for whatever was sounding.
    assert after[-4:] == panic_messages([1, 2])
    assert sounding_notes([m for m in jack_receiver.messages if m[0] & 0xF0 != CC]) == set()


def test_the_recorder_beside_the_port_writes_the_notes_that_were_received(
        tmp_path: Path, jack_xruns: XrunCounter) -> None:
    plan = [(i * 0.013, (ON, 40 + (i // 2) % 40, 1 + i % 127) if i % 2 == 0 else
             (OFF, 40 + (i // 2) % 40, 0)) for i in range(200)]

    def attempt() -> None:
        record = tmp_path / f"{unique_name('take')}.mid"
        cfg, port = port_config(record=record)
        receiver = JackReceiver(unique_name("livegen-test-rx"))
        try:
            with Output.open(cfg, Timeline()) as output:
                receiver.connect(port)
                t0 = time.monotonic() + 0.2
                output.timeline.add_many([(t0 + due, message) for due, message in plan])
                receiver.wait_for(len(plan))
            receiver.settle()
        finally:
            receiver.close()
        received, starts = [], {}
        for t, message in receiver.arrivals:
            if message[0] == ON:
                starts[message[1]] = (t, message[2])
            elif message[0] == OFF and message[1] in starts:
                start, velocity = starts.pop(message[1])
                received.append((message[1], velocity, start, t))
        recorded = read_midi(record)
        assert len(recorded) == len(plan) // 2
        assert [(n.pitch, n.velocity) for n in recorded] == [(p, v) for p, v, _, _ in received]
        # The file keeps the times the notes were sent at: each planned time plus the send
        # lateness the output thread measured for that message, to the file's tick (0.52 ms).
        # (Not the plan alone: a virtual machine that stalls the thread 15 ms makes the send
        # 15 ms late, and the file must say so. Not the receiver's arrivals either: those add
        # JACK's delivery, which a stalling virtual machine stretched to 12-14 ms.)
        lateness = output.lateness()
        assert len(lateness) == len(plan)
        sent = [t0 + due + late for (due, _), late in zip(plan, lateness, strict=True)]
        first_file = recorded[0].start
        for note, on, off in zip(recorded, sent[::2], sent[1::2], strict=True):
            assert abs((note.start - first_file) - (on - sent[0])) < 0.002
            assert abs((note.end - note.start) - (off - on)) < 0.002

    retried_on_xruns(jack_xruns, attempt)


def test_output_connect_sends_to_an_existing_port_found_by_name(
        jack_receiver: JackReceiver) -> None:
    cfg = OutputConfig(api="jack", port="", connect=(jack_receiver.name.upper(),),
                       panic_channels=(1,), require_port=True)
    with Output.open(cfg, Timeline()) as output:
        # One JACK client (see livegen.ports): a port of its own, joined to the receiver.
        own_port, connection = output.sink_names
        assert own_port.startswith("jack port livegen-connect")
        assert connection == f"jack connection to {jack_receiver.port}"
        assert jack_connections(jack_receiver.port) == [own_port.removeprefix("jack port ")]
        output.timeline.add(time.monotonic(), (ON, 60, 100))
        jack_receiver.wait_for(1)
    jack_receiver.settle()
    assert jack_receiver.messages == [*panic_messages([1]), (ON, 60, 100), (OFF, 60, 0),
                                      *panic_messages([1])]
    missing = OutputConfig(api="jack", port="", connect=("no-such-synth",), require_port=True)
    with pytest.raises(LivegenError, match=r"no jack MIDI port matches 'no-such-synth' "
                                           r"\(ports: .*" + jack_receiver.port):
        Output.open(missing)


def test_livegen_panic_every_note_ends_all_notes_on_a_named_port(
        tmp_path: Path, jack_receiver: JackReceiver) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[output]\napi = "jack"\npanic_channels = [1, 10]\n')
    done = subprocess.run(
        [sys.executable, "-m", "livegen.cli", "panic", "--port", jack_receiver.name,
         "--every-note", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    jack_receiver.wait_for(2 * 130, notes_only=False)
    jack_receiver.settle()
    # CC 64 and CC 123 first (they stop a synth at once), then every note-off, all of them
    # received: the panic is paced.
    assert jack_receiver.messages == [*panic_messages([1, 10]),
                                      *[(OFF | ch, pitch, 0) for ch in (0, 9)
                                        for pitch in range(128)]]


def test_the_port_is_reopened_when_the_jack_server_restarts(
        tmp_path: Path, jack_server: None) -> None:
    # Its own JACK server, restarted mid-stream. libjack keeps per-process state for one
    # server, so player and receivers run in processes of their own.
    server = unique_name("livegen-test-server")
    env = {**os.environ, "JACK_DEFAULT_SERVER": server}
    song = tmp_path / "chords.mid"
    write_song(song, seconds=2)
    cfg, port = port_config()
    config = tmp_path / "config.toml"
    config.write_text(f'[output]\napi = "jack"\nport = "{cfg.port}"\n'
                      f"panic_channels = [1]\nrequire_port = true\n")
    player = None
    try:
        with ports.jack_server(server) as started:
            assert started
            player = subprocess.Popen(
                [sys.executable, "-m", "livegen.cli", "play", "--loop", str(song),
                 "--config", str(config)], env=env, stderr=subprocess.PIPE, text=True)
            wait_for_port(port, env=env)
            before = bench.Receiver(unique_name("livegen-test-rx"), env=env)
            before.connect(port)
            time.sleep(1.0)
            heard_before = [m for _, m in before.arrivals()]
        with ports.jack_server(server):
            wait_for_port(port, env=env, timeout=20)  # the player opened its port again
            after = bench.Receiver(unique_name("livegen-test-rx"), env=env)
            after.connect(port)
            time.sleep(1.0)
            player.send_signal(signal.SIGTERM)
            _, stderr = player.communicate(timeout=20)
            heard_after = [m for _, m in after.arrivals()]
    finally:
        if player is not None and player.poll() is None:
            player.kill()
    assert player.returncode == 0, stderr
    assert "reopened" in stderr
    assert any(m[0] == ON for m in heard_before)
    assert any(m[0] == ON for m in heard_after), "nothing played after the restart"
    assert sounding_notes(heard_after) == set()
