"""Everything check-config accepts runs: configs at the very ends of what every target
takes, accepted by `livegen check-config`, then played by `livegen run` into a MIDI file
with wild values arriving over OSC on the way."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from livegen.music.events import read_midi

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "charrnn.json"
SOURCES = ["sim.hand.y", "sim.hand.x", "sim.emg.ch0", "sim.emg.ch1", "sim.emg.ch2",
           "sim.emg.ch3", "sim.emg.ch4", "sim.emg.ch5", "sim.emg.total"]

# target -> the rule's own keys; each config drives all nine targets, one rule each.
HOSTILE = {
    "the low ends": {
        "pitch": "out_range = [0.0, 0.0]", "density": "out_range = [1.0, 1.0]",
        "key": "out_range = [0.0, 0.0]", "temperature": "out_range = [0.05, 0.05]",
        "top_p": "out_range = [0.01, 0.01]", "velocity": "out_range = [0.0, 0.0]",
        "tempo": "out_range = [20.0, 20.0]", "generator": "out_range = [0.0, 0.0]",
        "noise[0]": "out_range = [-1.0, -1.0]"},
    "the high ends": {
        "pitch": "out_range = [1.0, 1.0]", "density": "out_range = [1.0, 1.0]",
        "key": "out_range = [11.0, 11.0]", "temperature": "out_range = [5.0, 5.0]",
        "top_p": "out_range = [1.0, 1.0]", "velocity": "out_range = [2.0, 2.0]",
        "tempo": "out_range = [300.0, 300.0]", "generator": "out_range = [2.0, 2.0]",
        "noise[63]": "out_range = [1.0, 1.0]"},
    "whole ranges, swept fast": {
        "pitch": "out_range = [1.0, 0.0]\ncurve = 'exponential'",
        "density": "out_range = [0.0, 1.0]\ncurve = 's-curve'\n"
                   "smoothing = { min_cutoff = 100.0, beta = 100.0, d_cutoff = 100.0 }",
        "key": "out_range = [11.0, 0.0]\ncurve = 'logarithmic'",
        "temperature": "out_range = [5.0, 0.05]\n"
                       "smoothing = { min_cutoff = 0.001, beta = 100.0 }",
        "top_p": "out_range = [0.01, 1.0]\ninvert = true\ndeadband = 1.0",
        "velocity": "out_range = [2.0, 0.0]\nin_range = [-1e300, 1e300]\n"
                    "smoothing = { min_cutoff = 0.001, beta = 0.0 }",
        "tempo": "out_range = [300.0, 20.0]\nin_range = [1.0, 0.0]",
        "generator": "out_range = [0.0, 2.0]",
        "noise[10]": "out_range = [1.0, -1.0]"},
}


def hostile_config(path: Path, rules: dict[str, str], osc_port: int) -> Path:
    text = f"""
[engine]
seed = 5

[clock]
bpm = 300
send = true

[output]
port = ""
record = "{path.with_suffix('.mid')}"

[generators.charrnn]
model = "{MODEL}"
temperature = 5.0
top_p = 0.01

[inputs.sim]
type = "sim"
rate_hz = 200.0
period_s = 1.0

[inputs.osc]
type = "osc"
port = {osc_port}
"""
    for i, (target, keys) in enumerate(rules.items()):
        # velocity comes over OSC, where a tracker can send anything a float holds
        source = "osc.wild" if target == "velocity" else SOURCES[i]
        text += f"\n[[map]]\nsource = '{source}'\ntarget = '{target}'\n{keys}\n"
    path.write_text(text)
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_config_check_config_accepts_runs_and_plays(name: str, tmp_path: Path) -> None:
    osc_port = free_udp_port()
    config = hostile_config(tmp_path / "hostile.toml", HOSTILE[name], osc_port)
    checked = subprocess.run([sys.executable, "-m", "livegen.cli", "check-config",
                              str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        run = subprocess.Popen([sys.executable, "-m", "livegen.cli", "run", "--config",
                                str(config), "--duration", "3"],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while "ready in" not in log_path.read_text() and run.poll() is None:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            client = SimpleUDPClient("127.0.0.1", osc_port)
            for value in (1.7e308, -1.7e308, 5e-324, -0.0, 1e300, 0.5) * 10:
                message = OscMessageBuilder("/livegen/in/wild")
                message.add_arg(value, "d")  # a double: OSC's floats stop at 3.4e38
                client.send(message.build())
                time.sleep(0.01)
            status = run.wait(60)
        finally:
            if run.poll() is None:
                run.kill()
    text = log_path.read_text()
    assert status == 0, text
    assert "Traceback" not in text and "restart" not in text, text
    notes = read_midi(tmp_path / "hostile.mid")
    assert notes, text
