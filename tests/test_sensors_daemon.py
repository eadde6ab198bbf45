"""The daemon with its sensors: the gesture example steers the Char-RNN from a camera
(a video file read like a live camera), and a daemon with camera, EMG (a pty) and OSC
(UDP on loopback) inputs keeps playing through their failures."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import cv2
import numpy as np
from test_camera import FPS, HEIGHT, SKIN_BGR, WIDTH, draw_hand, textured_background

from livegen.music.events import read_midi

ROOT = Path(__file__).resolve().parents[1]


def write_step_video(path: Path, segments: list[tuple[float, float | None]]) -> None:
    """A video of (seconds, hand height 0..1 y up, or None for no hand) segments."""
    rng = np.random.default_rng(5)
    background = textured_background(rng)
    noise = rng.normal(0.0, 5.0, (HEIGHT + 16, WIDTH + 16, 3)).astype(np.int16)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    for seconds, height in segments:
        for _ in range(round(seconds * FPS)):
            image = background.copy()
            if height is not None:
                draw_hand(image, WIDTH * 0.6, HEIGHT * (1.0 - height), 5, SKIN_BGR)
            dy, dx = rng.integers(0, 16, 2)
            writer.write((image + noise[dy:dy + HEIGHT, dx:dx + WIDTH]).clip(0, 255)
                         .astype(np.uint8))
    writer.release()


def run_livegen(config: Path, seconds: float, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livegen.cli", "run", "--config",
                           str(config), "--duration", str(seconds), *extra],
                          capture_output=True, text=True, timeout=seconds + 60, cwd=ROOT)


def test_the_gesture_example_steers_the_charrnn_from_a_camera(tmp_path: Path) -> None:
    video = tmp_path / "hand.avi"
    write_step_video(video, [(1.0, None), (3.5, 0.25), (5.0, 0.8)])
    example = (ROOT / "examples" / "gesture.toml").read_text()
    config = tmp_path / "gesture.toml"
    record = tmp_path / "gesture.mid"
    config.write_text(
        example.replace('profile = "../devices/webcam.toml"',
                        f'profile = "{ROOT / "devices" / "webcam.toml"}"\n'
                        f'path = "{video}"\nrealtime = true')
               .replace('"../models/charrnn.json"', f'"{ROOT / "models" / "charrnn.json"}"')
        + f'\n[output]\nport = ""\nrecord = "{record}"\n')
    done = run_livegen(config, 9.5)
    assert done.returncode == 0, done.stderr
    notes = read_midi(record)
    # The recording starts with the output, 0.15 s before the music; the hand is low from
    # 1 s to 4.5 s and high from 4.5 s to 9.5 s of the video. The Char-RNN moves to a new
    # register within a second or two (its controls describe the next 3 s of music).
    low = [n.pitch for n in notes if 2.0 <= n.start < 4.5]
    high = [n.pitch for n in notes if 6.5 <= n.start < 9.5]
    assert len(low) >= 3 and len(high) >= 3, (low, high)
    assert np.mean(high) >= np.mean(low) + 8, (low, high)


class CsvArm:
    """An Arduino printing four EMG envelopes per line, on a pseudo-terminal; it hangs up
    after `hang_up_after` seconds."""

    def __init__(self, hang_up_after: float) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self.slave = slave
        self.hang_up_after = hang_up_after
        self.thread = threading.Thread(target=self.write, daemon=True)
        self.thread.start()

    def write(self) -> None:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < self.hang_up_after:
            level = 500 if (i // 100) % 2 else 20  # half-second bursts
            line = f"{level},{level},{level},{level}\n" if i % 37 else "garbage,,x\n"
            try:
                os.write(self.master, line.encode())
            except OSError:
                return
            i += 1
            time.sleep(0.005)
        os.close(self.master)
        os.close(self.slave)


def test_camera_emg_and_osc_together_and_the_show_goes_on_through_their_failures(
        tmp_path: Path) -> None:
    video = tmp_path / "short.avi"
    write_step_video(video, [(0.5, None), (1.5, 0.7)])  # ends after 2 s: an unplug
    arm = CsvArm(hang_up_after=2.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        osc_port = probe.getsockname()[1]
    record, stats = tmp_path / "all.mid", tmp_path / "stats.json"
    config = tmp_path / "all.toml"
    config.write_text(f"""
[engine]
seed = 3

[output]
port = ""
record = "{record}"

[generators.charrnn]
model = "{ROOT / 'models' / 'charrnn.json'}"

[inputs.cam]
type = "camera"
path = "{video}"
realtime = true

[inputs.arm]
type = "emg"
protocol = "csv"
port = "{arm.port}"
channels = 4
signal = "envelope"
full_scale = 500.0

[inputs.osc]
type = "osc"
port = {osc_port}

[[map]]
source = "osc.pitch"
target = "pitch"

[[map]]
source = "arm.total"
target = "velocity"
out_range = [0.3, 1.0]

[[map]]
source = "cam.hand.y"
target = "density"
""")
    daemon = subprocess.Popen([sys.executable, "-m", "livegen.cli", "run", "--config",
                               str(config), "--duration", "7", "--stats-json", str(stats)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=ROOT)
    from pythonosc.udp_client import SimpleUDPClient

    client = SimpleUDPClient("127.0.0.1", osc_port)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(60):
            client.send_message("/livegen/in/pitch", 0.2 if i < 30 else 0.9)
            if i % 5 == 0:  # malformed: not OSC at all, a wrong type, a truncated packet
                raw.sendto(b"\x00garbage", ("127.0.0.1", osc_port))
                client.send_message("/livegen/in/pitch", "high")
                raw.sendto(b"/livegen/in/pitch\x00\x00\x00,f\x00\x00\x3f", ("127.0.0.1",
                                                                           osc_port))
            time.sleep(0.1)
        log, _ = daemon.communicate(timeout=60)
    finally:
        raw.close()
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, log
    figures = json.loads(stats.read_text())["inputs"]
    assert figures["cam"]["readings"] > 10 and figures["cam"]["restarts"] >= 1, figures
    assert figures["arm"]["readings"] > 10 and figures["arm"]["restarts"] >= 1, figures
    assert figures["osc"]["readings"] >= 50, figures
    assert sum(figures["osc"]["dropped"].values()) >= 10, figures
    notes = read_midi(record)
    # Played on to the end (a note still starting or sounding in the last 1.5 s; the
    # model may rest a while, so not "a note-on in the last second").
    assert any(n.end > 5.5 for n in notes), "the music stopped when the inputs failed"
    assert "Traceback" not in log
