"""Ableton Link through real parts: `livegen run` with clock.source = "link" and a second
Link peer (tests/link_peer.py, the same library, none of livegen's code) in a network
namespace that has only loopback (Link multicasts: never on a real network), livegen
playing the test arpeggio (one note a beat, up the scale from bar 0: tests/plugins) and
sending MIDI clock into a JACK receiver outside the namespace (JACK speaks through
/dev/shm and unix sockets, which a network namespace does not separate).

The peer computes the session's bar lines and beats in monotonic time; the receiver
stamps what arrives in monotonic time (the clock is system-wide). What is compared is
where livegen's notes land against where the peer says the session's beats fall.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import JackReceiver, XrunCounter, retried_with_a_receiver, sounding_notes, unique_name
from test_engine import ROOT, Daemon, write_trace

from livegen.clock import Clock

PEER = ROOT / "tests" / "link_peer.py"
PLUGINS = {"PYTHONPATH": str(ROOT / "tests" / "plugins")}
TICK, START, STOP = 0xF8, 0xFA, 0xFC
ARP_LOW = 66  # the arpeggio's lowest pitch at pitch control 0.5 (48 + 0.5 * 36)
MAJOR = (0, 2, 4, 5, 7, 9, 11)
# The peers are enabled this long before livegen: Link's 500 ms rule lets two peers
# enabled closer than half a second keep either one's tempo (see the test of its warning).
PEER_AHEAD_S = 1.0
BAR_LINE_S = 0.002  # livegen's bar lines within this of the peer's (the median; see below)
JACK_PERIOD_S = 64 / 48000  # the test server's period (conftest: jackd -S -d dummy -p 64)
NETNS_MISSING = ("a network namespace with only loopback is needed for the Link tests: "
                 "run them as root with unshare, nsenter (util-linux) and ip (iproute2)")


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{NETNS_MISSING} ({why})")
    pytest.skip(f"{NETNS_MISSING} ({why})")


class NetNamespace:
    """A network namespace with loopback up and nothing else, held open by a process that
    waits on its stdin (`unshare -n`); `command(argv)` runs argv inside it (`nsenter -n`).
    Link's multicast then reaches only the processes in it."""

    def __init__(self) -> None:
        for tool in ("unshare", "nsenter", "ip"):
            if shutil.which(tool) is None:
                _unavailable(f"{tool} is missing")
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec cat"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = self.holder.stdout.readline().strip()
        if said != "up":
            self.close()
            _unavailable(self.holder.stderr.read().strip() or "unshare -n failed")

    def command(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *argv]

    def close(self) -> None:
        if self.holder.stdin and not self.holder.stdin.closed:
            self.holder.stdin.close()
        try:
            self.holder.wait(5)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait(5)


class Peer:
    """tests/link_peer.py inside the namespace; `ask` sends a command, returns its reply."""

    def __init__(self, netns: NetNamespace, bpm: float, quantum: int = 4) -> None:
        self.process = subprocess.Popen(
            netns.command(sys.executable, str(PEER), "--bpm", str(bpm),
                          "--quantum", str(quantum)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.process.stdout.readline() or "{}")
        assert ready.get("ready"), "the Link peer did not start"
        self.enabled_at: float = ready["t"]

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class NamespacedDaemon(Daemon):
    """`livegen run` inside the namespace (nsenter execs it: signals reach livegen)."""

    def __init__(self, netns: NetNamespace, config: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = config.with_suffix(".log")
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            netns.command(sys.executable, "-m", "livegen.cli", "run", "--config",
                          str(config), *args),
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=ROOT)


def wait_for_join(daemon: Daemon, timeout: float = 30.0) -> float:
    """Wait until livegen says it joined the peer's session; when it said so."""
    deadline = time.monotonic() + timeout
    while "link: joined" not in (text := daemon.text()):
        assert "link: no peers" not in text, f"livegen did not find the peer:\n{text}"
        assert daemon.process.poll() is None, f"livegen exited:\n{text}"
        assert time.monotonic() < deadline, f"livegen did not join within {timeout} s"
        time.sleep(0.02)
    return time.monotonic()


def link_config(path: Path, *, port: str, receiver: str, inputs: str = "") -> Path:
    path.write_text(f"""
[engine]
generator = "arp"
seed = 5

[clock]
source = "link"
bpm = 120
beats_per_bar = 4
send = true

[output]
api = "jack"
port = "{port}"
require_port = true
panic_channels = [3]
connect = ["{receiver}"]

[generators.arp]
plugin = "arpeggio:Arpeggio"
channel = 3
{inputs}
""")
    return path


def arp_onsets(arrivals: list[tuple[float, tuple[int, ...]]]) -> list[tuple[float, int]]:
    """(arrival time, pitch) of the arpeggio's note-ons (channel 3)."""
    return [(t, m[1]) for t, m in arrivals if m[0] == 0x92 and m[2] > 0]


# Where a note lands against the session's beat: within BEAT_S, but for the rare one a
# shared 2-core machine delays (the daemon's output thread, JACK's delivery, or the
# receiving child's 1 ms poll, each descheduled for a time slice: one CI run saw one note
# of about 30 land 23.8 ms late, the rest within 2 ms): one in OUTLIERS_PER may, and no
# note lands further than OUTLIER_S, a small part of a beat.
BEAT_S = 0.010
OUTLIERS_PER = 25
OUTLIER_S = 0.050


def assert_on_the_beats(offsets: list[float], report: object) -> None:
    off = [x for x in offsets if abs(x) > BEAT_S]
    assert len(off) <= max(1, len(offsets) // OUTLIERS_PER), (off, report)
    assert max(map(abs, offsets)) <= OUTLIER_S, (off, report)


def nearest(times: list[float], t: float) -> float:
    """The signed distance from t to the nearest of `times`."""
    return min((t - s for s in times), key=abs)


def pitch_of_beat(beat: int) -> int:
    return ARP_LOW + MAJOR[beat % 7]


@dataclass
class Session:
    """What one run of livegen in a Link session gave (the session_run fixture)."""

    arrivals: list[tuple[float, tuple[int, ...]]]
    log: str
    tempo_seen: list[float]          # the peer's session tempo, polled until its change
    joined: float                    # when livegen said it joined
    first_bars: list[float]          # the session's bar lines before the tempo change
    first_beats: list[float]
    changed: float                   # when the peer set the new tempo
    started: list[float] = field(default_factory=list)   # when the peer pressed play
    stopped: float = 0.0             # when the peer pressed stop
    late_bars: list[float] = field(default_factory=list)   # bar lines after the change
    late_beats: list[float] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # livegen's --stats-json
    xruns: int = 0                   # what the JACK server reported during the run


FIRST_BPM, LIVEGEN_BPM, NEW_BPM = 150.0, 120.0, 180.0


class Sessions:
    """Runs of session_run's script, one shared by the tests of this module. On a noisy
    machine (a virtual one with steal time: JACK's dummy driver then reports xruns, and
    Link's clock measurements between the peers are disturbed too) a few arrivals came
    2-8 ms early or a beat 12-19 ms off, in one CI run 9 of 401. As with
    retried_on_xruns, a check that fails on a run during which the server reported xruns
    is tried again on a fresh run (which the later tests then share); one that fails
    without an xrun fails at once, and no tolerance is widened."""

    TRIES = 3

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, xruns: XrunCounter) -> None:
        self.tmp_path_factory, self.xruns = tmp_path_factory, xruns
        self.current: Session | None = None

    def fresh(self) -> Session:
        self.current = run_session(self.tmp_path_factory.mktemp("link"), self.xruns)
        return self.current

    def check(self, check: Callable[[Session], None]) -> None:
        session = self.current or self.fresh()
        for tries_left in reversed(range(self.TRIES)):
            try:
                check(session)
                return
            except AssertionError as failure:
                if not session.xruns or not tries_left:
                    raise
                warnings.warn(f"JACK reported {session.xruns} xrun(s) during a Link session "
                              f"that failed {check.__name__} "
                              f"({str(failure).splitlines()[0]}); trying a fresh session",
                              stacklevel=1)
                session = self.fresh()


@pytest.fixture(scope="module")
def session_run(jack_server: None, jack_xruns: XrunCounter,
                tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    """A peer at 150 bpm, livegen (configured for 120) joining it a while later; five
    bars; the peer sets 180 bpm; three bars; it presses play (livegen starts again from
    the top), stop, and play again. Tests check a run through `session_run.check`."""
    return Sessions(tmp_path_factory, jack_xruns)


def run_session(tmp: Path, xruns: XrunCounter) -> Session:
    """One run of session_run's script (see there)."""
    xruns_before = xruns.count
    netns = NetNamespace()
    receiver = JackReceiver(unique_name("livegen-link-rx"))
    peer = Peer(netns, FIRST_BPM)
    time.sleep(PEER_AHEAD_S)
    port = unique_name("livegen-link")
    stats = tmp / "stats.json"
    daemon = NamespacedDaemon(netns, link_config(tmp / "c.toml", port=port,
                                                 receiver=receiver.name),
                              "--stats-json", str(stats), env=PLUGINS)
    try:
        joined = wait_for_join(daemon)
        tempo_seen = []
        while time.monotonic() < joined + 5 * 4 * 60 / FIRST_BPM:
            tempo_seen.append(peer.ask("state")["tempo"])
            time.sleep(0.25)
        before = peer.ask("state")["t"]
        first_bars = peer.ask(f"bars {joined} {before}")["bars"]
        first_beats = peer.ask(f"beats {joined} {before}")["beats"]
        changed = peer.ask(f"tempo {NEW_BPM}")["t"]
        bar_s = 4 * 60 / NEW_BPM
        time.sleep(3.2 * bar_s)
        started = [peer.ask("play 1")["t"]]
        time.sleep(2.5 * bar_s)
        stopped = peer.ask("play 0")["t"]
        time.sleep(1.0)
        started.append(peer.ask("play 1")["t"])
        time.sleep(2.2 * bar_s)
        end = peer.ask("state")["t"]
        late_bars = peer.ask(f"bars {changed} {end}")["bars"]
        late_beats = peer.ask(f"beats {changed} {end}")["beats"]
        assert daemon.stop() == 0, daemon.text()
        receiver.settle()
        return Session(receiver.arrivals, daemon.text(), tempo_seen, joined, first_bars,
                       first_beats, changed, started, stopped, late_bars, late_beats,
                       json.loads(stats.read_text()), xruns.count - xruns_before)
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)
        peer.close()
        receiver.close()
        netns.close()


@pytest.mark.jack
def test_joining_a_session_keeps_its_tempo_and_livegen_plays_at_it(
        session_run: Sessions) -> None:
    session_run.check(joined_at_the_peers_tempo)


def joined_at_the_peers_tempo(s: Session) -> None:
    # The peer's tempo never moved: livegen's configured 120 bpm was not imposed.
    assert all(abs(t - FIRST_BPM) < 0.01 for t in s.tempo_seen), s.tempo_seen
    assert "took livegen's session" not in s.log, s.log
    onsets = [t for t, _ in arp_onsets(s.arrivals) if t < s.changed]
    gaps = [b - a for a, b in itertools.pairwise(onsets)]
    assert len(gaps) >= 12, onsets
    assert abs(statistics.median(gaps) - 60 / FIRST_BPM) < 0.003, gaps


@pytest.mark.jack
def test_bar_lines_land_on_the_peers_bar_lines(session_run: Sessions) -> None:
    session_run.check(assert_bar_lines_on_the_peers)


def own_offsets(s: Session, arrivals: list[tuple[float, float]]) -> list[float]:
    """For each (arrival time, the music's beat it was sent for): its distance from that
    beat on livegen's own placement of the session (its --stats-json `placements`), the
    one in force when it was sent. That is the last made before it, or the one before that
    when the last came within LINK_PULSE_LEAD_S and a JACK period of it (what was that
    near was sent as planned): of two, the nearer."""
    placements = s.figures["clock"]["link"]["placements"]
    made = [at for at, *_ in placements]
    offsets = []
    for t, beat in arrivals:
        last = bisect.bisect_right(made, t) - 1
        assert last >= 0, (t, placements[:2])
        candidates = [placements[last]]
        if last and made[last] > t - SENT_BEFORE_S:
            candidates.append(placements[last - 1])
        offsets.append(min((t - (t0 + (beat - beat0) * 60 / bpm)
                            for _, t0, beat0, bpm in candidates), key=abs))
    return offsets


def peer_offsets(beats: list[float], arrivals: list[tuple[float, float]]) -> list[float]:
    """For each (arrival time, the music's beat): its distance from that beat on the
    peer's `beats` (the music's beat 0 on the peer's beat nearest the first arrival)."""
    zero = beats.index(min(beats, key=lambda b: abs(b - arrivals[0][0])))
    offsets = []
    for t, beat in arrivals:
        whole, part = divmod(zero + beat, 1)
        if whole + (part > 0) >= len(beats):
            break
        a = beats[int(whole)]
        offsets.append(t - (a + (beats[int(whole) + 1] - a) * part if part else a))
    return offsets


SENT_BEFORE_S = 0.002 + JACK_PERIOD_S  # livegen.engine's LINK_PULSE_LEAD_S and a period
# Two peers on one host measure each other's clock by pinging over loopback; while the
# host stalls (a noisy virtual machine) that measurement, and so livegen's placement of
# the session, can be off for a while. livegen's placements must agree with the peer's
# bar lines in the median and may differ by LINK_DISAGREEMENT_S at worst.
LINK_DISAGREEMENT_S = 0.010
LINK_AGREEMENT_S = 0.001


def assert_bar_lines_on_the_peers(s: Session) -> None:
    """livegen's notes and MIDI clock in `s` fell on the peer's bar lines and beats, and
    on its own placement of the session."""
    notes = [(t, p) for t, p in arp_onsets(s.arrivals) if t < s.changed]
    # The music starts at beat 0 on a session bar line: note k is beat k of the music.
    assert [p for _, p in notes] == [pitch_of_beat(k) for k in range(len(notes))], notes
    assert len(notes) >= 16, notes
    # MIDI clock sent: pulse 0 at the first note, then 24 a beat (none lost or doubled,
    # test_a_tempo_set_by_the_peer...), so pulse k is beat k / 24 of the music. Matched by
    # count, not to the nearest pulse: a pulse 9 ms late is not one 7 ms early.
    ticks = [t for t, m in s.arrivals if m == (TICK,) and t < s.changed]
    first = ticks.index(min(ticks, key=lambda t: abs(t - notes[0][0])))
    pulses = [(t, k / 24) for k, t in enumerate(ticks[first:])]
    beats = [(t, float(k)) for k, (t, _) in enumerate(notes)]
    offsets = peer_offsets(s.first_bars, [(t, k / 4) for t, k in beats[::4]])
    clock_offsets = peer_offsets(s.first_bars, [(t, k / 4) for t, k in pulses[::24 * 4]])
    beat_offsets = peer_offsets(s.first_beats, beats + pulses)
    # Where livegen itself put the session: its notes and pulses against that.
    own = own_offsets(s, beats + pulses)
    early = [x for x in own if x < -0.001]
    earliest = min(x for x in own if x >= -0.001)
    # Its placements against the peer's bar lines: Link's agreement between two peers.
    placed = [p for p in s.figures["clock"]["link"]["placements"] if p[0] < s.changed]
    disagreement = [nearest(s.first_bars, t0 + (math.ceil(beat0 / 4 - 1e-9) * 4 - beat0)
                            * 60 / bpm) for _, t0, beat0, bpm in placed]
    report = (f"bar lines at the receiver minus the peer's: median "
              f"{statistics.median(offsets) * 1e3:.2f} ms, max "
              f"{max(map(abs, offsets)) * 1e3:.2f} ms over {len(offsets)} bars; notes and "
              f"pulses minus the peer's beats: max {max(map(abs, beat_offsets)) * 1e3:.2f} "
              f"ms; minus livegen's own placement of them: the earliest of {len(own)} "
              f"{earliest * 1e3:.2f} ms, {len(early)} earlier than -1 ms "
              f"{[round(x * 1e3, 2) for x in early]}, the latest {max(own) * 1e3:.2f} ms; "
              f"its {len(placed)} placements minus the peer's bar lines "
              f"{[round(x * 1e3, 2) for x in disagreement]} ms; livegen's send lateness "
              f"p50 {s.figures['output']['lateness_p50_ms']:.2f} ms")
    print(report)
    # livegen puts its notes and pulses on its placement of the session's beats; JACK
    # then delivers MIDI at the next period boundary (JACK_PERIOD_S) to a receiver that
    # polls every millisecond, so what arrives comes later, never earlier (up to 1 % may).
    # The earliest shows livegen's own placement; the median bar line holds the 2 ms
    # target but for what a shared machine adds to delivery (up to a period, seen at
    # load 9).
    assert earliest <= 0.001 and len(early) <= len(own) // 100, report
    assert_on_the_beats(own, report)
    assert statistics.median(map(abs, disagreement)) <= LINK_AGREEMENT_S, report
    assert max(map(abs, disagreement)) <= LINK_DISAGREEMENT_S, report
    assert len(offsets) >= 4 and len(clock_offsets) >= 4, report
    assert statistics.median(offsets) <= BAR_LINE_S + JACK_PERIOD_S, report
    assert statistics.median(clock_offsets) <= BAR_LINE_S + JACK_PERIOD_S, report
    assert_on_the_beats(beat_offsets, report)


@pytest.mark.jack
def test_a_tempo_set_by_the_peer_moves_the_music_within_a_beat(session_run: Sessions) -> None:
    session_run.check(follows_the_new_tempo)


def follows_the_new_tempo(s: Session) -> None:
    after = [t for t, _ in arp_onsets(s.arrivals)
             if s.changed + 60 / FIRST_BPM < t < s.started[0]]
    assert len(after) >= 5, after
    # From one beat after the change on, every note is on the session's new beats.
    offsets = [nearest(s.late_beats, t) for t in after]
    assert_on_the_beats(offsets, offsets)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert abs(statistics.median(gaps) - 60 / NEW_BPM) < 0.003, gaps
    assert f"the session's tempo is {NEW_BPM:.2f} bpm" in s.log
    # The MIDI clock sent followed with no pulse lost or doubled: 96 pulses a bar. A
    # bar's window opens 2 ms before its line (none arrives early: see the bar-line
    # test), so its last pulse may arrive up to 11.9 ms late at 180 bpm and still count.
    ticks = [t for t, m in s.arrivals if m == (TICK,)]
    bars = [b for b in s.late_bars if s.changed + 0.1 < b < s.started[0]]
    counts = [sum(1 for t in ticks if a - 0.002 < t <= b - 0.002)
              for a, b in itertools.pairwise(bars)]
    assert counts and all(c == 96 for c in counts), counts


@pytest.mark.jack
def test_start_and_stop_from_the_peer_restart_and_pause_the_music(
        session_run: Sessions) -> None:
    session_run.check(started_and_stopped_with_the_peer)


def started_and_stopped_with_the_peer(s: Session) -> None:
    notes = arp_onsets(s.arrivals)
    for start, until in ((s.started[0], s.stopped), (s.started[1], math.inf)):
        # The first bar line at least a moment after the start: from the top there.
        bar = min(b for b in s.late_bars if b > start + 0.06)
        before = [n for n in notes if start + 0.06 < n[0] < bar - 0.005]
        assert not before, ("notes between the start and its bar line", before)
        played = [n for n in notes if bar - 0.005 <= n[0] < until]
        assert len(played) >= 4, played
        assert abs(played[0][0] - bar) <= 0.005, (played[0][0] - bar, played)
        assert [p for _, p in played[:4]] == [pitch_of_beat(k) for k in range(4)], played
    # Stopped: nothing starts after the stop (Link takes up to ~65 ms to tell), and
    # nothing sounds until the next start.
    assert not [n for n in notes if s.stopped + 0.1 < n[0] < s.started[1]], notes
    assert sounding_notes([m for t, m in s.arrivals if t < s.started[1]]) == set()
    assert sounding_notes([m for _, m in s.arrivals]) == set()
    messages = [(t, m) for t, m in s.arrivals if m in ((START,), (STOP,))]
    assert [m for t, m in messages if s.started[0] < t < s.started[1] + 2] == [
        (START,), (STOP,), (START,)], messages



@pytest.mark.jack
def test_a_tempo_rule_sets_the_sessions_tempo_and_never_the_configs_bpm(
        tmp_path: Path, jack_xruns: XrunCounter) -> None:
    # Tried again on a run with xruns (see Sessions): one noisy CI run heard the fast
    # notes 4 ms apart from the session's beats, median 0.394 s for 0.400.
    retried_with_a_receiver(jack_xruns, lambda receiver: tempo_rule_run(tmp_path, receiver))


def tempo_rule_run(tmp_path: Path, jack_receiver: JackReceiver) -> None:
    trace = write_trace(tmp_path / f"{unique_name('t')}.jsonl",
                        [(0.0, {"x": 0.25}), (3.0, {"x": 0.75})])
    rule = f"""
[inputs.hand]
type = "replay"
path = "{trace}"

[[map]]
source = "hand.x"
target = "tempo"
out_range = [60, 180]
"""
    netns = NetNamespace()
    peer = Peer(netns, 100.0)
    time.sleep(PEER_AHEAD_S)
    port = unique_name("livegen-link-rule")
    daemon = NamespacedDaemon(netns, link_config(tmp_path / f"{port}.toml", port=port,
                                                 receiver=jack_receiver.name, inputs=rule),
                              env=PLUGINS)
    try:
        tempi: list[tuple[float, float]] = []
        deadline = time.monotonic() + 40
        while "link: " not in daemon.text():  # the session's tempo while livegen joins
            tempi.append((time.monotonic(), peer.ask("state")["tempo"]))
            assert daemon.process.poll() is None, daemon.text()
            assert time.monotonic() < deadline, "livegen did not join within 40 s"
            time.sleep(0.05)
        wait_for_join(daemon)
        end = time.monotonic() + 15.0  # the music starts at the next bar line (2.7 s)
        while time.monotonic() < end:
            tempi.append((time.monotonic(), peer.ask("state")["tempo"]))
            if round(tempi[-1][1], 2) == 150.0:  # the rule's second value: 2.5 s of it
                end = min(end, tempi[-1][0] + 2.5)
            time.sleep(0.05)
        assert daemon.stop() == 0, daemon.text()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
        peer.close()
        netns.close()
    values = [round(bpm, 2) for _, bpm in tempi]
    # The session's 100 bpm until the rule's first reading, then the rule's 90 and 150;
    # never livegen's configured 120.
    assert values[0] == 100.0 and 120.0 not in values, values
    assert 90.0 in values and values[-1] == 150.0, values
    assert [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]] == [
        100.0, 90.0, 150.0], values
    jack_receiver.settle()
    onsets = [t for t, _ in arp_onsets(jack_receiver.arrivals)]
    became = next(t for t, bpm in tempi if round(bpm, 2) == 150.0)
    fast = [t for t in onsets if t > became + 0.5]
    gaps = [b - a for a, b in itertools.pairwise(fast)]
    assert len(gaps) >= 4 and abs(statistics.median(gaps) - 0.4) < 0.003, (gaps, onsets)


@pytest.mark.jack
def test_a_peer_met_within_half_a_second_that_took_livegens_tempo_is_warned_of(
        tmp_path: Path, jack_receiver: JackReceiver) -> None:
    netns = NetNamespace()
    port = unique_name("livegen-link-eps")
    daemon = NamespacedDaemon(netns, link_config(tmp_path / "c.toml", port=port,
                                                 receiver=jack_receiver.name), env=PLUGINS)
    peer = None
    try:
        daemon.wait_for_log("link: enabled", timeout=30)
        # Enabled a moment after livegen, well within Link's 500 ms: either session may win.
        peer = Peer(netns, FIRST_BPM)
        # They meet while livegen looks for peers, or (on a loaded machine) just after.
        deadline = time.monotonic() + 15
        while peer.ask("state")["peers"] == 0 or not any(
                said in daemon.text() for said in ("link: joined", "link: no peers")):
            assert daemon.process.poll() is None, daemon.text()
            assert time.monotonic() < deadline, f"they did not meet:\n{daemon.text()}"
            time.sleep(0.02)
        time.sleep(0.2)  # livegen follows a session it met after joining within 20 ms
        tempo = peer.ask("state")["tempo"]
        assert daemon.stop() == 0, daemon.text()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
        if peer is not None:
            peer.close()
        netns.close()
    text = daemon.text()
    met_ms = (float(text.split(" ms after enabling")[0].rsplit("met ", 1)[1])
              if "link: joined" in text else math.inf)  # met after its second of looking
    warned = "took livegen's session (120.00 bpm)" in text
    kept = "livegen" if abs(tempo - LIVEGEN_BPM) < 0.01 else "the peer"
    print(f"the session kept {kept}'s tempo ({tempo:.2f} bpm), met after {met_ms:.0f} ms")
    assert abs(tempo - (LIVEGEN_BPM if kept == "livegen" else FIRST_BPM)) < 0.01, tempo
    # livegen knows whose session survived: it warns exactly when its own did, met within
    # Link's 500 ms (and its measuring); when the peer's did, it plays at the peer's tempo.
    assert warned == (kept == "livegen" and met_ms <= 600), (tempo, text)
    assert f"{tempo:.2f} bpm" in text, text  # and it plays at the session's tempo


def test_link_without_the_extra_is_one_line_with_the_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clock]\nsource = "link"\n\n[engine]\ngenerator = "arp"\n'
                   '[generators.arp]\nplugin = "arpeggio:Arpeggio"\n')
    # sys.modules[name] = None is Python's own way to make an import fail as if the
    # package were not installed.
    code = ("import sys; sys.modules['link'] = None; from livegen.cli import main; "
            f"sys.exit(main(['check-config', {str(cfg)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **PLUGINS})
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "clock.source" in lines[0] and "pip install 'livegen[link]'" in lines[0], lines
    # With the extra installed (as in the dev extra), the same config is valid.
    installed = subprocess.run([sys.executable, "-m", "livegen.cli", "check-config",
                                str(cfg)], capture_output=True, text=True, timeout=60,
                               cwd=ROOT, env={**os.environ, **PLUGINS})
    assert installed.returncode == 0, installed.stderr


def test_a_clock_placed_by_an_external_timeline_follows_it_and_its_transport() -> None:
    clock = Clock(120.0, 4)
    clock.place(10.0, 2.0, 150.0)  # beat 2 at t = 10 s, 0.4 s a beat
    grid = clock.grid
    assert clock.following and grid.running and grid.bpm == 150.0
    assert grid.time_at(3.0) == pytest.approx(10.4) and grid.beat_at(9.2) == pytest.approx(0.0)
    clock.stop(11.0)
    stopped = clock.grid
    assert not stopped.running and stopped.beat_at(99.0) == pytest.approx(4.5)
    clock.start_from_top(12.0, 90.0)
    started = clock.grid
    assert started.running and started.started == stopped.started + 1
    assert started.beat_at(12.0) == 0.0 and started.time_at(1.0) == pytest.approx(12 + 60 / 90)
    clock.place(13.0, float("nan"), 100.0)  # refused: the clock holds
    assert clock.grid is started
