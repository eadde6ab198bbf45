"""The daemon: inputs -> control -> generators -> timeline -> output, on one asyncio loop.

Threads (DESIGN.md): the event loop runs the inputs, the mapper, reloads, stats and
sd_notify; each generator plans in an inference thread of its own (StepPlayer); the
output thread sends. Signals: SIGINT/SIGTERM stop (every sounding note ended, the
recorder closed, exit 0); SIGHUP reloads the config without closing the output port.

Exact replays. When every input is a replay (`run --replay TRACE`, or a config of replay
inputs only), the same trace, seed and config give the same music, and `livegen render`
(render.py) plays it on a virtual clock through the same code. Everything that shapes the
music is then taken from the trace's times, never from when a thread woke: readings carry
origin + their recorded offset, the One Euro filters integrate over those times, an input
goes stale exactly `stale_after` after its last reading (not at the next housekeeping
tick), and each control change is placed in the music at its reading's time + commit
(StepPlayer). What is left to the clock is whether the inference thread sees a change in
time to place it there, and keeps its plan ahead. So the replay hands each reading over
REPLAY_LEAD_S before it is due, stamped with its true time: a change then survives a
thread that wakes up to about that late, which on a loaded machine it may; being longer
than the lookahead, it reaches the plan before the plan reaches its cut, so a replay needs
no rollback and its plan stays a whole lookahead ahead. Its players keep time (a plan that
ran dry catches up rather than moving the music), and its music starts a second after
ready. (A replay's changes are answered before they are due: for the live path, measure
live input, as `bench engine` does over OSC.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livegen import config as config_module
from livegen import inputs as inputs_module
from livegen import presets
from livegen.clock import CLOCK_START, CLOCK_STOP, CLOCK_TICK, PPQN, Clock, Grid
from livegen.config import (
    PRESET_SOURCE,
    Config,
    ConfigError,
    MidiInputConfig,
    ReplayInputConfig,
)
from livegen.control import Controls, Mapper
from livegen.errors import LivegenError
from livegen.generators import type_of
from livegen.generators.players import Player, SegmentPlayer
from livegen.generators.step import StepPlayer
from livegen.inputs.base import Input, Reading, supervise
from livegen.inputs.replay import Replay, ReplayInput, TraceWriter, read_trace
from livegen.link import LinkFollower
from livegen.output import Output
from livegen.panic import panic_messages
from livegen.service import Notifier
from livegen.stats import ProcessMeter
from livegen.timeline import Timeline

log = logging.getLogger(__name__)

TICK_S = 0.05          # the loop's housekeeping period: staleness, watchdog, duration
START_LEAD_S = 0.15    # the music starts this long after the engine is ready
# A replay has no performer waiting: its music starts a second after the engine is ready,
# time enough for the inference thread to plan its first lookahead on a loaded machine. (A
# plan that runs dry is re-anchored on the clock, and the replay's music then differs: with
# two CPU hogs beside other work on 2 cores, 0.15 s of start-up fell short in 9 of 12 runs.)
REPLAY_START_LEAD_S = 1.0
CLOCK_TAG = "clock"    # timeline tag of outgoing MIDI clock
# A morph's step reaches the mapper this long before its bar line (see morph_to_preset).
MORPH_AHEAD_S = 0.02
# Link moved the clock: outgoing pulses due sooner than this are left to the output.
LINK_PULSE_LEAD_S = 0.002
PANIC_TAG = "panic"    # timeline tag of the control surface's all-notes-off
# A run with --duration plays nothing due after its end. It stops once every player has
# planned up to the end and the output has sent all that is due before it (at least this
# long after the end), or at the latest END_WAIT_S after the end (a player that died).
STOP_GRACE_S = 0.1
END_WAIT_S = 5.0
# A replayed reading is handed over this long before it is due (module docstring).
REPLAY_LEAD_S = 1.0
# An input is stale once silent for more than its stale_after; in a replay it is declared
# stale this long after that moment (the Mapper asks for "more than").
STALE_MARGIN_S = 1e-6
# The watchdog: a player replaced this many times within this window withholds
# WATCHDOG=1, so systemd restarts the service.
REPLACED_LIMIT = 3
REPLACED_WINDOW_S = 60.0


@dataclass
class RunOptions:
    """How one run differs from what the config says (command-line flags, the demo)."""

    record_trace: Path | None = None   # write every Reading to this JSONL trace
    replay: Path | None = None         # replace every input by a replay of this trace
    record_midi: Path | None = None    # also record the output to this .mid file
    stats_every: float = 0.0           # log figures every N seconds (0: never)
    stats_json: Path | None = None     # write the figures as JSON at exit
    duration: float | None = None      # stop by itself after N seconds
    seed: int | None = None            # overrides engine.seed
    on_reading: list[Callable[[Reading], None]] = field(default_factory=list)
    on_controls: list[Callable[[Controls], None]] = field(default_factory=list)
    on_tick: list[Callable[[float], None]] = field(default_factory=list)


class Engine:
    """One run of the daemon. `await engine.run()` returns the exit status."""

    def __init__(self, cfg: Config, options: RunOptions | None = None) -> None:
        self.cfg = cfg
        self.options = options or RunOptions()
        self.seed = self._choose_seed()
        self.timeline = Timeline()
        if cfg.monitor.enabled:  # the page's roll reads what the output takes from the plan
            from livegen.monitor import TappedTimeline

            self.timeline = TappedTimeline()
        self.notifier = Notifier()
        self.meter = ProcessMeter()
        self.mapper = Mapper(cfg)
        self.clock = Clock(cfg.clock.bpm, cfg.clock.beats_per_bar)  # anchored at the start
        self.clock_follower: asyncio.Task[None] | None = None
        self.link: LinkFollower | None = None  # clock.source = "link": the session's peer
        self.clock_sent_until: float | None = None  # MIDI clock pulses are planned to here
        self.output: Output | None = None
        self.players: dict[str, Player] = {}
        self.active = cfg.engine.generator  # switch mode: the generator that sounds
        self.replaced: list[float] = []  # when stuck players were replaced (the watchdog)
        self.inputs: dict[str, tuple[Input, asyncio.Task[None]]] = {}
        self.replay: Replay | None = None  # every input a replay: played as one, exactly
        self.trace: TraceWriter | None = None
        self.last_readings: dict[str, Reading] = {}
        self.origin = 0.0               # the generators' time zero (monotonic)
        self.output_started = 0.0       # set just before the output thread starts
        self.started = time.monotonic()
        self.ready_s: float | None = None
        self._stop = asyncio.Event()
        self._reloads = 0
        self._reload_failures = 0
        # The control surface: OSC commands, MIDI program changes, the monitor page.
        self.paused = False
        self.preset: int | None = None  # the preset last stored or recalled
        self.state_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.monitor: Any = None  # livegen.monitor.Monitor while the page is served

    def _choose_seed(self) -> int:
        if self.options.seed is not None:
            return self.options.seed
        if self.cfg.engine.seed is not None:
            return self.cfg.engine.seed
        return int.from_bytes(os.urandom(4), "little")

    # ------------------------------------------------------------ the run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        previous_switch = sys.getswitchinterval()
        sys.setswitchinterval(self.cfg.engine.switch_interval_ms / 1000.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            self._start()
            await self._start_monitor()
            self.ready_s = time.monotonic() - self.started
            self.notifier.notify("READY=1", f"STATUS=playing ({self.describe_output()})")
            log.info("ready in %.2f s: %s; seed %d", self.ready_s, self.describe_output(),
                     self.seed)
            await self._housekeeping()
        finally:
            self.notifier.notify("STOPPING=1")
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            sys.setswitchinterval(previous_switch)
        return 0

    def stop(self, why: str = "stop") -> None:
        log.info("%s: stopping; every sounding note is ended", why)
        self._stop.set()

    def describe_output(self) -> str:
        names = self.output.sink_names if self.output else []
        return ", ".join(names) or "no output"

    def _start(self) -> None:
        cfg = self.cfg
        if cfg.clock.source == "link":  # the session is looked for while the models load
            self.link = LinkFollower(self.clock, self._link_moved,
                                     start_stop_sync=cfg.clock.start_stop_sync)
            self.link.join()
        # Models first: a bad model is an error before any port opens or note sounds.
        generators = self.load_generators()
        self.output = Output.open(cfg.output, self.timeline, record=self.options.record_midi)
        if self.link is not None:  # beat 0 on the session's next bar line
            self.origin = self.link.begin(time.monotonic() + self.start_lead_s)
        else:
            self.origin = time.monotonic() + self.start_lead_s
            self.clock.anchor(self.origin)
        self.make_players(generators, release=self.output.release)
        self.output_started = time.monotonic()
        self.output.start()
        end = self.origin + self.options.duration if self.options.duration else None
        self.start_players(self.origin, end)
        if cfg.clock.source == "midi":
            self._follow_clock()
        if self.link is not None:
            self.link.follow()
        if cfg.clock.send:
            self.timeline.add(self.origin, (CLOCK_START,), CLOCK_TAG)
            self.clock_sent_until = self.origin
        if self.options.record_trace is not None:
            self.trace = TraceWriter(self.options.record_trace, self.origin, cfg.inputs)
        sources = {name: self._make_input(name, input_cfg)
                   for name, input_cfg in self._input_configs().items()}
        replays = {name: s for name, s in sources.items() if isinstance(s, ReplayInput)}
        if replays and len(replays) == len(sources):
            self._start_replay(replays)
        else:
            for name, source in sources.items():
                self._supervise(name, source)

    def load_generators(self) -> dict[str, Any]:
        """The generators of this run, their models loaded and checked."""
        return {name: build_generator(self.cfg, name, self.seed) for name in self.cfg.playing}

    def make_players(self, generators: dict[str, Any], release: Callable[[str], None],
                     clock: Callable[[], float] = time.monotonic) -> list[Player]:
        """A player for each generator (a StepPlayer or a SegmentPlayer, by its kind),
        under the mapper's present controls."""
        for name, generator in generators.items():
            self.players[name] = self.make_player(name, generator, release, clock)
        return list(self.players.values())

    def make_player(self, name: str, generator: Any, release: Callable[[str], None],
                    clock: Callable[[], float] = time.monotonic) -> Player:
        cfg = self.cfg
        settings = cfg.generator(name)
        channel = settings.channel or cfg.output.channel
        controls = self.mapper.controls.for_generator(name)
        grid = self._grid
        if _kind(cfg, name) == "segment":
            return SegmentPlayer(generator, self.timeline, channel=channel, grid=grid,
                                 controls=controls, release=release, tag=name, clock=clock,
                                 watchdog_s=cfg.engine.watchdog_s)
        return StepPlayer(
            generator, self.timeline, channel=channel,
            lookahead_s=cfg.engine.lookahead_ms / 1e3,
            commit_s=cfg.engine.commit_ms / 1e3,
            latency_budget_s=cfg.engine.latency_budget_ms / 1e3,
            rollback_threshold=cfg.engine.rollback_threshold,
            controls=controls, release=release, clock=clock, grid=grid,
            quantize=getattr(settings, "quantize", "off"), tag=name,
            watchdog_s=cfg.engine.watchdog_s, keep_time=self.replays_only)

    def _grid(self) -> Any:
        return self.clock.grid  # one attribute read: the newest published Grid

    def start_players(self, origin: float, end: float | None = None) -> None:
        """Start every player from `origin`: in switch mode all but the active one held
        from the start (they take over at a bar line when chosen)."""
        for name, player in self.players.items():
            if self.cfg.engine.mode == "switch" and name != self.active:
                player.hold(self.clock.grid.beat_at(origin))
            player.start(origin, end)

    def _follow_clock(self) -> None:
        """Listen to clock.follow_port (supervised like any input) and hand its clock and
        transport messages to the Clock on the loop; its other messages are ignored."""
        from livegen.inputs.midi_in import MidiInput

        loop = asyncio.get_running_loop()
        port = MidiInputConfig(type="midi", port=self.cfg.clock.follow_port,
                               api=self.cfg.output.api)
        follower = MidiInput(CLOCK_TAG, port, on_clock=lambda status, t: (
            loop.call_soon_threadsafe(self._on_midi_clock, status, t)))
        self.clock_follower = loop.create_task(supervise(follower, lambda reading: None),
                                               name="clock-follower")
        log.info("clock: following MIDI clock from the port matching %r",
                 self.cfg.clock.follow_port)

    def _make_input(self, name: str, input_cfg: Any) -> Input:
        if self.options.replay is not None:
            source: Input = ReplayInput(name, ReplayInputConfig(
                type="replay", stale_after=input_cfg.stale_after, path=self.options.replay))
        else:
            source = inputs_module.create(name, input_cfg)
        if isinstance(source, ReplayInput):
            source.origin = self.origin
        elif hasattr(source, "attach"):  # a control surface (OSC, MIDI, the page)
            source.attach(self)
        return source

    def _start_input(self, name: str, input_cfg: Any) -> None:
        self._supervise(name, self._make_input(name, input_cfg))

    def _supervise(self, name: str, source: Input) -> None:
        task = asyncio.get_running_loop().create_task(supervise(source, self._on_reading),
                                                      name=f"input-{name}")
        self.inputs[name] = (source, task)

    # ------------------------------------------------------------ exact replays

    def open_replay(self) -> Replay:
        """Every configured input as a replay (of --replay's trace, or its own), played as
        one `Replay` from this run's origin."""
        sources = [self._make_input(name, input_cfg)
                   for name, input_cfg in self._input_configs().items()]
        replays = [s for s in sources if isinstance(s, ReplayInput)]
        if not sources:
            raise LivegenError(f"{self.cfg.source}: no [inputs]: a replay plays the trace's "
                               "readings of each configured input (by its name)")
        if len(replays) < len(sources):
            raise LivegenError("a replay needs every input to be a replay: give --replay "
                               "TRACE, or inputs of type = \"replay\" in the config")
        self.replay = Replay(replays, self.origin)
        return self.replay

    def _start_replay(self, sources: dict[str, ReplayInput]) -> None:
        self.replay = Replay(list(sources.values()), self.origin)
        task = asyncio.get_running_loop().create_task(self._play_replay(self.replay),
                                                      name="replay")
        for name, source in sources.items():
            self.inputs[name] = (source, task)

    @property
    def replays_only(self) -> bool:
        """Every input is a replay: the run plays the trace exactly (module docstring)."""
        inputs = self.cfg.inputs.values()
        return bool(inputs) and (self.options.replay is not None or all(
            isinstance(input_cfg, ReplayInputConfig) for input_cfg in inputs))

    @property
    def start_lead_s(self) -> float:
        """How long after the engine is ready its music starts."""
        return REPLAY_START_LEAD_S if self.replays_only else START_LEAD_S

    def replay_handovers(self, replay: Replay) -> Iterator[float]:
        """Hand the replay over to the mapper and the players in trace order: each reading,
        and each moment an input falls stale in between, exactly then.

        A generator: it yields the clock time at which the next hand-over is due
        (REPLAY_LEAD_S before its trace time); the caller waits until then, asleep in
        `run` or on a virtual clock in `render`, and asks for the next, which makes the
        generator hand that one over first. Ends when the trace is over and no input is
        left to fall stale.
        """
        while True:
            reading = replay.peek()
            stale = self._stale_deadline()
            if stale is not None and (reading is None or stale < reading.t):
                yield stale - REPLAY_LEAD_S
                controls = self.mapper.tick(stale + STALE_MARGIN_S)
                if controls is not None:
                    self._apply(controls)
            elif reading is not None:
                yield reading.t - REPLAY_LEAD_S
                self._on_reading(replay.pop())
            else:
                return

    def _stale_deadline(self) -> float | None:
        """The trace time at which the next input falls stale, if any will."""
        stale_after = self.mapper.stale_after
        deadlines = [seen + stale_after[name] for name, seen in self.mapper.last_seen.items()
                     if name in stale_after]
        return min(deadlines, default=None)

    async def _play_replay(self, replay: Replay) -> None:
        try:
            for due in self.replay_handovers(replay):
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        except Exception:  # a bug here must not end the show: the controls hold
            log.exception("replay: failed; the controls hold where they are")

    def _on_reading(self, reading: Reading) -> None:
        self.last_readings[reading.source] = reading
        if self.trace is not None:
            self.trace.write(reading)
        for hook in self.options.on_reading:
            hook(reading)
        controls = self.mapper.update(reading)
        if controls is not None:
            self._apply(controls)

    def _on_midi_clock(self, status: int, t: float) -> None:
        self.clock.on_midi(status, t)
        self._clock_changed()

    def _clock_changed(self) -> None:
        for player in self.players.values():
            player.clock_changed()

    def _link_moved(self, old: Grid) -> None:
        """The Link session moved the Clock (tempo, phase, stop, start): the players re-time
        their plans, and the MIDI clock pulses not yet due are planned again on the new
        Grid, from the first one not yet sent (counted in pulses: none lost or doubled)."""
        self._clock_changed()
        if self.clock_sent_until is None:
            return
        now = time.monotonic()
        grid, limit = self.clock.grid, now + LINK_PULSE_LEAD_S
        self.timeline.drop_after(limit, CLOCK_TAG)
        if grid.started != old.started:
            self.timeline.add(grid.t0, (CLOCK_START,), CLOCK_TAG)
            self.clock_sent_until = grid.t0
        elif not grid.running:
            if old.running:
                self.timeline.add(limit, (CLOCK_STOP,), CLOCK_TAG)
        elif old.running:
            planned_to = min(self.clock_sent_until, limit)
            next_pulse = math.ceil(old.beat_at(planned_to) * PPQN - 1e-9)
            if self.clock_sent_until > limit:  # those after `limit` were just dropped
                next_pulse = math.floor(old.beat_at(limit) * PPQN + 1e-9) + 1
            # Half a pulse before it: pulses_between starts at the next whole pulse.
            self.clock_sent_until = grid.time_at((next_pulse - 0.5) / PPQN)
        self._send_clock(now)

    def _tempo_rule_drives(self) -> bool:
        """Whether a `tempo` rule drives the tempo now (not stale, not unmapped)."""
        return any(rule.target == "tempo" and rule.output is not None
                   for rule in self.mapper.rules)

    def _apply(self, controls: Controls) -> None:
        if self.link is not None:
            # The session's tempo is everyone's: only a rule that moves changes it, never
            # the config's bpm or a stale rule's neutral.
            if self._tempo_rule_drives():
                self.link.request_tempo(controls.tempo)
        elif controls.tempo != self.clock.bpm and not self.clock.following:
            self.clock.set_tempo(controls.tempo, max(controls.t, self.clock_sent_until or 0))
            self._clock_changed()
        if self.cfg.engine.mode == "switch" and controls.generator != self.active:
            self._switch_to(controls.generator, controls.t)
        for name, player in self.players.items():
            player.set_controls(controls.for_generator(name))
        for hook in self.options.on_controls:
            hook(controls)

    def _switch_to(self, name: str, t: float) -> None:
        """Switch mode: `name` takes over at the next bar line after `t` + commit; the
        outgoing generator plays nothing from there and its notes are ended there."""
        incoming = self.players.get(name)
        outgoing = self.players.get(self.active)
        if incoming is None:
            return
        if self.paused:  # resume() plays the generator chosen meanwhile
            self.active = name
            self._state_changed()
            return
        grid = self.clock.grid
        commit = self.cfg.engine.commit_ms / 1e3
        bar = math.ceil(grid.beat_at(max(t, time.monotonic()) + commit)
                        / grid.beats_per_bar - 1e-9) * grid.beats_per_bar
        log.info("switch: %s takes over from %s at beat %g", name, self.active, bar)
        if outgoing is not None and self.output is not None:
            outgoing.hold(bar)
            self.output.release_at(self.active, grid.time_at(bar))
        incoming.play_from(bar)
        self.active = name
        self._state_changed()

    # ------------------------------------------------------------ the control surface
    # OSC commands, MIDI program changes and the monitor page call these on the loop. An
    # action that cannot be done raises LivegenError, one line with the fix, for the
    # surface to answer with.

    def panic(self) -> None:
        """End every note now: each player's (and MIDI thru's) pending notes dropped and
        its sounding notes ended, then sustain off and all-notes-off. The players plan on,
        so the music comes back within the lookahead."""
        if self.output is None:
            return
        thru = [getattr(source, "thru_tag", "") for source, _task in self.inputs.values()]
        for tag in [*self.players, *filter(None, thru)]:
            self.output.release(tag)
        now = time.monotonic()
        messages = panic_messages(self.cfg.output.panic_channels)
        self.timeline.add_many([(now, message) for message in messages], PANIC_TAG)
        log.warning("panic: every sounding note ended")
        self._state_changed()

    def pause(self) -> None:
        """Hold every player at the next beat, where its notes end; resume() plays on."""
        if self.paused:
            return
        self.paused = True
        beat = self._next_beat()
        due = self.clock.grid.time_at(beat)
        for name, player in self.players.items():
            player.hold(beat)
            if self.output is not None:
                self.output.release_at(name, due)
        log.info("pause: the music stops at beat %g", beat)
        self._state_changed()

    def resume(self) -> None:
        """Play on from the next beat: in switch mode the active generator, in layer mode
        all, each where it was held."""
        if not self.paused:
            return
        self.paused = False
        beat = self._next_beat()
        for name, player in self.players.items():
            if self.cfg.engine.mode == "layer" or name == self.active:
                player.play_from(beat)
        log.info("resume: the music plays on at beat %g", beat)
        self._state_changed()

    def _next_beat(self) -> float:
        grid = self.clock.grid
        t = time.monotonic() + self.cfg.engine.commit_ms / 1e3
        return float(math.ceil(grid.beat_at(t) - 1e-9))

    def switch(self, name: str, t: float | None = None) -> None:
        """Switch mode: `name` takes over at the next bar line. It goes the generator
        target's way (a reading of the preset source), so the controls agree and a rule on
        that target, moved later, takes over again."""
        if self.cfg.engine.mode != "switch":
            raise LivegenError("switch: engine.mode is 'layer', where every generator "
                               "sounds; set [engine] mode = 'switch' to choose one")
        if name not in self.cfg.playing:
            raise LivegenError(f"switch: no generator {name!r} runs (running: "
                               f"{', '.join(self.cfg.playing)})")
        self._on_reading(Reading(PRESET_SOURCE, time.monotonic() if t is None else t,
                                 {"generator": float(self.cfg.playing.index(name))}))

    def store_preset(self, number: int, name: str = "") -> None:
        """Write the controls as they are now as preset `number` (engine.presets)."""
        presets.store(self.cfg.engine.presets, number, self.mapper.controls, name)
        self.preset = number
        self._state_changed()

    def recall_preset(self, number: int, t: float | None = None) -> None:
        """Apply preset `number`: its values reach the mapper as one reading of the preset
        source (recorded in a trace like any reading), each held until its target's own
        rule moves."""
        title, values = presets.recall(self.cfg.engine.presets, number, self.cfg.playing)
        log.info("preset %d (%s) recalled", number, title)
        self.preset, active = number, self.active
        if values:
            self._on_reading(Reading(PRESET_SOURCE, time.monotonic() if t is None else t,
                                     values))
        if self.active == active:  # a switch has told the listeners already
            self._state_changed()

    def morph_to_preset(self, number: int, bars: int, t: float | None = None) -> None:
        """Move the controls from where they are to preset `number` over `bars` bars, one
        step a bar line (themes: the DCRNN's code morphs from one stored gesture's rhythm
        to another's). Each step is a reading of the preset source, handed over just
        before the bar line whose next bar is not yet planned, so the segment after it
        plays it; recorded and replayed like any reading. 0 bars recalls at once."""
        if bars <= 0:
            self.recall_preset(number, t)
            return
        title, goal = presets.recall(self.cfg.engine.presets, number, self.cfg.playing)
        start = presets.values_now(self.mapper.controls, goal, self.cfg.playing)
        grid = self.clock.grid
        now = time.monotonic() if t is None else t
        first = math.ceil(grid.beat_at(now) / grid.beats_per_bar - 1e-9)
        loop = asyncio.get_running_loop()
        log.info("preset %d (%s): morphing to it over %d bars", number, title, bars)
        for k in range(1, bars + 1):
            step = {}
            for key, value in goal.items():
                if key in ("generator", "key"):  # no halfway: they change with the last step
                    if k == bars:
                        step[key] = value
                    continue
                begin = start.get(key, value)
                step[key] = begin + (value - begin) * k / bars
            due = grid.time_at((first + k - 1) * grid.beats_per_bar) - MORPH_AHEAD_S
            loop.call_later(max(0.0, due - time.monotonic()), self._morph_step, due, step,
                            number if k == bars else None)

    def _morph_step(self, t: float, values: dict[str, float], number: int | None) -> None:
        self._on_reading(Reading(PRESET_SOURCE, t, values))
        if number is not None:
            self.preset = number
            self._state_changed()

    def surface_state(self) -> dict[str, Any]:
        """What a controller shows: the generator that sounds, paused, the last preset."""
        return {"generator": self.active, "paused": self.paused, "preset": self.preset,
                "generators": list(self.cfg.playing)}

    def _state_changed(self) -> None:
        state = self.surface_state()
        for listener in list(self.state_listeners):
            try:
                listener(state)
            except Exception:  # a controller's reply must never stop the music
                log.exception("control surface: telling a listener the state failed")

    def _input_configs(self) -> dict[str, Any]:
        """The configured inputs; with --replay also the trace's recalls and switches
        (source `preset`), replayed like an input's readings."""
        configs = dict(self.cfg.inputs)
        replay = self.options.replay
        if replay is not None and any(source == PRESET_SOURCE
                                      for _, source, _ in read_trace(replay)):
            configs[PRESET_SOURCE] = ReplayInputConfig(type="replay", path=replay)
        return configs

    async def _start_monitor(self) -> None:
        if not self.cfg.monitor.enabled:
            return
        from livegen.monitor import Monitor

        self.monitor = Monitor(self)
        await self.monitor.start()

    async def _housekeeping(self) -> None:
        watchdog = self.notifier.watchdog_interval()
        next_watchdog = 0.0
        next_stats = time.monotonic() + self.options.stats_every
        end = self.origin + self.options.duration if self.options.duration else None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK_S)
            now = time.monotonic()
            if self.replay is None:  # a replay declares staleness in trace time itself
                controls = self.mapper.tick(now)
                if controls is not None:
                    self._apply(controls)
            if self.clock_sent_until is not None:
                self._send_clock(now)
            for hook in self.options.on_tick:
                hook(now)
            self._watch_players(now)
            if watchdog is not None and now >= next_watchdog and self.healthy():
                self.notifier.notify("WATCHDOG=1")
                next_watchdog = now + watchdog
            if self.options.stats_every and now >= next_stats:
                log.info("stats: %s", format_stats(self.figures()))
                next_stats = now + self.options.stats_every
            if end is not None and now >= end + STOP_GRACE_S and (
                    self._played_to(end) or now >= end + END_WAIT_S):
                self.stop(f"{self.options.duration:g} s played")

    def _played_to(self, end: float) -> bool:
        """Every player has planned up to `end`, and the output has taken all that is due
        before it. (On a loaded machine the last notes before the end may be planned or
        sent late; a replay's last notes are the same as a render's only if it waits.)"""
        head = self.timeline.next_due()
        return ((head is None or head >= end)
                and all(getattr(player, "finished", True) for player in self.players.values()))

    def _send_clock(self, now: float) -> None:
        """Plan MIDI clock pulses (24 per beat) as far ahead as the music is planned."""
        until = now + self.cfg.engine.lookahead_ms / 1e3
        if until <= self.clock_sent_until:  # the music starts later than that (a replay)
            return
        pulses = self.clock.pulses_between(self.clock_sent_until, until)
        self.timeline.add_many([(t, (CLOCK_TICK,)) for t in pulses], CLOCK_TAG)
        self.clock_sent_until = until

    def healthy(self) -> bool:
        """The loop is turning (we are in it), the output thread and the players live, and
        no player has had to be replaced REPLACED_LIMIT times within REPLACED_WINDOW_S:
        then systemd's watchdog, no longer fed, restarts the service."""
        now = time.monotonic()
        recent = [t for t in self.replaced if now - t < REPLACED_WINDOW_S]
        return (self.output is not None and self.output.alive
                and all(p.running for p in self.players.values())
                and len(recent) < REPLACED_LIMIT)

    def _watch_players(self, now: float) -> None:
        """Abandon a player whose thread has not turned for longer than its own work
        allows (stuck in ONNX Runtime, say): its notes are ended and a fresh player, with
        a freshly loaded generator, takes over from the next bar line."""
        for name, player in list(self.players.items()):
            if not player.stuck(now):
                continue
            self.replaced.append(now)
            log.error("%s: its thread has not turned for %.1f s; replacing it (its notes "
                      "are ended)", name, now - player.alive_at)
            player.stop(timeout=0.0)
            self.timeline.drop_tag(name)
            if self.output is not None:
                self.output.release(name)
            try:
                generator = build_generator(self.cfg, name, self.seed)
            except Exception:
                log.exception("%s: cannot be loaded again; it stays silent", name)
                del self.players[name]
                continue
            fresh = self.make_player(name, generator, self.output.release
                                     if self.output else (lambda tag: None))
            grid = self.clock.grid
            start = grid.time_at(math.ceil(grid.beat_at(now) / grid.beats_per_bar)
                                 * grid.beats_per_bar)
            if self.paused or (self.cfg.engine.mode == "switch" and name != self.active):
                fresh.hold(grid.beat_at(start))
            fresh.start(start)
            self.players[name] = fresh

    async def _shutdown(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        if self.link is not None:
            await self.link.close()
        if self.clock_follower is not None:
            self.clock_follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.clock_follower
        if self.clock_sent_until is not None:
            self.timeline.drop_tag(CLOCK_TAG)
            self.timeline.add(time.monotonic(), (CLOCK_STOP,), CLOCK_TAG)
        for _source, task in self.inputs.values():
            task.cancel()
        for _source, task in self.inputs.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for player in self.players.values():
            player.stop()
        if self.output is not None:
            self.output.close()
        if self.trace is not None:
            self.trace.close()
        if self.options.stats_json is not None:
            self.options.stats_json.parent.mkdir(parents=True, exist_ok=True)
            self.options.stats_json.write_text(json.dumps(self.figures(), indent=2) + "\n")
        self.notifier.close()

    # ------------------------------------------------------------ reload (SIGHUP)

    def reload(self) -> None:
        """Re-read the config; apply mappings, inputs and generator settings. An invalid
        config keeps the running one and says why."""
        source = self.cfg.source
        self.notifier.notify("RELOADING=1")
        try:
            new = config_module.load(source)
        except ConfigError as exc:
            self._reload_failures += 1
            for problem in exc.problems:
                log.error("reload: %s: %s", exc.source, problem)
            log.error("reload: keeping the running config")
            self.notifier.notify("READY=1", "STATUS=playing (reload failed: config invalid)")
            return
        self._apply_config(new)
        self._reloads += 1
        log.info("reload: %s applied", source)
        self.notifier.notify("READY=1", f"STATUS=playing ({self.describe_output()})")

    def _apply_config(self, new: Config) -> None:
        old = self.cfg
        for section in ("output", "clock", "monitor"):
            if getattr(new, section) != getattr(old, section):
                log.warning("reload: [%s] changes take effect at restart (the port stays "
                            "open)", section)
        if new.playing != old.playing or any(
                new.generator(n).model != old.generator(n).model for n in self.players):
            log.warning("reload: a new generator or model takes effect at restart")
        for player in self.players.values():
            if not isinstance(player, StepPlayer):
                continue
            player.lookahead_s = new.engine.lookahead_ms / 1e3
            player.commit_s = new.engine.commit_ms / 1e3
            player.latency_budget_s = new.engine.latency_budget_ms / 1e3
            player.rollback_threshold = new.engine.rollback_threshold
        # Inputs: restart those whose settings changed, start new ones, stop removed ones.
        if self.replay is not None:
            if new.inputs != old.inputs:
                log.warning("reload: the replay plays on; [inputs] changes take effect at "
                            "restart")
        else:
            for name in list(self.inputs):
                if new.inputs.get(name) != old.inputs.get(name):
                    self.inputs.pop(name)[1].cancel()
            for name, input_cfg in new.inputs.items():
                if name not in self.inputs:
                    self._start_input(name, input_cfg)
        self.cfg = new
        version = self.mapper.controls.version
        self.mapper = Mapper(new)
        # Re-apply the latest reading of each input so the controls do not jump to
        # neutral and back while the inputs catch up; versions keep counting up.
        for reading in self.last_readings.values():
            self.mapper.update(reading)
        self.mapper.controls = dataclasses.replace(self.mapper.controls, version=version + 1,
                                                   t=time.monotonic())
        self._apply(self.mapper.controls)

    # ------------------------------------------------------------ figures

    def figures(self) -> dict[str, Any]:
        out = self.output.stats().as_dict() if self.output else {}
        players = {name: player.figures() for name, player in self.players.items()}
        inputs = {name: {"readings": src.stats.readings, "restarts": src.stats.restarts,
                         "dropped": dict(src.stats.dropped), **src.stats.figures}
                  for name, (src, _task) in self.inputs.items()}
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "origin": self.origin,  # monotonic time of the music's time zero (replays)
            "ready_s": self.ready_s,
            "seed": self.seed,
            "cpu_percent": round(self.meter.cpu_percent(), 1),
            "rss_mb": round(self.meter.rss_mb(), 1),
            "peak_rss_mb": round(self.meter.peak_rss_mb(), 1),
            "output": out,
            "generators": players,
            "inputs": inputs,
            "clock": {"bpm": round(self.clock.bpm, 2), "following": self.clock.following,
                      "running": self.clock.running,
                      **({"link": self.link.figures()} if self.link is not None else {})},
            "active": self.active,
            "surface": {**self.surface_state(),
                        "controls": presets.control_values(self.mapper.controls)},
            "replaced": len(self.replaced),
            "reloads": self._reloads,
            "reload_failures": self._reload_failures,
        }


def format_stats(figures: dict[str, Any]) -> str:
    """One log line of the figures. What nothing was measured for yet says so (never
    `nan`); each input that dropped data says how much and why."""
    parts = []
    for name, g in figures["generators"].items():
        kind = g.get("kind", "step")
        work = "step" if kind == "step" else "plan"
        step, lat = g[f"{work}_ms"], g["control_latency_ms"]
        steps = (f"{work} p50 {step['p50']:.2f} p99 {step['p99']:.2f} ms" if step.get("n")
                 else f"{work} -")
        over = (f" (over budget {g['budget_overruns']}/{lat['n']})" if kind == "step"
                else "")
        latency = (f"control latency p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} ms{over}"
                   if lat.get("n") else "control latency: no changes yet")
        tail = (f"late {g['late']}, stalls {g['stalls']}" if kind == "step" else
                f"missed {g['missed']}, over budget {g['budget_overruns']}")
        parts.append(f"{name} {steps}, {latency}, {tail}")
    out = figures["output"]
    if out:
        p50 = out["lateness_p50_ms"]
        if p50 == p50:  # NaN, the one value unequal to itself, until a timed send
            parts.append(f"send lateness p50 {p50:.2f} p99 {out['lateness_p99_ms']:.2f} "
                         f"max {out['lateness_max_ms']:.2f} ms, {out['messages']} sent")
        else:
            parts.append(f"send lateness -, {out['messages']} sent")
    dropped = [f"{name} {sum(i['dropped'].values())} ("
               + ", ".join(f"{why} {n}" for why, n in sorted(i["dropped"].items())) + ")"
               for name, i in figures["inputs"].items() if sum(i["dropped"].values())]
    if dropped:
        parts.append("dropped " + "; ".join(dropped))
    parts.append(f"cpu {figures['cpu_percent']:.0f}% rss {figures['rss_mb']:.0f} MB")
    return " | ".join(parts)


def _kind(cfg: Config, name: str) -> str:
    settings = cfg.generator(name)
    return type_of(name, settings).kind


def build_generator(cfg: Config, name: str, seed: int) -> Any:
    """Generator `name` (a [generators.NAME] section or a registered name), its model
    loaded and checked (errors before any note)."""
    settings = cfg.generator(name)
    return type_of(name, settings).build(settings, seed=seed)


def run_command(args: argparse.Namespace) -> int:
    cfg = config_module.load(args.config)
    options = RunOptions(record_trace=args.record, replay=args.replay,
                         stats_every=args.stats, stats_json=args.stats_json,
                         duration=args.duration)
    return asyncio.run(Engine(cfg, options).run())
