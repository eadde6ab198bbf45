"""All notes off: what the output sends at start and stop, and `livegen panic`, which
reaches what a running livegen plays to."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterable, Sequence

from rtmidi.midiconstants import ALL_NOTES_OFF, CONTROL_CHANGE, NOTE_OFF, SUSTAIN

from livegen.config import Config, OutputConfig
from livegen.errors import LivegenError
from livegen.ports import (
    current_ports,
    jack_connect,
    jack_connections,
    jack_port_names,
    jack_serves,
    match_ports,
)
from livegen.sinks import PortSink, Sink, find_destination, open_connection, open_virtual_port
from livegen.timeline import Message

BURST_PAUSE_S = 0.003  # > 2 JACK periods at 64 frames: rtmidi's 16 KiB buffer empties


def panic_messages(channels: Iterable[int], every_note: bool = False) -> list[Message]:
    """Sustain off and all-notes-off (CC 64 = 0, CC 123) on each channel (1..16), after
    explicit note-offs for all 128 notes when `every_note` (for synths that ignore CC 123)."""
    messages: list[Message] = []
    for channel in channels:
        ch = channel - 1
        if every_note:
            messages.extend((NOTE_OFF | ch, pitch, 0) for pitch in range(128))
        messages.append((CONTROL_CHANGE | ch, SUSTAIN, 0))
        messages.append((CONTROL_CHANGE | ch, ALL_NOTES_OFF, 0))
    return messages


PANIC_SETTLE_S = 0.3   # a new virtual port: give patchbays a moment to connect it
PANIC_GROUP = 32       # messages sent together: well inside one JACK period's MIDI buffer
PANIC_PAUSE_S = 0.002  # between groups: more than a period at 64 frames, so a receiver
                       # polling its queue keeps up (one burst of 2,080 overflowed one)


def panic_plan(cfg: Config, every_note: bool = False) -> list[Message]:
    """What `livegen panic` sends: sustain off and all-notes-off on every panic channel
    first (what stops a synth at once), then note-offs for the 128 notes on the channels
    livegen plays on, for synths that ignore CC 123 (on every panic channel with
    `every_note`)."""
    played = {cfg.output.channel} | {
        channel for name in cfg.playing if (channel := cfg.generator(name).channel)}
    note_channels = cfg.output.panic_channels if every_note else sorted(played)
    messages = panic_messages(cfg.output.panic_channels)
    for channel in note_channels:
        messages.extend((NOTE_OFF | channel - 1, pitch, 0) for pitch in range(128))
    return messages


def _daemon_destinations(port: str) -> dict[str, list[str]]:
    """The JACK ports that a running livegen with virtual port `port` plays to: for each
    of its ports (`port:out`, or `port-01:out`... when the name was taken), the ports it
    is connected to."""
    names = jack_port_names() or []
    own = re.compile(rf"^{re.escape(port)}(-\d\d)?:out$")
    return {name: jack_connections(name) or [] for name in names if own.match(name)}


def _send_paced(sinks: Sequence[Sink], messages: Sequence[Message]) -> None:
    for start in range(0, len(messages), PANIC_GROUP):
        if start:
            time.sleep(PANIC_PAUSE_S)
        for message in messages[start:start + PANIC_GROUP]:
            for sink in sinks:
                sink.send(message, 0.0)
    time.sleep(max(BURST_PAUSE_S, PANIC_PAUSE_S))  # let the last group leave


def panic_command(args: argparse.Namespace) -> int:
    """`livegen panic [--port NAME] [--every-note]`: sustain off and all-notes-off on
    output.panic_channels, then note-offs where livegen plays, paced, to what livegen
    plays to. With JACK: every port a running livegen's port is connected to, and each
    output.connect port; `--port` names one existing port instead. Without a running
    daemon and connections, a fresh virtual port named like the config's."""
    from livegen import config

    cfg = config.load(args.config)
    out = cfg.output
    messages = panic_plan(cfg, every_note=args.every_note)
    if jack_serves(out.api):
        return _panic_jack(args, out, messages)
    sinks: list[PortSink] = []
    try:
        if args.port:
            sinks.append(open_connection(out.api, args.port, "livegen-panic", "panic --port"))
        else:
            sinks.extend(open_connection(out.api, pattern, "livegen-panic")
                         for pattern in out.connect)
            if not sinks:
                if not out.port:
                    raise LivegenError("panic: the config has no output port "
                                       "(output.port and output.connect are empty); "
                                       "name one with --port")
                sinks.append(open_virtual_port(out.api, out.port))
                time.sleep(PANIC_SETTLE_S)
        _send_paced(sinks, messages)
    finally:
        for sink in sinks:
            sink.close()
    for sink in sinks:
        print(f"panic: {len(messages)} messages -> {sink.name}")
    return 0


def _panic_jack(args: argparse.Namespace, out: OutputConfig,
                messages: list[Message]) -> int:
    ports = current_ports("jack") or []
    if args.port:
        targets = [find_destination("jack", args.port, "panic --port", ports)]
        why = "--port"
    else:
        running = _daemon_destinations(out.port) if out.port else {}
        targets = sorted({t for connected in running.values() for t in connected})
        for pattern in out.connect:
            targets.extend(t for t in match_ports(ports, pattern)[:1] if t not in targets)
        why = (f"what {', '.join(running)} plays to" if running
               else "output.connect" if targets else "")
    sink = open_virtual_port("jack", "livegen-panic")
    try:
        if targets:
            for target in targets:
                jack_connect(sink.port, target)
        else:
            if not out.port:
                raise LivegenError("panic: no running livegen and no output.connect port "
                                   "to send to; name one with --port")
            time.sleep(PANIC_SETTLE_S)  # only patchbays that connect new ports will hear
        _send_paced([sink], messages)
    finally:
        sink.close()
    print(f"panic: {len(messages)} messages -> "
          f"{', '.join(targets) if targets else sink.port + ' (nothing connected)'}"
          f"{f' ({why})' if why else ''}")
    return 0
