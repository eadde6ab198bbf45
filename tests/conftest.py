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

import contextlib
import faulthandler
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import pytest

from livegen import ports
from livegen.ports import Listener, ListenerSpec, jack_connect, jack_port_names

JACKD_MISSING = "jackd is missing: install jackd2 (Debian: apt-get install jackd2)"
# A test still running this long after it started has hung where pytest-timeout cannot
# reach it (a thread holding the GIL inside native code): dump every thread's stack and
# end the run, instead of sitting there until CI's limit.
HUNG_S = 420
_names = itertools.count()


@pytest.fixture(autouse=True)
def hang_backstop() -> Iterator[None]:
    faulthandler.dump_traceback_later(HUNG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def unique_name(prefix: str) -> str:
    """A JACK client name no other test (or engineer's test run) is using."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def jack_server() -> Iterator[None]:
    if shutil.which("jackd") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(JACKD_MISSING)
        pytest.skip(JACKD_MISSING)
    with ports.jack_server():
        yield


@pytest.fixture
def daemons() -> Iterator[list]:
    """The livegen daemons (test_engine.Daemon) a test starts: any still running at its
    end is killed."""
    started: list = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)


def jack_ports(env: dict[str, str] | None = None, timeout: float = 5.0) -> list[str]:
    """The ports of the JACK server that `env` names (default: this process's); none when
    `jack_lsp` hangs past `timeout` (as ports.jack_ports treats it: in one CI run of
    about twenty, jack_lsp hung over 10 s on a server started a moment before)."""
    if env is None:
        return jack_port_names() or []
    try:
        done = subprocess.run(["jack_lsp"], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return []
    return done.stdout.split("\n") if done.returncode == 0 else []


def wait_for_port(name: str, timeout: float = 20.0, env: dict[str, str] | None = None) -> None:
    """Wait until a JACK port with this full name exists (on the server `env` names); a
    probe that hangs is given up after 5 s and a fresh one asked, within `timeout`."""
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
    """A JACK client with a virtual input port, NAME:in, in a process of its own (the
    same listening child that livegen's MIDI inputs use): one JACK client per process
    (see livegen.ports). Records (monotonic arrival time, message) for every message;
    the child polls rtmidi every millisecond, so arrival times are good to about 1 ms.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._listener = Listener(ListenerSpec("jack", name, ignore_active_sensing=False))
        self.port = self._listener.port
        self._arrivals: list[tuple[float, tuple[int, ...]]] = []
        self._sources: list[str] = []
        self.deaths: list[str] = []  # why a child died (it is restarted, as livegen's are)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                for t, message in self._listener.messages(self._stop, poll_s=0.05):
                    self._arrivals.append((t, tuple(message)))
            except (ConnectionError, ports.PortGone) as exc:
                # A crash in rtmidi's native code (seen once in ten CI runs: SIGSEGV)
                # must not turn into a lost note in the test that happened to be running:
                # a new child, joined to the same sources, as livegen's inputs do.
                self.deaths.append(str(exc))
                warnings.warn(f"test receiver {self.name}: {exc}; restarting it",
                              stacklevel=1)
                joined = tuple(dict.fromkeys(self._sources))
                self._listener.close()
                self._listener = Listener(ListenerSpec("jack", self.name,
                                                       ignore_active_sensing=False,
                                                       reconnect=joined))
                self.port = self._listener.port

    def connect(self, source: str) -> None:
        """Connect an output port (full JACK name) to this receiver, with jack_connect."""
        wait_for_port(source)
        jack_connect(source, self.port)
        self._sources.append(source)

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
        self._listener.close()


SENDER_CODE = """
import sys, rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=sys.argv[1])
out.open_virtual_port("out")
print("ready", flush=True)
for line in sys.stdin:
    try:
        out.send_message([int(word, 16) for word in line.split()])
    except Exception as exc:  # a message rtmidi refuses: say so, carry on
        print(f"refused {line.strip()}: {exc}", flush=True)
out.close_port()
"""


class JackSender:
    """A JACK client with a virtual output port, NAME:out, in a process of its own: what
    a controller or a clock master plays into livegen. `send` hands one message over a
    pipe (well under a millisecond)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = f"{name}:out"
        self._process = subprocess.Popen([sys.executable, "-c", SENDER_CODE, name],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        assert self._process.stdout.readline().strip() == "ready", "the sender did not start"

    def connect(self, destination: str) -> None:
        wait_for_port(destination)
        jack_connect(self.port, destination)

    def send(self, message: list[int]) -> None:
        self._process.stdin.write(" ".join(f"{b:02x}" for b in message) + "\n")
        self._process.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)


@pytest.fixture
def jack_receiver(jack_server: None) -> Iterator[JackReceiver]:
    receiver = JackReceiver(unique_name("livegen-test-rx"))
    yield receiver
    receiver.close()


XRUN_COUNTER_CODE = """
import ctypes, sys
from pathlib import Path
import rtmidi
site = Path(rtmidi.__file__).parents[1]
bundled = sorted(site.glob("python_rtmidi*/libjack*.so*"))
lib = ctypes.CDLL(str(bundled[0]) if bundled else "libjack.so.0")
lib.jack_client_open.restype = ctypes.c_void_p
lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
lib.jack_set_xrun_callback.argtypes = [ctypes.c_void_p, CALLBACK, ctypes.c_void_p]
lib.jack_activate.argtypes = [ctypes.c_void_p]
lib.jack_client_close.argtypes = [ctypes.c_void_p]
count = 0
def on_xrun(_):
    global count
    count += 1
    return 0
callback = CALLBACK(on_xrun)
status = ctypes.c_int()
client = lib.jack_client_open(sys.argv[1].encode(), 1, ctypes.byref(status))
if not client:
    print(f"error {status.value}", flush=True)
    sys.exit(1)
lib.jack_set_xrun_callback(client, callback, None)
lib.jack_activate(client)
print("ready", flush=True)
for _ in sys.stdin:
    print(count, flush=True)
lib.jack_client_close(client)
"""


class XrunCounter:
    """Counts the JACK server's xruns (a cycle a client did not finish in time: its MIDI
    late, or lost in asynchronous mode), through a client of the same libjack that rtmidi
    loads.

    It runs in a process of its own. The xrun callback is Python, called in libjack's
    notification thread; in the test process it would wait for the GIL while the main
    thread, holding the GIL inside rtmidi, waits for the server, which waits for this
    client to take its notifications: a deadlock (seen: a test run hung 15 minutes in
    jack_activate). The child's main thread waits on a pipe, with the GIL released.
    """

    def __init__(self, name: str) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", XRUN_COUNTER_CODE, name],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        said = self._process.stdout.readline().strip()
        assert said == "ready", f"cannot open a JACK client to count xruns ({said})"

    @property
    def count(self) -> int:
        self._process.stdin.write("\n")
        self._process.stdin.flush()
        return int(self._process.stdout.readline())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)


@pytest.fixture(scope="session")
def jack_xruns(jack_server: None) -> Iterator[XrunCounter]:
    counter = XrunCounter(unique_name("livegen-test-xruns"))
    yield counter
    counter.close()


def retried_on_xruns(xruns: XrunCounter, attempt: Callable[[], None], tries: int = 3) -> None:
    """Run `attempt` (a function that asserts) until it passes. A failure is tried again
    only when the JACK server reported an xrun meanwhile: a cycle came late because the
    machine (shared, noisy) did not run a client in time, which is the machine's doing,
    not livegen's. In jackd2's asynchronous mode that cycle's MIDI is lost; in the
    synchronous mode the tests' server runs in (ports.JACKD_COMMAND) it arrives late.
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


def retried_with_a_receiver(xruns: XrunCounter, attempt: Callable[[JackReceiver], None],
                            tries: int = 3) -> None:
    """retried_on_xruns for a run heard by a receiver: each try gets a receiver of its
    own, closed after it, so nothing the last try received is counted again."""
    def once() -> None:
        receiver = JackReceiver(unique_name("livegen-test-rx"))
        try:
            attempt(receiver)
        finally:
            receiver.close()

    retried_on_xruns(xruns, once, tries)
