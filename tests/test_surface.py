"""The control surface: presets in their TOML file, OSC commands to a running daemon over
real UDP with the replies a controller shows, a MIDI program change through JACK recalling
a preset, and MIDI thru heard at a JACK receiver."""

from __future__ import annotations

import json
import os
import socket
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    JackReceiver,
    JackSender,
    XrunCounter,
    retried_on_xruns,
    sounding_notes,
    unique_name,
    wait_for_port,
)
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient
from test_engine import ROOT, Daemon, write_trace

from livegen import config as config_module
from livegen import presets
from livegen.control import Controls, Mapper
from livegen.inputs.base import Reading

MODEL = ROOT / "models" / "charrnn.json"


# ---------------------------------------------------------------- presets, in process

def test_presets_round_trip_through_their_file_and_keep_each_other(tmp_path: Path) -> None:
    path = tmp_path / "presets.toml"
    high = Controls(pitch=0.875, density=0.25, key=7, temperature=0.8, velocity=1.2,
                    tempo=96.0, generator="b", noise=(0.5, 0.0, -0.25),
                    scoped=(("a", "temperature", -1, 1.3), ("b", "noise", 2, 0.75)))
    presets.store(path, 3, high, 'bright "lead"')
    presets.store(path, 5, Controls(pitch=0.1, generator="a"))
    presets.store(path, 3, high)  # stored again: its name stays
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left
    table = tomllib.loads(path.read_text())["presets"]
    assert sorted(table) == ["3", "5"]
    assert table["3"]["name"] == 'bright "lead"' and table["5"]["name"] == "preset 5"
    name, values = presets.recall(path, 3, ["a", "b"])
    assert name == 'bright "lead"'
    assert values == {"generator": 1.0, "pitch": 0.875, "density": 0.25, "key": 7.0,
                      "temperature": 0.8, "top_p": 0.95, "velocity": 1.2, "tempo": 96.0,
                      "noise[0]": 0.5, "noise[2]": -0.25, "a.temperature": 1.3,
                      "b.noise[2]": 0.75}
    # Recalled through the mapper, the preset gives back the controls it was stored from.
    cfg = config_module.loads(f"""
[engine]
generators = ["a", "b"]
generator = "a"
[generators.a]
type = "charrnn"
model = "{MODEL}"
[generators.b]
type = "charrnn"
model = "{MODEL}"
channel = 2
""", base_dir=tmp_path)
    mapper = Mapper(cfg)
    controls = mapper.update(Reading("preset", 1.0, values))
    assert controls is not None
    for target in ("generator", "pitch", "density", "key", "temperature", "velocity",
                   "tempo"):
        assert getattr(controls, target) == getattr(high, target), target
    assert controls.noise[:3] == (0.5, 0.0, -0.25)
    assert controls.for_generator("a").temperature == 1.3
    assert controls.for_generator("b").noise[2] == 0.75


def test_a_hand_written_preset_sets_what_it_holds_and_skips_what_it_cannot(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "presets.toml"
    path.write_text('[presets.1]\npitch = 0.9\ngenerator = "nosuch"\nloudness = 3\n'
                    'density = "high"\n\n[presets.200]\npitch = 0.1\n')
    name, values = presets.recall(path, 1, ["charrnn"])
    assert (name, values) == ("preset 1", {"pitch": 0.9})
    text = caplog.text
    assert "'nosuch' does not run" in text and "presets.1.loudness" in text
    assert "presets.1.density" in text and "presets.200 is not a preset" in text
    with pytest.raises(presets.PresetError, match=r"preset 4 is not in .* \(stored: 1\); "
                                                  r"store it first"):
        presets.recall(path, 4, ["charrnn"])
    with pytest.raises(presets.PresetError, match=r"preset numbers run 1\.\.128"):
        presets.store(path, 0, Controls())


def test_a_presets_file_that_is_not_toml_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "presets.toml"
    path.write_text("[presets.1\npitch = ")
    with pytest.raises(presets.PresetError, match=r"not valid TOML .*; fix it or move it away"):
        presets.store(path, 2, Controls())
    assert path.read_text() == "[presets.1\npitch = "


def test_a_recalled_value_holds_until_its_own_rule_moves(tmp_path: Path) -> None:
    cfg = config_module.loads("""
[inputs.knobs]
type = "osc"
[[map]]
source = "knobs.a"
target = "pitch"
[[map]]
source = "knobs.b"
target = "density"
""", base_dir=tmp_path)
    mapper = Mapper(cfg)
    mapper.update(Reading("knobs", 1.0, {"a": 0.2, "b": 0.3}))
    recalled = mapper.update(Reading("preset", 2.0, {"pitch": 0.9, "density": 0.8}))
    assert recalled is not None and (recalled.pitch, recalled.density) == (0.9, 0.8)
    # Another control's move leaves the recalled pitch; density's own knob takes it back.
    moved = mapper.update(Reading("knobs", 3.0, {"b": 0.4}))
    assert moved is not None and (moved.pitch, moved.density) == (0.9, 0.4)
    moved = mapper.update(Reading("knobs", 4.0, {"a": 0.1}))
    assert moved is not None and moved.pitch == 0.1


# ---------------------------------------------------------------- OSC to a running daemon

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def surface_config(path: Path, trace: Path, *, port: str = "", connect: str = "",
                   extra: str = "") -> Path:
    """A daemon with two Char-RNNs in switch mode (a on channel 1, b on channel 2), steered
    by a replayed hand, playing to JACK port `port` (joined to `connect`)."""
    output = (f'api = "jack"\nport = "{port}"\nrequire_port = true\n'
              f'connect = ["{connect}"]' if port else 'port = ""')
    path.write_text(f"""
[engine]
seed = 5
generators = ["a", "b"]
generator = "a"
mode = "switch"
presets = "{path.parent / 'presets.toml'}"

[output]
{output}
panic_channels = [1, 2]

[generators.a]
type = "charrnn"
model = "{MODEL}"
channel = 1

[generators.b]
type = "charrnn"
model = "{MODEL}"
channel = 2

[inputs.hand]
type = "replay"
path = "{trace}"

[[map]]
source = "hand.y"
target = "pitch"

[[map]]
source = "hand.x"
target = "density"
{extra}
""")
    return path


class Controller:
    """A controller on loopback (python-osc): sends commands from its own socket and reads
    what comes back to it."""

    def __init__(self, port: int) -> None:
        self.client = SimpleUDPClient("127.0.0.1", port)

    def ask(self, address: str, *args: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Send one command; the replies until the state's three messages (or an error)
        have come, as {address: first argument}. Earlier replies not read are dropped."""
        while self.client.receive(0.05):
            pass
        self.client.send_message(address, list(args))
        return read_state(self.client, timeout)


def read_state(client: SimpleUDPClient, timeout: float) -> dict[str, Any]:
    replies: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    wanted = {"/livegen/state/generator", "/livegen/state/paused", "/livegen/state/preset"}
    while time.monotonic() < deadline and not (wanted <= set(replies)
                                                or "/livegen/error" in replies):
        data = client.receive(max(0.01, deadline - time.monotonic()))
        if not data:
            break
        message = OscMessage(data)
        replies[message.address] = message.params[0] if message.params else None
    return replies


def state(generator: str, paused: int, preset: int) -> dict[str, Any]:
    return {"/livegen/state/generator": generator, "/livegen/state/paused": paused,
            "/livegen/state/preset": preset}


def note_ons(arrivals: list[tuple[float, tuple[int, ...]]], channel: int, start: float,
             end: float = float("inf")) -> list[float]:
    return [t for t, m in arrivals if m[0] == 0x90 | (channel - 1) and m[2] > 0
            and start <= t < end]


def wait_for_note_on(receiver: JackReceiver, channel: int, after: float,
                     timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if note_ons(receiver.arrivals, channel, after):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.jack
def test_osc_commands_switch_pause_and_keep_presets_and_each_reply_shows_the_state(
        tmp_path: Path, jack_receiver: JackReceiver) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"y": 0.5, "x": 0.95})])
    osc_port, display = free_udp_port(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    display.bind(("127.0.0.1", 0))  # a second controller's display, told of every change
    display.settimeout(0.2)
    port = unique_name("livegen-surface")
    config = surface_config(tmp_path / "c.toml", trace, port=port, connect=jack_receiver.name,
                            extra=f"""
[inputs.phone]
type = "osc"
port = {osc_port}

[inputs.tablet]
type = "osc"
port = {free_udp_port()}
reply_to = "127.0.0.1:{display.getsockname()[1]}"
""")
    stats = tmp_path / "stats.json"
    daemon = Daemon(config, "--stats-json", str(stats))
    try:
        daemon.wait_for_log("ready in")
        phone = Controller(osc_port)
        assert phone.ask("/livegen/state") == state("a", 0, 0)
        assert wait_for_note_on(jack_receiver, 1, 0.0), daemon.text()

        # Switch: b takes over at the next bar line (2 s at 120 bpm); a falls silent.
        switched = time.monotonic()
        assert phone.ask("/livegen/generator", "b") == state("b", 0, 0)
        assert wait_for_note_on(jack_receiver, 2, switched), daemon.text()
        time.sleep(3.0)
        assert not note_ons(jack_receiver.arrivals, 1, switched + 2.6), "a still plays"

        # Pause: every note ends at the next beat and nothing plays until resume.
        paused = time.monotonic()
        assert phone.ask("/livegen/pause") == state("b", 1, 0)
        time.sleep(3.0)
        resumed = time.monotonic()
        assert phone.ask("/livegen/pause", 0) == state("b", 0, 0)  # a toggle's "off"
        assert not note_ons(jack_receiver.arrivals, 2, paused + 1.0, resumed)
        assert not note_ons(jack_receiver.arrivals, 1, paused + 1.0, resumed)
        assert sounding_notes([m for t, m in jack_receiver.arrivals if t < resumed]) == set()
        assert wait_for_note_on(jack_receiver, 2, resumed), "the music did not play on"

        # Presets: store b's state, switch back to a, recall it (a TouchOSC-style button).
        assert phone.ask("/livegen/preset/store", 2, "b up") == state("b", 0, 2)
        assert phone.ask("/livegen/generator/a", 1.0) == state("a", 0, 2)
        assert phone.ask("/livegen/preset/recall/2", 1.0) == state("b", 0, 2)
        stored = tomllib.loads((tmp_path / "presets.toml").read_text())["presets"]["2"]
        assert (stored["name"], stored["generator"]) == ("b up", "b")
        # The other controller's display heard every change, though it sent nothing.
        shown: dict[str, Any] = {}
        while True:
            try:
                message = OscMessage(display.recv(65536))
            except TimeoutError:
                break
            shown[message.address] = message.params[0]
        assert shown == state("b", 0, 2)

        # What cannot be done is answered with the reason and the fix.
        error = phone.ask("/livegen/preset/recall", 9)["/livegen/error"]
        assert "preset 9 is not in" in error and "store it first" in error
        error = phone.ask("/livegen/generator", "nosuch")["/livegen/error"]
        assert "no generator 'nosuch' runs (running: a, b)" in error
        assert "/livegen/error" in phone.ask("/livegen/preset/store", "x")
        # A button's release does nothing; panic is answered with the state.
        phone.client.send_message("/livegen/panic", 0.0)
        assert phone.ask("/livegen/panic") == state("b", 0, 2)
    finally:
        assert daemon.stop() == 0, daemon.text()
    figures = json.loads(stats.read_text())
    assert figures["surface"]["generator"] == "b" and figures["surface"]["preset"] == 2
    phone_figures = figures["inputs"]["phone"]
    assert phone_figures["commands"] == 12 and phone_figures["dropped"] == {"bad command": 3}
    assert "Traceback" not in daemon.text()


# ---------------------------------------------------------------- MIDI through JACK

def midi_surface_config(path: Path, trace: Path, *, port: str, connect: str, knobs: str,
                        midi: str) -> Path:
    return surface_config(path, trace, port=port, connect=connect, extra=f"""
[inputs.keys]
type = "midi"
api = "jack"
virtual = true
port = "{knobs}"
{midi}
""")


@pytest.mark.jack
def test_a_program_change_recalls_a_preset(tmp_path: Path,
                                           jack_receiver: JackReceiver) -> None:
    presets.store(tmp_path / "presets.toml", 3,
                  Controls(generator="b", pitch=0.85, temperature=0.7), "three")
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"x": 0.95})])
    port, knobs = unique_name("livegen-surface"), unique_name("livegen-pc")
    config = midi_surface_config(tmp_path / "c.toml", trace, port=port,
                                 connect=jack_receiver.name, knobs=knobs,
                                 midi='program_change = "preset"')
    stats = tmp_path / "stats.json"
    daemon = Daemon(config, "--stats-json", str(stats))
    sender = JackSender(unique_name("livegen-keyboard"))
    try:
        sender.connect(f"{knobs}:in")
        assert wait_for_note_on(jack_receiver, 1, 0.0), daemon.text()
        recalled = time.monotonic()
        sender.send([0xC0, 2])   # program change 2 (shown as 3): preset 3
        sender.send([0xC0, 40])  # no preset 41: counted, the music goes on
        assert wait_for_note_on(jack_receiver, 2, recalled), daemon.text()
        daemon.wait_for_log("preset 3 (three) recalled")
    finally:
        sender.close()
        assert daemon.stop() == 0, daemon.text()
    figures = json.loads(stats.read_text())
    surface = figures["surface"]
    assert (surface["generator"], surface["preset"]) == ("b", 3)
    assert surface["controls"]["pitch"] == 0.85 and surface["controls"]["temperature"] == 0.7
    assert figures["inputs"]["keys"]["dropped"] == {"no such preset": 1}
    assert figures["inputs"]["keys"]["readings"] == 0  # a recall is no `program` value


@pytest.mark.jack
def test_midi_thru_plays_the_performers_notes_through_livegens_port(
        tmp_path: Path, jack_receiver: JackReceiver, jack_xruns: XrunCounter) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [(0.0, {"x": 0.0})])

    def play_through() -> None:
        port, knobs = unique_name("livegen-surface"), unique_name("livegen-thru")
        config = midi_surface_config(tmp_path / f"{port}.toml", trace, port=port,
                                     connect=jack_receiver.name, knobs=knobs,
                                     midi="thru = true\nthru_channel = 5\nchannel = 1")
        daemon = Daemon(config)
        sender = JackSender(unique_name("livegen-keyboard"))
        played = [(0x90, 60, 100), (0x90, 64, 90), (0x80, 60, 0), (0x91, 67, 80)]
        heard_before = len(thru_notes(jack_receiver))
        try:
            sender.connect(f"{knobs}:in")
            wait_for_port(f"{port}:out")
            daemon.wait_for_log("ready in")
            sent = time.monotonic()
            for message in played:  # the last is on channel 2: not this input's
                sender.send(list(message))
                time.sleep(0.05)
            deadline = time.monotonic() + 10
            while (len(thru_notes(jack_receiver)) - heard_before < 3
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        finally:
            sender.close()
            assert daemon.stop() == 0, daemon.text()
        jack_receiver.settle()
        heard = [(t, m) for t, m in thru_notes(jack_receiver) if t >= sent]
        # On channel 5 in the order played; 64, still held at the stop, is ended by livegen.
        assert [m for _, m in heard] == [(0x94, 60, 100), (0x94, 64, 90), (0x84, 60, 0),
                                         (0x84, 64, 0)], daemon.text()
        assert sounding_notes(jack_receiver.messages) == set()

    retried_on_xruns(jack_xruns, play_through)


def thru_notes(receiver: JackReceiver) -> list[tuple[float, tuple[int, ...]]]:
    return [(t, m) for t, m in receiver.arrivals if m[0] & 0x0F == 4 and m[0] & 0xE0 == 0x80]


def test_the_surface_keys_are_checked(tmp_path: Path) -> None:
    def problems(text: str) -> str:
        try:
            config_module.loads(text, base_dir=tmp_path)
        except config_module.ConfigError as exc:
            return str(exc)
        return ""

    assert "reply_to: 'phone' is not host:port" in problems(
        '[inputs.o]\ntype = "osc"\nreply_to = "phone"\n')
    assert "'preset' is the source of recalled presets" in problems(
        '[inputs.preset]\ntype = "osc"\n')
    assert "set [monitor] enabled = true" in problems('[inputs.page]\ntype = "page"\n')
    assert "thru_channel: 17 is out of range" in problems(
        '[inputs.k]\ntype = "midi"\nvirtual = true\nthru_channel = 17\n')
    assert "program_change: 'recall' (string) is not one of 'value', 'preset'" in problems(
        '[inputs.k]\ntype = "midi"\nvirtual = true\nprogram_change = "recall"\n')
    assert problems(f'[engine]\npresets = "{os.devnull}"\n') == ""


def test_a_replay_repeats_the_switches_and_recalls_a_recording_holds(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "hand.jsonl", [(0.0, {"y": 0.5, "x": 0.9})])
    osc_port = free_udp_port()
    config = surface_config(tmp_path / "c.toml", trace, extra=f"""
[inputs.phone]
type = "osc"
port = {osc_port}
""")
    recorded, played = tmp_path / "performance.jsonl", tmp_path / "stats.json"
    daemon = Daemon(config, "--record", str(recorded), "--duration", "4")
    daemon.wait_for_log("ready in")
    assert Controller(osc_port).ask("/livegen/generator", "b") == state("b", 0, 0)
    assert daemon.stop(sig=None) == 0, daemon.text()
    switches = [json.loads(line) for line in recorded.read_text().splitlines()[1:]
                if '"source":"preset"' in line]
    assert [s["values"] for s in switches] == [{"generator": 1.0}]
    replay = Daemon(config, "--replay", str(recorded), "--duration", "4", "--stats-json",
                    str(played))
    assert replay.stop(sig=None) == 0, replay.text()
    assert json.loads(played.read_text())["surface"]["generator"] == "b"
    assert "switch: b takes over from a" in replay.text()
