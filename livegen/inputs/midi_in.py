"""A MIDI controller as an input (python-rtmidi for the port, mido to parse), and
`livegen learn`, which writes a [[map]] entry for the control you move.

Every value is normalised to 0..1 so the default in_range fits:
    cc.N          controller N (value / 127)
    note.N        note N: its velocity / 127 while held, 0 when released
    note          the last note played (pitch / 127); velocity: its velocity / 127
    bend          pitch bend, 0.5 at rest
    pressure      channel aftertouch; pressure.N: polyphonic aftertouch of note N
    program       the last program change (number / 127)
System exclusive, stray data bytes and unknown status bytes are dropped and counted; MIDI
clock and transport go to the clock when it follows this port, else they are ignored.

The control surface (config keys; the engine attaches itself to the input):
    program_change = "preset"   program change P recalls preset P+1 (no `program` value)
    preset_notes = [36, 37]     the first listed note recalls preset 1, the next preset 2...
    morph_bars = 4              such a recall morphs to the preset over 4 bars (themes)
    thru = true                 the notes that come in are played through livegen's port
                                too, on `thru_channel` (0: their own), as they arrive
Thru notes go into the timeline, due now, under the tag `thru:NAME`: the output sends them
at once and keeps them in its note ledger like the generators' notes, so a panic, a stop
or output.max_note_s ends them too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mido
from rtmidi.midiconstants import (
    ACTIVE_SENSING,
    END_OF_EXCLUSIVE,
    NOTE_OFF,
    NOTE_ON,
    PROGRAM_CHANGE,
    SONG_CONTINUE,
    SONG_START,
    SONG_STOP,
    SYSTEM_EXCLUSIVE,
    SYSTEM_RESET,
    TIMING_CLOCK,
)

from livegen import config as config_module
from livegen import toml_writer
from livegen.config import InputConfig, parse_target, setting
from livegen.errors import LivegenError
from livegen.inputs.base import Check, DeviceAbsent, Emit, ThreadedInput
from livegen.ports import Listener, ListenerSpec, PortGone

log = logging.getLogger(__name__)

# Status bytes by their use here (rtmidi.midiconstants holds the MIDI standard's table).
REALTIME = frozenset({TIMING_CLOCK, SONG_START, SONG_CONTINUE, SONG_STOP, ACTIVE_SENSING,
                      SYSTEM_RESET})
THRU_TAG_PREFIX = "thru:"  # timeline tag of an input's thru notes: thru:NAME


@dataclass(frozen=True, slots=True)
class MidiInputConfig(InputConfig):
    port: str = setting("", doc="existing input port to listen to (name substring); with "
                                "virtual = true, the name of livegen's own input client")
    virtual: bool = setting(False, doc="open a virtual input port (NAME:in, NAME = port or "
                                       "'livegen-in') for a controller or DAW to connect to")
    api: Literal["auto", "jack", "alsa", "coremidi"] = setting("auto")
    channel: int = setting(0, lo=0, hi=16, doc="listen to this channel only (0 = all)")
    # A knob sends only when moved and keeps its place: its controls hold for an hour.
    stale_after: float = setting(3600.0, lo=0.05, hi=3600.0,
                                 doc="seconds of silence before its controls go neutral")
    program_change: Literal["value", "preset"] = setting(
        "value", doc="value: a program change is the value `program` for [[map]] rules; "
                     "preset: program change P (shown as P+1 on most devices) recalls "
                     "preset P+1")
    preset_notes: tuple[int, ...] = setting(
        (), lo=0, hi=127, doc="notes that recall presets: the first listed recalls preset 1, "
                              "the next preset 2... (pads for themes)")
    morph_bars: int = setting(0, lo=0, hi=64, doc="a preset recalled from this input "
                                                 "(program change or note) morphs over this "
                                                 "many bars; 0 = at once")
    thru: bool = setting(False, doc="play the notes that come in through livegen's output "
                                    "port as well (the performer's keyboard heard)")
    thru_channel: int = setting(0, lo=0, hi=16, doc="channel the thru notes are played on "
                                                    "(0 = the channel they came on)")

    def offered_keys(self) -> tuple[str, ...]:
        numbered = tuple(f"{kind}.{n}" for kind in ("cc", "note", "pressure")
                         for n in range(128))
        return (*numbered, "note", "velocity", "bend", "pressure", "program")

    def describe(self) -> str:
        return f"midi, {'virtual port' if self.virtual else repr(self.port)}"

    def reachable(self) -> Check:
        """Whether a MIDI input port of any reachable MIDI system matches `port`."""
        if self.virtual:
            return Check(True, "opens its own virtual port")
        from livegen import ports

        compiled = ports.compiled_apis()
        sources = [name for api in ports.AUTO_ORDER if api in compiled
                   for name in ports.source_ports(api) or ()]
        matches = ports.match_ports(sources, self.port)
        if matches:
            return Check(True, f"port {matches[0]!r}")
        return Check(False, f"no MIDI input port contains {self.port!r} (see 'MIDI' above)")

    def check(self, path: str, problems: list[str]) -> None:
        if not self.port and not self.virtual:
            problems.append(f"{path}.port: name the controller's port (a substring; see "
                            "`livegen devices`) or set virtual = true")

def values_of(message: mido.Message) -> dict[str, float] | None:
    """A parsed channel message as input values, or None for kinds livegen does not map."""
    kind = message.type
    if kind == "control_change":
        return {f"cc.{message.control}": message.value / 127}
    if kind == "note_on" and message.velocity > 0:
        return {f"note.{message.note}": message.velocity / 127, "note": message.note / 127,
                "velocity": message.velocity / 127}
    if kind in ("note_off", "note_on"):
        return {f"note.{message.note}": 0.0}
    if kind == "pitchwheel":
        return {"bend": (message.pitch + 8192) / 16383}
    if kind == "aftertouch":
        return {"pressure": message.value / 127}
    if kind == "polytouch":
        return {f"pressure.{message.note}": message.value / 127}
    if kind == "program_change":
        return {"program": message.program / 127}
    return None


def embedded_messages(sysex: list[int]) -> list[list[int]]:
    """The channel and system-common messages inside a sysex that was never terminated.

    rtmidi's JACK input treats every event after a sysex start without its end (0xF7) as
    part of that sysex until an event ends in 0xF7, and delivers them glued together then:
    one stray 0xF0 from a device would swallow the knobs that follow. What was glued on is
    split out again here (late, but not lost). Clock and other real-time bytes are left
    out: a burst of late clock pulses would only mislead the tempo estimate."""
    pieces: list[list[int]] = []
    current: list[int] | None = None
    for byte in sysex[1:]:
        if byte >= END_OF_EXCLUSIVE:  # the sysex end, or a real-time byte
            continue
        if byte >= 0x80:  # a status byte starts a message
            current = [byte]
            pieces.append(current)
        elif current is not None:
            current.append(byte)
    return [piece for piece in pieces if piece[0] != SYSTEM_EXCLUSIVE]


class MidiInput(ThreadedInput):
    """A MIDI controller: its port is held by a child process (livegen.ports.Listener), the
    reader thread parses what the child hands over and emits it.

    Why a child: livegen keeps one JACK client per process (a second client can start
    asleep for good, see livegen.ports), and a crash in native MIDI code on garbage input
    then ends the child, which the supervisor restarts, not the daemon. The child stamps
    each message with its arrival time, which becomes the Reading's time.
    """

    def __init__(self, name: str, config: MidiInputConfig,
                 on_clock: Callable[[int, float], None] | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.on_clock = on_clock  # called with (status, arrival time) from the reader thread
        self.description = ""
        # The control surface, once the engine attaches itself (see the module docstring).
        self.engine: Any = None
        self.thru_tag = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        # The ports joined to a virtual port, as its last child saw them: joined again to
        # the port of the child that replaces it (see livegen.ports.Listener).
        self._joined: tuple[str, ...] = ()

    def attach(self, engine: Any) -> None:
        """Recall presets on program changes and play thru for `engine` (as configured);
        called on the event loop."""
        self._loop = asyncio.get_running_loop()
        self.engine = engine
        if self.config.thru:
            self.thru_tag = THRU_TAG_PREFIX + self.name

    def spec(self) -> ListenerSpec:
        if self.config.virtual:
            return ListenerSpec(self.config.api, self.config.port or "livegen-in",
                                keep_connections=True, reconnect=self._joined)
        return ListenerSpec(self.config.api, f"livegen-{self.name}", connect=self.config.port)

    def handle(self, data: list[int], emit: Emit, t: float | None = None) -> None:
        """One message from the port (a list of bytes) that arrived at time `t`."""
        status = data[0] if data else 0
        if status in REALTIME:
            if self.on_clock is not None:
                self.on_clock(status, time.monotonic() if t is None else t)
            return
        if status == SYSTEM_EXCLUSIVE:
            embedded = embedded_messages(data)
            self.stats.drop("unterminated sysex" if embedded else "sysex")
            for message in embedded:
                self.handle(message, emit, t)
            return
        try:
            message = mido.Message.from_bytes(data)
        except (ValueError, TypeError, IndexError):
            self.stats.drop("malformed")
            return
        channel = getattr(message, "channel", None)
        if self.config.channel and channel is not None and channel != self.config.channel - 1:
            return
        kind = data[0] & 0xF0
        if self.thru_tag and kind in (NOTE_ON, NOTE_OFF):
            self._play_thru(data)
        if kind == PROGRAM_CHANGE and self.config.program_change == "preset":
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._recall, data[1] + 1, t)
            return
        if (kind == NOTE_ON and len(data) > 2 and data[2] and self._loop is not None
                and data[1] in self.config.preset_notes):
            number = self.config.preset_notes.index(data[1]) + 1
            self._loop.call_soon_threadsafe(self._recall, number, t)
        values = values_of(message)
        if values is None:
            self.stats.drop("unmapped")
            return
        emit(values, t)

    def _play_thru(self, data: list[int]) -> None:
        """Plan the note now, on thru_channel: the output thread sends it at once."""
        channel = self.config.thru_channel
        status = (data[0] & 0xF0) | (channel - 1) if channel else data[0]
        self.engine.timeline.add(time.monotonic(), (status, data[1], data[2]), self.thru_tag)

    def _recall(self, number: int, t: float | None) -> None:
        """On the loop: recall preset `number` for a program change."""
        try:
            self.engine.morph_to_preset(number, self.config.morph_bars, t)
        except LivegenError as exc:
            self.stats.drop("no such preset")
            log.warning("input %s: preset %d: %s", self.name, number, exc)

    def run(self, emit: Emit, stopping: threading.Event) -> None:
        try:
            listener = Listener(self.spec())
        except PortGone as exc:
            raise DeviceAbsent(str(exc)) from None
        self.description = f"{listener.api} port {listener.source or listener.port}"
        log.info("input %s: listening on %s", self.name, self.description)
        if self._joined:
            log.info("input %s: joining %s to it again", self.name, ", ".join(self._joined))
        try:
            for t, data in listener.messages(stopping):
                try:
                    self.handle(data, emit, t)
                except Exception:  # one odd message must not end the input
                    self.stats.drop("error")
                    log.debug("input %s: could not handle %r", self.name, data,
                              exc_info=True)
        except PortGone as exc:
            raise DeviceAbsent(str(exc)) from None
        finally:
            self._joined = listener.connections
            listener.close()


# ---------------------------------------------------------------- livegen learn

def learned_rule(source: str, target: str) -> str:
    """The TOML text of a [[map]] entry from `source` (INPUT.KEY) to `target`."""
    lines = toml_writer.assignments({"source": source, "target": target})
    return "\n[[map]]\n" + "\n".join(lines) + "\n"


def learn_command(args: argparse.Namespace) -> int:
    cfg = config_module.load(args.config)
    try:
        parse_target(args.target)
    except ValueError as exc:
        raise LivegenError(f"learn: {exc}") from None
    midi_inputs = {n: c for n, c in cfg.inputs.items() if isinstance(c, MidiInputConfig)}
    if not midi_inputs:
        raise LivegenError("learn: the config has no [inputs.NAME] with type = \"midi\"; add "
                           "one naming your controller's port (see `livegen devices`)")
    name = args.input or next(iter(midi_inputs))
    if name not in midi_inputs:
        raise LivegenError(f"learn: no midi input named {name!r} (midi inputs: "
                           f"{', '.join(midi_inputs)})")
    source = MidiInput(name, midi_inputs[name])
    print(f"move the control that should drive {args.target} (waiting up to "
          f"{args.timeout:g} s) ...", flush=True)
    key = asyncio.run(_first_moved_key(source, args.timeout))
    if key is None:
        raise LivegenError(f"learn: nothing moved on input {name!r} within {args.timeout:g} s; "
                           "check the controller's port and channel")
    entry = learned_rule(f"{name}.{key}", args.target)
    if args.write:
        path = Path(cfg.source)
        with path.open("a", encoding="utf-8") as config_file:
            config_file.write(entry)
        config_module.load(path)  # still valid?
        print(f"added to {path}:{entry}")
    else:
        print(entry.strip())
    return 0


async def _first_moved_key(source: MidiInput, timeout: float) -> str | None:
    """The key of the first control that moves (a CC, a note, the bend wheel)."""
    async def first() -> str:
        async for reading in source.readings():
            for key in reading.values:
                if key.startswith(("cc.", "note.", "bend", "pressure")):
                    return "note" if key.startswith("note.") else key
        raise LivegenError("learn: the input ended")

    try:
        return await asyncio.wait_for(first(), timeout)
    except TimeoutError:
        return None
