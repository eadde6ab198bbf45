"""Bluegiga's BGAPI as a BLED112 USB dongle speaks it over a serial port: the packets a
Myo session meets, their framing, and a client that sends commands and waits for their
responses and for events."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from livegen.inputs.base import InputStats
from livegen.inputs.emg.framing import Framer


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
