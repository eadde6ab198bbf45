"""`livegen render`: a trace played through the engine on a virtual clock, into a MIDI file.

The same Engine hands the replay to the same Mapper, whose Controls go to the same
StepPlayer (planning, placing changes, rollback) and generator as in `livegen run
--replay`; only the clock differs. Time here is virtual: it jumps from one hand-over to
the next in steps shorter than the lookahead (so the plan never runs dry), the player
catches up synchronously at each, and what falls due goes to the file at its due time. No
MIDI port is opened and no thread waits on the wall clock, so the render is faster than
real time and the same on every run; and since a replay's music depends only on the
trace's times (engine.py), it is the music a real-time replay plays on a quiet machine,
each onset there late by its send lateness.

The file is laid out as the daemon's recorder lays out a replay's: time 0 is the start-up
all-notes-off, the music starts REPLAY_START_LEAD_S later, and the notes still sounding at
the end are ended there, then all-notes-off.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from rtmidi.midiconstants import NOTE_OFF, NOTE_ON

from livegen import config as config_module
from livegen.config import Config, OutputConfig
from livegen.engine import Engine, RunOptions
from livegen.errors import LivegenError
from livegen.generators.step import StepPlayer
from livegen.ledger import NoteLedger, note_off, note_slot
from livegen.output import RELEASE_TAG_PREFIX
from livegen.panic import panic_messages
from livegen.sinks import MidiFileRecorder
from livegen.timeline import Event, Message

log = logging.getLogger(__name__)

# The longest jump of the virtual clock, as a share of the lookahead: the plan, which
# reaches a lookahead ahead at every stop, is then never overtaken by the playhead.
STRIDE_OF_LOOKAHEAD = 0.25


class VirtualClock:
    """A clock that stands still until it is moved: seconds, like time.monotonic."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RenderedMidi:
    """What the output thread does with the messages that fall due, at their due times:
    the same note ledger (livegen/ledger.py: a note-on for a sounding note ends it first,
    and one of its note-offs is then swallowed; notes held longer than output.max_note_s
    are released, here each at its own moment), into the daemon's own MidiFileRecorder."""

    def __init__(self, path: Path, cfg: OutputConfig) -> None:
        self.cfg = cfg
        self.recorder = MidiFileRecorder(path)
        self.ledger = NoteLedger()
        self.notes = 0

    def send(self, message: Message, t: float) -> None:
        self.recorder.send(message, t)

    def play(self, event: Event) -> None:
        message, t = event.message, event.due
        if not message:  # Output.release_at(): the tag's notes end here
            self.release(event.tag.removeprefix(RELEASE_TAG_PREFIX), t)
            return
        self._release_long_notes(t)
        kind = message[0] & 0xF0
        if kind == NOTE_ON and message[2]:
            self.notes += 1
            key = note_slot(message[0], message[1])
            if self.ledger.strike(key, t, event.tag):
                self.send(note_off(key), t)
        elif kind in (NOTE_ON, NOTE_OFF) and not self.ledger.lift(
                note_slot(message[0], message[1])):
            return
        self.send(message, t)

    def _release_long_notes(self, t: float) -> None:
        """Release the notes due for it by `t`, each at its own moment, in time order."""
        for struck, message in self.ledger.held_since(t - self.cfg.max_note_s):
            self.send(message, struck + self.cfg.max_note_s)

    def release(self, tag: str, t: float) -> None:
        """End every note `tag` started (a generator that failed or stalled)."""
        for message in self.ledger.release(tag):
            self.send(message, t)

    def close(self, t: float) -> None:
        """End the sounding notes at `t`, then all-notes-off, and write the file."""
        self._release_long_notes(t)
        for message in [*self.ledger.release_all(), *panic_messages(self.cfg.panic_channels)]:
            self.send(message, t)
        self.recorder.close()


@dataclass(frozen=True, slots=True)
class Rendered:
    notes: int          # note-ons written
    seconds: float      # of music
    wall_s: float       # time the render took


def render(cfg: Config, trace: Path, out: Path, *, seed: int | None = None,
           duration: float | None = None) -> Rendered:
    """Play `trace` (replacing every input of `cfg`, as `run --replay` does) for
    `duration` seconds (default: up to its last reading) into the MIDI file `out`."""
    started = time.perf_counter()
    engine = Engine(cfg, RunOptions(replay=trace, seed=seed))
    clock = VirtualClock()
    generators = engine.load_generators()  # a bad model fails before a file is begun
    midi = RenderedMidi(out, cfg.output)
    for message in panic_messages(cfg.output.panic_channels):
        midi.send(message, clock.now)
    engine.origin = clock.now + engine.start_lead_s
    engine.clock.anchor(engine.origin)
    players = engine.make_players(generators, release=lambda tag: midi.release(tag, clock()),
                                  clock=clock)
    if not all(isinstance(player, StepPlayer) for player in players):
        raise LivegenError("render plays step generators (the Char-RNN) on a virtual clock;"
                           " a segment generator plays in `livegen run --replay` only")
    replay = engine.open_replay()
    seconds = duration if duration is not None else replay.length
    if not seconds > 0:
        raise LivegenError(f"render: the trace {trace} holds no readings after 0 s; give "
                           "the length to render with --duration SECONDS")
    end = engine.origin + seconds
    for player in players:
        player.begin(engine.origin, end)
    stride = STRIDE_OF_LOOKAHEAD * cfg.engine.lookahead_ms / 1e3

    def advance(to: float) -> None:
        """Move the clock to `to` (never back), the players planning as they go and what
        falls due going to the file."""
        while True:
            for player in players:
                player.catch_up()
            for event in engine.timeline.pop_due(clock.now):
                midi.play(event)
            if clock.now >= to:
                return
            clock.now = min(to, clock.now + stride)

    # Each hand-over happens when the generator is resumed, after the clock has reached
    # its time; advance() then lets the players take it before the clock moves on.
    for due in engine.replay_handovers(replay):
        if due >= end:
            break
        advance(due)
    advance(end)
    midi.close(end)
    wall = time.perf_counter() - started
    late = sum(p.stats.late + p.stats.stalls + p.stats.late_changes for p in players)
    if late:  # cannot happen on a virtual clock; if it does, the render is not exact
        log.warning("render: %d changes or steps were late; the render may differ from a "
                    "replay", late)
    return Rendered(notes=midi.notes, seconds=seconds, wall_s=wall)


def render_command(args: argparse.Namespace) -> int:
    if args.duration is not None and not args.duration > 0:
        raise LivegenError(f"render: --duration {args.duration:g}: give more than 0 seconds")
    cfg = config_module.load(args.config)
    done = render(cfg, args.replay, args.out, seed=args.seed, duration=args.duration)
    print(f"render: {done.notes} notes, {done.seconds:.1f} s of music written to {args.out} "
          f"in {done.wall_s:.2f} s")
    return 0
