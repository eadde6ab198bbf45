"""`livegen devices` against real things: a video file, a pty as a serial device, UDP ports
on loopback (one free, one taken), whatever MIDI systems this machine has."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import tty
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import rtmidi

from livegen.devices import devices_command
from livegen.ports import jack_running

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A config whose inputs are partly there and partly not."""
    video = tmp_path / "rehearsal.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for _ in range(3):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    master, slave = os.openpty()
    tty.setraw(slave)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[inputs.cam]
type = "camera"
path = "rehearsal.avi"

[inputs.cam2]
type = "camera"
path = "missing.avi"

[inputs.arm]
type = "emg"
protocol = "cyton"
port = "{os.ttyname(slave)}"
profile = "{CHECKOUT / 'devices' / 'openbci-cyton.toml'}"

[inputs.arm2]
type = "emg"
protocol = "csv"
port = "{tmp_path / 'livegen-emg'}"

[inputs.phone]
type = "osc"
port = {free_port}

[inputs.busy]
type = "osc"
port = {taken.getsockname()[1]}
""")
    yield {"config": config, "tty": os.ttyname(slave), "free_port": free_port}
    taken.close()
    os.close(master)
    os.close(slave)


def run_devices(config: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert devices_command(argparse.Namespace(config=config)) == 0
    return out.getvalue()


def line_of(text: str, start: str) -> str:
    matches = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    assert matches, f"no line starting with {start!r} in:\n{text}"
    return matches[0]


def test_devices_reports_each_configured_input_and_whether_it_is_reachable(
        rig: dict[str, object]) -> None:
    text = run_devices(rig["config"])
    for title in ("cameras", "serial ports", "MIDI", "OSC", "ONNX Runtime",
                  "configured inputs"):
        assert f"\n{title}\n" in f"\n{text}"
    assert "reachable: " in line_of(text, "inputs.cam (camera")
    assert "160x120 at 25 fps" in line_of(text, "inputs.cam (camera")
    assert "NOT reachable" in line_of(text, "inputs.cam2")
    assert "no such file" in line_of(text, "inputs.cam2")
    arm = line_of(text, "inputs.arm (emg, cyton")
    assert arm.endswith(f"reachable: {rig['tty']}") and "NOT" not in arm
    assert "NOT reachable" in line_of(text, "inputs.arm2") and "99-livegen.rules" in text
    assert f"can listen on 127.0.0.1:{rig['free_port']}" in line_of(text, "inputs.phone")
    assert "is in use" in line_of(text, "inputs.busy")
    # The profile's suggested mappings, with the input's name filled in.
    assert '[[map]]\n      source = "arm.total"\n      target = "velocity"' in text


def test_devices_lists_onnx_providers_and_every_midi_system(rig: dict[str, object]) -> None:
    import onnxruntime

    text = run_devices(rig["config"])
    assert "CPUExecutionProvider" in line_of(text, "version")
    assert set(onnxruntime.get_available_providers()) <= set(
        line_of(text, "version").split(": ", 1)[1].split(", "))
    midi = text.split("\nMIDI\n", 1)[1].split("\nOSC\n", 1)[0]
    for api in rtmidi.get_compiled_api():
        assert rtmidi.get_api_display_name(api) + ":" in midi
    if rtmidi.API_UNIX_JACK in rtmidi.get_compiled_api():
        jack = line_of(midi, "Jack:")
        assert ("reachable;" in jack) == jack_running()
    reachable = "reachable;" in midi
    assert ("no MIDI system is reachable" in midi) == (not reachable)


def test_devices_with_a_broken_config_still_lists_the_hardware(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[inputs.cam]\ntype = 'camra'\n")
    text = run_devices(config)
    assert text.startswith("config: ")
    assert "unknown input type 'camra'; did you mean 'camera'?" in text
    assert "\nONNX Runtime\n" in text
    assert "(no config loaded)" in text


@pytest.mark.parametrize("example", ["gesture.toml", "emg.toml"])
def test_example_configs_are_valid(example: str) -> None:
    from livegen.config import load

    config = load(CHECKOUT / "examples" / example)
    assert config.map
    for rule in config.map:
        assert rule.input_name in config.inputs
