"""The DCRNN played live, through JACK: the EMG example's rules driven by an armband on a
pseudo-terminal (CSV lines, real pyserial), three rehearsed gestures giving three rhythms
that can be told apart, SIGTERM leaving nothing sounding; themes as presets, morphed."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import JackReceiver, sounding_notes, unique_name
from test_emg import PtyDevice
from test_engine import ROOT, Daemon

pytestmark = pytest.mark.jack

BPM = 240            # a bar a second: a rehearsal in seconds, not minutes
BAR_S = 4 * 60 / BPM
GESTURE_BARS = 8     # each gesture is held this long
# How strongly each of the eight channels' muscles fire in each gesture: the RMS of the
# signal (full_scale 100 reads an envelope of 100 as 1.0).
GESTURES = {"rest": [5] * 8, "wave in": [90] * 4 + [10] * 4, "wave out": [10] * 4 + [90] * 4}
SAMPLE_HZ = 200


def emg_example(path: Path, device: PtyDevice, port: str, receiver: str) -> Path:
    """examples/emg.toml as shipped (its DCRNN and its rules), its armband replaced by CSV
    lines on a pseudo-terminal, playing through JACK to `receiver`."""
    example = (ROOT / "examples" / "emg.toml").read_text()
    example = example.replace('model = "../models/dcrnn.json"',
                              f'model = "{ROOT / "models" / "dcrnn.json"}"')
    head, rest = example.split("[inputs.arm]", 1)
    rules = rest[rest.index("[[map]]"):]
    path.write_text(f"""{head}
[clock]
bpm = {BPM}
send = true

[output]
api = "jack"
port = "{port}"
require_port = true
connect = ["{receiver}"]
panic_channels = [1]

[inputs.arm]
type = "emg"
protocol = "csv"
port = "{device.link}"
channels = 8
signal = "envelope"
window_ms = 500.0
full_scale = 100.0

{rules}""")
    return path


def bar_patterns(arrivals: list[tuple[float, tuple[int, ...]]]) -> dict[int, tuple[int, ...]]:
    """Each bar's onset pattern: how many notes start on each of its 16 steps, bars
    counted from the first clock pulse (beat 0). Counts, not whether any note starts: the
    DCRNN's texture is dense, and two gestures can both start a note on every step while
    their accents differ."""
    pulses = [t for t, m in arrivals if m[0] == 0xF8]
    origin, step = pulses[0], 60 / BPM / 4
    bars: dict[int, list[int]] = defaultdict(lambda: [0] * 16)
    for t, m in arrivals:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            index = round((t - origin) / step)
            bars[index // 16][index % 16] += 1
    return {bar: tuple(pattern) for bar, pattern in bars.items()}


def test_the_emg_example_plays_the_dcrnn_and_three_gestures_give_three_rhythms(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    device = PtyDevice(tmp_path)
    port = unique_name("livegen-dcrnn")
    config = emg_example(tmp_path / "emg.toml", device, port, jack_receiver.name)
    stats = tmp_path / "stats.json"
    stop = threading.Event()
    started: dict[str, float] = {}

    def armband() -> None:  # an Arduino's 200 lines a second, one gesture after another
        # Each muscle's signal swings +-level around its rest: an envelope of exactly that
        # level, as a gesture held steady gives (noisier signals: README, The DCRNN).
        swing = np.array([[1.0] * 8, [-1.0] * 8, [1.0] * 8, [-1.0] * 8])
        for name, levels in GESTURES.items():
            started[name] = time.monotonic()
            until = started[name] + GESTURE_BARS * BAR_S
            while time.monotonic() < until and not stop.is_set():
                rows = swing * np.array(levels, float)  # 20 ms of muscle signal
                device.write("".join(",".join(f"{v:.2f}" for v in row) + "\r\n"
                                     for row in rows).encode())
                time.sleep(4 / SAMPLE_HZ)

    daemon = Daemon(config, "--stats-json", str(stats))
    daemons.append(daemon)
    daemon.wait_for_log("input arm")
    player = threading.Thread(target=armband, daemon=True)
    player.start()
    player.join(60)
    stop.set()
    time.sleep(0.5)
    assert daemon.stop(sig=signal.SIGTERM) == 0, daemon.text()
    jack_receiver.settle()
    arrivals = jack_receiver.arrivals
    assert sounding_notes(jack_receiver.messages) == set()
    patterns = bar_patterns(arrivals)
    origin = next(t for t, m in arrivals if m[0] == 0xF8)
    # A gesture is heard once its envelope has risen (a second's window) and the next bar
    # not yet planned begins: from the third bar on; its bars from then to its end are its
    # rhythm. The DCRNN plays two-bar phrases, so a bar is compared with the bars of its
    # own place in the phrase (even or odd).
    labelled = []
    for label, name in enumerate(GESTURES):
        start = int((started[name] - origin) / BAR_S)
        labelled += [(label, bar % 2, np.array(patterns.get(bar, (0,) * 16), float))
                     for bar in range(start + 3, start + GESTURE_BARS)]
    assert len(labelled) >= 12, labelled
    # Leave-one-out nearest centroid: each bar told apart by the other bars' rhythms.
    right = 0
    for i, (label, parity, pattern) in enumerate(labelled):
        others = [(lab, p) for j, (lab, par, p) in enumerate(labelled)
                  if j != i and par == parity]
        centroids = {lab: np.mean([p for lab2, p in others if lab2 == lab], axis=0)
                     for lab in {lab for lab, _ in others}}
        guess = min(centroids, key=lambda lab: np.sum((centroids[lab] - pattern) ** 2))
        right += guess == label
    accuracy = right / len(labelled)
    print(f"gestures told apart: {accuracy:.3f}")
    assert accuracy >= 0.9, f"{accuracy:.3f}: " + " ".join(
        f"{lab}:{''.join(str(min(int(x), 9)) for x in p)}" for lab, _, p in labelled)
    figures = json.loads(stats.read_text())["generators"]["dcrnn"]
    assert figures["missed"] == 0 and figures["failures"] == 0, figures


def test_a_theme_is_a_preset_and_a_morph_moves_the_code_bar_by_bar(
        tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    from pythonosc.udp_client import SimpleUDPClient

    from livegen.bench import _free_udp_port

    osc_port = _free_udp_port()
    port = unique_name("livegen-theme")
    presets = tmp_path / "presets.toml"
    # Two themes: the code of two gestures (noise[0..7]), as a performer stores them.
    presets.write_text("[presets.1]\nname = \"A\"\nnoise = { "
                       + ", ".join(f'{i} = -0.9' for i in range(8)) + " }\n"
                       "[presets.2]\nname = \"B\"\nnoise = { "
                       + ", ".join(f'{i} = {0.9 if i < 4 else -0.9}' for i in range(8))
                       + " }\n")
    config = tmp_path / "c.toml"
    config.write_text(f"""
[engine]
generator = "dcrnn"
presets = "{presets}"

[clock]
bpm = {BPM}
send = true

[output]
api = "jack"
port = "{port}"
require_port = true
connect = ["{jack_receiver.name}"]
panic_channels = [1]

[generators.dcrnn]
model = "{ROOT / 'models' / 'dcrnn.json'}"
bars = 1

[inputs.osc]
type = "osc"
port = {osc_port}
""")
    daemon = Daemon(config, "--record", str(tmp_path / "trace.jsonl"))
    daemons.append(daemon)
    daemon.wait_for_log("ready in")
    client = SimpleUDPClient("127.0.0.1", osc_port)
    client.send_message("/livegen/preset/recall", 1)
    time.sleep(4 * BAR_S)
    client.send_message("/livegen/preset/morph", [2, 4])
    time.sleep(8 * BAR_S)
    assert daemon.stop() == 0, daemon.text()
    jack_receiver.settle()  # the last note-offs may still be on their way to the receiver
    # The trace holds the recall, then four morph steps, a bar apart, ending at theme B.
    steps = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()
             if '"preset"' in line and '"values"' in line]
    assert len(steps) == 5, steps
    levels = [step["values"]["noise[0]"] for step in steps]
    np.testing.assert_allclose(levels, [-0.9, -0.45, 0.0, 0.45, 0.9], atol=1e-6)
    gaps = np.diff([step["t"] for step in steps[1:]])
    np.testing.assert_allclose(gaps, BAR_S, atol=0.01)
    assert sounding_notes(jack_receiver.messages) == set()
