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
import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livegen.errors import LivegenError
from livegen.music import events, features, scales

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


def music21_version() -> str:
    """The installed music21's version, for cache keys ("*" without music21: then any
    extracted cache carried from a machine that has it will do). Read from the package's
    metadata: importing music21 takes seconds."""
    try:
        return importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        return "*"


def _cached(name: str, key: str, build: Callable[[], dict[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
    """Load .cache/livegen/NAME-KEY.npz, or build and save it (atomically). A key with
    "*" (no music21 here) takes the newest matching cache, or says what to do."""
    if "*" in key:
        found = sorted(CACHE_DIR.glob(f"{name}-{key}.npz"))
        if not found:
            raise LivegenError(f"music21 is not installed and .cache/livegen holds no "
                               f"extracted {name} ({name}-{key}.npz): pip install music21, "
                               "or copy .cache/livegen from a machine that has it")
        log.info("music21 is not installed: reading the extracted %s", found[-1])
        with np.load(found[-1], allow_pickle=False) as data:
            return dict(data)
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
        notes_key = f"v{CACHE_VERSION}-m21-{music21_version()}-{TEMPO_BPM:g}bpm"
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
    return laid_out(pieces, rng, transpose).tokens


@dataclass(frozen=True, slots=True)
class Stream:
    """Pieces joined into one token stream: where each starts, and how far it was moved."""

    tokens: np.ndarray   # int64
    starts: np.ndarray   # the stream position of each piece's first token
    shifts: np.ndarray   # the semitones each piece was transposed by


def laid_out(pieces: Sequence[Piece], rng: np.random.Generator | None = None,
             transpose: int = TRANSPOSE) -> Stream:
    """`stream`, keeping where each piece starts and its transposition."""
    parts, starts, shifts = [], [], []
    position = 0
    for piece in pieces:
        tokens = piece.tokens.astype(np.int64)
        shift = 0
        if rng is not None and transpose:
            low, high = pitch_range(tokens)
            shift = int(rng.integers(max(-transpose, -low),
                                     min(transpose, events.MIDI_PITCHES - 1 - high) + 1))
            tokens = transpose_tokens(tokens, shift)
        starts.append(position)
        shifts.append(shift)
        parts.append(tokens)
        parts.append(np.asarray(PIECE_GAP_TOKENS, dtype=np.int64))
        position += len(tokens) + len(PIECE_GAP_TOKENS)
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return Stream(tokens, np.asarray(starts, dtype=np.int64), np.asarray(shifts, np.int64))


@dataclass(frozen=True, slots=True)
class Windows:
    """Training examples cut from a stream: inputs[i, t] with controls[i, t] predict
    targets[i, t] = inputs[i, t + 1]; the controls row describes the music from the target
    on (music/features.control_vectors, row t + 1 of the stream)."""

    inputs: np.ndarray  # (n, length) int64
    controls: np.ndarray  # (n, length, CONTROL_SIZE) float32
    targets: np.ndarray  # (n, length) int64


def windows(tokens: np.ndarray, length: int, *, offset: int = 0,
            window_s: float = features.WINDOW_S, zero_controls: bool = False,
            encoding: str = "onehot", controls: np.ndarray | None = None) -> Windows:
    """Non-overlapping windows of `length` steps from `offset` on (the tail that does not
    fill a window is left out). `zero_controls` gives the ablation its all-zero controls;
    `encoding` "soft" the soft layout (features.soft_control_vectors); `controls` (one row
    per stream position) gives the controls outright (training_controls)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    count = (len(tokens) - 1 - offset) // length
    if count <= 0:
        raise ValueError(f"a stream of {len(tokens)} tokens holds no window of {length}")
    span = slice(offset, offset + count * length)
    following = slice(offset + 1, offset + count * length + 1)
    if zero_controls:
        controls = np.zeros((count, length, features.CONTROL_SIZE), dtype=np.float32)
    else:
        if controls is None:
            controls = (features.soft_control_vectors(tokens) if encoding == "soft"
                        else features.control_vectors(tokens, window_s=window_s))
        controls = controls[following].reshape(count, length, features.CONTROL_SIZE)
    return Windows(tokens[span].reshape(count, length), controls,
                   tokens[following].reshape(count, length))


def training_epoch(pieces: Sequence[Piece], length: int, rng: np.random.Generator, *,
                   zero_controls: bool = False, encoding: str = "onehot",
                   augment: Augment | None = None, keys: Keys | None = None) -> Windows:
    """One pass over the training pieces: shuffled piece order, random transpositions, a
    random offset, windows in random order; with `augment` (soft encoding), the controls
    of training_controls."""
    order = rng.permutation(len(pieces))
    laid = laid_out([pieces[i] for i in order], rng)
    tokens = laid.tokens
    controls = None
    if augment is not None and not zero_controls:
        if keys is None:
            raise ValueError("augmented controls need the pieces' keys (Keys.of)")
        roots = (keys.roots[order] + laid.shifts) % 12
        controls = training_controls(laid, roots, keys.profile, rng, augment)
    batch = windows(tokens, length, offset=int(rng.integers(length)),
                    zero_controls=zero_controls, encoding=encoding, controls=controls)
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


# ---------------------------------------------------------------- keys

@dataclass(frozen=True, slots=True)
class Keys:
    """The key of each piece and the key profile of the corpus.

    A piece's key is the major key whose scale holds most of its note-ons (its relative
    major for a minor piece), refined once by correlation with the profile; the profile
    is the mean of the pieces' pitch-class histograms moved to C. It is what the engine
    sends for a key a performer asks for (CharRNN.key_histogram): a real key's weights,
    not a flat seven-note set."""

    roots: np.ndarray    # (pieces,) 0..11
    profile: np.ndarray  # (12,) tonic C, sums to 1
    in_scale: float      # share of all note-ons in their piece's major scale

    @classmethod
    def of(cls, pieces: Sequence[Piece]) -> Keys:
        counts = np.stack([np.bincount(p.tokens[p.tokens < events.NOTE_OFF].astype(np.int64)
                                       % 12, minlength=12) for p in pieces]).astype(float)
        scale = np.zeros(12)
        scale[list(scales.MAJOR_SCALE)] = 1
        rotations = np.stack([np.roll(scale, r) for r in range(12)])  # (root, pitch class)
        fit = counts @ rotations.T + 1e-3 * counts  # ties: the root that sounds most
        roots = fit.argmax(axis=1)
        histograms = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        for _ in range(2):
            moved = np.stack([np.roll(h, -r) for h, r in zip(histograms, roots, strict=True)])
            profile = moved.mean(axis=0)
            profile /= profile.sum()
            profiles = np.stack([np.roll(profile, r) for r in range(12)])
            centred = profiles - profiles.mean(axis=1, keepdims=True)
            roots = (histograms @ centred.T).argmax(axis=1)
        inside = sum(counts[i] @ rotations[roots[i]] for i in range(len(pieces)))
        return cls(roots.astype(np.int64), profile, float(inside / max(counts.sum(), 1)))


# ---------------------------------------------------------------- augmented controls

@dataclass(frozen=True, slots=True)
class Augment:
    """How training controls are made like the ones the engine sends (soft encoding).

    The stream is cut into spans (at every piece start, and every `span_s` seconds at
    random within a piece). A `held` share of spans are given one control vector over their
    whole length, describing the span (mean pitch, note-ons per second, histogram), as a
    performer's control holds still and then jumps: the music must match it from its first
    note to its last. Of those, a `profile` share carry the piece's key profile instead of
    the span's histogram, as the engine sends a key. The other spans keep the controls of
    the music just ahead of each position. In every span each part (pitch, density, key) is
    left unasked (zeros) with probability `unasked`, as the engine sends what no rule
    drives."""

    held: float = 0.6
    span_s: tuple[float, float] = (2.0, 12.0)
    profile: float = 0.5
    unasked: float = 0.2


def _stream_steps(tokens: np.ndarray) -> np.ndarray:
    """The time (in 10 ms steps) before each token is applied."""
    is_shift = (tokens >= events.TIME_SHIFT) & (tokens < events.VELOCITY)
    shift = np.where(is_shift, tokens - events.TIME_SHIFT + 1, 0)
    return np.cumsum(shift) - shift


def training_controls(laid: Stream, roots: np.ndarray, profile: np.ndarray,
                      rng: np.random.Generator, augment: Augment) -> np.ndarray:
    """One soft control row per stream position, made as `Augment` describes. `roots`
    are the pieces' keys in the stream (transposition included)."""
    tokens = laid.tokens
    controls = features.soft_control_vectors(tokens)
    steps = _stream_steps(tokens)
    total = int(steps[-1]) + 1 if len(steps) else 1
    low, high = (round(s * events.STEPS_PER_SECOND) for s in augment.span_s)
    lengths = rng.integers(low, high + 1, size=total // low + 2)
    cuts = np.cumsum(lengths)
    piece_steps = steps[laid.starts]
    bounds = np.unique(np.concatenate(([0], piece_steps, cuts[cuts < total], [total])))
    spans = len(bounds) - 1
    span_of = np.searchsorted(bounds, steps, side="right") - 1
    is_on = tokens < events.NOTE_OFF
    on_steps, on_pitches = steps[is_on], tokens[is_on]
    lo = np.searchsorted(on_steps, bounds[:-1], side="left")
    hi = np.searchsorted(on_steps, bounds[1:], side="left")
    count = hi - lo
    pitch_sums = np.concatenate(([0], np.cumsum(on_pitches)))
    mean_pitch = (pitch_sums[hi] - pitch_sums[lo]) / np.maximum(count, 1)
    rate = count / (np.diff(bounds) / events.STEPS_PER_SECOND)
    held = np.zeros((spans, features.CONTROL_SIZE), np.float32)
    held[:, features.PITCH_SLICE] = features.two_hot(features.pitch_position(mean_pitch),
                                                     features.PITCH_BINS)
    held[:, features.DENSITY_SLICE] = features.two_hot(features.density_position(rate),
                                                       features.DENSITY_BINS)
    held[:, features.HISTOGRAM_SLICE] = features.window_histograms(on_pitches, lo, hi)
    piece_of = np.searchsorted(piece_steps, bounds[:-1], side="right") - 1
    keyed = rng.random(spans) < augment.profile
    held[keyed, features.HISTOGRAM_SLICE] = np.stack([np.roll(profile, r)
                                                      for r in range(12)])[roots[piece_of[keyed]]]
    silent = count == 0
    held[silent, features.PITCH_SLICE] = 0
    held[silent, features.HISTOGRAM_SLICE] = 0
    is_held = (rng.random(spans) < augment.held)[span_of]
    controls[is_held] = held[span_of[is_held]]
    unasked = rng.random((spans, 3)) < augment.unasked
    for part, slot in enumerate((features.PITCH_SLICE, features.DENSITY_SLICE,
                                 features.HISTOGRAM_SLICE)):
        controls[unasked[span_of, part], slot] = 0
    return controls


# ---------------------------------------------------------------- what ships beside a model

def write_train_notes(path: Path, pieces: Sequence[Piece]) -> None:
    """The training pieces' note-on pitches, end to end (uint8), and where each starts:
    the copy guard's index and the eval's copying reference (CharRNN's "train_notes")."""
    pitches = [p.tokens[p.tokens < events.NOTE_OFF].astype(np.uint8) for p in pieces]
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in pitches]))).astype(np.int64)
    _save(path, pitches=np.concatenate(pitches), offsets=offsets)


def write_eval_split(path: Path, corpus: Corpus, train_sample: Sequence[Piece]) -> None:
    """What `livegen eval charrnn` needs of the corpus, so a fresh checkout needs no parse
    (CharRNN's "eval_split"): the held-out test pieces' tokens and ids, the training
    split's token counts (the unigram baseline) and a sample of training pieces (their
    control timelines test copying)."""
    train = np.concatenate([p.tokens for p in corpus.train]).astype(np.int64)
    _save(path, **_pieces("test", corpus.test), **_pieces("train_sample", train_sample),
          train_counts=np.bincount(train, minlength=events.VOCAB_SIZE).astype(np.int64))


def write_guide(path: Path, pieces: Sequence[Piece]) -> None:
    """Pieces the model was not trained on: the guide that undriven controls can follow
    (CharRNN's "guide", charrnn.Guide)."""
    arrays = _pieces("", pieces)
    _save(path, tokens=arrays["tokens"], offsets=arrays["offsets"])


def _pieces(prefix: str, pieces: Sequence[Piece]) -> dict[str, np.ndarray]:
    """Pieces as arrays: tokens end to end (int16), offsets, ids; names start `prefix_`."""
    head = f"{prefix}_" if prefix else ""
    offsets = np.concatenate(([0], np.cumsum([len(p.tokens) for p in pieces])))
    return {f"{head}tokens": np.concatenate([p.tokens for p in pieces]).astype(np.int16),
            f"{head}offsets": offsets.astype(np.int64),
            f"{head}ids": np.asarray([p.id for p in pieces])}


def _save(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, written so that the bytes (and so the sha256) depend on the
    arrays alone (zip entries carry a fixed date)."""
    import io
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


@dataclass(frozen=True, slots=True)
class EvalSplit:
    """The eval split as shipped: test pieces' tokens and ids, training token counts, a
    sample of training pieces."""

    test: tuple[np.ndarray, ...]
    test_ids: tuple[str, ...]
    train_counts: np.ndarray
    train_sample: tuple[np.ndarray, ...]
    train_sample_ids: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> EvalSplit:
        with np.load(path, allow_pickle=False) as data:
            def pieces(prefix: str) -> tuple[np.ndarray, ...]:
                tokens = data[f"{prefix}_tokens"].astype(np.int64)
                offsets = data[f"{prefix}_offsets"]
                return tuple(tokens[offsets[i]:offsets[i + 1]]
                             for i in range(len(offsets) - 1))

            return cls(pieces("test"), tuple(str(i) for i in data["test_ids"]),
                       data["train_counts"].astype(np.int64), pieces("train_sample"),
                       tuple(str(i) for i in data["train_sample_ids"]))


def load_train_notes(path: Path) -> list[np.ndarray]:
    """The training pieces' note-on pitch sequences from a "train_notes" file."""
    with np.load(path, allow_pickle=False) as data:
        pitches, offsets = data["pitches"].astype(np.int64), data["offsets"]
        return [pitches[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
