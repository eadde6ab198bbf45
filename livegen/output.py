"""The output thread, the note ledger and the sinks: where planned MIDI becomes sound.

The output thread takes messages from the timeline when they are due and sends them to
every sink: livegen's virtual port (python-rtmidi on JACK, ALSA or CoreMIDI), connections
to existing ports, and a MIDI-file recorder. Timing: it sleeps (releasing the GIL) until
`spin_ms` before the next due time, then waits out the rest in `clock_nanosleep` while
holding the GIL, so that no other Python thread can be running at the due time; it records
each message's send lateness (actual minus due) in a preallocated ring buffer.

The note ledger makes sure every note that was turned on is turned off: on stop, on
SIGINT/SIGTERM (callers stop the output), on exceptions, when a generator is released,
and when a note has sounded longer than output.max_note_s. A sink that fails is set aside
and reopened with backoff by a keeper thread while the others carry on.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from livegen.config import Config, OutputConfig
from livegen.errors import LivegenError
from livegen.ledger import NoteLedger, note_off, note_slot
from livegen.ports import (
    JACK_TOOLS_FIX,
    JackServerWatch,
    NoMidiSystemError,
    close_client,
    current_ports,
    free_jack_client_name,
    jack_connect,
    jack_connections,
    jack_disconnect,
    jack_port_names,
    jack_serves,
    match_ports,
    midi_client,
)
from livegen.stats import Samples
from livegen.timeline import Event, Message, Timeline

log = logging.getLogger(__name__)

NOTE_OFF = 0x80
NOTE_ON = 0x90
CONTROL_CHANGE = 0xB0
CC_SUSTAIN = 64
CC_ALL_NOTES_OFF = 123

LATENESS_RING = 1 << 16      # send lateness of the last 65536 messages
RT_PRIORITY = 2              # SCHED_FIFO: above every normal thread, below JACK's clients
                             # (the server's priority - 5: 5 for jackd's default 10)
WAKE_TOLERANCE_S = 0.0005   # a coarse wake this much early still goes on to the hold
KEEPER_TICK_S = 0.25         # how often the keeper checks sinks and retries failed ones
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
BURST = 256                  # messages sent in one go before letting the MIDI server drain
BURST_PAUSE_S = 0.003        # > 2 JACK periods at 64 frames: rtmidi's 16 KiB buffer empties
CONNECTION_CHECK_S = 2.0     # how often a JACK connection is checked (jack_lsp, a process)
RELEASE_TAG_PREFIX = "release:"  # a timeline event that ends a tag's notes (release_at)
CONNECT_CLIENT = "livegen-connect"  # the port connections start from when output.port is ""


def panic_messages(channels: Iterable[int], every_note: bool = False) -> list[Message]:
    """Sustain off and all-notes-off (CC 64 = 0, CC 123) on each channel (1..16), after
    explicit note-offs for all 128 notes when `every_note` (for synths that ignore CC 123)."""
    messages: list[Message] = []
    for channel in channels:
        ch = channel - 1
        if every_note:
            messages.extend((NOTE_OFF | ch, pitch, 0) for pitch in range(128))
        messages.append((CONTROL_CHANGE | ch, CC_SUSTAIN, 0))
        messages.append((CONTROL_CHANGE | ch, CC_ALL_NOTES_OFF, 0))
    return messages


# ---------------------------------------------------------------- sinks

class Sink(Protocol):
    """Where messages go. `send` is called from the output thread only and must not block
    or do file I/O; `t` is the monotonic time of sending. A sink that raises is closed and
    reopened. `healthy()` (optional) lets the keeper notice a failure that sending cannot
    see, such as the JACK server going away."""

    name: str

    def send(self, message: Message, t: float) -> None: ...

    def close(self) -> None: ...


def _drop(message: Message) -> None:
    """Sends nowhere: what a closed port does."""


class PortSink:
    """A python-rtmidi output: livegen's own virtual port, or (ALSA, CoreMIDI) a client
    connected to an existing port (then `target` is that port's full name, checked by the
    keeper). `port` is the port's full name as the MIDI system knows it."""

    def __init__(self, midi_out: Any, api: str, name: str, port: str = "",
                 target: str = "") -> None:
        self.name = name
        self.api = api
        self.port = port
        self.target = target
        self._out = midi_out
        self._send = midi_out.send_message
        self._watch = JackServerWatch() if api == "jack" else None

    def send(self, message: Message, t: float) -> None:
        self._send(message)

    def healthy(self) -> bool:
        """False once the MIDI server went away or the connected port disappeared."""
        if self._watch is not None and not self._watch.alive():
            return False
        if not self.target:
            return True
        ports = current_ports(self.api)
        return ports is None or self.target in ports

    def close(self) -> None:
        out, self._out = self._out, None
        self._send = _drop  # the bound method would keep the client (and its port) alive
        if out is not None:
            close_client(out)
            del out  # the last reference: rtmidi closes the JACK/ALSA client now


def open_virtual_port(api: str, port: str) -> PortSink:
    """Open livegen's virtual output port: a client named `port` with one port, 'out'.
    With JACK, a name in use gets a suffix as JACK would give it (`livegen-01`), chosen
    here so that the name livegen reports is the port's real name."""
    client_name = free_jack_client_name(port) if jack_serves(api) else port
    out, got = midi_client(api, client_name)
    out.open_virtual_port("out")
    if got != "jack":
        client_name = port
    return PortSink(out, got, f"{got} port {client_name}:out", port=f"{client_name}:out")


def _find_destination(api: str, pattern: str, setting: str, ports: list[str]) -> str:
    matches = match_ports(ports, pattern)
    if not matches:
        listed = ", ".join(repr(p) for p in ports) or "none"
        raise LivegenError(f"{setting}: no {api} MIDI port matches {pattern!r} "
                           f"(ports: {listed}); see `livegen devices`")
    if len(matches) > 1:
        log.info("%s %r matches %s; using %r", setting, pattern, ", ".join(matches),
                 matches[0])
    return matches[0]


def open_connection(api: str, pattern: str, client_name: str = "livegen-connect",
                    setting: str = "output.connect") -> PortSink:
    """(ALSA, CoreMIDI) Connect a client of its own to the first existing port that takes
    MIDI in (a synth's input, a DAW's track) whose name contains `pattern`, ignoring case.
    Raises LivegenError, naming `setting` and listing the ports, when none matches. With
    JACK, use JackConnection: one client per process (see livegen.ports)."""
    out, got = midi_client(api, client_name)
    try:
        target = _find_destination(got, pattern, setting, out.get_ports())
    except LivegenError:
        close_client(out)
        raise
    out.open_port(out.get_ports().index(target), "out")
    return PortSink(out, got, f"{got} connection to {target}", target=target)


class JackConnection:
    """A JACK connection from livegen's own port to an existing port found by name.

    Messages sent to the port reach every port it is connected to, so this sink sends
    nothing itself: it makes the connection (through `jack_connect`), and the keeper asks
    it, every `CONNECTION_CHECK_S`, whether the connection still stands, remaking it after
    a JACK restart or when the port comes back."""

    api = "jack"

    def __init__(self, own_port: Callable[[], str], pattern: str,
                 setting: str = "output.connect") -> None:
        ports = current_ports("jack")
        if ports is None:
            raise LivegenError(f"{setting}: cannot list JACK ports: {JACK_TOOLS_FIX}")
        self.source = own_port()
        self.target = _find_destination("jack", pattern, setting, ports)
        jack_connect(self.source, self.target)
        self.name = f"jack connection to {self.target}"
        self._next_check = time.monotonic() + CONNECTION_CHECK_S

    def send(self, message: Message, t: float) -> None:
        """The port itself sends; see the class docstring."""

    def healthy(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + CONNECTION_CHECK_S
        connected = jack_connections(self.source)
        return connected is None or self.target in connected

    def close(self) -> None:
        with contextlib.suppress(LivegenError):
            jack_disconnect(self.source, self.target)


class MidiFileRecorder:
    """Records every message sent into memory (preallocated numpy chunks, no file I/O while
    playing) and writes a type 0 MIDI file at close. Time 0 is the first message."""

    CHUNK = 4096
    TICKS_PER_BEAT = 960
    TEMPO = 500_000  # µs per beat: 120 bpm, so one tick is 0.52 ms

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = f"file {self.path}"
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self._new_chunk()
        self._too_long = 0
        self._closed = False

    def _new_chunk(self) -> None:
        self._times = np.empty(self.CHUNK, np.float64)
        self._bytes = np.full((self.CHUNK, 3), -1, np.int16)  # -1: past a short message
        self._chunks.append((self._times, self._bytes))
        self._i = 0

    def send(self, message: Message, t: float) -> None:
        if len(message) > 3:
            # Never raise: a recorder "reopened" after a failure would start a new file.
            self._too_long += 1
            return
        if self._i == self.CHUNK:
            self._new_chunk()
        i = self._i
        self._times[i] = t
        self._bytes[i, : len(message)] = message
        self._i = i + 1

    def messages(self) -> list[tuple[float, Message]]:
        """Everything recorded so far: (monotonic send time, message)."""
        recorded = []
        for n, (times, rows) in enumerate(self._chunks):
            used = self._i if n == len(self._chunks) - 1 else self.CHUNK
            for t, row in zip(times[:used].tolist(), rows[:used].tolist(), strict=True):
                recorded.append((t, tuple(b for b in row if b >= 0)))
        return recorded

    def close(self) -> None:
        """Write the file (once). Writes to a temporary name and renames, so a crash never
        leaves half a file; when the folder cannot be written, writes to the temp folder."""
        if self._closed:
            return
        self._closed = True
        import mido  # only the recorder needs it, and only at close

        recorded = self.messages()
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("set_tempo", tempo=self.TEMPO, time=0))
        ticks_per_second = self.TICKS_PER_BEAT * 1_000_000 / self.TEMPO
        t0 = recorded[0][0] if recorded else 0.0
        last_tick, skipped = 0, self._too_long
        for t, message in recorded:
            if message[0] >= 0xF1:
                continue  # clock and other system messages have no place in a MIDI file
            try:
                midi_message = mido.Message.from_bytes(list(message))
            except ValueError:
                skipped += 1
                continue
            tick = round((t - t0) * ticks_per_second)  # absolute ticks: no rounding drift
            track.append(midi_message.copy(time=tick - last_tick))
            last_tick = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi = mido.MidiFile(type=0, ticks_per_beat=self.TICKS_PER_BEAT)
        midi.tracks.append(track)
        if skipped:
            log.warning("recorder: %d messages that are not valid MIDI were left out", skipped)
        try:
            self._save(midi, self.path)
        except OSError as exc:
            fallback = Path(tempfile.gettempdir()) / f"livegen-{os.getpid()}-{self.path.name}"
            log.error("recorder: cannot write %s (%s); writing %s instead", self.path,
                      exc.strerror or exc, fallback)
            self._save(midi, fallback)
            self.path = fallback
        log.info("recorder: wrote %d messages to %s", len(track) - 2, self.path)

    @staticmethod
    def _save(midi: Any, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        midi.save(filename=str(partial))
        os.replace(partial, path)


def _opened(sink: Sink, reopen: Callable[[], Sink]) -> Callable[[], Sink]:
    """An opener that hands out an already opened sink once, then opens anew."""
    first = [sink]

    def opener() -> Sink:
        return first.pop() if first else reopen()

    return opener


# ---------------------------------------------------------------- precise waiting

class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _PreciseSleep:
    """Waits until an absolute time.monotonic() value while keeping the GIL.

    Why keep the GIL: a thread that sleeps with the GIL released needs it back to send, and
    a busy Python thread hands it over only after the switch interval. So the output thread
    asks for the GIL `spin_ms` before the due time and keeps it until it has sent. Keeping
    it takes care: a thread that has waited for the GIL one switch interval makes the
    holder drop it at its next bytecode boundary, which could be right at the due time. So
    the wait is cut into native sleeps (clock_nanosleep through ctypes.PyDLL, which keeps
    the GIL) shorter than the switch interval, with a zero sleep between them: releasing
    the GIL and taking it straight back restarts a waiting thread's clock. With spin_ms
    about 1.6 switch intervals, a thread that took the GIL after a busy thread's interval
    sends without any such handover. Other Python threads wait at most `spin_ms` per
    message; ONNX Runtime inference does not need the GIL. Without clock_nanosleep
    (macOS) the pieces are spun.
    """

    CLOCK_MONOTONIC = 1
    TIMER_ABSTIME = 1

    def __init__(self) -> None:
        self._nanosleep = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6")
                nanosleep = libc.clock_nanosleep
            except (OSError, AttributeError):
                return
            nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec),
                                  ctypes.c_void_p]
            nanosleep.restype = ctypes.c_int
            self._nanosleep = nanosleep
            self._when = _Timespec()
            self._when_ref = ctypes.pointer(self._when)

    def until(self, t: float) -> None:
        monotonic = time.monotonic
        # A thread that started waiting for the GIL when this one took it asks for it
        # back one switch interval later; each piece ends before that.
        piece = sys.getswitchinterval() * 0.8
        while True:
            now = monotonic()
            if now >= t:
                return
            if t - now > piece:
                self._hold_until(now + piece)
                time.sleep(0)  # release and retake the GIL: restarts waiters' clocks
            else:
                self._hold_until(t)
                return

    def _hold_until(self, t: float) -> None:
        if self._nanosleep is None:
            while time.monotonic() < t:
                pass
            return
        seconds = int(t)
        self._when.tv_sec = seconds
        self._when.tv_nsec = int((t - seconds) * 1e9)
        while self._nanosleep(self.CLOCK_MONOTONIC, self.TIMER_ABSTIME, self._when_ref,
                              None) == errno.EINTR:
            pass


def _thread_timer_slack(nanoseconds: int) -> None:
    """Linux rounds a sleeping thread's wake-up up to its timer slack (50 µs by default);
    the output thread wants its wake-ups where it asked."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(29, nanoseconds, 0, 0, 0)  # PR_SET_TIMERSLACK


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
    backoff: float = BACKOFF_FIRST_S
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
        sleep = _PreciseSleep()
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
            self._end_notes()

    def _thread_setup(self) -> None:
        _thread_timer_slack(1)
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
        for message in self._ledger.held_since(now - self.cfg.max_note_s):
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
            slot.retry_at = time.monotonic() + slot.backoff
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
            slot.retry_at = time.monotonic() + slot.backoff
            slot.backoff = min(slot.backoff * 2, BACKOFF_MAX_S)
            log.debug("output: reopening %s failed (%s); next try in %.1f s", slot.name,
                      exc, slot.retry_at - time.monotonic())
            return
        # Notes that were sounding on it are considered ended: make sure they are.
        for message in panic_messages(self.cfg.panic_channels):
            with contextlib.suppress(Exception):
                sink.send(message, time.monotonic())
        slot.backoff = BACKOFF_FIRST_S
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
        targets = [_find_destination("jack", args.port, "panic --port", ports)]
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
