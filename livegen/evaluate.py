"""`livegen eval charrnn`: what the shipped Char-RNN has learned, measured with ONNX Runtime
(no torch) on the held-out test pieces.

- held-out NLL per event (nats), for the conditional model, the ablation (the same net
  trained with zeroed controls), a unigram baseline and uniform ln 388;
- controllability: sweeps of the pitch and density controls (10 levels x seeds x 30 s):
  Spearman rho between level and realised mean pitch / note-ons per second, and the share
  of note-ons in C major under a C-major key histogram;
- copying: the longest run of consecutive note-on pitches that a generated piece shares
  with any training piece, exactly and up to transposition (intervals), as a distribution,
  beside the same for held-out real pieces;
- weighted BLEU (SEEDS.md section 5, the corrected form: lists of event tokens, n = 1..9,
  weights 0, 1/12, 1/12, 1/6, 1/6, 1/6, 1/6, 1/12, 1/12, zero counts smoothed) of generated
  music against the held-out set, beside held-out real pieces against the training set.

N-gram matching hashes n-grams into 64-bit integers with numpy (a polynomial hash grown one
symbol at a time), so the whole training set is compared in seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livegen.generators.charrnn import (
    CharRNN,
    Generated,
    generate,
    major_scale,
)
from livegen.generators.langevin import estimate_key, pitch_class_weights, scale_classes
from livegen.music import events, features, scales
from livegen.music import roll as grid

log = logging.getLogger(__name__)

UNIFORM_NLL = math.log(events.VOCAB_SIZE)
BLEU_WEIGHTS = (0, 1 / 12, 1 / 12, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 12, 1 / 12)
BLEU_EPSILON = 0.1  # smoothing: a zero n-gram match count counts as 0.1 (Chen & Cherry's 1)
LEVELS = 10
_HASH_BASE = np.uint64(0x100000001B3)  # the FNV prime: odd, so no symbol's weight vanishes


# ---------------------------------------------------------------- likelihood

def sequence_nll(model: CharRNN, sequences: Sequence[np.ndarray], *,
                 zero_controls: bool = False, batch: int = 64) -> tuple[float, int]:
    """(mean NLL in nats per predicted event, events predicted) of the model over token
    sequences, each from the zero state, its first token as input only. The controls for
    input t are control_vectors(sequence)[t + 1], as in training; zeros for the ablation."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    total, count = 0.0, 0
    for start in range(0, len(order), batch):
        group = [np.asarray(sequences[i], dtype=np.int64) for i in order[start:start + batch]]
        group = [g for g in group if len(g) > 1]
        if not group:
            continue
        steps = max(len(g) for g in group) - 1
        rows = len(group)
        inputs = np.zeros((rows, steps), np.int64)
        targets = np.zeros((rows, steps), np.int64)
        mask = np.zeros((rows, steps), bool)
        controls = np.zeros((rows, steps, features.CONTROL_SIZE), np.float32)
        for r, tokens in enumerate(group):
            n = len(tokens) - 1
            inputs[r, :n], targets[r, :n], mask[r, :n] = tokens[:-1], tokens[1:], True
            if not zero_controls:
                controls[r, :n] = model.control_vectors(tokens)[1:]
        h = np.zeros((model.layers, rows, model.hidden_size), np.float32)
        c = np.zeros_like(h)
        for t in range(steps):
            logits, h, c = model.step_batch(inputs[:, t], controls[:, t], h, c)
            logits = logits.astype(np.float64)
            peak = logits.max(axis=1)
            log_z = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
            nll = log_z - logits[np.arange(rows), targets[:, t]]
            total += float(nll[mask[:, t]].sum())
            count += int(mask[:, t].sum())
    return total / max(count, 1), count


def unigram_nll(train: Sequence[np.ndarray] | None, test: Sequence[np.ndarray], *,
                counts: np.ndarray | None = None) -> float:
    """NLL per event of the training set's token frequencies (add-one smoothed) on the test
    sequences' predicted events (all but each first token); `counts` gives the training
    frequencies outright."""
    if counts is None:
        counts = np.bincount(np.concatenate(train).astype(np.int64),
                             minlength=events.VOCAB_SIZE)
    counts = counts + 1.0
    log_p = np.log(counts / counts.sum())
    targets = np.concatenate([np.asarray(s[1:], dtype=np.int64) for s in test])
    return float(-log_p[targets].mean())


# ---------------------------------------------------------------- controllability

def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    result = np.empty(len(values))
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            result[order[start:end]] = (start + end + 1) / 2
            start = end
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (nan if constant)."""
    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator else math.nan


def _note_ons(result: Generated) -> np.ndarray:
    return np.asarray([n.pitch for n in result.notes], dtype=np.int64)


def controllability(model: CharRNN, *, seconds: float = 30.0, seeds: int = 8,
                    temperature: float = 1.0, top_p: float = 0.95) -> dict[str, Any]:
    """Sweep pitch (density 0.5) and density (pitch 0.5) over 10 levels under a C-major key,
    `seeds` runs of `seconds` each per level. Returns rho for both, per-level means and the
    share of note-ons in C major over all runs."""
    report: dict[str, Any] = {"seconds": seconds, "seeds": seeds, "levels": LEVELS,
                              "temperature": temperature, "top_p": top_p}
    in_key = total = 0
    for sweep in ("pitch", "density"):
        vectors, levels, seed_list = [], [], []
        for level in range(LEVELS):
            value = level / (LEVELS - 1)
            pitch, density = (value, 0.5) if sweep == "pitch" else (0.5, value)
            for s in range(seeds):
                vectors.append(model.vector(9 * pitch, 9 * density, model.key_histogram(0)))
                levels.append(level)
                seed_list.append(1000 * (sweep == "density") + 100 * level + s)
        results = generate(model, seconds, np.stack(vectors), seeds=seed_list,
                           temperature=temperature, top_p=top_p)
        realised = []
        for result in results:
            pitches = _note_ons(result)
            in_key += int(np.isin(pitches % 12, list(scales.major_scale(0))).sum())
            total += len(pitches)
            if sweep == "pitch":
                realised.append(float(pitches.mean()) if len(pitches) else math.nan)
            else:
                realised.append(len(pitches) / seconds)
        levels_arr, realised_arr = np.asarray(levels), np.asarray(realised)
        keep = ~np.isnan(realised_arr)
        name = "mean_pitch" if sweep == "pitch" else "note_ons_per_s"
        report[sweep] = {
            "rho": spearman(levels_arr[keep], realised_arr[keep]),
            "runs": int(keep.sum()),
            name: [round(float(np.nanmean(realised_arr[levels_arr == level])), 2)
                   if np.any(keep & (levels_arr == level)) else None
                   for level in range(LEVELS)]}
    report["c_major_share"] = in_key / max(total, 1)
    report["note_ons"] = total
    return report


# ---------------------------------------------------------------- n-gram hashing

def _ngram_hashes(symbols: np.ndarray, piece: np.ndarray, n: int,
                  previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(hashes of the n-grams starting at each position, whether each lies in one piece),
    grown from the (n-1)-gram hashes: h_n[i] = h_{n-1}[i] * B + s[i + n - 1]."""
    length = len(symbols) - n + 1
    if length <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    with np.errstate(over="ignore"):
        base = (np.zeros(length, np.uint64) if previous is None else previous[:length])
        hashes = base * _HASH_BASE + symbols[n - 1:n - 1 + length]
    valid = piece[:length] == piece[n - 1:n - 1 + length]
    return hashes, valid


def _concatenate(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All sequences end to end as uint64 symbols (+1, so 0 never occurs) and the index of
    the sequence each position belongs to."""
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences]
    lengths = [len(a) for a in arrays]
    symbols = (np.concatenate(arrays) if arrays else np.zeros(0, np.int64)) + 1
    return symbols.astype(np.uint64), np.repeat(np.arange(len(arrays)), lengths)


def longest_shared_runs(queries: Sequence[np.ndarray], references: Sequence[np.ndarray],
                        max_n: int = 100_000) -> np.ndarray:
    """For each query sequence, the length of the longest run of consecutive symbols it
    shares with any one reference sequence (runs never span two references).

    An (n+1)-gram can only match where its n-gram prefix matched, so each round keeps just
    the positions still matching on both sides and grows their hashes by one symbol."""
    q_symbols, q_piece = _concatenate(queries)
    r_symbols, r_piece = _concatenate(references)
    longest = np.zeros(len(queries), np.int64)
    q_pos, r_pos = np.arange(len(q_symbols)), np.arange(len(r_symbols))
    q_hash, r_hash = np.zeros(len(q_pos), np.uint64), np.zeros(len(r_pos), np.uint64)
    for n in range(1, max_n + 1):
        q_pos, q_hash = _grow(q_symbols, q_piece, q_pos, q_hash, n)
        r_pos, r_hash = _grow(r_symbols, r_piece, r_pos, r_hash, n)
        q_found = np.isin(q_hash, r_hash)
        if not q_found.any():
            break
        longest[np.unique(q_piece[q_pos[q_found]])] = n
        r_found = np.isin(r_hash, q_hash[q_found])
        q_pos, q_hash = q_pos[q_found], q_hash[q_found]
        r_pos, r_hash = r_pos[r_found], r_hash[r_found]
    return longest


def _grow(symbols: np.ndarray, piece: np.ndarray, positions: np.ndarray, hashes: np.ndarray,
          n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram hashes at `positions` from their (n-1)-gram hashes, dropping positions
    whose n-gram would run past the end or into the next sequence."""
    last = positions + n - 1
    inside = last < len(symbols)
    positions, hashes, last = positions[inside], hashes[inside], last[inside]
    same = piece[positions] == piece[last]
    positions, hashes, last = positions[same], hashes[same], last[same]
    with np.errstate(over="ignore"):
        return positions, hashes * _HASH_BASE + symbols[last]


def pitch_sequences(token_sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The note-on pitches of each token sequence, in order."""
    result = []
    for tokens in token_sequences:
        tokens = np.asarray(tokens, dtype=np.int64)
        result.append(tokens[tokens < events.NOTE_OFF])
    return result


def copying(generated: Sequence[np.ndarray], train: Sequence[np.ndarray]) -> dict[str, Any]:
    """Longest note-on runs shared with training pieces: exact pitches, and up to
    transposition (a run of k equal intervals = k + 1 note-ons)."""
    exact = longest_shared_runs(generated, train)
    intervals = longest_shared_runs([np.diff(g) for g in generated],
                                    [np.diff(t) for t in train])
    transposed = np.where(intervals > 0, intervals + 1, np.minimum(exact, 1))
    return {"exact": _distribution(exact), "transposed": _distribution(transposed)}


def _distribution(values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values)
    return {"max": int(values.max()), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "over_16": int((values > 16).sum()),
            "pieces": len(values), "values": sorted(int(v) for v in values)}


# ---------------------------------------------------------------- BLEU

def _max_reference_counts(symbols: np.ndarray, piece: np.ndarray, hashes: np.ndarray,
                          valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique n-gram hashes and, for each, its highest count in any one sequence."""
    keys, counts = _counts_per_piece(hashes, valid, piece)
    order = np.lexsort((-counts, keys[:, 0]))
    keys, counts = keys[order], counts[order]
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:, 0] != keys[:-1, 0]
    return keys[first, 0], counts[first]


def _counts_per_piece(hashes: np.ndarray, valid: np.ndarray, piece: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Unique (hash, piece) pairs as rows of a (k, 2) uint64 array, with their counts."""
    keys = hashes[valid]
    owners = piece[:len(valid)][valid].astype(np.uint64)
    order = np.lexsort((owners, keys))
    keys, owners = keys[order], owners[order]
    if len(keys) == 0:
        return np.zeros((0, 2), np.uint64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], (keys[1:] != keys[:-1])
                                            | (owners[1:] != owners[:-1]))))
    counts = np.diff(np.concatenate((starts, [len(keys)])))
    return np.stack([keys[starts], owners[starts]], axis=1), counts


def weighted_bleu(candidates: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
                  ) -> float:
    """Corpus-level BLEU of the candidate token lists against all the references, with the
    weights of SEEDS.md section 5 for n = 1..9: n-gram counts clipped by their highest count
    in any one reference, a zero match count smoothed to BLEU_EPSILON, and the brevity
    penalty against each candidate's closest reference length."""
    c_symbols, c_piece = _concatenate(candidates)
    r_symbols, r_piece = _concatenate(references)
    log_score = 0.0
    c_hash = r_hash = None
    for n, weight in enumerate(BLEU_WEIGHTS, start=1):
        c_hash, c_valid = _ngram_hashes(c_symbols, c_piece, n, c_hash)
        r_hash, r_valid = _ngram_hashes(r_symbols, r_piece, n, r_hash)
        if weight == 0:
            continue
        known, allowed = _max_reference_counts(r_symbols, r_piece, r_hash, r_valid)
        keys, counts = _counts_per_piece(c_hash, c_valid, c_piece)
        position = np.clip(np.searchsorted(known, keys[:, 0]), 0, max(len(known) - 1, 0))
        matched = (known[position] == keys[:, 0]) if len(known) else np.zeros(len(keys), bool)
        clipped = np.where(matched, np.minimum(counts, allowed[position] if len(known)
                                               else 0), 0)
        denominator = int(counts.sum())
        if denominator == 0:
            return 0.0
        numerator = float(clipped.sum()) or BLEU_EPSILON
        log_score += weight * math.log(numerator / denominator)
    candidate_length = sum(len(c) for c in candidates)
    reference_lengths = np.sort([len(r) for r in references])
    closest = 0
    for candidate in candidates:
        i = int(np.searchsorted(reference_lengths, len(candidate)))
        near = [reference_lengths[j] for j in (i - 1, i) if 0 <= j < len(reference_lengths)]
        closest += min(near, key=lambda r: (abs(r - len(candidate)), r))
    penalty = 1.0 if candidate_length > closest else math.exp(1 - closest / candidate_length)
    return penalty * math.exp(log_score)


# ---------------------------------------------------------------- generation for copying

def piece_schedule(tokens: np.ndarray, model: CharRNN | None = None):
    """A control schedule that follows a real piece's own controls by time (looping), so
    generated music is steered like real music (in the model's encoding)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    controls = (model.control_vectors(tokens) if model is not None
                else features.control_vectors(tokens))
    is_shift = (tokens >= events.TIME_SHIFT) & (tokens < events.VELOCITY)
    steps = np.cumsum(np.where(is_shift, tokens - events.TIME_SHIFT + 1, 0))
    times = (steps - np.where(is_shift, tokens - events.TIME_SHIFT + 1, 0)) * events.SHIFT_S
    length = max(float(times[-1]), 1.0)

    def schedule(t: float) -> np.ndarray:
        index = min(int(np.searchsorted(times, t % length, side="left")), len(times) - 1)
        return controls[index]

    return schedule


def generate_minutes(model: CharRNN, test: Sequence[np.ndarray], minutes: float, *,
                     piece_seconds: float = 60.0, temperature: float = 1.0,
                     top_p: float = 0.95, seed: int = 7) -> list[Generated]:
    """`minutes` of music in pieces of `piece_seconds`, each steered by the controls of a
    held-out piece picked at random (seeded)."""
    count = max(1, round(minutes * 60 / piece_seconds))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(test), size=count, replace=len(test) < count)
    schedules = [piece_schedule(test[i], model) for i in picks]
    return generate(model, piece_seconds, schedules, seeds=[seed * 1000 + i for i in
                                                             range(count)],
                    temperature=temperature, top_p=top_p)


# ---------------------------------------------------------------- Langevin: chorale figures
# Voice leading on the 16th grid, as GENERATORS.md section 5 measured Bach's own rates:
# semitone-class intervals, simultaneous motion only (both voices change pitch between two
# consecutive steps, neither silent), a pair that moves by octaves in both voices left out.

LENGTH_BINS = (1, 2, 3, 4, 6, 8, 12, 16)  # note lengths in 16ths; a longer note counts as 16
CHORALE_CURVE = (10, 20, 50, 100, 200)
BAR_BUDGET_S = 0.6  # the target: a bar ready in 25% of its 2.4 s at 100 bpm


def voice_leading(pitches: np.ndarray, first: int = 1) -> dict[str, int]:
    """Counts over the steps first..T-1 of (T, 4) sounding pitches (grid.sounding_pitches;
    -1 silent), each step compared with the one before it: frames, motion slices (a voice
    changes pitch), pair moves (two voices change pitch together), parallel fifths and
    octaves/unisons (both move the same way, P5 -> P5 or P8/U -> P8/U as semitone
    classes), the same in contrary motion, and frames with a voice crossing (a lower voice
    above the one above it)."""
    pitches = np.asarray(pitches, dtype=np.int64)
    first = max(first, 1)
    before, now = pitches[first - 1:-1], pitches[first:]
    moved = (before >= 0) & (now >= 0) & (before != now)
    counts = {"frames": len(now), "motion_slices": int(moved.any(axis=1).sum()),
              "pair_moves": 0, "parallel_fifths": 0, "parallel_octaves": 0,
              "contrary_fifths": 0, "contrary_octaves": 0}
    step = now - before
    for upper in range(grid.VOICES):
        for lower in range(upper + 1, grid.VOICES):
            both = moved[:, upper] & moved[:, lower]
            octave_leaps = (step[:, upper] % 12 == 0) & (step[:, lower] % 12 == 0)
            same_way = np.sign(step[:, upper]) == np.sign(step[:, lower])
            was = np.abs(before[:, upper] - before[:, lower]) % 12
            became = np.abs(now[:, upper] - now[:, lower]) % 12
            counts["pair_moves"] += int(both.sum())
            for name, interval in (("fifths", 7), ("octaves", 0)):
                kept = both & ~octave_leaps & (was == interval) & (became == interval)
                counts[f"parallel_{name}"] += int((kept & same_way).sum())
                counts[f"contrary_{name}"] += int((kept & ~same_way).sum())
    crossing = np.zeros(len(now), dtype=bool)
    for upper in range(grid.VOICES - 1):
        a, b = now[:, upper], now[:, upper + 1]
        crossing |= (a >= 0) & (b >= 0) & (a < b)
    counts["crossing_frames"] = int(crossing.sum())
    return counts


def _notes_from(pitches: np.ndarray, struck: np.ndarray, first: int
                ) -> list[tuple[int, int, int]]:
    """(voice, pitch, length in 16ths) of the notes struck at steps first.. (cut at T)."""
    notes = []
    steps = len(pitches)
    for voice in range(grid.VOICES):
        for onset in np.flatnonzero(struck[first:, voice]) + first:
            end = onset + 1
            while (end < steps and not struck[end, voice]
                   and pitches[end, voice] == pitches[onset, voice]):
                end += 1
            notes.append((voice, int(pitches[onset, voice]), int(end - onset)))
    return notes


def chorale_figures(windows: Sequence[np.ndarray], first: int, *,
                    truth: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Figures of (T, 4) token windows over their steps first.. (the part a sampler made;
    step first - 1 is the context it continues): voice-leading counts and rates per 1,000
    motion slices, crossing per frame, in-range and in-key note shares (the key estimated
    from the whole window), the note-length histogram; with `truth` (Bach's windows), how
    often alto, tenor and bass sound Bach's pitch class where both sound."""
    totals: dict[str, int] = {}
    in_key = in_range = notes_total = 0
    lengths = []
    match = compared = 0
    for index, tokens in enumerate(windows):
        pitches, struck = grid.sounding_pitches(tokens)
        for name, value in voice_leading(pitches, first).items():
            totals[name] = totals.get(name, 0) + value
        scale = scale_classes(*estimate_key(pitch_class_weights(pitches)))
        for voice, pitch, length in _notes_from(pitches, struck, first):
            low, high = grid.VOICE_RANGES[voice]
            in_range += low <= pitch <= high
            in_key += pitch % 12 in scale
            notes_total += 1
            lengths.append(length)
        if truth is not None:
            real, _ = grid.sounding_pitches(truth[index])
            both = (pitches[first:, 1:] >= 0) & (real[first:, 1:] >= 0)
            match += int(((pitches[first:, 1:] % 12 == real[first:, 1:] % 12) & both).sum())
            compared += int(both.sum())
    slices = max(totals.get("motion_slices", 0), 1)
    histogram = np.bincount(np.searchsorted(LENGTH_BINS, np.minimum(lengths, 16)),
                            minlength=len(LENGTH_BINS))[:len(LENGTH_BINS)]
    figures: dict[str, Any] = {
        **totals, "windows": len(windows), "notes": notes_total,
        "parallel_fifths_per_1000": 1000 * totals.get("parallel_fifths", 0) / slices,
        "parallel_octaves_per_1000": 1000 * totals.get("parallel_octaves", 0) / slices,
        "crossing_per_frame": totals.get("crossing_frames", 0) / max(totals.get("frames", 0),
                                                                     1),
        "in_range": in_range / max(notes_total, 1), "in_key": in_key / max(notes_total, 1),
        "note_lengths": {"bins_16ths": list(LENGTH_BINS),
                         "shares": (histogram / max(histogram.sum(), 1)).round(4).tolist()}}
    if truth is not None:
        figures["masked_pitch_class_match"] = match / max(compared, 1)
    return figures


def length_distance(figures: dict[str, Any], reference: dict[str, Any]) -> float:
    """Total variation distance between two note-length histograms (0 = the same)."""
    a = np.asarray(figures["note_lengths"]["shares"])
    b = np.asarray(reference["note_lengths"]["shares"])
    return float(0.5 * np.abs(a - b).sum())


def frame_symbols(tokens: np.ndarray) -> np.ndarray:
    """One integer per step for the four tokens together (each voice's token < 32)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    return tokens[:, 0] + 32 * (tokens[:, 1] + 32 * (tokens[:, 2] + 32 * tokens[:, 3]))


def chorale_copying(windows: Sequence[np.ndarray], first: int,
                    train: Sequence[np.ndarray]) -> dict[str, Any]:
    """The longest run of consecutive frames of each window's steps first.. that occurs in
    a training chorale in any of its in-range transpositions (all four voices alike)."""
    references = [frame_symbols(grid.transpose_tokens(tokens, shift))
                  for tokens in train for shift in grid.transpositions_in_range(tokens)]
    runs = longest_shared_runs([frame_symbols(w[first:]) for w in windows], references)
    return _distribution(runs)


def random_voices(count: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """The baseline: (count, steps, 4) tokens of quarter notes of uniformly random pitches
    within each voice's range."""
    tokens = np.full((count, steps, grid.VOICES), grid.HOLD, dtype=np.int64)
    for voice, size in enumerate(grid.VOICE_SIZES):
        onsets = rng.integers(grid.FIRST_PITCH_TOKEN, size, size=(count, steps))
        tokens[:, ::4, voice] = onsets[:, ::4]
    return tokens


def test_windows(chorales: Sequence[Any], steps: int, count: int, seed: int = 0
                 ) -> np.ndarray:
    """Up to `count` (steps, 4) windows starting on bar lines of the chorales, in their own
    keys, a seeded choice among all of them."""
    windows = [c.tokens[s:s + steps] for c in chorales for s in c.bar_starts
               if s + steps <= len(c.tokens)]
    order = np.random.default_rng(seed).permutation(len(windows))[:count]
    return np.stack([windows[i] for i in sorted(order)])


def _sample_all(model: Any, given: np.ndarray, known: np.ndarray, *, batch: int, seed: int,
                evaluations: int | None = None, original: bool = False, eta: float = 0.0,
                temperature: float = 1.0, decoder: Any = None) -> tuple[np.ndarray, float]:
    """Samples for every window (in batches) and the seconds it took; `decoder` as
    langevin.sample's (default: the per-voice argmax)."""
    from livegen.generators.langevin import decode, sample, sample_original

    started = time.perf_counter()
    out = []
    for start in range(0, len(given), batch):
        rng = np.random.default_rng((seed, start))
        part = slice(start, start + batch)
        if original:
            # langevin-music's own levels, 20 down to 0.05, whatever the model's schedule.
            result = sample_original(model.denoise, given[part], known[part], rng=rng,
                                     noised_given=model.noised_given)
        else:
            result = sample(model.denoise, given[part], known[part], evaluations=evaluations,
                            rng=rng, eta=eta, temperature=temperature,
                            sigma_max=model.sigma_max, sigma_min=model.sigma_min,
                            noised_given=model.noised_given, decoder=decoder or decode)
        out.append(result.tokens)
    return np.concatenate(out), time.perf_counter() - started


def bar_timing(manifest: Path, *, segments: int = 60, budget_s: float = BAR_BUDGET_S,
               threads: int = 1) -> dict[str, Any]:
    """Compose mode as the segment player will run it: `segments` one-bar segments at
    100 bpm, each continuing the last, each due `budget_s` after it is asked for. Returns
    ms per segment (p50, p99, max), late segments and the evaluations the planner chose."""
    from livegen.control import Controls
    from livegen.generators.langevin import LangevinConfig, LangevinGenerator
    from livegen.generators.segment import SegmentRequest

    generator = LangevinGenerator(LangevinConfig(model=manifest, threads=threads))
    generator.warm_up()
    previous = None
    timings, evaluations = [], []
    for bar in range(segments):
        asked = time.monotonic()
        request = SegmentRequest(bar=bar, bars=1, beats_per_bar=4, bpm=100.0,
                                 controls=Controls(), deadline=asked + budget_s,
                                 previous=previous)
        previous = generator.segment(request)
        timings.append(time.monotonic() - asked)
        evaluations.append(int(previous.figures["evaluations"]))
    ms = np.asarray(timings) * 1e3
    return {"segments": segments, "budget_ms": budget_s * 1e3,
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1), "late": int((ms > budget_s * 1e3).sum()),
            "evaluations_median": int(np.median(evaluations)),
            "evaluations_min": int(min(evaluations)), "evaluations_max": int(max(evaluations))}


def evaluate_langevin(model_path: Path, *, windows: int = 256, original_windows: int = 48,
                      curve: Sequence[int] = CHORALE_CURVE, batch: int = 16,
                      timing_segments: int = 60, threads: int = 1, seed: int = 0,
                      eta: float | None = None, temperature: float | None = None
                      ) -> dict[str, Any]:
    """Every figure of `livegen eval langevin`, as a dict (what --write puts in the
    manifest). Continuation: a held-out bar of Bach as context, the next bar made.
    Harmonisation: the same, with Bach's soprano given in the made bar too."""
    from livegen.generators.langevin import LangevinConfig, ScoreModel, decode_voiced
    from livegen.train import chorale_data

    defaults = LangevinConfig()
    eta = defaults.eta if eta is None else eta
    temperature = defaults.temperature if temperature is None else temperature
    started = time.monotonic()
    model = ScoreModel(model_path, threads=threads)
    steps = 32 if 32 in model.lengths else min(model.lengths)
    context = steps // 2
    chorales = chorale_data.load_chorales()
    train = [c.tokens for c in chorales.train]
    truth = test_windows(chorales.test, steps, windows, seed)
    known = np.zeros(truth.shape, dtype=bool)
    known[:, :context] = True
    harmonise = known.copy()
    harmonise[:, :, 0] = True
    report: dict[str, Any] = {
        "model": str(model_path), "window_steps": steps, "context_steps": context,
        "test": {"chorales": len(chorales.test), "windows": len(truth)}, "eta": eta,
        "temperature": temperature, "sigma_min": model.sigma_min,
        "bach": {"held_out_windows": chorale_figures(list(truth), context),
                 "all_chorales": chorale_figures(
                     [c.tokens for part in ("train", "valid", "test")
                      for c in chorales.split(part)], 1)}}
    bach = report["bach"]["held_out_windows"]
    randoms = truth.copy()
    randoms[:, context:] = random_voices(len(truth), steps - context,
                                         np.random.default_rng(seed))[:, :]
    report["random"] = chorale_figures(list(randoms), context, truth=list(truth))
    log.info("Bach and random baselines done (%.0f s)", time.monotonic() - started)

    report["timing"] = bar_timing(model_path, segments=timing_segments, threads=threads)
    at_deadline = report["timing"]["evaluations_median"]
    log.info("timing done: %s (%.0f s)", report["timing"], time.monotonic() - started)

    report["curve"] = {}
    # The network's own argmax at every count of evaluations; then, at the deadline's, the
    # voice-leading decode the live generator plays (langevin.live_decoder).
    voiced = str(at_deadline) + "+voiced"
    for evaluations in [*sorted({*curve, at_deadline}), voiced]:
        decoders: tuple[Any, Any] = (None, None)
        if evaluations == voiced:
            evaluations = at_deadline
            decoders = (decode_voiced, functools.partial(decode_voiced, strict=True))
        made, seconds = _sample_all(model, truth, known, batch=batch, seed=seed,
                                    evaluations=evaluations, eta=eta,
                                    temperature=temperature, decoder=decoders[0])
        harmonised, _ = _sample_all(model, truth, harmonise, batch=batch, seed=seed + 1,
                                    evaluations=evaluations, eta=eta,
                                    temperature=temperature, decoder=decoders[1])
        figures = chorale_figures(list(made), context)
        figures["masked_pitch_class_match"] = chorale_figures(
            list(harmonised), context, truth=list(truth))["masked_pitch_class_match"]
        figures["given_cells_kept"] = float(np.mean(harmonised[harmonise] == truth[harmonise]))
        figures["length_distance_to_bach"] = length_distance(figures, bach)
        figures["ms_per_window"] = 1e3 * seconds / len(truth)
        key = voiced if decoders[0] is not None else str(evaluations)
        report["curve"][key] = figures
        log.info("%d evaluations: in-key %.3f, fifths %.2f, octaves %.2f /1000, crossing "
                 "%.4f, masked match %.3f (%.0f s)", evaluations, figures["in_key"],
                 figures["parallel_fifths_per_1000"], figures["parallel_octaves_per_1000"],
                 figures["crossing_per_frame"], figures["masked_pitch_class_match"],
                 time.monotonic() - started)
        if key == voiced:
            report["copying"] = {"generated": chorale_copying(list(made), context, train),
                                 "bach_held_out": chorale_copying(list(truth), context, train)}
    subset = slice(0, min(original_windows, len(truth)))
    made, seconds = _sample_all(model, truth[subset], known[subset], batch=batch, seed=seed,
                                original=True)
    harmonised, _ = _sample_all(model, truth[subset], harmonise[subset], batch=batch,
                                seed=seed + 1, original=True)
    original = chorale_figures(list(made), context)
    original["masked_pitch_class_match"] = chorale_figures(
        list(harmonised), context, truth=list(truth[subset]))["masked_pitch_class_match"]
    original["length_distance_to_bach"] = length_distance(original, bach)
    original["ms_per_window"] = 1e3 * seconds / len(made)
    paired = report["curve"][voiced]  # what the live generator plays
    same_windows, _ = _sample_all(model, truth[subset], known[subset], batch=batch,
                                  seed=seed, evaluations=at_deadline, eta=eta,
                                  temperature=temperature)
    report["original_2000"] = {"windows": len(made), "figures": original,
                               f"at_deadline_{at_deadline}_same_windows":
                                   chorale_figures(list(same_windows), context)}
    report["random"]["length_distance_to_bach"] = length_distance(report["random"], bach)
    report["at_deadline"] = {"evaluations": at_deadline, "figures": paired}
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def format_langevin_report(report: dict[str, Any]) -> str:
    """The report as the lines `livegen eval langevin` prints."""
    bach = report["bach"]["held_out_windows"]
    every = report["bach"]["all_chorales"]
    columns = [("Bach, held-out bars", bach), ("Bach, all 16ths", every),
               ("random voices", report["random"])]
    columns += [(f"{n.replace('+voiced', '')} evaluations, voiced (live)" if "+" in n
                 else f"{n} evaluations", f) for n, f in report["curve"].items()]
    columns.append((f"original 2,000 ({report['original_2000']['windows']} bars)",
                    report["original_2000"]["figures"]))
    timing = report["timing"]
    lines = [f"model {report['model']}: window {report['window_steps']} 16ths, context "
             f"{report['context_steps']}; {report['test']['windows']} held-out bars from "
             f"{report['test']['chorales']} test chorales; temperature "
             f"{report['temperature']:g}, eta {report['eta']:g}, final sigma "
             f"{report['sigma_min']:g}",
             f"{'':30s} in-range in-key  P5/1000 P8/1000 crossing length-TV masked-PC",
             ]
    for name, f in columns:
        tv = f.get("length_distance_to_bach")
        masked = f.get("masked_pitch_class_match")
        lines.append(
            f"{name:30s} {100 * f['in_range']:7.1f}% {100 * f['in_key']:5.1f}% "
            f"{f['parallel_fifths_per_1000']:7.2f} {f['parallel_octaves_per_1000']:7.2f} "
            f"{100 * f['crossing_per_frame']:7.2f}% "
            f"{'-' if tv is None else f'{tv:.3f}':>9s} "
            f"{'-' if masked is None else f'{100 * masked:.1f}%':>9s}"
            f"   ({f['parallel_fifths']} P5, {f['parallel_octaves']} P8 in "
            f"{f['motion_slices']} slices)")
    lines.append(f"time per bar (compose, 100 bpm, due {timing['budget_ms']:.0f} ms after "
                 f"the request, {timing['segments']} bars): p50 {timing['p50_ms']:.0f} ms, "
                 f"p99 {timing['p99_ms']:.0f} ms, max {timing['max_ms']:.0f} ms, late "
                 f"{timing['late']}; evaluations {timing['evaluations_min']}.."
                 f"{timing['evaluations_max']} (median {timing['evaluations_median']})")
    copy = report.get("copying")
    if copy:
        for who, d in copy.items():
            lines.append(f"copying ({who}): longest run of frames found in training: max "
                         f"{d['max']}, median {d['median']:.0f}, p90 {d['p90']:.0f}, whole "
                         f"bar (16): {sum(v >= 16 for v in d['values'])}/{d['pieces']}")
    lines.append(f"({report['seconds']:.0f} s)")
    return "\n".join(lines)


def langevin_eval_command(rest: list[str]) -> int:
    """`livegen eval langevin [options]`."""
    parser = argparse.ArgumentParser(
        prog="livegen eval langevin",
        description="Chorale figures of the Langevin model (ONNX Runtime) on held-out "
                    "chorales beside Bach's own, random voices and the original 2,000-step "
                    "schedule; the anytime curve; time per bar.")
    parser.add_argument("--model", type=Path, default=Path("models/langevin.json"))
    parser.add_argument("--windows", type=int, default=256, help="held-out bars")
    parser.add_argument("--original-windows", type=int, default=48,
                        help="bars for the 2,000-evaluation baseline (slow)")
    parser.add_argument("--curve", default=",".join(map(str, CHORALE_CURVE)),
                        help="evaluation counts of the anytime curve")
    parser.add_argument("--segments", type=int, default=60, help="bars for the timing")
    parser.add_argument("--eta", type=float, default=None,
                        help="0 deterministic steps, 1 ancestral (default: the config's)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default: the generator config's)")
    parser.add_argument("--write", action="store_true",
                        help="record the figures in the model's manifest (metrics)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    options = parser.parse_args(rest)
    report = evaluate_langevin(options.model, windows=options.windows,
                               original_windows=options.original_windows,
                               curve=tuple(int(n) for n in options.curve.split(",")),
                               timing_segments=options.segments, eta=options.eta,
                               temperature=options.temperature)
    print(format_langevin_report(report))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if options.write:
        manifest = json.loads(options.model.read_text(encoding="utf-8"))
        manifest.setdefault("metrics", {})["evaluation"] = report
        options.model.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"recorded in {options.model}")
    return 0


# ---------------------------------------------------------------- the command

def evaluate(model_path: Path, *, ablation_path: Path | None, seconds: float = 30.0,
             seeds: int = 8, copy_minutes: float = 20.0, temperature: float = 1.0,
             top_p: float = 0.95, threads: int = 1, live: dict[str, Any] | None = None,
             corpus: bool = False) -> dict[str, Any]:
    """Every figure of `livegen eval charrnn`, as a dict (what --write puts in the manifest).
    The held-out pieces come from the split shipped beside the model (no parse); with
    `corpus`, or for a model that ships none, from the parsed corpus, which also gives
    BLEU against the training set. `live`: keyword arguments of
    evaluate_charrnn.live_figures (None: skip them)."""
    from livegen import evaluate_charrnn
    from livegen.generators.charrnn_step import load_copy_index, load_guide
    from livegen.train import data

    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started - sum(timings.values()), 1)
        log.info("%s done (%.0f s)", name, time.monotonic() - started)

    model = CharRNN(model_path, threads=threads)  # a bad model fails before the data load
    shipped = "eval_split" in model.manifest.get("data", {})
    train_tokens = None
    if shipped and not corpus:
        split = data.EvalSplit.load(model.data_file("eval_split"))
        test, train_counts = list(split.test), split.train_counts
        train_sample = list(split.train_sample)
        train_notes = data.load_train_notes(model.data_file("train_notes"))
    else:
        parsed = data.load_corpus()
        test = [p.tokens.astype(np.int64) for p in parsed.test]
        train_tokens = [p.tokens for p in parsed.train]
        train_counts = None
        train_notes = pitch_sequences(train_tokens)
        train_sample = [p.tokens.astype(np.int64) for p in parsed.train[::441][:24]]
    lap("data")
    report: dict[str, Any] = {"model": str(model_path), "variant": model.variant,
                              "encoding": model.encoding,
                              "data": "shipped split" if shipped and not corpus
                              else "parsed corpus",
                              "test": {"pieces": len(test),
                                       "events": int(sum(len(t) - 1 for t in test))}}
    nll, _ = sequence_nll(model, test)
    report["nll"] = {"conditional": nll,
                     "unigram": unigram_nll(train_tokens, test, counts=train_counts),
                     "uniform": UNIFORM_NLL}
    if ablation_path is not None and Path(ablation_path).is_file():
        ablation = CharRNN(ablation_path, threads=threads)
        report["nll"]["ablation"] = sequence_nll(ablation, test, zero_controls=True)[0]
    else:
        recorded = model.manifest.get("metrics", {}).get("nll", {}).get("ablation")
        log.info("no ablation model at %s; reporting the figure recorded at export",
                 ablation_path)
        report["nll"]["ablation"] = recorded
        report["nll"]["ablation_recorded"] = True
    lap("nll")
    report["controllability"] = controllability(model, seconds=seconds, seeds=seeds,
                                                temperature=temperature, top_p=top_p)
    lap("controllability")
    generated = generate_minutes(model, test, copy_minutes, temperature=temperature,
                                 top_p=top_p)
    generated_tokens = [np.asarray(g.tokens) for g in generated]
    report["copying"] = {
        "generated": copying(pitch_sequences(generated_tokens), train_notes),
        "held_out_real": copying(pitch_sequences(test), train_notes),
        "generated_minutes": copy_minutes}
    lap("copying")
    report["bleu"] = {"generated_vs_held_out": weighted_bleu(generated_tokens, test)}
    if train_tokens is not None:
        # Against the same (larger) reference set as the held-out pieces, so those two
        # compare directly.
        report["bleu"]["held_out_vs_train"] = weighted_bleu(test, train_tokens)
        report["bleu"]["generated_vs_train"] = weighted_bleu(generated_tokens, train_tokens)
    lap("bleu")
    if live is not None:
        copy_index, guide = load_copy_index(model), load_guide(model)
        report["live"] = evaluate_charrnn.live_figures(
            model, copy_index=copy_index, test=test, train_notes=train_notes,
            train_sample=train_sample, guide=guide,
            progress=lambda name: log.debug("live: %s", name), **live)
        lap("live")
    report["timings_s"] = timings
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines `livegen eval charrnn` prints."""
    nll = report["nll"]
    ctl = report["controllability"]
    cop = report["copying"]
    ablation = nll.get("ablation")
    recorded = " (recorded at export)" if nll.get("ablation_recorded") else ""
    lines = [
        f"model {report['model']} ({report['variant']}); test set: "
        f"{report['test']['pieces']} pieces, {report['test']['events']} events",
        "held-out NLL (nats/event):",
        f"  conditional {nll['conditional']:.4f}",
        f"  ablation    {ablation:.4f}{recorded}" if ablation is not None
        else "  ablation    (none)",
        f"  unigram     {nll['unigram']:.4f}",
        f"  uniform     {nll['uniform']:.4f}",
        f"controllability ({ctl['levels']} levels x {ctl['seeds']} seeds x "
        f"{ctl['seconds']:g} s, C-major key):",
        f"  pitch:   rho {ctl['pitch']['rho']:.3f}  mean pitch by level "
        f"{ctl['pitch']['mean_pitch']}",
        f"  density: rho {ctl['density']['rho']:.3f}  note-ons/s by level "
        f"{ctl['density']['note_ons_per_s']}",
        f"  note-ons in C major: {100 * ctl['c_major_share']:.1f}% of {ctl['note_ons']}",
        f"copying (longest note-on run shared with a training piece, "
        f"{cop['generated_minutes']:g} generated minutes):",
    ]
    for who in ("generated", "held_out_real"):
        for how in ("exact", "transposed"):
            d = cop[who][how]
            lines.append(f"  {who:13s} {how:10s} max {d['max']:3d}  median {d['median']:5.1f}"
                         f"  p90 {d['p90']:5.1f}  over 16: {d['over_16']}/{d['pieces']}")
    bleu = report["bleu"]
    lines += ["weighted BLEU (n = 2..9, SEEDS.md section 5):",
              "  " + "   ".join(f"{name.replace('_', ' ')} {value:.4f}"
                                for name, value in bleu.items())]
    if "live" in report:
        from livegen.evaluate_charrnn import format_live

        lines.append(format_live(report["live"]))
    timings = ", ".join(f"{name} {s:g} s" for name, s in report["timings_s"].items())
    lines.append(f"({report['seconds']:.0f} s: {timings}; held-out pieces from the "
                 f"{report['data']})")
    return "\n".join(lines)


def eval_command(args: argparse.Namespace) -> int:
    """`livegen eval charrnn|langevin [options]`."""
    from livegen import config as config_module

    if args.model == "langevin":
        return langevin_eval_command(args.rest)
    if args.model == "dcrnn":
        return dcrnn_eval_command(args.rest)

    parser = argparse.ArgumentParser(prog="livegen eval charrnn",
                                     description="Held-out NLL, controllability, copying and "
                                                 "BLEU of the Char-RNN (ONNX Runtime), and "
                                                 "the music it plays live under the "
                                                 "engine's controls (evaluate_charrnn.py).")
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help="config whose generators.charrnn names the model")
    parser.add_argument("--model", type=Path, help="manifest (default: the config's)")
    parser.add_argument("--ablation", type=Path, default=None,
                        help="manifest of the zeroed-controls model (default: beside the "
                             "model, NAME-ablation.json)")
    parser.add_argument("--seconds", type=float, default=30.0, help="per controllability run")
    parser.add_argument("--seeds", type=int, default=8, help="runs per control level")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="generated minutes for copying and BLEU")
    parser.add_argument("--live-seconds", type=float, default=60.0,
                        help="length of each live run (default 60)")
    parser.add_argument("--live-seeds", type=int, default=24,
                        help="runs per overlap condition (default 24: with 8, blocks of "
                             "seeds gave 0.77-0.89 for one condition)")
    parser.add_argument("--bin-seeds", type=int, default=8,
                        help="runs per pitch or density bin (default 8: with 4, blocks "
                             "of seeds gave 0.89-0.96 for one bin's in-band share)")
    parser.add_argument("--key-seeds", type=int, default=2, help="runs per key (default 2)")
    parser.add_argument("--jump-seeds", type=int, default=8,
                        help="runs per control jump (default 8)")
    parser.add_argument("--free", choices=["guide", "unasked", "self"], default=None,
                        help="how undriven controls are sent (default: the model's)")
    parser.add_argument("--no-live", action="store_true", help="skip the live figures")
    parser.add_argument("--corpus", action="store_true",
                        help="take the held-out pieces from the parsed corpus (a first "
                             "parse takes minutes) and add BLEU against the training set")
    parser.add_argument("--write", action="store_true",
                        help="record the figures in the model's manifest (metrics)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    options = parser.parse_args(args.rest)
    cfg = config_module.load(options.config).generator("charrnn")
    model_path = options.model or cfg.model
    ablation = options.ablation or model_path.with_name(model_path.stem + "-ablation.json")
    live = None if options.no_live else {
        "seconds": options.live_seconds, "seeds": options.live_seeds,
        "bin_seeds": options.bin_seeds, "key_seeds": options.key_seeds,
        "jump_seeds": options.jump_seeds, "free": options.free}
    report = evaluate(model_path, ablation_path=ablation, seconds=options.seconds,
                      seeds=options.seeds, copy_minutes=options.minutes,
                      temperature=cfg.temperature, top_p=cfg.top_p, threads=cfg.threads,
                      live=live, corpus=options.corpus)
    print(format_report(report))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if options.write:
        manifest = json.loads(model_path.read_text(encoding="utf-8"))
        metrics = manifest.setdefault("metrics", {})
        metrics.update({k: report[k] for k in ("nll", "controllability", "copying", "bleu",
                                               "live") if k in report})
        metrics["test"] = report["test"]
        model_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"recorded in {model_path}")
    return 0


# ---------------------------------------------------------------- DCRNN: piano-roll figures
# GENERATORS.md section 3's figures for GAN piano rolls, over batches of (N, T, 128) rolls
# (roll.piano_roll's SILENT / SUSTAIN / ONSET cells), with bars of BAR_STEPS 16ths.

BAR_STEPS = 16
# Note lengths in 16ths: 1, 2, 3, 4, 5-6, 7-8, 9-12, 13-16, 17 and more.
LENGTH_EDGES = (1, 2, 3, 4, 5, 7, 9, 13, 17)
LENGTH_LABELS = ("1", "2", "3", "4", "5-6", "7-8", "9-12", "13-16", "17+")


def _bars(rolls: np.ndarray) -> np.ndarray:
    """(N * bars, 16, 128) bars of (N, T, 128) rolls (T a multiple of 16)."""
    rolls = np.asarray(rolls)
    if rolls.ndim != 3 or rolls.shape[1] % BAR_STEPS:
        raise ValueError(f"rolls have shape (N, T, 128) with T a multiple of {BAR_STEPS}, "
                         f"got {rolls.shape}")
    return rolls.reshape(-1, BAR_STEPS, rolls.shape[2])


def empty_bar_rate(rolls: np.ndarray) -> float:
    """The share of bars in which nothing sounds."""
    return float((~(_bars(rolls) > 0).any(axis=(1, 2))).mean())


def pitch_classes_per_bar(rolls: np.ndarray) -> float:
    """The mean number of pitch classes (0..12) sounding in a bar, over bars that are not
    empty (so that it does not repeat the empty-bar rate)."""
    keys = (_bars(rolls) > 0).any(axis=1)  # (bars, 128)
    classes = np.zeros((len(keys), 12), dtype=bool)
    for pitch_class in range(12):
        classes[:, pitch_class] = keys[:, pitch_class::12].any(axis=1)
    used = classes.sum(axis=1)
    return float(used[used > 0].mean()) if (used > 0).any() else 0.0


def polyphony_rate(rolls: np.ndarray, more_than: int = 2) -> float:
    """The share of time steps with more than `more_than` keys sounding (MuseGAN's PP)."""
    return float(((np.asarray(rolls) > 0).sum(axis=2) > more_than).mean())


def roll_notes(rolls: np.ndarray) -> list[list]:
    """The grid notes of each roll (roll.grid_notes)."""
    return [grid.grid_notes(r) for r in np.asarray(rolls)]


def note_lengths(rolls: np.ndarray) -> np.ndarray:
    """The length in steps of every note of the rolls (a note cut by a roll's end counts
    up to there)."""
    return np.asarray([n.end - n.start for notes in roll_notes(rolls) for n in notes],
                      dtype=np.int64)


def length_histogram(lengths: np.ndarray) -> list[float]:
    """The share of notes in each LENGTH_LABELS bin."""
    lengths = np.asarray(lengths)
    counts = np.bincount(np.searchsorted(LENGTH_EDGES, lengths, side="right") - 1,
                         minlength=len(LENGTH_EDGES))
    return [round(float(c) / max(1, len(lengths)), 4) for c in counts]


def in_scale_ratio(rolls: np.ndarray, scales: np.ndarray) -> float:
    """The share of notes (onsets) whose pitch class has weight in the roll's scale (12
    values; a class with weight 0 is outside). nan when there are no notes."""
    inside = total = 0
    for notes, scale in zip(roll_notes(rolls), np.asarray(scales), strict=True):
        classes = np.asarray([n.pitch % 12 for n in notes], dtype=np.int64)
        inside += int((scale[classes] > 0).sum())
        total += len(classes)
    return inside / total if total else math.nan


# What `segment_features` measures, one column each.
FEATURES = ("notes_per_bar", "pitch_classes_per_bar", "polyphony", "mean_pitch",
            "pitch_range", "mean_length", "on_beat_share", "sounding_keys")


def segment_features(rolls: np.ndarray) -> np.ndarray:
    """(N, len(FEATURES)) per-segment features (mgeval's kind): notes per bar, pitch
    classes per bar, share of steps with more than 2 keys, mean and range of the notes'
    pitches, mean note length, share of onsets on a beat, mean keys sounding per step.
    A segment with no notes gets 0 for the pitch figures."""
    rolls = np.asarray(rolls)
    bars = rolls.shape[1] / BAR_STEPS
    rows = []
    for segment, notes in zip(rolls, roll_notes(rolls), strict=True):
        pitches = np.asarray([n.pitch for n in notes], dtype=np.float64)
        starts = np.asarray([n.start for n in notes], dtype=np.int64)
        lengths = np.asarray([n.end - n.start for n in notes], dtype=np.float64)
        rows.append([
            len(notes) / bars,
            pitch_classes_per_bar(segment[None]) if len(notes) else 0.0,
            polyphony_rate(segment[None]),
            pitches.mean() if len(notes) else 0.0,
            np.ptp(pitches) if len(notes) else 0.0,
            lengths.mean() if len(notes) else 0.0,
            (starts % 4 == 0).mean() if len(notes) else 0.0,
            (segment > 0).sum(axis=1).mean()])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def histogram_overlap(a: np.ndarray, b: np.ndarray, bins: int = 20) -> float:
    """The overlapping area (0..1) of the normalised histograms of two samples over the
    bins spanning both: 1 when they fall alike, 0 when they never meet (mgeval's OA, with
    histograms for the KDEs)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    if high <= low:
        return 1.0
    edges = np.linspace(low, high, bins + 1)
    ha = np.histogram(a, edges)[0] / len(a)
    hb = np.histogram(b, edges)[0] / len(b)
    return float(np.minimum(ha, hb).sum())


def feature_overlap(generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """histogram_overlap of every segment feature, and their mean."""
    result = {name: round(histogram_overlap(generated[:, i], reference[:, i]), 4)
              for i, name in enumerate(FEATURES)}
    result["mean"] = round(float(np.mean(list(result.values()))), 4)
    return result


def _bar_key(bar: np.ndarray) -> bytes | None:
    """A bar's cells moved down to its lowest sounding key (so a transposed copy has the
    same key); None for an empty bar, which copies nothing."""
    keys = np.flatnonzero((bar > 0).any(axis=0))
    if not len(keys):
        return None
    return bar[:, keys[0]:keys[-1] + 1].tobytes() + bytes([keys[-1] - keys[0]])


def bar_index(pieces: Sequence[tuple[np.ndarray, Sequence[int]]]
              ) -> dict[bytes, set[tuple[int, int]]]:
    """The 16-step bar from each given start of each (T, 128) training roll, keyed
    transposition-invariantly -> the (piece, start step) places it occurs."""
    index: dict[bytes, set[tuple[int, int]]] = {}
    for p, (piece_roll, starts) in enumerate(pieces):
        for start in starts:
            bar = np.asarray(piece_roll[start:start + BAR_STEPS])
            key = _bar_key(bar) if len(bar) == BAR_STEPS else None
            if key is not None:
                index.setdefault(key, set()).add((p, int(start)))
    return index


def copied_bars(sequences: Sequence[np.ndarray], index: dict[bytes, set[tuple[int, int]]]
                ) -> dict[str, Any]:
    """How much of generated (T, 128) sequences occurs in the training bars of `index`: the
    share of non-empty bars found there, and the longest run of consecutive generated bars
    that are consecutive bars of one training piece (up to transposition)."""
    found = total = longest = 0
    for sequence in sequences:
        runs: dict[tuple[int, int], int] = {}
        for b in range(len(sequence) // BAR_STEPS):
            key = _bar_key(np.asarray(sequence[b * BAR_STEPS:(b + 1) * BAR_STEPS]))
            places = index.get(key, set()) if key is not None else set()
            total += key is not None
            found += bool(places)
            runs = {(p, s): runs.get((p, s - BAR_STEPS), 0) + 1 for p, s in places}
            longest = max(longest, *runs.values(), 0)
    return {"bars": total, "found_share": round(found / max(1, total), 4),
            "longest_run_bars": longest}


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray,
                              train: np.ndarray) -> float:
    """Accuracy on the rows not in `train` of a nearest-centroid classifier fitted on the
    rows in `train` (features standardised by the training rows' spread)."""
    features, labels, train = np.asarray(features), np.asarray(labels), np.asarray(train)
    spread = features[train].std(axis=0)
    scaled = features / np.where(spread > 0, spread, 1.0)
    classes = np.unique(labels[train])
    centroids = np.stack([scaled[train & (labels == c)].mean(axis=0) for c in classes])
    test = ~train
    distances = ((scaled[test][:, None] - centroids[None]) ** 2).sum(axis=2)
    return float((classes[distances.argmin(axis=1)] == labels[test]).mean())


def roll_figures(rolls: np.ndarray, scales: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of a set of segments: empty bars, pitch classes per bar, polyphony,
    notes per bar, the share of one-step notes and the note-length histogram, and the
    in-scale ratio under their scales when given."""
    lengths = note_lengths(rolls)
    bars = len(_bars(rolls))
    figures: dict[str, Any] = {
        "segments": len(rolls),
        "empty_bar_rate": round(empty_bar_rate(rolls), 4),
        "pitch_classes_per_bar": round(pitch_classes_per_bar(rolls), 3),
        "polyphony_rate": round(polyphony_rate(rolls), 4),
        "notes_per_bar": round(len(lengths) / max(1, bars), 3),
        "one_step_share": round(float((lengths == 1).mean()) if len(lengths) else 0.0, 4),
        "length_histogram": length_histogram(lengths)}
    if scales is not None:
        figures["in_scale_ratio"] = round(in_scale_ratio(rolls, scales), 4)
    return figures


# ---------------------------------------------------------------- DCRNN: the command
# Gesture codes for noise[0..7], as examples/emg.toml maps them: eight armband channels,
# normalised to 0..1 by the calibration, then 0..1 -> -1..1. The levels are patterns
# defined here (flexor side active for a wave in, extensor side for a wave out), not
# recordings; each trial adds GESTURE_JITTER of Gaussian noise per channel.
GESTURES = {
    "rest": (0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05),
    "wave_in": (0.15, 0.70, 0.85, 0.60, 0.20, 0.10, 0.05, 0.10),
    "wave_out": (0.60, 0.20, 0.10, 0.10, 0.30, 0.75, 0.85, 0.60),
}
GESTURE_JITTER = 0.1
# Compared with the model's own setting. A GAN whose critic saw fakes thresholded at 0
# leaves many frame values just around 0, so the useful levels lie close to it.
HYSTERESIS_SUSTAINS = (-0.005, -0.01, -0.02, -0.05, -0.1, -0.5)
EVAL_KEYS = {"C major": 0, "G major": 7, "E-flat major": 3, "F-sharp major": 6}


def major_scale_condition(root: int) -> np.ndarray:
    """The scale a key control sends: 1/7 on the major scale of `root`."""
    return (major_scale(root) / 7).astype(np.float32)


def generate_rolls(model: Any, z: np.ndarray, scales: np.ndarray, *,
                   method: str | None = None, sustain: float | None = None, seed: int = 0,
                   batch: int = 256) -> np.ndarray:
    """(N, phrase, 128) rolls of a DCRNN for codes (N, noise) and scales (N, 12),
    binarised by `method` and `sustain` (default: the model's own); sampling draws from
    (seed, row)."""
    from livegen.music.roll import binarise

    method = method or model.binarisation
    found = []
    for start in range(0, len(z), batch):
        planes = model.planes(z[start:start + batch], scales[start:start + batch])
        for row, p in enumerate(planes, start):
            uniforms = (np.random.default_rng((seed, row)).random(p.shape)
                        if method == "sample" else None)
            found.append(binarise(p, model.low, method=method, threshold=model.threshold,
                                  sustain=model.sustain if sustain is None else sustain,
                                  uniforms=uniforms))
    return np.stack(found)


def binarisation_distance(generated: dict[str, Any], data: dict[str, Any]) -> float:
    """How far a binarisation's figures lie from the data's, in what binarisation changes:
    the L1 distance of the note-length histograms (fragments and drones) plus the
    relative errors of notes per bar and of polyphony. The smallest is the live choice."""
    lengths = sum(abs(a - b) for a, b in zip(generated["length_histogram"],
                                              data["length_histogram"], strict=True))
    return float(lengths
                 + abs(generated["notes_per_bar"] - data["notes_per_bar"])
                 / max(data["notes_per_bar"], 1e-9)
                 + abs(generated["polyphony_rate"] - data["polyphony_rate"])
                 / max(data["polyphony_rate"], 1e-9))


def random_rolls(reference: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Random segments with the reference's note density: a Poisson number of notes per
    segment with its mean, each with a pitch and a length drawn from its notes, at a
    uniformly random step."""
    notes = [n for ns in roll_notes(reference) for n in ns]
    pitches = np.asarray([n.pitch for n in notes])
    lengths = np.asarray([n.end - n.start for n in notes])
    steps = reference.shape[1]
    rolls_out = np.zeros((count, steps, reference.shape[2]), dtype=np.uint8)
    for segment in rolls_out:
        for _ in range(rng.poisson(len(notes) / len(reference))):
            i = rng.integers(len(notes))
            start = int(rng.integers(steps))
            end = min(steps, start + int(lengths[i]))
            segment[start:end, pitches[i]] = np.maximum(segment[start:end, pitches[i]], 1)
            segment[start, pitches[i]] = 2
    return rolls_out


def segment_vectors(rolls: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """What a listener tells segments apart by: segment_features scaled by the data's
    spread, and the share of onsets at each of the 16 steps of a bar (the rhythm)."""
    features = segment_features(rolls) / spread
    onsets = np.zeros((len(rolls), BAR_STEPS))
    for i, notes in enumerate(roll_notes(rolls)):
        for n in notes:
            onsets[i, n.start % BAR_STEPS] += 1
    onsets /= np.maximum(onsets.sum(axis=1, keepdims=True), 1)
    return np.concatenate([features, 4 * onsets], axis=1)


def noise_controllability(model: Any, spread: np.ndarray, *, seeds: int = 8,
                          codes: int = 24, step: float = 0.5) -> dict[str, Any]:
    """How far segments move when the driven noise values move, beside the variation
    between random codes. Per seed (the fixed values), `codes` random settings of the
    driven values, each nudged by a random direction of length `step`: the mean distance
    between the two segments' vectors per unit of change; the mean distance between two
    random settings of the driven values; and between two entirely random codes."""
    from livegen.generators.dcrnn import fixed_code

    scale = major_scale_condition(0)
    driven = np.asarray(model.driven)
    nudged, settings, randoms = [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng((seed, 11))
        base = np.tile(fixed_code(seed, model.noise_size), (codes, 1))
        a = base.copy()
        a[:, driven] = rng.uniform(-1, 1, (codes, len(driven)))
        direction = rng.normal(size=(codes, len(driven)))
        direction *= step / np.linalg.norm(direction, axis=1, keepdims=True)
        b = a.copy()
        b[:, driven] = np.clip(a[:, driven] + direction, -1, 1)
        c = base.copy()
        c[:, driven] = rng.uniform(-1, 1, (codes, len(driven)))
        full = rng.uniform(-1, 1, (2 * codes, model.noise_size)).astype(np.float32)
        scales = np.tile(scale, (codes, 1))
        va, vb, vc = (segment_vectors(generate_rolls(model, x, scales), spread)
                      for x in (a, b, c))
        vr = segment_vectors(generate_rolls(model, full, np.tile(scale, (2 * codes, 1))),
                             spread)
        moved = np.linalg.norm(b[:, driven] - a[:, driven], axis=1)
        nudged += list(np.linalg.norm(vb - va, axis=1)[moved > 0] / moved[moved > 0])
        settings += list(np.linalg.norm(vc - va, axis=1))
        randoms += list(np.linalg.norm(vr[:codes] - vr[codes:], axis=1))
    return {"per_unit_change": round(float(np.mean(nudged)), 3),
            "between_driven_settings": round(float(np.mean(settings)), 3),
            "between_random_codes": round(float(np.mean(randoms)), 3),
            "driven_share": round(float(np.mean(settings) / max(np.mean(randoms), 1e-9)), 3),
            "seeds": seeds, "codes": codes, "step": step}


def gesture_codes(gesture: str, trials: int, rng: np.random.Generator) -> np.ndarray:
    """(trials, 8) noise values of a gesture: its channel levels with jitter, 0..1 -> -1..1."""
    levels = np.asarray(GESTURES[gesture]) + rng.normal(0, GESTURE_JITTER, (trials, 8))
    return np.clip(levels, 0, 1) * 2 - 1


def gesture_accuracy(model: Any, spread: np.ndarray, *, seeds: int = 5, trials: int = 40
                     ) -> dict[str, Any]:
    """Whether the three gestures give segments that can be told apart: per seed (the
    fixed noise values), `trials` jittered codes per gesture; a nearest-centroid classifier
    fitted on the first half of each gesture's trials labels the second half."""
    from livegen.generators.dcrnn import fixed_code

    accuracies = []
    for seed in range(seeds):
        rng = np.random.default_rng((seed, 13))
        vectors, labels = [], []
        for label, gesture in enumerate(GESTURES):
            z = np.tile(fixed_code(seed, model.noise_size), (trials, 1))
            z[:, :8] = gesture_codes(gesture, trials, rng)
            scales = np.tile(major_scale_condition(0), (trials, 1))
            vectors.append(segment_vectors(generate_rolls(model, z, scales), spread))
            labels += [label] * trials
        train = np.tile(np.arange(trials) < trials // 2, len(GESTURES))
        accuracies.append(nearest_centroid_accuracy(np.concatenate(vectors),
                                                    np.asarray(labels), train))
    return {"accuracy": round(float(np.mean(accuracies)), 4),
            "per_seed": [round(a, 4) for a in accuracies], "chance": round(1 / 3, 4),
            "trials": trials, "jitter": GESTURE_JITTER,
            "gestures": {k: list(v) for k, v in GESTURES.items()}}


def _data_sets(model: Any, count: int, seed: int) -> tuple[Any, Any, Any]:
    """(`count` held-out segments, `count` training segments, the training pieces) in the
    model's keys, untransposed, drawn as training draws them (each collection alike)."""
    from livegen.train import roll_data

    corpus = roll_data.load_pieces()
    high = model.low + model.keys
    test = roll_data.SegmentSource(corpus.test, model.phrase_steps, model.low, high)
    train = roll_data.SegmentSource(corpus.train, model.phrase_steps, model.low, high)
    return (test.draw(count, np.random.default_rng((seed, 1)), transpose=0),
            train.draw(count, np.random.default_rng((seed, 2)), transpose=0), corpus.train)


def evaluate_dcrnn(model_path: Path, *, untrained_path: Path | None, count: int = 512,
                   seed: int = 0, threads: int = 1, noise_seeds: int = 8,
                   gesture_seeds: int = 5, trials: int = 40, timing_requests: int = 400
                   ) -> dict[str, Any]:
    """Every figure of `livegen eval dcrnn`, as a dict (what --write puts in the manifest)."""
    from livegen.generators.dcrnn import DCRNN

    started = time.monotonic()
    model = DCRNN(model_path, threads=threads)  # a bad model fails before the corpus loads
    untrained = (DCRNN(untrained_path, threads=threads)
                 if untrained_path is not None and Path(untrained_path).is_file() else None)
    test, train, train_pieces = _data_sets(model, count, seed)
    reference, scales = test.rolls, test.scales
    z = np.random.default_rng(seed).uniform(-1, 1, (count, model.noise_size))
    report: dict[str, Any] = {"model": str(model_path), "variant": model.variant,
                              "segments": count,
                              "test_pieces": len({piece for piece, _, _ in test.origins})}
    reference_features = segment_features(reference)
    data_figures = roll_figures(reference, scales)
    # Binarisation first: the model is then measured as it will play, with the choice.
    choices = [("threshold", None), ("sample", None)] + [
        ("hysteresis", s) for s in sorted({*HYSTERESIS_SUSTAINS, model.sustain})]
    report["binarisation_choice"] = {}
    best = None
    for method, sustain in choices:
        found = roll_figures(generate_rolls(model, z, scales, method=method, sustain=sustain))
        name = method if sustain is None else f"{method} {sustain:g}"
        entry = {k: v for k, v in found.items()
                 if k in ("notes_per_bar", "one_step_share", "length_histogram",
                          "empty_bar_rate", "polyphony_rate")}
        entry["distance"] = round(binarisation_distance(found, data_figures), 4)
        report["binarisation_choice"][name] = entry
        if best is None or entry["distance"] < best[0]:
            best = (entry["distance"], {"method": method, "threshold": model.threshold,
                                        "sustain": model.sustain if sustain is None
                                        else sustain})
    report["binarisation"] = chosen = best[1]
    for generator in (model, untrained):
        if generator is not None:
            generator.binarisation, generator.sustain = chosen["method"], chosen["sustain"]
    report["figures"] = {}
    sets = {"data": reference, "model": generate_rolls(model, z, scales),
            "random": random_rolls(reference, count, np.random.default_rng(seed + 1))}
    if untrained is not None:
        sets["untrained"] = generate_rolls(untrained, z, scales)
    for name, found in sets.items():
        figures = roll_figures(found, scales)
        # The data's own overlap: training segments against the held-out ones.
        other = segment_features(train.rolls if name == "data" else found)
        figures["feature_overlap"] = feature_overlap(other, reference_features)
        report["figures"][name] = figures
    log.info("figures done (%.0f s)", time.monotonic() - started)
    report["in_scale"] = {}
    for key, root in EVAL_KEYS.items():
        key_scales = np.tile(major_scale_condition(root), (count, 1))
        report["in_scale"][key] = {
            "model": round(in_scale_ratio(generate_rolls(model, z, key_scales), key_scales), 4),
            "random": round(in_scale_ratio(sets["random"], key_scales), 4)}
        if untrained is not None:
            report["in_scale"][key]["untrained"] = round(in_scale_ratio(
                generate_rolls(untrained, z, key_scales), key_scales), 4)
    log.info("in-scale done (%.0f s)", time.monotonic() - started)
    index = bar_index([(piece.roll(), piece.starts) for piece in train_pieces])
    # Sequences as a performer makes them: four two-bar phrases, each under its own code.
    usable = (count // 4) * 4
    sequences = sets["model"][:usable].reshape(-1, 4 * model.phrase_steps, 128)
    held_out = reference[:usable]
    report["copying"] = {
        "model": copied_bars(sequences, index),
        "held_out_data": copied_bars(held_out.reshape(-1, 4 * model.phrase_steps,
                                                      held_out.shape[2]), index)}
    log.info("copying done (%.0f s)", time.monotonic() - started)
    spread = segment_features(reference).std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    report["noise"] = noise_controllability(model, spread, seeds=noise_seeds)
    report["gestures"] = gesture_accuracy(model, spread, seeds=gesture_seeds, trials=trials)
    if untrained is not None:
        report["gestures_untrained"] = gesture_accuracy(untrained, spread, seeds=gesture_seeds,
                                                        trials=trials)["accuracy"]
    log.info("noise and gestures done (%.0f s)", time.monotonic() - started)
    report["segment_time"] = segment_times(model, timing_requests)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def segment_times(model: Any, requests: int = 400) -> dict[str, Any]:
    """ms per `segment` call of one and two 4/4 bars (graph, binarisation and notes), each
    under a fresh random noise setting and key, after 20 untimed calls; and p99 as a share
    of a bar at 120 bpm (2 s)."""
    from livegen.control import Controls
    from livegen.generators.segment import SegmentRequest

    rng = np.random.default_rng(5)
    result: dict[str, Any] = {}
    for bars in (1, 2):
        timings = []
        for i in range(requests + 20):
            controls = Controls(key=int(rng.integers(13)),
                                noise=tuple(rng.uniform(-1, 1, 64).tolist()))
            request = SegmentRequest(bar=i, bars=bars, beats_per_bar=4, bpm=120.0,
                                     controls=controls, deadline=0.0)
            begun = time.perf_counter()
            model.segment(request)
            if i >= 20:
                timings.append((time.perf_counter() - begun) * 1e3)
        p99 = float(np.percentile(timings, 99))
        result[f"{bars}_bar"] = {"p50_ms": round(float(np.percentile(timings, 50)), 3),
                                 "p99_ms": round(p99, 3),
                                 "p99_share_of_bar_at_120": round(p99 / 2000, 5)}
    return result


def format_dcrnn_report(report: dict[str, Any]) -> str:
    """The report as the lines `livegen eval dcrnn` prints."""
    figures = report["figures"]
    columns = [c for c in ("data", "model", "random", "untrained") if c in figures]
    lines = [f"model {report['model']} ({report['variant']}, "
             f"{report['binarisation']['method']}); "
             f"{report['segments']} segments, and as many of {report['test_pieces']} held-out "
             "pieces",
             f"{'figure':24s}" + "".join(f"{c:>11s}" for c in columns)]
    for key in ("empty_bar_rate", "pitch_classes_per_bar", "polyphony_rate", "notes_per_bar",
                "one_step_share", "in_scale_ratio"):
        lines.append(f"{key:24s}" + "".join(f"{figures[c][key]:11.3f}" for c in columns))
    lines.append(f"{'feature overlap (mean)':24s}" + "".join(
        f"{figures[c]['feature_overlap']['mean']:11.3f}" for c in columns))
    lines.append("note lengths (16ths)     " + " ".join(f"{label:>5s}"
                                                       for label in LENGTH_LABELS))
    for c in columns:
        lines.append(f"  {c:22s} " + " ".join(f"{v:5.2f}" for v in
                                                figures[c]["length_histogram"]))
    chosen = report["binarisation"]
    lines.append("binarisation: notes/bar, one-step share, empty bars, polyphony, distance to "
                 f"the data; lengths. Chosen: {chosen['method']} (threshold "
                 f"{chosen['threshold']:g}, sustain {chosen['sustain']:g})")
    for method, f in report["binarisation_choice"].items():
        lines.append(f"  {method:16s} {f['notes_per_bar']:7.2f} {f['one_step_share']:7.3f} "
                     f"{f['empty_bar_rate']:7.3f} {f['polyphony_rate']:7.3f} "
                     f"{f['distance']:6.3f}  "
                     + " ".join(f"{v:4.2f}" for v in f["length_histogram"]))
    lines.append("in-scale ratio under a key: " + "; ".join(
        f"{key} {v['model']:.3f} (random {v['random']:.3f}"
        + (f", untrained {v['untrained']:.3f})" if "untrained" in v else ")")
        for key, v in report["in_scale"].items()))
    copying = report["copying"]
    lines.append(f"copying (4-phrase sequences vs training bars, up to transposition): "
                 f"model {copying['model']['found_share']:.3f} of bars found, longest run "
                 f"{copying['model']['longest_run_bars']} bars; held-out data "
                 f"{copying['held_out_data']['found_share']:.3f}, "
                 f"{copying['held_out_data']['longest_run_bars']} bars")
    n = report["noise"]
    lines.append(f"noise: {n['per_unit_change']:.2f} per unit change of the driven values; "
                 f"between driven settings {n['between_driven_settings']:.2f}, between "
                 f"random codes {n['between_random_codes']:.2f} "
                 f"(driven share {n['driven_share']:.2f})")
    g = report["gestures"]
    lines.append(f"gestures rest / wave in / wave out: nearest-centroid accuracy "
                 f"{g['accuracy']:.3f} (chance {g['chance']:.3f}; per seed {g['per_seed']})"
                 + (f"; untrained {report['gestures_untrained']:.3f}"
                    if "gestures_untrained" in report else ""))
    lines.append("segment time (ms, one thread): " + "; ".join(
        f"{name.replace('_', ' ')} p50 {t['p50_ms']:.2f} p99 {t['p99_ms']:.2f} "
        f"({100 * t['p99_share_of_bar_at_120']:.2f}% of a bar at 120 bpm)"
        for name, t in report["segment_time"].items()))
    lines.append(f"({report['seconds']:.0f} s)")
    return "\n".join(lines)


def dcrnn_eval_command(argv: list[str]) -> int:
    """`livegen eval dcrnn [options]`."""
    parser = argparse.ArgumentParser(prog="livegen eval dcrnn",
                                     description="Piano-roll figures, in-scale ratio, "
                                                 "copying, noise controllability and gesture "
                                                 "distinguishability of the DCRNN, beside "
                                                 "the data and baselines (ONNX Runtime).")
    parser.add_argument("--model", type=Path, default=Path("models/dcrnn.json"))
    parser.add_argument("--untrained", type=Path, default=None,
                        help="the untrained baseline's manifest (default: beside the model, "
                             "NAME-untrained.json)")
    parser.add_argument("--segments", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true",
                        help="record the figures in the model's manifest (metrics)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    options = parser.parse_args(argv)
    untrained = options.untrained or options.model.with_name(
        options.model.stem + "-untrained.json")
    report = evaluate_dcrnn(options.model, untrained_path=untrained, count=options.segments,
                            seed=options.seed)
    print(format_dcrnn_report(report))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if options.write:
        manifest = json.loads(options.model.read_text(encoding="utf-8"))
        manifest["metrics"] = {k: v for k, v in report.items() if k != "model"}
        # The runtime's default binarisation: the measured choice.
        manifest["binarisation"] = report["binarisation"]
        options.model.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"recorded in {options.model}")
    return 0
