"""Cutting packets out of a serial byte stream that may hold garbage and cut-off
packets; the Cyton's and the BLED112's framers build on `Framer`."""

from __future__ import annotations

from livegen.inputs.base import InputStats


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
