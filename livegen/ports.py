"""Where livegen talks to MIDI systems: rtmidi clients, port discovery and name matching,
the JACK probes, MIDI input in a process of its own, and the receiving client the benches
listen with. Outside this module only the output (output.py, sinks.py) holds rtmidi
clients; the MIDI status bytes everywhere come from one table, rtmidi.midiconstants.

One JACK client per process. libjack keeps one table of client wake-up futexes per
process, shared by every client in it: a client's notification thread maps the futex of
each client that joins the server and unmaps it when that client leaves, and a new client
connects its own slot only if the slot is empty (JackLinuxFutex::Connect, "Already
connected"). A process holding two clients while others come and go (`jack_lsp` probes,
patchbays) can therefore open a client whose slot still maps the futex of a client that has
left. Its process thread then sleeps on that dead futex for good: the server wakes the
right one, nobody waits on it, and jackd reports the client "not finished" every cycle.
Seen here with gdb: a MIDI input's process thread waiting in JackClient::DummyCycle on
/dev/shm/jack_sem.0_default_lsp (deleted), its own futex file not mapped at all; about one
start in four in the test suite, where the test process and the daemon each held several
clients. So livegen keeps one JACK client per process: the output is one client with one
port, joined to `output.connect` ports by JACK connections (made by `jack_connect`, a
process of its own), and each MIDI input runs in a child process (`listen`), which also
keeps a crash in the native MIDI code away from the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rtmidi

from livegen.errors import LivegenError

log = logging.getLogger(__name__)

API_IDS = {"jack": rtmidi.API_UNIX_JACK, "alsa": rtmidi.API_LINUX_ALSA,
           "coremidi": rtmidi.API_MACOSX_CORE}
AUTO_ORDER = ("jack", "alsa", "coremidi")
JACK_FIX = "start JACK (`jackd -S -d dummy -r 48000 -p 64`)"
ALSA_FIX = "load the ALSA sequencer (`modprobe snd-seq`)"
FILE_FIX = 'record to a file only (output.record = "out/session.mid", output.port = "")'
JACK_TOOLS_FIX = "install JACK's tools (Debian: jackd2; elsewhere jack-example-tools)"
LISTEN_POLL_S = 0.001     # how long the listening child sleeps when nothing is waiting
SOURCE_CHECK_S = 2.0      # how often a listener checks that the port it listens to is there


class NoMidiSystemError(LivegenError):
    """No MIDI system (JACK server, ALSA sequencer, CoreMIDI) could be reached."""


class PortGone(LivegenError):
    """The port a client was connected to went away (a controller unplugged)."""


def jack_server_name() -> str:
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


def match_ports(ports: list[str], pattern: str) -> list[str]:
    """The ports whose name contains `pattern`, ignoring case, in the order given."""
    wanted = pattern.lower()
    return [name for name in ports if wanted in name.lower()]


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Capture what C libraries print on file descriptor 2 while the block runs.

    libjack and alsa-lib print several lines when no server or sequencer is there; the
    person should see one line that says what to do, not those. The captured lines are
    put in the yielded list. A Python thread that writes to stderr in the same few
    milliseconds is captured too: the caller writes the lines back when nothing failed.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lines
        return
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                capture.seek(0)
                lines.extend(capture.read().decode(errors="replace").splitlines())
    finally:
        os.close(saved)


def _new_client(kind: type, api: str, client_name: str) -> Any:
    with native_stderr_captured() as lines:
        try:
            client = kind(API_IDS[api], name=client_name)
        except (rtmidi.RtMidiError, SystemError):
            client = None
    if client is None:
        for line in lines:
            log.debug("native (%s): %s", api, line)
        return None
    if lines:
        sys.stderr.write("\n".join(lines) + "\n")
    return client


def compiled_apis() -> set[str]:
    names = {rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()}
    return {"coremidi" if name == "core" else name for name in names}


def midi_client(api: str, client_name: str, kind: type = rtmidi.MidiOut) -> tuple[Any, str]:
    """A python-rtmidi client (MidiOut or MidiIn) on `api`, and the name of the API it got.

    'auto' tries JACK (when a server is running), then ALSA, then CoreMIDI. Raises
    NoMidiSystemError, one line naming the fix, when none can be reached. With JACK, the
    caller must hold no other client in this process (see the module's docstring).
    """
    compiled = compiled_apis()
    wanted = [a for a in AUTO_ORDER if a in compiled] if api == "auto" else [api]
    reasons, fixes = [], []
    for name in wanted:
        if name not in compiled:
            reasons.append(f"this python-rtmidi has no {name} support "
                           f"(it has: {', '.join(sorted(compiled))})")
            continue
        client = _new_client(kind, name, client_name)
        if client is not None:
            return client, name
        if name == "jack":
            reasons.append(f"JACK: no server {jack_server_name()!r} running")
            fixes.append(JACK_FIX)
        elif name == "alsa":
            reasons.append("ALSA: no sequencer (/dev/snd/seq)")
            fixes.append(ALSA_FIX)
        else:
            reasons.append(f"{name}: not available")
    fixes.append(FILE_FIX)
    raise NoMidiSystemError(f"no MIDI system reachable ({'; '.join(reasons)}): "
                            f"{', or '.join(fixes)}")


def close_client(client: Any) -> None:
    """Close an rtmidi client's port and the client itself, quietly."""
    with native_stderr_captured() as lines:
        with contextlib.suppress(Exception):
            client.close_port()
        with contextlib.suppress(Exception):
            client.delete()
    for line in lines:
        log.debug("native: %s", line)


# ---------------------------------------------------------------- JACK, out of process

@dataclass(frozen=True, slots=True)
class JackPort:
    name: str
    is_input: bool
    is_midi: bool


def jack_ports(timeout: float = 5.0) -> list[JackPort] | None:
    """Every port of the running JACK server, asked of `jack_lsp` in a process of its own;
    None when it cannot be told (no jack_lsp, or it hung)."""
    try:
        done = subprocess.run(["jack_lsp", "-p", "-t"], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return []
    ports: list[JackPort] = []
    name, is_input = "", False
    for line in done.stdout.splitlines():
        if not line.startswith("\t"):
            name = line
        elif line.startswith("\tproperties:"):
            is_input = "input" in line
        elif name:
            ports.append(JackPort(name, is_input, "midi" in line))
            name = ""
    return ports


def jack_port_names(timeout: float = 5.0) -> list[str] | None:
    ports = jack_ports(timeout)
    return None if ports is None else [port.name for port in ports]


def jack_serves(api: str) -> bool:
    """Whether a client opened on `api` ('auto' included) would be a JACK client."""
    if api not in ("auto", "jack") or "jack" not in compiled_apis():
        return False
    return api == "jack" or bool(jack_port_names())


def free_jack_client_name(base: str, ports: list[str] | None = None) -> str:
    """`base`, or `base-01`, `base-02`... as JACK itself renames a client whose name is
    taken, so that livegen knows the name its port really has."""
    names = jack_port_names() if ports is None else ports
    taken = {name.split(":", 1)[0] for name in names or ()}
    if base not in taken:
        return base
    for n in range(1, 100):
        candidate = f"{base}-{n:02d}"
        if candidate not in taken:
            return candidate
    return base


def _jack_tool(tool: str, *args: str) -> None:
    try:
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError as exc:
        raise LivegenError(f"{tool} is missing: {JACK_TOOLS_FIX}") from exc
    except subprocess.TimeoutExpired as exc:
        raise LivegenError(f"{tool} {' '.join(args)}: the JACK server did not answer "
                           "within 10 s") from exc
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise LivegenError(f"{tool} {' '.join(args)} failed"
                           f"{f' ({said[-1]})' if said else ''}")


def jack_connect(source: str, destination: str) -> None:
    """Join two JACK ports, through `jack_connect` (a client in a process of its own)."""
    _jack_tool("jack_connect", source, destination)


def jack_disconnect(source: str, destination: str) -> None:
    _jack_tool("jack_disconnect", source, destination)


def jack_connections(port: str, timeout: float = 5.0) -> list[str] | None:
    """The ports `port` is connected to, from `jack_lsp -c`; None when it cannot be told."""
    try:
        done = subprocess.run(["jack_lsp", "-c", port], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    found, inside = [], False
    for line in done.stdout.splitlines():
        if not line.startswith((" ", "\t")):
            inside = line == port
        elif inside:
            found.append(line.strip())
    return found


class JackServerWatch:
    """Notices that the JACK server went away or restarted, which rtmidi does not report.

    jackd2 listens on a socket in /dev/shm named after the server and the user; a server
    that exits removes it and a restarted one makes a new one (a new inode).
    """

    def __init__(self) -> None:
        self.path = Path(f"/dev/shm/jack_{jack_server_name()}_{os.getuid()}_0")
        try:
            self.inode: int | None = self.path.stat().st_ino
        except OSError:
            self.inode = None  # another layout (JACK1, macOS): no watch

    def alive(self) -> bool:
        if self.inode is None:
            return True
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False


def own_futex_mapped(client_name: str) -> bool | None:
    """Whether this process maps the wake-up futex of its JACK client `client_name` (jackd2
    on Linux: /dev/shm/jack_sem.UID_SERVER_NAME); None when that cannot be told. A client
    whose own futex is not mapped sleeps on another one: it will never run (see above)."""
    path = f"/dev/shm/jack_sem.{os.getuid()}_{jack_server_name()}_{client_name}"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    if "/dev/shm/jack_sem." not in maps:
        return None  # another JACK or another synchronisation: cannot tell
    return any(line.endswith(path) for line in maps.splitlines())


def current_ports(api: str, kind: type = rtmidi.MidiOut) -> list[str] | None:
    """The ports a client of `kind` could open now (MidiOut: destinations; MidiIn:
    sources), for health checks; None when it cannot be told. JACK is asked out of
    process; other systems through a short-lived client."""
    if api == "jack":
        ports = jack_ports()
        if ports is None:
            return None
        wants_input = kind is rtmidi.MidiOut
        return [p.name for p in ports if p.is_midi and p.is_input == wants_input]
    try:
        client, _ = midi_client(api, "livegen-ports", kind)
    except LivegenError:
        return None
    try:
        return client.get_ports()
    finally:
        client.delete()


def source_ports(api: str) -> list[str] | None:
    """The ports a MIDI input could listen to now (other clients' outputs), for health
    checks and `livegen devices`; None when it cannot be told."""
    return current_ports(api, rtmidi.MidiIn)


@dataclass(frozen=True, slots=True)
class MidiSystem:
    """One MIDI system this python-rtmidi was built with, as a short look found it."""

    name: str                   # as rtmidi displays it: "Jack", "ALSA", "CoreMIDI"
    outputs: tuple[str, ...]    # ports a MIDI output could send to (destinations)
    inputs: tuple[str, ...]     # ports a MIDI input could listen to (sources)
    unreachable: str = ""       # why it could not be looked at; empty when it could


def midi_systems() -> list[MidiSystem]:
    """Every MIDI system compiled into python-rtmidi, in rtmidi's order, with its ports.

    A look, not a hold: each system is asked through a short-lived client, one at a time
    and closed at once (one JACK client per process, see above), and what the C library
    prints meanwhile is kept off the terminal. JACK is not asked when no server runs (the
    client would wait for one)."""
    systems = []
    for api in rtmidi.get_compiled_api():
        name = rtmidi.get_api_display_name(api)
        if api == rtmidi.API_UNIX_JACK and not jack_running():
            systems.append(MidiSystem(name, (), (), "no JACK server running (start jackd, "
                                                    "or use another system)"))
            continue
        try:
            outputs = _ports_seen_by(rtmidi.MidiOut, api)
            inputs = _ports_seen_by(rtmidi.MidiIn, api)
        except Exception as exc:  # rtmidi raises its own SystemError subclasses
            systems.append(MidiSystem(name, (), (), f"not reachable ({exc})"))
            continue
        systems.append(MidiSystem(name, tuple(outputs), tuple(inputs)))
    return systems


def _ports_seen_by(kind: type, api: int) -> list[str]:
    with native_stderr_captured():  # what the C library prints while probed
        client = kind(api, name="livegen-devices")
        try:
            return client.get_ports()
        finally:
            close_client(client)


# ---------------------------------------------------------------- a JACK server

# Synchronous (-S): each cycle, the server waits for its clients to finish before it
# passes their buffers on. In jackd2's default asynchronous mode a client that a busy
# machine lets finish late loses what it wrote that cycle: on a virtual machine with 10 %
# steal time the dummy driver reported hundreds of xruns a second under the tests' load,
# and MIDI sent between two JACK clients arrived with messages missing (1000 scheduled
# messages: one lost in every try; a controller's CCs unheard). In synchronous mode the
# same load lost nothing. It cost no latency there: `livegen bench output`'s receiver p50
# was 0.80 ms asynchronous and 0.81-0.85 ms synchronous, on the same noisy machine.
JACKD_COMMAND = ("jackd", "-S", "-d", "dummy", "-r", "48000", "-p", "64")


def jack_running(env: dict[str, str] | None = None) -> bool:
    """True when a JACK server runs (the one JACK_DEFAULT_SERVER names, or 'default').

    Asked first of the server's own socket: a server that listens there runs, however
    slowly a loaded machine lets it answer jack_lsp. Starting a second server over a busy
    one would be worse than waiting: jackd removes the socket it finds before it binds its
    own, then fails, leaving the first server unreachable for good."""
    server = (env or os.environ).get("JACK_DEFAULT_SERVER") or "default"
    path = f"/dev/shm/jack_{server}_{os.getuid()}_0"
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        probe.connect(path)
        return True
    try:
        done = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def jack_server(name: str | None = None, timeout: float = 10.0) -> Iterator[bool]:
    """A running JACK server for the block: the one already running, or `jackd -S -d
    dummy -r 48000 -p 64` (JACKD_COMMAND) started here (named `name` if given) and
    stopped at the end. Yields whether it was started here. Raises LivegenError when
    jackd is missing or fails."""
    env = dict(os.environ)
    if name:
        env["JACK_DEFAULT_SERVER"] = name
    if jack_running(env):
        yield False
        return
    if shutil.which("jackd") is None:
        raise LivegenError("jackd is not installed: install jackd2 "
                           "(Debian: apt-get install jackd2)")
    command = list(JACKD_COMMAND)
    if name:
        command[1:1] = ["-n", name]  # a server option, before -S and the driver
    log.info("starting %s", " ".join(command))
    # jackd's chatter goes to a file: a pipe nobody reads would fill up and stall the
    # server (it reports every xrun).
    with tempfile.TemporaryFile() as chatter:
        jackd = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=chatter,
                                 stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not jack_running(env):
                if jackd.poll() is not None:
                    chatter.seek(0)
                    said = chatter.read().decode(errors="replace").strip().splitlines()
                    raise LivegenError(f"jackd exited at start ({said[-1] if said else '?'})")
                if time.monotonic() > deadline:
                    raise LivegenError(f"jackd did not answer within {timeout:.0f} s")
                time.sleep(0.05)
            yield True
        finally:
            jackd.terminate()
            try:
                jackd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                jackd.kill()
                jackd.wait()
            chatter.seek(0)
            for line in chatter.read().decode(errors="replace").splitlines():
                log.debug("jackd: %s", line)


def jack_period_s() -> float:
    """The running JACK server's period in seconds (buffer size / sample rate)."""
    frames = subprocess.run(["jack_bufsize"], capture_output=True, text=True, timeout=5)
    rate = subprocess.run(["jack_samplerate"], capture_output=True, text=True, timeout=5)
    return int(frames.stdout.split()[-1]) / int(rate.stdout.split()[-1])


# ---------------------------------------------------------------- a receiving client

def receiving_client(name: str, on_message: Callable[[float, list[int]], None]) -> Any:
    """A JACK client `name` with a virtual input port `name`:in that calls
    `on_message(arrival time, bytes)` for each message, in rtmidi's own thread as the
    message comes (no polling: what the benches measure arrivals with). The time is
    time.monotonic(), system-wide, so a sender in another process can compare it with its
    due times. Give it a process of its own (one JACK client per process); end it with
    close_client."""
    midi_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=name)
    monotonic = time.monotonic
    midi_in.set_callback(lambda event, _: on_message(monotonic(), event[0]))
    midi_in.open_virtual_port("in")
    return midi_in


# ---------------------------------------------------------------- MIDI input, in a child

@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """What a listening child opens: a virtual port (client `client`, port 'in') or a
    connection to the first source port whose name contains `connect`."""

    api: str
    client: str
    connect: str = ""
    ignore_active_sensing: bool = True
    # For a virtual JACK port: say who is joined to it (every SOURCE_CHECK_S), and the
    # ports to join to it again once it is open (those a patchbay or a person had joined
    # to the port of a child that died).
    keep_connections: bool = False
    reconnect: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "livegen.ports", "listen", "--api", self.api,
                "--client", self.client]
        if self.connect:
            args += ["--connect", self.connect]
        if not self.ignore_active_sensing:
            args.append("--active-sensing")
        if self.keep_connections:
            args.append("--keep-connections")
        for port in self.reconnect:
            args += ["--reconnect", port]
        return args


class Listener:
    """A MIDI input port held by a child process (`python -m livegen.ports listen`).

    The child polls rtmidi and writes one line per message: the monotonic time it arrived
    (CLOCK_MONOTONIC is system-wide, so the time is this process's time too) and the bytes
    in hex. `messages()` yields (t, bytes) until the child ends; a child that dies (a crash
    in native code, an unplugged controller) ends it with an exception naming why.

    A child holding a virtual JACK port can also say, every SOURCE_CHECK_S, which ports
    are joined to it (ListenerSpec.keep_connections; `connections`): a restarted child is
    given them (ListenerSpec.reconnect) and joins them again, so a controller patched to
    livegen's port is not lost with a child that died.
    """

    def __init__(self, spec: ListenerSpec, start_timeout: float = 15.0) -> None:
        self.spec = spec
        self.connections: tuple[str, ...] = spec.reconnect
        self.process = subprocess.Popen(spec.argv(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buffer = b""
        first = self._first_line(start_timeout)
        words = first.split(" ", 1)
        if not first.startswith("ready\t"):
            self.close()
            raise (PortGone if words[0] == "gone" else LivegenError)(
                words[1] if len(words) > 1 else f"the MIDI input process said {first!r}")
        # ready<TAB>api<TAB>own port<TAB>source: port names may hold spaces (ALSA's do).
        _, self.api, self.port, self.source = [*first.split("\t"), "", "", ""][:4]
        # The child's stderr (native chatter, a traceback) goes to the log, line by line.
        threading.Thread(target=self._log_stderr, name=f"stderr-{spec.client}",
                         daemon=True).start()

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return "error the MIDI input process did not start within " \
                       f"{timeout:g} s"
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    return f"error the MIDI input process ended at start ({self._death()})"
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def _log_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.debug("MIDI input %s: %s", self.spec.client, line)

    def _death(self) -> str:
        try:
            code = self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit status {code}"

    def messages(self, stopping: threading.Event, poll_s: float = 0.25
                 ) -> Iterator[tuple[float, list[int]]]:
        """(arrival time, bytes) for each message, until `stopping` is set (returns) or the
        child ends (raises PortGone when its source port went away, else ConnectionError)."""
        fd = self.process.stdout.fileno()
        while not stopping.is_set():
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if line.startswith(b"gone "):  # the port it listened to went away
                    raise PortGone(line[5:].decode(errors="replace").strip())
                if line.startswith(b"connected"):
                    self.connections = tuple(
                        name for name in line.decode(errors="replace").split("\t")[1:] if name)
                    continue
                parsed = _parse_line(line)
                if parsed is not None:
                    yield parsed
            ready, _, _ = select.select([fd], [], [], poll_s)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                said = self._buffer.decode(errors="replace").strip()
                why = self._death()
                if said.startswith("gone"):
                    raise PortGone(said.split(" ", 1)[-1])
                raise ConnectionError(f"the MIDI input process for {self.port} ended "
                                      f"({why})")
            self._buffer += chunk

    def close(self) -> None:
        """End the child: it stops when its stdin closes; killed if it does not."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(2.0)
        with contextlib.suppress(OSError):
            self.process.stdout.close()


_HEX = re.compile(rb"^[0-9a-f]{2}$")


def _parse_line(line: bytes) -> tuple[float, list[int]] | None:
    words = line.split()
    if len(words) < 2:
        return None
    try:
        return float(words[0]), [int(word, 16) for word in words[1:]]
    except ValueError:
        return None


def listen(argv: list[str]) -> int:
    """The listening child: open the port, say `ready API OWN_PORT SOURCE` (tab-separated;
    SOURCE empty for a virtual port), then write
    `TIME HEX...` for each message until stdin closes. One-line `error ...` (exit 2) when
    the port cannot be opened; `gone ...` (exit 3) when its source port went away."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m livegen.ports listen")
    parser.add_argument("--api", default="auto")
    parser.add_argument("--client", required=True)
    parser.add_argument("--connect", default="")
    parser.add_argument("--active-sensing", action="store_true")
    parser.add_argument("--keep-connections", action="store_true")
    parser.add_argument("--reconnect", action="append", default=[])
    args = parser.parse_args(argv)
    out = sys.stdout.buffer
    writing = threading.Lock()  # the poll loop and the port watcher both write lines

    def say(line: str) -> None:
        with writing:
            out.write(line.encode() + b"\n")
            out.flush()

    try:
        midi_in, api, own_port, source = _open_listening(args)
    except PortGone as exc:
        say(f"gone {exc}")
        return 3
    except LivegenError as exc:
        say(f"error {exc}")
        return 2
    # The parent closes our stdin to stop us, and dies with it (SIGKILL included).
    stdin_closed = threading.Event()

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            while sys.stdin.buffer.read(4096):
                pass
        stdin_closed.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # A virtual JACK port: who is joined to it is said at start and whenever it changes.
    keeps_connections = args.keep_connections and api == "jack" and not source
    joined = _rejoin(args.reconnect, own_port) if keeps_connections else None
    say(f"ready\t{api}\t{own_port}\t{source}")
    if joined is not None:
        say("\t".join(["connected", *joined]))
    gone = threading.Event()

    def watch_ports(joined: list[str] | None) -> None:
        """Every SOURCE_CHECK_S: is the source port still there (else say `gone`), and who
        is joined to a virtual port. In a thread of its own: a look takes a process
        (jack_lsp, tens of milliseconds), which the poll loop must not wait for, or every
        message arriving meanwhile would be stamped that much late."""
        while not stdin_closed.wait(SOURCE_CHECK_S):
            if source:
                ports = source_ports(api)
                if ports is not None and source not in ports:
                    say(f"gone {source} went away")
                    gone.set()
                    return
            elif keeps_connections:
                now_joined = jack_connections(own_port)
                if now_joined is not None and now_joined != joined:
                    joined = now_joined
                    say("\t".join(["connected", *joined]))

    if source or keeps_connections:
        threading.Thread(target=watch_ports, args=(joined,), daemon=True).start()
    get_message, monotonic = midi_in.get_message, time.monotonic
    try:
        while not (stdin_closed.is_set() or gone.is_set()):
            event = get_message()
            if event is None:
                time.sleep(LISTEN_POLL_S)
                continue
            t = monotonic()
            lines = [f"{t:.6f} {_hex(event[0])}"]
            while (event := get_message()) is not None:  # a burst: one write
                lines.append(f"{t:.6f} {_hex(event[0])}")
            with writing:
                out.write(("\n".join(lines) + "\n").encode())
                out.flush()
    except BrokenPipeError:
        return 0
    finally:
        close_client(midi_in)
    return 3 if gone.is_set() else 0


def _rejoin(sources: list[str], own_port: str) -> list[str] | None:
    """Join each of `sources` that is still there to `own_port` (JACK); the ports joined
    to it afterwards (None when that cannot be told)."""
    if sources:
        there = set(source_ports("jack") or ())
        for source in sources:
            if source in there:
                with contextlib.suppress(LivegenError):
                    jack_connect(source, own_port)
    return jack_connections(own_port)


def _hex(data: list[int]) -> str:
    return " ".join(f"{b & 0xFF:02x}" for b in data) if data else ""


def _open_listening(args: Any) -> tuple[Any, str, str, str]:
    client_name = free_jack_client_name(args.client) if jack_serves(args.api) else args.client
    midi_in, got = midi_client(args.api, client_name, kind=rtmidi.MidiIn)
    # Sysex and timing come through (sysex to be counted, timing for the clock).
    midi_in.ignore_types(sysex=False, timing=False, active_sense=not args.active_sensing)
    own_port = f"{client_name}:in"
    if not args.connect:
        midi_in.open_virtual_port("in")
        source = ""
    else:
        ports = midi_in.get_ports()
        if got == "jack":
            # rtmidi lists JACK ports by full name; the client name it connects from is
            # this one's, so the match is on the source's name only.
            ports = [p for p in ports if not p.startswith(f"{client_name}:")]
        matches = match_ports(ports, args.connect)
        if not matches:
            listed = ", ".join(repr(p) for p in ports) or "none"
            close_client(midi_in)
            raise PortGone(f"no {got} MIDI input port matches {args.connect!r} (ports: "
                           f"{listed}); connect the controller or see `livegen devices`")
        source = matches[0]
        midi_in.open_port(midi_in.get_ports().index(source), "in")
    if got == "jack" and own_futex_mapped(client_name) is False:
        close_client(midi_in)
        raise LivegenError(f"JACK client {client_name} was opened asleep (its wake-up futex "
                           "is not mapped); opening it again")
    return midi_in, got, own_port, source


if __name__ == "__main__":
    if sys.argv[1:2] == ["listen"]:
        sys.exit(listen(sys.argv[2:]))
    print("usage: python -m livegen.ports listen --client NAME [--api API] "
          "[--connect PATTERN]", file=sys.stderr)
    sys.exit(2)
