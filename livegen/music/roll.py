"""16th-note grids: the piano roll (DCRNN) and the four-voice chorale encoding (Langevin,
DeepBach style, as in ekzhang/langevin-music; SEEDS.md section 2).

Grid times: step k starts at k * 60 / bpm / steps_per_beat seconds. Notes snap to the nearest
grid line at both ends and cover at least one step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from livegen.music.events import MIDI_PITCHES, Note

# Piano roll cell values: a roll is (T, 128) uint8; `roll > 0` is the plain boolean roll.
SILENT = 0
SUSTAIN = 1  # sounding, continued from the cell before
ONSET = 2  # sounding, struck in this cell

VOICE_NAMES = ("soprano", "alto", "tenor", "bass")
VOICE_RANGES = ((60, 79), (53, 74), (48, 69), (36, 64))  # C4-G5, F3-D5, C3-A4, C2-E4
PAD = 0  # padding or unused
HOLD = 1  # the previous note (or rest) continues
REST = 2
FIRST_PITCH_TOKEN = 3  # token 3 + (midi - low) is a pitch of the voice's range
VOICE_SIZES = tuple(FIRST_PITCH_TOKEN + high - low + 1 for low, high in VOICE_RANGES)
VOICE_SLICES = tuple(
    slice(sum(VOICE_SIZES[:voice]), sum(VOICE_SIZES[: voice + 1]))
    for voice in range(len(VOICE_SIZES))
)
CHORALE_DIM = sum(VOICE_SIZES)
VOICES = len(VOICE_NAMES)

_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _note_name(pitch: int) -> str:
    return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _step_s(bpm: float, steps_per_beat: int) -> float:
    if not bpm > 0 or steps_per_beat < 1:
        raise ValueError(f"bpm {bpm} and steps_per_beat {steps_per_beat} must be positive")
    return 60 / bpm / steps_per_beat


def _to_step(seconds: float, step_s: float) -> int:
    return math.floor(seconds / step_s + 0.5)


def piano_roll(
    notes: Iterable[Note], *, bpm: float, steps_per_beat: int = 4, length: int | None = None
) -> np.ndarray:
    """The (T, 128) uint8 roll of the notes: ONSET in a note's first cell, SUSTAIN in the rest,
    SILENT elsewhere. A note snapped to zero length still takes its first cell; where notes of
    one pitch overlap, every onset is kept. T is `length` (later notes are cut there) or the
    last note's end."""
    step_s = _step_s(bpm, steps_per_beat)
    spans = []
    for note in notes:
        start = _to_step(note.start, step_s)
        spans.append((note.pitch, start, max(_to_step(note.end, step_s), start + 1)))
    if length is None:
        length = max((end for _, _, end in spans), default=0)
    roll = np.zeros((length, MIDI_PITCHES), dtype=np.uint8)
    for pitch, start, end in spans:
        roll[start:end, pitch] = np.maximum(roll[start:end, pitch], SUSTAIN)
    # Onsets after all sustains, so an overlapping note cannot hide another's onset.
    for pitch, start, _ in spans:
        if start < length:
            roll[start, pitch] = ONSET
    return roll


def roll_to_notes(
    roll: np.ndarray, *, bpm: float, velocity: int = 80, steps_per_beat: int = 4
) -> list[Note]:
    """The notes of a (T, 128) roll, sorted by start then pitch. A cell > 0 sounds; a note
    starts where sounding begins or at an ONSET cell (so repeated notes stay apart in a roll
    from piano_roll, while a boolean roll joins consecutive cells into one note)."""
    step_s = _step_s(bpm, steps_per_beat)
    return [Note(n.pitch, velocity, n.start * step_s, n.end * step_s) for n in grid_notes(roll)]


def grid_notes(roll: np.ndarray) -> list[GridNote]:
    """The notes of a (T, 128) roll on its grid, as roll_to_notes reads them (sorted by start
    then pitch)."""
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != MIDI_PITCHES:
        raise ValueError(f"a piano roll has shape (T, 128), got {roll.shape}")
    steps = roll.shape[0]
    sounding = roll > 0
    before = np.vstack([np.zeros((1, MIDI_PITCHES), dtype=bool), sounding[:-1]])
    starts = sounding & ((roll == ONSET) | ~before)
    # A note ends at the first later cell that is silent or starts another note.
    boundaries = starts | ~sounding
    notes = []
    for pitch in np.flatnonzero(starts.any(axis=0)):
        column_bounds = np.append(np.flatnonzero(boundaries[:, pitch]), steps)
        for start in np.flatnonzero(starts[:, pitch]):
            end = column_bounds[np.searchsorted(column_bounds, start, side="right")]
            notes.append(GridNote(int(pitch), int(start), int(end)))
    notes.sort(key=lambda note: (note.start, note.pitch))
    return notes


class GridNote(NamedTuple):
    """A note on the 16th grid: MIDI pitch, first step, end step (exclusive)."""

    pitch: int
    start: int
    end: int


def voices_to_tokens(
    voices: Sequence[Iterable[tuple[int, int, int]]], *, length: int | None = None
) -> np.ndarray:
    """The (T, 4) int64 chorale tokens of four monophonic voices (soprano, alto, tenor, bass),
    each a list of (pitch, start, end) on the grid: a pitch token at a note's first step, HOLD
    for the rest of it, REST where the voice is silent. T is `length` (later notes are cut
    there) or the last end. ValueError naming the voice for a pitch out of its range or
    overlapping notes."""
    if len(voices) != VOICES:
        raise ValueError(f"a chorale has {VOICES} voices, got {len(voices)}")
    voice_notes = [
        sorted((GridNote(*note) for note in notes), key=lambda note: note.start)
        for notes in voices
    ]
    if length is None:
        length = max((note.end for notes in voice_notes for note in notes), default=0)
    tokens = np.full((length, VOICES), REST, dtype=np.int64)
    for voice, notes in enumerate(voice_notes):
        low, high = VOICE_RANGES[voice]
        name = VOICE_NAMES[voice]
        previous_end = 0
        for note in notes:
            if not low <= note.pitch <= high:
                raise ValueError(
                    f"{name} pitch {note.pitch} ({_note_name(note.pitch)}) at step {note.start}"
                    f" is outside its range {_note_name(low)}-{_note_name(high)} ({low}-{high})"
                )
            if not 0 <= note.start < note.end:
                raise ValueError(f"{name} note {note} needs 0 <= start < end")
            if note.start < previous_end:
                raise ValueError(
                    f"{name} notes overlap at step {note.start}: a voice sings one note at a time"
                )
            previous_end = note.end
            if note.start >= length:
                continue
            tokens[note.start, voice] = FIRST_PITCH_TOKEN + note.pitch - low
            tokens[note.start + 1 : min(note.end, length), voice] = HOLD
    return tokens


def _check_tokens(tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != VOICES:
        raise ValueError(f"chorale tokens have shape (T, 4), got {tokens.shape}")
    for voice, size in enumerate(VOICE_SIZES):
        column = tokens[:, voice]
        if len(column) and (column.min() < 0 or column.max() >= size):
            raise ValueError(f"{VOICE_NAMES[voice]} tokens must lie in 0..{size - 1}")
    return tokens.astype(np.int64)


def tokens_to_onehot(tokens: np.ndarray) -> np.ndarray:
    """The (T, 105) float32 concatenation of the four voices' one-hots."""
    tokens = _check_tokens(tokens)
    onehot = np.zeros((len(tokens), CHORALE_DIM), dtype=np.float32)
    rows = np.arange(len(tokens))
    for voice, block in enumerate(VOICE_SLICES):
        onehot[rows, block.start + tokens[:, voice]] = 1
    return onehot


def onehot_to_tokens(x: np.ndarray) -> np.ndarray:
    """(T, 4) int64 tokens from (T, 105) scores (one-hots, noisy samples): argmax per voice
    block. A HOLD at step 0 or right after PAD has nothing to hold and becomes REST."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != CHORALE_DIM:
        raise ValueError(f"chorale vectors have shape (T, {CHORALE_DIM}), got {x.shape}")
    tokens = np.stack([x[:, block].argmax(axis=1) for block in VOICE_SLICES], axis=1)
    before = np.vstack([np.full((1, VOICES), PAD), tokens[:-1]])
    tokens[(tokens == HOLD) & (before == PAD)] = REST
    return tokens.astype(np.int64)


def chorale_tokens_to_notes(
    tokens: np.ndarray, *, bpm: float, steps_per_beat: int = 4, velocity: int = 80
) -> list[Note]:
    """The notes of (T, 4) chorale tokens, sorted by start then pitch: a pitch token starts a
    note, HOLD extends the note (or rest) before it, REST and PAD end it."""
    tokens = _check_tokens(tokens)
    step_s = _step_s(bpm, steps_per_beat)
    notes = []
    for voice in range(VOICES):
        low = VOICE_RANGES[voice][0]
        sounding: tuple[int, int] | None = None  # (pitch, start step)
        for step, token in enumerate([*tokens[:, voice].tolist(), REST]):
            if token == HOLD:
                continue
            if sounding is not None:
                pitch, start = sounding
                notes.append(Note(pitch, velocity, start * step_s, step * step_s))
                sounding = None
            if token >= FIRST_PITCH_TOKEN:
                sounding = (low + token - FIRST_PITCH_TOKEN, step)
    notes.sort(key=lambda note: (note.start, note.pitch))
    return notes


def transpositions_in_range(tokens: np.ndarray) -> range:
    """The semitone shifts that keep every voice's pitches within its range (range(0, 1)
    when there are no pitches at all: no transposition changes anything then)."""
    tokens = _check_tokens(tokens)
    down_limits, up_limits = [], []
    for voice, (low, high) in enumerate(VOICE_RANGES):
        offsets = tokens[:, voice][tokens[:, voice] >= FIRST_PITCH_TOKEN] - FIRST_PITCH_TOKEN
        if len(offsets):
            down_limits.append(-int(offsets.min()))
            up_limits.append(high - low - int(offsets.max()))
    if not down_limits:
        return range(0, 1)
    return range(max(down_limits), min(up_limits) + 1)


def transpose_tokens(tokens: np.ndarray, shift: int) -> np.ndarray:
    """The tokens with every pitch moved by `shift` semitones; ValueError when a voice would
    leave its range (see transpositions_in_range)."""
    allowed = transpositions_in_range(tokens)
    if shift not in allowed:
        raise ValueError(
            f"transposing by {shift} takes a voice out of its range; allowed: "
            f"{allowed.start}..{allowed.stop - 1}"
        )
    tokens = _check_tokens(tokens)
    return np.where(tokens >= FIRST_PITCH_TOKEN, tokens + shift, tokens)


# --- piano-roll planes and binarisation (DCRNN) ------------------------------------------
# A DCRNN sees a roll as two planes over a window of keys, each cell -1 or +1: "frames"
# (the key sounds) and "onsets" (a note is struck in this cell). The onset plane is what
# keeps two repeated notes apart; with frames alone (the original's roll) they merge.
# The generator writes both planes in [-1, 1]; binarise() turns them back into a roll.

PITCH_CLASSES = 12
BINARISATIONS = ("threshold", "hysteresis", "sample")


def scale_of(roll: np.ndarray) -> np.ndarray:
    """The (12,) float32 scale of a roll: 1/k on each of the k pitch classes that sound in
    it, 0 elsewhere; uniform 1/12 for a silent roll (no key). This is the DCRNN's condition:
    a set of pitch classes, not a weighted histogram, so that a key control's major scale
    (1/7 on seven classes) is a condition the model saw in training. For a batch of rolls
    (N, T, 128), (N, 12)."""
    used = (np.asarray(roll) > 0).any(axis=-2)  # (..., 128)
    classes = np.stack([used[..., c::PITCH_CLASSES].any(axis=-1)
                        for c in range(PITCH_CLASSES)], axis=-1)
    count = classes.sum(axis=-1, keepdims=True)
    return np.where(count > 0, classes / np.maximum(count, 1),
                    1 / PITCH_CLASSES).astype(np.float32)


def roll_planes(roll: np.ndarray, low: int, high: int) -> np.ndarray:
    """The (2, T, high - low) float32 planes (frames, onsets) of keys low..high-1 of a
    (T, 128) roll from piano_roll: +1 where the key sounds / is struck, -1 elsewhere; for
    a batch of rolls (N, T, 128), (N, 2, T, high - low). ValueError if a key outside the
    window sounds (the model could not play it)."""
    roll = np.asarray(roll)
    if roll.ndim not in (2, 3) or roll.shape[-1] != MIDI_PITCHES:
        raise ValueError(f"a piano roll has shape (T, 128) or (N, T, 128), got {roll.shape}")
    if roll[..., :low].any() or roll[..., high:].any():
        raise ValueError(f"the roll sounds keys outside {low}..{high - 1}")
    window = roll[..., low:high]
    sounding = window > 0
    before = np.zeros_like(sounding)
    before[..., 1:, :] = sounding[..., :-1, :]
    # A note's first cell is an onset even in a boolean roll that marks none.
    struck = (window == ONSET) | (sounding & ~before)
    return np.stack([np.where(sounding, 1.0, -1.0), np.where(struck, 1.0, -1.0)],
                    axis=-3).astype(np.float32)


def transpose_roll(roll: np.ndarray, shift: int) -> np.ndarray:
    """The roll with every key moved by `shift` semitones; ValueError when a sounding key
    would leave 0..127."""
    roll = np.asarray(roll)
    keys = np.flatnonzero(roll.any(axis=0))
    if len(keys) and (keys[0] + shift < 0 or keys[-1] + shift >= MIDI_PITCHES):
        raise ValueError(f"transposing by {shift} takes keys {keys[0]}..{keys[-1]} out of "
                         "0..127")
    return np.roll(roll, shift, axis=1)


def binarise(
    planes: np.ndarray,
    low: int,
    *,
    method: str = "hysteresis",
    threshold: float = 0.0,
    sustain: float = -0.5,
    uniforms: np.ndarray | None = None,
) -> np.ndarray:
    """The (T, 128) uint8 roll (SILENT / SUSTAIN / ONSET) of generator planes (2, T, K) in
    [-1, 1] for keys low..low+K-1.

    threshold   a cell sounds where frames > threshold; a note is struck where it starts
                sounding or where onsets > threshold while it sounds.
    hysteresis  a note starts where frames > threshold and continues while frames >
                `sustain` (lower), so a value that wavers around the threshold does not
                cut a held note into fragments; struck again where onsets > threshold.
    sample      each cell sounds with probability (frames + 1) / 2 and is struck with
                probability (onsets + 1) / 2, drawing `uniforms` (2, T, K) in [0, 1).
    """
    planes = np.asarray(planes, dtype=np.float32)
    if planes.ndim != 3 or planes.shape[0] != 2:
        raise ValueError(f"planes have shape (2, T, K), got {planes.shape}")
    _, steps, keys = planes.shape
    if low < 0 or low + keys > MIDI_PITCHES:
        raise ValueError(f"keys {low}..{low + keys - 1} are not all MIDI pitches")
    frames, onsets = planes
    if method == "threshold":
        sounding = frames > threshold
        struck = onsets > threshold
    elif method == "sample":
        if uniforms is None or np.shape(uniforms) != planes.shape:
            raise ValueError(f"sampling needs uniforms of shape {planes.shape}")
        sounding = uniforms[0] < (frames + 1) / 2
        struck = uniforms[1] < (onsets + 1) / 2
    elif method == "hysteresis":
        if not sustain <= threshold:
            raise ValueError(f"sustain {sustain} must not exceed threshold {threshold}")
        sounding = np.zeros((steps, keys), dtype=bool)
        held = np.zeros(keys, dtype=bool)
        for step in range(steps):
            held = np.where(held, frames[step] > sustain, frames[step] > threshold)
            sounding[step] = held
        struck = onsets > threshold
    else:
        raise ValueError(f"no binarisation {method!r}; use one of {', '.join(BINARISATIONS)}")
    before = np.vstack([np.zeros((1, keys), dtype=bool), sounding[:-1]])
    roll = np.zeros((steps, MIDI_PITCHES), dtype=np.uint8)
    window = roll[:, low:low + keys]
    window[sounding] = SUSTAIN
    window[sounding & (struck | ~before)] = ONSET
    return roll


# --- chorale frames (Langevin) ---------------------------------------------------------
# What sounds at each step of a chorale, for voice-leading rules and for turning a
# generated window into the notes of its last bars.

SILENT_PITCH = -1  # sounding_pitches' value where a voice is silent


def sounding_pitches(tokens: np.ndarray, *, before: Sequence[int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """((T, 4) int64 MIDI pitch sounding in each voice at each step, SILENT_PITCH where it
    is silent; (T, 4) bool: a note is struck there). A HOLD continues what sounded at the
    step before; at step 0 it continues `before` (one pitch or SILENT_PITCH per voice,
    e.g. the last frame of a previous window), and without it a leading HOLD is silent."""
    tokens = _check_tokens(tokens)
    steps = len(tokens)
    pitches = np.full((steps, VOICES), SILENT_PITCH, dtype=np.int64)
    struck = np.zeros((steps, VOICES), dtype=bool)
    for voice, (low, _) in enumerate(VOICE_RANGES):
        current = SILENT_PITCH if before is None else int(before[voice])
        for step, token in enumerate(tokens[:, voice].tolist()):
            if token >= FIRST_PITCH_TOKEN:
                current = low + token - FIRST_PITCH_TOKEN
                struck[step, voice] = True
            elif token != HOLD:
                current = SILENT_PITCH
            pitches[step, voice] = current
    return pitches, struck
