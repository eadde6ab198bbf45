"""MIDI input and panic through a real JACK server, end to end: a controller is heard on
every start, a crash in the input's native code does not reach the daemon, a controller
plugged in after start is heard within seconds, a stray sysex start does not swallow the
knobs, and `livegen panic` reaches what a running livegen plays to. Also the libjack
behaviour behind livegen's one-JACK-client-per-process rule (livegen.ports)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    JackReceiver,
    JackSender,
    XrunCounter,
    retried_on_xruns,
    unique_name,
)
from test_engine import ROOT, Daemon, write_trace

from livegen.config import MidiInputConfig
from livegen.inputs.midi_in import MidiInput

MODEL = ROOT / "models" / "charrnn.json"
pytestmark = pytest.mark.jack


def knob_config(path: Path, trace: Path, *, port: str, knobs: str, virtual: bool = True,
                connect: str = "") -> Path:
    """A daemon playing the Char-RNN to JACK port `port` (and `connect`), steered by a
    replayed hand and by the knobs of MIDI input `knobs` (a virtual port, or a connection to
    the port whose name contains `knobs`)."""
    connect_line = f'connect = ["{connect}"]' if connect else ""
    path.write_text(f"""
[engine]
seed = 3

[output]
api = "jack"
port = "{port}"
require_port = true
panic_channels = [1]
{connect_line}

[generators.charrnn]
model = "{MODEL}"

[inputs.hand]
type = "replay"
path = "{trace}"

[inputs.knobs]
type = "midi"
api = "jack"
virtual = {"true" if virtual else "false"}
port = "{knobs}"

[[map]]
source = "hand.y"
target = "pitch"

[[map]]
source = "knobs.cc.74"
target = "temperature"
""")
    return path


def listeners_of(pid: int) -> list[int]:
    """The MIDI input processes (python -m livegen.ports listen) a daemon started."""
    done = subprocess.run(["pgrep", "-P", str(pid), "-f", "livegen.ports listen"],
                          capture_output=True, text=True)
    return [int(word) for word in done.stdout.split()]


def test_a_second_jack_client_in_one_process_can_start_asleep_and_is_seen_asleep(
        jack_server: None) -> None:
    # The reason for livegen.ports' rule, made to happen on purpose (tests/jack): client B,
    # opened while client A of the same process has not yet heard that client X left,
    # sleeps on X's futex for good, and livegen.ports.own_futex_mapped sees it at once.
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "jack" / "stale_client.py"),
                           unique_name("stale")], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mapped", "False", "heard", "0"], done.stdout


def test_a_midi_input_hears_the_controller_on_every_start(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon],
        jack_xruns: XrunCounter) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.5})])

    def start_and_hear() -> None:
        port, knobs = unique_name("livegen-e2e"), unique_name("livegen-knobs")
        config = knob_config(tmp_path / f"{port}.toml", trace, port=port, knobs=knobs,
                             connect=jack_receiver.name)
        stats = tmp_path / f"{port}.json"
        daemon = Daemon(config, "--stats-json", str(stats))
        daemons.append(daemon)
        sender = JackSender(unique_name("livegen-knob"))
        try:
            sender.connect(f"{knobs}:in")
            # livegen's output is one JACK client; the input's port is a child's.
            assert len(listeners_of(daemon.process.pid)) == 1
            daemon.wait_for_log("ready in")
            for value in range(20):
                sender.send([0xB0, 74, value])
                time.sleep(0.01)
            time.sleep(1.0)  # heard, on a loaded machine, before the stop
        finally:
            sender.close()
        assert daemon.stop() == 0, daemon.text()
        knob_figures = json.loads(stats.read_text())["inputs"]["knobs"]
        assert knob_figures["readings"] == 20, (knob_figures, daemon.text())

    for _ in range(5):  # a deaf start hears none; a cycle JACK dropped loses what it held
        retried_on_xruns(jack_xruns, start_and_hear)


def test_a_crash_in_the_midi_input_process_does_not_reach_the_daemon(
        tmp_path: Path, jack_receiver: JackReceiver, jack_xruns: XrunCounter,
        daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.9})])

    def crash_and_hear() -> None:
        port, knobs = unique_name("livegen-e2e"), unique_name("livegen-knobs")
        config = knob_config(tmp_path / "c.toml", trace, port=port, knobs=knobs)
        stats = tmp_path / "stats.json"
        daemon = Daemon(config, "--stats-json", str(stats))
        daemons.append(daemon)
        sender = JackSender(unique_name("livegen-knob"))
        try:
            jack_receiver.connect(f"{port}:out")
            # The controller is patched to the input's port before the crash, as a
            # patchbay would, and not again after it.
            sender.connect(f"{knobs}:in")
            daemon.wait_for_log(f"input knobs: listening on jack port {knobs}:in")
            time.sleep(2.5)  # the child says who is joined to its port every 2 s
            [child] = listeners_of(daemon.process.pid)
            os.kill(child, signal.SIGSEGV)  # what a crash in rtmidi's native code looks like
            daemon.wait_for_log("SIGSEGV")
            count = len(jack_receiver.notes())
            # The restarted child joins the sender to its port before it says it is ready.
            daemon.wait_for_log(f"joining {sender.port} to it again")
            for value in range(10):
                sender.send([0xB0, 74, value])
                time.sleep(0.01)
            time.sleep(1.0)
            assert len(jack_receiver.notes()) > count, "the music stopped with the input"
            assert daemon.stop() == 0, daemon.text()
        finally:  # a failed try must not play on into the next one
            sender.close()
            if daemon.process.poll() is None:
                daemon.process.kill()
        knob_figures = json.loads(stats.read_text())["inputs"]["knobs"]
        assert knob_figures["restarts"] == 1
        assert knob_figures["readings"] == 10, knob_figures

    retried_on_xruns(jack_xruns, crash_and_hear)


def test_a_controller_plugged_in_after_start_is_heard_within_seconds(
        tmp_path: Path, jack_server: None, daemons: list[Daemon]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.5})])
    controller = unique_name("livegen-late-controller")
    config = knob_config(tmp_path / "c.toml", trace, port=unique_name("livegen-e2e"),
                         knobs=controller, virtual=False)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_for_log("looking for it every")
    time.sleep(6.0)  # long enough for a growing backoff to have grown past 2 s
    plugged = time.monotonic()
    sender = JackSender(controller)
    try:
        daemon.wait_for_log(f"listening on jack port {controller}:out", timeout=10)
        heard_after = time.monotonic() - plugged
    finally:
        sender.close()
    assert daemon.stop() == 0, daemon.text()
    assert heard_after < 4.0  # a retry every 2 s, plus a start; loose on a shared machine


def test_a_stray_sysex_start_does_not_swallow_the_knobs_that_follow() -> None:
    midi = MidiInput("knobs", MidiInputConfig(type="midi", virtual=True))
    emitted: list[dict[str, float]] = []
    # rtmidi's JACK input glues what follows an unterminated sysex onto it until an F7.
    glued = [0xF0, 0x01, 0x02, 0xB0, 74, 10, 0xF8, 0xB0, 74, 20, 0x90, 60, 0xF7]
    midi.handle(glued, lambda values, t=None: emitted.append(dict(values)))
    assert emitted == [{"cc.74": 10 / 127}, {"cc.74": 20 / 127}]
    assert midi.stats.dropped == {"unterminated sysex": 1, "malformed": 1}


def test_panic_sends_all_notes_off_first_then_note_offs_where_livegen_plays(
        tmp_path: Path, jack_receiver: JackReceiver) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[output]\napi = "jack"\nchannel = 2\npanic_channels = [1, 2, 10]\n')
    done = subprocess.run(
        [sys.executable, "-m", "livegen.cli", "panic", "--port", jack_receiver.name,
         "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    expected = [(0xB0 | ch, cc, 0) for ch in (0, 1, 9) for cc in (64, 123)]
    expected += [(0x81, pitch, 0) for pitch in range(128)]  # channel 2, where livegen plays
    jack_receiver.wait_for(len(expected), notes_only=False)
    jack_receiver.settle()
    assert jack_receiver.messages == expected
    assert jack_receiver.name in done.stdout


def test_panic_reaches_every_port_a_running_livegen_plays_to(
        tmp_path: Path, jack_server: None) -> None:
    # Two players with the same port name: JACK names them P and P-01; each says the name
    # it really got, and one `livegen panic` reaches both their synths.
    from livegen.music.events import Note, write_midi

    song = tmp_path / "song.mid"
    write_midi([Note(60 + i % 12, 90, i * 0.2, i * 0.2 + 0.15) for i in range(150)], song)
    port = unique_name("livegen-twin")
    config = tmp_path / "config.toml"
    config.write_text(f'[output]\napi = "jack"\nport = "{port}"\nrequire_port = true\n'
                      "panic_channels = [1, 3]\n")
    synths = [JackReceiver(unique_name("livegen-synth")) for _ in range(2)]
    players: list[subprocess.Popen[str]] = []
    try:
        for n, synth in enumerate(synths):
            log = tmp_path / f"play{n}.log"
            players.append(subprocess.Popen(
                [sys.executable, "-m", "livegen.cli", "play", str(song), "--config",
                 str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT))
            own = port if n == 0 else f"{port}-01"
            deadline = time.monotonic() + 20
            while f"{own}:out" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            synth.connect(f"{own}:out")
        synths[1].wait_for(2)
        done = subprocess.run([sys.executable, "-m", "livegen.cli", "panic", "--config",
                               str(config)], capture_output=True, text=True, timeout=60,
                              cwd=ROOT)
        assert done.returncode == 0, done.stderr
        for synth in synths:
            synth.wait_for(1, notes_only=False)
            assert (0xB2, 123, 0) in synth.messages, synth.messages[-5:]
            assert synth.port in done.stdout, done.stdout
    finally:
        for player in players:
            player.send_signal(signal.SIGTERM)
            player.wait(20)
        for synth in synths:
            synth.close()


def test_livegen_play_keeps_each_message_on_its_channel_drums_included(
        tmp_path: Path, jack_receiver: JackReceiver) -> None:
    import mido

    song = tmp_path / "band.mid"
    track = mido.MidiTrack()
    for i in range(4):
        for channel, pitch in ((0, 60 + i), (9, 36), (2, 48)):
            track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=90))
        track.append(mido.Message("control_change", channel=2, control=7, value=100))
        for channel, pitch in ((0, 60 + i), (9, 36), (2, 48)):
            track.append(mido.Message("note_off", channel=channel, note=pitch, time=0
                                      if channel else 120))
    midi = mido.MidiFile(type=0)
    midi.tracks.append(track)
    midi.save(str(song))
    port = unique_name("livegen-play")
    config = tmp_path / "config.toml"
    config.write_text(f'[output]\napi = "jack"\nport = "{port}"\nrequire_port = true\n'
                      "panic_channels = [1]\n")
    player = subprocess.Popen([sys.executable, "-m", "livegen.cli", "play", str(song),
                               "--config", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    jack_receiver.connect(f"{port}:out")
    out, _ = player.communicate(timeout=60)
    assert player.returncode == 0, out
    jack_receiver.settle()
    ons = [(m[0] & 0x0F, m[1]) for m in jack_receiver.notes() if m[0] & 0xF0 == 0x90]
    assert ons == [(ch, p) for i in range(4) for ch, p in ((0, 60 + i), (9, 36), (2, 48))]
    assert (0xB2, 7, 100) in jack_receiver.messages
    assert "channels 1,3,10" in out


def test_livegen_play_with_nothing_to_play_to_says_so(tmp_path: Path) -> None:
    from livegen.music.events import Note, write_midi

    song = tmp_path / "song.mid"
    write_midi([Note(60, 90, 0.0, 0.5)], song)
    config = tmp_path / "config.toml"
    config.write_text('[output]\napi = "jack"\nrequire_port = false\n')
    env = {**os.environ, "JACK_DEFAULT_SERVER": unique_name("livegen-no-server")}
    done = subprocess.run([sys.executable, "-m", "livegen.cli", "play", str(song), "--config",
                           str(config)], capture_output=True, text=True, timeout=60, env=env,
                          cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "nothing to play to" in done.stderr.splitlines()[-1]
