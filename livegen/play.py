"""`livegen play FILE.mid`: play a MIDI file through the configured output.

Useful to test a rig (port, connections, synth, recorder) without generators, and the
process the tests stop with SIGTERM mid-stream: SIGINT and SIGTERM stop it cleanly, with
every sounding note ended and exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mido
from rtmidi.midiconstants import NOTE_ON

from livegen import config
from livegen.errors import LivegenError
from livegen.output import Output
from livegen.ports import JACK_FIX
from livegen.timeline import Message, Timeline

log = logging.getLogger(__name__)

LEAD_IN_S = 0.5          # from start-up to the first note: ports get connected meanwhile
REFILL_BEFORE_S = 1.0    # when looping, plan the next pass this long before one ends
MIN_NOTE_S = 0.001       # a loop's next pass starts this long after the last message


def file_messages(path: str | Path, channel: int | None = None) -> list[tuple[float, Message]]:
    """The channel messages of a MIDI file (notes, controllers, programs, bends) as
    (seconds from the start, bytes), through the file's tempo map, each on its own channel
    (drums on 10 included), or all moved to `channel` (1..16) when given. Meta events and
    sysex are left out."""
    try:
        midi = mido.MidiFile(filename=str(path))
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise LivegenError(f"play: {path}: not a readable MIDI file ({exc})") from None
    if midi.type == 2:
        raise LivegenError(f"play: {path}: MIDI type 2 (independent sequences) is not "
                           "supported")
    plan: list[tuple[float, Message]] = []
    t = 0.0
    for message in midi:  # .time: seconds since the previous message, tempo map applied
        t += message.time
        if message.is_meta or not hasattr(message, "channel"):
            continue
        if channel is not None:
            message = message.copy(channel=channel - 1)
        plan.append((t, tuple(message.bytes())))
    return plan


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """While the block runs, SIGINT and SIGTERM set the yielded event instead of ending the
    process, so the caller can stop its output (and end every note) on the way out."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def play_command(args: argparse.Namespace) -> int:
    """Play `args.file` through the config's output; with `args.loop` until signalled."""
    cfg = config.load(args.config)
    plan = file_messages(args.file, args.channel)
    notes = sum(1 for _, m in plan if m[0] & 0xF0 == NOTE_ON and m[2])
    if not notes:
        raise LivegenError(f"play: {args.file} has no notes to play")
    length = plan[-1][0] + MIN_NOTE_S
    sys.setswitchinterval(cfg.engine.switch_interval_ms / 1000)
    timeline = Timeline()
    with stop_on_signals() as stop, Output.open(cfg.output, timeline) as output:
        if not output.sink_names:
            raise LivegenError("play: nothing to play to (no MIDI system and no "
                               f"output.record); {JACK_FIX} or set output.record")
        channels = sorted({m[0] & 0x0F for _, m in plan})
        log.info("playing %s: %d notes on channel%s %s, %.1f s, to %s", args.file, notes,
                 "s" if len(channels) > 1 else "", ",".join(str(c + 1) for c in channels),
                 length, ", ".join(output.sink_names))
        start = time.monotonic() + LEAD_IN_S
        while True:
            timeline.add_many(((start + t, message) for t, message in plan), tag="play")
            end = start + length
            if not args.loop:
                stop.wait(max(0.0, end - time.monotonic()) + 0.05)
                break
            if stop.wait(max(0.0, end - REFILL_BEFORE_S - time.monotonic())):
                break
            start = end
        stats = output.stats()
    log.info("sent %d messages; send lateness p50 %.3f ms, p99 %.3f ms",
             stats.messages, stats.lateness_p50_ms, stats.lateness_p99_ms)
    return 0
