"""A Myo armband through a BLED112 dongle (BGAPI): scan for it (or connect to
`myo_address`), subscribe to its four EMG characteristics and set the EMG mode: 8 channels
of int8 at 200 Hz, two samples per notification."""

from __future__ import annotations

import contextlib
import struct
import threading
import uuid
from typing import Any

import numpy as np

from livegen.inputs.base import InputStats
from livegen.inputs.emg.bgapi import Bgapi
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.source import PROTOCOL_RATE, open_serial

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


def parse_address(text: str) -> bytes:
    """'c8:2f:84:e5:1d:07' -> the six bytes as BGAPI sends them (least significant first)."""
    return bytes.fromhex(text.replace(":", ""))[::-1]


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
