"""The EMG input: muscle activity of eight (or so) channels, each normalised to 0..1.

Sources (config `protocol`):
- myo-bled112: a Myo armband through a BLED112 USB dongle, which speaks Bluegiga's BGAPI
  over a serial port. livegen scans for the Myo (or connects to `myo_address`), subscribes
  to its four EMG characteristics and sets the EMG mode: 8 channels of int8 at 200 Hz, two
  samples per notification.
- cyton: OpenBCI Cyton binary packets at 250 Hz: 0xA0, sample number, 8 x 24-bit signed
  big-endian channels, 6 aux bytes, a 0xCx footer; counts are scaled to microvolts.
- csv: text lines of numbers (an Arduino with MyoWare sensors), at `sample_rate`.
- brainflow: any board BrainFlow supports (its synthetic board for demos, an OYMotion
  gForcePro, an OpenBCI board); needs the optional [sensors] extra.

The signal chain, per channel: remove the DC offset (one-pole high-pass), rectify, take
the RMS or mean absolute value over a window, normalise by the performer's calibration
(rest level -> 0, maximum contraction -> 1, clipped). Values: ch0 .. ch{n-1} and total
(the mean of the channels). A reading leaves every 1 / rate_hz seconds of samples.

Bad bytes never stop the input: garbage, cut-off packets, NaN and samples beyond what the
source can produce (`SAMPLE_LIMIT`) are dropped and counted in `stats.dropped` before they
reach the filters; a sample that would still make a filter's state non-finite restarts that
state instead ('filter reset'), so no input can leave the chain poisoned. An unplugged port
(the serial read fails) or a silent one (`stall_s`) ends the run, and the supervisor reopens
the port with backoff.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import json
import logging
import math
import os
import struct
import sys
import threading
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from livegen import toml_writer
from livegen.config import EmgInputConfig
from livegen.errors import LivegenError
from livegen.inputs.base import Emit, InputEnded, InputStats, LineReader, ThreadedInput

log = logging.getLogger(__name__)

# Samples per second each protocol delivers when the config does not say.
PROTOCOL_RATE = {"myo-bled112": 200.0, "cyton": 250.0, "csv": 200.0}
# An envelope that counts as a strong contraction when there is no calibration: Myo int8
# counts, Cyton and BrainFlow microvolts, Arduino ADC counts (0..1023 around mid-scale).
FULL_SCALE = {"myo-bled112": 50.0, "cyton": 200.0, "csv": 300.0, "brainflow": 200.0}
READ_TIMEOUT_S = 0.02  # a serial read returns after this long without data: "idle"
CYTON_UV_PER_COUNT = 4.5 / 24.0 / (2**23 - 1) * 1e6  # Vref 4.5 V, gain 24, 24-bit ADC
# The largest magnitude a sample of each source can have. A number beyond it is not a
# measurement (a corrupted line, a driver's bug) and would only wreck the filters, so it is
# dropped as 'out of range'. Myo: int8 counts. Cyton: its ADC's full scale at gain 24
# (about 187,500 uV), which decoding cannot exceed. CSV: counts of an ADC of up to 24 bits,
# or microvolts of the same size; Arduino boards send 10- to 16-bit counts. BrainFlow:
# microvolts; 10 V is beyond the input range of any biopotential amplifier at any gain.
SAMPLE_LIMIT = {"myo-bled112": 128.0, "cyton": 2**23 * CYTON_UV_PER_COUNT,
                "csv": float(2**24), "brainflow": 1e7}


# ---------------------------------------------------------------- framing

class Framer:
    """Cuts packets out of a byte stream that may hold garbage and cut-off packets.

    A packet is accepted when its header is plausible, its content checks out and the
    bytes after it start another plausible header; the last packet in the buffer is
    accepted without that look-ahead only when the line has gone quiet (`idle`), so a
    command's response is not held back. A cut-off packet followed by a whole one looks
    like one packet whose end lands inside the next; the look-ahead is what rejects it.
    Anything else is skipped a byte at a time until the stream is in step again: skipped
    bytes count as 'garbage', rejected headers as 'partial packet'.
    """

    def __init__(self, stats: InputStats) -> None:
        self.stats = stats
        self.buffer = bytearray()

    def is_start(self, byte: int) -> bool:
        raise NotImplementedError

    def length(self, buffer: bytearray, at: int) -> int | None:
        """The packet length the header at buffer[at] announces; None: need more bytes;
        -1: not a header after all."""
        raise NotImplementedError

    def valid(self, packet: bytes) -> bool:
        return True

    def follows(self, buffer: bytearray, at: int) -> bool | None:
        """Whether a plausible header starts at buffer[at]; None: cannot tell yet."""
        if at >= len(buffer):
            return None
        if not self.is_start(buffer[at]):
            return False
        size = self.length(buffer, at)
        return None if size is None else size >= 0

    def feed(self, data: bytes, idle: bool = False) -> list[bytes]:
        """The whole packets now in the stream, in order."""
        buffer = self.buffer
        buffer += data
        packets: list[bytes] = []
        skipped = 0
        while buffer:
            if not self.is_start(buffer[0]):
                # Skip the whole run at once: deleting byte by byte is quadratic in it.
                run = 1
                while run < len(buffer) and not self.is_start(buffer[run]):
                    run += 1
                del buffer[:run]
                skipped += run
                continue
            size = self.length(buffer, 0)
            if size is None or len(buffer) < size:
                if not idle:
                    break  # wait for the rest
                # The line went quiet in the middle of a packet: it was cut off.
            elif size >= 0 and self.valid(bytes(buffer[:size])):
                follows = self.follows(buffer, size)
                if follows is None and not idle:
                    break  # wait for the look-ahead
                if follows is not False:
                    packets.append(bytes(buffer[:size]))
                    del buffer[:size]
                    continue
            self.stats.drop("partial packet")
            del buffer[0]
        if skipped:
            self.stats.drop("garbage", skipped)
        return packets


CYTON_PACKET = 33
CYTON_START = 0xA0


class CytonFramer(Framer):
    def is_start(self, byte: int) -> bool:
        return byte == CYTON_START

    def length(self, buffer: bytearray, at: int) -> int | None:
        return CYTON_PACKET

    def valid(self, packet: bytes) -> bool:
        return packet[-1] & 0xF0 == 0xC0


def decode_cyton(packets: list[bytes]) -> np.ndarray:
    """Cyton packets -> (n, 8) microvolts."""
    raw = np.frombuffer(b"".join(packets), np.uint8).reshape(-1, CYTON_PACKET)
    triplets = raw[:, 2:26].reshape(-1, 8, 3).astype(np.int32)
    counts = (triplets[..., 0] << 16) | (triplets[..., 1] << 8) | triplets[..., 2]
    counts = np.where(counts & 0x800000, counts - (1 << 24), counts)
    return counts * CYTON_UV_PER_COUNT


class BgapiPacket(NamedTuple):
    event: bool  # True: an event from the dongle; False: the response to a command
    cls: int
    cmd: int
    payload: bytes


# BGAPI packets the Myo session uses: (event, class, command) -> payload length, or the
# length of the fixed part before a trailing uint8array (length byte + data).
BGAPI_FIXED = {
    (False, 3, 0): 3,   # connection_disconnect: connection, result
    (False, 4, 5): 3,   # attclient_attribute_write: connection, result
    (False, 6, 2): 2,   # gap_discover: result
    (False, 6, 3): 3,   # gap_connect_direct: result, connection
    (False, 6, 4): 2,   # gap_end_procedure: result
    (True, 0, 0): 12,   # system_boot
    (True, 3, 0): 16,   # connection_status
    (True, 3, 1): 6,    # connection_version_ind
    (True, 3, 4): 3,    # connection_disconnected: connection, reason
    (True, 4, 0): 3,    # attclient_indicated: connection, handle
    (True, 4, 1): 5,    # attclient_procedure_completed: connection, result, handle
}
BGAPI_ARRAY = {
    (True, 3, 2): 1,    # connection_feature_ind: connection, features[]
    (True, 4, 5): 4,    # attclient_attribute_value: connection, handle, type, value[]
    (True, 6, 0): 10,   # gap_scan_response: rssi, type, sender[6], addr type, bond, data[]
}
BGAPI_MAX_PAYLOAD = 60  # BLE attribute values are at most 22 bytes; scan data 31


class BgapiFramer(Framer):
    """BGAPI packets: a 4-byte header (type and length, class, command), then the payload.

    Only the packets a Myo session meets are known; anything else is taken for garbage,
    which is what makes resynchronising after noise reliable: EMG bytes at rest are often
    0x00 or 0x80, which also start BGAPI headers.
    """

    def is_start(self, byte: int) -> bool:
        return byte in (0x00, 0x80)  # Bluetooth (not Wi-Fi) responses and events

    def length(self, buffer: bytearray, at: int) -> int | None:
        if len(buffer) < at + 4:
            return None
        payload = buffer[at + 1] | (buffer[at] & 0x07) << 8
        key = (bool(buffer[at] & 0x80), buffer[at + 2], buffer[at + 3])
        if key in BGAPI_FIXED:
            return 4 + payload if payload == BGAPI_FIXED[key] else -1
        if key in BGAPI_ARRAY:
            return 4 + payload if BGAPI_ARRAY[key] < payload <= BGAPI_MAX_PAYLOAD else -1
        return -1

    def valid(self, packet: bytes) -> bool:
        key = (bool(packet[0] & 0x80), packet[2], packet[3])
        if key in BGAPI_ARRAY:
            fixed = BGAPI_ARRAY[key]
            return packet[4 + fixed] == len(packet) - 5 - fixed
        return True


def bgapi_packet(packet: bytes) -> BgapiPacket:
    return BgapiPacket(bool(packet[0] & 0x80), packet[2], packet[3], packet[4:])


def bgapi_command(cls: int, cmd: int, payload: bytes = b"") -> bytes:
    """A BGAPI command: type 0x00 (Bluetooth command), payload length, class, command."""
    return bytes([(len(payload) >> 8) & 0x07, len(payload) & 0xFF, cls, cmd]) + payload


# ---------------------------------------------------------------- the Myo over BGAPI
# Facts from Thalmic Labs' published Bluetooth protocol (myohw.h) as myo-raw and pyomyo use
# it: the control service UUID that a Myo advertises, the command characteristic and the
# four EMG data characteristics (the CCCD that enables each one's notifications is the
# handle after its value).
MYO_SERVICE = uuid.UUID("d5060001-a904-deb9-4748-2c7f4a124842").bytes[::-1]  # as on air
MYO_COMMAND_HANDLE = 0x19
MYO_EMG_HANDLES = (0x2B, 0x2E, 0x31, 0x34)
MYO_SET_MODE = 0x01
MYO_SET_SLEEP = 0x09
MYO_EMG_MODES = {"filtered": 0x02, "raw": 0x03}
MYO_NEVER_SLEEP = 0x01
ENABLE_NOTIFICATIONS = b"\x01\x00"


class Bgapi:
    """A BLED112 dongle on a serial port: send commands, wait for responses and events."""

    def __init__(self, port: Any, stats: InputStats, stopping: threading.Event) -> None:
        self.port = port
        self.framer = BgapiFramer(stats)
        self.stopping = stopping
        self.events: deque[BgapiPacket] = deque()  # arrived while waiting for something else
        self.responses: deque[BgapiPacket] = deque()

    def poll(self) -> None:
        """Read what has arrived and sort it into events and responses."""
        data = self.port.read(max(1, self.port.in_waiting))
        for raw in self.framer.feed(data, idle=not data):
            packet = bgapi_packet(raw)
            (self.events if packet.event else self.responses).append(packet)

    def command(self, cls: int, cmd: int, payload: bytes = b"",
                timeout: float = 1.0) -> BgapiPacket:
        """Send a command and return its response. Raises TimeoutError."""
        self.responses.clear()
        self.port.write(bgapi_command(cls, cmd, payload))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            while self.responses:
                response = self.responses.popleft()
                if (response.cls, response.cmd) == (cls, cmd):
                    return response
            self.poll()
        raise TimeoutError(f"BLED112: no response to command {cls}.{cmd} within {timeout} s")

    def wait_event(self, cls: int, cmd: int, timeout: float,
                   match: Callable[[BgapiPacket], bool] = lambda _: True) -> BgapiPacket:
        """The next event (cls, cmd) that `match`es; others stay queued. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            for event in list(self.events):
                if (event.cls, event.cmd) == (cls, cmd) and match(event):
                    self.events.remove(event)
                    return event
            self.poll()
        raise TimeoutError(f"BLED112: no event {cls}.{cmd} within {timeout} s")


def parse_address(text: str) -> bytes:
    """'c8:2f:84:e5:1d:07' -> the six bytes as BGAPI sends them (least significant first)."""
    return bytes.fromhex(text.replace(":", ""))[::-1]


# ---------------------------------------------------------------- sample sources

class SampleSource(Protocol):
    """Where samples come from: `read` returns an (n, channels) array, often empty, soon."""

    sample_rate: float

    def open(self) -> str: ...

    def read(self) -> np.ndarray: ...

    def close(self) -> None: ...


def open_serial(config: EmgInputConfig) -> Any:
    """The configured serial port, opened. Raises OSError with one line for people."""
    import serial  # imported here so `livegen --help` stays light

    try:
        return serial.Serial(config.port, config.baud, timeout=READ_TIMEOUT_S,
                             exclusive=True)
    except serial.SerialException as exc:
        raise OSError(serial_open_problem(config.port, exc)) from None


def serial_open_problem(port: str, exc: OSError) -> str:
    """Why `port` would not open and what to do, naming the port once (pyserial's own
    message names it twice more, in its text and in the OS error it quotes)."""
    code = exc.errno
    if code == errno.ENOENT:
        return (f"{port}: no such device; plug the EMG receiver in, or set the input's port "
                "to one that `livegen devices` lists")
    if code == errno.EACCES:
        return f"{port}: no permission; add your user to group 'dialout' and log in again"
    if code == errno.EBUSY or "exclusively lock" in str(exc):
        return f"{port}: in use by another program; close it (is livegen already running?)"
    # pyserial quotes the port only in the messages that carry an errno.
    reason = os.strerror(code) if code else str(exc)
    return (f"{port}: cannot open it as a serial port ({reason}); check the input's port "
            "with `livegen devices`")


class CytonSource:
    """An OpenBCI Cyton through its USB dongle; streaming starts with 'b', stops with 's'."""

    def __init__(self, config: EmgInputConfig, stats: InputStats) -> None:
        self.config = config
        self.sample_rate = config.sample_rate or PROTOCOL_RATE["cyton"]
        self.framer = CytonFramer(stats)
        self.port: Any = None

    def open(self) -> str:
        self.port = open_serial(self.config)
        self.port.write(b"b")
        return f"OpenBCI Cyton on {self.config.port}"

    def read(self) -> np.ndarray:
        data = self.port.read(max(1, self.port.in_waiting))
        packets = self.framer.feed(data, idle=not data)
        if not packets:
            return np.empty((0, 8))
        return decode_cyton(packets)[:, :self.config.channels]

    def close(self) -> None:
        if self.port is not None:
            with contextlib.suppress(OSError):  # already gone: nothing to stop
                self.port.write(b"s")
            self.port.close()


class CsvSource:
    """Text lines of numbers separated by commas, spaces, tabs or semicolons; the first
    `channels` numbers of each line are the channels."""

    def __init__(self, config: EmgInputConfig, stats: InputStats) -> None:
        self.config = config
        self.stats = stats
        self.sample_rate = config.sample_rate or PROTOCOL_RATE["csv"]
        self.lines = LineReader(stats)
        self.port: Any = None

    def open(self) -> str:
        self.port = open_serial(self.config)
        return f"CSV lines on {self.config.port}"

    def read(self) -> np.ndarray:
        rows = []
        for line in self.lines.feed(self.port.read(max(1, self.port.in_waiting))):
            row = parse_csv_line(line, self.config.channels)
            if isinstance(row, str):
                self.stats.drop(row)
            else:
                rows.append(row)
        return np.array(rows, float).reshape(-1, self.config.channels)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()


def parse_csv_line(line: str, channels: int) -> list[float] | str:
    """The first `channels` numbers of a line, or the reason it was dropped."""
    fields = line.replace(",", " ").replace(";", " ").split()
    try:
        numbers = [float(f) for f in fields[:channels]]
    except ValueError:
        return "garbage"
    if len(numbers) < channels:
        return "short line"
    if not all(math.isfinite(n) for n in numbers):
        return "nan"
    return numbers


class MyoSource:
    """A Myo armband through a BLED112 dongle (BGAPI): connect, enable EMG, stream."""

    def __init__(self, config: EmgInputConfig, stats: InputStats,
                 stopping: threading.Event) -> None:
        self.config = config
        self.stats = stats
        self.stopping = stopping
        self.sample_rate = config.sample_rate or PROTOCOL_RATE["myo-bled112"]
        self.port: Any = None
        self.dongle: Bgapi | None = None
        self.connection: int | None = None

    def open(self) -> str:
        self.port = open_serial(self.config)
        dongle = self.dongle = Bgapi(self.port, self.stats, self.stopping)
        # A previous run may have left a scan or a connection behind: end them first. Their
        # responses may say "nothing to end", which is fine.
        dongle.command(6, 4)
        for connection in range(3):
            dongle.command(3, 0, bytes([connection]))
        dongle.events.clear()
        address, address_type = self.find()
        response = dongle.command(
            6, 3, address + bytes([address_type]) + struct.pack("<HHHH", 6, 6, 64, 0))
        result, connection = struct.unpack("<HB", response.payload)
        if result:
            raise ConnectionError(f"BLED112 could not connect to the Myo (error 0x{result:04x})")
        dongle.wait_event(3, 0, timeout=5.0, match=lambda e: e.payload[0] == connection)
        self.connection = connection
        for handle in MYO_EMG_HANDLES:
            self.write(handle + 1, ENABLE_NOTIFICATIONS)
        mode = MYO_EMG_MODES[self.config.myo_emg_mode]
        self.write(MYO_COMMAND_HANDLE, bytes([MYO_SET_MODE, 3, mode, 0, 0]))  # no IMU, no poses
        self.write(MYO_COMMAND_HANDLE, bytes([MYO_SET_SLEEP, 1, MYO_NEVER_SLEEP]))
        shown = ":".join(f"{b:02x}" for b in reversed(address))
        return f"Myo {shown} through the BLED112 on {self.config.port}"

    def find(self) -> tuple[bytes, int]:
        """The Myo's address and address type: from the config, or the first one scanned."""
        if self.config.myo_address:
            return parse_address(self.config.myo_address), 0
        assert self.dongle is not None
        self.dongle.command(6, 2, b"\x01")  # discover, generic mode
        try:
            found = self.dongle.wait_event(6, 0, timeout=self.config.scan_s,
                                           match=lambda e: MYO_SERVICE in e.payload)
        except TimeoutError:
            raise ConnectionError(f"no Myo found in {self.config.scan_s:g} s of scanning; "
                                  "is it awake (move it) and charged?") from None
        finally:
            self.dongle.command(6, 4)
        return found.payload[2:8], found.payload[8]

    def write(self, handle: int, value: bytes) -> None:
        assert self.dongle is not None and self.connection is not None
        connection = self.connection
        response = self.dongle.command(
            4, 5, struct.pack("<BHB", connection, handle, len(value)) + value)
        if struct.unpack("<BH", response.payload)[1]:
            raise ConnectionError(f"Myo refused a write to handle 0x{handle:02x}")
        self.dongle.wait_event(4, 1, timeout=2.0, match=lambda e: e.payload[0] == connection)

    def read(self) -> np.ndarray:
        assert self.dongle is not None
        if not self.dongle.events:
            self.dongle.poll()
        rows: list[tuple[int, ...]] = []
        while self.dongle.events:
            event = self.dongle.events.popleft()
            if (event.cls, event.cmd) == (3, 4):
                reason = struct.unpack("<BH", event.payload)[1]
                raise ConnectionError(f"the Myo disconnected (reason 0x{reason:04x})")
            if (event.cls, event.cmd) != (4, 5):
                continue
            handle = struct.unpack_from("<H", event.payload, 1)[0]
            value = event.payload[5:]
            if handle in MYO_EMG_HANDLES and len(value) == 16:
                # Two consecutive samples of eight int8 channels per notification.
                rows.extend(struct.iter_unpack("<8b", value))
        if not rows:
            return np.empty((0, self.config.channels))
        return np.array(rows, float)[:, :self.config.channels]

    def close(self) -> None:
        if self.dongle is not None and self.connection is not None:
            # The dongle may be gone or busy; the Myo then times the link out by itself.
            with contextlib.suppress(OSError, TimeoutError):
                self.dongle.command(3, 0, bytes([self.connection]), timeout=0.3)
        if self.port is not None:
            self.port.close()


class BrainFlowSource:
    """A BrainFlow board: its EMG channels (or its first channels when it names none)."""

    def __init__(self, config: EmgInputConfig, stats: InputStats) -> None:
        try:
            from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams
        except ImportError:
            raise LivegenError("protocol 'brainflow' needs BrainFlow: pip install "
                               "'livegen[sensors]'") from None
        self.config = config
        board = config.board
        if board.isdigit():
            self.board_id = int(board)
        else:
            name = board.upper().replace("-", "_")
            name = name if name.endswith("_BOARD") else name + "_BOARD"
            if name not in BoardIds.__members__:
                raise LivegenError(f"BrainFlow knows no board {board!r}; use a name such as "
                                   "'synthetic', 'cyton', 'gforce_pro' or a numeric board id")
            self.board_id = BoardIds[name].value
        params = BrainFlowInputParams()
        params.serial_port = config.port
        self.board = BoardShim(self.board_id, params)
        self.sample_rate = config.sample_rate or float(BoardShim.get_sampling_rate(self.board_id))
        try:
            rows = BoardShim.get_emg_channels(self.board_id)
        except Exception:  # BrainFlow raises its own error for boards without EMG rows
            rows = BoardShim.get_exg_channels(self.board_id)
        self.rows = list(rows)[:config.channels]
        BoardShim.disable_board_logger()

    def open(self) -> str:
        self.board.prepare_session()
        self.board.start_stream()
        return f"BrainFlow board {self.config.board} ({self.board_id})"

    def read(self) -> np.ndarray:
        time.sleep(READ_TIMEOUT_S)  # BrainFlow buffers in its own thread; collect in batches
        data = self.board.get_board_data()
        return np.asarray(data[self.rows], float).T

    def close(self) -> None:
        from brainflow.board_shim import BrainFlowError

        # Either may fail when prepare_session did: then there is nothing to stop.
        with contextlib.suppress(BrainFlowError):
            self.board.stop_stream()
        with contextlib.suppress(BrainFlowError):
            self.board.release_session()


def make_source(config: EmgInputConfig, stats: InputStats,
                stopping: threading.Event) -> SampleSource:
    if config.protocol == "cyton":
        return CytonSource(config, stats)
    if config.protocol == "csv":
        return CsvSource(config, stats)
    if config.protocol == "myo-bled112":
        return MyoSource(config, stats, stopping)
    return BrainFlowSource(config, stats)


# ---------------------------------------------------------------- the signal chain

def plausible_samples(samples: np.ndarray, limit: float, stats: InputStats) -> np.ndarray:
    """The rows of (n, channels) samples whose every value is finite and within +-limit;
    the others are counted as dropped ('nan', 'out of range')."""
    finite = np.isfinite(samples).all(axis=1)
    plausible = finite & (np.abs(samples) <= limit).all(axis=1)
    if plausible.all():
        return samples
    if not finite.all():
        stats.drop("nan", int((~finite).sum()))
    beyond = int((finite & ~plausible).sum())
    if beyond:
        stats.drop("out of range", beyond)
    return samples[plausible]


class EnvelopeChain:
    """DC removal, rectification and a windowed RMS/MAV envelope, for all channels at once.

    Whatever it is fed, its state stays finite: a sample that would make it non-finite
    (an overflow, a NaN) restarts the DC tracker and is left out of the window, and
    `resets` counts it. The window itself holds only finite values, so the envelope is
    right again once the tracker has settled.
    """

    def __init__(self, channels: int, sample_rate: float, config: EmgInputConfig) -> None:
        self.raw = config.signal == "raw"
        self.rms = config.envelope == "rms"
        window = max(1, round(config.window_ms / 1000.0 * sample_rate))
        self.ring = np.zeros((window, channels))
        self.position = 0
        self.filled = 0
        # One-pole low-pass that tracks the DC level; the signal minus it is high-passed.
        self.alpha = 1.0 - math.exp(-2.0 * math.pi * config.highpass_hz / sample_rate)
        self.dc: np.ndarray | None = None
        self.resets = 0

    def push(self, samples: np.ndarray) -> None:
        """Add (n, channels) samples in time order."""
        for row in samples:
            # Overflow is handled below, by a reset; numpy's warning would only be noise.
            with np.errstate(over="ignore", invalid="ignore"):
                if self.raw:
                    if self.dc is None:
                        self.dc = row.copy()  # start at the first sample: no transient
                    self.dc += self.alpha * (row - self.dc)
                    value = np.abs(row - self.dc)
                else:
                    value = np.maximum(row, 0.0)
                level = value * value if self.rms else value
            # A non-finite DC level makes every later level non-finite too: the one check
            # catches both, and the tracker starts afresh from the next sample.
            if not np.isfinite(level).all():
                self.dc = None
                self.resets += 1
                continue
            self.ring[self.position] = level
            self.position = (self.position + 1) % len(self.ring)
            self.filled = min(self.filled + 1, len(self.ring))

    def envelope(self) -> np.ndarray:
        """The envelope of each channel over the last window (shorter at the start)."""
        if not self.filled:
            return np.zeros(self.ring.shape[1])
        mean = self.ring[:self.filled].mean(axis=0) if self.filled < len(self.ring) \
            else self.ring.mean(axis=0)
        return np.sqrt(mean) if self.rms else mean


@dataclass(frozen=True)
class Calibration:
    """Per channel: the envelope at rest (-> 0) and at maximum contraction (-> 1)."""

    rest: np.ndarray
    top: np.ndarray

    def normalise(self, envelope: np.ndarray) -> np.ndarray:
        return np.clip((envelope - self.rest) / (self.top - self.rest), 0.0, 1.0)

    @classmethod
    def default(cls, channels: int, full_scale: float) -> Calibration:
        return cls(np.zeros(channels), np.full(channels, full_scale))

    @classmethod
    def load(cls, path: Path, channels: int) -> Calibration:
        """Read a calibration file (JSON or TOML). Raises LivegenError naming the fix."""
        fix = "run `livegen calibrate emg` to write a new one"
        try:
            text = path.read_text(encoding="utf-8")
            table = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            rest = np.asarray(table["rest"], float)
            top = np.asarray(table["max"], float)
        except OSError as exc:
            raise LivegenError(f"cannot read the EMG calibration {path}: {exc.strerror}; "
                               f"{fix}") from None
        except (ValueError, KeyError, TypeError, tomllib.TOMLDecodeError):
            raise LivegenError(f"{path} is not an EMG calibration (it needs 'rest' and 'max' "
                               f"arrays of numbers); {fix}") from None
        if rest.ndim != 1 or rest.shape != top.shape or len(rest) < channels:
            raise LivegenError(f"{path} calibrates {len(rest)} channels, the input uses "
                               f"{channels}; {fix}")
        rest, top = rest[:channels], top[:channels]
        with np.errstate(over="ignore", invalid="ignore"):
            spread = top - rest  # the divisor of every reading: it must be finite too
        if not (np.all(np.isfinite(rest)) and np.all(np.isfinite(spread))
                and np.all(spread > 0)):
            raise LivegenError(f"{path}: every channel needs finite levels with max above "
                               f"rest; {fix}")
        return cls(rest, top)

    def save(self, path: Path, about: Mapping[str, Any]) -> None:
        """Write JSON, or TOML when the path ends in .toml; `about` records the settings."""
        table = {**about, "rest": [round(float(v), 6) for v in self.rest],
                 "max": [round(float(v), 6) for v in self.top]}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".toml":
            text = "".join(f"{line}\n" for line in toml_writer.assignments(table))
        else:
            text = json.dumps(table, indent=2) + "\n"
        path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- the input

class EmgInput(ThreadedInput):
    """Eight (or `channels`) normalised EMG envelopes, read in a thread of their own."""

    def __init__(self, name: str, config: EmgInputConfig) -> None:
        super().__init__(name)
        self.config = config

    def calibration(self) -> Calibration:
        config = self.config
        if config.calibration is not None:
            return Calibration.load(config.calibration, config.channels)
        full_scale = config.full_scale or FULL_SCALE[config.protocol]
        return Calibration.default(config.channels, full_scale)

    def envelopes(self, stopping: threading.Event) -> Iterator[np.ndarray]:
        """Open the source and yield the raw envelopes, one per 1 / rate_hz of samples.

        Ends with InputEnded when no sample arrives for `stall_s`; a failing port raises
        its own error. The source is closed when the generator is closed.
        """
        config = self.config
        source = make_source(config, self.stats, stopping)
        try:
            what = source.open()
            log.info("emg input %s: %s", self.name, what)
            chain = EnvelopeChain(config.channels, source.sample_rate, config)
            limit = SAMPLE_LIMIT[config.protocol]
            per_reading = max(1, round(source.sample_rate / config.rate_hz))
            due = per_reading
            last_sample = rate_since = time.monotonic()
            counted = 0
            while not stopping.is_set():
                samples = source.read()
                now = time.monotonic()
                if len(samples):
                    samples = plausible_samples(samples, limit, self.stats)
                if not len(samples):
                    if now - last_sample > config.stall_s:
                        raise InputEnded(f"{what}: no samples for {config.stall_s:g} s")
                    continue
                last_sample = now
                counted += len(samples)
                if now - rate_since >= 1.0:
                    self.stats.figures["samples_per_s"] = counted / (now - rate_since)
                    rate_since, counted = now, 0
                # Cut the block at reading boundaries so each reading sees exactly its
                # samples, however the driver batched them.
                while len(samples):
                    take = min(due, len(samples))
                    chain.push(samples[:take])
                    if chain.resets:
                        self.count_resets(chain.resets)
                        chain.resets = 0
                    samples = samples[take:]
                    due -= take
                    if due == 0:
                        due = per_reading
                        yield chain.envelope()
        finally:
            source.close()

    def count_resets(self, resets: int) -> None:
        """Count filter resets; the first of this input's life is logged, the rest are in
        the stats (one line per sample would flood the log)."""
        first = not self.stats.dropped["filter reset"]
        self.stats.drop("filter reset", resets)
        if first:
            log.warning("emg input %s: a filter's state overflowed and was reset; further "
                        "resets are counted as dropped 'filter reset'", self.name)

    def run(self, emit: Emit, stopping: threading.Event) -> None:
        # Read the calibration at each (re)start, so a new one applies after a replug.
        calibration = self.calibration()
        keys = [f"ch{i}" for i in range(self.config.channels)]
        envelopes = self.envelopes(stopping)
        try:
            for envelope in envelopes:
                levels = calibration.normalise(envelope)
                values = dict(zip(keys, levels.tolist(), strict=True))
                values["total"] = float(levels.mean())
                emit(values)
        finally:
            envelopes.close()


# ---------------------------------------------------------------- livegen calibrate emg

PHASES = (
    ("rest", "relax: let the arm hang loose and still"),
    ("squeeze", "squeeze: make a fist, as hard as you can hold it"),
)


def calibrate_command(args: argparse.Namespace) -> int:
    """`livegen calibrate emg`: record rest and maximum contraction, write the file the
    input's `calibration` key points to (or propose one), and say what was measured."""
    from livegen import config as config_module

    config = config_module.load(args.config)
    emg_inputs = {n: c for n, c in config.inputs.items() if isinstance(c, EmgInputConfig)}
    if not emg_inputs:
        raise LivegenError(f"{config.source}: no [inputs.NAME] with type = 'emg' to calibrate")
    name = args.input or next(iter(emg_inputs))
    if name not in emg_inputs:
        raise LivegenError(f"no emg input named {name!r} in {config.source} "
                           f"(emg inputs: {', '.join(emg_inputs)})")
    input_config = emg_inputs[name]
    base = config.source.parent if config.source else Path.cwd()
    path = input_config.calibration or base / f"{name}-calibration.json"
    seconds = float(args.seconds)
    out = sys.stdout

    emg = EmgInput(name, input_config)
    stopping = threading.Event()
    envelopes = emg.envelopes(stopping)
    print(f"Calibrating {name} ({input_config.protocol}): {len(PHASES)} phases of "
          f"{seconds:g} s. Follow each line.", file=out, flush=True)
    levels: dict[str, np.ndarray] = {}
    try:
        for number, (phase, instruction) in enumerate(PHASES, start=1):
            levels[phase] = _record_phase(envelopes, f"{number}/{len(PHASES)} {instruction}",
                                          seconds, out)
    except (OSError, InputEnded) as exc:
        raise LivegenError(f"{name}: the EMG source failed during calibration ({exc}); "
                           "check the connection (`livegen devices`) and try again") from None
    finally:
        stopping.set()
        envelopes.close()

    # The first quarter of each phase is the performer reacting; the envelope window also
    # still holds the previous phase.
    rest = np.median(levels["rest"], axis=0)
    top = np.percentile(levels["squeeze"], 90, axis=0)
    weak = [i for i in range(len(rest)) if not top[i] > 1.5 * rest[i] + 1e-9]
    if len(weak) == len(rest):
        raise LivegenError(f"{name}: no channel changed between rest and squeeze; is the "
                           "armband on and the performer squeezing? Nothing written.")
    for i in weak:
        print(f"warning: ch{i} barely changed (rest {rest[i]:.3g}, squeeze {top[i]:.3g}); "
              "check its electrode", file=out)
        top[i] = max(top[i], 2.0 * rest[i], rest[i] + 1e-6)
    about = {"livegen_emg_calibration": 1, "input": name, "protocol": input_config.protocol,
             "signal": input_config.signal, "envelope": input_config.envelope,
             "window_ms": input_config.window_ms,
             "created": datetime.datetime.now().isoformat(timespec="seconds")}
    Calibration(rest, top).save(path, about)
    for i in range(len(rest)):
        print(f"  ch{i}: rest {rest[i]:9.3f}   max {top[i]:9.3f}", file=out)
    print(f"wrote {path}", file=out)
    if input_config.calibration is None:
        print(f'add  calibration = "{path.name}"  to [inputs.{name}] in {config.source}',
              file=out)
    return 0


def _record_phase(envelopes: Iterator[np.ndarray], prompt: str, seconds: float,
                  out: Any) -> np.ndarray:
    """Collect envelopes for `seconds` while counting down on one line; drop the first
    quarter (reaction time)."""
    print(prompt, end="", file=out, flush=True)
    started = time.monotonic()
    shown = math.ceil(seconds)
    print(f"  {shown}", end="", file=out, flush=True)
    collected: list[tuple[float, np.ndarray]] = []
    for envelope in envelopes:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        collected.append((elapsed, envelope))
        left = math.ceil(seconds - elapsed)
        if left < shown:
            shown = left
            print(f" {shown}", end="", file=out, flush=True)
    print("  done", file=out, flush=True)
    kept = [envelope for elapsed, envelope in collected if elapsed >= seconds / 4]
    if not kept:
        raise InputEnded("no samples arrived")
    return np.array(kept)
