"""The OSC input: any external tracker (a MediaPipe script, TouchOSC on a phone) sends
`/livegen/in/NAME f...` over UDP and it becomes a Reading.

One float gives the value NAME; several give NAME.0, NAME.1, ...; slashes after the
prefix become dots, so `/livegen/in/hand/y 0.7` is the value hand.y. The listener binds to
127.0.0.1 unless the config says otherwise. Messages in a bundle are taken at once (their
time tags are ignored: a control is wanted now, not later).

Bad packets never stop the input; each is dropped and counted in `stats.dropped`:
'unparsable' (not OSC at all; python-osc's own servers drop these silently, so livegen
parses each datagram itself with python-osc's parser), 'no messages' (a bundle with
nothing usable in it), 'unknown address', 'bad name', 'no values', 'wrong type' (strings,
blobs, booleans...), 'nan'. python-osc pads a float cut short at the end of a datagram
(Reaktor sends those), so such a float is taken, not dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator

from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import OscPacket, ParseError

from livegen.config import OscInputConfig
from livegen.inputs.base import InputStats, Reading

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class OscInput:
    """A UDP listener on the event loop; `address` is (host, port) once it is bound."""

    queue_size = 1024  # readings buffered while the loop is busy; the oldest are dropped

    def __init__(self, name: str, config: OscInputConfig) -> None:
        self.name = name
        self.config = config
        self.stats = InputStats()
        self.address: tuple[str, int] | None = None
        self.bound = asyncio.Event()  # set once the socket is bound (tests, `devices`)

    async def readings(self) -> AsyncIterator[Reading]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Reading] = asyncio.Queue(self.queue_size)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OscProtocol(self, queue),
            local_addr=(self.config.host, self.config.port))
        self.address = transport.get_extra_info("sockname")[:2]
        log.info("osc input %s: listening on udp %s:%d for %s/...", self.name,
                 self.address[0], self.address[1], self.config.prefix)
        self.bound.set()
        try:
            while True:
                yield await queue.get()
        finally:
            self.bound.clear()
            transport.close()

    def values(self, message: OscMessage) -> dict[str, float] | None:
        """The values a message carries, or None (counted) when it is dropped."""
        prefix = self.config.prefix + "/"
        if not message.address.startswith(prefix):
            self.stats.drop("unknown address")
            return None
        name = message.address[len(prefix):].replace("/", ".")
        if not _NAME.fullmatch(name):
            self.stats.drop("bad name")
            return None
        params = message.params
        if not params:
            self.stats.drop("no values")
            return None
        numbers = []
        for param in params:
            # bool is an int in Python, but OSC's T/F are flags, not levels.
            if isinstance(param, bool) or not isinstance(param, int | float):
                self.stats.drop("wrong type")
                return None
            if not math.isfinite(param):
                self.stats.drop("nan")
                return None
            numbers.append(float(param))
        if len(numbers) == 1:
            return {name: numbers[0]}
        return {f"{name}.{i}": number for i, number in enumerate(numbers)}


class _OscProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: OscInput, queue: asyncio.Queue[Reading]) -> None:
        self.owner = owner
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        t = time.monotonic()
        stats = self.owner.stats
        try:
            packet = OscPacket(data)
        except ParseError:
            stats.drop("unparsable")
            return
        except Exception:  # python-osc raises others on some malformed input; never crash
            log.debug("osc input %s: datagram from %s broke the parser", self.owner.name,
                      addr, exc_info=True)
            stats.drop("unparsable")
            return
        if not packet.messages:
            # python-osc skips bundle contents it cannot identify (with a log line) and
            # hands back an empty packet: count it here.
            stats.drop("no messages")
            return
        for timed in packet.messages:
            values = self.owner.values(timed.message)
            if values is None:
                continue
            if self.queue.full():
                self.queue.get_nowait()
                stats.drop("overflow")
            self.queue.put_nowait(Reading(self.owner.name, t, values))

    def error_received(self, exc: Exception) -> None:
        log.warning("osc input %s: %s", self.owner.name, exc)
