"""Mapping rules -> Controls snapshots.

Each [[map]] rule takes one input value (`cam.hand.y`), normalises it by its in_range,
inverts it, bends it through a curve, smooths it with a One Euro filter, scales it to the
target's out_range and applies a deadband. The latest value of each target forms an
immutable, versioned `Controls` snapshot. A source that falls silent holds its values;
after its input's `stale_after` the targets it drove return to neutral.

Readings of the source `preset` (config.PRESET_SOURCE: a recalled preset, a generator
switched from the control surface) carry targets' values directly (`pitch`, `generator` as
an index, `lead.temperature`, `noise[3]`): each holds until its target's own rule moves.

Whatever arrives, every value a snapshot carries lies within its target's limits
(config.TARGETS): the config refuses an out_range beyond them, and the mapper holds each
value to them again, so no NaN, infinity or absurd tempo reaches a generator or the clock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from livegen.config import (
    NOISE_SIZE,
    PRESET_SOURCE,
    TARGETS,
    Config,
    MapRule,
    OneEuroConfig,
    parse_target,
    split_scope,
)
from livegen.inputs.base import Reading
from livegen.music.scales import major_scale

log = logging.getLogger(__name__)

# Controls.key for "no key" (a uniform histogram; the Char-RNN lets its music choose, the
# Langevin model steers to no key). Only code makes it (the Char-RNN's evaluation): a rule or
# a preset gives a root 0..11. Live, a key no rule drives is in Controls.undriven, which the
# Char-RNN also leaves to its music.
NO_KEY = 12
# Targets a generator may choose for itself while no rule drives them (Controls.undriven).
FREE_TARGETS = ("pitch", "density", "key")
MELODY_NOTES = 256  # the performer's melody kept in the Controls: at most this many notes
MELODY_S = 60.0     # and none that ended longer ago than this


@dataclass(frozen=True, slots=True)
class Controls:
    """What the generators see: one immutable snapshot per change.

    `t` is the Reading.t of the reading that caused this snapshot (monotonic seconds);
    control latency is measured from it.
    """

    version: int = 0
    t: float = 0.0
    pitch: float = 0.5        # 0 = low register .. 1 = high
    density: float = 0.5      # 0 = sparse .. 1 = dense
    key: int = 0              # root of a major scale, 0 = C .. 11 = B; NO_KEY = none
    temperature: float = 1.0
    top_p: float = 0.95
    velocity: float = 0.75    # 0.75 plays the model's velocities unchanged
    tempo: float = 100.0      # bpm, for segment generators
    generator: str = "charrnn"
    noise: tuple[float, ...] = field(default=(0.0,) * NOISE_SIZE)
    # What holds for one generator alone: (generator, target, noise index or -1, value),
    # from rules like `lead.temperature` and from each generator's own configured
    # temperature and top_p. `for_generator` applies them.
    scoped: tuple[tuple[str, str, int, float], ...] = ()
    # What the performer plays on engine.melody_input's keyboard, newest last: (note-on
    # time, note-off time or inf while held, pitch), monotonic seconds. Segment players
    # turn it into beats (generators/segment.melody_notes).
    melody: tuple[tuple[float, float, int], ...] = ()
    # The FREE_TARGETS that no rule or recalled preset drives: their values above are
    # neutral, and a generator may choose them itself (the Char-RNN lets its music choose).
    # Empty in Controls made in code: every value there counts as asked for.
    undriven: tuple[str, ...] = ()

    def for_generator(self, name: str) -> Controls:
        """These controls as generator `name` sees them: its own values in force."""
        own = [entry for entry in self.scoped if entry[0] == name]
        if not own:
            return self
        values: dict[str, object] = {}
        noise = list(self.noise)
        for _, target, index, value in own:
            if target == "noise":
                noise[index] = value
            elif target == "key":
                values["key"] = round(value) % 12
            else:
                values[target] = value
        values["undriven"] = tuple(t for t in self.undriven if t not in values)
        return dataclasses.replace(self, noise=tuple(noise), **values)

    def key_histogram(self) -> tuple[float, ...]:
        """The 12-value pitch-class histogram of the key (uniform when there is none)."""
        if self.key == NO_KEY:
            return (1.0 / 12,) * 12
        scale = major_scale(self.key)
        return tuple(1.0 / 7 if pc in scale else 0.0 for pc in range(12))

    @property
    def velocity_scale(self) -> float:
        """Factor applied to the velocities a generator plays (1.0 at the neutral 0.75)."""
        return self.velocity / 0.75


# ---------------------------------------------------------------- curves and filters

CURVE_STEEPNESS = 4.0  # how far the exponential/logarithmic curves bend

CURVES: dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "exponential": lambda x: math.expm1(CURVE_STEEPNESS * x) / math.expm1(CURVE_STEEPNESS),
    "logarithmic": lambda x: math.log1p(CURVE_STEEPNESS * x) / math.log1p(CURVE_STEEPNESS),
    "s-curve": lambda x: x * x * (3.0 - 2.0 * x),
}


class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel, Vogel, CHI 2012).

    A low-pass filter whose cutoff rises with the signal's speed: steady hands give smooth
    values, fast moves come through with little lag. A step too large for its arithmetic
    (the state would overflow) restarts it from the new value, so no input, however wild,
    leaves it poisoned; the mapper feeds it values normalised to 0..1 anyway.
    """

    def __init__(self, params: OneEuroConfig) -> None:
        self.params = params
        self.value: float | None = None
        self.derivative = 0.0
        self.t = 0.0

    @staticmethod
    def _alpha(cutoff_hz: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff_hz)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: float, t: float) -> float:
        """The smoothed value at time t (x and t finite; the mapper sees to it)."""
        if self.value is None:
            self.value, self.t = x, t
            return x
        dt = t - self.t
        if not dt > 0.0:  # same timestamp (or clock glitch): nothing to integrate over
            return self.value
        p = self.params
        raw_derivative = (x - self.value) / dt
        if not math.isfinite(raw_derivative):
            # A jump beyond what floats hold: smoothing across it would leave inf or NaN
            # in the state for good. Start again from the new value instead.
            self.value, self.derivative, self.t = x, 0.0, t
            return x
        self.derivative += self._alpha(p.d_cutoff, dt) * (raw_derivative - self.derivative)
        cutoff = p.min_cutoff + p.beta * abs(self.derivative)
        self.value += self._alpha(cutoff, dt) * (x - self.value)
        if not (math.isfinite(self.value) and math.isfinite(self.derivative)):
            self.value, self.derivative = x, 0.0
        self.t = t
        return self.value

    def reset(self) -> None:
        self.value = None
        self.derivative = 0.0


# ---------------------------------------------------------------- rules

def held(target: str, value: float) -> float:
    """value held to what `target` can take (config.TARGETS limits); NaN goes to the low
    end."""
    lo, hi = TARGETS[target].limits
    if not value >= lo:  # also NaN
        return lo
    return min(hi, value)


class Rule:
    """One [[map]] entry, with its filter and its last output."""

    def __init__(self, spec: MapRule) -> None:
        self.spec = spec
        self.scope, _ = split_scope(spec.target)  # a generator's own rule, or None
        self.target, self.index = parse_target(spec.target)
        self.slot = (self.scope, self.target, self.index)  # what it drives
        wanted = spec.out_range or TARGETS[self.target].range
        # The config refuses an out_range beyond the target's limits; a Config built in
        # code skips that check, so hold it here too.
        self.out_range = (held(self.target, wanted[0]), held(self.target, wanted[1]))
        if self.out_range != tuple(wanted):
            log.warning("map %s -> %s: out_range %s held to %s, what %s can take",
                        spec.source, spec.target, list(wanted), list(self.out_range),
                        self.target)
        self.curve = CURVES[spec.curve]
        self.filter = OneEuroFilter(spec.smoothing) if spec.smoothing else None
        self.output: float | None = None  # None: not driving its target (never, or stale)

    def apply(self, raw: float, t: float) -> bool:
        """Feed a source value; True when the output moved (beyond the deadband). A value
        that is not a finite number is ignored."""
        if not (math.isfinite(raw) and math.isfinite(t)):
            return False
        lo, hi = self.spec.in_range
        # Clip to the in_range before subtracting, so a huge raw value cannot overflow.
        clipped = min(max(raw, min(lo, hi)), max(lo, hi))
        x = min(1.0, max(0.0, (clipped - lo) / (hi - lo)))
        if self.spec.invert:
            x = 1.0 - x
        x = self.curve(x)
        if self.filter is not None:
            x = min(1.0, max(0.0, self.filter(x, t)))
        out_lo, out_hi = self.out_range
        # Weighted ends rather than lo + x * (hi - lo): the span of two finite ends can
        # overflow, a weighted mean of them cannot.
        y = held(self.target, out_lo * (1.0 - x) + out_hi * x)
        band = self.spec.deadband * abs(out_hi - out_lo)
        if self.output is not None and abs(y - self.output) <= band:
            return False
        changed = self.output != y
        self.output = y
        return changed

    def release(self) -> None:
        self.output = None
        if self.filter is not None:
            self.filter.reset()


class Mapper:
    """Turns Readings into Controls snapshots according to the config's [[map]] rules.

    Not thread-safe: it lives on the event loop. `update` and `tick` return a new snapshot
    when something changed, else None.
    """

    def __init__(self, config: Config, generators: tuple[str, ...] | None = None) -> None:
        self.generators = generators or config.playing
        self.neutral = neutral_controls(config)
        self.rules = [Rule(spec) for spec in config.map]
        self.by_source: dict[str, list[Rule]] = {}
        for rule in self.rules:
            self.by_source.setdefault(rule.spec.source, []).append(rule)
        self.stale_after = {name: cfg.stale_after for name, cfg in config.inputs.items()}
        self.last_seen: dict[str, float] = {}
        self.controls = self.neutral
        self.melody_input = config.engine.melody_input
        self.melody: list[tuple[float, float, int]] = []
        # Values recalled by PRESET_SOURCE readings, by (scope, target, index); each is
        # dropped when its target's own rule moves.
        self.recalled: dict[tuple[str | None, str, int | None], float] = {}

    def update(self, reading: Reading) -> Controls | None:
        if reading.source == PRESET_SOURCE:
            return self._snapshot(reading.t) if self._recall(reading) else None
        self.last_seen[reading.source] = reading.t
        moved = reading.source == self.melody_input and self._play_melody(reading)
        for key, value in reading.values.items():
            for rule in self.by_source.get(f"{reading.source}.{key}", ()):
                if rule.apply(value, reading.t):
                    moved = True
                    self.recalled.pop(rule.slot, None)  # the performer's move wins
        return self._snapshot(reading.t) if moved else None

    def _recall(self, reading: Reading) -> bool:
        """Hold a preset reading's values (each a target's own, e.g. `pitch` 0.8 or
        `generator` 1) until each target's rule moves; unknown targets are skipped."""
        recalled = False
        for key, value in reading.values.items():
            try:
                target, index = parse_target(key)
            except ValueError as exc:
                log.warning("preset: %s; skipped", exc)
                continue
            scope, _ = split_scope(key)
            if scope is not None and scope not in self.generators:
                log.warning("preset: %r names generator %r, which does not run; skipped",
                            key, scope)
                continue
            if math.isfinite(value):
                self.recalled[(scope, target, index)] = held(target, value)
                recalled = True
        return recalled

    def _play_melody(self, reading: Reading) -> bool:
        """Note-ons and note-offs of the melody input into the melody (its last
        MELODY_NOTES notes, none older than MELODY_S)."""
        changed = False
        for key, value in reading.values.items():
            if not key.startswith("note.") or not key[5:].isdigit():
                continue
            pitch = int(key[5:])
            if value > 0:
                self.melody.append((reading.t, math.inf, pitch))
            else:
                for i in range(len(self.melody) - 1, -1, -1):
                    on, off, held = self.melody[i]
                    if held == pitch and off == math.inf:
                        self.melody[i] = (on, reading.t, pitch)
                        break
                else:
                    continue
            changed = True
        if changed:
            oldest = reading.t - MELODY_S
            self.melody = [n for n in self.melody if n[1] >= oldest][-MELODY_NOTES:]
        return changed

    def tick(self, now: float) -> Controls | None:
        """Return targets of inputs silent for longer than their stale_after to neutral."""
        released = False
        for name, seen in list(self.last_seen.items()):
            if now - seen > self.stale_after.get(name, math.inf):
                del self.last_seen[name]
                log.info("input %s silent for %.1f s: its controls return to neutral",
                         name, now - seen)
                for rule in self.rules:
                    if rule.spec.input_name == name and rule.output is not None:
                        rule.release()
                        released = True
        return self._snapshot(now) if released else None

    def _snapshot(self, t: float) -> Controls | None:
        values = self._values()
        if values == self._values_of(self.controls):
            return None
        self.controls = dataclasses.replace(self.neutral, version=self.controls.version + 1,
                                            t=t, **values)
        return self.controls

    def _values(self) -> dict[str, object]:
        values = self._values_of(self.neutral)
        noise = list(self.neutral.noise)
        # The config allows one rule per target; a recalled value sits above its rule's
        # until that rule moves.
        driving = [(rule.slot, rule.output) for rule in self.rules if rule.output is not None]
        driving += self.recalled.items()
        shared = {(target, index) for (scope, target, index), _ in driving if scope is None}
        # A generator's own configured value holds until a rule drives the target for all.
        scoped = [entry for entry in self.neutral.scoped
                  if (entry[1], None if entry[2] < 0 else entry[2]) not in shared]
        for (scope, target, index), output in driving:
            if scope is not None:
                scoped.append((scope, target, -1 if index is None else index, output))
                continue
            if target == "noise":
                noise[index] = output
            elif target == "key":
                values["key"] = round(output) % 12
            elif target == "generator":
                choice = min(len(self.generators) - 1, max(0, round(output)))
                values["generator"] = self.generators[choice]
            else:
                values[target] = output
        values["noise"] = tuple(noise)
        values["scoped"] = tuple(scoped)
        values["melody"] = tuple(self.melody)
        values["undriven"] = tuple(t for t in FREE_TARGETS if (t, None) not in shared)
        return values

    @staticmethod
    def _values_of(controls: Controls) -> dict[str, object]:
        return {f.name: getattr(controls, f.name) for f in dataclasses.fields(Controls)
                if f.name not in ("version", "t")}


def neutral_controls(config: Config) -> Controls:
    """The controls when nothing drives them: each target's neutral or the configured value."""
    generator = config.engine.generator
    settings = config.generator(generator)
    # Each other generator's own sampling settings hold for it alone.
    scoped = tuple((name, target, -1, held(target, getattr(config.generator(name), target)))
                   for name in config.playing if name != generator
                   for target in ("temperature", "top_p")
                   if hasattr(config.generator(name), target))
    return Controls(
        pitch=TARGETS["pitch"].neutral,
        density=TARGETS["density"].neutral,
        key=0,
        # A generator without sampling settings (a segment generator) leaves the
        # Controls' own defaults.
        temperature=held("temperature", getattr(settings, "temperature", 1.0)),
        top_p=held("top_p", getattr(settings, "top_p", 0.95)),
        velocity=TARGETS["velocity"].neutral,
        tempo=held("tempo", config.clock.bpm),
        generator=generator,
        scoped=scoped,
        undriven=FREE_TARGETS,
    )
