"""The Char-RNN as the engine plays it: the live half of `livegen eval charrnn`.

Every run here goes through the live step generator (generators/charrnn_step.py), one
step at a time under Controls, as the engine plays it: what the performer does not drive
is undriven, keys are sent as the model's key profile, the guards are on. Each condition
is `seeds` runs of `seconds` of music; every figure stands beside the same figure for
held-out real music and for random notes.

- distribution overlap: six feature histograms of the music (pitch-class entropy and
  pitch range per 4 s, inter-onset intervals, melodic intervals, note lengths, polyphony)
  against half the held-out pieces; 1 = alike. Conditions: nobody steering (the live
  default), a performer's random walk of pitch, density and loudness about the middle
  (restless: moving every quarter second), a performer's gestures (holds and glides
  about the middle), a walk sweeping the whole range, and the control timelines of
  held-out pieces sent outright. Beside each walk, held-out music moved to follow the
  walk's register in its own key (`following`): what music that follows the walk
  faithfully scores;
- pitch and density bins: each held for a run; the share of 4-s windows (hop 0.5 s, after
  4 s) whose realised bin is the asked one, the mean, and Spearman rho over the sweep;
- keys: the share of note-ons in the asked major scale, for every key and for no key;
- failures in every run: notes held 8 s or more, drones (8 s of note-ons on at most two
  pitches), clusters (three sounding notes within three semitones), silences of 10 s or
  more, re-struck sounding notes;
- response: note-ons per second in windows after a jump of density (bin 1 <-> 8), each
  note-on spread over the interval after it (a 0.5-s window cannot hold 1.5 whole
  note-ons), and the time from a jump of pitch to the first note within a fifth of the new register;
- copying: the longest note-on run shared with a training piece (exact, and up to
  transposition) in all the music made here and under training pieces' own control
  timelines; the copy guard's interventions.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from livegen.control import FREE_TARGETS, NO_KEY, Controls
from livegen.generators.charrnn import MAJOR_STEPS, CharRNN, CopyIndex, Guide
from livegen.generators.charrnn_step import CharRNNStep, Plan
from livegen.music import events, features
from livegen.music.events import Note

SECONDS = 60.0
BEAT_S = 0.5              # the model's music is in beats of its training tempo (120 bpm)
BAND_WINDOW_S = 4.0       # realised features are measured over windows this long
BAND_HOP_S = 0.5
SETTLE_S = 4.0            # the first seconds of a run are not judged in band
HELD_S = 8.0              # a note held this long is a failure
DRONE_S = 8.0             # note-ons on at most DRONE_PITCHES pitches for this long: a drone
DRONE_PITCHES = 2
CLUSTER_NOTES, CLUSTER_SPAN = 3, 3  # three sounding notes within three semitones
SILENCE_S = 10.0
DENSITY_JUMP = (1, 8)     # bins
PITCH_JUMPS = ((1, 8), (2, 7))
JUMP_SETTLE_S = 10.0
DENSITY_WINDOWS = ((0, 0.5), (0.5, 1), (1, 1.5), (1.5, 2), (2, 3), (3, 4), (4, 6), (6, 8))
ANSWER_SEMITONES = 7      # "in the new register": within a fifth of the asked pitch
ANSWER_S = 0.3
FEATURE_EDGES = {
    "pitch_class_entropy": np.linspace(0, math.log2(12), 13),
    "pitch_range": np.concatenate((np.arange(0, 38, 2), [np.inf])),
    "inter_onset_s": np.concatenate(([0], np.geomspace(0.02, 4, 24), [np.inf])),
    "melodic_interval": np.concatenate(([-np.inf], np.arange(-24.5, 25), [np.inf])),
    "duration_s": np.concatenate(([0], np.geomspace(0.02, 4, 24), [np.inf])),
    "polyphony": np.concatenate((np.arange(-0.5, 7), [np.inf])),
}
FEATURE_WINDOW_S = 4.0
POLYPHONY_GRID_S = 0.125


# ---------------------------------------------------------------- playing

@dataclass(frozen=True, slots=True)
class Run:
    """What a run played: its notes (velocities as sent), for `seconds` of music."""

    notes: list[Note]
    seconds: float
    restruck: int                      # note-ons of a note still sounding
    guards: dict[str, int]
    step_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def onsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, pitches) of the note-ons, in the order played."""
        return (np.asarray([n.start for n in self.notes], dtype=np.float64),
                np.asarray([n.pitch for n in self.notes], dtype=np.int64))


class _Told(CharRNNStep):
    """The live generator told a piece's control vectors outright (at each step, the
    vector of the music ahead at that time) instead of Controls: the guards stay on."""

    def __init__(self, model: CharRNN, schedule: Callable[[float], np.ndarray], **kwargs):
        super().__init__(model, **kwargs)
        self.schedule = schedule

    def plan(self, state: Any, controls: Controls) -> Plan:
        return Plan(self.schedule(state.time), 0, None)


@dataclass(frozen=True, slots=True)
class Steering:
    """The controls over a run: snapshots[i] from times[i] on (times[0] = 0)."""

    times: tuple[float, ...]
    snapshots: tuple[Controls, ...]

    def at(self, t: float) -> Controls:
        return self.snapshots[bisect.bisect_right(self.times, t) - 1]

    def between(self, start: float, end: float) -> float | None:
        """The first change after `start` and before `end`, if any."""
        i = bisect.bisect_right(self.times, start)
        return self.times[i] if i < len(self.times) and self.times[i] < end else None


def held(controls: Controls) -> Steering:
    """The same controls all along."""
    return Steering((0.0,), (controls,))


def play(generator: CharRNNStep, seconds: float, steering: Steering) -> Run:
    """Play `seconds` of music one step at a time, as the engine does (time zero on a bar
    line, 4 beats a bar at the training tempo), under the controls of each moment. A step
    that would pass a change is taken back and the music waits there under the new
    controls, as the player's rollback to a change's cut does."""
    state, index = generator.initial(), 0
    dynamics = getattr(generator, "dynamics", None)
    open_notes: dict[int, tuple[float, int]] = {}
    notes: list[Note] = []
    restruck = 0
    limit = int(seconds * 400) + 1
    step_s = []
    while state.time < seconds and index < limit:
        controls = steering.at(state.time)
        started = time.perf_counter()
        after, played = generator.step(state, controls, index)
        step_s.append(time.perf_counter() - started)
        cut = steering.between(state.time, after.time)
        if cut is not None:
            after, played = generator.wait_until(state, cut, steering.at(cut), index), []
        state = after
        index += 1
        released = set()
        for event in played:
            if event.velocity:
                if event.pitch in open_notes or event.pitch in released:
                    restruck += 1
                velocity = (dynamics(event, event.time / BEAT_S, 4, controls) if dynamics
                            else event.velocity)
                open_notes[event.pitch] = (event.time, velocity)
            elif event.pitch in open_notes:
                start, velocity = open_notes.pop(event.pitch)
                released.add(event.pitch)
                notes.append(Note(event.pitch, velocity, start, max(start, event.time)))
    for pitch, (start, velocity) in open_notes.items():
        notes.append(Note(pitch, velocity, start, max(start, min(state.time, seconds))))
    notes = sorted((n for n in notes if n.start < seconds), key=lambda n: (n.start, n.pitch))
    notes = [dataclasses.replace(n, end=min(n.end, seconds)) for n in notes]
    figures = generator.figures() if hasattr(generator, "figures") else {}
    return Run(notes, seconds, restruck, figures, np.asarray(step_s))


def controls_sweep(target: str, level: int, free: Sequence[str] = FREE_TARGETS
                   ) -> Steering:
    """Controls holding `target` (pitch or density) at bin `level`, the rest undriven."""
    return held(Controls(**{target: level / 9},
                         undriven=tuple(t for t in free if t != target)))


WALKS = ("restless", "gestures", "sweeping")
GESTURE_HOLD_S = 4.0      # a gesture's control holds this long on average...
GESTURE_GLIDE_S = 0.5     # ...then the hand moves to the next place over this long
GESTURE_TREMOR = 0.01     # a held hand as the filtered camera sees it


def random_walk(seed: int, seconds: float, step_s: float = 0.25, *,
                style: str = "restless") -> Steering:
    """A performer's hand on pitch, density and loudness (the key undriven), a new
    snapshot every `step_s`; each control moves on its own. Places are drawn about the
    middle (mean 0.5, spread 0.2) unless sweeping.

    - "restless" (the eval's random walk): an Ornstein-Uhlenbeck walk forgetting over
      about 4 s, moving every step (0.07 a step, 0.6 of a pitch bin), that now and then
      (3% of steps) moves at once to a new place: the asked register moves a median 12
      semitones within 4 s, against 4 for the register of held-out music, whose pitch
      bin changes every 2.3 s on average, by one bin.
    - "gestures": the hand holds a place (with a tremor of 0.01) for a time drawn with
      mean GESTURE_HOLD_S, then glides to the next place over GESTURE_GLIDE_S: a
      performer who moves, then listens.
    - "sweeping": a reflected Gaussian walk over the whole range (0.06 a step) whose
      sudden moves (3% of steps) go anywhere."""
    if style not in WALKS:
        raise ValueError(f"walk style {style!r}: choose one of {', '.join(WALKS)}")
    rng = _rng({"restless": "walk", "gestures": "gestures", "sweeping": "sweep"}[style],
               seed)
    count = int(seconds / step_s) + 2
    values = np.empty((count, 3))
    if style == "gestures":
        for c in range(3):
            values[:, c] = _gestures(rng, count, step_s)
    else:
        sweeping = style == "sweeping"
        values[0] = rng.random(3) if sweeping else np.clip(rng.normal(0.5, 0.2, 3), 0, 1)
        pull = step_s / 4.0  # mean reversion per step
        for i in range(1, count):
            jump = rng.random(3) < 0.03
            if sweeping:
                moved = values[i - 1] + rng.normal(0, 0.06, 3)
                moved[jump] = rng.random(int(jump.sum()))
                moved = np.abs(moved) % 2
                values[i] = np.where(moved > 1, 2 - moved, moved)
            else:
                moved = (values[i - 1] + pull * (0.5 - values[i - 1])
                         + rng.normal(0, 0.2 * math.sqrt(2 * pull), 3))
                moved[jump] = rng.normal(0.5, 0.2, int(jump.sum()))
                values[i] = np.clip(moved, 0, 1)
    snapshots = [Controls(version=i, pitch=float(p), density=float(d),
                          velocity=0.4 + 0.6 * float(v), undriven=("key",))
                 for i, (p, d, v) in enumerate(values)]
    return Steering(tuple(i * step_s for i in range(count)), tuple(snapshots))


def _gestures(rng: np.random.Generator, count: int, step_s: float) -> np.ndarray:
    """One control of the "gestures" walk, `count` snapshots `step_s` apart."""
    values = np.empty(count)
    place = float(np.clip(rng.normal(0.5, 0.2), 0, 1))
    i = 0
    while i < count:
        hold = max(1, round(rng.exponential(GESTURE_HOLD_S) / step_s))
        values[i:i + hold] = place
        i += hold
        target = float(np.clip(rng.normal(0.5, 0.2), 0, 1))
        glide = max(1, round(GESTURE_GLIDE_S / step_s))
        for k in range(1, glide + 1):
            if i < count:
                values[i] = place + (target - place) * k / glide
                i += 1
        place = target
    return np.clip(values + rng.normal(0, GESTURE_TREMOR, count), 0, 1)


def piece_schedule(model: CharRNN, tokens: np.ndarray) -> Callable[[float], np.ndarray]:
    """A piece's own control vectors by time (looping), in the model's encoding."""
    tokens = np.asarray(tokens, dtype=np.int64)
    controls = model.control_vectors(tokens)
    is_shift = (tokens >= events.TIME_SHIFT) & (tokens < events.VELOCITY)
    shift = np.where(is_shift, tokens - events.TIME_SHIFT + 1, 0)
    times = (np.cumsum(shift) - shift) * events.SHIFT_S
    length = max(float(times[-1]), 1.0)

    def schedule(t: float) -> np.ndarray:
        return controls[min(int(np.searchsorted(times, t % length, side="left")),
                            len(times) - 1)]

    return schedule


# ---------------------------------------------------------------- what music is like

def music_features(notes: Sequence[Note], seconds: float) -> dict[str, np.ndarray]:
    """The values of each FEATURE_EDGES feature in a stretch of music."""
    notes = sorted(notes, key=lambda n: (n.start, n.pitch))
    starts = np.asarray([n.start for n in notes], dtype=np.float64)
    ends = np.asarray([n.end for n in notes], dtype=np.float64)
    pitches = np.asarray([n.pitch for n in notes], dtype=np.int64)
    entropy, ranges = [], []
    for a in np.arange(0, max(seconds - FEATURE_WINDOW_S, 0) + 1e-9, FEATURE_WINDOW_S / 2):
        inside = pitches[(starts >= a) & (starts < a + FEATURE_WINDOW_S)]
        if len(inside):
            share = np.bincount(inside % 12, minlength=12) / len(inside)
            share = share[share > 0]
            entropy.append(float(-(share * np.log2(share)).sum()))
            ranges.append(float(inside.max() - inside.min()))
    grid = np.arange(0, seconds, POLYPHONY_GRID_S)
    sounding = ((starts[None, :] <= grid[:, None]) & (ends[None, :] > grid[:, None])).sum(1)
    return {"pitch_class_entropy": np.asarray(entropy),
            "pitch_range": np.asarray(ranges),
            "inter_onset_s": np.diff(np.unique(np.round(starts, 3))),
            "melodic_interval": np.diff(pitches).astype(np.float64),
            "duration_s": ends - starts,
            "polyphony": sounding.astype(np.float64)}


def pooled_features(pieces: Sequence[tuple[Sequence[Note], float]]) -> dict[str, np.ndarray]:
    """music_features of several stretches, pooled."""
    parts = [music_features(notes, seconds) for notes, seconds in pieces]
    return {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0)
            for name in FEATURE_EDGES}


def overlap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per feature, the overlapping area (0..1) of the two samples' histograms over
    FEATURE_EDGES; "mean" their mean."""
    result = {}
    for name, edges in FEATURE_EDGES.items():
        ha, hb = np.histogram(a[name], edges)[0], np.histogram(b[name], edges)[0]
        if ha.sum() == 0 or hb.sum() == 0:
            result[name] = 0.0
            continue
        result[name] = round(float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum()), 4)
    result["mean"] = round(float(np.mean([result[n] for n in FEATURE_EDGES])), 4)
    return result


def piece_notes(tokens: np.ndarray) -> tuple[list[Note], float]:
    """A piece's notes and length (its last note's end)."""
    notes = events.tokens_to_notes(np.asarray(tokens).tolist())
    return notes, max((n.end for n in notes), default=0.0)


def random_pitches(pieces: Sequence[tuple[list[Note], float]], seed: int
                   ) -> list[tuple[list[Note], float]]:
    """The same rhythm with random pitches: each note's pitch uniform over its piece's
    range (random notes with corpus rhythm)."""
    rng = _rng("random notes", seed)
    result = []
    for notes, seconds in pieces:
        if not notes:
            result.append((notes, seconds))
            continue
        low = min(n.pitch for n in notes)
        high = max(n.pitch for n in notes)
        moved = [dataclasses.replace(n, pitch=int(rng.integers(low, high + 1))) for n in notes]
        result.append((events.canonical_notes(moved), seconds))
    return result


def following(pieces: Sequence[tuple[list[Note], float]],
              steering_of: Callable[[int], Steering]) -> list[tuple[list[Note], float]]:
    """Real music played as a walk asks: piece k's notes moved, each at its start, by
    where steering_of(k) asks the register (the centre of the asked pitch bin) less the
    piece's mean pitch, onto the nearest pitch of a class the piece uses (its key kept).
    What music that follows a walk's register faithfully can score: the walk moves the
    register within every 4 s window, which a piece in one place never does."""
    result = []
    for k, (notes, seconds) in enumerate(pieces):
        if not notes:
            result.append((notes, seconds))
            continue
        steering = steering_of(k)
        mean = float(np.mean([n.pitch for n in notes]))
        classes = np.asarray(sorted({n.pitch % 12 for n in notes}))
        moved = []
        for n in notes:
            asked = features.pitch_at_position(features.control_bin(
                steering.at(n.start).pitch, features.PITCH_BINS))
            wanted = n.pitch - mean + asked
            near = np.arange(math.floor(wanted) - 6, math.floor(wanted) + 7)
            near = near[np.isin(near % 12, classes) & (near >= 0) & (near < 128)]
            moved.append(dataclasses.replace(
                n, pitch=int(near[np.argmin(np.abs(near - wanted))])))
        result.append((events.canonical_notes(moved), seconds))
    return result


def excerpt(pieces: Sequence[tuple[list[Note], float]], seconds: float, seed: int
            ) -> list[tuple[list[Note], float]]:
    """Pieces drawn at random (seeded) until they hold `seconds` of music."""
    rng = _rng("excerpt", seed)
    chosen, total = [], 0.0
    for i in rng.permutation(len(pieces)):
        if total >= seconds:
            break
        chosen.append(pieces[i])
        total += pieces[i][1]
    return chosen


# ---------------------------------------------------------------- bins in band

def window_bins(times: np.ndarray, pitches: np.ndarray, start: float, end: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(pitch bin or -1 without notes, density bin) of each BAND_WINDOW_S window from
    `start` every BAND_HOP_S while it fits before `end`."""
    starts = np.arange(start, end - BAND_WINDOW_S + 1e-9, BAND_HOP_S)
    pitch_bins, density_bins = [], []
    for a in starts:
        inside = pitches[(times >= a) & (times < a + BAND_WINDOW_S)]
        pitch_bins.append(features.pitch_bin(float(inside.mean())) if len(inside) else -1)
        density_bins.append(features.density_bin(len(inside) / BAND_WINDOW_S))
    return np.asarray(pitch_bins, np.int64), np.asarray(density_bins, np.int64)


def in_band(run: Run, target: str, level: int) -> float:
    """The share of a run's windows (after SETTLE_S) whose realised bin is `level`."""
    times, pitches = run.onsets
    pitch_bins, density_bins = window_bins(times, pitches, SETTLE_S, run.seconds)
    bins = pitch_bins if target == "pitch" else density_bins
    return float((bins == level).mean()) if len(bins) else 0.0


def real_in_band(pieces: Sequence[np.ndarray], model: CharRNN) -> dict[str, list]:
    """Held-out music against its own controls: per bin, the share of windows (starting
    at each 0.5 s of a piece, fitting inside it) whose realised bin equals the bin of the
    piece's own control there (the music just ahead, as training gives it)."""
    hits = {"pitch": np.zeros(10), "density": np.zeros(10)}
    seen = {"pitch": np.zeros(10), "density": np.zeros(10)}
    for tokens in pieces:
        notes, length = piece_notes(tokens)
        if length < BAND_WINDOW_S:
            continue
        times = np.asarray([n.start for n in notes])
        pitches = np.asarray([n.pitch for n in notes])
        pitch_bins, density_bins = window_bins(times, pitches, 0.0, length)
        starts = np.arange(len(pitch_bins)) * BAND_HOP_S
        for i, a in enumerate(starts):
            ahead = (times >= a) & (times < a + features.WINDOW_S)
            asked_pitch = (features.pitch_bin(float(pitches[ahead].mean()))
                           if ahead.any() else None)
            soon = (times >= a) & (times < a + features.DENSITY_WINDOW_S)
            asked_density = features.density_bin(soon.sum() / features.DENSITY_WINDOW_S)
            if asked_pitch is not None:
                seen["pitch"][asked_pitch] += 1
                hits["pitch"][asked_pitch] += pitch_bins[i] == asked_pitch
            seen["density"][asked_density] += 1
            hits["density"][asked_density] += density_bins[i] == asked_density
    return {name: [round(float(h / s), 3) if s else None for h, s in zip(hits[name],
                                                                        seen[name],
                                                                        strict=True)]
            for name in hits}


def random_in_band(seconds: float, seeds: int) -> dict[str, list]:
    """Random notes asked for exactly a bin: Poisson onsets at the bin's middle rate (2.5
    a second for pitch), pitches uniform within six semitones of the bin's middle (MIDI
    60..80 for density); the share of windows in band."""
    result: dict[str, list] = {"pitch": [], "density": []}
    for level in range(10):
        for target in result:
            shares = []
            for seed in range(seeds):
                rng = _rng("random band " + target, level, seed)
                rate = features.DENSITY_CENTRES[level] if target == "density" else 2.5
                times = np.sort(rng.uniform(0, seconds, rng.poisson(rate * seconds)))
                if target == "pitch":
                    centre = round(features.pitch_at_position(level))
                    pitches = rng.integers(centre - 6, centre + 7, len(times))
                else:
                    pitches = rng.integers(60, 81, len(times))
                notes = [Note(int(p), 80, float(t), float(t) + 0.1)
                         for t, p in zip(times, pitches, strict=True)]
                shares.append(in_band(Run(notes, seconds, 0, {}), target, level))
            result[target].append(round(float(np.mean(shares)), 3))
    return result


# ---------------------------------------------------------------- failures

def failures(run: Run) -> dict[str, float]:
    """What must never happen in a run (see the module docstring), counted."""
    times, pitches = run.onsets
    held = sum(n.end - n.start >= HELD_S for n in run.notes)
    drones = 0
    for a in np.arange(0, max(run.seconds - DRONE_S, 0) + 1e-9, 1.0):
        inside = pitches[(times >= a) & (times < a + DRONE_S)]
        if len(inside) >= 4 and len(set(inside.tolist())) <= DRONE_PITCHES:
            drones += 1
    clusters = 0
    ends = np.asarray([n.end for n in run.notes])
    moments = np.unique(times)
    sounding_at = (times[None, :] <= moments[:, None]) & (ends[None, :] > moments[:, None])
    for row in sounding_at[sounding_at.sum(axis=1) >= CLUSTER_NOTES]:
        sounding = np.sort(pitches[row])
        if (sounding[CLUSTER_NOTES - 1:] - sounding[:1 - CLUSTER_NOTES] <= CLUSTER_SPAN).any():
            clusters += 1
    gaps = np.diff(np.concatenate(([0.0], np.unique(times), [run.seconds])))
    return {"held_8s": int(held), "drone_windows": drones, "cluster_onsets": clusters,
            "silences_10s": int((gaps >= SILENCE_S).sum()),
            "longest_gap_s": round(float(gaps.max()), 2) if len(gaps) else run.seconds,
            "restruck": run.restruck, "note_ons": len(run.notes)}


def total_failures(runs: Sequence[Run]) -> dict[str, float]:
    """failures() summed over runs (the longest gap: the longest of them)."""
    each = [failures(run) for run in runs]
    total = {k: sum(f[k] for f in each) for k in each[0] if k != "longest_gap_s"}
    total["longest_gap_s"] = max(f["longest_gap_s"] for f in each)
    total["runs"] = len(runs)
    return total


def real_failures(pieces: Sequence[tuple[list[Note], float]]) -> dict[str, float]:
    """failures() of real pieces (each its own length)."""
    return total_failures([Run(notes, seconds, 0, {}) for notes, seconds in pieces
                           if seconds > 0])


# ---------------------------------------------------------------- keys

def in_key(run: Run, root: int) -> tuple[int, int]:
    """(note-ons in the major scale of root, note-ons)."""
    _, pitches = run.onsets
    scale = [(root + step) % 12 for step in MAJOR_STEPS]
    return int(np.isin(pitches % 12, scale).sum()), len(pitches)


def best_key_share(run: Run) -> float:
    """The share of note-ons in the major scale that holds most of them (no key asked)."""
    _, pitches = run.onsets
    if not len(pitches):
        return math.nan
    return max(in_key(run, root)[0] for root in range(12)) / len(pitches)


# ---------------------------------------------------------------- jumps

def jump(target: str, start: int, goal: int, free: Sequence[str] = FREE_TARGETS
         ) -> Steering:
    """Controls at bin `start` of `target` for JUMP_SETTLE_S, then at `goal`."""
    rest = tuple(t for t in free if t != target)
    before = Controls(version=1, **{target: start / 9}, undriven=rest)
    after = Controls(version=2, **{target: goal / 9}, undriven=rest)
    return Steering((0.0, JUMP_SETTLE_S), (before, after))


def spread_count(onsets: np.ndarray, start: float, end: float, until: float) -> float:
    """The note-ons in [start, end), each spread evenly over the interval that follows it
    (to the next note-on, or to `until` after the last): the count a window holds, without
    the rounding to whole notes that makes a 0.5-s window read 0 or 2 note-ons a second
    where music plays one every 0.6 s. Summed over a whole run it is the count of note-ons;
    note-ons struck together count one each."""
    total = 0.0
    times = np.sort(onsets)
    bounds = np.append(times, max(until, float(times[-1]))) if len(times) else times
    for t0, t1 in itertools.pairwise(bounds):
        if t1 <= t0:  # a chord's note (or the last note-on at `until`): counted where struck
            total += float(start <= t0 < end)
        else:
            total += max(0.0, min(end, t1) - max(start, t0)) / (t1 - t0)
    return total


def density_response(runs: Sequence[Run], goal: int) -> dict[str, Any]:
    """Note-ons per second after a density jump in DENSITY_WINDOWS (mean over runs): each
    note-on spread over the interval after it (`spread_count`, the figure judged) and
    counted whole (`counted`); the end of the first window in the new band, and whether a
    later one leaves it on the far side (overshoot)."""
    rates, counted = [], []
    for a, b in DENSITY_WINDOWS:
        start, end = JUMP_SETTLE_S + a, JUMP_SETTLE_S + b
        spread = [spread_count(run.onsets[0], start, end, run.seconds) for run in runs]
        whole = [((run.onsets[0] >= start) & (run.onsets[0] < end)).sum() for run in runs]
        rates.append(round(float(np.mean(spread)) / (b - a), 2))
        counted.append(round(float(np.mean(whole)) / (b - a), 2))
    low = features.DENSITY_EDGES[goal - 1] if goal > 0 else 0.0
    high = features.DENSITY_EDGES[goal] if goal < 9 else math.inf
    inside = [low <= r < high for r in rates]
    first = next((i for i, ok in enumerate(inside) if ok), None)
    upward = goal >= 5
    overshoot = first is not None and any(
        (r >= high) if upward else (r < low) for r in rates[first:])
    return {"note_ons_per_s": rates, "counted": counted, "band": [low, high],
            "reached_s": None if first is None else DENSITY_WINDOWS[first][1],
            "overshoot": bool(overshoot)}


def pitch_answers(runs: Sequence[Run], goal: int) -> dict[str, Any]:
    """For each run, seconds from a pitch jump to its first note within ANSWER_SEMITONES
    of the new register (None: none within 4 s), and whether any note-on came within
    ANSWER_S."""
    target = features.pitch_at_position(goal)
    answers, silent = [], 0
    for run in runs:
        times, pitches = run.onsets
        after = times >= JUMP_SETTLE_S
        near = after & (np.abs(pitches - target) <= ANSWER_SEMITONES)
        answers.append(round(float(times[near][0] - JUMP_SETTLE_S), 3)
                       if near.any() and times[near][0] < JUMP_SETTLE_S + 4 else None)
        if not (after & (times < JUMP_SETTLE_S + ANSWER_S)).any():
            silent += 1
    known = [a for a in answers if a is not None]
    return {"target": target, "answers_s": answers,
            "max_s": max(known) if len(known) == len(answers) and known else None,
            "within_0.3s": sum(a is not None and a <= ANSWER_S for a in answers),
            "silent_0.3s": silent, "runs": len(runs)}


# ---------------------------------------------------------------- all of it

def make_generator(model: CharRNN, copy_index: CopyIndex | None, guide: Guide | None,
                   free: str | None = None) -> Callable[[int], CharRNNStep]:
    """The live generator of each run, seeded."""
    return lambda seed: CharRNNStep(model, seed=seed, copy_index=copy_index, guide=guide,
                                    free=free)


def live_figures(model: CharRNN, *, copy_index: CopyIndex | None, guide: Guide | None,
                 test: Sequence[np.ndarray], train_notes: Sequence[np.ndarray],
                 train_sample: Sequence[np.ndarray], free: str | None = None,
                 seconds: float = SECONDS,
                 seeds: int = 24, bin_seeds: int = 8, key_seeds: int = 2,
                 jump_seeds: int = 8,
                 factory: Callable[[int], CharRNNStep] | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every figure of the module docstring, as a dict. `test`: held-out pieces' tokens;
    `train_notes`: every training piece's note-on pitches; `train_sample`: tokens of
    training pieces whose control timelines the model is sent for copying. `seeds`: runs
    per overlap condition, and minutes of held-out music beside them; the overlap of
    histograms reads low on small samples (held-out music against itself: 0.865 from 8
    minutes, 0.91-0.93 from 32), and with 8 runs the live default read 0.77-0.89 over
    three blocks of seeds. `bin_seeds`: runs per pitch or density bin; with 4, blocks of
    seeds read pitch bin 2 in band 0.89-0.96 and bin 5 0.90-0.96."""
    from livegen.evaluate import copying, spearman

    factory = factory or make_generator(model, copy_index, guide, free)
    report: dict[str, Any] = {"free": getattr(factory(0), "free", "pinned"),
                              "seconds": seconds, "seeds": seeds, "bin_seeds": bin_seeds,
                              "key_seeds": key_seeds, "jump_seeds": jump_seeds}
    all_runs: list[Run] = []
    guards = {"copy_guard": 0, "rest_guard": 0}

    def runs_of(name: str, controls_of: Callable[[int], Steering],
                count: int, length: float = seconds,
                made: Callable[[int, int], CharRNNStep] | None = None) -> list[Run]:
        """`count` runs of a condition: run s under controls_of(s), its generator
        made(s, seed) (the live one by default)."""
        runs = []
        for s in range(count):
            seed = _seed(name, s)
            generator = factory(seed) if made is None else made(s, seed)
            run = play(generator, length, controls_of(s))
            for key in guards:
                guards[key] += run.guards.get(key, 0)
            runs.append(run)
        all_runs.extend(runs)
        progress(name)
        return runs

    real = [piece_notes(tokens) for tokens in test]
    reference = pooled_features([p for i, p in enumerate(real) if i % 2 == 0])
    other_half = [p for i, p in enumerate(real) if i % 2 == 1]
    sample = excerpt(other_half, seeds * seconds, seed=0)
    report["overlap"] = {
        "held_out_real": overlap(pooled_features(sample), reference),
        "random_notes": overlap(pooled_features(random_pitches(sample, 0)), reference)}
    conditions = {
        "live_default": lambda s: held(Controls(undriven=FREE_TARGETS)),
        "random_walk": lambda s: random_walk(s, seconds),
        "gesture_walk": lambda s: random_walk(s, seconds, style="gestures"),
        "sweeping_walk": lambda s: random_walk(s, seconds, style="sweeping"),
    }
    failures_by: dict[str, Any] = {"held_out_real": real_failures(real),
                                   "random_notes": real_failures(random_pitches(real, 1))}
    for name, controls_of in conditions.items():
        runs = runs_of(name, controls_of, seeds)
        report["overlap"][name] = overlap(pooled_features([(r.notes, r.seconds)
                                                           for r in runs]), reference)
        failures_by[name] = total_failures(runs)
        if name.endswith("walk"):  # beside it: real music that follows the same walks
            report["overlap"][f"real_{name}"] = overlap(pooled_features(following(
                sample, lambda k, c=controls_of: c(k % seeds))), reference)
    rng = _rng("timelines", 0)
    picks = rng.choice(len(other_half), size=seeds, replace=False)
    held_out = [test[2 * int(i) + 1] for i in picks]
    def told(pieces: Sequence[np.ndarray]) -> Callable[[int, int], CharRNNStep]:
        return lambda s, seed: _Told(model, piece_schedule(model, pieces[s]), seed=seed,
                                     copy_index=copy_index)

    timeline_runs = runs_of("held_out_timelines", lambda s: held(Controls()), seeds,
                            made=told(held_out))
    report["overlap"]["held_out_timelines"] = overlap(
        pooled_features([(r.notes, r.seconds) for r in timeline_runs]), reference)
    failures_by["held_out_timelines"] = total_failures(timeline_runs)

    bands: dict[str, Any] = {}
    for target in ("pitch", "density"):
        shares, means, levels, realised = [], [], [], []
        runs_by_level = []
        for level in range(10):
            runs = runs_of(f"{target}_{level}", lambda s, t=target, v=level:
                           controls_sweep(t, v), bin_seeds)
            runs_by_level.append(runs)
            shares.append(round(float(np.mean([in_band(r, target, level) for r in runs])), 3))
            values = []
            for run in runs:
                times, pitches = run.onsets
                judged = times >= SETTLE_S
                value = (float(pitches[judged].mean()) if target == "pitch" and judged.any()
                         else judged.sum() / (run.seconds - SETTLE_S))
                values.append(value)
                levels.append(level)
                realised.append(value)
            means.append(round(float(np.nanmean(values)), 2))
        bands[target] = {"in_band": shares, "mean": means,
                         "rho": round(spearman(levels, realised), 4),
                         "failures": total_failures([r for rs in runs_by_level for r in rs]),
                         "failures_by_level": [total_failures(rs) for rs in runs_by_level]}
    bands["held_out_real"] = real_in_band(test, model)
    bands["random_notes"] = random_in_band(seconds, bin_seeds)
    report["bands"] = bands

    keys = {}
    for root in [*range(12), NO_KEY]:
        runs = runs_of(f"key_{root}", lambda s, r=root: held(
            Controls(key=r, undriven=("pitch", "density"))), key_seeds)
        if root == NO_KEY:
            keys["none"] = round(float(np.nanmean([best_key_share(r) for r in runs])), 4)
        else:
            inside = np.sum([in_key(r, root) for r in runs], axis=0)
            keys[str(root)] = round(float(inside[0] / max(inside[1], 1)), 4)
    real_best = [best_key_share(Run(notes, s, 0, {})) for notes, s in real if notes]
    report["keys"] = {"in_key": keys,
                      "min_major": min(v for k, v in keys.items() if k != "none"),
                      "held_out_real_best_key": round(float(np.nanmean(real_best)), 4),
                      "random_notes_best_key": round(float(np.nanmean(
                          [best_key_share(Run(n, s, 0, {}))
                           for n, s in random_pitches(real, 2) if n])), 4)}

    length = JUMP_SETTLE_S + DENSITY_WINDOWS[-1][1]
    response: dict[str, Any] = {}
    low, high = DENSITY_JUMP
    for name, start, goal in (("density_up", low, high), ("density_down", high, low)):
        runs = runs_of(name, lambda s, a=start, b=goal: jump("density", a, b), jump_seeds,
                       length)
        response[name] = density_response(runs, goal)
    for start, goal in [pair for a, b in PITCH_JUMPS for pair in ((a, b), (b, a))]:
        name = f"pitch_{start}_to_{goal}"
        runs = runs_of(name, lambda s, a=start, b=goal: jump("pitch", a, b), jump_seeds,
                       length)
        response[name] = pitch_answers(runs, goal)
    report["response"] = response

    generated = [r.onsets[1] for r in all_runs if len(r.notes)]
    trained = runs_of("train_timelines", lambda s: held(Controls()), len(train_sample),
                      made=told(train_sample))
    report["copying"] = {
        "all_live_runs": copying(generated, train_notes),
        "train_timelines": copying([r.onsets[1] for r in trained if len(r.notes)],
                                   train_notes),
        "held_out_real": copying([np.asarray([n.pitch for n in notes]) for notes, _ in real
                                  if notes], train_notes),
        "runs": len(all_runs), "minutes": round(sum(r.seconds for r in all_runs) / 60, 1)}
    report["failures"] = failures_by
    report["guards"] = guards
    steps = np.concatenate([r.step_s for r in all_runs]) * 1e3
    report["step_ms"] = {"p50": round(float(np.percentile(steps, 50)), 3),
                         "p99": round(float(np.percentile(steps, 99)), 3),
                         "steps": len(steps)}
    return report


def _rng(name: str, *numbers: int) -> np.random.Generator:
    """A generator seeded by a name and numbers (stable across runs and machines)."""
    return np.random.default_rng([zlib.crc32(name.encode()), *numbers])


def _seed(name: str, index: int) -> int:
    """A run's seed from its condition's name and its number (stable across runs)."""
    return zlib.crc32(name.encode()) % 100_000 * 100 + index


def format_live(live: dict[str, Any]) -> str:
    """The live figures as the lines `livegen eval charrnn` prints."""
    def row(values: Sequence[Any], width: int = 5) -> str:
        return " ".join(f"{v:{width}.2f}" if isinstance(v, float) else f"{v!s:>{width}}"
                        for v in values)

    lines = [f"live, as the engine plays it (undriven controls: {live['free']}; "
             f"{live['seeds']} x {live['seconds']:g} s per condition):",
             "  distribution overlap with held-out music (1 = alike): "
             + ", ".join(FEATURE_EDGES)]
    for name, figures in live["overlap"].items():
        lines.append(f"    {name:20s} mean {figures['mean']:.3f}   "
                     + row([figures[f] for f in FEATURE_EDGES]))
    bands = live["bands"]
    for target in ("pitch", "density"):
        b = bands[target]
        lines += [f"  {target} bins 0..9 held ({live['bin_seeds']} seeds): rho {b['rho']:.3f}",
                  f"    in band      {row(b['in_band'])}",
                  f"    real music   {row(bands['held_out_real'][target])}",
                  f"    random notes {row(bands['random_notes'][target])}",
                  f"    mean         {row(b['mean'])}"]
    keys = live["keys"]
    lines.append("  note-ons in the asked major key, C..B: "
                 + row([keys["in_key"][str(k)] for k in range(12)])
                 + f"; no key: best key {keys['in_key']['none']:.3f} (real "
                 f"{keys['held_out_real_best_key']:.3f}, random "
                 f"{keys['random_notes_best_key']:.3f})")
    lines.append("  failures (held 8 s / drone windows / cluster onsets / silences 10 s / "
                 "re-struck / longest gap s / runs):")
    for name, f in [*live["failures"].items(),
                    *((f"{t} sweep", live["bands"][t]["failures"]) for t in ("pitch", "density"))]:
        lines.append(f"    {name:20s} {f['held_8s']:4d} {f['drone_windows']:4d} "
                     f"{f['cluster_onsets']:4d} {f['silences_10s']:4d} {f['restruck']:4d} "
                     f"{f['longest_gap_s']:6.2f} {f['runs']:4d}")
    response = live["response"]
    lines.append("  density after a jump, note-ons/s in "
                 + " ".join(f"{a:g}-{b:g}" for a, b in DENSITY_WINDOWS)
                 + " s (each spread over the interval after it; counted whole below):")
    for name in ("density_up", "density_down"):
        r = response[name]
        lines.append(f"    {name:13s} {row(r['note_ons_per_s'])}   band {r['band']}, "
                     f"reached by {r['reached_s']} s, overshoot {r['overshoot']}")
        if "counted" in r:
            lines.append(f"    {'counted':13s} {row(r['counted'])}")
    lines.append("  pitch jumps: first note within a fifth of the new register (s), "
                 "answers within 0.3 s, silent 0.3 s:")
    for name, r in response.items():
        if name.startswith("pitch"):
            known = [a for a in r["answers_s"] if a is not None]
            lines.append(f"    {name:16s} median {np.median(known) if known else math.nan:5.2f}"
                         f" max {max(known) if known else math.nan:5.2f}  "
                         f"{r['within_0.3s']}/{r['runs']}  silent {r['silent_0.3s']}")
    copying = live["copying"]
    for name in ("all_live_runs", "train_timelines", "held_out_real"):
        exact, moved = copying[name]["exact"], copying[name]["transposed"]
        lines.append(f"  copying, {name:16s} longest run exact max {exact['max']:3d} "
                     f"(median {exact['median']:4.1f}), transposed max {moved['max']:3d}; "
                     f"over 16: {moved['over_16']}/{moved['pieces']}")
    lines.append(f"  guards: copy guard stepped in {live['guards']['copy_guard']} times, "
                 f"rest guard {live['guards']['rest_guard']} times, in "
                 f"{copying['minutes']:g} minutes; live step p50 {live['step_ms']['p50']:.3f}"
                 f" ms, p99 {live['step_ms']['p99']:.3f} ms ({live['step_ms']['steps']} steps)")
    return "\n".join(lines)
