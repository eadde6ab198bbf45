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
from livegen.music import events, features

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
    """`livegen eval charrnn [options]`."""
    from livegen import config as config_module

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
