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
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mido
import rtmidi

from livegen import config as config_module
from livegen.config import MidiInputConfig, parse_target
from livegen.errors import LivegenError
from livegen.inputs.base import InputEnded, ThreadedInput
from livegen.output import current_ports, midi_client

log = logging.getLogger(__name__)

REALTIME = frozenset({0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF})
HEALTH_CHECK_S = 2.0  # how often a connected input checks that its source port is there
POLL_S = 0.001  # how long the reader sleeps when no message is waiting


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


def open_midi_in(cfg: MidiInputConfig) -> tuple[Any, str, str, str | None]:
    """Open the configured input: a virtual port (client cfg.port, default 'livegen-in'),
    or the first existing port whose name contains cfg.port. Returns the rtmidi client, the
    MIDI API it got, a description, and the name of the port it connected to (None for a
    virtual port)."""
    client_name = (cfg.port or "livegen-in") if cfg.virtual else "livegen-in"
    midi_in, api = midi_client(cfg.api, client_name, kind=rtmidi.MidiIn)
    # Receive sysex and timing too: sysex to count it, timing for the clock.
    midi_in.ignore_types(sysex=False, timing=False, active_sense=True)
    if cfg.virtual:
        midi_in.open_virtual_port("in")
        return midi_in, api, f"{api} port {client_name}:in", None
    ports = midi_in.get_ports()
    matches = [i for i, name in enumerate(ports) if cfg.port.lower() in name.lower()]
    if not matches:
        midi_in.delete()
        listed = ", ".join(repr(p) for p in ports) or "none"
        raise LivegenError(f"no {api} MIDI input port matches {cfg.port!r} (ports: {listed}); "
                           "connect the controller or see `livegen devices`")
    midi_in.open_port(matches[0], "in")
    return midi_in, api, f"{api} port {ports[matches[0]]}", ports[matches[0]]


class MidiInput(ThreadedInput):
    """A MIDI controller: rtmidi calls back from its own thread; we parse and emit."""

    def __init__(self, name: str, config: MidiInputConfig,
                 on_clock: Callable[[int, float], None] | None = None,
                 reopen_after_silence_s: float | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.on_clock = on_clock  # called with (status, monotonic time) from the reader thread
        # For a source that never falls silent while it runs (a clock master): hearing
        # nothing this long reopens the port. JACK sometimes leaves a freshly opened rtmidi
        # input that never runs (the server reports it "not finished" every cycle; not
        # understood yet); a new client heals it.
        self.reopen_after_silence_s = reopen_after_silence_s
        self.description = ""

    def handle(self, data: list[int], emit: Callable[[Mapping[str, float]], None]) -> None:
        """One message from the port (a list of bytes), as rtmidi delivers it."""
        status = data[0] if data else 0
        if status in REALTIME:
            if self.on_clock is not None:
                self.on_clock(status, time.monotonic())
            return
        if status == 0xF0:
            self.stats.drop("sysex")
            return
        try:
            message = mido.Message.from_bytes(data)
        except (ValueError, TypeError):
            self.stats.drop("malformed")
            return
        channel = getattr(message, "channel", None)
        if self.config.channel and channel is not None and channel != self.config.channel - 1:
            return
        values = values_of(message)
        if values is None:
            self.stats.drop("unmapped")
            return
        emit(values)

    def run(self, emit: Callable[[Mapping[str, float]], None],
            stopping: threading.Event) -> None:
        # Polled, not a callback: with JACK, rtmidi runs its callback in JACK's real-time
        # process thread, which then waits for the GIL; a busy interpreter makes it miss
        # cycles until JACK drops the client. Unpolled messages wait in rtmidi's queue.
        midi_in, api, self.description, connected = open_midi_in(self.config)
        log.info("input %s: listening on %s", self.name, self.description)
        next_check = heard = time.monotonic()
        try:
            while not stopping.is_set():
                event = midi_in.get_message()
                if event is None:
                    stopping.wait(POLL_S)
                    now = time.monotonic()
                    silence = self.reopen_after_silence_s
                    if silence is not None and now - heard > silence:
                        raise InputEnded(f"{self.description}: nothing heard for "
                                         f"{silence:g} s; reopening")
                    if now >= next_check:
                        next_check = now + HEALTH_CHECK_S
                        ports = current_ports(api, rtmidi.MidiIn) if connected else None
                        if ports is not None and connected not in ports:
                            raise ConnectionError(f"{self.description} went away")
                    continue
                heard = time.monotonic()
                try:
                    self.handle(event[0], emit)
                except Exception:  # one odd message must not end the input
                    self.stats.drop("error")
                    log.debug("input %s: could not handle %r", self.name, event[0],
                              exc_info=True)
        finally:
            midi_in.close_port()
            midi_in.delete()


# ---------------------------------------------------------------- livegen learn

def learned_rule(source: str, target: str) -> str:
    """The TOML text of a [[map]] entry from `source` (INPUT.KEY) to `target`."""
    return f'\n[[map]]\nsource = "{source}"\ntarget = "{target}"\n'


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
