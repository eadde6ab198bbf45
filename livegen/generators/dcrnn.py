"""The DCRNN at run time: a segment generator steered by a noise code and a key (ONNX
Runtime and numpy only, never torch).

    model = DCRNN.from_config(config.generators.dcrnn)   # checks manifest, hashes, graphs
    segment = model.segment(request)                     # generators/segment.py's protocol

The model makes phrases of `phrase_steps` (32 steps: two 4/4 bars, the length it was
trained on) from the zero state of its recurrent layers. Bar n of the music is bar
n mod phrase_bars of phrase n // phrase_bars, made under the request's controls, so a
segment depends on its request alone, whichever bars it spans, and replays repeat. Within a
phrase the recurrent state carries from bar to bar (the original made 16 frames per call
and lost its state in between, so every bar restarted); across phrases the model restarts,
as in training, where it never ran beyond its phrase. Under steady controls a phrase
repeats: a held gesture is a held rhythm, as in the seed's Myo demo.

The noise code z: z[i] = noise[i] (clipped to [-1, 1]) for the indices in `driven`, the
performer's rules; every other value is fixed by `seed` (U[-1, 1]). The generator cannot
see which noise targets a rule drives, so the config names them (default noise[0..7],
examples/emg.toml's eight armband channels). A driven value that no reading has reached
yet is the Controls' neutral 0.0, the middle of its range. The scale condition is
Controls.key_histogram(): a major scale, or the uniform "no key" the model was also
trained with.

Binarisation (roll.binarise): the graphs return two planes in [-1, 1], frames and
onsets. "threshold" is what the critic saw in training; "hysteresis" starts a note above
`threshold` and holds it while the frame stays above `sustain`; "sample" draws each cell,
seeded by (seed, phrase). By default the generator uses the choice that `livegen eval
dcrnn --write` measured for this model and recorded in its manifest (README: The DCRNN);
the config may override it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from livegen.config import GeneratorConfig, setting
from livegen.generators import runtime
from livegen.generators.runtime import ModelError
from livegen.generators.segment import (
    STEPS_PER_BEAT,
    Segment,
    SegmentNote,
    SegmentRequest,
    notes_in_order,
)
from livegen.music import roll as rolls

log = logging.getLogger(__name__)

KIND = "dcrnn"
DEFAULT_DRIVEN = tuple(range(8))
# Binarisation for a manifest that records no measured choice (the critic's view).
DEFAULT_BINARISATION = {"method": "threshold", "threshold": 0.0, "sustain": 0.0}
INPUTS = ("z", "scale")
OUTPUTS = ("planes",)


@dataclass(frozen=True, slots=True)
class DCRNNConfig(GeneratorConfig):
    """[generators.dcrnn]: the DCRNN segment generator."""

    model: Path = setting(Path("models/dcrnn.json"), doc="manifest of the ONNX graphs")
    variant: Literal["default", "fp32", "int8"] = setting(
        "default", doc="model variant: default = the one the manifest names; int8 only if shipped")
    bars: int = setting(2, lo=1, hi=2, doc="bars per segment: 2 = one phrase, 1 = a control "
                                           "change is heard at every bar line")
    binarisation: Literal["default", "hysteresis", "threshold", "sample"] = setting(
        "default", doc="how the model's planes become notes; default = the manifest's "
                       "measured choice (README: The DCRNN)")
    threshold: float | None = setting(
        None, lo=-1.0, hi=1.0,
        doc="a note starts where the model's frame value passes this; unset = the manifest's")
    sustain: float | None = setting(
        None, lo=-1.0, hi=1.0,
        doc="hysteresis: a started note holds while the value stays above; unset = the "
            "manifest's")
    seed: int = setting(0, lo=0, hi=2**31 - 1,
                        doc="fixes the noise values no rule drives (and sampling)")
    driven: tuple[int, ...] = setting(DEFAULT_DRIVEN,
                                      doc="noise indices the performer's rules drive")
    velocity: int = setting(80, lo=1, hi=127, doc="velocity of every note (before the "
                                                  "velocity control scales it)")


def tensors(noise_size: int, keys: int, steps: int) -> dict[str, Any]:
    """A graph's tensors as the manifest records them ("batch" = dynamic)."""
    return {"inputs": {"z": {"dtype": "float32", "shape": ["batch", noise_size]},
                       "scale": {"dtype": "float32", "shape": ["batch", 12]}},
            "outputs": {"planes": {"dtype": "float32", "shape": ["batch", 2, steps, keys]}}}


def fixed_code(seed: int, size: int) -> np.ndarray:
    """The noise code's values where no rule drives it: U[-1, 1] from the seed alone."""
    return np.random.default_rng((seed, 0xD0C0DE)).uniform(-1, 1, size).astype(np.float32)


class DCRNN:
    """A loaded, verified DCRNN: one ONNX graph per phrase length (calls are not
    thread-safe, so one inference thread owns it)."""

    name = KIND

    def __init__(self, manifest_path: Path | str, *, variant: str | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 1,
                 bars: int = 2, binarisation: str | None = None,
                 threshold: float | None = None, sustain: float | None = None, seed: int = 0,
                 driven: Sequence[int] = DEFAULT_DRIVEN, velocity: int = 80) -> None:
        self.manifest_path = Path(manifest_path)
        self.manifest = runtime.load_manifest(self.manifest_path, KIND)
        m = self.manifest
        try:
            self.noise_size = int(m["noise_size"])
            self.low = int(m["keys"]["low"])
            self.keys = int(m["keys"]["count"])
            self.phrase_steps = int(m["phrase_steps"])
            lengths = sorted(int(steps) for steps in m["graphs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{self.manifest_path}: manifest lacks the DCRNN's layout "
                             f"({exc!r}); {runtime.FIX}") from None
        if m.get("condition", {}).get("size") != 12 or self.phrase_steps not in lengths:
            raise ModelError(f"{self.manifest_path}: the model's condition or phrase "
                             f"{m.get('condition')}, {self.phrase_steps} steps, is not what "
                             f"this code feeds; {runtime.FIX}")
        self.variant = variant or m["default_variant"]
        self.sessions: dict[int, Any] = {}
        self.paths: dict[int, Path] = {}
        for steps in lengths:
            graph = {**m, **m["graphs"][str(steps)]}  # files and tensors of this length
            path = runtime.model_file(self.manifest_path, graph, self.variant)
            session = runtime.make_session(path, providers, threads)
            runtime.check_graph(session, graph, path)
            self.sessions[steps], self.paths[steps] = session, path
        if bars not in (1, 2):
            raise ValueError(f"bars {bars} must be 1 or 2")
        chosen = {**DEFAULT_BINARISATION, **m.get("binarisation", {})}
        binarisation = binarisation or chosen["method"]
        threshold = chosen["threshold"] if threshold is None else threshold
        sustain = chosen["sustain"] if sustain is None else sustain
        if binarisation not in rolls.BINARISATIONS:
            raise ValueError(f"binarisation {binarisation!r}: use one of "
                             f"{', '.join(rolls.BINARISATIONS)}")
        bad = [i for i in driven if not 0 <= i < self.noise_size]
        if bad:
            raise ValueError(f"driven noise indices {bad} are outside this model's code "
                             f"noise[0..{self.noise_size - 1}]")
        self.bars = bars
        self.binarisation = binarisation
        self.threshold, self.sustain = threshold, sustain
        self.seed = seed
        self.driven = tuple(driven)
        self.velocity = velocity
        self.fixed = fixed_code(seed, self.noise_size)

    @classmethod
    def from_config(cls, config: DCRNNConfig) -> DCRNN:
        """From the [generators.dcrnn] config."""
        variant = None if config.variant == "default" else config.variant
        return cls(config.model, variant=variant, providers=config.providers,
                   threads=config.threads, bars=config.bars,
                   binarisation=None if config.binarisation == "default"
                   else config.binarisation, threshold=config.threshold,
                   sustain=config.sustain, seed=config.seed, driven=config.driven,
                   velocity=config.velocity)

    @property
    def providers(self) -> list[str]:
        """The execution providers that really run the model."""
        return list(self.sessions[self.phrase_steps].get_providers())

    # ------------------------------------------------------------ the model

    def code(self, noise: Sequence[float]) -> np.ndarray:
        """The (noise_size,) z for the Controls' noise values (see the module docstring)."""
        z = self.fixed.copy()
        for i in self.driven:
            if i < len(noise):
                value = float(noise[i])
                z[i] = min(max(value, -1.0), 1.0) if np.isfinite(value) else 0.0
        return z

    def planes(self, z: np.ndarray, scale: np.ndarray, steps: int | None = None
               ) -> np.ndarray:
        """The graph's planes (B, 2, steps, keys) in [-1, 1] for codes (B, noise_size) and
        scales (B, 12) (normalised here to sum 1; all zeros = no key). `steps` is one of the
        shipped lengths (default: the phrase)."""
        steps = steps or self.phrase_steps
        if steps not in self.sessions:
            raise ValueError(f"no graph of {steps} steps (shipped: {sorted(self.sessions)})")
        z = np.clip(np.asarray(z, dtype=np.float32).reshape(-1, self.noise_size), -1, 1)
        scale = np.asarray(scale, dtype=np.float32).reshape(-1, 12)
        total = scale.sum(axis=1, keepdims=True)
        scale = np.where(total > 0, scale / np.where(total > 0, total, 1), 1 / 12)
        (planes,) = self.sessions[steps].run(None, {"z": z, "scale": scale.astype(np.float32)})
        return planes

    def binarise(self, planes: np.ndarray, phrase: int = 0) -> np.ndarray:
        """The (T, 128) roll of one phrase's planes (2, T, keys) by the configured method."""
        uniforms = None
        if self.binarisation == "sample":
            uniforms = np.random.default_rng((self.seed, phrase)).random(planes.shape)
        return rolls.binarise(planes, self.low, method=self.binarisation,
                              threshold=self.threshold, sustain=self.sustain,
                              uniforms=uniforms)

    def phrase_roll(self, z: np.ndarray, scale: np.ndarray, phrase: int, steps: int
                    ) -> np.ndarray:
        """The first `steps` of phrase number `phrase` as a (steps, 128) roll, from the
        shortest graph that covers them."""
        length = min((s for s in self.sessions if s >= steps), default=None)
        if length is None:
            raise ValueError(f"a phrase of {steps} steps is longer than the longest graph "
                             f"({max(self.sessions)} steps)")
        planes = self.planes(z[None], np.asarray(scale)[None], length)[0]
        if self.binarisation == "sample":
            # Draw for the whole phrase whichever graph ran, so bar 2 does not depend on
            # whether bar 1 was asked for alone.
            full = np.zeros((2, self.phrase_steps, self.keys), dtype=np.float32)
            full[:, :length] = planes
            return self.binarise(full, phrase)[:steps]
        return self.binarise(planes, phrase)[:steps]

    # ------------------------------------------------------------ the segment protocol

    def warm_up(self) -> None:
        """Run every graph once (graph optimisation, allocations) before the music starts."""
        for steps in self.sessions:
            self.planes(self.fixed[None], np.full((1, 12), 1 / 12), steps)

    def segment(self, request: SegmentRequest) -> Segment:
        """The music of bars request.bar .. + request.bars - 1 (see the module docstring).
        Notes are cut at the segment's end; a note that sounds across a bar line between
        two phrases, or between two one-bar segments, is struck again there."""
        started = time.perf_counter()
        steps_per_bar = request.beats_per_bar * STEPS_PER_BEAT
        if not 0 < steps_per_bar <= self.phrase_steps:
            raise ValueError(f"a bar of {request.beats_per_bar} beats is longer than the "
                             f"model's phrase of {self.phrase_steps} steps")
        phrase_bars = self.phrase_steps // steps_per_bar
        z = self.code(request.controls.noise)
        scale = np.asarray(request.controls.key_histogram(), dtype=np.float32)
        bars = []
        phrase_rolls: dict[int, np.ndarray] = {}
        last_bar = request.bar + request.bars - 1
        for bar in range(request.bar, last_bar + 1):
            phrase, within = divmod(bar, phrase_bars)
            if phrase not in phrase_rolls:
                # Only as much of the phrase as this request needs.
                needed = (min(phrase_bars - 1, last_bar - phrase * phrase_bars) + 1)
                phrase_rolls[phrase] = self.phrase_roll(z, scale, phrase,
                                                        needed * steps_per_bar)
            bars.append(phrase_rolls[phrase][within * steps_per_bar:
                                             (within + 1) * steps_per_bar])
        roll = np.concatenate(bars)
        step_beats = 1 / STEPS_PER_BEAT
        notes = notes_in_order([
            SegmentNote(note.start * step_beats, (note.end - note.start) * step_beats,
                        note.pitch, self.velocity)
            for note in rolls.grid_notes(_strike_at_phrase_starts(roll, request.bar,
                                                                  phrase_bars,
                                                                  steps_per_bar))])
        return Segment(request.bar, request.bars, notes,
                       {"ms": (time.perf_counter() - started) * 1e3,
                        "phrases": float(len(phrase_rolls))})


def _strike_at_phrase_starts(roll: np.ndarray, first_bar: int, phrase_bars: int,
                             steps_per_bar: int) -> np.ndarray:
    """The roll with every sounding cell at the first step of a phrase marked as struck:
    the phrase before it was made apart, so a note there is a new note, not a held one."""
    roll = roll.copy()
    for bar in range(len(roll) // steps_per_bar):
        if (first_bar + bar) % phrase_bars == 0:
            row = roll[bar * steps_per_bar]
            row[row > 0] = rolls.ONSET
    return roll
