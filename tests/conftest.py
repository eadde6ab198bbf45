"""Shared fixtures that start real servers.

jack_server: a real JACK server (jackd with the dummy driver, 64 frames at 48 kHz) once
per test run: the one already running, or one started here and stopped at the end. When
jackd is missing the JACK tests fail in CI (CI=true) and are skipped elsewhere.

jack_receiver: a second, independent rtmidi JACK client with a virtual input port that
records (monotonic arrival time, message) for every message it gets.

jack_xruns: counts the server's xruns, so that a test can tell a message livegen lost
from one a starved JACK client lost (retried_on_xruns).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livegen import bench

JACKD_MISSING = "jackd is missing: install jackd2 (Debian: apt-get install jackd2)"
_names = itertools.count()


def unique_name(prefix: str) -> str:
    """A JACK client name no other test (or engineer's test run) is using."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def jack_server() -> Iterator[None]:
    if shutil.which("jackd") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(JACKD_MISSING)
        pytest.skip(JACKD_MISSING)
    with bench.jack_server():
        yield


def jack_ports(env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10, env=env)
    return done.stdout.split("\n") if done.returncode == 0 else []


def wait_for_port(name: str, timeout: float = 10.0, env: dict[str, str] | None = None) -> None:
    """Wait until a JACK port with this full name exists (on the server `env` names)."""
    deadline = time.monotonic() + timeout
    while name not in jack_ports(env):
        if time.monotonic() > deadline:
            raise AssertionError(f"JACK port {name} did not appear within {timeout} s")
        time.sleep(0.05)


def sounding_notes(messages: list[tuple[int, ...]]) -> set[tuple[int, int]]:
    """(channel, pitch) of the notes a synth would still be playing after `messages`:
    a note-on starts a note, a note-off (or note-on with velocity 0) ends it, and
    all-notes-off (CC 123) ends every note on its channel."""
    sounding: set[tuple[int, int]] = set()
    for message in messages:
        kind, channel = message[0] & 0xF0, message[0] & 0x0F
        if kind == 0x90 and message[2] > 0:
            sounding.add((channel, message[1]))
        elif kind in (0x80, 0x90):
            sounding.discard((channel, message[1]))
        elif kind == 0xB0 and message[1] == 123:
            sounding = {note for note in sounding if note[0] != channel}
    return sounding


class JackReceiver:
    """A python-rtmidi JACK client with a virtual input port, NAME:in.

    rtmidi queues what arrives (no Python runs in JACK's process thread, so a busy GIL in
    this process cannot make the client miss a JACK cycle) and a thread drains the queue,
    stamping each message with time.monotonic(): arrival times are good to about 1 ms.
    """

    def __init__(self, name: str) -> None:
        import rtmidi

        self.name = name
        self.port = f"{name}:in"
        self._in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=name, queue_size_limit=1 << 16)
        self._in.ignore_types(sysex=False, timing=False, active_sense=False)
        self._in.open_virtual_port("in")
        self._arrivals: list[tuple[float, tuple[int, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            event = self._in.get_message()
            if event is None:
                time.sleep(0.0005)
                continue
            self._arrivals.append((time.monotonic(), tuple(event[0])))

    def connect(self, source: str) -> None:
        """Connect an output port (full JACK name) to this receiver, with jack_connect."""
        wait_for_port(source)
        done = subprocess.run(["jack_connect", source, self.port], capture_output=True,
                              text=True, timeout=10)
        assert done.returncode == 0, f"jack_connect {source} {self.port}: {done.stderr}"

    @property
    def arrivals(self) -> list[tuple[float, tuple[int, ...]]]:
        return list(self._arrivals)

    @property
    def messages(self) -> list[tuple[int, ...]]:
        return [message for _, message in self._arrivals]

    def notes(self) -> list[tuple[int, ...]]:
        """Note-ons and note-offs only (no start-up or stop controller messages)."""
        return [m for m in self.messages if m[0] & 0xF0 in (0x80, 0x90)]

    def wait_for(self, count: int, timeout: float = 10.0, notes_only: bool = True) -> None:
        """Wait until at least `count` messages (note messages by default) have arrived,
        or `timeout` seconds; the test's assertions then say what is missing."""
        deadline = time.monotonic() + timeout
        while len(self.notes() if notes_only else self.messages) < count:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def settle(self, quiet: float = 0.15, timeout: float = 5.0) -> None:
        """Wait until nothing has arrived for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = len(self._arrivals)
            time.sleep(quiet)
            if len(self._arrivals) == count:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._in.close_port()
        del self._in


@pytest.fixture
def jack_receiver(jack_server: None) -> Iterator[JackReceiver]:
    receiver = JackReceiver(unique_name("livegen-test-rx"))
    yield receiver
    receiver.close()


class XrunCounter:
    """Counts the JACK server's xruns (a client that missed its cycle: the MIDI of that
    cycle is lost to it), through a client of the same libjack that rtmidi loads."""

    def __init__(self, name: str) -> None:
        import rtmidi

        site = Path(rtmidi.__file__).parents[1]
        bundled = sorted(site.glob("python_rtmidi*/libjack*.so*"))
        self._lib = ctypes.CDLL(str(bundled[0]) if bundled else "libjack.so.0")
        self._lib.jack_client_open.restype = ctypes.c_void_p
        self._lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                                               ctypes.POINTER(ctypes.c_int)]
        self._lib.jack_set_xrun_callback.argtypes = [ctypes.c_void_p, _XRUN_CALLBACK,
                                                     ctypes.c_void_p]
        self._lib.jack_activate.argtypes = [ctypes.c_void_p]
        self._lib.jack_client_close.argtypes = [ctypes.c_void_p]
        self.count = 0
        status = ctypes.c_int()
        self._client = self._lib.jack_client_open(name.encode(), 1,  # JackNoStartServer
                                                  ctypes.byref(status))
        assert self._client, f"cannot open a JACK client to count xruns (status {status})"
        self._callback = _XRUN_CALLBACK(self._on_xrun)  # keep it alive as long as the client
        self._lib.jack_set_xrun_callback(self._client, self._callback, None)
        self._lib.jack_activate(self._client)

    def _on_xrun(self, _: object) -> int:
        self.count += 1  # called in libjack's notification thread, not the process thread
        return 0

    def close(self) -> None:
        self._lib.jack_client_close(self._client)


_XRUN_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


@pytest.fixture(scope="session")
def jack_xruns(jack_server: None) -> Iterator[XrunCounter]:
    counter = XrunCounter(unique_name("livegen-test-xruns"))
    yield counter
    counter.close()


def retried_on_xruns(xruns: XrunCounter, attempt: Callable[[], None], tries: int = 3) -> None:
    """Run `attempt` (a function that asserts) until it passes. A failure is tried again
    only when the JACK server reported an xrun meanwhile: a client that misses a cycle
    loses that cycle's MIDI, which is the machine's doing (shared, noisy), not livegen's.
    A failure without an xrun fails at once."""
    for i in range(tries):
        before = xruns.count
        try:
            attempt()
            return
        except AssertionError as failure:
            if xruns.count == before or i == tries - 1:
                raise
            warnings.warn(f"JACK reported {xruns.count - before} xrun(s) during a run that "
                          f"lost MIDI ({str(failure).splitlines()[0]}); trying again",
                          stacklevel=2)
