"""Training data for the Char-RNN: music21's bundled corpus -> notes -> event tokens.

The corpus (offline, bundled with music21):
    chorales   the 371 Bach chorales of music21.corpus.chorales.Iterator, all parts
    essen      the Essen folk songs (31 .abc files, one tune per score of each opus)
    oneills    O'Neill's Music of Ireland (1850), 39 .abc files
    ryans      Ryan's Mammoth Collection, one .abc file per tune

Scores carry no tempo or dynamics worth keeping, so every piece is played at a fixed
TEMPO_BPM (a quarter note lasts 0.5 s; a chorale 16th is 125 ms) with a fixed VELOCITY.
Ties are merged, grace notes dropped, chords split into their pitches, repeats not expanded.

Parsing takes minutes, so `load_corpus` parses in parallel once and caches the note lists
under .cache/livegen (numpy, keyed by CACHE_VERSION and the music21 version); the tokens are
cached beside them, keyed by the source of music/events.py. A second load takes seconds and
needs no music21, so the cache can travel to a machine that lacks it.

Pieces are split by piece, never by window, within each collection, with a fixed seed; exact
duplicates (the same notes at the same times) are dropped first so that no tune sits in two
splits under two names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livegen.music import events, features

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_DIR = Path(os.environ.get("LIVEGEN_CACHE",
                                Path(__file__).resolve().parents[2] / ".cache" / "livegen"))
TEMPO_BPM = 120.0
SECONDS_PER_QUARTER = 60.0 / TEMPO_BPM
# The scores have no dynamics: one velocity for every note, so the model spends nothing on
# velocity tokens (one per piece). The engine scales loudness itself.
VELOCITY = 80
# Pieces are joined into one stream with this rest between them, so a window that crosses a
# boundary sees a plausible pause rather than a jump, and generation learns to phrase.
PIECE_GAP_TOKENS = (events.TIME_SHIFT_RANGE.token(events.MAX_SHIFT_STEPS),)
TRANSPOSE = 6  # augmentation: every training pass transposes each piece by -6..+6 semitones
SPLIT_SEED = 20170501
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # train, valid, test
COLLECTIONS = ("chorales", "essen", "oneills", "ryans")
# The token generation starts from: the velocity token every training piece starts with.
PRIMER_TOKEN = events.VELOCITY_RANGE.token(events.velocity_to_bin(VELOCITY))


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece: a stable id ("essen/altdeu10.abc#12"), its collection and its tokens."""

    id: str
    collection: str
    tokens: np.ndarray  # int16, the event tokens from time 0

    @property
    def notes(self) -> list[events.Note]:
        return events.tokens_to_notes(self.tokens.tolist())


@dataclass(frozen=True, slots=True)
class Corpus:
    """The pieces of each split (train, valid, test), deduplicated, sorted by id."""

    train: tuple[Piece, ...]
    valid: tuple[Piece, ...]
    test: tuple[Piece, ...]
    split_seed: int

    def split(self, name: str) -> tuple[Piece, ...]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"no split named {name!r}; use train, valid or test")
        return getattr(self, name)

    def summary(self) -> dict:
        """Pieces and tokens per split and collection, and a hash of each split's ids (the
        split is recomputed deterministically; the hash proves it is the same one)."""
        result = {}
        for name in ("train", "valid", "test"):
            pieces = self.split(name)
            per_collection = {
                c: {"pieces": sum(p.collection == c for p in pieces),
                    "tokens": int(sum(len(p.tokens) for p in pieces if p.collection == c))}
                for c in COLLECTIONS}
            ids = "\n".join(p.id for p in pieces).encode()
            result[name] = {"pieces": len(pieces),
                            "tokens": int(sum(len(p.tokens) for p in pieces)),
                            "collections": per_collection,
                            "ids_sha256": hashlib.sha256(ids).hexdigest()}
        return result


# ---------------------------------------------------------------- extraction (music21)

def _sources() -> list[tuple[str, str]]:
    """(collection, music21 corpus path) for every file to parse."""
    from music21 import corpus

    sources = [("chorales", name) for name in
               corpus.chorales.Iterator(returnType="filename")]
    folders = {"essenFolksong": "essen", "oneills1850": "oneills", "ryansMammoth": "ryans"}
    for path in sorted(corpus.getPaths()):
        parts = Path(path).parts
        for folder, collection in folders.items():
            if folder in parts:
                relative = Path(*parts[parts.index(folder):])
                sources.append((collection, str(relative)))
    return sources


def _score_notes(score) -> np.ndarray:
    """(pitch, start_s, end_s) rows of a music21 score at the fixed tempo."""
    rows = []
    parts = list(score.parts) or [score]
    for part in parts:
        for element in part.stripTies().flatten().notes:
            length = float(element.quarterLength)
            if element.duration.isGrace or length <= 0:
                continue
            start = float(element.offset) * SECONDS_PER_QUARTER
            end = start + length * SECONDS_PER_QUARTER
            for pitch in getattr(element, "pitches", ()):
                if 0 <= pitch.midi < events.MIDI_PITCHES:
                    rows.append((pitch.midi, start, end))
    rows.sort(key=lambda row: (row[1], row[0]))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def _parse_source(source: tuple[str, str]) -> list[tuple[str, str, np.ndarray]]:
    """(id, collection, notes) of each score in one corpus file; [] when it will not parse."""
    from music21 import corpus, stream

    collection, path = source
    try:
        parsed = corpus.parse(path)
    except Exception as exc:  # a bad file in the bundled corpus must not stop the rest
        log.warning("skipping %s: %s", path, exc)
        return []
    if isinstance(parsed, stream.Opus):
        scores = [(f"{collection}/{Path(path).name}#{i}", s) for i, s in enumerate(parsed.scores)]
    else:
        scores = [(f"{collection}/{Path(path).name}", parsed)]
    pieces = []
    for piece_id, score in scores:
        try:
            notes = _score_notes(score)
        except Exception as exc:
            log.warning("skipping %s: %s", piece_id, exc)
            continue
        if len(notes):
            pieces.append((piece_id, collection, notes))
    return pieces


def _extract(workers: int) -> dict[str, np.ndarray]:
    from multiprocessing import get_context

    from tqdm import tqdm

    sources = _sources()
    # Big files first, so the slowest opus does not start last.
    sources.sort(key=lambda s: s[0] != "essen")
    found: list[tuple[str, str, np.ndarray]] = []
    with get_context("spawn").Pool(workers) as pool:
        for pieces in tqdm(pool.imap_unordered(_parse_source, sources), total=len(sources),
                           desc="parsing corpus", unit="file"):
            found.extend(pieces)
    found.sort(key=lambda piece: piece[0])
    lengths = np.asarray([len(notes) for _, _, notes in found], dtype=np.int64)
    return {"ids": np.asarray([piece_id for piece_id, _, _ in found]),
            "collections": np.asarray([collection for _, collection, _ in found]),
            "offsets": np.concatenate(([0], np.cumsum(lengths))),
            "notes": np.concatenate([notes for _, _, notes in found])}


def _tokens_of(notes: np.ndarray) -> np.ndarray:
    note_list = [events.Note(int(p), VELOCITY, float(s), float(e)) for p, s, e in notes]
    return np.asarray(events.notes_to_tokens(note_list), dtype=np.int16)


def _tokenize(extracted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from tqdm import tqdm

    offsets = extracted["offsets"]
    pieces = [_tokens_of(extracted["notes"][offsets[i]:offsets[i + 1]])
              for i in tqdm(range(len(offsets) - 1), desc="tokenizing", unit="piece")]
    lengths = np.asarray([len(t) for t in pieces], dtype=np.int64)
    return {"ids": extracted["ids"], "collections": extracted["collections"],
            "offsets": np.concatenate(([0], np.cumsum(lengths))),
            "tokens": np.concatenate(pieces)}


def _source_hash(*modules) -> str:
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def _cached(name: str, key: str, build: Callable[[], dict[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
    """Load .cache/livegen/NAME-KEY.npz, or build and save it (atomically)."""
    path = CACHE_DIR / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return dict(data)
    arrays = build()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)
    log.info("cached %s", path)
    return arrays


def corpus_tokens(workers: int | None = None) -> dict[str, np.ndarray]:
    """Every piece of the corpus as tokens: arrays ids, collections, offsets, tokens."""
    workers = workers or os.cpu_count() or 1

    def extract() -> dict[str, np.ndarray]:
        return _extract(workers)

    def tokenize() -> dict[str, np.ndarray]:
        import music21

        notes_key = f"v{CACHE_VERSION}-m21-{music21.__version__}-{TEMPO_BPM:g}bpm"
        return _tokenize(_cached("notes", notes_key, extract))

    tokens_key = f"v{CACHE_VERSION}-{TEMPO_BPM:g}bpm-v{VELOCITY}-{_source_hash(events)}"
    return _cached("tokens", tokens_key, tokenize)


# ---------------------------------------------------------------- split

def split_ids(ids: Sequence[str], collections: Sequence[str], seed: int = SPLIT_SEED,
              fractions: tuple[float, float, float] = SPLIT_FRACTIONS
              ) -> dict[str, list[str]]:
    """Piece ids -> {"train", "valid", "test"}: a seeded shuffle within each collection, so
    every split holds every collection in proportion. Deterministic given the ids."""
    by_collection: dict[str, list[str]] = {}
    for piece_id, collection in zip(ids, collections, strict=True):
        by_collection.setdefault(collection, []).append(piece_id)
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for offset, collection in enumerate(sorted(by_collection)):
        members = sorted(by_collection[collection])
        order = np.random.default_rng((seed, offset)).permutation(len(members))
        n_valid = max(1, round(fractions[1] * len(members)))
        n_test = max(1, round(fractions[2] * len(members)))
        shuffled = [members[i] for i in order]
        splits["valid"] += shuffled[:n_valid]
        splits["test"] += shuffled[n_valid:n_valid + n_test]
        splits["train"] += shuffled[n_valid + n_test:]
    return {name: sorted(members) for name, members in splits.items()}


def load_corpus(workers: int | None = None, seed: int = SPLIT_SEED) -> Corpus:
    """The deduplicated corpus split by piece. Parses and caches on first use."""
    arrays = corpus_tokens(workers)
    offsets = arrays["offsets"]
    seen: set[bytes] = set()
    pieces: dict[str, Piece] = {}
    for i, (piece_id, collection) in enumerate(zip(arrays["ids"], arrays["collections"],
                                                   strict=True)):
        tokens = arrays["tokens"][offsets[i]:offsets[i + 1]]
        fingerprint = hashlib.sha1(tokens.tobytes()).digest()
        if fingerprint in seen:  # ids are sorted, so the first name of a tune is kept
            continue
        seen.add(fingerprint)
        pieces[str(piece_id)] = Piece(str(piece_id), str(collection), tokens)
    duplicates = len(arrays["ids"]) - len(pieces)
    ids = sorted(pieces)
    splits = split_ids(ids, [pieces[i].collection for i in ids], seed)
    log.info("corpus: %d pieces (%d exact duplicates dropped)", len(pieces), duplicates)
    return Corpus(*(tuple(pieces[i] for i in splits[name])
                    for name in ("train", "valid", "test")), split_seed=seed)


# ---------------------------------------------------------------- streams and windows

def transpose_tokens(tokens: np.ndarray, semitones: int) -> np.ndarray:
    """The tokens with every note-on and note-off moved by `semitones`. ValueError when a
    pitch would leave 0..127."""
    tokens = np.asarray(tokens, dtype=np.int64)
    is_note = tokens < events.TIME_SHIFT
    pitches = tokens[is_note] % events.MIDI_PITCHES + semitones
    if len(pitches) and (pitches.min() < 0 or pitches.max() >= events.MIDI_PITCHES):
        raise ValueError(f"transposing by {semitones} leaves the MIDI range")
    moved = tokens.copy()
    moved[is_note] += semitones
    return moved


def pitch_range(tokens: np.ndarray) -> tuple[int, int]:
    """(lowest, highest) note-on pitch of the tokens."""
    tokens = np.asarray(tokens)
    ons = tokens[tokens < events.NOTE_OFF]
    return (int(ons.min()), int(ons.max())) if len(ons) else (60, 60)


def stream(pieces: Sequence[Piece], rng: np.random.Generator | None = None,
           transpose: int = TRANSPOSE) -> np.ndarray:
    """The pieces joined into one token stream with a rest between them; with `rng`, each
    piece transposed by a random amount within +-transpose that keeps it in MIDI range."""
    parts = []
    for piece in pieces:
        tokens = piece.tokens.astype(np.int64)
        if rng is not None and transpose:
            low, high = pitch_range(tokens)
            shift = int(rng.integers(max(-transpose, -low),
                                     min(transpose, events.MIDI_PITCHES - 1 - high) + 1))
            tokens = transpose_tokens(tokens, shift)
        parts.append(tokens)
        parts.append(np.asarray(PIECE_GAP_TOKENS, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Windows:
    """Training examples cut from a stream: inputs[i, t] with controls[i, t] predict
    targets[i, t] = inputs[i, t + 1]; the controls row describes the music from the target
    on (music/features.control_vectors, row t + 1 of the stream)."""

    inputs: np.ndarray  # (n, length) int64
    controls: np.ndarray  # (n, length, CONTROL_SIZE) float32
    targets: np.ndarray  # (n, length) int64


def windows(tokens: np.ndarray, length: int, *, offset: int = 0,
            window_s: float = features.WINDOW_S, zero_controls: bool = False) -> Windows:
    """Non-overlapping windows of `length` steps from `offset` on (the tail that does not
    fill a window is left out). `zero_controls` gives the ablation its all-zero controls."""
    tokens = np.asarray(tokens, dtype=np.int64)
    count = (len(tokens) - 1 - offset) // length
    if count <= 0:
        raise ValueError(f"a stream of {len(tokens)} tokens holds no window of {length}")
    span = slice(offset, offset + count * length)
    following = slice(offset + 1, offset + count * length + 1)
    if zero_controls:
        controls = np.zeros((count, length, features.CONTROL_SIZE), dtype=np.float32)
    else:
        controls = features.control_vectors(tokens, window_s=window_s)[following]
        controls = controls.reshape(count, length, features.CONTROL_SIZE)
    return Windows(tokens[span].reshape(count, length), controls,
                   tokens[following].reshape(count, length))


def training_epoch(pieces: Sequence[Piece], length: int, rng: np.random.Generator, *,
                   zero_controls: bool = False) -> Windows:
    """One pass over the training pieces: shuffled piece order, random transpositions, a
    random offset, windows in random order."""
    order = rng.permutation(len(pieces))
    tokens = stream([pieces[i] for i in order], rng)
    batch = windows(tokens, length, offset=int(rng.integers(length)),
                    zero_controls=zero_controls)
    shuffle = rng.permutation(len(batch.inputs))
    return Windows(batch.inputs[shuffle], batch.controls[shuffle], batch.targets[shuffle])


def batches(data: Windows, size: int) -> Iterator[Windows]:
    """Consecutive batches of `size` windows (the last may be smaller)."""
    for start in range(0, len(data.inputs), size):
        part = slice(start, start + size)
        yield Windows(data.inputs[part], data.controls[part], data.targets[part])


def density_histogram(pieces: Sequence[Piece], window_s: float = features.WINDOW_S
                      ) -> dict:
    """How the training stream's control vectors fall into the pitch and density bins (the
    share of token positions in each bin), for choosing DENSITY_EDGES and for the report."""
    tokens = stream(pieces)
    controls = features.control_vectors(tokens, window_s=window_s)
    pitch = controls[:, features.PITCH_SLICE].mean(axis=0)
    density = controls[:, features.DENSITY_SLICE].mean(axis=0)
    return {"positions": len(tokens), "window_s": window_s,
            "density_edges": list(features.DENSITY_EDGES),
            "pitch_bins": [round(float(x), 4) for x in pitch],
            "density_bins": [round(float(x), 4) for x in density]}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
