"""The Langevin chorale model at run time: ONNX Runtime and numpy only (never torch).

The shipped graph is a denoiser: (x (B, T, 105) noisy chorale vectors, sigma (B,)) ->
D(x, σ), the estimate of the clean vectors (train/nets.ScoreNet). Every sampler here needs
only D, since the score is (D − x) / σ². One graph per window length T (the exporter bakes
T into the attention's reshapes); the manifest lists them.

Sampling (`sample`) is anytime. It is given a number of evaluations, chosen from the time
left before the deadline and the measured p99 time of one evaluation (`plan_evaluations`);
if the deadline comes closer than one more evaluation anyway, it stops and ends as it
always ends: one denoise at the current noise level and the per-voice argmax. So it always
returns, and returns in time while the p99 holds. The steps between noise levels are
DDIM's on the variance-exploding process (eta = 0: deterministic Euler steps of the
probability-flow ODE; eta = 1: ancestral steps that add fresh noise), over an EDM
(rho = 7) schedule of levels. `sample_original` is langevin-music's schedule (20 levels,
100 Langevin steps each, 2,000 evaluations), kept as the baseline the evaluation compares
against.

Inpainting is by replacement: before every evaluation the given (voice, step) cells are
set to their one-hot, exactly (the net was trained to see given cells clean beside noisy
ones; a net trained without that gets one-hot + σ·z, the classic replacement), and at the
end to their exact tokens, so they always come back exactly as given. Context bars, the
performer's melody and harmonisation are all this.

`LangevinGenerator` is the segment generator (generators/segment.py) with three modes:
compose (four voices continuing the previous segment), harmonise (the melody the performer
played during the last segment comes back as the soprano, with alto, tenor and bass made
under it) and continue (the performer's melody is the context's soprano; the next bar's
four voices continue it). README: The Langevin chorale model.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from livegen.config import GeneratorConfig, setting
from livegen.control import NO_KEY, Controls
from livegen.generators import runtime
from livegen.generators.runtime import ModelError
from livegen.generators.segment import (
    STEPS_PER_BEAT,
    MelodyNote,
    Segment,
    SegmentNote,
    SegmentRequest,
    notes_in_order,
)
from livegen.music import roll
from livegen.music.scales import MAJOR_SCALE

log = logging.getLogger(__name__)

KIND = "langevin"
MODES = ("compose", "harmonise", "continue")
# Evaluation counts the anytime planner chooses from. A ladder, not any count: the same
# request under a similar load gets the same count, so re-planning a bar repeats it.
LADDER = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SIGMA_MAX = 20.0  # langevin-music's top level; the model is trained up to 30
ORIGINAL_SIGMA_MIN = 0.05  # langevin-music's bottom level, kept for its baseline schedule
# Where the fast sampler stops and denoises. On a CPU-trained net, stopping at 0.3 instead
# of 0.05 halved voice crossing (16% -> 8% of frames) and raised in-key notes (80% -> 84%)
# at 50 evaluations (README: The Langevin chorale model): the steps below 0.3 cannot
# change an argmax much, but a weak net's polishing there can.
SIGMA_MIN = 0.3
RHO = 7.0  # EDM's spacing of levels: more of them at low noise
TIMING_WINDOW = 512  # evaluations the p99 is measured over


@dataclass(frozen=True, slots=True)
class LangevinConfig(GeneratorConfig):
    """[generators.langevin]: the chorale model as a segment generator."""

    model: Path = setting(Path("models/langevin.json"), doc="manifest of the ONNX graphs")
    variant: Literal["default", "fp32"] = setting(
        "default", doc="model variant: default = the one the manifest names")
    bars: int = setting(1, lo=1, hi=2, doc="bars per segment (a graph for it must be shipped)")
    mode: Literal["compose", "harmonise", "continue"] = setting(
        "compose", doc="compose: four voices continue the last segment; harmonise: the "
                       "melody played during a segment returns as the soprano of the next "
                       "with three voices under it; continue: the melody played is the "
                       "context the next segment's four voices continue")
    max_evaluations: int = setting(256, lo=1, hi=4096,
                                   doc="most network evaluations per segment")
    min_evaluations: int = setting(4, lo=1, hi=4096,
                                   doc="fewest, even when the deadline is nearer")
    anytime: bool = setting(True, doc="fit the evaluations to the time left (false: always "
                                      "max_evaluations)")
    margin_ms: float = setting(40.0, lo=0.0, hi=10_000.0,
                               doc="time kept free before the deadline for decoding and "
                                   "hand-over")
    eta: float = setting(0.0, lo=0.0, hi=1.0,
                         doc="0: deterministic steps; 1: ancestral steps with fresh noise")
    temperature: float = setting(1.0, lo=0.1, hi=4.0,
                                 doc="divides the score; the temperature control multiplies "
                                     "it (below 1: safer, fewer moves; above 1: freer)")
    velocity: int = setting(80, lo=1, hi=127, doc="velocity of every note, before the "
                                                 "velocity control's scale")
    seed: int = setting(0, lo=0, hi=2**31 - 1,
                        doc="sampling seed; with the bar index it seeds each segment")
    voice_leading: bool = setting(
        True, doc="decode with a chorale's voice leading: no voice crossing, no parallel "
                  "fifths or octaves, in the context's key (false: the network's own argmax)")
    listen_beats: float = setting(
        1.0, lo=0.25, hi=16.0,
        doc="harmonise and continue: a segment is made this many beats before its bar line, "
            "so it hears what the performer played until then (compose: one segment ahead)")


# ---------------------------------------------------------------- the model

class ScoreModel:
    """A loaded, verified denoiser: one ONNX session per window length. Calls are not
    thread-safe; one inference thread owns it. It keeps the durations of its recent
    evaluations, from which the anytime planner reads the p99."""

    def __init__(self, manifest_path: Path | str, *, variant: str | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 1) -> None:
        self.manifest_path = Path(manifest_path)
        self.manifest = runtime.load_manifest(self.manifest_path, KIND)
        self._check_encoding()
        self.variant = variant or self.manifest["default_variant"]
        graphs = self.manifest.get("graphs", {}).get(self.variant)
        if not graphs:
            raise ModelError(f"{self.manifest_path}: no graphs for variant {self.variant!r} "
                             f"(shipped: {', '.join(sorted(self.manifest.get('graphs', {})))})"
                             "; set the config's variant to one")
        self.sessions: dict[int, Any] = {}
        for steps, file_key in sorted(graphs.items(), key=lambda item: int(item[0])):
            path = runtime.model_file(self.manifest_path, self.manifest, file_key)
            session = runtime.make_session(path, providers, threads)
            runtime.check_graph(session, {"tensors": self.manifest["tensors"][str(steps)]},
                                path)
            self.sessions[int(steps)] = session
        schedule = self.manifest.get("schedule", {})
        self.sigma_max = float(schedule.get("sigma_max", SIGMA_MAX))
        self.sigma_min = float(schedule.get("sigma_min", SIGMA_MIN))
        # How the net expects given cells: clean (trained so) or noised like the rest.
        self.noised_given = schedule.get("given_cells", "noised") != "clean"
        self._timings = np.zeros(TIMING_WINDOW)
        self._timed = 0

    @classmethod
    def from_config(cls, config: LangevinConfig) -> ScoreModel:
        variant = None if config.variant == "default" else config.variant
        return cls(config.model, variant=variant, providers=config.providers,
                   threads=config.threads)

    @property
    def lengths(self) -> tuple[int, ...]:
        """The window lengths (16ths) a graph is shipped for."""
        return tuple(self.sessions)

    @property
    def providers(self) -> list[str]:
        """The execution providers that really run the model."""
        return list(next(iter(self.sessions.values())).get_providers())

    def _check_encoding(self) -> None:
        promised = self.manifest.get("encoding")
        if promised != encoding():
            raise ModelError(f"{self.manifest_path}: the model's chorale encoding {promised} "
                             f"is not livegen's {encoding()} (music/roll.py changed since "
                             f"training?); retrain or {runtime.FIX}")

    def denoise(self, x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """D(x, σ): x (B, T, 105) float32, sigma (B,) -> (B, T, 105). Timed."""
        session = self.sessions.get(x.shape[1])
        if session is None:
            raise ValueError(f"no graph for windows of {x.shape[1]} steps; shipped: "
                             f"{self.lengths}")
        started = time.perf_counter()
        (out,) = session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32),
                                    "sigma": np.asarray(sigma, dtype=np.float32)})
        self._timings[self._timed % TIMING_WINDOW] = time.perf_counter() - started
        self._timed += 1
        return out

    def p99_s(self) -> float:
        """The p99 duration of one evaluation over the recent ones (inf before any)."""
        if not self._timed:
            return math.inf
        return float(np.percentile(self._timings[:min(self._timed, TIMING_WINDOW)], 99))

    def measure(self, steps: int, evaluations: int = 32) -> float:
        """Run `evaluations` evaluations at window length `steps` (warm-up and timing);
        returns the p99 seconds per evaluation so far."""
        rng = np.random.default_rng(0)
        for _ in range(evaluations):
            x = rng.standard_normal((1, steps, roll.CHORALE_DIM)).astype(np.float32)
            self.denoise(x, np.ones(1, np.float32))
        return self.p99_s()


def encoding() -> dict[str, Any]:
    """The chorale encoding as a manifest records it (music/roll.py, the one source)."""
    return {"voices": list(roll.VOICE_NAMES), "ranges": [list(r) for r in roll.VOICE_RANGES],
            "sizes": list(roll.VOICE_SIZES), "dim": roll.CHORALE_DIM,
            "tokens": {"pad": roll.PAD, "hold": roll.HOLD, "rest": roll.REST,
                       "first_pitch": roll.FIRST_PITCH_TOKEN},
            "steps_per_beat": STEPS_PER_BEAT}


# ---------------------------------------------------------------- sampling

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class Sampled:
    """What a sampler made: tokens (B, T, 4), the evaluations it used, the noise level of
    its final denoise, and whether the deadline cut the planned schedule short."""

    tokens: np.ndarray
    evaluations: int
    sigma_final: float
    cut_short: bool = False


def onehot(tokens: np.ndarray) -> np.ndarray:
    """(..., T, 4) tokens -> (..., T, 105) float32 (batched roll.tokens_to_onehot)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    out = np.zeros((*tokens.shape[:-1], roll.CHORALE_DIM), dtype=np.float32)
    for voice, block in enumerate(roll.VOICE_SLICES):
        np.put_along_axis(out, (block.start + tokens[..., voice])[..., None], 1.0, axis=-1)
    return out


def cell_mask(known: np.ndarray) -> np.ndarray:
    """(..., T, 4) bool given cells -> (..., T, 105) bool: each cell's whole voice block."""
    known = np.asarray(known, dtype=bool)
    return np.concatenate([np.repeat(known[..., voice:voice + 1], block.stop - block.start,
                                     axis=-1)
                           for voice, block in enumerate(roll.VOICE_SLICES)], axis=-1)


def decode(denoised: np.ndarray, given: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per-voice argmax of (..., T, 105) estimates, never PAD (training never shows it),
    with the given cells set to their exact tokens."""
    tokens = np.stack([denoised[..., block][..., 1:].argmax(axis=-1) + 1
                       for block in roll.VOICE_SLICES], axis=-1)
    return np.where(known, given, tokens).astype(np.int64)


def live_decoder(config: LangevinConfig
                 ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """How the live generator decodes (`voice_leading`; harmonise mode: under the melody)."""
    if config.mode == "harmonise":
        return (functools.partial(decode_voiced, strict=True) if config.voice_leading
                else decode_under)
    return decode_voiced if config.voice_leading else decode


def decode_under(denoised: np.ndarray, given: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Harmonise mode's decoding: each voice strictly under the voice above it (the
    performer's melody on top, three voices under it), a rest only when the voice has no
    pitch below (see `decode_voiced`). Bach's voices meet in unison or cross now and then;
    under a live melody, a voice above it or doubling it hides the melody or leaves fewer
    than four voices."""
    return decode_voiced(denoised, given, known, strict=True, parallels=False, key=False)


def decode_voiced(denoised: np.ndarray, given: np.ndarray, known: np.ndarray, *,
                  strict: bool = False, parallels: bool = True, key: bool = True
                  ) -> np.ndarray:
    """The per-voice argmax (`decode`) with the voice leading a chorale keeps, decided step
    by step, voice by voice from the top: each free cell takes its most likely token
    (PAD excluded) that
    - sounds at or below the lowest voice sounding above it (`strict`: below it, and a
      rest only when no pitch of its range is below): no crossing;
    - with `parallels`, makes no parallel fifth or octave (both voices moving the same way
      from a fifth to a fifth, or an octave or unison to one, as livegen eval counts them)
      with a voice above;
    - with `key`, lies in the key of the given cells (the context bar, estimated as
      livegen eval does), when any is given;
    and the plain argmax where no token passes. Given cells stay as given. The network's
    own figures (`livegen eval langevin`): 47 parallel fifths and 48 octaves per 1,000
    moving slices, 8.4 % of frames crossed, against Bach's 1.4, 0.6 and 2.1 %."""
    tokens = decode(denoised, given, known)
    batch, steps, _ = tokens.shape
    first_pitch = roll.FIRST_PITCH_TOKEN
    for b in range(batch):
        scale = None
        if key and known[b].any():
            context, _ = roll.sounding_pitches(np.where(known[b], given[b], roll.REST))
            weights = pitch_class_weights(np.where(known[b], context, roll.SILENT_PITCH))
            if weights.any():
                scale = scale_classes(*estimate_key(weights))
        before = [roll.SILENT_PITCH] * roll.VOICES
        for step in range(steps):
            now: list[int] = []
            for voice, (block, (low, _)) in enumerate(zip(roll.VOICE_SLICES,
                                                          roll.VOICE_RANGES, strict=True)):
                token = int(tokens[b, step, voice])
                if not known[b, step, voice]:
                    ceiling = min((p for p in now if p >= 0), default=128)
                    token = _voiced_token(denoised[b, step, block], token, before, now,
                                          low, ceiling, strict, parallels, scale)
                    tokens[b, step, voice] = token
                if token >= first_pitch:
                    now.append(low + token - first_pitch)
                elif token == roll.HOLD:
                    now.append(before[voice])
                else:
                    now.append(roll.SILENT_PITCH)
            before = now
    return tokens


def _voiced_token(scores: np.ndarray, plain: int, before: list[int], now: list[int],
                  low: int, ceiling: int, strict: bool, parallels: bool,
                  scale: frozenset[int] | None) -> int:
    """The most likely token of one cell (scores over the voice's tokens, PAD first) that
    keeps the voice leading of `decode_voiced`. Where none does, the key is let go first,
    then the parallels, and the plain argmax is taken only when the voice cannot sound
    under the voices above at all."""
    voice = len(now)
    held = before[voice]
    top = ceiling - 1 if strict else ceiling
    if strict and (ceiling >= 128 or top < low):
        return plain  # nothing sounds above, or the range lies wholly above it
    order = [int(t) for t in np.argsort(-scores[1:], kind="stable") + 1]
    for keyed, unparallel in ((scale, parallels), (None, parallels), (None, False)):
        for token in order:
            if token == roll.REST:
                if strict and top >= low:
                    continue  # harmonise: a voice under the melody plays
                return token
            pitch = held if token == roll.HOLD else low + token - roll.FIRST_PITCH_TOKEN
            if pitch < 0:
                if token == roll.HOLD and not strict:
                    return token  # a rest held on
                continue
            if pitch > top:
                continue
            if keyed is not None and token != roll.HOLD and pitch % 12 not in keyed:
                continue
            if unparallel and token != roll.HOLD and _parallel(pitch, held, before, now):
                continue
            return token
    return plain


def _parallel(pitch: int, was: int, before: list[int], now: list[int]) -> bool:
    """Whether moving a voice from `was` to `pitch` makes a parallel fifth or octave with
    a voice above that moves too (same direction; octave leaps excepted), as
    evaluate.voice_leading counts them."""
    if was < 0 or pitch == was:
        return False
    step = pitch - was
    for upper, upper_now in enumerate(now):
        upper_was = before[upper]
        if upper_was < 0 or upper_now < 0 or upper_now == upper_was:
            continue
        upper_step = upper_now - upper_was
        if upper_step % 12 == 0 and step % 12 == 0:
            continue
        if (upper_step > 0) != (step > 0):
            continue
        interval_was = abs(upper_was - was) % 12
        if interval_was in (0, 7) and abs(upper_now - pitch) % 12 == interval_was:
            return True
    return False


def sigma_levels(count: int, sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN,
                 rho: float = RHO) -> np.ndarray:
    """`count` noise levels from sigma_max down to sigma_min, EDM-spaced (rho)."""
    if count == 1:
        return np.asarray([sigma_min])
    ramp = np.linspace(0, 1, count)
    top, bottom = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (top + ramp * (bottom - top)) ** rho


def _replace(x: np.ndarray, clean: np.ndarray, mask: np.ndarray, sigma: float,
             rng: np.random.Generator, noised: bool) -> np.ndarray:
    if not mask.any():
        return x
    if not noised:
        return np.where(mask, clean, x)
    noisy = clean + sigma * rng.standard_normal(x.shape).astype(np.float32)
    return np.where(mask, noisy, x)


def _scaled(x: np.ndarray, denoised: np.ndarray, temperature: float) -> np.ndarray:
    # Temperature divides the score (D − x)/σ², i.e. samples p(x)^(1/τ): below 1 the
    # music keeps to what is most likely, above 1 it strays.
    return x + (denoised - x) / temperature


def sample(denoise: Denoiser, given: np.ndarray, known: np.ndarray, *, evaluations: int,
           rng: np.random.Generator, temperature: float = 1.0, eta: float = 0.0,
           sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN,
           deadline: float | None = None, per_evaluation_s: float = 0.0,
           noised_given: bool = False,
           decoder: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = decode
           ) -> Sampled:
    """Fill the unknown cells of (B, T, 4) `given` tokens (where `known` (B, T, 4) is
    False) in `evaluations` network evaluations: evaluations − 1 steps down an EDM ladder
    of noise levels, then the final denoise and argmax. With a `deadline`
    (time.perf_counter() seconds), it stops stepping once another step plus the final
    denoise (2 × per_evaluation_s) would not fit, and denoises at the level it reached.
    Given cells are fed as exact one-hots, or with `noised_given` as one-hot + σ·z.
    `decoder` turns the final estimate into tokens (`decode`: the per-voice argmax;
    `decode_voiced`: with a chorale's voice leading)."""
    given = np.asarray(given, dtype=np.int64)
    known = np.asarray(known, dtype=bool)
    evaluations = max(1, int(evaluations))
    clean = onehot(np.where(known, given, roll.REST))
    mask = cell_mask(known)
    batch = len(given)
    sigmas = sigma_levels(evaluations, sigma_max, sigma_min)
    x = (sigmas[0] * rng.standard_normal(clean.shape)).astype(np.float32)
    used, cut = 0, False
    level = sigmas[0]
    for i in range(evaluations - 1):
        if deadline is not None and time.perf_counter() + 2 * per_evaluation_s > deadline:
            cut = True
            break
        level, following = sigmas[i], sigmas[i + 1]
        x = _replace(x, clean, mask, level, rng, noised_given)
        denoised = _scaled(x, denoise(x, np.full(batch, level, np.float32)), temperature)
        used += 1
        epsilon = (x - denoised) / level
        # DDIM on the VE process: `fresh` of the next level's noise is new, the rest is
        # the noise the net found (eta = 0: none is new, an Euler step of the ODE).
        fresh = eta * following * math.sqrt(max(0.0, 1 - (following / level) ** 2))
        kept = math.sqrt(max(0.0, following ** 2 - fresh ** 2))
        x = (denoised + kept * epsilon
             + fresh * rng.standard_normal(x.shape)).astype(np.float32)
        level = following
    x = _replace(x, clean, mask, level, rng, noised_given)
    denoised = denoise(x, np.full(batch, level, np.float32))
    used += 1
    return Sampled(decoder(denoised, given, known), used, float(level), cut)


def sample_original(denoise: Denoiser, given: np.ndarray, known: np.ndarray, *,
                    rng: np.random.Generator, levels: int = 20, steps_per_level: int = 100,
                    epsilon: float = 2e-5, sigma_max: float = SIGMA_MAX,
                    sigma_min: float = ORIGINAL_SIGMA_MIN, noised_given: bool = False
                    ) -> Sampled:
    """langevin-music's annealed Langevin dynamics (GENERATORS.md section 1): start from
    U[0, 1), `levels` geometric levels, `steps_per_level` steps of
    x += α·score + √(2α)·z with α = ε·σ²/σ_L², then the final denoise; with the same
    replacement for the given cells. 2,001 evaluations by default."""
    given = np.asarray(given, dtype=np.int64)
    known = np.asarray(known, dtype=bool)
    clean = onehot(np.where(known, given, roll.REST))
    mask = cell_mask(known)
    batch = len(given)
    sigmas = np.geomspace(sigma_max, sigma_min, levels)
    x = rng.random(clean.shape).astype(np.float32)
    used = 0
    for sigma in sigmas:
        alpha = epsilon * sigma ** 2 / sigmas[-1] ** 2
        for _ in range(steps_per_level):
            x = _replace(x, clean, mask, sigma, rng, noised_given)
            score = (denoise(x, np.full(batch, sigma, np.float32)) - x) / sigma ** 2
            used += 1
            x = (x + alpha * score + math.sqrt(2 * alpha)
                 * rng.standard_normal(x.shape)).astype(np.float32)
    x = _replace(x, clean, mask, sigmas[-1], rng, noised_given)
    denoised = denoise(x, np.full(batch, sigmas[-1], np.float32))
    return Sampled(decode(denoised, given, known), used + 1, float(sigmas[-1]))


def plan_evaluations(time_left_s: float, per_evaluation_s: float, *, margin_s: float,
                     most: int, fewest: int = 1, ladder: Sequence[int] = LADDER) -> int:
    """How many evaluations fit in the time left: the largest rung of the ladder (or
    `most`) with rung × per_evaluation_s ≤ time_left_s − margin_s; never fewer than
    `fewest`, never more than `most`."""
    budget = time_left_s - margin_s
    fit = int(budget / per_evaluation_s) if per_evaluation_s > 0 and budget > 0 else 0
    if not math.isfinite(per_evaluation_s):
        fit = 0
    rungs = [r for r in ladder if r <= min(fit, most)]
    chosen = most if fit >= most else (rungs[-1] if rungs else fit)
    return max(fewest, min(most, chosen))


# ---------------------------------------------------------------- keys

# Krumhansl-Kessler key profiles (major, minor), tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29,
                           2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34,
                           3.17])
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor and its leading note


def pitch_class_weights(pitches: np.ndarray) -> np.ndarray:
    """(12,) how many steps each pitch class sounds in (T, 4) sounding pitches."""
    sounding = pitches[pitches >= 0]
    return np.bincount(sounding % 12, minlength=12).astype(np.float64)


def estimate_key(weights: np.ndarray) -> tuple[int, bool]:
    """(tonic 0..11, minor?) best correlated with the pitch-class weights
    (Krumhansl-Schmuckler); C major for silence."""
    weights = np.asarray(weights, dtype=np.float64)
    if not weights.any():
        return 0, False
    best, best_r = (0, False), -math.inf
    for minor, profile in ((False, _MAJOR_PROFILE), (True, _MINOR_PROFILE)):
        for tonic in range(12):
            r = np.corrcoef(weights, np.roll(profile, tonic))[0, 1]
            if r > best_r:
                best, best_r = (tonic, minor), r
    return best


def scale_classes(tonic: int, minor: bool) -> frozenset[int]:
    """The pitch classes of a key: its major scale, or natural minor with the leading note."""
    return frozenset((tonic + s) % 12 for s in (HARMONIC_MINOR_STEPS if minor else MAJOR_SCALE))


def major_root(tonic: int, minor: bool) -> int:
    """The root of the major scale whose notes a key mostly uses (a minor key's relative)."""
    return (tonic + 3) % 12 if minor else tonic


# ---------------------------------------------------------------- windows and notes

def _fold(pitch: int, voice: int) -> int:
    """A pitch moved by octaves into the voice's range (the nearest end if none fits)."""
    low, high = roll.VOICE_RANGES[voice]
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return min(max(pitch, low), high)


def previous_context(previous: Segment | None, context_steps: int, steps_per_bar: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The last `context_steps` 16ths of the previous segment as (T, 4) tokens and given
    cells. A voice the previous segment has no notes in (another generator's segment, or
    none) is left unknown; in one that has notes, the gaps are given rests. A note begun
    before the window is struck at its first step (a window cannot start on a HOLD); a
    note that starts inside the one before it in its voice is left out."""
    tokens = np.full((context_steps, roll.VOICES), roll.REST, dtype=np.int64)
    known = np.zeros((context_steps, roll.VOICES), dtype=bool)
    if previous is None or context_steps == 0:
        return tokens, known
    offset = previous.bars * steps_per_bar - context_steps
    taken_until = [0] * roll.VOICES
    for note in sorted(previous.notes, key=lambda n: (n.beat, -n.pitch)):
        voice = note.voice
        if not 0 <= voice < roll.VOICES:
            continue
        known[:, voice] = True  # the voice sounded: rests unless a note covers the cell
        start = math.floor(note.beat * STEPS_PER_BEAT + 0.5) - offset
        end = min(max(math.floor((note.beat + note.length) * STEPS_PER_BEAT + 0.5) - offset,
                      start + 1), context_steps)
        first = max(start, 0)
        if end <= first or first < taken_until[voice]:
            continue
        pitch = _fold(int(note.pitch), voice)
        tokens[first, voice] = roll.FIRST_PITCH_TOKEN + pitch - roll.VOICE_RANGES[voice][0]
        tokens[first + 1:end, voice] = roll.HOLD
        taken_until[voice] = end
    return tokens, known


def melody_cells(melody: Sequence[MelodyNote], steps: int, *, legato: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The performer's melody as soprano tokens (steps,) and given cells (steps,) bool:
    each note quantised to the grid, moved by octaves into the soprano's range, and (with
    `legato`) lasting until the next note; where several sound at once the highest wins.
    Before the first note the soprano rests; with no notes at all nothing is given."""
    tokens = np.full(steps, roll.REST, dtype=np.int64)
    known = np.zeros(steps, dtype=bool)
    notes = []
    for note in melody:
        start = math.floor(note.beat * STEPS_PER_BEAT + 0.5)
        end = max(math.floor((note.beat + note.length) * STEPS_PER_BEAT + 0.5), start + 1)
        if end > 0 and start < steps:
            notes.append((max(start, 0), min(end, steps), _fold(int(note.pitch), 0)))
    if not notes:
        return tokens, known
    # One note per onset step: the highest (a chord's top note is its melody).
    by_start: dict[int, tuple[int, int]] = {}
    for start, end, pitch in notes:
        if start not in by_start or pitch > by_start[start][1]:
            by_start[start] = (end, pitch)
    starts = sorted(by_start)
    low = roll.VOICE_RANGES[0][0]
    known[:] = True
    for i, start in enumerate(starts):
        end, pitch = by_start[start]
        following = starts[i + 1] if i + 1 < len(starts) else steps
        end = following if legato else min(end, following)
        tokens[start] = roll.FIRST_PITCH_TOKEN + pitch - low
        tokens[start + 1:end] = roll.HOLD
    return tokens, known


def segment_notes(tokens: np.ndarray, first_step: int, *, velocity: int
                  ) -> tuple[SegmentNote, ...]:
    """The notes of window steps first_step.. as SegmentNotes in beats from first_step. A
    note held over from before first_step is struck again at beat 0 for the time it still
    lasts: the segment before has already ended it at the bar line."""
    pitches, struck = roll.sounding_pitches(tokens)
    pitches, struck = pitches[first_step:], struck[first_step:].copy()
    struck[0] |= pitches[0] >= 0
    notes = []
    steps = len(pitches)
    for voice in range(roll.VOICES):
        onsets = np.flatnonzero(struck[:, voice] & (pitches[:, voice] >= 0))
        for onset in onsets:
            end = onset + 1
            while end < steps and not struck[end, voice] and pitches[end, voice] == \
                    pitches[onset, voice]:
                end += 1
            notes.append(SegmentNote(beat=float(onset) / STEPS_PER_BEAT,
                                     length=float(end - onset) / STEPS_PER_BEAT,
                                     pitch=int(pitches[onset, voice]), velocity=velocity,
                                     voice=voice))
    return notes_in_order(notes)


def tonic_chord(key: int, steps: int) -> np.ndarray:
    """Compose mode's opening context when there is no previous segment: the tonic triad
    of the major key `key` (0 = C) struck at step 0 and held for `steps`, root position in
    close spacing within the voices' ranges, (steps, 4) tokens."""
    root = key % 12
    voicing = (_fold(72 + root, 0), _fold(64 + root, 1), _fold(55 + root, 2),
               _fold(48 + root, 3))  # C5 E4 G3 C3 for C
    tokens = np.full((steps, roll.VOICES), roll.HOLD, dtype=np.int64)
    for voice, pitch in enumerate(voicing):
        tokens[0, voice] = roll.FIRST_PITCH_TOKEN + pitch - roll.VOICE_RANGES[voice][0]
    return tokens


REGISTER_DEADBAND = 3  # semitones: a smaller register correction is not worth a modulation


def steer(tokens: np.ndarray, known: np.ndarray, controls: Controls) -> np.ndarray:
    """Compose mode's key and register controls, applied to the given context cells before
    the next bar is made from it (so the music modulates there, and stays).

    Key: when the context's notes do not fit the key control's major scale (or its
    relative minor's), the context moves by the interval between its estimated key and the
    control's. Register: a pitch control away from its neutral 0.5 asks for a shift towards
    the top (1) or bottom (0) of the shifts that keep the context in range; with a key set,
    only shifts that keep that key (octaves) are taken, without one also fourths and fifths,
    and none smaller than REGISTER_DEADBAND."""
    context = np.where(known, tokens, roll.REST)
    allowed = roll.transpositions_in_range(context)
    pitches, _ = roll.sounding_pitches(context)
    weights = pitch_class_weights(pitches)
    if not weights.any():
        return tokens
    wanted = 0
    if controls.key != NO_KEY:
        scale = scale_classes(controls.key % 12, False) | {(controls.key + 8) % 12}
        if weights[list(scale)].sum() / weights.sum() < 0.9:
            wanted = (controls.key - major_root(*estimate_key(weights))) % 12
            wanted = wanted - 12 if wanted > 6 else wanted
    lean = 2 * (float(controls.pitch) - 0.5)
    reach = (allowed.stop - 1) if lean > 0 else -allowed.start
    target = wanted + lean * reach
    if controls.key != NO_KEY:
        candidates = [s for s in allowed if (s - wanted) % 12 == 0]
    else:
        candidates = [s for s in allowed if s % 12 in (0, 5, 7)]
    if abs(target - wanted) < REGISTER_DEADBAND:
        target = wanted
    if not candidates:
        return tokens
    shift = min(candidates, key=lambda s: (abs(s - target), abs(s)))
    if shift == 0:
        return tokens
    return np.where(known, roll.transpose_tokens(context, shift), tokens)


# ---------------------------------------------------------------- the segment generator

@dataclass(slots=True)
class LangevinGenerator:
    """The chorale model as a segment generator (generators/segment.SegmentGenerator).
    Its answer depends on the request, its seed and the evaluation count the planner picks
    from the time left (a rung of LADDER; with anytime off, always max_evaluations)."""

    config: LangevinConfig
    model: ScoreModel | None = None
    name: str = KIND
    bars: int = field(init=False)
    plan_ahead_beats: float | None = field(init=False)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = ScoreModel.from_config(self.config)
        self.bars = self.config.bars
        # The segment player asks a generator that listens as late as this (players.py).
        self.plan_ahead_beats = (None if self.config.mode == "compose"
                                 else self.config.listen_beats)
        if self.config.mode not in MODES:
            raise ValueError(f"mode {self.config.mode!r}: use one of {', '.join(MODES)}")

    def window(self, request: SegmentRequest) -> tuple[int, int]:
        """(window length, context steps) for a request: the shipped graph of exactly one
        bar of context plus the segment, else the longest that holds the segment."""
        assert self.model is not None
        steps_per_bar = request.beats_per_bar * STEPS_PER_BEAT
        wanted = steps_per_bar + request.steps
        if wanted in self.model.lengths:
            return wanted, steps_per_bar
        fitting = [n for n in self.model.lengths if n >= request.steps]
        if not fitting:
            raise ValueError(f"no shipped graph holds a segment of {request.steps} 16ths "
                             f"(graphs: {self.model.lengths}); set bars lower")
        length = min(fitting, key=lambda n: abs(n - wanted))
        return length, length - request.steps

    def warm_up(self) -> None:
        """One timed run per graph, so the first segment's plan has a p99 to go on."""
        assert self.model is not None
        for steps in self.model.lengths:
            self.model.measure(steps)

    def inputs(self, request: SegmentRequest) -> tuple[np.ndarray, np.ndarray, int]:
        """(given tokens (T, 4), given cells (T, 4), context steps) for the request."""
        length, context = self.window(request)
        steps_per_bar = request.beats_per_bar * STEPS_PER_BEAT
        tokens = np.full((length, roll.VOICES), roll.REST, dtype=np.int64)
        known = np.zeros((length, roll.VOICES), dtype=bool)
        tokens[:context], known[:context] = previous_context(request.previous, context,
                                                             steps_per_bar)
        mode = self.config.mode
        if mode == "compose":
            if request.previous is None and context:
                tokens[:context] = tonic_chord(0 if request.controls.key == NO_KEY
                                               else request.controls.key, context)
                known[:context] = True
            tokens = steer(tokens, known, request.controls)
        elif mode == "harmonise":
            melody, given = melody_cells(request.melody, request.steps)
            tokens[context:, 0] = melody
            known[context:, 0] = given
        else:  # continue: the melody fell in the last segment, the context bar
            previous_steps = (request.previous.bars * steps_per_bar
                              if request.previous is not None else request.steps)
            shifted = [MelodyNote(n.beat - (previous_steps - context) / STEPS_PER_BEAT,
                                  n.length, n.pitch) for n in request.melody]
            melody, given = melody_cells(shifted, context)
            if given.any():
                tokens[:context, 0] = melody
                known[:context, 0] = True
        return tokens, known, context

    def segment(self, request: SegmentRequest) -> Segment:
        """The music for `request`, ready before `request.deadline` while the measured
        p99 per evaluation holds."""
        assert self.model is not None
        started = time.perf_counter()
        started_monotonic = time.monotonic()
        tokens, known, context = self.inputs(request)
        # The deadline is on the monotonic clock; the sampler watches perf_counter.
        time_left = request.deadline - started_monotonic
        per_evaluation = self.model.p99_s()
        if math.isinf(per_evaluation):
            per_evaluation = self.model.measure(len(tokens), 8)
        margin = self.config.margin_ms / 1e3
        if self.config.anytime:
            evaluations = plan_evaluations(time_left, per_evaluation, margin_s=margin,
                                           most=self.config.max_evaluations,
                                           fewest=self.config.min_evaluations)
            deadline = started + time_left - margin
        else:
            evaluations, deadline = self.config.max_evaluations, None
        rng = np.random.default_rng((self.config.seed, request.bar))
        temperature = min(max(self.config.temperature * float(request.controls.temperature),
                              0.1), 4.0)
        result = sample(self.model.denoise, tokens[None], known[None],
                        evaluations=evaluations, rng=rng, temperature=temperature,
                        eta=self.config.eta, sigma_max=self.model.sigma_max,
                        sigma_min=self.model.sigma_min, deadline=deadline,
                        per_evaluation_s=per_evaluation,
                        noised_given=self.model.noised_given,
                        decoder=live_decoder(self.config))
        # The player scales it by the velocity control (as every segment generator's).
        notes = segment_notes(result.tokens[0], context, velocity=self.config.velocity)
        elapsed = time.perf_counter() - started
        return Segment(bar=request.bar, bars=request.bars, notes=notes, figures={
            "evaluations": float(result.evaluations),
            "planned_evaluations": float(evaluations),
            "cut_short": float(result.cut_short), "ms": elapsed * 1e3,
            "p99_ms_per_evaluation": per_evaluation * 1e3,
            "slack_ms": (request.deadline - time.monotonic()) * 1e3,
            "sigma_final": result.sigma_final})
