"""The conditioning control vector (SEEDS.md section 1), one layout for training, runtime and
evaluation.

    [0:10]   mean pitch of the note-ons, one-hot over 10 bins of 4 semitones spanning MIDI
             50..90 (means outside are clamped to the first or last bin)
    [10:20]  note density, one-hot over 10 bins of note-ons per second (DENSITY_EDGES)
    [20:32]  pitch-class histogram of the note-ons (C, C#, ..., B), normalised to sum 1

A window with no note-ons has no mean pitch and no key: it gets the neutral values, the
middle pitch bin (NEUTRAL_PITCH) and the uniform histogram 1/12, and density bin 0. The
engine's neutral Controls are not that vector: pitch 0.5 picks the same middle bin, but
density 0.5 picks bin 5 and key 0 is C major; the uniform histogram is control.NO_KEY's.

`control_layout()` is this layout as a model's manifest records it (training writes it, the
runtime checks it).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from livegen.music.events import (
    NOTE_OFF,
    STEPS_PER_SECOND,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    Note,
    TimedEvent,
)

PITCH_BINS = 10
PITCH_LOW = 50
PITCH_HIGH = 90
PITCH_BIN_WIDTH = (PITCH_HIGH - PITCH_LOW) / PITCH_BINS
NEUTRAL_PITCH = (PITCH_LOW + PITCH_HIGH) / 2

DENSITY_BINS = 10
# Edges in note-ons per second over WINDOW_S, chosen on the training data (chorales and folk
# tunes at 120 bpm, 2.3M token positions; densities there are multiples of 1/3 s^-1, so each
# edge sits between two of them). Share of positions per bin, 0..9 (%):
#   5.6  8.7  7.0  16.2  8.5  21.1  9.9  8.2  6.7  8.0
# Every bin is populated; equal shares would crowd six edges into 2.3..4.3 notes/s (folk
# eighths at 120 bpm), too close together for the control to be heard.
DENSITY_EDGES = (1.2, 1.8, 2.2, 2.8, 3.2, 3.8, 4.2, 5.5, 7.5)

PITCH_CLASSES = 12

PITCH_SLICE = slice(0, PITCH_BINS)
DENSITY_SLICE = slice(PITCH_SLICE.stop, PITCH_SLICE.stop + DENSITY_BINS)
HISTOGRAM_SLICE = slice(DENSITY_SLICE.stop, DENSITY_SLICE.stop + PITCH_CLASSES)
CONTROL_SIZE = HISTOGRAM_SLICE.stop

# The window over which density and the other features are measured (Performance RNN: 3 s).
WINDOW_S = 3.0

_DENSITY_EDGES = np.asarray(DENSITY_EDGES, dtype=np.float64)
_UNIFORM_HISTOGRAM = np.full(PITCH_CLASSES, 1 / PITCH_CLASSES)


def pitch_bin(mean_pitch: float) -> int:
    """The pitch bin 0..9 of a mean MIDI pitch: 4-semitone bins from 50, clamped."""
    if math.isnan(mean_pitch):
        raise ValueError("mean pitch is NaN")
    return min(max(math.floor((mean_pitch - PITCH_LOW) / PITCH_BIN_WIDTH), 0), PITCH_BINS - 1)


def density_bin(note_ons_per_s: float) -> int:
    """The density bin 0..9: the number of DENSITY_EDGES at or below the density."""
    if math.isnan(note_ons_per_s):
        raise ValueError("note density is NaN")
    return bisect.bisect_right(DENSITY_EDGES, note_ons_per_s)


def _normalised_histogram(histogram: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(histogram, dtype=np.float64)
    if values.shape != (PITCH_CLASSES,):
        raise ValueError(f"a pitch-class histogram has 12 values, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"pitch-class histogram {values.tolist()} must be finite and >= 0")
    total = values.sum()
    return values / total if total > 0 else _UNIFORM_HISTOGRAM


def control_vector(
    pitch_bin: int, density_bin: int, histogram: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The (32,) float32 control vector: the two one-hots and the histogram normalised to sum
    1 (all zeros -> uniform)."""
    if not 0 <= pitch_bin < PITCH_BINS:
        raise ValueError(f"pitch bin {pitch_bin} is outside 0..{PITCH_BINS - 1}")
    if not 0 <= density_bin < DENSITY_BINS:
        raise ValueError(f"density bin {density_bin} is outside 0..{DENSITY_BINS - 1}")
    vector = np.zeros(CONTROL_SIZE, dtype=np.float32)
    vector[PITCH_SLICE.start + pitch_bin] = 1
    vector[DENSITY_SLICE.start + density_bin] = 1
    vector[HISTOGRAM_SLICE] = _normalised_histogram(histogram)
    return vector


def controls_to_vector(
    pitch: float, density: float, key_histogram: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The control vector for the engine's normalised Controls: pitch and density in 0..1
    (clamped) pick bin round(x * 9), halves up; the key is 12 non-negative weights,
    normalised (all zeros -> uniform)."""
    if math.isnan(pitch) or math.isnan(density):
        raise ValueError(f"controls pitch={pitch}, density={density} must not be NaN")
    return control_vector(control_bin(pitch, PITCH_BINS), control_bin(density, DENSITY_BINS),
                          key_histogram)


def control_bin(value: float, bins: int) -> int:
    """The bin a normalised control (0..1, clamped) selects: round(value * (bins - 1)),
    halves up."""
    return math.floor(min(max(value, 0.0), 1.0) * (bins - 1) + 0.5)


def pitch_bin_centre(pitch_bin: int) -> float:
    """The MIDI pitch at the middle of a pitch bin."""
    return PITCH_LOW + (pitch_bin + 0.5) * PITCH_BIN_WIDTH


def _window_steps(window_s: float) -> int:
    steps = round(window_s * STEPS_PER_SECOND)
    if steps < 1:
        raise ValueError(f"window {window_s} s is shorter than one 10 ms step")
    return steps


def _pitch_class_histogram(pitches: np.ndarray) -> np.ndarray:
    if len(pitches) == 0:
        return _UNIFORM_HISTOGRAM.copy()
    return np.bincount(pitches % PITCH_CLASSES, minlength=PITCH_CLASSES) / len(pitches)


def _features_of(pitches: np.ndarray, window_steps: int) -> tuple[int, int, np.ndarray]:
    count = len(pitches)
    mean_pitch = pitches.sum() / count if count else NEUTRAL_PITCH
    density = count / (window_steps / STEPS_PER_SECOND)
    return pitch_bin(float(mean_pitch)), density_bin(density), _pitch_class_histogram(pitches)


def window_features(
    times: Sequence[float] | np.ndarray,
    pitches: Sequence[int] | np.ndarray,
    *,
    start: float,
    window_s: float = WINDOW_S,
) -> tuple[int, int, np.ndarray]:
    """(pitch_bin, density_bin, histogram) of the note-ons (onset times in seconds, MIDI
    pitches) with start <= time < start + window_s, compared on the 10 ms grid. The density
    is their number divided by the window length."""
    window_steps = _window_steps(window_s)
    on_steps = np.floor(np.asarray(times, dtype=np.float64) * STEPS_PER_SECOND + 0.5)
    first = math.floor(start * STEPS_PER_SECOND + 0.5)
    inside = (on_steps >= first) & (on_steps < first + window_steps)
    return _features_of(np.asarray(pitches, dtype=np.int64)[inside], window_steps)


def _token_windows(
    tokens: Sequence[int] | np.ndarray, window_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every token position, the range [lo, hi) of note-ons (in order) that fall in the
    window starting at that position's time, and the note-on pitches."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence, got shape {tokens.shape}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= VOCAB_SIZE):
        raise ValueError(f"tokens must lie in 0..{VOCAB_SIZE - 1}")
    is_shift = (tokens >= TIME_SHIFT) & (tokens < VELOCITY)
    shift = np.where(is_shift, tokens - TIME_SHIFT + 1, 0)
    # The time at a position is the time before that token is applied.
    step = np.cumsum(shift) - shift
    is_on = tokens < NOTE_OFF
    lo = np.cumsum(is_on) - is_on
    on_steps = step[is_on]
    hi = np.searchsorted(on_steps, step + window_steps, side="left")
    return lo, hi, tokens[is_on]


def note_on_density(
    tokens: Sequence[int] | np.ndarray, *, window_s: float = WINDOW_S
) -> np.ndarray:
    """Note-ons per second in the window ahead of every token position (float64, one per
    token); what DENSITY_EDGES bins, for tuning them on training data."""
    window_steps = _window_steps(window_s)
    lo, hi, _ = _token_windows(tokens, window_steps)
    return (hi - lo) / (window_steps / STEPS_PER_SECOND)


def control_vectors(
    tokens: Sequence[int] | np.ndarray, *, window_s: float = WINDOW_S
) -> np.ndarray:
    """The control vector for every token position, shape (len(tokens), 32), float32.

    Row i describes the note-ons from token i onwards whose time is less than window_s after
    token i's time (the time before token i is applied). The window looks ahead, not around,
    because the control must describe the music the model is about to produce: a model
    predicting token i is given row i, and at generation time changing the control then
    steers what comes next instead of being averaged with the past the model cannot change.
    Row i equals control_vector(*window_features(times, pitches, start=time_i,
    window_s=window_s)) over the note-ons of tokens i, i + 1, ... (those before token i at the
    same time are already played). Positions within window_s of the end see a window that
    runs past the music, so their density is lower, as Performance RNN's is.
    """
    window_steps = _window_steps(window_s)
    lo, hi, on_pitches = _token_windows(tokens, window_steps)
    count = hi - lo
    has_notes = count > 0
    safe_count = np.maximum(count, 1)

    pitch_sums = np.concatenate(([0], np.cumsum(on_pitches)))
    mean_pitch = np.where(has_notes, (pitch_sums[hi] - pitch_sums[lo]) / safe_count, NEUTRAL_PITCH)
    pitch_bins = np.clip(
        np.floor((mean_pitch - PITCH_LOW) / PITCH_BIN_WIDTH), 0, PITCH_BINS - 1
    ).astype(np.int64)
    density_bins = np.searchsorted(
        _DENSITY_EDGES, count / (window_steps / STEPS_PER_SECOND), side="right"
    )

    vectors = np.zeros((len(count), CONTROL_SIZE), dtype=np.float32)
    rows = np.arange(len(count))
    vectors[rows, PITCH_SLICE.start + pitch_bins] = 1
    vectors[rows, DENSITY_SLICE.start + density_bins] = 1
    pitch_classes = on_pitches % PITCH_CLASSES
    for pitch_class in range(PITCH_CLASSES):
        # One pitch class at a time keeps memory at one cumulative sum per note-on.
        class_sums = np.concatenate(([0], np.cumsum(pitch_classes == pitch_class)))
        vectors[:, HISTOGRAM_SLICE.start + pitch_class] = np.where(
            has_notes, (class_sums[hi] - class_sums[lo]) / safe_count, 1 / PITCH_CLASSES
        )
    return vectors


@dataclass(frozen=True, slots=True)
class RealisedFeatures:
    """What a stretch of music actually has, in the control vector's terms."""

    note_ons: int
    mean_pitch: float | None  # None when there are no note-ons
    note_ons_per_s: float
    histogram: np.ndarray  # (12,) float64, sums to 1; uniform when there are no note-ons

    @property
    def pitch_bin(self) -> int:
        return pitch_bin(NEUTRAL_PITCH if self.mean_pitch is None else self.mean_pitch)

    @property
    def density_bin(self) -> int:
        return density_bin(self.note_ons_per_s)

    def control_vector(self) -> np.ndarray:
        """The control vector that describes this music."""
        return control_vector(self.pitch_bin, self.density_bin, self.histogram)


def realised_features(
    music: Iterable[Note] | Iterable[TimedEvent], *, duration_s: float
) -> RealisedFeatures:
    """The features of the note-ons in `music` (notes, or events whose note-ons have
    velocity > 0) measured over `duration_s` seconds, e.g. a generated segment's length."""
    if not duration_s > 0:
        raise ValueError(f"duration {duration_s} s must be positive")
    pitches = np.asarray(
        [item.pitch for item in music if isinstance(item, Note) or item.velocity > 0],
        dtype=np.int64,
    )
    count = len(pitches)
    return RealisedFeatures(
        note_ons=count,
        mean_pitch=float(pitches.mean()) if count else None,
        note_ons_per_s=count / duration_s,
        histogram=_pitch_class_histogram(pitches),
    )


# ---------------------------------------------------------------- the soft layout
# The Char-RNN's second control encoding: the same 32 values in the same three slices, read
# as positions rather than bins, so that what a performer sends is what training showed.
#
#     [0:10]   mean pitch as a position on the bin axis (bin b's centre is position b),
#              two-hot: position 4.3 -> 0.7 on bin 4 and 0.3 on bin 5
#     [10:20]  note-ons per second over DENSITY_WINDOW_S ahead, as a position through the
#              DENSITY_CENTRES, two-hot the same way
#     [20:32]  pitch-class histogram, normalised to sum 1
#
# A slice of zeros means "not asked": training zeroes each slice at random (and the pitch and
# histogram of a window without notes), so the model learns to choose what it is not told,
# the way it chooses everything when nothing is told. A control a performer does not drive
# is sent that way (generators/charrnn_step.py). Density is measured over a shorter window
# than pitch and key, so that the music answers a density change sooner.

DENSITY_WINDOW_S = 2.0
# The note-ons per second at the middle of each density bin (the last: as far above 7.5 as
# the middle of bin 8 lies below it). np.interp through them gives the position.
DENSITY_CENTRES = (0.6, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.85, 6.5, 8.5)
_DENSITY_CENTRES = np.asarray(DENSITY_CENTRES, dtype=np.float64)
_BIN_AXIS = np.arange(PITCH_BINS, dtype=np.float64)


def pitch_position(mean_pitch: float | np.ndarray) -> float | np.ndarray:
    """A mean MIDI pitch as a position 0..9 on the pitch-bin axis (bin b spans positions
    b - 0.5 .. b + 0.5; clamped)."""
    return np.clip((np.asarray(mean_pitch, dtype=np.float64) - PITCH_LOW) / PITCH_BIN_WIDTH
                   - 0.5, 0, PITCH_BINS - 1)


def pitch_at_position(position: float) -> float:
    """The mean MIDI pitch a pitch position asks for (the inverse of pitch_position)."""
    return PITCH_LOW + (float(position) + 0.5) * PITCH_BIN_WIDTH


def density_position(note_ons_per_s: float | np.ndarray) -> float | np.ndarray:
    """Note-ons per second as a position 0..9 on the density-bin axis: piecewise linear
    through DENSITY_CENTRES, clamped at both ends."""
    return np.interp(np.asarray(note_ons_per_s, dtype=np.float64), _DENSITY_CENTRES,
                     _BIN_AXIS)


def density_at_position(position: float) -> float:
    """The note-ons per second a density position asks for (the inverse)."""
    return float(np.interp(position, _BIN_AXIS, _DENSITY_CENTRES))


def two_hot(positions: np.ndarray, bins: int) -> np.ndarray:
    """(n, bins) float32: each position in 0..bins-1 shared between its two nearest bins
    in proportion to its distance from them (an integer position is a one-hot)."""
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0, bins - 1)
    low = np.minimum(np.floor(positions).astype(np.int64), bins - 2)
    high_weight = positions - low
    rows = np.arange(len(positions))
    result = np.zeros((len(positions), bins), dtype=np.float32)
    result[rows, low] = 1 - high_weight
    result[rows, low + 1] += high_weight
    return result


def soft_vector(pitch: float | None, density: float | None,
                histogram: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """The (32,) float32 soft control vector of a pitch position, a density position (both
    0..9) and a pitch-class histogram (normalised here); None, or an all-zero histogram,
    leaves that slice zero: not asked."""
    vector = np.zeros(CONTROL_SIZE, dtype=np.float32)
    for value, part, bins in ((pitch, PITCH_SLICE, PITCH_BINS),
                              (density, DENSITY_SLICE, DENSITY_BINS)):
        if value is not None:
            if math.isnan(value):
                raise ValueError("a control position is NaN")
            vector[part] = two_hot(np.asarray([value]), bins)[0]
    if histogram is not None:
        values = np.asarray(histogram, dtype=np.float64)
        if values.shape != (PITCH_CLASSES,) or not np.all(np.isfinite(values)) \
                or np.any(values < 0):
            raise ValueError(f"a pitch-class histogram has 12 finite values >= 0, got "
                             f"{values.tolist()}")
        total = values.sum()
        if total > 0:
            vector[HISTOGRAM_SLICE] = values / total
    return vector


def soft_control_vectors(tokens: Sequence[int] | np.ndarray, *, window_s: float = WINDOW_S,
                         density_window_s: float = DENSITY_WINDOW_S) -> np.ndarray:
    """The soft control vector for every token position, (len(tokens), 32) float32: like
    control_vectors (the note-ons from token i on, mean pitch and histogram over window_s,
    density over density_window_s), as positions. A window without note-ons leaves pitch
    and histogram zero (density position 0)."""
    lo, hi, on_pitches = _token_windows(tokens, _window_steps(window_s))
    density_steps = _window_steps(density_window_s)
    _, density_hi, _ = _token_windows(tokens, density_steps)
    count = hi - lo
    has_notes = count > 0
    safe_count = np.maximum(count, 1)
    pitch_sums = np.concatenate(([0], np.cumsum(on_pitches)))
    mean_pitch = (pitch_sums[hi] - pitch_sums[lo]) / safe_count
    rate = (density_hi - lo) / (density_steps / STEPS_PER_SECOND)
    vectors = np.zeros((len(count), CONTROL_SIZE), dtype=np.float32)
    vectors[:, PITCH_SLICE] = two_hot(pitch_position(mean_pitch), PITCH_BINS)
    vectors[~has_notes, PITCH_SLICE] = 0
    vectors[:, DENSITY_SLICE] = two_hot(density_position(rate), DENSITY_BINS)
    vectors[:, HISTOGRAM_SLICE] = window_histograms(on_pitches, lo, hi)
    return vectors


def window_histograms(on_pitches: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(len(lo), 12) float32: the pitch-class histogram of on_pitches[lo[i]:hi[i]] for each
    i, normalised; zeros where the range is empty."""
    count = hi - lo
    safe_count = np.maximum(count, 1)
    result = np.zeros((len(lo), PITCH_CLASSES), dtype=np.float32)
    pitch_classes = np.asarray(on_pitches) % PITCH_CLASSES
    for pitch_class in range(PITCH_CLASSES):
        # One pitch class at a time keeps memory at one cumulative sum per note-on.
        class_sums = np.concatenate(([0], np.cumsum(pitch_classes == pitch_class)))
        result[:, pitch_class] = (class_sums[hi] - class_sums[lo]) / safe_count
    return result


def control_layout(encoding: str = "onehot") -> dict[str, Any]:
    """The control layout as a model's manifest records it: training writes it (train/ship.py)
    and the runtime refuses a model whose layout differs (generators/charrnn.py)."""
    layout = {"size": CONTROL_SIZE,
              "pitch": [PITCH_SLICE.start, PITCH_SLICE.stop],
              "density": [DENSITY_SLICE.start, DENSITY_SLICE.stop],
              "histogram": [HISTOGRAM_SLICE.start, HISTOGRAM_SLICE.stop],
              "pitch_low": PITCH_LOW, "pitch_high": PITCH_HIGH,
              "density_edges": list(DENSITY_EDGES), "window_s": WINDOW_S}
    if encoding == "soft":
        layout.update(encoding="soft", density_window_s=DENSITY_WINDOW_S,
                      density_centres=list(DENSITY_CENTRES), unasked="zeros")
    return layout
