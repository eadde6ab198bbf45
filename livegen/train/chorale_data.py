"""Training data for the Langevin chorale model: music21's Bach chorales -> four-voice tokens.

Every four-part chorale of music21's bundled Riemenschneider set (`corpus.chorales.Iterator`,
371 files) whose voices all stay in their ranges (music/roll.VOICE_RANGES) is kept, in its
own key, as (T, 4) tokens on the 16th grid (DeepBach style: pitch, HOLD, REST). What the
original langevin-music code got wrong here is done differently (GENERATORS.md section 1):

- the whole set, not only BWV 250-438 (the original's `byBWV` list: 186 chorales);
- ties are merged first, so a tied note is one pitch token and HOLDs, not a re-attack;
- notes off the 16th grid (triplets, 32nds) snap to the nearest step; a note that snaps
  onto the step of the note before it in its voice is dropped, one that snaps to no length
  keeps one step; both are counted;
- the split is by chorale, never by transposed copy, and chorales that are the same music
  up to transposition are merged first, so no chorale sits in two splits under two names;
- transpositions (every shift that keeps all four voices in range) are made at training
  time from the one stored copy, so they always travel with their chorale.

Each chorale also keeps the steps where its bars begin, so training crops start on bar
lines as live segments do. Parsing takes a minute or two; the result is cached under
.cache/livegen keyed by CACHE_VERSION, the music21 version and the token encoding.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livegen.music import roll
from livegen.train import data

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SPLIT_SEED = 20201208  # langevin-music's HEAD date; any fixed number would do
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, valid, test: test large enough for rule counts
STEPS_PER_QUARTER = 4


@dataclass(frozen=True, slots=True)
class Chorale:
    """One chorale in its own key: id ("bwv269"), tokens (T, 4) int8 and the steps at which
    its bars begin (the first is 0 or the end of the pickup)."""

    id: str
    tokens: np.ndarray
    bar_starts: np.ndarray

    def transpositions(self) -> range:
        return roll.transpositions_in_range(self.tokens)


@dataclass(frozen=True, slots=True)
class Chorales:
    """The chorales of each split, sorted by id, and how they were made."""

    train: tuple[Chorale, ...]
    valid: tuple[Chorale, ...]
    test: tuple[Chorale, ...]
    report: dict

    def split(self, name: str) -> tuple[Chorale, ...]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"no split named {name!r}; use train, valid or test")
        return getattr(self, name)

    def summary(self) -> dict:
        """Chorales, transposed copies and frames per split, and a hash of each split's ids
        (the split is recomputed deterministically; the hash shows it is the same one)."""
        result = dict(self.report)
        for name in ("train", "valid", "test"):
            chorales = self.split(name)
            result[name] = {
                "chorales": len(chorales),
                "transposed_copies": int(sum(len(c.transpositions()) for c in chorales)),
                "frames": int(sum(len(c.tokens) for c in chorales)),
                "ids_sha256": hashlib.sha256("\n".join(c.id for c in chorales).encode()
                                             ).hexdigest()}
        return result


# ---------------------------------------------------------------- extraction (music21)

def _step(quarters: float) -> int:
    # floor(x + 0.5), not round(): Python's round sends 0.5 to the even neighbour.
    return math.floor(float(quarters) * STEPS_PER_QUARTER + 0.5)


def voice_notes(part, voice: int, counts: dict[str, int]) -> list[roll.GridNote]:
    """The notes of one music21 part on the 16th grid, one at a time: ties merged, grace
    notes dropped, a chord reduced to its outer pitch on the voice's side (top for soprano
    and alto, bottom for tenor and bass), off-grid notes snapped (see the module
    docstring). `counts` gathers how often each of these happened."""
    notes: list[roll.GridNote] = []
    for element in part.stripTies().flatten().notes:
        length = float(element.quarterLength)
        if element.duration.isGrace or length <= 0:
            counts["grace_dropped"] += 1
            continue
        pitches = [p.midi for p in element.pitches]
        if len(pitches) > 1:
            counts["chords_reduced"] += 1
        pitch = max(pitches) if voice < 2 else min(pitches)
        start_q, end_q = float(element.offset), float(element.offset) + length
        start, end = _step(start_q), _step(end_q)
        if start_q * STEPS_PER_QUARTER != start or end_q * STEPS_PER_QUARTER != end:
            counts["off_grid_snapped"] += 1
        if notes and start <= notes[-1].start:
            counts["collided_dropped"] += 1  # snapped onto the previous note's step
            continue
        if end <= start:
            end = start + 1
        if notes and notes[-1].end > start:
            notes[-1] = notes[-1]._replace(end=start)
        notes.append(roll.GridNote(pitch, start, end))
    return notes


def bar_starts(part) -> np.ndarray:
    """The steps where the part's bars begin (a pickup bar's start is left out: its bar
    line is not where the music starts)."""
    # music21 numbers a pickup bar 0.
    starts = [_step(measure.offset) for measure in part.getElementsByClass("Measure")
              if measure.number != 0]
    return np.asarray(sorted(set(starts)) or [0], dtype=np.int32)


def parse_chorale(name: str) -> tuple[str, np.ndarray, np.ndarray, dict[str, int]] | str:
    """(id, tokens, bar starts, notes handled) of one corpus file, or the reason it is left
    out:
    "parts" (not four parts), "range" (a voice out of its range), "unreadable"."""
    from music21 import corpus

    try:
        score = corpus.parse(name)
    except Exception as exc:  # a bad file in the bundled corpus must not stop the rest
        log.warning("skipping %s: %s", name, exc)
        return "unreadable"
    parts = list(score.parts)
    if len(parts) != roll.VOICES:
        return "parts"
    counts = {"grace_dropped": 0, "chords_reduced": 0, "off_grid_snapped": 0,
              "collided_dropped": 0}
    voices = [voice_notes(part, voice, counts) for voice, part in enumerate(parts)]
    try:
        tokens = roll.voices_to_tokens(voices)
    except ValueError:
        return "range"
    chorale_id = name.split("/")[-1]
    return chorale_id, tokens.astype(np.int8), bar_starts(parts[0]), counts


def _extract() -> dict[str, np.ndarray]:
    from music21 import corpus
    from tqdm import tqdm

    names = list(corpus.chorales.Iterator(returnType="filename"))
    kept, starts, skipped = [], [], {"parts": 0, "range": 0, "unreadable": 0}
    totals = {"grace_dropped": 0, "chords_reduced": 0, "off_grid_snapped": 0,
              "collided_dropped": 0}
    for name in tqdm(names, desc="parsing chorales", unit="chorale"):
        result = parse_chorale(name)
        if isinstance(result, str):
            skipped[result] += 1
            continue
        chorale_id, tokens, bars, counts = result
        kept.append((chorale_id, tokens))
        starts.append(bars)
        for key, value in counts.items():
            totals[key] += value
    lengths = np.asarray([len(t) for _, t in kept], dtype=np.int64)
    bar_lengths = np.asarray([len(b) for b in starts], dtype=np.int64)
    return {"ids": np.asarray([i for i, _ in kept]),
            "offsets": np.concatenate(([0], np.cumsum(lengths))),
            "tokens": np.concatenate([t for _, t in kept]),
            "bar_offsets": np.concatenate(([0], np.cumsum(bar_lengths))),
            "bar_starts": np.concatenate(starts),
            "files": np.asarray(len(names)),
            "skipped": np.asarray([skipped["parts"], skipped["range"], skipped["unreadable"]]),
            "handled": np.asarray([totals[k] for k in sorted(totals)]),
            "handled_names": np.asarray(sorted(totals))}


def chorale_arrays() -> dict[str, np.ndarray]:
    """Every kept chorale as arrays (parsed once, then cached)."""
    # Keyed by the encoding itself, not roll.py's source, which grows for other models.
    encoding = repr((roll.VOICE_RANGES, roll.PAD, roll.HOLD, roll.REST,
                     roll.FIRST_PITCH_TOKEN)).encode()
    key = (f"v{CACHE_VERSION}-m21-{data.music21_version()}-"
           f"{hashlib.sha256(encoding).hexdigest()[:12]}")
    return data._cached("chorales", key, _extract)


# ---------------------------------------------------------------- split

def canonical(tokens: np.ndarray) -> bytes:
    """The same bytes for a chorale and every transposition of it: the tokens moved to
    their lowest allowed transposition."""
    shift = roll.transpositions_in_range(tokens).start
    return roll.transpose_tokens(tokens, shift).astype(np.int8).tobytes()


def split_chorales(chorales: Sequence[Chorale], seed: int = SPLIT_SEED,
                   fractions: tuple[float, float, float] = SPLIT_FRACTIONS
                   ) -> dict[str, list[Chorale]]:
    """A seeded shuffle of the chorales (by id) into train, valid and test. Chorales that
    are the same music up to transposition count once (the first id is kept)."""
    unique: dict[bytes, Chorale] = {}
    for chorale in sorted(chorales, key=lambda c: c.id):
        unique.setdefault(canonical(chorale.tokens), chorale)
    members = sorted(unique.values(), key=lambda c: c.id)
    order = np.random.default_rng(seed).permutation(len(members))
    n_valid = max(1, round(fractions[1] * len(members)))
    n_test = max(1, round(fractions[2] * len(members)))
    shuffled = [members[i] for i in order]
    splits = {"valid": shuffled[:n_valid], "test": shuffled[n_valid:n_valid + n_test],
              "train": shuffled[n_valid + n_test:]}
    return {name: sorted(part, key=lambda c: c.id) for name, part in splits.items()}


def load_chorales(seed: int = SPLIT_SEED) -> Chorales:
    """The in-range four-part chorales, deduplicated and split by chorale."""
    arrays = chorale_arrays()
    offsets, bar_offsets = arrays["offsets"], arrays["bar_offsets"]
    chorales = [Chorale(str(chorale_id),
                        arrays["tokens"][offsets[i]:offsets[i + 1]].astype(np.int64),
                        arrays["bar_starts"][bar_offsets[i]:bar_offsets[i + 1]])
                for i, chorale_id in enumerate(arrays["ids"])]
    splits = split_chorales(chorales, seed)
    kept = sum(len(part) for part in splits.values())
    skipped = arrays["skipped"].tolist()
    report = {"corpus": "music21 corpus.chorales.Iterator (Riemenschneider), four-part, "
                        "all voices in range",
              "files": int(arrays["files"]), "four_part_in_range": len(chorales),
              "same_up_to_transposition_merged": len(chorales) - kept,
              "skipped": {"not_four_parts": skipped[0], "out_of_range": skipped[1],
                          "unreadable": skipped[2]},
              "notes_handled": dict(zip(arrays["handled_names"].tolist(),
                                        arrays["handled"].tolist(), strict=True)),
              "split_seed": seed, "split_fractions": list(SPLIT_FRACTIONS)}
    log.info("chorales: %d in range of %d files, %d after merging transposed duplicates",
             len(chorales), report["files"], kept)
    return Chorales(*(tuple(splits[name]) for name in ("train", "valid", "test")),
                    report=report)


# ---------------------------------------------------------------- training crops

def crop_starts(chorale: Chorale, length: int) -> np.ndarray:
    """The bar lines at which a crop of `length` steps fits inside the chorale."""
    starts = chorale.bar_starts
    return starts[starts + length <= len(chorale.tokens)]


class CropIndex:
    """Every bar-aligned crop of `length` steps of the chorales, with the shifts that keep
    each crop in range, so that a batch is drawn with a few array operations (a training
    step on a GPU must not wait for Python loops here)."""

    def __init__(self, chorales: Sequence[Chorale], length: int) -> None:
        windows = [c.tokens[s:s + length] for c in chorales for s in crop_starts(c, length)]
        if not windows:
            raise ValueError(f"no chorale holds a crop of {length} steps")
        self.windows = np.stack(windows).astype(np.int64)
        struck = self.windows >= roll.FIRST_PITCH_TOKEN
        offsets = self.windows - roll.FIRST_PITCH_TOKEN
        spans = np.asarray(roll.VOICE_SIZES) - roll.FIRST_PITCH_TOKEN - 1  # high - low
        lowest = np.where(struck, offsets, np.iinfo(np.int64).max).min(axis=1)
        highest = np.where(struck, offsets, np.iinfo(np.int64).min).max(axis=1)
        sounds = struck.any(axis=1)
        self.down = np.where(sounds, -lowest, -10**6).max(axis=1)  # most negative shift
        self.up = np.where(sounds, spans - highest, 10**6).min(axis=1)
        silent = ~sounds.any(axis=1)
        self.down[silent] = self.up[silent] = 0

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, length, 4) int64: crops drawn uniformly, each transposed by a shift
        drawn uniformly from those that keep it in range."""
        picks = rng.integers(len(self.windows), size=count)
        shifts = rng.integers(self.down[picks], self.up[picks] + 1)
        crops = self.windows[picks]
        return np.where(crops >= roll.FIRST_PITCH_TOKEN, crops + shifts[:, None, None], crops)


def random_crops(chorales: Sequence[Chorale], count: int, length: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(count, length, 4) int64 tokens: crops starting on bar lines of the chorales, each
    transposed by a shift drawn uniformly from those that keep it in range (CropIndex).
    A crop that starts inside a note keeps its leading HOLDs: that is the music."""
    return CropIndex(chorales, length).sample(count, rng)
