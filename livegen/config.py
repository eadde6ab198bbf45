"""config.toml -> frozen dataclasses.

The schema is the dataclasses below: each field's type, default and bounds are written once,
and one generic loader walks them. Input families carry their own config classes beside
their inputs (livegen.inputs.FAMILIES), generators theirs (livegen.generators.REGISTRY; the
Char-RNN's is still here), and the loader finds each by the `type` of its table. Every
error names its key path (`map[2].target`), the value, the expected form and, where one
fits, a suggestion. Paths resolve relative to the folder of the config file, so one config
works from a checkout and from /etc/livegen alike. `dumps` writes the effective config back
as TOML (livegen.toml_writer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from livegen import toml_writer
from livegen.clock import MAX_BPM, MIN_BPM
from livegen.errors import LivegenError

if TYPE_CHECKING:
    from livegen.inputs.base import Check

CONFIG_ENV = "LIVEGEN_CONFIG"
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]
# What livegen ships (config.toml, models/, devices/, systemd/, examples/): a wheel carries
# it inside the package (setup.py copies it there at build time); a checkout keeps it at
# its root.
PACKAGE_DATA = Path(__file__).resolve().parent / "data"
SHIPPED_DATA = PACKAGE_DATA if (PACKAGE_DATA / "config.toml").is_file() else CHECKOUT_ROOT
SYSTEM_CONFIG = Path("/etc/livegen/config.toml")
SHARED_DATA = Path("/usr/share/livegen")  # what install-service puts beside /etc/livegen


class ConfigError(LivegenError):
    """A config that cannot be used; `problems` holds one line per bad value."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def setting(default: Any = dataclasses.MISSING, *, lo: float | None = None,
            hi: float | None = None, doc: str = "", factory: Any = None,
            internal: bool = False) -> Any:
    """A dataclass field with bounds (inclusive) and a one-line description.

    `internal` fields are filled in by the loader, never read from the file.
    """
    meta = {"lo": lo, "hi": hi, "doc": doc, "internal": internal}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- mapping targets
# What a [[map]] rule can drive. `range` is the default output range; `limits` is what the
# target can take at all (an out_range must lie within it, and the mapper holds every
# value to it at run time); `neutral` is where the value rests when nothing drives it
# (None: the generator's own configured value).

@dataclass(frozen=True, slots=True)
class Target:
    name: str
    range: tuple[float, float]
    limits: tuple[float, float]
    neutral: float | None
    doc: str


NOISE_SIZE = 64  # the longest noise code any generator may take
# Sampling settings, shared by the generator's own keys and the rules that drive them:
# a temperature or top_p of 0 is no distribution at all.
TEMPERATURE_LIMITS = (0.05, 5.0)
TOP_P_LIMITS = (0.01, 1.0)
# velocity scales the velocities played by velocity / 0.75; at 2 (x2.7) all but the
# softest notes are already at 127.
VELOCITY_LIMITS = (0.0, 2.0)
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("pitch", (0.0, 1.0), (0.0, 1.0), 0.5,
           "register: 0 = low, 1 = high (mean-pitch bin)"),
    Target("density", (0.0, 1.0), (0.0, 1.0), 0.5, "notes per second: 0 = sparse, 1 = dense"),
    Target("key", (0.0, 11.0), (0.0, 11.0), None, "root of a major scale, 0 = C .. 11 = B"),
    Target("temperature", (0.3, 1.5), TEMPERATURE_LIMITS, None, "sampling temperature"),
    Target("top_p", (0.5, 1.0), TOP_P_LIMITS, None, "nucleus sampling mass"),
    Target("velocity", (0.0, 1.0), VELOCITY_LIMITS, 0.75,
           "loudness: scales the velocities played (0.75 = as the model plays them)"),
    Target("tempo", (60.0, 180.0), (MIN_BPM, MAX_BPM), None,
           "tempo in bpm for segment generators and the MIDI clock sent"),
    Target("generator", (0.0, 2.0), (0.0, 2.0), None, "index into engine.generators"),
    Target("noise", (-1.0, 1.0), (-1.0, 1.0), 0.0,
           "noise[i]: one value of the generator's noise code"),
)}
_NOISE_TARGET = re.compile(r"^noise\[(\d+)\]$")


# Targets a rule may give one generator alone (`charrnn.temperature`): what shapes a
# generator's own music. Tempo, the playing generator and the key of the whole are shared.
SCOPED_TARGETS = ("pitch", "density", "key", "temperature", "top_p", "velocity", "noise")


def split_scope(spec: str) -> tuple[str | None, str]:
    """`charrnn.temperature` -> ("charrnn", "temperature"); `temperature` -> (None, ...)."""
    scope, dot, rest = spec.partition(".")
    return (scope, rest) if dot else (None, spec)


def parse_target(spec: str) -> tuple[str, int | None]:
    """`pitch` -> ("pitch", None); `noise[3]` -> ("noise", 3); a generator's own
    `lead.pitch` -> ("pitch", None) (see split_scope). Raises ValueError."""
    scope, spec = split_scope(spec)
    if scope is not None:
        target, index = parse_target(spec)
        if target not in SCOPED_TARGETS:
            raise ValueError(f"{target!r} is shared by every generator; give it without "
                             f"{scope + '.'!r}")
        return target, index
    m = _NOISE_TARGET.match(spec)
    if m:
        index = int(m.group(1))
        if index >= NOISE_SIZE:
            raise ValueError(f"noise index {index} is out of range; use noise[0] .. "
                             f"noise[{NOISE_SIZE - 1}]")
        return "noise", index
    if spec in TARGETS and spec != "noise":
        return spec, None
    names = [n for n in TARGETS if n != "noise"] + ["noise[i]"]
    raise ValueError(f"unknown target {spec!r}{_suggest(spec, names)} "
                     f"(targets: {', '.join(names)})")


# ---------------------------------------------------------------- sections

@dataclass(frozen=True, slots=True)
class EngineConfig:
    generator: str = setting("charrnn", doc="the generator that plays at start")
    generators: tuple[str, ...] = setting(
        (), doc="the generators that run ([generators.NAME] sections or registered names); "
                "unset = engine.generator alone")
    mode: Literal["switch", "layer"] = setting(
        "switch", doc="switch: one sounds at a time, chosen by the generator target, "
                      "changing at a bar line; layer: all sound, each on its own channel")
    melody_input: str = setting("", doc="a midi input whose notes are the performer's "
                                        "melody (Langevin's harmonise and continue modes)")
    watchdog_s: float = setting(2.0, lo=0.1, hi=60.0,
                                doc="a generator whose thread has not turned for this long "
                                    "(past its own budget) is replaced")
    latency_budget_ms: float = setting(10.0, lo=0.5, hi=1000.0,
                                       doc="control latency budget; overruns are counted")
    lookahead_ms: float = setting(400.0, lo=20.0, hi=10000.0,
                                  doc="how far ahead of the playhead the plan runs")
    commit_ms: float = setting(8.0, lo=0.0, hi=1000.0,
                               doc="events due sooner than this survive a rollback")
    rollback_threshold: float = setting(0.02, lo=0.0, hi=1.0,
                                        doc="smallest control change that triggers a rollback")
    seed: int | None = setting(None, lo=0, hi=2**32 - 1,
                               doc="sampling seed; unset = a fresh seed each run (logged)")
    switch_interval_ms: float = setting(0.5, lo=0.05, hi=50.0,
                                        doc="Python's thread switch interval while running")
    presets: Path = setting(Path("presets.toml"),
                            doc="the presets file (/livegen/preset/store N writes it)")

    def check(self, path: str, problems: list[str]) -> None:
        if self.commit_ms >= self.lookahead_ms:
            problems.append(f"{path}.commit_ms: {self.commit_ms} must be smaller than "
                            f"{path}.lookahead_ms ({self.lookahead_ms})")


@dataclass(frozen=True, slots=True)
class ClockConfig:
    bpm: float = setting(120.0, lo=MIN_BPM, hi=MAX_BPM,
                         doc="internal tempo (120: the Char-RNN plays as it learned)")
    beats_per_bar: int = setting(4, lo=1, hi=16)
    source: Literal["internal", "midi", "link"] = setting(
        "internal", doc="internal tempo, follow MIDI clock, or join an Ableton Link session "
                        "(the link extra; the quantum is beats_per_bar)")
    follow_port: str = setting("", doc="MIDI input port (name substring) to follow clock from")
    send: bool = setting(False, doc="send MIDI clock (24 ppqn) on the output")
    start_stop_sync: bool = setting(
        True, doc="with source = 'link': a peer's stop pauses the music, its start begins "
                  "it again from the top at the session's next bar line")

    def check(self, path: str, problems: list[str]) -> None:
        if self.source == "midi" and not self.follow_port:
            problems.append(f"{path}.follow_port: needed when {path}.source = 'midi'; "
                            "name the port that sends clock (see `livegen devices`)")


ALL_CHANNELS = tuple(range(1, 17))


@dataclass(frozen=True, slots=True)
class OutputConfig:
    api: Literal["auto", "jack", "alsa", "coremidi"] = setting(
        "auto", doc="MIDI system; auto tries JACK, then ALSA, then CoreMIDI")
    port: str = setting("livegen", doc="name of the virtual port livegen opens, shown as "
                                       "NAME:out ('' = none)")
    connect: tuple[str, ...] = setting(
        (), doc="existing ports (name substrings) to send to as well, e.g. a synth's input")
    channel: int = setting(1, lo=1, hi=16, doc="MIDI channel the generators play on")
    panic_channels: tuple[int, ...] = setting(
        ALL_CHANNELS, lo=1, hi=16, doc="channels that get all-notes-off at start, stop, panic")
    max_note_s: float = setting(8.0, lo=0.05, hi=600.0,
                                doc="notes held longer than this are released")
    record: Path | None = setting(None, doc="also record everything sent to this .mid file")
    require_port: bool = setting(
        False, doc="refuse to start without a MIDI system (else: warn, record only)")
    realtime: bool = setting(True, doc="ask for SCHED_FIFO for the output thread")
    spin_ms: float = setting(
        0.8, lo=0.0, hi=20.0,
        doc="the output thread takes the GIL this long before a due time; best about "
            "1.6 x engine.switch_interval_ms")


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What every [generators.NAME] section holds. Each generator's own config class (see
    livegen.generators.REGISTRY) is a child that adds its keys and its model's default."""

    type: str = setting("", doc="the generator this section plays (unset = the section's "
                                "name), e.g. two sections of type charrnn on two channels")
    plugin: str = setting("", doc="a generator of your own: 'package.module:Class'")
    model: Path = setting(Path("models/model.json"), doc="manifest of the ONNX model")
    variant: str = setting("default", doc="model variant: default = the one the manifest "
                                          "names")
    providers: tuple[str, ...] = setting(
        ("CUDAExecutionProvider", "CPUExecutionProvider"),
        doc="ONNX Runtime execution providers, in order of preference")
    threads: int = setting(1, lo=1, hi=64, doc="ONNX Runtime intra-op threads")
    channel: int | None = setting(None, lo=1, hi=16, doc="MIDI channel; unset = output.channel")


@dataclass(frozen=True, slots=True)
class CharRNNConfig(GeneratorConfig):
    model: Path = setting(Path("models/charrnn.json"), doc="manifest of the ONNX model")
    variant: Literal["default", "fp32", "int8"] = setting(
        "default", doc="model variant: default = the one the manifest names; int8 only if shipped")
    temperature: float = setting(1.0, lo=TEMPERATURE_LIMITS[0], hi=TEMPERATURE_LIMITS[1])
    top_p: float = setting(0.95, lo=TOP_P_LIMITS[0], hi=TOP_P_LIMITS[1])
    quantize: Literal["off", "1/8", "1/16", "1/16t"] = setting(
        "off", doc="snap its onsets to the clock's grid (for DAW users who want notes on it)")


# ---------------------------------------------------------------- inputs
# What every [inputs.NAME] holds. Each input family's own config class is a child that lives
# beside its input and is chosen by the `type` key (the registry: livegen.inputs.FAMILIES).

@dataclass(frozen=True, slots=True)
class InputConfig:
    type: str = setting("", doc="input family")
    stale_after: float = setting(2.0, lo=0.05, hi=3600.0,
                                 doc="seconds of silence before its controls go neutral")
    profile: Path | None = setting(None, doc="a device profile (devices/*.toml) whose [input] "
                                             "table gives defaults for this input's keys")

    def offered_keys(self) -> tuple[str, ...] | None:
        """The value keys this input can yield (`hand.y`, `cc.74`), or None where any key
        may come (OSC, a replayed trace): map rules are checked against them."""
        return None

    def describe(self) -> str:
        """What `livegen devices` calls this input: its family, and where it reads from."""
        return self.type

    def reachable(self) -> Check | None:
        """Whether the input could start now, for `livegen devices`, which only looks: no
        port is opened for long, no camera started. None: nothing to check."""
        return None


# The replay's config, until it moves beside ReplayInput (livegen/inputs/replay.py).
@dataclass(frozen=True, slots=True)
class ReplayInputConfig(InputConfig):
    path: Path = setting(Path("recording.jsonl"), doc="JSONL trace from `livegen run --record`")
    loop: bool = setting(False)
    speed: float = setting(1.0, lo=0.01, hi=100.0)

    def reachable(self) -> Check:
        from livegen.inputs.base import Check

        there = self.path.is_file()
        return Check(there, f"trace {self.path}" + ("" if there else ": no such file"))


def __getattr__(name: str) -> type[InputConfig]:
    """An input family's config class at its old address (`from livegen.config import
    MidiInputConfig`), for code written before the classes moved beside their inputs; new
    code imports each from its family's module (livegen.inputs.FAMILIES names it)."""
    if name.endswith("InputConfig"):  # not for `__path__` and the like, asked on import
        from livegen.inputs import FAMILIES, config_class

        for type_name, family in FAMILIES.items():
            if family.config.endswith(f":{name}"):
                return config_class(type_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Recalled presets and switches from the control surface reach the mapper as readings of
# this source: their values are targets' values, held until a target's own rule moves.
PRESET_SOURCE = "preset"


# ---------------------------------------------------------------- mapping rules

@dataclass(frozen=True, slots=True)
class OneEuroConfig:
    """One Euro filter (Casiez et al. 2012): less jitter at rest, less lag when moving."""
    min_cutoff: float = setting(1.0, lo=0.001, hi=100.0, doc="Hz; lower = smoother at rest")
    beta: float = setting(0.0, lo=0.0, hi=100.0, doc="speed coefficient; higher = less lag")
    d_cutoff: float = setting(1.0, lo=0.001, hi=100.0, doc="Hz, for the derivative")


@dataclass(frozen=True, slots=True)
class MapRule:
    source: str = setting(doc="INPUT.KEY, e.g. cam.hand.y, arm.ch3, knobs.cc.74")
    target: str = setting(doc="pitch, density, key, temperature, top_p, velocity, tempo, "
                              "generator or noise[i]")
    in_range: tuple[float, float] = setting((0.0, 1.0), doc="source values mapped from")
    out_range: tuple[float, float] | None = setting(None, doc="unset = the target's range")
    curve: Literal["linear", "exponential", "logarithmic", "s-curve"] = setting("linear")
    invert: bool = setting(False)
    deadband: float = setting(0.0, lo=0.0, hi=1.0,
                              doc="changes smaller than this (of the out range) are ignored")
    smoothing: OneEuroConfig | None = setting(None, doc="One Euro filter; unset = none")

    def check(self, path: str, problems: list[str]) -> None:
        if "." not in self.source:
            problems.append(f"{path}.source: {self.source!r} must be INPUT.KEY, "
                            "e.g. 'sim.hand.y'")
        try:
            target, _ = parse_target(self.target)
        except ValueError as exc:
            problems.append(f"{path}.target: {exc}")
        else:
            self.check_out_range(target, path, problems)
        lo, hi = self.in_range
        if lo == hi:
            problems.append(f"{path}.in_range: the two ends must differ, got {list(self.in_range)}")
        elif not math.isfinite(hi - lo):
            problems.append(f"{path}.in_range: [{lo:g}, {hi:g}] spans more than a number can "
                            "hold; give the range the source really sends")

    def check_out_range(self, target: str, path: str, problems: list[str]) -> None:
        if self.out_range is None:
            return
        lo, hi = TARGETS[target].limits
        if all(lo <= end <= hi for end in self.out_range):
            return
        got = ", ".join(f"{end:g}" for end in self.out_range)
        fixed = ", ".join(f"{min(hi, max(lo, end)):g}" for end in self.out_range)
        problems.append(f"{path}.out_range: [{got}] goes beyond what {target} can take "
                        f"({lo:g} .. {hi:g}); keep both ends within it, e.g. [{fixed}]")

    @property
    def input_name(self) -> str:
        return self.source.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.source.split(".", 1)[1]


# ---------------------------------------------------------------- the monitor page

@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """The live monitor page (livegen/monitor.py), served from the daemon's own loop."""
    enabled: bool = setting(False, doc="serve the monitor page at http://HOST:PORT/")
    host: str = setting("127.0.0.1", doc="address to serve on; 0.0.0.0 opens it (and its "
                                         "panic, pause and preset buttons) to the network")
    port: int = setting(8765, lo=0, hi=65535, doc="TCP port (0 = any free port, logged)")
    rate_hz: float = setting(20.0, lo=1.0, hi=60.0,
                             doc="how often a connected page is sent the roll and controls "
                                 "(it draws the roll at the screen's rate in between)")


# ---------------------------------------------------------------- the whole config

@dataclass(frozen=True, slots=True)
class Config:
    engine: EngineConfig = setting(factory=EngineConfig)
    clock: ClockConfig = setting(factory=ClockConfig)
    output: OutputConfig = setting(factory=OutputConfig)
    generators: Mapping[str, GeneratorConfig] = setting(
        factory=dict, doc="[generators.NAME] sections; a generator that runs without one "
                          "plays with its defaults")
    inputs: Mapping[str, InputConfig] = setting(factory=dict)
    map: tuple[MapRule, ...] = setting(())
    monitor: MonitorConfig = setting(factory=MonitorConfig)
    source: Path | None = setting(None, doc="the file this config was read from",
                                  internal=True)

    @property
    def playing(self) -> tuple[str, ...]:
        """The generators that run: engine.generators, else engine.generator alone."""
        return self.engine.generators or (self.engine.generator,)

    def generator(self, name: str) -> GeneratorConfig:
        """The config of generator `name`: its section, else its registered defaults."""
        if name in self.generators:
            return self.generators[name]
        from livegen.generators import generator_type

        return generator_type(name).config_class()

    def check(self, path: str, problems: list[str]) -> None:
        from livegen.generators import REGISTRY

        known = sorted({*self.generators, *REGISTRY})
        for i, name in enumerate(self.playing):
            if name not in known:
                key = f"engine.generators[{i}]" if self.engine.generators else "engine.generator"
                problems.append(f"{key}: unknown generator {name!r}{_suggest(name, known)} "
                                f"(generators: {', '.join(known)}, or a [generators.NAME] "
                                "section)")
        melody = self.engine.melody_input
        if melody and (melody not in self.inputs or self.inputs[melody].type != "midi"):
            midi = [name for name, i in self.inputs.items() if i.type == "midi"]
            problems.append(f"engine.melody_input: {melody!r} is not a midi input"
                            f"{_suggest(melody, midi)} (midi inputs: "
                            f"{', '.join(midi) or 'none'})")
        if self.engine.generators and self.engine.generator not in self.engine.generators:
            problems.append(f"engine.generator: {self.engine.generator!r} is not among "
                            f"engine.generators ({', '.join(self.engine.generators)}); it is "
                            "the one that plays first")
        if self.engine.mode == "layer" and len(self.playing) > 1:
            channels: dict[int, str] = {}
            for name in self.playing:
                if name not in known:
                    continue
                channel = self.generator(name).channel or self.output.channel
                if channel in channels:
                    problems.append(f"generators.{name}.channel: {channel} is also "
                                    f"{channels[channel]}'s; in layer mode each generator "
                                    "plays on its own channel")
                channels[channel] = name
        self._check_surface(problems)
        driven: dict[tuple[str | None, str, int | None], int] = {}
        for i, rule in enumerate(self.map):
            if "." in rule.source and rule.input_name not in self.inputs:
                known = ", ".join(self.inputs) or "none"
                problems.append(f"map[{i}].source: no input named {rule.input_name!r}"
                                f"{_suggest(rule.input_name, list(self.inputs))} "
                                f"(configured inputs: {known})")
            elif "." in rule.source:
                self._check_key(i, rule, problems)
            scope, _ = split_scope(rule.target)
            if scope is not None and scope not in self.playing:
                problems.append(f"map[{i}].target: {rule.target!r} names generator {scope!r}"
                                f", which does not run{_suggest(scope, self.playing)} "
                                f"(running: {', '.join(self.playing)})")
            # Two rules on one target would fight (the later one always won, silently):
            # one rule per target keeps what drives each control in one place.
            target = (scope, *parse_target(rule.target))
            if target in driven:
                first = self.map[driven[target]]
                problems.append(f"map[{i}].target: {rule.target!r} is already driven by "
                                f"map[{driven[target]}] (source {first.source!r}); one rule "
                                "per target: remove one of them or give this one another "
                                "target")
            else:
                driven[target] = i

    def _check_surface(self, problems: list[str]) -> None:
        """The monitor page's input and the presets' source name (livegen/monitor.py)."""
        if PRESET_SOURCE in self.inputs:
            problems.append(f"inputs.{PRESET_SOURCE}: {PRESET_SOURCE!r} is the source of "
                            "recalled presets and switches; give this input another name")
        pages = [name for name, i in self.inputs.items() if i.type == "page"]
        if len(pages) > 1:
            problems.append(f"inputs.{pages[1]}: the monitor page has one set of sliders, "
                            f"already input {pages[0]!r}; keep one input of type 'page'")
        if pages and not self.monitor.enabled:
            problems.append(f"inputs.{pages[0]}: its sliders are on the monitor page, which "
                            "is off; set [monitor] enabled = true")

    def _check_key(self, i: int, rule: MapRule, problems: list[str]) -> None:
        input_cfg = self.inputs[rule.input_name]
        offered = input_cfg.offered_keys()
        if offered is None or rule.key in offered:
            return
        problems.append(f"map[{i}].source: input {rule.input_name!r} ({input_cfg.type}) "
                        f"yields no key {rule.key!r}{_suggest(rule.key, offered)} "
                        f"(it yields {_key_summary(offered)})")


def default_config_path() -> Path:
    """Where `livegen` looks when no --config is given."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in (Path("config.toml"), SYSTEM_CONFIG, SHIPPED_DATA / "config.toml"):
        if candidate.is_file():
            return candidate
    return Path("config.toml")


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError with every problem found."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = _read_utf8(path)
    except FileNotFoundError:
        raise ConfigError(str(path), ["no such file; pass --config PATH or copy the shipped "
                                      "config.toml there"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except ValueError as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    return loads(text, base_dir=path.resolve().parent, source=str(path))


def loads(text: str, *, base_dir: Path, source: str = "<config>") -> Config:
    """Validate TOML text; relative paths resolve against base_dir."""
    try:
        table = _parse_toml(text)
    except ValueError as exc:
        raise ConfigError(source, [str(exc)]) from None
    problems: list[str] = []
    builder = _Builder(base_dir, problems)
    config = builder.build(Config, table, "")
    if not problems:
        config = builder.with_default_generators(config)
    if not problems:
        config = dataclasses.replace(config, source=Path(source).resolve()
                                     if source != "<config>" else None)
    if problems:
        raise ConfigError(source, problems)
    return config


def _read_utf8(path: Path) -> str:
    """A text file's contents; ValueError (one line, with the fix) when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                         f"{exc.start}); save it as UTF-8 text") from None


def _parse_toml(text: str) -> dict[str, Any]:
    """TOML text as a table; ValueError (one line) when it cannot be read as TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ValueError("not usable TOML: arrays or tables nested hundreds of levels "
                         "deep; no setting takes that, so flatten them") from None


def _key_summary(keys: typing.Iterable[str]) -> str:
    """Keys for a message, numbered runs folded: `ch0..ch7, total`, `cc.0..cc.127, ...`."""
    parts: list[str] = []
    runs: dict[str, list[int]] = {}
    for key in keys:
        m = re.fullmatch(r"(.*?)(\d+)", key)
        if m is None:
            parts.append(key)
            continue
        if m.group(1) not in runs:
            runs[m.group(1)] = []
            parts.append(m.group(1))  # a placeholder, filled in below, keeps the order
        runs[m.group(1)].append(int(m.group(2)))
    return ", ".join(
        (f"{p}{min(runs[p])}..{p}{max(runs[p])}" if len(runs[p]) > 1 else f"{p}{runs[p][0]}")
        if p in runs else p for p in parts)


def check_runnable(config: Config) -> None:
    """What `livegen run` needs beyond a valid config, checked cheaply and before anything
    starts: the playing generator's model manifest exists, is JSON of the right kind, and
    names a model file of the size it promises (the sha256 and the graph are checked
    when the model loads); Ableton Link is installed when the clock asks for it. Raises
    ConfigError, one line per problem, each with a fix that fits where the config lives."""
    problems: list[str] = []
    for name in config.playing:
        settings = config.generator(name)
        if getattr(settings, "plugin", ""):
            continue  # a generator of your own: its model is its own business
        kind = getattr(settings, "type", "") or name
        problems += _manifest_problems(kind, settings, f"generators.{name}.model",
                                       config.source)
    if config.clock.source == "link":
        from livegen.link import missing_library

        problem = missing_library()
        if problem is not None:
            problems.append(problem)
    if problems:
        raise ConfigError(str(config.source or "<config>"), problems)


def _manifest_problems(kind: str, settings: Any, key_path: str,
                       source: Path | None) -> list[str]:
    manifest_path: Path = settings.model
    fix = _model_fix(kind, manifest_path, key_path, source)
    try:
        manifest = json.loads(_read_utf8(manifest_path))
    except FileNotFoundError:
        return [f"{key_path}: {manifest_path} does not exist; {fix}"]
    except OSError as exc:
        return [f"{key_path}: cannot read {manifest_path}: {exc.strerror}; {fix}"]
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return [f"{key_path}: {manifest_path} is not a model manifest ({exc}); {fix}"]
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        found = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        return [f"{key_path}: {manifest_path} is a manifest of kind {found!r}, not {kind!r}; "
                f"{fix}"]
    files = manifest.get("files")
    shipped = sorted(files) if isinstance(files, dict) else []
    variant = (manifest.get("default_variant") if settings.variant == "default"
               else settings.variant)
    # A variant is one file (`int8`), or one file per graph (`fp32-t32`, `fp32-t48`).
    entries = [entry for name, entry in (files.items() if isinstance(files, dict) else ())
               if name == variant or name.startswith(f"{variant}-")]
    if not entries or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                              for e in entries):
        if settings.variant != "default" and shipped:
            return [f"generators.{kind}.variant: {manifest_path} ships no {variant!r} model "
                    f"(it ships {', '.join(shipped)}); set variant to one of them"]
        return [f"{key_path}: {manifest_path} names no model file for variant {variant!r}; "
                f"{fix}"]
    for entry in entries:
        model = manifest_path.parent / entry["path"]
        if not model.is_file():
            return [f"{key_path}: {model}, the model file {manifest_path.name} names, does "
                    f"not exist; {fix}"]
        size = entry.get("bytes")
        if isinstance(size, int) and model.stat().st_size != size:
            return [f"{key_path}: {model} is {model.stat().st_size} bytes, its manifest says "
                    f"{size} (cut short or replaced?); {fix}"]
    return []


def _model_fix(kind: str, manifest: Path, key_path: str, source: Path | None) -> str:
    """How to get a model back, for where this config and its manifest live."""
    train = f"train and export one (`livegen train {kind}`, then `livegen export {kind}`)"
    if manifest.is_relative_to(CHECKOUT_ROOT) and (CHECKOUT_ROOT / ".git").exists():
        return f"restore it with `git checkout models/` in {CHECKOUT_ROOT}, or {train}"
    if source is not None and source.parent == SYSTEM_CONFIG.parent:
        return f"reinstall the shipped models with `sudo livegen install-service`, or {train}"
    for shipped in (SHIPPED_DATA / "models" / f"{kind}.json",
                    SHARED_DATA / "models" / f"{kind}.json"):
        if shipped.is_file() and shipped != manifest:
            return (f"point {key_path} at a manifest, e.g. \"{shipped}\" (the shipped one; "
                    "a relative path starts at the config's folder)")
    return f"{train} and point {key_path} at its manifest"


def dumps(config: Config) -> str:
    """The effective config as TOML: every default filled in, paths absolute, each key
    followed by its description. `loads(dumps(c))` gives c back."""
    lines: list[str] = []
    _emit_table(config, "", lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(obj: Any, header: str, lines: list[str], array: bool = False,
                comments: bool = True) -> None:
    own: list[str] = []
    later: list[tuple[str, Any, bool, bool]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("internal") or value is None:
            continue
        name = _join(header, f.name)
        if isinstance(value, Mapping):
            later += [(f"{name}.{toml_writer.key(key)}", item, False, True)
                      for key, item in value.items()]
        elif dataclasses.is_dataclass(value) and not array:
            later.append((name, value, False, True))
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            later += [(name, item, True, i == 0) for i, item in enumerate(value)]
        else:
            doc = f.metadata.get("doc") if comments else None
            own.append(f"{f.name} = {toml_writer.value(value)}" + (f"  # {doc}" if doc else ""))
    if header and (own or array):
        lines += ["", f"[[{header}]]" if array else f"[{header}]"]
    lines += own
    for name, value, is_array, first in later:
        _emit_table(value, name, lines, is_array, first)


# ---------------------------------------------------------------- the loader

def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "table"}.get(type(value), type(value).__name__)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{shown} ({kind})"


class _Invalid(Exception):
    pass


class _Builder:
    """Walks a dataclass schema over a TOML table, collecting problems."""

    def __init__(self, base_dir: Path, problems: list[str]) -> None:
        self.base_dir = base_dir
        self.problems = problems

    def build(self, cls: type, table: Any, path: str) -> Any:
        where = path or "the top level"
        if not isinstance(table, dict):
            self.problems.append(f"{where}: expected a table, got {_describe(table)}")
            raise _Invalid
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for key in table:
            if key not in fields:
                self.problems.append(f"{_join(path, key)}: unknown key{_suggest(key, fields)} "
                                     f"({where} takes {', '.join(fields)})")
        before = len(self.problems)
        values: dict[str, Any] = {}
        for name, f in fields.items():
            key_path = _join(path, name)
            if name in table:
                with contextlib.suppress(_Invalid):
                    values[name] = self.value(hints[name], table[name], key_path, f.metadata)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.problems.append(f"{key_path}: missing; {f.metadata.get('doc', '')}")
            else:
                with contextlib.suppress(_Invalid):
                    values.update(self.default(name, hints[name], f, key_path))
        try:
            obj = cls(**values)
        except TypeError:
            raise _Invalid from None
        check = getattr(obj, "check", None)
        if check is not None and len(self.problems) == before:
            check(path, self.problems)
        return obj

    def default(self, name: str, hint: Any, f: dataclasses.Field, path: str) -> dict[str, Any]:
        """An absent key's default, walked like a written one where that matters: a
        default section is built so its own paths resolve too, and a default path
        resolves against the config's folder (never against the working directory)."""
        if dataclasses.is_dataclass(hint):
            return {name: self.build(hint, {}, path)}
        if isinstance(f.default, Path):
            return {name: self.scalar(Path, str(f.default), path, f.metadata)}
        return {}

    def value(self, hint: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if raw == "" and Path in inner:
                return None
            return self.value(inner[0], raw, path, meta)
        if origin is Literal:
            if raw in args:
                return raw
            choices = [str(a) for a in args]
            hint_text = _suggest(str(raw), choices) if isinstance(raw, str) else ""
            self.problems.append(f"{path}: {_describe(raw)} is not one of "
                                 f"{', '.join(map(repr, args))}{hint_text}")
            raise _Invalid
        if origin is tuple:
            return self.sequence(args, raw, path, meta)
        if origin in (Mapping, dict) and args[1] is InputConfig:
            return self.inputs(raw, path)
        if origin in (Mapping, dict) and args[1] is GeneratorConfig:
            return self.generators(raw, path)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, raw, path)
        return self.scalar(hint, raw, path, meta)

    def sequence(self, args: tuple, raw: Any, path: str, meta: Mapping[str, Any]) -> tuple:
        if not isinstance(raw, list):
            self.problems.append(f"{path}: expected an array, got {_describe(raw)}")
            raise _Invalid
        if len(args) == 2 and args[1] is Ellipsis:
            kinds = [args[0]] * len(raw)
        else:
            kinds = list(args)
            if len(raw) != len(kinds):
                self.problems.append(f"{path}: expected {len(kinds)} values, e.g. "
                                     f"[0.0, 1.0], got {_describe(raw)}")
                raise _Invalid
        items, bad = [], False
        for i, (kind, item) in enumerate(zip(kinds, raw, strict=True)):
            try:
                items.append(self.value(kind, item, f"{path}[{i}]", meta))
            except _Invalid:
                bad = True
        if bad:
            raise _Invalid
        return tuple(items)

    def inputs(self, raw: Any, path: str) -> dict[str, InputConfig]:
        from livegen.inputs import FAMILIES, config_class

        if not isinstance(raw, dict):
            self.problems.append(f"{path}: expected tables like [inputs.NAME], "
                                 f"got {_describe(raw)}")
            raise _Invalid
        result = {}
        for name, table in raw.items():
            item_path = f"{path}.{name}"
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
                self.problems.append(f"{item_path}: input names take letters, digits, '_' "
                                     "and '-' (they prefix map sources, e.g. cam.hand.y)")
                continue
            if isinstance(table, dict) and table.get("profile"):
                try:
                    table = self.with_profile(table, item_path)
                except _Invalid:
                    continue
            kind = table.get("type") if isinstance(table, dict) else None
            if kind not in FAMILIES:
                what = (f"unknown input type {kind!r}{_suggest(kind, FAMILIES)}"
                        if isinstance(kind, str) else
                        "missing" if kind is None else f"expected a string, got {_describe(kind)}")
                self.problems.append(f"{item_path}.type: {what} "
                                     f"(input types: {', '.join(FAMILIES)})")
                continue
            with contextlib.suppress(_Invalid):
                result[name] = self.build(config_class(kind), table, item_path)
        return result

    def with_default_generators(self, config: Config) -> Config:
        """A section built from defaults (its paths resolved like written ones) for each
        registered generator that runs without a section of its own."""
        from livegen.generators import REGISTRY

        missing = {name: {} for name in config.playing
                   if name not in config.generators and name in REGISTRY}
        if not missing:
            return config
        built = self.generators(missing, "generators")
        return dataclasses.replace(config, generators={**config.generators, **built})

    def generators(self, raw: Any, path: str) -> dict[str, GeneratorConfig]:
        from livegen.generators import REGISTRY, generator_type

        if not isinstance(raw, dict):
            self.problems.append(f"{path}: expected tables like [generators.NAME], "
                                 f"got {_describe(raw)}")
            raise _Invalid
        result = {}
        for name, table in raw.items():
            item_path = f"{path}.{name}"
            if not isinstance(table, dict):
                self.problems.append(f"{item_path}: expected a table, got {_describe(table)}")
                continue
            type_name, plugin = table.get("type") or name, table.get("plugin") or ""
            if not (isinstance(type_name, str) and isinstance(plugin, str)):
                self.problems.append(f"{item_path}: type and plugin are strings")
                continue
            try:
                kind = generator_type(type_name, plugin)
            except KeyError:
                key = f"{item_path}.type" if "type" in table else item_path
                self.problems.append(f"{key}: unknown generator {type_name!r}"
                                     f"{_suggest(type_name, REGISTRY)} (generators: "
                                     f"{', '.join(REGISTRY)}; or a plugin = "
                                     "'package.module:Class' of your own)")
                continue
            except (ImportError, AttributeError, ValueError) as exc:
                self.problems.append(f"{item_path}.plugin: cannot load {plugin!r} ({exc}); "
                                     "name a class with Config, kind and from_config, "
                                     "importable from PYTHONPATH")
                continue
            with contextlib.suppress(_Invalid):
                result[name] = self.build(kind.config_class, table, item_path)
        return result

    def with_profile(self, table: dict[str, Any], path: str) -> dict[str, Any]:
        """The input's table over its profile's [input] table: the config's keys win."""
        where = f"{path}.profile"
        profile_path = self.scalar(Path, table["profile"], where, {})
        try:
            profile = _parse_toml(_read_utf8(profile_path))
        except OSError as exc:
            self.problems.append(f"{where}: cannot read {profile_path}: {exc.strerror}; "
                                 "profiles ship in devices/ (relative to the config's folder)")
            raise _Invalid from None
        except ValueError as exc:
            self.problems.append(f"{where}: {profile_path} is {exc}")
            raise _Invalid from None
        defaults = profile.get("input")
        if not isinstance(defaults, dict):
            self.problems.append(f"{where}: {profile_path} has no [input] table")
            raise _Invalid
        return {**defaults, **table}

    def scalar(self, hint: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            self.fail(path, raw, "true or false")
        if hint is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return self.bounded(raw, path, meta)
            self.fail(path, raw, "a whole number")
        if hint is float:
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                if not math.isfinite(raw):
                    self.fail(path, raw, "a finite number")
                return self.bounded(float(raw), path, meta)
            self.fail(path, raw, "a number")
        if hint is str:
            if isinstance(raw, str):
                return raw
            self.fail(path, raw, "a string (in quotes)")
        if hint is Path:
            if isinstance(raw, str) and raw:
                p = Path(raw).expanduser()
                # normpath, not resolve: a models/ link beside the config stays a link.
                return p if p.is_absolute() else Path(os.path.normpath(self.base_dir / p))
            self.fail(path, raw, "a file path (a string; relative to the config's folder)")
        raise TypeError(f"config schema: unsupported type {hint!r} at {path}")

    def bounded(self, value: float, path: str, meta: Mapping[str, Any]) -> float:
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                expected = f"between {lo} and {hi}"
            elif lo is not None:
                expected = f"at least {lo}"
            else:
                expected = f"at most {hi}"
            self.problems.append(f"{path}: {value} is out of range; expected {expected}")
            raise _Invalid
        return value

    def fail(self, path: str, raw: Any, expected: str) -> typing.NoReturn:
        self.problems.append(f"{path}: expected {expected}, got {_describe(raw)}")
        raise _Invalid


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


