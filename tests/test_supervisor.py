"""The input supervisor with real inputs: a camera whose file is missing fails and is
restarted with exponential backoff while an OSC input on loopback keeps delivering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from livegen.config import CameraInputConfig, OscInputConfig
from livegen.inputs.base import Backoff, Reading, supervise
from livegen.inputs.camera import CameraInput
from livegen.inputs.osc import OscInput


def logged_delays(caplog: pytest.LogCaptureFixture, name: str) -> list[float]:
    pattern = re.compile(rf"input {name} failed .*; restarting in ([0-9.]+) s")
    return [float(m.group(1)) for r in caplog.records
            if (m := pattern.search(r.getMessage()))]


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first=0.5, factor=2.0, cap=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_failing_input_backs_off_while_another_keeps_delivering(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="livegen.inputs.base")
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=tmp_path / "gone.avi"))
    osc = OscInput("phone", OscInputConfig(type="osc", port=0))
    readings: list[Reading] = []

    async def main() -> None:
        backoff = Backoff(first=0.05, factor=2.0, cap=10.0)
        tasks = [asyncio.create_task(supervise(source, readings.append, backoff))
                 for source in (camera, osc)]
        await asyncio.wait_for(osc.bound.wait(), 5)
        assert osc.address is not None
        client = SimpleUDPClient(*osc.address)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 1.2:
            client.send_message("/livegen/in/level", sent / 100)
            sent += 1
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    # 0.05 + 0.1 + 0.2 + 0.4 s of waiting fit in 1.2 s, the next 0.8 s does not: without
    # backoff there would be hundreds of attempts.
    assert 3 <= camera.stats.restarts <= 6
    delays = logged_delays(caplog, "cam")
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
    assert "no such file" in camera.stats.last_error
    # The OSC input never noticed: every message arrived, in order, through it all.
    levels = [r.values["level"] for r in readings if r.source == "phone"]
    assert len(levels) >= 40
    assert levels == sorted(levels)
    assert osc.stats.restarts == 0


def test_a_run_that_was_healthy_resets_the_backoff(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="livegen.inputs.base")
    clip = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for _ in range(9):  # 0.3 s at its own frame rate
        writer.write(np.full((120, 160, 3), 80, np.uint8))
    writer.release()
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=clip, realtime=True))

    async def main() -> None:
        backoff = Backoff(first=0.05, factor=2.0, cap=10.0, healthy_s=0.2)
        task = asyncio.create_task(supervise(camera, lambda r: None, backoff))
        deadline = time.monotonic() + 10
        while camera.stats.restarts < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # Each run played 0.3 s, longer than healthy_s: every restart starts from `first`.
    assert logged_delays(caplog, "cam")[:4] == [0.05] * 4


def test_cancelling_the_supervisor_stops_the_reader_thread(tmp_path: Path) -> None:
    clip = tmp_path / "loop.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for _ in range(5):
        writer.write(np.full((120, 160, 3), 80, np.uint8))
    writer.release()
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=clip, loop=True))
    readings: list[Reading] = []

    async def main() -> None:
        task = asyncio.create_task(supervise(camera, readings.append))
        while len(readings) < 10:
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    assert not [t for t in threading.enumerate() if t.name == "input-cam" and t.is_alive()]
    assert camera.stats.restarts == 0  # a looping file never ends


def test_camera_and_osc_readings_record_and_replay(tmp_path: Path) -> None:
    """Their readings are plain Readings: a trace written while they run plays back the
    same values through the replay input."""
    from livegen.config import ReplayInputConfig
    from livegen.inputs.replay import ReplayInput, TraceWriter

    clip = tmp_path / "loop.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    for i in range(10):
        frame = np.full((240, 320, 3), (40, 90, 30), np.uint8)
        cv2.circle(frame, (60 + 20 * i, 120), 30, (120, 150, 210), -1)
        writer.write(frame)
    writer.release()
    camera = CameraInput("cam", CameraInputConfig(type="camera", path=clip, realtime=False,
                                                  loop=True, detector="skin"))
    osc = OscInput("phone", OscInputConfig(type="osc", port=0))
    trace = tmp_path / "trace.jsonl"
    recorded: list[Reading] = []

    async def record() -> None:
        origin = time.monotonic()
        writer = TraceWriter(trace, origin, ["cam", "phone"])

        def deliver(reading: Reading) -> None:
            recorded.append(reading)
            writer.write(reading)

        tasks = [asyncio.create_task(supervise(s, deliver)) for s in (camera, osc)]
        await asyncio.wait_for(osc.bound.wait(), 5)
        assert osc.address is not None
        SimpleUDPClient(*osc.address).send_message("/livegen/in/pad", [0.25, 0.75])
        while len(recorded) < 20 or not any(r.source == "phone" for r in recorded):
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()

    asyncio.run(record())

    async def replay(name: str, count: int) -> list[Reading]:
        source = ReplayInput(name, ReplayInputConfig(type="replay", path=trace, speed=50.0))
        played = []
        async for reading in source.readings():
            played.append(reading)
            if len(played) == count:
                break
        return played

    for name in ("cam", "phone"):
        original = [r for r in recorded if r.source == name]
        played = asyncio.run(replay(name, len(original)))
        assert played and [dict(r.values) for r in played] == [dict(r.values) for r in original]
