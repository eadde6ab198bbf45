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
    control_vector,
    generate,
    major_scale,
)
from livegen.generators.langevin import estimate_key, pitch_class_weights, scale_classes
from livegen.music import events, features
from livegen.music import roll as grid

log = logging.getLogger(__name__)

UNIFORM_NLL = math.log(events.VOCAB_SIZE)
BLEU_WEIGHTS = (0, 1 / 12, 1 / 12, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 12, 1 / 12)
BLEU_EPSILON = 0.1  # smoothing: a zero n-gram match count counts as 0.1 (Chen & Cherry's 1)
LEVELS = 10
C_MAJOR = frozenset({0, 2, 4, 5, 7, 9, 11})
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
                controls[r, :n] = features.control_vectors(tokens)[1:]
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


def unigram_nll(train: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """NLL per event of the training set's token frequencies (add-one smoothed) on the test
    sequences' predicted events (all but each first token)."""
    counts = np.bincount(np.concatenate(train).astype(np.int64),
                         minlength=events.VOCAB_SIZE) + 1.0
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
                vectors.append(control_vector(pitch, density, major_scale(0)))
                levels.append(level)
                seed_list.append(1000 * (sweep == "density") + 100 * level + s)
        results = generate(model, seconds, np.stack(vectors), seeds=seed_list,
                           temperature=temperature, top_p=top_p)
        realised = []
        for result in results:
            pitches = _note_ons(result)
            in_key += int(np.isin(pitches % 12, list(C_MAJOR)).sum())
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

def piece_schedule(tokens: np.ndarray):
    """A control schedule that follows a real piece's own controls by time (looping), so
    generated music is steered like real music."""
    tokens = np.asarray(tokens, dtype=np.int64)
    controls = features.control_vectors(tokens)
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
    schedules = [piece_schedule(test[i]) for i in picks]
    return generate(model, piece_seconds, schedules, seeds=[seed * 1000 + i for i in
                                                             range(count)],
                    temperature=temperature, top_p=top_p)


# ---------------------------------------------------------------- a register change, live

REGISTER_WINDOWS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0))


def register_change(model: CharRNN, *, seeds: int = 8, settle_s: float = 10.0,
                    low: float = 0.1, high: float = 0.9) -> dict[str, Any]:
    """How fast the music follows a jump of the pitch control, as the engine plays it (the
    step generator, one step at a time), with and without steering: the mean pitch of the
    note-ons in windows after the jump, low -> high and high -> low, over `seeds` runs
    that settle for `settle_s` first."""
    from livegen.control import Controls
    from livegen.generators.charrnn_step import CharRNNStep

    end = settle_s + REGISTER_WINDOWS[-1][1]
    result: dict[str, Any] = {"seeds": seeds, "windows_s": [list(w) for w in REGISTER_WINDOWS],
                              "targets": {}}
    for name, start, goal in (("up", low, high), ("down", high, low)):
        controls = (Controls(pitch=start, density=0.6), Controls(pitch=goal, density=0.6))
        result["targets"][name] = features.pitch_bin_centre(
            features.control_bin(goal, features.PITCH_BINS))
        for steer in (False, True):
            onsets: list[tuple[float, int]] = []
            for seed in range(seeds):
                gen = CharRNNStep(model, seed=seed, steer=steer)
                state, index = gen.initial(), 0
                while state.time < end:
                    state, played = gen.step(state, controls[state.time >= settle_s], index)
                    index += 1
                    onsets += [(e.time - settle_s, e.pitch) for e in played if e.velocity]
            means = []
            for a, b in REGISTER_WINDOWS:
                pitches = [p for t, p in onsets if a <= t < b]
                means.append(round(float(np.mean(pitches)), 1) if pitches else None)
            result[f"{name}_{'steered' if steer else 'free'}"] = means
    return result


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
                evaluations: int | None = None, original: bool = False, eta: float = 0.0
                ) -> tuple[np.ndarray, float]:
    """Samples for every window (in batches) and the seconds it took."""
    from livegen.generators.langevin import sample, sample_original

    started = time.perf_counter()
    out = []
    for start in range(0, len(given), batch):
        rng = np.random.default_rng((seed, start))
        part = slice(start, start + batch)
        if original:
            result = sample_original(model.denoise, given[part], known[part], rng=rng,
                                     sigma_max=model.sigma_max, sigma_min=model.sigma_min)
        else:
            result = sample(model.denoise, given[part], known[part], evaluations=evaluations,
                            rng=rng, eta=eta, sigma_max=model.sigma_max,
                            sigma_min=model.sigma_min)
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
                      eta: float = 0.0) -> dict[str, Any]:
    """Every figure of `livegen eval langevin`, as a dict (what --write puts in the
    manifest). Continuation: a held-out bar of Bach as context, the next bar made.
    Harmonisation: the same, with Bach's soprano given in the made bar too."""
    from livegen.generators.langevin import ScoreModel
    from livegen.train import chorale_data

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
    for evaluations in sorted({*curve, at_deadline}):
        made, seconds = _sample_all(model, truth, known, batch=batch, seed=seed,
                                    evaluations=evaluations, eta=eta)
        harmonised, _ = _sample_all(model, truth, harmonise, batch=batch, seed=seed + 1,
                                    evaluations=evaluations, eta=eta)
        figures = chorale_figures(list(made), context)
        figures["masked_pitch_class_match"] = chorale_figures(
            list(harmonised), context, truth=list(truth))["masked_pitch_class_match"]
        figures["given_cells_kept"] = float(np.mean(harmonised[harmonise] == truth[harmonise]))
        figures["length_distance_to_bach"] = length_distance(figures, bach)
        figures["ms_per_window"] = 1e3 * seconds / len(truth)
        report["curve"][str(evaluations)] = figures
        log.info("%d evaluations: in-key %.3f, fifths %.2f, octaves %.2f /1000, crossing "
                 "%.4f, masked match %.3f (%.0f s)", evaluations, figures["in_key"],
                 figures["parallel_fifths_per_1000"], figures["parallel_octaves_per_1000"],
                 figures["crossing_per_frame"], figures["masked_pitch_class_match"],
                 time.monotonic() - started)
        if evaluations == at_deadline:
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
    paired = report["curve"][str(at_deadline)]
    same_windows, _ = _sample_all(model, truth[subset], known[subset], batch=batch,
                                  seed=seed, evaluations=at_deadline, eta=eta)
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
    columns += [(f"{n} evaluations", f) for n, f in report["curve"].items()]
    columns.append((f"original 2,000 ({report['original_2000']['windows']} bars)",
                    report["original_2000"]["figures"]))
    timing = report["timing"]
    lines = [f"model {report['model']}: window {report['window_steps']} 16ths, context "
             f"{report['context_steps']}; {report['test']['windows']} held-out bars from "
             f"{report['test']['chorales']} test chorales",
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
    parser.add_argument("--eta", type=float, default=0.0,
                        help="0 deterministic steps, 1 ancestral")
    parser.add_argument("--write", action="store_true",
                        help="record the figures in the model's manifest (metrics)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    options = parser.parse_args(rest)
    report = evaluate_langevin(options.model, windows=options.windows,
                               original_windows=options.original_windows,
                               curve=tuple(int(n) for n in options.curve.split(",")),
                               timing_segments=options.segments, eta=options.eta)
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
             top_p: float = 0.95, threads: int = 1) -> dict[str, Any]:
    """Every figure of `livegen eval charrnn`, as a dict (what --write puts in the manifest)."""
    from livegen.train import data

    started = time.monotonic()
    model = CharRNN(model_path, threads=threads)  # a bad model fails before the corpus loads
    corpus = data.load_corpus()
    train = [p.tokens for p in corpus.train]
    test = [p.tokens for p in corpus.test]
    report: dict[str, Any] = {"model": str(model_path), "variant": model.variant,
                              "test": {"pieces": len(test),
                                       "events": int(sum(len(t) - 1 for t in test))}}
    nll, _ = sequence_nll(model, test)
    report["nll"] = {"conditional": nll, "unigram": unigram_nll(train, test),
                     "uniform": UNIFORM_NLL}
    if ablation_path is not None and Path(ablation_path).is_file():
        ablation = CharRNN(ablation_path, threads=threads)
        report["nll"]["ablation"] = sequence_nll(ablation, test, zero_controls=True)[0]
    else:
        recorded = model.manifest.get("metrics", {}).get("nll", {}).get("ablation")
        log.warning("no ablation model at %s; reporting the manifest's recorded figure",
                    ablation_path)
        report["nll"]["ablation"] = recorded
    log.info("NLL done (%.0f s)", time.monotonic() - started)
    report["controllability"] = controllability(model, seconds=seconds, seeds=seeds,
                                                temperature=temperature, top_p=top_p)
    log.info("controllability done (%.0f s)", time.monotonic() - started)
    generated = generate_minutes(model, test, copy_minutes, temperature=temperature,
                                 top_p=top_p)
    generated_tokens = [np.asarray(g.tokens) for g in generated]
    report["copying"] = {
        "generated": copying(pitch_sequences(generated_tokens), pitch_sequences(train)),
        "held_out_real": copying(pitch_sequences(test), pitch_sequences(train)),
        "generated_minutes": copy_minutes}
    log.info("copying done (%.0f s)", time.monotonic() - started)
    # The first two are the pair asked for; the third scores the generated music against
    # the same (larger) reference set as the held-out pieces, so those two compare directly.
    report["bleu"] = {"generated_vs_held_out": weighted_bleu(generated_tokens, test),
                      "held_out_vs_train": weighted_bleu(test, train),
                      "generated_vs_train": weighted_bleu(generated_tokens, train)}
    report["register_change"] = register_change(model, seeds=seeds)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines `livegen eval charrnn` prints."""
    nll = report["nll"]
    ctl = report["controllability"]
    cop = report["copying"]
    ablation = nll.get("ablation")
    lines = [
        f"model {report['model']} ({report['variant']}); test set: "
        f"{report['test']['pieces']} pieces, {report['test']['events']} events",
        "held-out NLL (nats/event):",
        f"  conditional {nll['conditional']:.4f}",
        f"  ablation    {ablation:.4f}" if ablation is not None else "  ablation    (none)",
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
              f"  generated vs held-out {bleu['generated_vs_held_out']:.4f}   "
              f"held-out real vs train {bleu['held_out_vs_train']:.4f}   "
              f"generated vs train {bleu['generated_vs_train']:.4f}"]
    change = report.get("register_change")
    if change:
        windows = "  ".join(f"{a:g}-{b:g} s" for a, b in change["windows_s"])
        lines.append(f"a jump of the pitch control, as the engine plays it ({change['seeds']} "
                     f"seeds): mean note-on pitch after the jump, {windows}")
        for name in ("up", "down"):
            for how in ("free", "steered"):
                means = "  ".join(f"{m:6.1f}" if m is not None else "     -"
                                  for m in change[f"{name}_{how}"])
                lines.append(f"  {name:4s} {how:8s} {means}   (target "
                             f"{change['targets'][name]:.0f})")
    lines.append(f"({report['seconds']:.0f} s)")
    return "\n".join(lines)


def eval_command(args: argparse.Namespace) -> int:
    """`livegen eval charrnn|langevin [options]`."""
    from livegen import config as config_module

    if args.model == "langevin":
        return langevin_eval_command(args.rest)

    parser = argparse.ArgumentParser(prog="livegen eval charrnn",
                                     description="Held-out NLL, controllability, copying and "
                                                 "BLEU of the Char-RNN (ONNX Runtime).")
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
    parser.add_argument("--write", action="store_true",
                        help="record the figures in the model's manifest (metrics)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    options = parser.parse_args(args.rest)
    cfg = config_module.load(options.config).generators.charrnn
    model_path = options.model or cfg.model
    ablation = options.ablation or model_path.with_name(model_path.stem + "-ablation.json")
    report = evaluate(model_path, ablation_path=ablation, seconds=options.seconds,
                      seeds=options.seeds, copy_minutes=options.minutes,
                      temperature=cfg.temperature, top_p=cfg.top_p, threads=cfg.threads)
    print(format_report(report))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if options.write:
        manifest = json.loads(model_path.read_text(encoding="utf-8"))
        metrics = manifest.setdefault("metrics", {})
        metrics.update({k: report[k] for k in ("nll", "controllability", "copying", "bleu")})
        metrics["test"] = report["test"]
        model_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"recorded in {model_path}")
    return 0
