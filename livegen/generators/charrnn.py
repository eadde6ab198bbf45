"""The conditional Char-RNN at run time: ONNX Runtime and numpy only (never torch).

The engine's step generator uses four pieces, each cheap and explicit:

    model = CharRNN.from_config(config.generator("charrnn"))   # checks manifest, hash, graph
    state = model.initial_state()                             # immutable (h, c)
    logits, state = model.step(token, controls, state)        # pure: the old state stays valid
    token = sample(logits, temperature=..., top_p=..., uniform=uniform(seed, step_index))

`step` never mutates its input state, so keeping the state of every planned event is a
reference, and a rollback is "take the state saved there". `sample` takes its randomness as
one number, and `uniform(seed, index)` derives that number from the seed and the event's
index alone, so regenerating from a rolled-back state under the same controls reproduces
the same tokens. The controls come from `control_vector(pitch, density, key)`
(music/features.controls_to_vector). `generate` plays N seconds under a control schedule;
evaluation, tests and the bench use it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livegen.generators import runtime
from livegen.generators.runtime import ModelError
from livegen.music import events, features, scales

log = logging.getLogger(__name__)

# The single-step recurrent graph's tensors, in order (the export writes them, the
# manifest records them, the runtime checks them).
ONNX_INPUTS = ("token", "controls", "h", "c")
ONNX_OUTPUTS = ("logits", "h_out", "c_out")

KIND = "charrnn"
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class State:
    """The recurrent state after some events: h and c, each (layers, 1, hidden) float32,
    read-only (ONNX Runtime returns fresh arrays, so sharing them is safe)."""

    h: np.ndarray
    c: np.ndarray


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def uniform(seed: int, index: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, index): SplitMix64 of the two,
    in pure integer arithmetic, so it is the same on every machine and costs about a
    microsecond. Use the planned event's index, so a regenerated event draws the same."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) in float64."""
    if not temperature > 0:
        raise ValueError(f"temperature {temperature} must be positive")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max()
    p = np.exp(scaled)
    return p / p.sum()


def nucleus(p: np.ndarray, top_p: float = 1.0) -> np.ndarray:
    """A distribution restricted to the smallest set of most likely tokens whose mass
    reaches top_p (at least one token), renormalised."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p {top_p} must be in (0, 1]")
    if top_p >= 1:
        return p
    order = np.argsort(-p, kind="stable")
    mass = np.cumsum(p[order])
    keep = int(np.searchsorted(mass, top_p, side="left")) + 1
    kept = np.zeros_like(p)
    kept[order[:keep]] = p[order[:keep]]
    return kept / kept.sum()


def draw(p: np.ndarray, uniform: float) -> int:
    """The token whose cumulative probability (in token order) first exceeds `uniform`:
    the same distribution and number always give the same token."""
    if not 0 <= uniform < 1:
        raise ValueError(f"uniform {uniform} must be in [0, 1)")
    cumulative = np.cumsum(p)
    index = int(np.searchsorted(cumulative, uniform * cumulative[-1], side="right"))
    return min(index, len(cumulative) - 1)


def probabilities(logits: np.ndarray, *, temperature: float = 1.0, top_p: float = 1.0
                  ) -> np.ndarray:
    """The distribution sampling draws from: softmax(logits / temperature) restricted to the
    smallest set of most likely tokens whose mass reaches top_p (at least one token), then
    renormalised. float64, same length as logits."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p {top_p} must be in (0, 1]")
    return nucleus(softmax(logits, temperature), top_p)


def sample(logits: np.ndarray, *, temperature: float = 1.0, top_p: float = 1.0,
           uniform: float) -> int:
    """The token whose cumulative probability (in token order) first exceeds `uniform`:
    the same logits and number always give the same token."""
    if not 0 <= uniform < 1:
        raise ValueError(f"uniform {uniform} must be in [0, 1)")
    return draw(probabilities(logits, temperature=temperature, top_p=top_p), uniform)


def control_vector(pitch: float, density: float, key: Sequence[float] | np.ndarray
                   ) -> np.ndarray:
    """The model's (32,) control input for normalised controls: pitch and density in 0..1,
    key as 12 pitch-class weights (all zero = no key)."""
    return features.controls_to_vector(pitch, density, key)


def major_scale(root: int = 0) -> np.ndarray:
    """A 12-value histogram with equal weight on the major scale of `root` (0 = C)."""
    histogram = np.zeros(12)
    histogram[sorted(scales.major_scale(root))] = 1
    return histogram


MAJOR_STEPS = scales.MAJOR_SCALE  # the name evaluate_charrnn imports
ENCODINGS = ("onehot", "soft")


class CharRNN:
    """A loaded, verified Char-RNN ONNX model (one session; calls are not thread-safe, so
    one inference thread owns it)."""

    def __init__(self, manifest_path: Path | str, *, variant: str | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 1) -> None:
        self.manifest_path = Path(manifest_path)
        self.manifest = runtime.load_manifest(self.manifest_path, KIND)
        self._check_representation()
        self.path = runtime.model_file(self.manifest_path, self.manifest, variant)
        self.variant = variant or self.manifest["default_variant"]
        self.session = runtime.make_session(self.path, providers, threads)
        runtime.check_graph(self.session, self.manifest, self.path)
        state = self.manifest["state"]
        self.layers = int(state["layers"])
        self.hidden_size = int(state["hidden_size"])
        self.primer_token = int(self.manifest["primer_token"])
        # "onehot": bins as Deep Symphony's; "soft": positions, and a zero slice = not asked
        # (music/features.py).
        self.encoding = self.manifest["controls"].get("encoding", "onehot")
        profile = self.manifest.get("key_profile")
        self.key_profile = (np.asarray(profile, dtype=np.float64) if profile is not None
                            else major_scale(0) / 7)
        # Its time shifts are seconds of music played at the training tempo: beats there.
        self.tempo_bpm = float(self.manifest["training"]["tempo_bpm"])
        self._zero = _frozen(np.zeros((self.layers, 1, self.hidden_size), np.float32))

    @classmethod
    def from_config(cls, config: Any) -> CharRNN:
        """From a livegen.config.CharRNNConfig (model, variant, providers, threads)."""
        variant = None if config.variant == "default" else config.variant
        return cls(config.model, variant=variant,
                   providers=config.providers, threads=config.threads)

    @property
    def providers(self) -> list[str]:
        """The execution providers that really run the model."""
        return list(self.session.get_providers())

    def _check_representation(self) -> None:
        """The vocabulary and control layout the model was trained with must be the ones
        this code encodes and decodes with."""
        m = self.manifest
        vocabulary = [[r.kind, r.first, r.size, r.first_value] for r in events.VOCABULARY]
        promised = m.get("vocabulary", {}).get("layout")
        if promised != vocabulary:
            raise ModelError(f"{self.manifest_path}: the model's vocabulary {promised} is not "
                             f"livegen's {vocabulary}; {runtime.FIX}")
        encoding = m.get("controls", {}).get("encoding", "onehot")
        controls = features.control_layout(encoding if encoding in ENCODINGS else "onehot")
        if m.get("controls") != controls:
            raise ModelError(f"{self.manifest_path}: the model's control layout "
                             f"{m.get('controls')} is not livegen's {controls} "
                             "(music/features.py changed since training?); retrain or "
                             f"{runtime.FIX}")

    @property
    def understands_unasked(self) -> bool:
        """Whether the model was trained to read a zero slice as "not asked"."""
        return self.encoding == "soft"

    def vector(self, pitch: float | None, density: float | None,
               histogram: Sequence[float] | np.ndarray | None) -> np.ndarray:
        """The model's (32,) control input: pitch and density as positions 0..9 on their
        bin axes (a normalised control x is position 9x), a pitch-class histogram. None
        (or an all-zero histogram) leaves a part unasked, which only a soft model reads;
        a one-hot model rounds positions to bins (halves up) and takes no None."""
        if self.encoding == "soft":
            return features.soft_vector(pitch, density, histogram)
        if pitch is None or density is None or histogram is None:
            raise ValueError("a one-hot Char-RNN needs every control part")
        return features.control_vector(
            features.control_bin(pitch / (features.PITCH_BINS - 1), features.PITCH_BINS),
            features.control_bin(density / (features.DENSITY_BINS - 1),
                                 features.DENSITY_BINS), histogram)

    def control_vectors(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Every position's controls as training gave them (the music ahead of it)."""
        if self.encoding == "soft":
            return features.soft_control_vectors(tokens)
        return features.control_vectors(tokens)

    def key_histogram(self, root: int) -> np.ndarray:
        """The pitch-class histogram the model is sent for the major key of `root`: the
        manifest's key profile (measured on the training music, tonic C) moved to the
        root; a flat major scale for models that carry none."""
        return np.roll(self.key_profile, root % 12)

    def data_file(self, name: str) -> Path:
        """A data file shipped beside the model (manifest "data"), its sha256 checked."""
        entry = self.manifest.get("data", {}).get(name)
        if entry is None:
            raise ModelError(f"{self.manifest_path}: the manifest names no {name!r} data "
                             f"file; {runtime.FIX}")
        path = self.manifest_path.parent / entry["path"]
        if not path.is_file():
            raise ModelError(f"{path}: data file missing (named by {self.manifest_path}); "
                             f"{runtime.FIX}")
        actual = runtime.sha256_of(path)
        if actual != entry["sha256"]:
            raise ModelError(f"{path}: sha256 {actual[:12]}… does not match the manifest's "
                             f"{entry['sha256'][:12]}… ({self.manifest_path}); "
                             f"{runtime.FIX}")
        return path

    def initial_state(self) -> State:
        """The state before any event (zeros); feed `primer_token` first."""
        return State(self._zero, self._zero)

    def step(self, token: int, controls: np.ndarray, state: State
             ) -> tuple[np.ndarray, State]:
        """Feed one token with the controls for what should follow it; returns the logits
        (388,) float32 of the next token and the new state. `state` is left as it was."""
        logits, h, c = self.session.run(None, {
            "token": np.asarray([token], dtype=np.int64),
            "controls": np.asarray(controls, dtype=np.float32).reshape(1, -1),
            "h": state.h, "c": state.c})
        return logits[0], State(_frozen(h), _frozen(c))

    def step_batch(self, tokens: np.ndarray, controls: np.ndarray, h: np.ndarray,
                   c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B steps at once: tokens (B,), controls (B, 32), h and c (layers, B, hidden) ->
        logits (B, 388), h', c'. For evaluation; zeros of shape (layers, B, hidden) start."""
        logits, h, c = self.session.run(None, {
            "token": np.asarray(tokens, dtype=np.int64),
            "controls": np.asarray(controls, dtype=np.float32), "h": h, "c": c})
        return logits, h, c


# ---------------------------------------------------------------- the guide

class Guide:
    """Control timelines of real music the model was not trained on (the validation
    pieces, shipped beside the model), end to end and looping: what the model is told
    for a control no performer drives. At music time t a seeded guide stands at
    t + offset; its vector is the one training would have given that music."""

    def __init__(self, model: CharRNN, pieces: Sequence[np.ndarray]):
        times, vectors = [], []
        start = 0.0
        for tokens in pieces:
            tokens = np.asarray(tokens, dtype=np.int64)
            if len(tokens) < 2:
                continue
            is_shift = (tokens >= events.TIME_SHIFT) & (tokens < events.VELOCITY)
            shift = np.where(is_shift, tokens - events.TIME_SHIFT + 1, 0)
            at = (np.cumsum(shift) - shift) * events.SHIFT_S
            times.append(start + at)
            vectors.append(model.control_vectors(tokens))
            start += float(at[-1]) + features.WINDOW_S  # a pause between pieces
        if not times:
            raise ValueError("a guide needs at least one piece")
        self.times = np.concatenate(times)
        self.vectors = np.concatenate(vectors)
        self.length = start

    @classmethod
    def from_file(cls, model: CharRNN, path: Path) -> Guide:
        """From a data file of arrays `tokens` (int16, pieces end to end) and `offsets`."""
        with np.load(path, allow_pickle=False) as data:
            tokens, offsets = data["tokens"].astype(np.int64), data["offsets"]
            return cls(model, [tokens[offsets[i]:offsets[i + 1]]
                               for i in range(len(offsets) - 1)])

    def offset(self, seed: int) -> float:
        """Where a seed's guide starts (seconds into the timeline)."""
        return uniform(seed, -1) * self.length

    def at(self, time: float) -> np.ndarray:
        """The control vector of the guide at `time` seconds (looping)."""
        index = int(np.searchsorted(self.times, time % self.length, side="right")) - 1
        return self.vectors[max(index, 0)]


# ---------------------------------------------------------------- the copy index

COPY_RUN = 13  # the guard steps in before a run of this many notes repeats training music


class CopyIndex:
    """The training set's note-on runs, up to transposition, for the live copy guard.

    Built from the training pieces' note-on pitches (a data file shipped beside the model):
    for every run of `run` consecutive note-ons inside one piece, the hash of its first
    run - 1 intervals and the interval that follows them, sorted by hash. `forbidden`
    answers, for the last run - 1 notes played, which next pitches would make those notes
    plus it repeat a training run of `run` notes (in any transposition). 64-bit hashes:
    a false match is about one in 10^13 lookups, and would only mask a note."""

    def __init__(self, pitches: np.ndarray, offsets: np.ndarray, run: int = COPY_RUN) -> None:
        if run < 3:
            raise ValueError(f"a copy run of {run} notes is too short to guard")
        self.run = run
        pitches = np.asarray(pitches, dtype=np.int64)
        piece = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        intervals = np.diff(pitches)
        same_piece = piece[1:] == piece[:-1]
        width = run - 1  # intervals per run: run - 2 of context, then the next
        count = len(intervals) - width + 1
        if count <= 0:
            self.hashes = np.zeros(0, np.uint64)
            self.next_intervals = np.zeros(0, np.int16)
            return
        inside = np.ones(count, bool)
        for k in range(width):
            inside &= same_piece[k:k + count]
        hashes = np.zeros(count, np.uint64)
        with np.errstate(over="ignore"):
            for k in range(width - 1):
                hashes = hashes * _HASH_BASE + (intervals[k:k + count] + 256).astype(np.uint64)
        order = np.argsort(hashes[inside], kind="stable")
        self.hashes = hashes[inside][order]
        self.next_intervals = intervals[width - 1:width - 1 + count][inside][order].astype(
            np.int16)

    @classmethod
    def from_file(cls, path: Path, run: int = COPY_RUN) -> CopyIndex:
        """From a data file of arrays `pitches` (uint8, every training piece's note-ons
        end to end) and `offsets` (where each piece starts, and the end)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["pitches"], data["offsets"], run)

    def __len__(self) -> int:
        return len(self.hashes)

    def forbidden(self, recent: Sequence[int]) -> np.ndarray:
        """The pitches that, played next, would end a run of `run` note-ons (recent's last
        run - 1 and this one) found in a training piece, up to transposition. Empty while
        fewer than run - 1 notes have been played."""
        context = self.run - 1
        if len(recent) < context:
            return _NO_PITCHES
        tail = recent[-context:]
        value = 0
        for a, b in itertools.pairwise(tail):
            value = (value * _HASH_MULTIPLIER + b - a + 256) & _MASK64
        key = np.uint64(value)
        lo = int(np.searchsorted(self.hashes, key, side="left"))
        hi = int(np.searchsorted(self.hashes, key, side="right"))
        if lo == hi:
            return _NO_PITCHES
        return np.unique(self.next_intervals[lo:hi].astype(np.int64) + tail[-1])


_HASH_MULTIPLIER = 0x100000001B3  # the FNV prime, as livegen/evaluate.py's n-gram hashes
_HASH_BASE = np.uint64(_HASH_MULTIPLIER)
_NO_PITCHES = np.zeros(0, np.int64)


# A schedule gives the controls for the music at a time (seconds from the start).
Schedule = Callable[[float], np.ndarray]


@dataclass(frozen=True, slots=True)
class Generated:
    """What `generate` made: the tokens (primer first) and the notes within the length."""

    tokens: list[int]
    notes: list[events.Note]
    seconds: float


def generate(model: CharRNN, seconds: float,
             schedule: Schedule | np.ndarray | Sequence[Schedule | np.ndarray], *,
             seeds: Sequence[int] = (0,), temperature: float = 1.0, top_p: float = 0.95,
             max_events_per_s: float = 400.0) -> list[Generated]:
    """Play `seconds` of music per seed, from the zero state and the primer token, under a
    control schedule: a function of the music's time or one fixed (32,) vector for every
    seed, or one of those per seed (a list, or a (len(seeds), 32) array). The seeds run
    together as one batch; event i of seed s draws uniform(s, i), so the same call gives
    the same music. Stops a seed at `seconds` of music, or after seconds *
    max_events_per_s events should it stop advancing time."""
    batch = len(seeds)
    if callable(schedule) or (isinstance(schedule, np.ndarray) and schedule.ndim == 1):
        schedules = [schedule] * batch
    else:
        schedules = list(schedule)
    if len(schedules) != batch:
        raise ValueError(f"{len(schedules)} schedules for {batch} seeds")
    fixed = [None if callable(s) else np.asarray(s, dtype=np.float32) for s in schedules]
    h = np.zeros((model.layers, batch, model.hidden_size), np.float32)
    c = np.zeros_like(h)
    decoders = [events.TokenDecoder() for _ in seeds]
    tokens = [[model.primer_token] for _ in seeds]
    for decoder in decoders:
        decoder.feed(model.primer_token)
    active = list(range(batch))
    limit = int(seconds * max_events_per_s) + 1
    index = 0
    while active and index < limit:
        rows = np.asarray(active)
        controls = np.stack([fixed[i] if fixed[i] is not None
                             else schedules[i](decoders[i].time) for i in active])
        last = np.asarray([tokens[i][-1] for i in active], dtype=np.int64)
        logits, h_rows, c_rows = model.step_batch(last, controls, h[:, rows], c[:, rows])
        h[:, rows], c[:, rows] = h_rows, c_rows
        still = []
        for row, i in enumerate(active):
            token = sample(logits[row], temperature=temperature, top_p=top_p,
                           uniform=uniform(seeds[i], index))
            tokens[i].append(token)
            decoders[i].feed(token)
            if decoders[i].time < seconds:
                still.append(i)
        active = still
        index += 1
    results = []
    for i in range(batch):
        notes = [events.Note(n.pitch, n.velocity, n.start, min(n.end, seconds))
                 for n in events.tokens_to_notes(tokens[i]) if n.start < seconds]
        results.append(Generated(tokens[i], notes, seconds))
    return results


def step_latencies(model: CharRNN, steps: int = 2000, warmup: int = 200,
                   seed: int = 0) -> np.ndarray:
    """Seconds per `step` call, fed back its own samples under neutral controls, after
    `warmup` untimed steps: what one planned event costs the inference thread."""
    import time

    controls = control_vector(0.5, 0.5, np.zeros(12))
    state = model.initial_state()
    token = model.primer_token
    timings = np.empty(steps)
    for i in range(warmup + steps):
        started = time.perf_counter()
        logits, state = model.step(token, controls, state)
        if i >= warmup:
            timings[i - warmup] = time.perf_counter() - started
        token = sample(logits, temperature=1.0, top_p=0.95, uniform=uniform(seed, i))
    return timings
