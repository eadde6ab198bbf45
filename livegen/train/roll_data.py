"""Training data for the DCRNN: polyphonic pieces of music21's bundled corpus -> piano rolls
on the 16th grid (with onsets) -> two-bar segments with their scale.

The corpus (offline, bundled with music21), every part of each piece merged into one roll:
    chorales    the 371 Bach chorales of music21.corpus.chorales.Iterator
    palestrina  Palestrina's masses (Humdrum), PALESTRINA_CAP of the 1,318 movements, chosen
                by a seeded draw: parsing them all takes longer than everything else
                together, and they would outnumber every other style ten to one
    monteverdi  the madrigals of books 3 to 5 (.mxl)
    quartets    the string quartets of Haydn, Mozart and Beethoven (.mxl movements)
    trecento    the 14th-century Italian songs (Ciconia, Landini, ...)

Time: a beat is the time signature's denominator (a quarter in 4/4, a half in 4/2, the
tactus Palestrina writes in), and a beat has 4 steps. The live instrument plays 4/4 bars of
16 steps, so a segment starts at the first beat of a full bar of 2 or 4 beats; pieces in
3/x or compound metres still parse, but give no segments. A note shorter than a step still
takes one (roll.piano_roll's rule); a piece whose onsets miss the grid too often (triplets,
fast figures under a half-note beat) is dropped, and the count is logged.

Parsing takes minutes, so `load_pieces` parses once (in parallel) and caches the notes and
bar lines under .cache/livegen, keyed by ROLL_CACHE_VERSION, the music21 version and the
choice of sources. Pieces are deduplicated (the same notes under two names) and split by
piece within each collection with data.SPLIT_SEED, as for the Char-RNN.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livegen.music import roll as rolls
from livegen.music.events import Note
from livegen.train import data

log = logging.getLogger(__name__)

ROLL_CACHE_VERSION = 2  # 2: ties merged by tied_notes, not stripTies
STEPS_PER_BEAT = 4
COLLECTIONS = ("chorales", "palestrina", "monteverdi", "quartets", "trecento")
PALESTRINA_CAP = 300
SOURCE_SEED = 20170502  # which Palestrina movements are parsed
# A piece is kept when at least this share of its onsets and ends fall on the grid.
ON_GRID = 0.95
BEATS_PER_BAR = (2, 4)  # bars whose first beat may start a segment
TRANSPOSE = 6  # augmentation: each segment is moved by a random -6..+6 semitones in range


@dataclass(frozen=True, slots=True)
class RollPiece:
    """One piece: a stable id, its collection, its notes on the grid and where a segment
    may start."""

    id: str
    collection: str
    notes: np.ndarray  # (N, 3) int32: pitch, first step, end step (exclusive)
    starts: np.ndarray  # (M,) int32: first steps of its full 2- or 4-beat bars

    @property
    def steps(self) -> int:
        return int(self.notes[:, 2].max()) if len(self.notes) else 0

    def roll(self) -> np.ndarray:
        """The (steps, 128) uint8 roll of the whole piece (roll.piano_roll)."""
        return grid_roll(self.notes, self.steps)


def grid_roll(notes: np.ndarray, length: int) -> np.ndarray:
    """The roll of (pitch, start, end) grid notes, through roll.piano_roll (one step = a
    quarter second at 60 bpm, so step times are exact in floating point)."""
    step_s = 1 / STEPS_PER_BEAT
    return rolls.piano_roll([Note(int(p), 80, s * step_s, e * step_s) for p, s, e in notes],
                            bpm=60.0, steps_per_beat=STEPS_PER_BEAT, length=length)


@dataclass(frozen=True, slots=True)
class RollCorpus:
    """The pieces of each split, deduplicated, sorted by id."""

    train: tuple[RollPiece, ...]
    valid: tuple[RollPiece, ...]
    test: tuple[RollPiece, ...]
    split_seed: int

    def split(self, name: str) -> tuple[RollPiece, ...]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"no split named {name!r}; use train, valid or test")
        return getattr(self, name)

    def summary(self) -> dict:
        """Pieces and segment starts per split and collection, and a hash of each split's ids."""
        result = {}
        for name in ("train", "valid", "test"):
            pieces = self.split(name)
            per_collection = {
                c: {"pieces": sum(p.collection == c for p in pieces),
                    "bars": int(sum(len(p.starts) for p in pieces if p.collection == c))}
                for c in COLLECTIONS}
            ids = "\n".join(p.id for p in pieces).encode()
            result[name] = {"pieces": len(pieces),
                            "bars": int(sum(len(p.starts) for p in pieces)),
                            "collections": per_collection,
                            "ids_sha256": hashlib.sha256(ids).hexdigest()}
        return result


# ---------------------------------------------------------------- extraction (music21)

def sources() -> list[tuple[str, str]]:
    """(collection, music21 corpus path) of every file to parse."""
    from music21 import corpus

    found = [("chorales", name) for name in corpus.chorales.Iterator(returnType="filename")]
    palestrina = []
    for path in sorted(corpus.getPaths()):
        parts = Path(path).parts
        relative = "/".join(parts[parts.index("corpus") + 1:])
        folder = parts[parts.index("corpus") + 1]
        if folder == "palestrina":
            palestrina.append(relative)
        elif folder == "monteverdi" and relative.endswith(".mxl"):
            found.append(("monteverdi", relative))
        elif (folder in ("haydn", "mozart", "beethoven") and relative.endswith(".mxl")
              and "k545" not in relative):  # k545 is a piano sonata, not a quartet
            found.append(("quartets", relative))
        elif folder == "trecento":
            found.append(("trecento", relative))
    chosen = np.random.default_rng(SOURCE_SEED).permutation(len(palestrina))[:PALESTRINA_CAP]
    found += [("palestrina", palestrina[i]) for i in sorted(chosen)]
    return found


def _beat_length(signature) -> float | None:
    """Quarter lengths per beat of a simple metre (the denominator's note); None for
    compound metres (6/8, 9/8, ...), whose beat is not a power of two."""
    if signature is None or (signature.numerator % 3 == 0 and signature.numerator > 3):
        return None
    return 4.0 / signature.denominator


def tied_notes(part) -> list[tuple[float, float, tuple[int, ...]]]:
    """(offset, quarter length, MIDI pitches) of each note or chord of a part, in order,
    with tied notes merged into one (grace notes and empty ones left out).

    music21's Stream.stripTies does this too, but it re-sorts the stream for every note
    it removes: the four parts of Beethoven's opus 132 took 141 s (one part 27 s even
    flattened first), and the corpus about 2 h to parse. Here a tie is followed by pitch:
    a note or chord that starts where an open tie on the same pitches ends continues it,
    whatever its own mark (files often leave out the stop), and keeps it open if it is
    marked start or continue. Against stripTies over 280 scores (every Monteverdi and
    trecento file, 60 chorales, 60 Palestrina movements, the eight movements of two
    quartets): the same notes in 278, seven times faster; in the other two stripTies
    left a chain of ties (start, continue, stop; start, start) in two notes, and here it
    is one."""
    merged: list[list] = []  # [offset, length, pitches]
    open_at: dict[tuple[int, ...], int] = {}  # pitches -> index in merged of a tie open
    for element in part.flatten().notes:
        length = float(element.quarterLength)
        if element.duration.isGrace or length <= 0:
            continue
        offset = float(element.offset)
        pitches = tuple(p.midi for p in element.pitches)
        tie = element.tie.type if element.tie is not None else None
        index = open_at.pop(pitches, None)
        if index is not None and abs(merged[index][0] + merged[index][1] - offset) < 1e-6:
            merged[index][1] += length
            if tie in ("start", "continue"):
                open_at[pitches] = index
            continue
        if tie in ("start", "continue"):
            open_at[pitches] = len(merged)
        merged.append([offset, length, pitches])
    return [(offset, length, pitches) for offset, length, pitches in merged]


def _score_notes(score) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(notes (N, 3) int32 on the grid, segment starts (M,) int32, share on the grid) of a
    score, or None when it has no simple metre."""
    from music21 import meter, stream

    parts = list(score.parts) or [score]
    signatures = parts[0].recurse().getElementsByClass(meter.TimeSignature)
    beat = _beat_length(signatures.first()) if signatures else 1.0
    if beat is None:
        return None
    steps_per_quarter = STEPS_PER_BEAT / beat
    rows = []
    exact = total = 0
    for part in parts:
        for offset, length, pitches in tied_notes(part):
            start_f = offset * steps_per_quarter
            end_f = start_f + length * steps_per_quarter
            start, end = round(start_f), round(end_f)
            exact += abs(start_f - start) < 1e-6 and abs(end_f - end) < 1e-6
            total += 1
            for pitch in pitches:
                rows.append((pitch, start, max(end, start + 1)))
    if not rows:
        return None
    notes = np.asarray(sorted(rows, key=lambda r: (r[1], r[0])), dtype=np.int32)
    starts = []
    for measure in parts[0].getElementsByClass(stream.Measure):
        signature = measure.timeSignature or measure.getContextByClass(meter.TimeSignature)
        if signature is None or _beat_length(signature) != beat:
            continue
        full = measure.barDuration.quarterLength
        if (signature.numerator in BEATS_PER_BAR
                and abs(measure.duration.quarterLength - full) < 1e-6):
            starts.append(round(float(measure.offset) * steps_per_quarter))
    return notes, np.asarray(starts, dtype=np.int32), exact / total


def parse_source(source: tuple[str, str]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(id, collection, notes, starts) of the score in one corpus file; [] when it will
    not parse, has no simple metre or misses the grid."""
    from music21 import corpus, stream

    collection, path = source
    try:
        parsed = corpus.parse(path)
        scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
        found = []
        for i, score in enumerate(scores):
            result = _score_notes(score)
            if result is None:
                continue
            notes, starts, on_grid = result
            if on_grid < ON_GRID:
                log.debug("skipping %s: %.0f%% of its notes are on the grid", path,
                          100 * on_grid)
                continue
            suffix = f"#{i}" if len(scores) > 1 else ""
            found.append((f"{collection}/{path}{suffix}", collection,
                          notes, starts))
        return found
    except Exception as exc:  # a bad file in the bundled corpus must not stop the rest
        log.warning("skipping %s: %s", path, exc)
        return []


def _extract(workers: int) -> dict[str, np.ndarray]:
    from multiprocessing import get_context

    from tqdm import tqdm

    todo = sources()
    found: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    # Quartets first: a Beethoven movement takes longest, so it must not start last.
    todo.sort(key=lambda s: s[0] != "quartets")
    with get_context("spawn").Pool(workers) as pool:
        for pieces in tqdm(pool.imap_unordered(parse_source, todo), total=len(todo),
                           desc="parsing corpus", unit="file"):
            found.extend(pieces)
    log.info("parsed %d of %d files into pieces with a simple metre on the grid",
             len(found), len(todo))
    found.sort(key=lambda piece: piece[0])
    note_counts = np.asarray([len(n) for _, _, n, _ in found], dtype=np.int64)
    start_counts = np.asarray([len(s) for _, _, _, s in found], dtype=np.int64)
    return {"ids": np.asarray([f[0] for f in found]),
            "collections": np.asarray([f[1] for f in found]),
            "note_offsets": np.concatenate(([0], np.cumsum(note_counts))),
            "notes": np.concatenate([f[2] for f in found]).reshape(-1, 3),
            "start_offsets": np.concatenate(([0], np.cumsum(start_counts))),
            "starts": np.concatenate([f[3] for f in found]).astype(np.int32)}


def corpus_rolls(workers: int | None = None) -> dict[str, np.ndarray]:
    """Every parsed piece: arrays ids, collections, note_offsets, notes, start_offsets,
    starts. Parsed once, then read from the cache."""
    workers = workers or os.cpu_count() or 1
    choice = hashlib.sha256(repr((COLLECTIONS, PALESTRINA_CAP, SOURCE_SEED, ON_GRID,
                                  BEATS_PER_BAR)).encode()).hexdigest()[:8]
    key = f"v{ROLL_CACHE_VERSION}-m21-{data.music21_version()}-{choice}"
    return data._cached("rolls", key, lambda: _extract(workers))


def load_pieces(workers: int | None = None, seed: int = data.SPLIT_SEED) -> RollCorpus:
    """The deduplicated pieces split by piece. Parses and caches on first use."""
    arrays = corpus_rolls(workers)
    notes, note_offsets = arrays["notes"], arrays["note_offsets"]
    starts, start_offsets = arrays["starts"], arrays["start_offsets"]
    seen: set[bytes] = set()
    pieces: dict[str, RollPiece] = {}
    for i, (piece_id, collection) in enumerate(zip(arrays["ids"], arrays["collections"],
                                                   strict=True)):
        piece_notes = notes[note_offsets[i]:note_offsets[i + 1]].astype(np.int32)
        fingerprint = hashlib.sha1(piece_notes.tobytes()).digest()
        if fingerprint in seen:  # ids are sorted: the first name of a piece is kept
            continue
        seen.add(fingerprint)
        pieces[str(piece_id)] = RollPiece(str(piece_id), str(collection), piece_notes,
                                          starts[start_offsets[i]:start_offsets[i + 1]])
    ids = sorted(pieces)
    splits = data.split_ids(ids, [pieces[i].collection for i in ids], seed)
    log.info("roll corpus: %d pieces (%d duplicates dropped)", len(pieces),
             len(arrays["ids"]) - len(pieces))
    return RollCorpus(*(tuple(pieces[i] for i in splits[name])
                        for name in ("train", "valid", "test")), split_seed=seed)


# ---------------------------------------------------------------- segments

@dataclass(frozen=True, slots=True)
class Segments:
    """Training examples: rolls (n, T, 128) uint8 and their scales (n, 12) float32."""

    rolls: np.ndarray
    scales: np.ndarray
    origins: tuple[tuple[str, int, int], ...]  # (piece id, first step, transposition)


class SegmentSource:
    """Draws segments of `steps` steps from pieces, each collection equally often (so the
    long Palestrina masses and quartets do not drown the chorales), a piece of it at random,
    a bar start of it at random; with `transpose`, moved by a random shift that keeps every
    key inside low..high-1. Rolls of whole pieces are built once."""

    def __init__(self, pieces: Sequence[RollPiece], steps: int, low: int, high: int) -> None:
        self.steps, self.low, self.high = steps, low, high
        self._by_collection: dict[str, list[tuple[RollPiece, np.ndarray, np.ndarray]]] = {}
        for piece in pieces:
            whole = piece.roll()
            keys = np.flatnonzero(whole.any(axis=0))
            usable = piece.starts[piece.starts + steps <= len(whole)]
            # Only starts whose segment lies inside the model's keys (it cannot play others).
            usable = np.asarray([s for s in usable if _inside(whole[s:s + steps], low, high)],
                                dtype=np.int64)
            if len(keys) and len(usable):
                self._by_collection.setdefault(piece.collection, []).append(
                    (piece, whole, usable))
        self.collections = sorted(self._by_collection)
        if not self.collections:
            raise ValueError(f"no piece has a segment of {steps} steps within keys "
                             f"{low}..{high - 1}")

    @property
    def segment_count(self) -> int:
        """How many distinct (piece, start) segments there are, before transposition."""
        return sum(len(u) for entries in self._by_collection.values() for _, _, u in entries)

    def draw(self, count: int, rng: np.random.Generator, *, transpose: int = TRANSPOSE
             ) -> Segments:
        segment_rolls = np.zeros((count, self.steps, 128), dtype=np.uint8)
        origins = []
        for i in range(count):
            entries = self._by_collection[self.collections[rng.integers(len(self.collections))]]
            piece, whole, usable = entries[rng.integers(len(entries))]
            start = int(usable[rng.integers(len(usable))])
            segment = whole[start:start + self.steps]
            shift = 0
            if transpose:
                keys = np.flatnonzero(segment.any(axis=0))
                if len(keys):
                    lowest = max(-transpose, self.low - int(keys[0]))
                    highest = min(transpose, self.high - 1 - int(keys[-1]))
                    shift = int(rng.integers(lowest, highest + 1))
                segment = rolls.transpose_roll(segment, shift)
            segment_rolls[i] = segment
            origins.append((piece.id, start, shift))
        return Segments(segment_rolls, rolls.scale_of(segment_rolls), tuple(origins))

    def all_segments(self) -> Segments:
        """Every (piece, start) segment once, untransposed, in a fixed order: the held-out
        set that evaluation compares with."""
        found_rolls, origins = [], []
        for collection in self.collections:
            for piece, whole, usable in self._by_collection[collection]:
                for start in usable:
                    found_rolls.append(whole[start:start + self.steps])
                    origins.append((piece.id, int(start), 0))
        stacked = np.stack(found_rolls)
        return Segments(stacked, rolls.scale_of(stacked), tuple(origins))


def _inside(segment: np.ndarray, low: int, high: int) -> bool:
    return not (segment[:, :low].any() or segment[:, high:].any())
