"""`livegen demo`: the simulated performer plays the Char-RNN through the real engine.

It plays into the virtual port when a MIDI system is there, always records out/demo.mid,
renders it to out/demo.wav with FluidSynth when that is installed (see livegen/synth.py),
and draws out/demo.png (with the `plot` extra): the piano roll with the control curves
beneath on the same time axis, so a person sees the hand and the arm steer the music.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time
from pathlib import Path

from livegen import config as config_module
from livegen import synth
from livegen.config import Config
from livegen.control import Controls
from livegen.engine import Engine, RunOptions
from livegen.errors import LivegenError
from livegen.inputs.base import Reading
from livegen.music.events import Note, read_midi

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DemoTrace:
    """What the demo saw, for the picture: times are seconds since the output started."""

    controls: list[tuple[float, Controls]] = dataclasses.field(default_factory=list)
    readings: list[tuple[float, Reading]] = dataclasses.field(default_factory=list)


def demo_config(cfg: Config) -> Config:
    """The config as the demo runs it: never refuses to start for want of a MIDI system."""
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, require_port=False))


def demo_command(args: argparse.Namespace) -> int:
    cfg = demo_config(config_module.load(args.config))
    config_module.check_runnable(cfg)
    soundfont = synth.find_soundfont(args.soundfont)  # a bad --soundfont: refused first
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    midi_path, wav_path, png_path = out / "demo.mid", out / "demo.wav", out / "demo.png"
    trace = DemoTrace()
    options = RunOptions(record_midi=midi_path, duration=args.seconds, seed=args.seed)
    engine = Engine(cfg, options)
    progress = Progress(engine, args.seconds)
    options.on_controls.append(lambda c: trace.controls.append((c.t, c)))
    options.on_reading.append(lambda r: trace.readings.append((r.t, r)))
    options.on_tick.append(progress.update)
    print(f"livegen demo: {args.seconds:g} s of the simulated performer steering the "
          f"{cfg.engine.generator} (seed {args.seed})", flush=True)
    status = asyncio.run(engine.run())
    progress.finish()
    notes = read_midi(midi_path) if midi_path.exists() else []
    origin = engine.output_started
    figures = engine.figures()
    player = figures["generators"].get(cfg.engine.generator, {})
    latency = player.get("control_latency_ms", {})
    print(f"played {len(notes)} notes on {engine.describe_output()}")
    if latency.get("n"):
        print(f"control latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms "
              f"over {latency['n']} changes")
    written, missing = [midi_path], []
    for path, why_not in ((wav_path, write_wav(midi_path, wav_path, soundfont)),
                          (png_path, write_png(png_path, notes, trace, origin, args.seconds,
                                               engine.mapper.neutral))):
        if why_not is None:
            written.append(path)
        else:
            missing.append(f"no {path}: {why_not}")
    print(f"wrote {', '.join(map(str, written))}")
    for line in missing:
        print(line)
    return status


def write_wav(midi_path: Path, wav_path: Path, soundfont: Path | None) -> str | None:
    """Render the demo to WAV with FluidSynth; None when written, else why not and the
    fix, in one line (the demo has played either way, so this never fails it)."""
    wav_path.unlink(missing_ok=True)  # never leave an earlier run's sound beside this one
    fluidsynth = synth.find_fluidsynth()
    if fluidsynth is None:
        return f"FluidSynth is not installed; to hear the demo: {synth.INSTALL}"
    if soundfont is None:
        return ("no General MIDI soundfont found; apt-get install fluid-soundfont-gm, or "
                f"give one with --soundfont FILE.sf2 (or ${synth.SOUNDFONT_ENV})")
    try:
        synth.render_wav(midi_path, wav_path, soundfont, fluidsynth)
    except LivegenError as exc:
        return str(exc)
    return None


def write_png(path: Path, notes: list[Note], trace: DemoTrace, origin: float,
              seconds: float, neutral: Controls) -> str | None:
    """Draw the demo's picture; None when drawn, else why not and the fix, in one line."""
    path.unlink(missing_ok=True)
    try:
        import matplotlib  # noqa: F401  (the plot extra)
    except ImportError:
        return "matplotlib is not installed; pip install 'livegen[plot]' (scripts/setup does)"
    draw(path, notes, trace, origin, seconds, neutral)
    return None


class Progress:
    """One line on the console, redrawn each second (a line per 5 s when not a terminal)."""

    def __init__(self, engine: Engine, seconds: float) -> None:
        self.engine = engine
        self.seconds = seconds
        self.tty = sys.stdout.isatty()
        self.next_at = 0.0

    def update(self, now: float) -> None:
        if now < self.next_at or self.engine.output is None:
            return
        self.next_at = now + (1.0 if self.tty else 5.0)
        elapsed = max(0.0, now - self.engine.origin)
        c = self.engine.mapper.controls
        sent = self.engine.output.stats().messages
        line = (f"  {elapsed:5.1f}/{self.seconds:g} s  messages {sent:5d}  "
                f"pitch {c.pitch:.2f}  density {c.density:.2f}  velocity {c.velocity:.2f}")
        if self.tty:
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)

    def finish(self) -> None:
        if self.tty:
            print()


def draw(path: Path, notes: list[Note], trace: DemoTrace, origin: float, seconds: float,
         neutral: Controls) -> None:
    """The piano roll above, the controls and the arm beneath, on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    fig, (roll, controls, arm) = plt.subplots(
        3, 1, figsize=(14, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1.3, 1]})
    for note in notes:
        roll.broken_barh([(note.start, max(note.end - note.start, 0.02))],
                         (note.pitch - 0.4, 0.8),
                         facecolors=plt.cm.viridis(note.velocity / 127))
    if notes:
        low = min(n.pitch for n in notes)
        high = max(n.pitch for n in notes)
        roll.set_ylim(low - 3, high + 3)
    roll.set_ylabel("MIDI pitch")
    roll.set_title(f"livegen demo: {len(notes)} notes (colour = velocity)")

    times = [0.0] + [t - origin for t, _ in trace.controls] + [seconds]
    snapshots = [neutral] + [c for _, c in trace.controls]
    snapshots.append(snapshots[-1])
    for name, colour in (("pitch", "tab:red"), ("density", "tab:blue"),
                         ("velocity", "tab:green")):
        controls.step(times, [getattr(c, name) for c in snapshots], where="post",
                      label=name, color=colour)
    controls.set_ylim(-0.05, 1.05)
    controls.set_ylabel("controls")
    controls.legend(loc="upper right", ncols=3, fontsize="small")

    emg_keys = sorted({k for _, r in trace.readings for k in r.values if k.startswith("emg.ch")})
    reading_times = [t - origin for t, _ in trace.readings]
    for key in emg_keys:
        arm.plot(reading_times, [r.values.get(key, 0.0) for _, r in trace.readings],
                 linewidth=0.6, alpha=0.6)
    if any("emg.total" in r.values for _, r in trace.readings):
        arm.plot(reading_times, [r.values.get("emg.total", 0.0) for _, r in trace.readings],
                 color="black", linewidth=1.5, label="emg.total")
        arm.legend(loc="upper right", fontsize="small")
    arm.set_ylabel("EMG (sim)")
    arm.set_xlabel("seconds")
    arm.set_xlim(0, seconds)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    log.debug("drew %s in %.2f s", path, time.perf_counter() - started)
