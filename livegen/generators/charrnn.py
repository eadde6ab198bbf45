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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livegen.generators import runtime
from livegen.generators.runtime import ModelError
from livegen.music import events, features

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


def probabilities(logits: np.ndarray, *, temperature: float = 1.0, top_p: float = 1.0
                  ) -> np.ndarray:
    """The distribution sampling draws from: softmax(logits / temperature) restricted to the
    smallest set of most likely tokens whose mass reaches top_p (at least one token), then
    renormalised. float64, same length as logits."""
    if not temperature > 0:
        raise ValueError(f"temperature {temperature} must be positive")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p {top_p} must be in (0, 1]")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max()
    p = np.exp(scaled)
    p /= p.sum()
    if top_p < 1:
        order = np.argsort(-p, kind="stable")
        mass = np.cumsum(p[order])
        keep = int(np.searchsorted(mass, top_p, side="left")) + 1
        kept = np.zeros_like(p)
        kept[order[:keep]] = p[order[:keep]]
        p = kept / kept.sum()
    return p


def sample(logits: np.ndarray, *, temperature: float = 1.0, top_p: float = 1.0,
           uniform: float) -> int:
    """The token whose cumulative probability (in token order) first exceeds `uniform`:
    the same logits and number always give the same token."""
    if not 0 <= uniform < 1:
        raise ValueError(f"uniform {uniform} must be in [0, 1)")
    cumulative = np.cumsum(probabilities(logits, temperature=temperature, top_p=top_p))
    index = int(np.searchsorted(cumulative, uniform * cumulative[-1], side="right"))
    return min(index, len(cumulative) - 1)


def control_vector(pitch: float, density: float, key: Sequence[float] | np.ndarray
                   ) -> np.ndarray:
    """The model's (32,) control input for normalised controls: pitch and density in 0..1,
    key as 12 pitch-class weights (all zero = no key)."""
    return features.controls_to_vector(pitch, density, key)


def major_scale(root: int = 0) -> np.ndarray:
    """A 12-value histogram with equal weight on the major scale of `root` (0 = C)."""
    histogram = np.zeros(12)
    histogram[[(root + step) % 12 for step in (0, 2, 4, 5, 7, 9, 11)]] = 1
    return histogram


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
        controls = control_layout()
        if m.get("controls") != controls:
            raise ModelError(f"{self.manifest_path}: the model's control layout "
                             f"{m.get('controls')} is not livegen's {controls} "
                             "(music/features.py changed since training?); retrain or "
                             f"{runtime.FIX}")

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


def control_layout() -> dict[str, Any]:
    """The control layout as a manifest records it (music/features.py, the one source)."""
    return {"size": features.CONTROL_SIZE,
            "pitch": [features.PITCH_SLICE.start, features.PITCH_SLICE.stop],
            "density": [features.DENSITY_SLICE.start, features.DENSITY_SLICE.stop],
            "histogram": [features.HISTOGRAM_SLICE.start, features.HISTOGRAM_SLICE.stop],
            "pitch_low": features.PITCH_LOW, "pitch_high": features.PITCH_HIGH,
            "density_edges": list(features.DENSITY_EDGES), "window_s": features.WINDOW_S}


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
