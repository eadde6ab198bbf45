"""The camera input on real video: files written with cv2.VideoWriter (MJPG in .avi) of a
hand (palm and fingers) moving along a known path over a textured, noisy background, read
through the same capture code as a live camera. And the JeVois mode on a pty."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest

from livegen.config import CameraInputConfig
from livegen.inputs import create
from livegen.inputs.base import Backoff, Reading, supervise
from livegen.inputs.camera import CameraInput, HandTracker, parse_jevois

WIDTH, HEIGHT, FPS = 640, 480, 30
SKIN_BGR = (120, 150, 210)
LEAD_IN = 15  # frames of empty scene first: MOG2 learns the background, as on a stage


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """Green-grey blotches with dark stripes: structure at many scales, no skin tones."""
    blotches = rng.integers(0, 255, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    image = cv2.resize(blotches, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    image = (image * 0.5 + np.array([90, 110, 40])).clip(0, 255).astype(np.uint8)
    for x in range(0, WIDTH, 40):
        cv2.line(image, (x, 0), (x, HEIGHT), (60, 80, 30), 2)
    return image


def draw_hand(image: np.ndarray, cx: float, cy: float, fingers: int,
              colour: tuple[int, ...] | int, scale: float = 1.0) -> None:
    """A palm (disc) with `fingers` fingers (thick lines) fanned out above it."""
    palm = round(38 * scale)
    cv2.circle(image, (round(cx), round(cy)), palm, colour, -1)
    angles = [0.0] if fingers == 1 else list(np.linspace(-60, 60, 5))[:fingers]
    for degrees in angles:
        a = math.radians(degrees)
        base = (round(cx + math.sin(a) * palm * 0.7), round(cy - math.cos(a) * palm * 0.7))
        tip = (round(cx + math.sin(a) * (palm + 62 * scale)),
               round(cy - math.cos(a) * (palm + 62 * scale)))
        cv2.line(image, base, tip, colour, round(15 * scale))


def hand_path(i: int, frames: int) -> tuple[float, float]:
    """A figure of eight over most of the frame, in pixels."""
    t = i / frames
    return (WIDTH * (0.5 + 0.32 * math.sin(2 * math.pi * t)),
            HEIGHT * (0.55 + 0.25 * math.sin(4 * math.pi * t + 0.5)))


def true_position(cx: float, cy: float, fingers: int) -> tuple[float, float]:
    """Where the hand's enclosing circle is, as the tracker reports it (0..1, y up)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    draw_hand(mask, cx, cy, fingers, 255)
    (x, y), _ = cv2.minEnclosingCircle(cv2.findNonZero(mask))
    return x / WIDTH, 1.0 - y / HEIGHT


def write_video(path: Path, frames: int = 90, fingers: int = 5,
                seed: int = 1) -> list[tuple[float, float] | None]:
    """Write the video; return the true position per frame (None: no hand in it)."""
    rng = np.random.default_rng(seed)
    background = textured_background(rng)
    noise = rng.normal(0.0, 6.0, (HEIGHT + 16, WIDTH + 16, 3)).astype(np.int16)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    truth: list[tuple[float, float] | None] = []
    for i in range(frames):
        image = background.copy()
        if i >= LEAD_IN:
            cx, cy = hand_path(i, frames)
            draw_hand(image, cx, cy, fingers, SKIN_BGR)
            truth.append(true_position(cx, cy, fingers))
        else:
            truth.append(None)
        # Sensor noise that changes every frame (a shifted window of one noise field).
        dy, dx = rng.integers(0, 16, 2)
        frame_noise = noise[dy:dy + HEIGHT, dx:dx + WIDTH]
        writer.write((image + frame_noise).clip(0, 255).astype(np.uint8))
    writer.release()
    return truth


@pytest.fixture(scope="module")
def hand_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("video") / "hand.avi"
    return path, write_video(path)


class Collector(list):
    """An `emit` that keeps the values (and checks each reading's time stamp)."""

    def __call__(self, values: Mapping[str, float], t: float | None = None) -> None:
        assert t is None or t <= time.monotonic()
        self.append(values)


def collect(camera: CameraInput) -> list[Mapping[str, float]]:
    """Run the capture thread's body to the file's end, one emitted value set per frame."""
    emitted = Collector()
    with contextlib.suppress(Exception):
        camera.run(emitted, threading.Event())
    return emitted


@pytest.mark.parametrize("detector", ["mog2", "skin"])
def test_tracker_follows_the_hand_along_its_path(hand_video: tuple[Path, list],
                                                 detector: str) -> None:
    path, truth = hand_video
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=path, realtime=False,
                                                  detector=detector))
    emitted = collect(camera)
    assert len(emitted) == len(truth)

    # Before the hand comes in: nothing (MOG2 needs its first frames to learn the scene).
    assert all(v["hand.present"] == 0.0 for v in emitted[1:LEAD_IN])
    errors = []
    for values, expected in zip(emitted[LEAD_IN:], truth[LEAD_IN:], strict=True):
        assert values["hand.present"] == 1.0
        errors.append(math.hypot(values["hand.x"] - expected[0], values["hand.y"] - expected[1]))
    assert float(np.mean(errors)) <= 0.05
    fingers = [v["hand.fingers"] for v in emitted[LEAD_IN + 10:]]
    assert np.median(fingers) == 5
    sizes = [v["hand.size"] for v in emitted[LEAD_IN + 10:]]
    assert 0.3 < np.median(sizes) < 0.6  # a hand about 200 px across in a 480 px frame
    assert camera.stats.figures["frames"] == len(truth)
    assert camera.stats.figures["process_ms_p50"] > 0


@pytest.mark.parametrize("fingers", [0, 1, 2, 3, 4, 5])
def test_finger_count_from_convexity_defects(fingers: int) -> None:
    image = np.full((HEIGHT, WIDTH, 3), (40, 90, 30), np.uint8)
    draw_hand(image, WIDTH / 2, HEIGHT * 0.6, fingers, SKIN_BGR)
    tracker = HandTracker(CameraInputConfig(type="camera", detector="skin"))
    hand = tracker.track(image)
    assert hand is not None
    assert hand.fingers == fingers


def test_mirror_flips_left_and_right() -> None:
    image = np.full((HEIGHT, WIDTH, 3), (40, 90, 30), np.uint8)
    draw_hand(image, WIDTH * 0.25, HEIGHT * 0.5, 5, SKIN_BGR)
    plain = HandTracker(CameraInputConfig(type="camera", detector="skin")).track(image)
    mirrored = HandTracker(CameraInputConfig(type="camera", detector="skin",
                                             mirror=True)).track(image)
    assert plain is not None and mirrored is not None
    assert plain.x == pytest.approx(1.0 - mirrored.x)
    assert plain.x < 0.4


def test_a_file_that_ends_mid_stream_is_an_unplug_and_is_reopened(
        hand_video: tuple[Path, list], tmp_path: Path) -> None:
    path, truth = hand_video
    cut = tmp_path / "cut.avi"
    data = path.read_bytes()
    cut.write_bytes(data[:len(data) // 2])  # the recording stops half-way, index and all
    camera = create("cam", CameraInputConfig(type="camera", path=cut, realtime=False,
                                             detector="skin"))
    readings: list[Reading] = []

    async def main() -> None:
        task = asyncio.create_task(supervise(camera, readings.append,
                                             Backoff(first=0.1, cap=0.5)))
        deadline = time.monotonic() + 15
        while camera.stats.restarts < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert camera.stats.restarts >= 2
    assert "stopped delivering frames" in camera.stats.last_error
    # Each run played the part that was there: fewer frames than the whole file.
    per_run = camera.stats.figures["frames"]
    assert 0 < per_run < len(truth)
    assert len(readings) >= 2 * per_run


def test_realtime_file_plays_at_its_own_frame_rate(hand_video: tuple[Path, list]) -> None:
    path, _ = hand_video
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=path, realtime=True,
                                                  loop=True, detector="skin"))
    emitted = Collector()
    stopping = threading.Event()
    thread = threading.Thread(target=camera.run, args=(emitted, stopping))
    thread.start()
    time.sleep(1.0)
    stopping.set()
    thread.join(2)
    # 30 fps for one second; loose bounds, the machine is shared.
    assert 15 <= len(emitted) <= 35


def test_a_missing_camera_raises_for_the_supervisor(tmp_path: Path) -> None:
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=tmp_path / "no.avi"))
    with pytest.raises(OSError, match="no such file"):
        camera.run(Collector(), threading.Event())


# The camera input run in a process of its own, as in the daemon: each source it is given
# (a video file, or a camera index) is run under the supervisor until it has failed twice.
# Its log lines carry a mark, so that anything else on stderr shows.
SUPERVISED = """
import asyncio, contextlib, logging, sys, time
from pathlib import Path
from livegen.config import CameraInputConfig
from livegen.inputs.base import Backoff, supervise
from livegen.inputs.camera import CameraInput

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="livegen-log %(levelname)s %(name)s: %(message)s")

async def main():
    for i, source in enumerate(sys.argv[1:]):
        config = (CameraInputConfig(type="camera", device=int(source)) if source.isdigit()
                  else CameraInputConfig(type="camera", path=Path(source), realtime=False,
                                         detector="skin"))
        camera = CameraInput(f"cam{i}", config)
        task = asyncio.create_task(supervise(camera, lambda reading: None,
                                             Backoff(first=0.05, cap=0.1)))
        deadline = time.monotonic() + 20
        while camera.stats.restarts < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

asyncio.run(main())
"""


def test_broken_video_and_a_missing_camera_log_only_livegens_own_lines(
        hand_video: tuple[Path, list], tmp_path: Path) -> None:
    path, _ = hand_video
    data = path.read_bytes()
    broken = {
        "cut.avi": data[:len(data) // 2],  # ends mid-stream, without its index
        "header.avi": data[:300],  # a header and nothing else
        "noise.avi": np.random.default_rng(3).integers(0, 256, 5000, np.uint8).tobytes(),
        # Frames and headers zeroed in the middle: FFmpeg complains while it reads on.
        "zeroed.avi": data[:4000] + bytes(16000) + data[20000:],
    }
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
    # Camera 63: there is no /dev/video63; /dev/null: a device node that is no camera.
    sources = [*(str(tmp_path / name) for name in broken), "63", "/dev/null"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    done = subprocess.run([sys.executable, "-c", SUPERVISED, *sources], env=env,
                          capture_output=True, text=True, errors="replace", timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    foreign = [line for line in lines if not line.startswith("livegen-log ")]
    assert not foreign, "\n".join(foreign)
    assert "[ WARN" not in done.stderr
    # Each source did fail, and said so in livegen's own words.
    for i in range(len(sources)):
        assert any(line.startswith("livegen-log WARNING") and f"input cam{i}" in line
                   for line in lines), done.stderr


# ---------------------------------------------------------------- JeVois over serial

def test_parse_jevois_lines() -> None:
    hand = parse_jevois("160|60", 320, 240)
    assert hand is not None
    assert (hand.x, hand.y) == (0.5, 0.75)
    assert hand.values() == {"hand.x": 0.5, "hand.y": 0.75, "hand.present": 1.0}
    sized = parse_jevois("80|120|60", 320, 240)
    assert sized is not None and sized.size == pytest.approx(0.5)
    for bad in ("", "12", "a|b", "1|2|3|4", "400|10", "nan|3", "-5|10"):
        assert parse_jevois(bad, 320, 240) is None


def test_jevois_mode_takes_the_newest_position_each_poll(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    camera = CameraInput("cam", CameraInputConfig(type="camera", mode="jevois",
                                                  port=os.ttyname(slave), poll_s=0.1))
    emitted = Collector()
    stopping = threading.Event()
    thread = threading.Thread(target=camera.run, args=(emitted, stopping))
    thread.start()
    try:
        time.sleep(0.3)  # the port is open
        for x in range(0, 320, 16):
            os.write(master, f"{x}|60\r\n".encode())
            time.sleep(0.01)
        os.write(master, b"\xff\xfe|garbage\r\n")
        time.sleep(0.35)
    finally:
        stopping.set()
        thread.join(2)
        os.close(master)
        os.close(slave)
    present = [v for v in emitted if v["hand.present"] == 1.0]
    assert present, emitted
    xs = [v["hand.x"] for v in present]
    assert xs == sorted(xs)  # the newest position each time, never an older one
    assert present[-1]["hand.x"] == pytest.approx(304 / 320)
    assert present[-1]["hand.y"] == pytest.approx(0.75)
    assert emitted[-1] == {"hand.present": 0.0, "hand.fingers": 0.0}  # lines stopped
    assert camera.stats.dropped["garbage"] == 1


def test_bench_camera_measures_tracking_that_works(capsys: pytest.CaptureFixture[str]) -> None:
    from livegen.bench import bench_camera

    assert bench_camera(["--frames", "45", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("mog2 ", "skin "))}
    assert set(rows) == {"mog2", "skin"}
    for cells in rows.values():
        p50, p99, found = float(cells[2]), float(cells[3]), cells[6]
        assert 0 < p50 <= p99
        assert found == "30/30"  # the hand was found in every frame it was in
    assert "target: p99 <= 10 ms per 640x480 frame" in out
