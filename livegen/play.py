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
from collections.abc import Iterator, Sequence

from livegen import config
from livegen.errors import LivegenError
from livegen.music.events import Note, read_midi
from livegen.output import NOTE_OFF, NOTE_ON, Output
from livegen.timeline import Message, Timeline

log = logging.getLogger(__name__)

LEAD_IN_S = 0.5          # from start-up to the first note: ports get connected meanwhile
REFILL_BEFORE_S = 1.0    # when looping, plan the next pass this long before one ends
MIN_NOTE_S = 0.001       # a zero-length note still gets its note-off after its note-on


def note_messages(notes: Sequence[Note], channel: int) -> list[tuple[float, Message]]:
    """Notes -> (seconds, message) on `channel` (1..16), in time order; at the same time
    note-offs come first, so a note struck again on the same pitch is not cut short."""
    ch = channel - 1
    timed: list[tuple[float, int, Message]] = []
    for note in notes:
        timed.append((note.start, 1, (NOTE_ON | ch, note.pitch, note.velocity)))
        end = max(note.end, note.start + MIN_NOTE_S)
        timed.append((end, 0, (NOTE_OFF | ch, note.pitch, 0)))
    timed.sort(key=lambda item: (item[0], item[1]))
    return [(t, message) for t, _, message in timed]


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
    try:
        notes = read_midi(args.file)
    except (OSError, ValueError) as exc:
        raise LivegenError(f"play: {exc}") from None
    if not notes:
        raise LivegenError(f"play: {args.file} has no notes to play")
    plan = note_messages(notes, cfg.output.channel)
    length = plan[-1][0]
    sys.setswitchinterval(cfg.engine.switch_interval_ms / 1000)
    timeline = Timeline()
    with stop_on_signals() as stop, Output.open(cfg.output, timeline) as output:
        log.info("playing %s: %d notes, %.1f s, to %s", args.file, len(notes), length,
                 ", ".join(output.sink_names) or "nothing")
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
