"""The output thread: where planned MIDI becomes sound.

The output thread takes messages from the timeline when they are due and sends them to
every sink (sinks.py: livegen's port, connections to existing ports, a MIDI-file
recorder). Timing (precise.py): it sleeps (releasing the GIL) until
`spin_ms` before the next due time, then waits out the rest in `clock_nanosleep` while
holding the GIL, so that no other Python thread can be running at the due time; it records
each message's send lateness (actual minus due) in a preallocated ring buffer.

The note ledger (ledger.py) makes sure every note that was turned on is turned off: on stop, on
SIGINT/SIGTERM (callers stop the output), on exceptions, when a generator is released,
and when a note has sounded longer than output.max_note_s. A sink that fails is set aside
and reopened with backoff by a keeper thread while the others carry on.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rtmidi.midiconstants import NOTE_OFF, NOTE_ON

from livegen.config import OutputConfig
from livegen.errors import LivegenError
from livegen.inputs.base import Backoff
from livegen.ledger import NoteLedger, note_off, note_slot
from livegen.panic import BURST_PAUSE_S, panic_messages
from livegen.ports import NoMidiSystemError, jack_serves
from livegen.precise import PreciseSleep, thread_timer_slack
from livegen.sinks import (
    JackConnection,
    MidiFileRecorder,
    PortSink,
    Sink,
    open_connection,
    open_virtual_port,
)
from livegen.stats import Samples
from livegen.timeline import Event, Message, Timeline

log = logging.getLogger(__name__)

LATENESS_RING = 1 << 16      # send lateness of the last 65536 messages
RT_PRIORITY = 2              # SCHED_FIFO: above every normal thread, below JACK's clients
                             # (the server's priority - 5: 5 for jackd's default 10)
WAKE_TOLERANCE_S = 0.0005   # a coarse wake this much early still goes on to the hold
KEEPER_TICK_S = 0.25         # how often the keeper checks sinks and retries failed ones
REOPEN_BACKOFF = Backoff(first=0.5, factor=2.0, cap=8.0)  # a failed sink's next tries
BURST = 256                  # messages sent in one go before letting the MIDI server drain
RELEASE_TAG_PREFIX = "release:"  # a timeline event that ends a tag's notes (release_at)
CONNECT_CLIENT = "livegen-connect"  # the port connections start from when output.port is ""


def _opened(sink: Sink, reopen: Callable[[], Sink]) -> Callable[[], Sink]:
    """An opener that hands out an already opened sink once, then opens anew."""
    first = [sink]

    def opener() -> Sink:
        return first.pop() if first else reopen()

    return opener


# ---------------------------------------------------------------- the output

@dataclass(frozen=True, slots=True)
class OutputStats:
    """Figures for --stats. Lateness in milliseconds over the last 65536 messages."""

    messages: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    notes_sounding: int
    notes_released: int      # by output.max_note_s
    sink_failures: int
    sinks_down: int
    realtime: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Slot:
    """One sink and how to (re)open it."""

    name: str
    opener: Callable[[], Sink]
    is_port: bool
    sink: Sink | None = None
    dead: list[Sink] = field(default_factory=list)
    retry_at: float = 0.0
    failed_opens: int = 0  # reopen attempts that failed since it last worked
    failures: int = 0


class Output:
    """Sends the timeline's messages at their due times to every sink; keeps the ledger.

    Use `Output.open(cfg, timeline)` (sinks from the config) or give `openers` (functions
    that open a sink; each is called again to reopen it after a failure). Then `start()`
    (or `with`), and `close()` at the end: every sounding note is ended.
    """

    def __init__(self, cfg: OutputConfig, timeline: Timeline | None = None, *,
                 openers: Sequence[Callable[[], Sink]] = (),
                 pending: Sequence[tuple[str, Callable[[], Sink]]] = ()) -> None:
        """Open every sink now (errors raise here, at start-up, not mid-show). `pending`
        names port sinks that could not be opened yet: the keeper keeps trying them."""
        self.cfg = cfg
        self.timeline = timeline if timeline is not None else Timeline()
        self._slots: list[_Slot] = []
        try:
            for opener in openers:
                sink = opener()
                is_port = not isinstance(sink, MidiFileRecorder)
                self._slots.append(_Slot(sink.name, opener, is_port, sink))
        except BaseException:
            self._close_sinks()
            raise
        for name, opener in pending:
            self._slots.append(_Slot(name, opener, True))
        self._slot_lock = threading.Lock()
        self._ledger = NoteLedger()
        self._releases: deque[str] = deque()
        self._lateness = Samples(LATENESS_RING)
        self._sent = 0
        self._notes_released = 0
        self._sink_failures = 0
        self._realtime = False
        self._lead = cfg.spin_ms / 1000.0
        self._check_every = min(0.05, cfg.max_note_s / 4)
        self._stopping = False
        self._notes_ended = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()

    @classmethod
    def open(cls, cfg: OutputConfig, timeline: Timeline | None = None, *,
             record: str | os.PathLike[str] | None = None) -> Output:
        """The outputs the config names: the virtual port, each `connect` port and the
        recorder (output.record, or `record` when given).

        When no MIDI system is reachable: with output.require_port, raises
        NoMidiSystemError; otherwise warns and plays to the file only. A `connect` port
        that is missing is an error with require_port, else a warning (it is retried).
        """
        record_path = Path(record) if record is not None else cfg.record
        openers: list[Callable[[], Sink]] = []
        pending: list[tuple[str, Callable[[], Sink]]] = []
        api = cfg.api  # 'auto' is settled by the first port opened, then kept for reopening
        opened: list[Sink] = []
        own_port = [""]  # the full name of livegen's own port, as (re)opened

        def open_own(api: str, name: str) -> PortSink:
            sink = open_virtual_port(api, name)
            own_port[0] = sink.port
            return sink

        try:
            # With JACK, connections start from a port of livegen's own (one client).
            own_name = cfg.port or (CONNECT_CLIENT if cfg.connect and jack_serves(api)
                                    else "")
            if own_name:
                sink = open_own(api, own_name)
                opened.append(sink)
                api = sink.api
                openers.append(_opened(sink, functools.partial(open_own, api, own_name)))
            for pattern in cfg.connect:
                if api == "jack":
                    connect = functools.partial(JackConnection, lambda: own_port[0], pattern)
                else:
                    connect = functools.partial(open_connection, api, pattern)
                try:
                    sink = connect()
                except NoMidiSystemError:
                    raise
                except LivegenError as exc:
                    if cfg.require_port:
                        raise
                    log.warning("%s; trying again in the background", exc)
                    pending.append((f"connection to {pattern!r}", connect))
                else:
                    opened.append(sink)
                    api = sink.api
                    openers.append(_opened(sink, connect))
        except NoMidiSystemError as exc:
            if cfg.require_port or opened:
                for sink in opened:
                    sink.close()
                raise
            where = f"playing to {record_path} only" if record_path else (
                "nothing will sound or be recorded")
            log.warning("%s; %s", exc, where)
        except BaseException:
            for sink in opened:
                sink.close()
            raise
        if record_path is not None:
            openers.append(lambda: MidiFileRecorder(record_path))
        return cls(cfg, timeline, openers=openers, pending=pending)

    # ------------------------------------------------------------ control (any thread)

    @property
    def has_port(self) -> bool:
        """True when at least one MIDI port (not only a file) is among the sinks."""
        return any(slot.is_port for slot in self._slots)

    @property
    def sink_names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    @property
    def alive(self) -> bool:
        """True while the output thread runs (started, not closed, not dead)."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        """All-notes-off on output.panic_channels (an earlier run may have been killed),
        then start the output thread and the sink keeper."""
        if self._thread is not None:
            return
        self._emit_burst(panic_messages(self.cfg.panic_channels))
        self._thread = threading.Thread(target=self._run, name="livegen-output", daemon=True)
        self._keeper = threading.Thread(target=self._keep_sinks, name="livegen-sinks",
                                        daemon=True)
        self._thread.start()
        self._keeper.start()
        # A daemon thread dies silently at interpreter exit; closing first ends the notes.
        atexit.register(self.close)

    def release(self, tag: str) -> None:
        """End every note `tag` started and drop its pending events (generator failure)."""
        self.timeline.drop_tag(tag)
        self._releases.append(tag)
        self.timeline.wake()

    def release_at(self, tag: str, due: float) -> None:
        """End every note `tag` has sounding at monotonic time `due` (switch mode: the
        outgoing generator at the bar line), as precisely as a message is sent."""
        self.timeline.add(due, (), RELEASE_TAG_PREFIX + tag)

    def stats(self) -> OutputStats:
        p50, p99, worst = self._lateness.percentiles()
        return OutputStats(
            messages=self._sent, lateness_p50_ms=p50, lateness_p99_ms=p99,
            lateness_max_ms=worst, notes_sounding=len(self._ledger),
            notes_released=self._notes_released, sink_failures=self._sink_failures,
            sinks_down=0 if self._closed else sum(1 for s in self._slots if s.sink is None),
            realtime=self._realtime)

    def lateness(self) -> np.ndarray:
        """Send lateness in seconds of the last messages sent (up to 65536), oldest first."""
        return self._lateness.values()

    def close(self) -> None:
        """Stop: note-offs for every sounding note, all-notes-off on output.panic_channels,
        then close the sinks (the recorder writes its file). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._stopping = True
        self.timeline.wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.error("output thread did not stop within 2 s; ending notes from here")
        if not self._notes_ended:
            self._end_notes()
        self._keeper_stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=2.0)
        self._close_sinks()

    def __enter__(self) -> Output:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ the output thread

    def _run(self) -> None:
        self._thread_setup()
        sleep = PreciseSleep()
        monotonic = time.monotonic
        timeline = self.timeline
        lead = self._lead
        next_check = monotonic() + self._check_every
        try:
            while not self._stopping:
                try:
                    if self._releases:
                        self._end_released()
                    timeout = None
                    if self._ledger:
                        now = monotonic()
                        if now >= next_check:
                            self._release_long_notes(now)
                            next_check = now + self._check_every
                        timeout = max(0.0, next_check - now)
                    head = timeline.wait(lead, timeout)
                    # The tolerance: a wait that ends a little early must not cost a
                    # second round of giving up and taking back the GIL.
                    if (self._stopping or head is None
                            or head - monotonic() > lead + WAKE_TOLERANCE_S):
                        continue
                    sleep.until(head)
                    for event in timeline.pop_due(monotonic()):
                        self._play(event)
                except Exception:
                    # A bug here must not silence the show: log it, carry on.
                    log.exception("output thread: unexpected error; carrying on")
                    time.sleep(0.01)
        finally:
            self._send_what_was_due()
            self._end_notes()

    def _send_what_was_due(self) -> None:
        """At the stop, what was already due still goes out (a MIDI clock stop queued at
        the moment of shutdown, a control change, note-offs), except note-ons: they would
        only be ended at once. Without this a stop that caught the thread between waking
        and taking its events lost them."""
        for event in self.timeline.pop_due(time.monotonic()):
            message = event.message
            if message and (message[0] & 0xF0) == NOTE_ON and message[2]:
                continue
            try:
                self._play(event)
            except Exception:
                log.exception("output thread: unexpected error at the stop; carrying on")

    def _thread_setup(self) -> None:
        thread_timer_slack(1)
        switch_ms = sys.getswitchinterval() * 1000
        if self.cfg.spin_ms < 1.2 * switch_ms:
            log.warning("output.spin_ms (%.2f ms) is shorter than 1.2 x Python's switch "
                        "interval (%.2f ms): messages may be late when other threads are "
                        "busy; lower engine.switch_interval_ms or raise output.spin_ms",
                        self.cfg.spin_ms, switch_ms)
        if not self.cfg.realtime:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        except (OSError, AttributeError) as exc:
            log.warning("output thread: no real-time priority (SCHED_FIFO: %s); timing may "
                        "suffer under load (allow it: LimitRTPRIO= in the service, or "
                        "rtprio in /etc/security/limits.d)", getattr(exc, "strerror", exc))
        else:
            self._realtime = True
            log.info("output thread: real-time priority (SCHED_FIFO %d)", RT_PRIORITY)

    def _play(self, event: Event) -> None:
        message = event.message
        if not message:  # release_at(): end a tag's notes now
            self._releases.append(event.tag.removeprefix(RELEASE_TAG_PREFIX))
            self._end_released()
            return
        status = message[0]
        kind = status & 0xF0
        now = time.monotonic()
        if kind == NOTE_ON and message[2]:
            key = note_slot(status, message[1])
            if self._ledger.strike(key, now, event.tag):
                self._emit(note_off(key), now)  # struck again: end it first
        elif kind in (NOTE_ON, NOTE_OFF) and not self._ledger.lift(note_slot(status, message[1])):
            return
        self._lateness.record(now - event.due)
        self._emit(message, now)

    def _emit(self, message: Message, t: float) -> None:
        for slot in self._slots:
            sink = slot.sink
            if sink is None:
                continue
            try:
                sink.send(message, t)
            except Exception as exc:
                self._sink_failed(slot, sink, exc)
        self._sent += 1

    def _emit_burst(self, messages: Sequence[Message]) -> None:
        """Send many messages at once, pausing so the MIDI server's buffers can drain."""
        for start in range(0, len(messages), BURST):
            if start:
                time.sleep(BURST_PAUSE_S)
            for message in messages[start:start + BURST]:
                self._emit(message, time.monotonic())

    def _release_long_notes(self, now: float) -> None:
        for _, message in self._ledger.held_since(now - self.cfg.max_note_s):
            self._notes_released += 1
            self._emit(message, now)

    def _end_released(self) -> None:
        while self._releases:
            for message in self._ledger.release(self._releases.popleft()):
                self._emit(message, time.monotonic())

    def _end_notes(self) -> None:
        """Note-offs for every sounding note, then all-notes-off: the stop guarantee."""
        self._notes_ended = True
        offs = self._ledger.release_all()
        self._emit_burst(offs + panic_messages(self.cfg.panic_channels))
        if offs:
            log.info("output: ended %d sounding notes", len(offs))

    # ------------------------------------------------------------ sink failures

    def _sink_failed(self, slot: _Slot, sink: Sink, reason: object) -> None:
        with self._slot_lock:
            if slot.sink is not sink:
                return
            slot.sink = None
            slot.dead.append(sink)
            slot.failures += 1
            slot.retry_at = time.monotonic() + REOPEN_BACKOFF.delay(1)
            self._sink_failures += 1
        log.warning("output: %s failed (%s); reopening it, the other outputs carry on",
                    slot.name, reason)

    def _keep_sinks(self) -> None:
        while not self._keeper_stop.wait(KEEPER_TICK_S):
            for slot in self._slots:
                sink = slot.sink
                if sink is not None:
                    healthy = getattr(sink, "healthy", None)
                    try:
                        ok = healthy is None or healthy()
                    except Exception as exc:
                        ok = False
                        log.debug("output: health check of %s: %s", slot.name, exc)
                    if not ok:
                        self._sink_failed(slot, sink, "its MIDI server or port went away")
                elif time.monotonic() >= slot.retry_at:
                    self._reopen(slot)

    def _reopen(self, slot: _Slot) -> None:
        for dead in slot.dead:
            with contextlib.suppress(Exception):
                dead.close()
        slot.dead.clear()
        try:
            sink = slot.opener()
        except Exception as exc:
            slot.failed_opens += 1
            slot.retry_at = time.monotonic() + REOPEN_BACKOFF.delay(slot.failed_opens + 1)
            log.debug("output: reopening %s failed (%s); next try in %.1f s", slot.name,
                      exc, slot.retry_at - time.monotonic())
            return
        # Notes that were sounding on it are considered ended: make sure they are.
        for message in panic_messages(self.cfg.panic_channels):
            with contextlib.suppress(Exception):
                sink.send(message, time.monotonic())
        slot.failed_opens = 0
        slot.name = sink.name
        slot.sink = sink
        log.info("output: %s reopened", slot.name)

    def _close_sinks(self) -> None:
        for slot in self._slots:
            for sink in [*slot.dead, slot.sink]:
                if sink is None:
                    continue
                try:
                    sink.close()
                except Exception:
                    log.exception("output: closing %s failed", getattr(sink, "name", sink))
            slot.dead.clear()
            slot.sink = None


# ---------------------------------------------------------------- livegen panic
