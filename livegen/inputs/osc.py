"""The OSC input: any external tracker (a MediaPipe script, TouchOSC on a phone) sends
`/livegen/in/NAME f...` over UDP and it becomes a Reading.

One float gives the value NAME; several give NAME.0, NAME.1, ...; slashes after the
prefix become dots, so `/livegen/in/hand/y 0.7` is the value hand.y. The listener binds to
127.0.0.1 unless the config says otherwise. Messages in a bundle are taken at once (their
time tags are ignored: a control is wanted now, not later).

The control surface. With `commands = true` (the default) the input also takes

    /livegen/panic                  end every note now
    /livegen/pause   /livegen/resume    (/livegen/pause 0 resumes: a toggle button)
    /livegen/generator NAME         switch mode: NAME takes over at the next bar line
    /livegen/preset/store N [NAME]  store the controls as preset N (1..128)
    /livegen/preset/recall N        recall preset N
    /livegen/preset/morph N BARS    move the controls to preset N over BARS bars (themes)
    /livegen/state                  ask for the state

and answers each with the state, to the sender's address (or `reply_to`):
/livegen/state/generator NAME, /livegen/state/paused 0|1, /livegen/state/preset N (0 =
none yet); a command that cannot be done gets /livegen/error "what and the fix". The
state goes again to every controller that sent a command (and `reply_to`) whenever it
changes, whatever changed it (a knob, the monitor page, a program change). A button that
sends its value in the address works too (TouchOSC): `/livegen/preset/recall/3 1`,
`/livegen/generator/lead 1`; a first argument of 0 is a button's release and is ignored
(except /livegen/pause 0, which resumes).

Bad packets never stop the input; each is dropped and counted in `stats.dropped`:
'unparsable' (not OSC at all; python-osc's own servers drop these silently, so livegen
parses each datagram itself with python-osc's parser), 'no messages' (a bundle with
nothing usable in it), 'unknown address', 'bad name', 'no values', 'wrong type' (strings,
blobs, booleans...), 'nan'. python-osc pads a float cut short at the end of a datagram
(Reaktor sends those), so such a float is taken, not dropped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError

from livegen.config import InputConfig, setting
from livegen.errors import LivegenError
from livegen.inputs.base import VALUE_KEY, Check, InputStats, Reading

log = logging.getLogger(__name__)

SURFACE = "/livegen/"
# The commands by their first word after /livegen/ (the preset's by their second).
COMMANDS = ("panic", "pause", "resume", "generator", "preset/store", "preset/recall",
            "preset/morph", "state")
LISTENERS = 8  # controllers told of every state change: the last ones that sent a command


@dataclass(frozen=True, slots=True)
class OscInputConfig(InputConfig):
    """An OSC listener: `/livegen/in/NAME f...` from any tracker (a MediaPipe script,
    TouchOSC on a phone) becomes the values NAME (one float) or NAME.0, NAME.1, ..."""
    host: str = setting("127.0.0.1", doc="address to listen on; 0.0.0.0 opens it to the "
                                         "network (phones), so only on a trusted network")
    port: int = setting(9000, lo=0, hi=65535, doc="UDP port (0 = any free port)")
    prefix: str = setting("/livegen/in", doc="OSC address prefix of the messages taken")
    # A fader or knob on a phone sends only when moved and keeps its place, like a MIDI
    # knob: its controls hold. A tracker that streams can set a few seconds.
    stale_after: float = setting(3600.0, lo=0.05, hi=3600.0,
                                 doc="seconds of silence before its controls go neutral")
    commands: bool = setting(True, doc="take the control surface's commands (/livegen/panic, "
                                       "/livegen/pause, /livegen/generator, /livegen/preset/"
                                       "...) and answer with /livegen/state/...")
    reply_to: str = setting("", doc="host:port that state replies go to (a TouchOSC or Open "
                                    "Stage Control receive port); '' = the sender's address")

    def describe(self) -> str:
        return f"osc, udp {self.host}:{self.port}"

    def reachable(self) -> Check:
        """Whether its port is free to listen on (bound and closed again at once)."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((self.host, self.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Check(False, f"port {self.port} is in use (is livegen already running?)")
            if exc.errno == errno.EADDRNOTAVAIL:
                return Check(False, f"{self.host} is not an address of this machine")
            return Check(False, f"cannot listen on {self.host}:{self.port}: {exc.strerror}")
        finally:
            probe.close()
        return Check(True, f"can listen on {self.host}:{self.port}")

    def check(self, path: str, problems: list[str]) -> None:
        if not re.fullmatch(r"(/[^/\s#*,?\[\]{}]+)+", self.prefix):
            problems.append(f"{path}.prefix: {self.prefix!r} must be an OSC address like "
                            "'/livegen/in' (starts with '/', no trailing '/', no wildcards)")
        if self.reply_to and parse_host_port(self.reply_to) is None:
            problems.append(f"{path}.reply_to: {self.reply_to!r} is not host:port; give e.g. "
                            "'192.168.1.20:9001', or '' to reply to the sender")


def parse_host_port(text: str) -> tuple[str, int] | None:
    """'host:port' -> (host, port), or None when it is not that."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)

class OscInput:
    """A UDP listener on the event loop; `address` is (host, port) once it is bound."""

    queue_size = 1024  # readings buffered while the loop is busy; the oldest are dropped

    def __init__(self, name: str, config: OscInputConfig) -> None:
        self.name = name
        self.config = config
        self.stats = InputStats()
        self.address: tuple[str, int] | None = None
        self.bound = asyncio.Event()  # set once the socket is bound (tests, `devices`)
        self.engine: Any = None  # the Engine, once attached: commands need it
        self.reply_to = parse_host_port(config.reply_to) if config.reply_to else None
        self.listeners: list[tuple[str, int]] = []  # who hears state changes
        self._transport: asyncio.DatagramTransport | None = None
        self._told = False  # whether the command being done told the listeners

    def attach(self, engine: Any) -> None:
        """Take the control surface's commands for `engine` (config `commands`)."""
        if self.config.commands:
            self.engine = engine

    async def readings(self) -> AsyncIterator[Reading]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Reading] = asyncio.Queue(self.queue_size)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OscProtocol(self, queue),
            local_addr=(self.config.host, self.config.port))
        self.address = transport.get_extra_info("sockname")[:2]
        self._transport = transport
        log.info("osc input %s: listening on udp %s:%d for %s/...%s", self.name,
                 self.address[0], self.address[1], self.config.prefix,
                 " and the control surface's /livegen/... commands" if self.engine else "")
        if self.engine is not None:
            self.engine.state_listeners.append(self.tell)
        self.bound.set()
        try:
            while True:
                yield await queue.get()
        finally:
            self.bound.clear()
            if self.engine is not None and self.tell in self.engine.state_listeners:
                self.engine.state_listeners.remove(self.tell)
            self._transport = None
            transport.close()

    # ------------------------------------------------------------ the control surface

    def is_command(self, address: str) -> bool:
        if self.engine is None or not address.startswith(SURFACE):
            return False
        return address[len(SURFACE):].startswith(COMMANDS)

    def command(self, message: OscMessage, sender: tuple[str, int], t: float) -> None:
        """Do one command (see the module docstring) and answer the sender."""
        words = message.address[len(SURFACE):].split("/")
        params = list(message.params)
        if words[0] == "preset" and len(words) > 1:
            words = [f"preset/{words[1]}", *words[2:]]
        verb, rest = words[0], words[1:]
        self.stats.figures["commands"] = self.stats.figures.get("commands", 0) + 1
        if self.reply_to is None:
            if sender in self.listeners:
                self.listeners.remove(sender)
            self.listeners = [*self.listeners, sender][-LISTENERS:]
        # A button that sends its value in the address: 1 on press, 0 on release.
        pressed = not params or not isinstance(params[0], int | float) or params[0] != 0
        try:
            if verb not in COMMANDS or len(rest) > 1:
                raise LivegenError(f"{message.address}: no such command (commands: "
                                   + ", ".join(SURFACE + c for c in COMMANDS) + ")")
            if rest:  # /livegen/generator/NAME 1, /livegen/preset/recall/3 1
                if not pressed:
                    return
                params = [rest[0]]
            elif verb in ("panic", "resume") and not pressed:
                return
            self._told = False
            self._do(verb, params, t)
        except LivegenError as exc:
            self.stats.drop("bad command")
            log.warning("osc input %s: %s", self.name, exc)
            self._send(self.reply_to or sender, "/livegen/error", [str(exc)])
            return
        if not self._told:  # nothing changed (or a question): the sender hears the state
            self._send_state(self.reply_to or sender, self.engine.surface_state())

    def _do(self, verb: str, params: list[Any], t: float) -> None:
        engine = self.engine
        if verb == "panic":
            engine.panic()
        elif verb == "pause":
            if params and isinstance(params[0], int | float) and params[0] == 0:
                engine.resume()
            else:
                engine.pause()
        elif verb == "resume":
            engine.resume()
        elif verb == "generator":
            if not params or not isinstance(params[0], str):
                raise LivegenError("/livegen/generator needs a generator's name, e.g. "
                                   f"/livegen/generator {engine.active}")
            engine.switch(params[0], t)
        elif verb.startswith("preset/"):
            number = _preset_number(params[0] if params else None, verb)
            if verb == "preset/store":
                name = params[1] if len(params) > 1 and isinstance(params[1], str) else ""
                engine.store_preset(number, name)
            elif verb == "preset/morph":
                bars = params[1] if len(params) > 1 else None
                if not isinstance(bars, int | float) or not 0 <= bars <= 64:
                    raise LivegenError("/livegen/preset/morph needs a preset and a number of "
                                       "bars (0..64), e.g. /livegen/preset/morph 2 4")
                engine.morph_to_preset(number, round(bars), t)
            else:
                engine.recall_preset(number, t)

    def tell(self, state: dict[str, Any]) -> None:
        """Send the state to every controller that listens (called on each change)."""
        self._told = True
        for address in [self.reply_to] if self.reply_to else self.listeners:
            self._send_state(address, state)

    def _send_state(self, address: tuple[str, int] | None, state: dict[str, Any]) -> None:
        self._send(address, "/livegen/state/generator", [state["generator"]])
        self._send(address, "/livegen/state/paused", [int(state["paused"])])
        self._send(address, "/livegen/state/preset", [state["preset"] or 0])

    def _send(self, address: tuple[str, int] | None, path: str, args: list[Any]) -> None:
        if self._transport is None or address is None:
            return
        builder = OscMessageBuilder(path)
        for arg in args:
            builder.add_arg(arg)
        try:
            self._transport.sendto(builder.build().dgram, address)
        except OSError as exc:  # a controller that went away: its state is not sent
            log.debug("osc input %s: cannot reply to %s: %s", self.name, address, exc)

    def values(self, message: OscMessage) -> dict[str, float] | None:
        """The values a message carries, or None (counted) when it is dropped."""
        prefix = self.config.prefix + "/"
        if not message.address.startswith(prefix):
            self.stats.drop("unknown address")
            return None
        name = message.address[len(prefix):].replace("/", ".")
        if not VALUE_KEY.fullmatch(name):
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
            if self.owner.is_command(timed.message.address):
                self.owner.command(timed.message, addr[:2], t)
                continue
            values = self.owner.values(timed.message)
            if values is None:
                continue
            if self.queue.full():
                self.queue.get_nowait()
                stats.drop("overflow")
            self.queue.put_nowait(Reading(self.owner.name, t, values))

    def error_received(self, exc: Exception) -> None:
        log.warning("osc input %s: %s", self.owner.name, exc)


def _preset_number(value: object, verb: str) -> int:
    """A preset number from an OSC argument (TouchOSC sends floats, some send strings)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number == round(number)):
        raise LivegenError(f"/livegen/{verb} needs a preset number, e.g. /livegen/{verb} 1")
    return int(number)
