"""Where messages go: livegen's own MIDI port, JACK connections from it, ports of other
clients (ALSA, CoreMIDI), and the MIDI-file recorder. Every sink has the same small
surface (`Sink`); the output thread sends each message to each sink, and its keeper
reopens a sink that fails."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from livegen.errors import LivegenError
from livegen.ports import (
    JACK_TOOLS_FIX,
    JackServerWatch,
    close_client,
    current_ports,
    free_jack_client_name,
    jack_connect,
    jack_connections,
    jack_disconnect,
    jack_serves,
    match_ports,
    midi_client,
)
from livegen.timeline import Message

log = logging.getLogger(__name__)

CONNECTION_CHECK_S = 2.0     # how often a JACK connection is checked (jack_lsp, a process)


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


def find_destination(api: str, pattern: str, setting: str, ports: list[str]) -> str:
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
        target = find_destination(got, pattern, setting, out.get_ports())
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
        self.target = find_destination("jack", pattern, setting, ports)
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
    playing) and writes a type 0 MIDI file at close, through music/events.midi_file (as
    write_midi does). Time 0 is the first message."""

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

        from livegen.music.events import midi_file

        recorded = self.messages()
        t0 = recorded[0][0] if recorded else 0.0
        timed, skipped = [], self._too_long
        for t, message in recorded:
            if message[0] >= 0xF1:
                continue  # clock and other system messages have no place in a MIDI file
            try:
                timed.append((t - t0, mido.Message.from_bytes(list(message))))
            except ValueError:
                skipped += 1
        midi = midi_file(timed, tempo=self.TEMPO, ticks_per_beat=self.TICKS_PER_BEAT)
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
        log.info("recorder: wrote %d messages to %s", len(timed), self.path)

    @staticmethod
    def _save(midi: Any, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        midi.save(filename=str(partial))
        os.replace(partial, path)
