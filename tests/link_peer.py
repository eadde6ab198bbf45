"""A second Ableton Link peer for the tests (tests/test_link.py), in a process of its own
and run inside the test's network namespace: the same library as livegen (LinkPython-
extern), none of livegen's code, so the bar lines it computes are an independent reference.

    python tests/link_peer.py --bpm 150 --quantum 4

It enables Link (start/stop sync on) and answers one JSON line per command on stdin:
    state                 {"tempo", "peers", "playing", "t"}
    tempo BPM             commits the session tempo now: {"t"}
    play 1 | play 0       starts or stops the session's transport now: {"t"}
    bars T0 T1            monotonic times of the session's bar lines in [T0, T1]: {"bars"}
    beats T0 T1           the same for every beat: {"beats"}
Times are time.monotonic() seconds: Link's own clock (CLOCK_MONOTONIC_RAW on Linux) is
mapped through a pair of readings of both taken together at each command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import link


def clock_pair(clock: link.Clock) -> tuple[float, int]:
    """(time.monotonic(), Link µs) read together: the closest of five tries."""
    best = (math.inf, 0.0, 0)
    for _ in range(5):
        before = time.monotonic()
        micros = clock.micros()
        after = time.monotonic()
        if after - before < best[0]:
            best = (after - before, (before + after) / 2, micros)
    return best[1], best[2]


def grid_times(session: link.Link, t0: float, t1: float, step: float,
               quantum: float) -> list[float]:
    """Monotonic times in [t0, t1] at which the session's beat is a multiple of `step`."""
    now, micros = clock_pair(session.clock())
    state = session.captureAppSessionState()

    def to_micros(t: float) -> int:
        return micros + round((t - now) * 1e6)

    first = math.ceil(state.beatAtTime(to_micros(t0), quantum) / step - 1e-9)
    last = math.floor(state.beatAtTime(to_micros(t1), quantum) / step + 1e-9)
    return [now + (state.timeAtBeat(k * step, quantum) - micros) / 1e6
            for k in range(first, last + 1)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--quantum", type=float, default=4.0)
    args = parser.parse_args()
    session = link.Link(args.bpm)
    session.startStopSyncEnabled = True
    session.enabled = True
    print(json.dumps({"ready": True, "t": time.monotonic()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        now, micros = clock_pair(session.clock())
        reply: dict[str, object] = {"t": now}
        if words[0] == "state":
            state = session.captureAppSessionState()
            reply.update(tempo=state.tempo(), peers=session.numPeers(),
                         playing=state.isPlaying())
        elif words[0] == "tempo":
            state = session.captureAppSessionState()
            state.setTempo(float(words[1]), micros)
            session.commitAppSessionState(state)
        elif words[0] == "play":
            state = session.captureAppSessionState()
            state.setIsPlaying(words[1] == "1", micros)
            session.commitAppSessionState(state)
        elif words[0] in ("bars", "beats"):
            step = args.quantum if words[0] == "bars" else 1.0
            reply[words[0]] = grid_times(session, float(words[1]), float(words[2]), step,
                                         args.quantum)
        else:
            reply = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(reply), flush=True)
    session.enabled = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
