"""Ableton Link: livegen as one peer of a Link session (`[clock] source = "link"`).

The session's tempo and phase drive the Clock: the music's beat 0 falls on a session bar
line (the quantum is `clock.beats_per_bar`), so livegen's bar lines are the other peers'.
A follower on the event loop reads the session every POLL_S, and at once when Link says
the tempo or the transport changed, and publishes a new Grid when the tempo changed or
the phase drifted by more than PHASE_TOLERANCE_S; the players re-time what they planned.
A `tempo` rule that moves sets the session's tempo, which every peer follows.

Link keeps a clock of its own. On Linux it is CLOCK_MONOTONIC_RAW in microseconds, not
time.monotonic()'s CLOCK_MONOTONIC (measured here: 0.26 s apart, read together to within
1 µs); where NTP slews the system clock the two also run at slightly different rates. So
every reading of the session samples both clocks together and maps Link's times through
that pair, never through an offset kept from earlier.

Joining never resets the session's tempo: livegen enables Link, looks for peers for up to
JOIN_WAIT_S (Link finds a session within a few ms, or after about 505 ms), then plays at
the session's tempo; it commits a tempo only when a `tempo` rule moves. Link's 500 ms
rule: two peers enabled within about half a second of each other may keep the
newcomer's session, tempo included (Ableton/link, Sessions.hpp, SESSION_EPS). livegen
cannot prevent that, but it sees it (its own timeline survived the meeting) and says so.

Start/stop sync: Link shares a change of transport, not the state (a peer that joins a
playing session is told nothing until someone presses stop or play). So livegen plays
from when it joins; a peer's stop then pauses the music (its notes ended), and a start
begins it again from the top at the session's next bar line.

The library is LinkPython-extern (`import link`, the `link` extra): Link's whole session
API (beat and time at any host time, the time of a start), callbacks from Link's thread
handed to the loop. (aalink, asyncio-native and GPL-3.0+, gives the beat at the present
moment and awaits beats, but no time of a given beat: the bar lines a start waits for.)
Link itself is GPL-2.0+; livegen (MIT) keeps it optional.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from livegen.clock import Clock, Grid
from livegen.errors import LivegenError

log = logging.getLogger(__name__)

# Link finds a session in ~5 ms or ~505 ms (GENERATORS.md 6), then measures it before it
# joins (longer on a loaded machine).
JOIN_WAIT_S = 1.0
POLL_S = 0.02                # the follower reads the session this often, besides callbacks
PHASE_TOLERANCE_S = 0.0005   # a phase drift beyond this publishes a new Grid
START_LEAD_S = 0.05          # a start begins at a bar line at least this far ahead
SESSION_EPS_S = 0.5          # Link's SESSION_EPS: sessions this close in age may swap
MEASURE_S = 0.1              # Link measures a session it found before it joins it
PLACEMENTS_KEPT = 256        # the last placements of the music on the session, in figures()
_ALONE = "no peers yet: livegen's session plays at {bpm:.2f} bpm; peers that join take it"
INSTALL_FIX = ("install livegen's link extra (pip install 'livegen[link]', which brings "
               "LinkPython-extern; Link is GPL-2.0+), or set clock.source = \"internal\"")


def missing_library() -> str | None:
    """Why Ableton Link cannot be used here (one line with the fix), or None."""
    try:
        import link
    except ImportError:
        return f"clock.source: \"link\" needs the Ableton Link library; {INSTALL_FIX}"
    if not hasattr(link, "Link"):
        return (f"clock.source: the module 'link' found at {link.__file__} is not "
                f"LinkPython-extern's; {INSTALL_FIX}")
    return None


class LinkFollower:
    """livegen's peer in a Link session, driving `clock` from it (owned by the loop).

    `on_grid(old)` is called on the loop each time the follower published a new Grid,
    with the Grid it replaced (tempo, phase, a transport stop or start)."""

    def __init__(self, clock: Clock, on_grid: Callable[[Grid], None], *,
                 start_stop_sync: bool = True) -> None:
        problem = missing_library()
        if problem is not None:
            raise LivegenError(problem)
        import link

        self.clock = clock
        self.on_grid = on_grid
        self.quantum = float(clock.beats_per_bar)
        self.start_stop_sync = start_stop_sync
        self._link: Any = link.Link(clock.bpm)
        self._link_clock = self._link.clock()
        self._link.startStopSyncEnabled = start_stop_sync
        self._offset = 0.0  # the Link beat of the music's beat 0 (a session bar line)
        self._requested: float | None = None  # the last tempo a rule asked for
        self._enabled_at = 0.0
        self._own_timeline: tuple[float, float, int] | None = None  # (tempo, beat, at)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Where livegen put the session's timeline, each time it did: (when, the time of
        # the music's beat `beat`, beat, bpm). What its notes and pulses follow, so a
        # difference from another peer's timeline shows as Link's, not the output's.
        self.placements: collections.deque[tuple[float, float, float, float]] = (
            collections.deque(maxlen=PLACEMENTS_KEPT))
        self.phase_moves = 0          # new Grids for a phase drift at the same tempo
        self.largest_phase_move_s = 0.0

    # ------------------------------------------------------------ joining

    def join(self) -> None:
        """Enable Link: the session is looked for in Link's thread from now on."""
        self._enabled_at = time.monotonic()
        micros = self._link_clock.micros()
        state = self._link.captureAppSessionState()
        self._own_timeline = (state.tempo(), state.beatAtTime(micros, self.quantum), micros)
        self._link.enabled = True
        log.info("link: enabled; looking for the session's peers (up to %.1f s)", JOIN_WAIT_S)

    def begin(self, earliest: float) -> float:
        """Wait for the session (until a peer is found, at most JOIN_WAIT_S after `join`),
        then put the music's beat 0 on the session's first bar line at or after monotonic
        time `earliest` (or now, if the wait went past it). Returns that time."""
        deadline = self._enabled_at + JOIN_WAIT_S
        while self._link.numPeers() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        met_s = time.monotonic() - self._enabled_at
        peers = self._link.numPeers()
        if peers:
            self._check_own_session_kept(met_s)
        t, bar, bpm = self._bar_line_after(max(earliest, time.monotonic()))
        self._offset = bar
        self._place(time.monotonic(), t, 0.0, bpm)
        if peers:
            log.info("link: joined a session of %d peer(s) at %.2f bpm, met %.0f ms after "
                     "enabling; the music starts at its bar line in %.0f ms", peers, bpm,
                     met_s * 1e3, (t - time.monotonic()) * 1e3)
        else:
            log.info("link: %s", _ALONE.format(bpm=bpm))
        return t

    def _check_own_session_kept(self, met_s: float) -> None:
        """The first peers were met `met_s` after enabling. Met within SESSION_EPS_S (and
        Link's measuring), with our own timeline unchanged, the peers took livegen's
        session: one enabled just before livegen lost its tempo (Link's 500 ms rule).
        Say so. (A peer enabled later is a newcomer: taking the session is its part.)"""
        if self._own_timeline is None:
            return
        tempo, beat, micros = self._own_timeline
        self._own_timeline = None
        if met_s > SESSION_EPS_S + MEASURE_S:
            return
        state = self._link.captureAppSessionState()
        if state.tempo() == tempo and abs(state.beatAtTime(micros, self.quantum) - beat) < 1e-6:
            log.warning("link: the peers took livegen's session (%.2f bpm): a peer enabled "
                        "within 0.5 s of livegen may have lost its tempo (Link's 500 ms "
                        "rule); start livegen a second before or after the others", tempo)

    # ------------------------------------------------------------ following

    def follow(self) -> None:
        """Follow the session from the running loop: Link's callbacks (from its own
        thread) are handed to the loop, and the session is read every POLL_S."""
        loop = asyncio.get_running_loop()

        def soon(callback: Callable[..., None], *args: Any) -> None:
            # Link's thread calls this; an exception here would reach native code.
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(callback, *args)

        self._link.setTempoCallback(lambda bpm: soon(self.sync))
        self._link.setNumPeersCallback(lambda peers: soon(self._on_peers, peers))
        if self.start_stop_sync:
            self._link.setStartStopCallback(lambda playing: soon(self._on_playing, playing))
        self._task = loop.create_task(self._poll(), name="link-follower")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.sync()
            except Exception:  # a bug here must not end the show: the Clock holds
                log.exception("link: reading the session failed; the clock holds")

    def sync(self) -> None:
        """Read the session; publish a new Grid when its tempo changed or the phase
        drifted by more than PHASE_TOLERANCE_S. While stopped, the Grid stands still
        (a start places the music again)."""
        grid = self.clock.grid
        if self._closed or not grid.running:
            return
        now, micros = self._clock_pair()
        state = self._link.captureAppSessionState()
        bpm = state.tempo()
        beat = state.beatAtTime(micros, self.quantum) - self._offset
        drift = grid.time_at(beat) - now
        if bpm == grid.bpm and abs(drift) <= PHASE_TOLERANCE_S:
            return
        if bpm != grid.bpm:
            log.info("link: the session's tempo is %.2f bpm (was %.2f)", bpm, grid.bpm)
        else:
            log.debug("link: the phase moved by %.3f ms; following it", drift * 1e3)
            self.phase_moves += 1
            self.largest_phase_move_s = max(self.largest_phase_move_s, abs(drift))
        self._place(now, now, beat, bpm)
        self.on_grid(grid)

    def _place(self, at: float, t: float, beat: float, bpm: float) -> None:
        self.clock.place(t, beat, bpm)
        self.placements.append((at, t, beat, bpm))

    def _on_playing(self, playing: bool) -> None:
        """A peer pressed stop or play (start/stop sync)."""
        if self._closed:
            return
        grid = self.clock.grid
        now, micros = self._clock_pair()
        state = self._link.captureAppSessionState()
        at = now + (state.timeForIsPlaying() - micros) / 1e6
        if not playing:
            if grid.running:
                self.clock.stop(max(now, at))
                log.info("link: the session stopped; the music pauses (its notes ended)")
                self.on_grid(grid)
            return
        t, bar, bpm = self._bar_line_after(max(at, now + START_LEAD_S))
        self._offset = bar
        self.clock.start_from_top(t, bpm)
        self.placements.append((now, t, 0.0, bpm))
        log.info("link: the session started; the music begins again from the top at its "
                 "bar line in %.0f ms", (t - now) * 1e3)
        self.on_grid(grid)

    def _on_peers(self, peers: int) -> None:
        if self._closed:
            return
        log.info("link: %d peer(s) in the session", peers)
        if peers:
            self._check_own_session_kept(time.monotonic() - self._enabled_at)
        self.sync()

    # ------------------------------------------------------------ the session's tempo

    def request_tempo(self, bpm: float) -> None:
        """A `tempo` rule moved: the session takes `bpm` now (every peer follows). The
        same value again commits nothing, so a session tempo set by a peer stands until
        the rule moves."""
        if bpm == self._requested or self._closed:
            return
        self._requested = bpm
        _, micros = self._clock_pair()
        state = self._link.captureAppSessionState()
        state.setTempo(bpm, micros)
        self._link.commitAppSessionState(state)
        self.sync()

    # ------------------------------------------------------------ Link's clock

    def _clock_pair(self) -> tuple[float, int]:
        """(time.monotonic(), Link's clock in µs) read together: the closest of three
        tries, so a thread switch between the two reads cannot skew the mapping."""
        best = (math.inf, 0.0, 0)
        for _ in range(3):
            before = time.monotonic()
            micros = self._link_clock.micros()
            after = time.monotonic()
            if after - before < best[0]:
                best = (after - before, (before + after) / 2, micros)
        return best[1], best[2]

    def _bar_line_after(self, earliest: float) -> tuple[float, float, float]:
        """(monotonic time, Link beat, tempo) of the session's first bar line at or after
        monotonic time `earliest`."""
        now, micros = self._clock_pair()
        state = self._link.captureAppSessionState()
        at = micros + round((earliest - now) * 1e6)
        bar = math.ceil(state.beatAtTime(at, self.quantum) / self.quantum - 1e-9) * self.quantum
        return now + (state.timeAtBeat(bar, self.quantum) - micros) / 1e6, bar, state.tempo()

    # ------------------------------------------------------------ the end

    def figures(self) -> dict[str, Any]:
        """The session as livegen follows it: peers, how often and how far its phase
        moved at one tempo (Link's measurements of the session; each move re-times what
        was planned), and the last placements: [when, time, beat, bpm], the music's
        `beat` at monotonic `time` from `when` on."""
        return {"peers": self._link.numPeers(), "quantum": self.quantum,
                "start_stop_sync": self.start_stop_sync, "phase_moves": self.phase_moves,
                "largest_phase_move_ms": round(self.largest_phase_move_s * 1e3, 3),
                "placements": [[round(x, 6) for x in p] for p in self.placements]}

    async def close(self) -> None:
        """Leave the session. Link's callbacks are silenced first: none may wait for the
        interpreter while Link's thread is being stopped."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for setter in (self._link.setTempoCallback, self._link.setNumPeersCallback,
                       self._link.setStartStopCallback):
            setter(_ignore)
        self._link.enabled = False


def _ignore(*_args: Any) -> None:
    """A callback that does nothing (Link's, once livegen leaves)."""
