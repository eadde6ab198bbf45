"""The camera input: where the hand is, how large, how many fingers.

The pipeline follows the JeVois module of Deep Symphony's gesture control: a foreground
mask (MOG2 background subtraction, or a skin-colour range in YCrCb), a morphological
clean-up, the largest contour, its minimum enclosing circle; then a finger count from the
convexity defects of that contour. Frames are scaled down to `process_width` first, which
keeps a 640x480 frame well inside its time budget (`livegen bench camera`).

Two modes:
- capture: OpenCV reads a camera (by index) or a video file. A file plays at its own
  frame rate when `realtime` is set, so it behaves like a live camera; at its end it
  loops, or ends like an unplugged camera and the supervisor reopens it.
- jevois: a JeVois smart camera does the tracking itself and writes "x|y" lines (in a
  320x240 frame, optionally "x|y|r") over USB serial; the newest position is taken every
  `poll_s` seconds, as the seed's host did.

Values: hand.x, hand.y (0..1, y up), hand.size (the enclosing circle's diameter as a
fraction of the frame height), hand.present (1 or 0), hand.fingers (0..5). A frame without
a hand yields only hand.present = 0 and hand.fingers = 0, so mappings from x and y hold.
A JeVois gives x, y and present (and size when it sends a radius), no finger count.

CameraInputConfig (its keys, and what `livegen devices` says of it) needs no OpenCV:
OpenCV is imported when a camera first opens (`opencv()`), so check-config never loads it.
Its own logging and that of the FFmpeg inside it are silenced then: their lines
("[ WARN:0@0.2] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video3): can't open camera
by index", "[mjpeg @ 0x55d6] overread 8") would land in the performer's log beside
livegen's one-line messages and say nothing those do not. Set OPENCV_LOG_LEVEL or
OPENCV_FFMPEG_LOGLEVEL in the environment to see them again.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from livegen.config import InputConfig, setting
from livegen.inputs.base import (
    Check,
    Emit,
    InputEnded,
    InputStats,
    LineReader,
    ThreadedInput,
    check_serial_device,
)

log = logging.getLogger(__name__)

# The keys a hand tracker yields (the camera, and the simulated performer's hand).
HAND_KEYS = ("hand.x", "hand.y", "hand.present", "hand.size", "hand.fingers")


@dataclass(frozen=True, slots=True)
class CameraInputConfig(InputConfig):
    """A camera that tracks the hand: OpenCV capture (a camera or a video file), or a JeVois
    smart camera that sends "x|y" lines over USB serial."""
    mode: Literal["capture", "jevois"] = setting(
        "capture", doc="capture: frames through OpenCV; jevois: positions over serial")
    device: int = setting(0, lo=0, hi=63, doc="camera index (/dev/videoN) when no path is set")
    path: Path | None = setting(None, doc="a video file to read instead of a camera, or "
                                          "a camera's device node (/dev/livegen-camera)")
    realtime: bool = setting(True, doc="video files: play at their own frame rate, like a "
                                       "camera (false: as fast as tracking goes)")
    loop: bool = setting(False, doc="video files: start again at the end (false: the end "
                                    "counts as an unplug and the file is reopened)")
    width: int = setting(640, lo=16, hi=7680, doc="frame width asked of a camera")
    height: int = setting(480, lo=16, hi=4320, doc="frame height asked of a camera")
    fps: float = setting(30.0, lo=1.0, hi=240.0, doc="frame rate asked of a camera")
    detector: Literal["mog2", "skin"] = setting(
        "mog2", doc="mog2: what moves against the learned background; skin: skin colour")
    process_width: int = setting(320, lo=64, hi=1920,
                                 doc="frames are scaled down to this width before tracking")
    min_area: float = setting(0.005, lo=0.0, hi=0.5,
                              doc="smallest blob (fraction of the frame) that counts as a hand")
    mirror: bool = setting(False, doc="flip left and right (a camera facing the performer)")
    history: int = setting(300, lo=10, hi=10000,
                           doc="mog2: frames of background memory; a hand held still this "
                               "long fades into the background")
    threshold: float = setting(25.0, lo=1.0, hi=1000.0,
                               doc="mog2: squared distance from the background that is "
                                   "foreground (higher = less noise, less hand)")
    skin_cr: tuple[float, float] = setting((133.0, 173.0), lo=0.0, hi=255.0,
                                           doc="skin: Cr range in YCrCb")
    skin_cb: tuple[float, float] = setting((77.0, 127.0), lo=0.0, hi=255.0,
                                           doc="skin: Cb range in YCrCb")
    port: str = setting("/dev/livegen-jevois", doc="jevois: its serial device")
    baud: int = setting(115200, lo=1200, hi=4_000_000, doc="jevois: serial baud rate")
    poll_s: float = setting(0.1, lo=0.005, hi=5.0,
                            doc="jevois: how often the newest position is taken")
    frame_size: tuple[int, int] = setting((320, 240), lo=1, hi=8192,
                                          doc="jevois: the frame its x|y are measured in")

    def offered_keys(self) -> tuple[str, ...]:
        return HAND_KEYS

    def describe(self) -> str:
        if self.mode == "jevois":
            return f"camera, JeVois on {self.port}"
        where = self.path if self.path is not None else f"device {self.device}"
        return f"camera, {where}, {self.detector}"

    def reachable(self) -> Check:
        if self.mode == "jevois":
            return check_serial_device(self.port)
        if self.path is not None and is_camera_node(self.path):
            if not os.access(self.path, os.R_OK | os.W_OK):
                return Check(False, f"{self.path}: no permission; add your user to group "
                                    "'video'")
            return Check(True, f"{self.path} -> {os.path.realpath(self.path)}")
        if self.path is not None:
            return check_video_file(self.path)
        device = Path(f"/dev/video{self.device}")
        if not sys.platform.startswith("linux"):
            return Check(True, f"camera {self.device} (not checked: listing cameras needs "
                               "Linux)")
        if not Path("/sys/class/video4linux").is_dir() or not device.exists():
            return Check(False, f"{device}: no such camera (see 'cameras' above)")
        if not os.access(device, os.R_OK | os.W_OK):
            return Check(False, f"{device}: no permission; add your user to group 'video'")
        return Check(True, str(device))

    def check(self, path: str, problems: list[str]) -> None:
        for key in ("skin_cr", "skin_cb"):
            lo, hi = getattr(self, key)
            if lo >= hi:
                problems.append(f"{path}.{key}: the low end must be below the high end, "
                                f"got [{lo}, {hi}]")
        if self.mode == "jevois" and not self.port:
            problems.append(f"{path}.port: needed when {path}.mode = 'jevois'; name its "
                            "serial device, e.g. '/dev/livegen-jevois' (see `livegen devices`)")


@functools.cache
def opencv() -> Any:
    """OpenCV, imported on first use, with its native logging and FFmpeg's silenced unless
    the environment asks for them."""
    import cv2

    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    # OpenCV reads this when it first starts its FFmpeg backend (the first capture), so
    # setting it after the import still counts. -8 is FFmpeg's AV_LOG_QUIET.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    return cv2


def check_video_file(path: Path) -> Check:
    """Whether OpenCV reads a frame from the video file `path` (for `livegen devices`)."""
    if not path.is_file():
        return Check(False, f"{path}: no such file")
    cv2 = opencv()
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read()
        if not ok:
            return Check(False, f"{path}: OpenCV cannot read a frame from it")
        fps = capture.get(cv2.CAP_PROP_FPS)
        return Check(True, f"{path}: {frame.shape[1]}x{frame.shape[0]} at {fps:g} fps")
    finally:
        capture.release()


MAX_FINGERS = 5


@dataclass(frozen=True, slots=True)
class Hand:
    """One tracked hand, in the frame's own proportions (x right, y up, both 0..1)."""

    x: float
    y: float
    size: float | None  # None where the source does not say (a JeVois sending only x|y)
    fingers: int | None

    def values(self) -> dict[str, float]:
        values = {"hand.x": self.x, "hand.y": self.y, "hand.present": 1.0}
        if self.size is not None:
            values["hand.size"] = self.size
        if self.fingers is not None:
            values["hand.fingers"] = float(self.fingers)
        return values


NO_HAND = {"hand.present": 0.0, "hand.fingers": 0.0}


class HandTracker:
    """Finds the largest foreground blob in BGR frames, one call per frame.

    The MOG2 detector learns the background from the frames it sees, so one tracker serves
    one stream; a hand held perfectly still for `history` frames fades into the background.
    """

    def __init__(self, config: CameraInputConfig) -> None:
        self.config = config
        self.detector = config.detector
        self.process_width = config.process_width
        cv2 = self.cv2 = opencv()
        self.subtractor = cv2.createBackgroundSubtractorMOG2(
            history=config.history, varThreshold=config.threshold, detectShadows=False)
        self.skin_lo = np.array([0, config.skin_cr[0], config.skin_cb[0]], np.uint8)
        self.skin_hi = np.array([255, config.skin_cr[1], config.skin_cb[1]], np.uint8)
        # Opening removes speckle noise; the larger closing joins fingers to the palm where
        # the mask thins out at the knuckles.
        self.open_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self.close_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """The cleaned foreground mask (255 = hand) of a frame at processing size."""
        cv2 = self.cv2
        if self.detector == "skin":
            # A light blur first: MJPG and sensor noise scatter chroma at pixel scale.
            ycrcb = cv2.cvtColor(cv2.blur(frame, (3, 3)), cv2.COLOR_BGR2YCrCb)
            raw = cv2.inRange(ycrcb, self.skin_lo, self.skin_hi)
        else:
            raw = self.subtractor.apply(frame)
        cleaned = cv2.morphologyEx(raw, cv2.MORPH_OPEN, self.open_kernel)
        return cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, self.close_kernel)

    def track(self, frame: np.ndarray) -> Hand | None:
        """The hand in this frame, or None when no blob is large enough."""
        cv2 = self.cv2
        height, width = frame.shape[:2]
        if width != self.process_width:
            scaled_height = max(1, round(height * self.process_width / width))
            frame = cv2.resize(frame, (self.process_width, scaled_height),
                               interpolation=cv2.INTER_AREA)
            height, width = frame.shape[:2]
        contours, _ = cv2.findContours(self.mask(frame), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        contour = max(contours, key=cv2.contourArea)
        area = cv2.contourArea(contour)
        if area < self.config.min_area * width * height or len(contour) < 3:
            return None
        (cx, cy), radius = cv2.minEnclosingCircle(contour)
        x = cx / width
        if self.config.mirror:
            x = 1.0 - x
        return Hand(x=float(np.clip(x, 0.0, 1.0)),
                    y=float(np.clip(1.0 - cy / height, 0.0, 1.0)),
                    size=float(min(1.0, 2.0 * radius / height)),
                    fingers=count_fingers(contour, area, radius))


def count_fingers(contour: np.ndarray, area: float, radius: float) -> int:
    """Fingers held out, 0..5, from the convexity defects of the hand's contour.

    Each deep, narrow valley between two hull points is a gap between two fingers, so
    n valleys mean n + 1 fingers. With no valley the hand is a fist (0) or shows one
    finger (1): a finger makes the contour reach far beyond a disc of the same area.
    """
    cv2 = opencv()
    # Simplify first: the pixel staircase of a contour makes tiny defects everywhere.
    epsilon = max(1.0, 0.01 * cv2.arcLength(contour, True))
    shape = cv2.approxPolyDP(contour, epsilon, True)
    if len(shape) < 4:
        return 0
    valleys = 0
    try:
        hull = cv2.convexHull(shape, returnPoints=False)
        defects = cv2.convexityDefects(shape, hull) if len(hull) > 3 else None
    except cv2.error:
        # Self-intersecting simplified contours make OpenCV reject the hull; rare, and
        # one frame without a finger count does no harm.
        defects = None
    if defects is not None:
        points = shape[:, 0, :].astype(np.float64)
        # OpenCV 4 gives defects as (n, 1, 4), OpenCV 5 as (n, 4).
        for start, end, far, depth_fixed in defects.reshape(-1, 4):
            depth = depth_fixed / 256.0
            if depth < 0.2 * radius:
                continue
            a = points[start] - points[far]
            b = points[end] - points[far]
            cosine = float(a @ b) / (float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0)
            if cosine > 0.0:  # narrower than 90 degrees: a gap between fingers
                valleys += 1
    if valleys:
        return min(MAX_FINGERS, valleys + 1)
    moments = cv2.moments(contour)
    if moments["m00"] <= 0:
        return 0
    centre = np.array([moments["m10"], moments["m01"]]) / moments["m00"]
    reach = float(np.max(np.linalg.norm(contour[:, 0, :] - centre, axis=1)))
    return 1 if reach > 1.6 * math.sqrt(area / math.pi) else 0


class FrameTimes:
    """Processing times and frame intervals of the last few hundred frames -> figures."""

    def __init__(self, stats: InputStats, keep: int = 300, every: int = 30) -> None:
        self.stats = stats
        self.process_ms: deque[float] = deque(maxlen=keep)
        self.arrivals: deque[float] = deque(maxlen=keep)
        self.every = every
        self.frames = 0

    def add(self, arrived: float, process_s: float) -> None:
        self.process_ms.append(process_s * 1000.0)
        self.arrivals.append(arrived)
        self.frames += 1
        if self.frames % self.every == 0:
            self.publish()

    def publish(self) -> None:
        if not self.process_ms:
            return
        times = np.fromiter(self.process_ms, float)
        figures = self.stats.figures
        figures["frames"] = float(self.frames)
        figures["process_ms_p50"] = float(np.percentile(times, 50))
        figures["process_ms_p99"] = float(np.percentile(times, 99))
        if len(self.arrivals) > 1:
            span = self.arrivals[-1] - self.arrivals[0]
            figures["fps"] = (len(self.arrivals) - 1) / span if span > 0 else 0.0


def is_camera_node(path: Path) -> bool:
    """Whether `path` names a camera device (/dev/video2, a udev link such as
    /dev/livegen-camera) rather than a video file."""
    return path.is_char_device()


def open_capture(config: CameraInputConfig) -> tuple[Any, str]:
    """An opened capture for the configured file or camera, and a name for messages.

    Raises OSError when it cannot be opened (no such camera, unreadable file): the
    supervisor retries with backoff, so a camera plugged in later is found.
    """
    cv2 = opencv()
    live = config.path is None or is_camera_node(config.path)
    if config.path is None:
        what = f"camera {config.device}"
        capture = cv2.VideoCapture(config.device)
    elif live:
        what = f"camera {config.path}"
        capture = cv2.VideoCapture(str(config.path), cv2.CAP_V4L2)
    else:
        what = f"video file {config.path}"
        if not config.path.is_file():
            raise OSError(f"{what}: no such file")
        # FFmpeg alone: when it cannot open a file, OpenCV would go on to try its own AVI
        # reader, which prints what it finds wrong straight to stderr, past any log level.
        ffmpeg = cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG)
        capture = cv2.VideoCapture(str(config.path), cv2.CAP_FFMPEG if ffmpeg else cv2.CAP_ANY)
    if live and capture.isOpened():
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        capture.set(cv2.CAP_PROP_FPS, config.fps)
        # One frame of buffer: a late frame is worth less than a fresh one.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if not capture.isOpened():
        capture.release()
        raise OSError(f"{what}: cannot open it (see `livegen devices`)")
    return capture, what


class CameraInput(ThreadedInput):
    """Hand tracking from a camera, a video file or a JeVois camera, in its own thread."""

    def __init__(self, name: str, config: CameraInputConfig) -> None:
        super().__init__(name)
        self.config = config

    def run(self, emit: Emit, stopping: threading.Event) -> None:
        if self.config.mode == "jevois":
            self.run_jevois(emit, stopping)
        else:
            self.run_capture(emit, stopping)

    def run_capture(self, emit: Emit, stopping: threading.Event) -> None:
        """Read, track and emit one reading per frame until the source ends or fails."""
        config = self.config
        cv2 = opencv()
        capture, what = open_capture(config)
        is_file = config.path is not None and not is_camera_node(config.path)
        file_fps = capture.get(cv2.CAP_PROP_FPS) if is_file else 0.0
        # A file without a usable rate plays at the rate a camera would be asked for.
        period = 1.0 / (file_fps if 1.0 <= file_fps <= 240.0 else config.fps)
        tracker = HandTracker(config)
        times = FrameTimes(self.stats)
        log.info("camera input %s: %s open (%s detector)", self.name, what, config.detector)
        started = time.monotonic()
        shown = 0
        try:
            while not stopping.is_set():
                ok, frame = capture.read()
                arrived = time.monotonic()
                if not ok:
                    if is_file and config.loop and shown:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        started, shown = arrived, 0
                        continue
                    raise InputEnded(f"{what} stopped delivering frames after {shown}")
                began = time.perf_counter()
                hand = tracker.track(frame)
                times.add(arrived, time.perf_counter() - began)
                # Stamped with the frame's arrival: tracking time is part of the latency.
                emit(hand.values() if hand is not None else NO_HAND, arrived)
                shown += 1
                if is_file and config.realtime:
                    stopping.wait(max(0.0, started + shown * period - time.monotonic()))
        finally:
            times.publish()
            capture.release()

    def run_jevois(self, emit: Emit, stopping: threading.Event) -> None:
        """Take the newest "x|y" line every poll_s; a poll without one means no hand."""
        import serial  # only a JeVois rig needs pyserial here

        config = self.config
        frame_w, frame_h = config.frame_size
        reader = LineReader(self.stats)
        with serial.Serial(config.port, config.baud, timeout=min(0.05, config.poll_s)) as port:
            log.info("camera input %s: JeVois on %s", self.name, config.port)
            next_poll = time.monotonic() + config.poll_s
            newest: Hand | None = None
            while not stopping.is_set():
                for line in reader.feed(port.read(max(1, port.in_waiting))):
                    hand = parse_jevois(line, frame_w, frame_h, config.mirror)
                    if hand is None:
                        self.stats.drop("garbage")
                    else:
                        newest = hand
                now = time.monotonic()
                if now >= next_poll:
                    emit(newest.values() if newest is not None else NO_HAND)
                    newest = None
                    next_poll = max(next_poll + config.poll_s, now)


def parse_jevois(line: str, frame_w: int, frame_h: int, mirror: bool = False) -> Hand | None:
    """'x|y' or 'x|y|r' in a frame_w x frame_h frame -> a Hand; None if it is not one."""
    parts = line.split("|")
    if len(parts) not in (2, 3):
        return None
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return None
    if not all(math.isfinite(n) for n in numbers):
        return None
    x, y = numbers[0], numbers[1]
    if not (0.0 <= x <= frame_w and 0.0 <= y <= frame_h):
        return None
    size = min(1.0, max(0.0, 2.0 * numbers[2] / frame_h)) if len(numbers) == 3 else None
    x_norm = x / frame_w
    return Hand(x=1.0 - x_norm if mirror else x_norm, y=1.0 - y / frame_h,
                size=size, fingers=None)
