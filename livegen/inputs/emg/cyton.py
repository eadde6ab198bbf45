"""An OpenBCI Cyton through its USB dongle: binary packets at 250 Hz (0xA0, sample
number, 8 x 24-bit signed big-endian channels, 6 aux bytes, a 0xCx footer), decoded to
microvolts; streaming starts with 'b' and stops with 's'."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from livegen.inputs.base import InputStats
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.framing import Framer
from livegen.inputs.emg.source import CYTON_UV_PER_COUNT, PROTOCOL_RATE, open_serial

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
