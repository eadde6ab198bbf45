"""The benchmarks behind `livegen bench WHAT`: timing figures, printed as tables.

Each bench is a function that takes its own argv (`livegen bench WHAT -h` shows it) and
returns an exit status. Adding one: write the function, add it to BENCHES.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rtmidi.midiconstants import CONTROL_CHANGE, NOTE_OFF, NOTE_ON

from livegen import toml_writer
from livegen.config import NOISE_SIZE, OutputConfig
from livegen.errors import LivegenError
from livegen.ports import (
    close_client,
    jack_connect,
    jack_period_s,
    jack_port_names,
    jack_server,
    receiving_client,
)
from livegen.timeline import Message

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the receiving process

RECEIVER_CODE = "from livegen.bench import receive; receive()"


def receive() -> None:
    """The receiving JACK client of `bench output`, run as its own process.

    Opens a virtual input port (argv[1]:in), says 'ready' on stdout, timestamps every
    message with time.monotonic() as it arrives, and at a line on stdin writes the
    arrivals as JSON [[t, [bytes...]], ...] on stdout. CLOCK_MONOTONIC is system-wide, so
    the sender can compare these times with its due times.
    """
    arrivals: list[tuple[float, list[int]]] = []
    midi_in = receiving_client(sys.argv[1], lambda t, message: arrivals.append((t, message)))
    print("ready", flush=True)
    sys.stdin.readline()
    close_client(midi_in)
    json.dump(arrivals, sys.stdout)


class Receiver:
    """`receive()` in a separate process, with a virtual input port NAME:in (on the JACK
    server that `env`'s JACK_DEFAULT_SERVER names)."""

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = f"{name}:in"
        self._env = env
        self._process = subprocess.Popen(
            [sys.executable, "-c", RECEIVER_CODE, name], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env)
        line = self._process.stdout.readline().strip()
        if line != "ready":
            self._process.kill()
            raise LivegenError(f"bench: the receiving client did not start ({line!r})")

    def connect(self, source: str) -> None:
        done = subprocess.run(["jack_connect", source, self.port], capture_output=True,
                              text=True, timeout=10, env=self._env)
        if done.returncode != 0:
            raise LivegenError(f"bench: jack_connect {source} {self.port} failed: "
                               f"{done.stderr.strip() or done.stdout.strip()}")

    def close(self) -> None:
        """Stop the receiving process without reading what it got."""
        self._process.kill()
        self._process.communicate()

    def arrivals(self) -> list[tuple[float, tuple[int, ...]]]:
        out, _ = self._process.communicate("\n", timeout=30)
        return [(t, tuple(message)) for t, message in json.loads(out)]


# ---------------------------------------------------------------- bench output

@dataclass(frozen=True, slots=True)
class LatenessRow:
    switch_ms: float
    where: str
    received: int
    expected: int
    lateness_ms: np.ndarray

    def cells(self) -> str:
        late = self.lateness_ms
        if late.size == 0:
            return "     -       -       -"
        p50, p99 = np.percentile(late, [50, 99])
        return f"{p50:7.3f} {p99:7.3f} {late.max():7.3f}"


def bench_plan(count: int, rate_hz: float, t0: float) -> list[tuple[float, Message]]:
    """`count` messages `1/rate_hz` apart from t0: note-on, note-off, next note, ... Each
    (status, pitch, velocity) is unique within 6096 notes (48 pitches x 127 velocities,
    note-offs carry their note's velocity), so arrivals can be matched even if one is lost."""
    plan = []
    for k in range(count):
        note = k // 2
        pitch, velocity = 36 + note % 48, 1 + note % 127
        status = NOTE_ON if k % 2 == 0 else NOTE_OFF
        plan.append((t0 + k / rate_hz, (status, pitch, velocity)))
    return plan


def _busy(stop: threading.Event) -> None:
    # Pure Python work holds the GIL like the Python parts of inference do.
    while not stop.is_set():
        sum(i * i for i in range(500))


def _one_run(cfg_output: OutputConfig, switch_ms: float, count: int, rate_hz: float, busy: bool,
             run_name: str) -> tuple[LatenessRow, LatenessRow, bool]:
    from livegen.output import Output
    from livegen.timeline import Timeline

    output_cfg = dataclasses.replace(cfg_output, api="jack", port=run_name, connect=(),
                                     record=None, require_port=True)
    receiver = Receiver(f"{run_name}-rx")
    timeline = Timeline()
    try:
        output = Output.open(output_cfg, timeline)
    except BaseException:
        receiver.close()
        raise
    stop_busy = threading.Event()
    previous = sys.getswitchinterval()
    try:
        receiver.connect(f"{run_name}:out")
        sys.setswitchinterval(switch_ms / 1000)
        if busy:
            threading.Thread(target=_busy, args=(stop_busy,), daemon=True).start()
        output.start()
        plan = bench_plan(count, rate_hz, time.monotonic() + 0.5)
        timeline.add_many(plan, tag="bench")
        time.sleep(max(0.0, plan[-1][0] - time.monotonic()) + 0.2)
    except BaseException:
        receiver.close()
        raise
    finally:
        stop_busy.set()
        realtime = output.stats().realtime
        output.close()
        sys.setswitchinterval(previous)
    sent = output.lateness()[-count:] * 1000
    arrivals = receiver.arrivals()
    due_of = {message: due for due, message in plan}
    seen: set[tuple[int, ...]] = set()
    rx = []
    for t, message in arrivals:
        if message in due_of and message not in seen:
            seen.add(message)
            rx.append((t - due_of[message]) * 1000)
    return (LatenessRow(switch_ms, "output thread", len(sent), count, sent),
            LatenessRow(switch_ms, "receiver", len(rx), count, np.array(rx)), realtime)


def bench_output(argv: Sequence[str]) -> int:
    """`livegen bench output`: send lateness through a real JACK port, in the output thread
    and in a receiving client in another process, at Python's default switch interval and
    at engine.switch_interval_ms, each with a CPU-bound Python thread alongside."""
    from livegen import config

    parser = argparse.ArgumentParser(prog="livegen bench output",
                                     description=bench_output.__doc__)
    parser.add_argument("--config", "-c", type=Path, default=None, metavar="PATH")
    parser.add_argument("--messages", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s (default 500)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each setting (default 1)")
    parser.add_argument("--switch-ms", type=float, action="append", metavar="MS",
                        help="switch intervals to compare (default: 5.0 and "
                             "engine.switch_interval_ms)")
    parser.add_argument("--spin-ms", type=float, help="override output.spin_ms")
    parser.add_argument("--idle", action="store_true", help="no CPU-bound thread alongside")
    parser.add_argument("--own-server", action="store_true",
                        help="start a JACK server of its own even when one is running, so "
                             "other clients (and their connections) cannot disturb it")
    args = parser.parse_args(argv)
    if args.own_server:
        # rtmidi's clients, jack_connect and the receiving process all read this.
        os.environ["JACK_DEFAULT_SERVER"] = f"livegen-bench-{os.getpid()}"
    cfg = config.load(args.config)
    output_cfg = cfg.output
    if args.spin_ms is not None:
        output_cfg = dataclasses.replace(output_cfg, spin_ms=args.spin_ms)
    intervals = args.switch_ms or [5.0, cfg.engine.switch_interval_ms]

    with jack_server() as started:
        period_ms = jack_period_s() * 1000
        rows: list[LatenessRow] = []
        realtime = False
        for run in range(args.runs):
            for i, switch_ms in enumerate(intervals):
                name = f"livegen-bench-{os.getpid()}-{run}-{i}"
                out_row, rx_row, realtime = _one_run(output_cfg, switch_ms, args.messages,
                                                     args.rate, not args.idle, name)
                rows.extend((out_row, rx_row))
        # The table comes before the server started here stops (libjack complains then).
        _print_output_table(args, rows, started, period_ms, output_cfg.spin_ms, realtime)
    return 0


def _print_output_table(args: argparse.Namespace, rows: list[LatenessRow], started: bool,
                        period_ms: float, spin_ms: float, realtime: bool) -> None:
    load = "idle" if args.idle else "a CPU-bound Python thread alongside"
    server = os.environ.get("JACK_DEFAULT_SERVER") or "default"
    print(f"livegen bench output: {args.messages} messages at {args.rate:g}/s per run "
          f"through JACK server {server!r} ({'started here' if started else 'already running'}"
          f", period {period_ms:.3f} ms); {load}; output.spin_ms {spin_ms:g}; "
          f"SCHED_FIFO {'yes' if realtime else 'no'}")
    print()
    print("switch interval  measured in     received   p50 ms  p99 ms  max ms")
    for row in rows:
        print(f"{row.switch_ms:8.2f} ms      {row.where:<15} "
              f"{row.received:4d}/{row.expected:<4d} {row.cells()}")
    print()
    print(f"targets: output thread p99 <= 0.300 ms; receiver p99 <= {period_ms + 0.2:.3f} ms "
          "(the JACK period + 0.2 ms)", flush=True)


# ---------------------------------------------------------------- bench camera

def hand_scene(frames: int, width: int = 640, height: int = 480,
               seed: int = 1) -> tuple[list[np.ndarray], list[tuple[float, float] | None]]:
    """Synthetic camera frames: a hand (palm and five fingers) moving on a figure of eight
    over a textured background with sensor noise, after half a second of empty scene.
    Returns the frames and the hand's true position per frame (0..1, y up; None: absent)."""
    import cv2

    rng = np.random.default_rng(seed)
    blotches = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    background = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    background = (background * 0.5 + np.array([90, 110, 40])).clip(0, 255).astype(np.uint8)
    noise = rng.normal(0.0, 6.0, (height + 16, width + 16, 3)).astype(np.int16)
    scale = height / 480
    palm, finger, thickness = round(38 * scale), 62 * scale, max(1, round(15 * scale))
    lead_in = 15
    images, truth = [], []
    for i in range(frames):
        image = background.copy()
        mask = np.zeros((height, width), np.uint8)
        if i >= lead_in:
            t = (i - lead_in) / 150
            cx = width * (0.5 + 0.32 * np.sin(2 * np.pi * t))
            cy = height * (0.55 + 0.25 * np.sin(4 * np.pi * t + 0.5))
            for target, colour in ((image, (120, 150, 210)), (mask, 255)):
                cv2.circle(target, (round(cx), round(cy)), palm, colour, -1)
                for degrees in np.linspace(-60, 60, 5):
                    a = np.radians(degrees)
                    base = (round(cx + np.sin(a) * palm * 0.7), round(cy - np.cos(a) * palm * 0.7))
                    tip = (round(cx + np.sin(a) * (palm + finger)),
                           round(cy - np.cos(a) * (palm + finger)))
                    cv2.line(target, base, tip, colour, thickness)
            (x, y), _ = cv2.minEnclosingCircle(cv2.findNonZero(mask))
            truth.append((x / width, 1.0 - y / height))
        else:
            truth.append(None)
        dy, dx = rng.integers(0, 16, 2)
        images.append((image + noise[dy:dy + height, dx:dx + width]).clip(0, 255)
                      .astype(np.uint8))
    return images, truth


def bench_camera(argv: Sequence[str]) -> int:
    """`livegen bench camera`: hand-tracking time per frame (scale-down, mask, clean-up,
    contour, enclosing circle, finger count) on 640x480 frames, for each detector, with the
    tracking error against the known path as a check that the work measured is real."""
    import cv2

    from livegen.config import CameraInputConfig
    from livegen.inputs.camera import HandTracker

    parser = argparse.ArgumentParser(prog="livegen bench camera",
                                     description=bench_camera.__doc__)
    parser.add_argument("--frames", type=int, default=600, help="per run (default 600)")
    parser.add_argument("--runs", type=int, default=3, help="runs per detector (default 3)")
    parser.add_argument("--detector", choices=["mog2", "skin", "both"], default="both")
    parser.add_argument("--process-width", type=int, default=320,
                        help="tracking width (default 320, the config's default)")
    parser.add_argument("--size", default="640x480", help="frame size (default 640x480)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    images, truth = hand_scene(args.frames, width, height)
    detectors = ["mog2", "skin"] if args.detector == "both" else [args.detector]
    print(f"livegen bench camera: {args.frames} frames of {width}x{height} per run, tracked "
          f"at width {args.process_width}; OpenCV {cv2.__version__}, "
          f"{cv2.getNumThreads()} thread(s), {os.cpu_count()} CPU(s)")
    print()
    print("detector  run  p50 ms  p99 ms  max ms  mean error  found")
    worst_p99 = 0.0
    for detector in detectors:
        for run in range(1, args.runs + 1):
            config = CameraInputConfig(type="camera", detector=detector,
                                       process_width=args.process_width)
            tracker = HandTracker(config)
            times, errors, found = [], [], 0
            for image, expected in zip(images, truth, strict=True):
                began = time.perf_counter()
                hand = tracker.track(image)
                times.append((time.perf_counter() - began) * 1000)
                if expected is not None and hand is not None:
                    found += 1
                    errors.append(np.hypot(hand.x - expected[0], hand.y - expected[1]))
            ms = np.array(times)
            p50, p99 = np.percentile(ms, [50, 99])
            worst_p99 = max(worst_p99, p99)
            with_hand = sum(e is not None for e in truth)
            error = f"{np.mean(errors):10.3f}" if errors else "         -"
            print(f"{detector:<8} {run:4d} {p50:7.2f} {p99:7.2f} {ms.max():7.2f} {error}  "
                  f"{found}/{with_hand}")
    print()
    print(f"target: p99 <= 10 ms per {width}x{height} frame; worst p99 here {worst_p99:.2f} ms "
          f"({'met' if worst_p99 <= 10.0 else 'NOT met'}); error is in fractions of the frame")
    return 0


# ---------------------------------------------------------------- charrnn

def _percentiles_ms(seconds: np.ndarray) -> tuple[float, float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean())


def _torch_step_latencies(model, steps: int, warmup: int) -> dict[str, np.ndarray]:
    """Per-step seconds of the same weights under torch eager, one thread: the exported
    step module, and the training net's nn.LSTM fed one event at a time."""
    import torch

    from livegen.generators.charrnn import control_vector, sample, uniform
    from livegen.train.export import net_from_onnx
    from livegen.train.nets import CharRNNStep, NetShape

    torch.set_num_threads(1)
    fp32 = model.path.parent / model.manifest["files"]["fp32"]["path"]
    net = net_from_onnx(fp32, NetShape(**model.manifest["net"]))
    step = CharRNNStep(net).eval()
    controls = torch.from_numpy(control_vector(0.5, 0.5, np.zeros(12)))[None]
    results = {}
    with torch.inference_mode():
        for name in ("torch eager, step module", "torch eager, nn.LSTM"):
            h = torch.zeros(model.layers, 1, model.hidden_size)
            c = torch.zeros_like(h)
            token = model.primer_token
            timings = np.empty(steps)
            for i in range(warmup + steps):
                started = time.perf_counter()
                if name.endswith("module"):
                    logits, h, c = step(torch.tensor([token]), controls, h, c)
                    logits = logits[0]
                else:
                    out, (h, c) = net(torch.tensor([[token]]), controls[None], (h, c))
                    logits = out[0, 0]
                row = logits.numpy()
                if i >= warmup:
                    timings[i - warmup] = time.perf_counter() - started
                token = sample(row, top_p=0.95, uniform=uniform(0, i))
            results[name] = timings
    return results


def bench_charrnn(argv: Sequence[str]) -> int:
    """`livegen bench charrnn`: per-step latency of the Char-RNN under ONNX Runtime (each
    shipped variant) and torch eager, one thread each, side by side."""
    from livegen import config as config_module
    from livegen.generators.charrnn import CharRNN, probabilities, step_latencies

    parser = argparse.ArgumentParser(prog="livegen bench charrnn",
                                     description="Char-RNN per-step latency: ONNX Runtime "
                                                 "vs torch eager, one thread each.")
    parser.add_argument("--config", "-c", type=Path, default=None)
    parser.add_argument("--model", type=Path, help="manifest (default: the config's)")
    parser.add_argument("--steps", type=int, default=5000, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=500, help="untimed steps first")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch rows")
    options = parser.parse_args(argv)
    manifest = options.model or config_module.load(options.config).generator("charrnn").model
    rows: dict[str, np.ndarray] = {}
    first = None
    for variant in sorted(CharRNN(manifest).manifest["files"]):
        model = CharRNN(manifest, variant=variant, threads=1)
        first = first or model
        rows[f"onnxruntime {variant}"] = step_latencies(model, options.steps, options.warmup)
    logits = np.random.default_rng(0).normal(size=388).astype(np.float32)
    sampling = np.empty(options.steps)
    for i in range(options.steps):
        started = time.perf_counter()
        probabilities(logits, temperature=1.0, top_p=0.95)
        sampling[i] = time.perf_counter() - started
    if not options.no_torch and "fp32" not in first.manifest["files"]:
        log.warning("torch rows skipped: no fp32 graph ships beside the model (`livegen "
                    "export charrnn` keeps it in its staging folder)")
    elif not options.no_torch:
        try:
            rows.update(_torch_step_latencies(first, options.steps, options.warmup))
        except ImportError as exc:
            log.warning("torch rows skipped (%s); install the train extra", exc)
    print(f"Char-RNN per-step latency, {first.layers} x {first.hidden_size} LSTM, one thread, "
          f"{options.steps} steps after {options.warmup} warm-up, own samples fed back")
    print(f"{'runtime':28s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s}")
    for name, timings in rows.items():
        p50, p99, mean = _percentiles_ms(timings)
        print(f"{name:28s} {p50:8.3f} {p99:8.3f} {mean:8.3f}")
    p50, p99, mean = _percentiles_ms(sampling)
    print(f"{'(sampling, numpy top-p)':28s} {p50:8.3f} {p99:8.3f} {mean:8.3f}")
    default = f"onnxruntime {first.manifest['default_variant']}"
    onnx_p50, onnx_p99, _ = _percentiles_ms(rows[default])
    torch_rows = [r for r in rows if r.startswith("torch")]
    print(f"target: ONNX p99 <= 1 ms: {default} p99 {onnx_p99:.3f} ms "
          f"({'met' if onnx_p99 <= 1.0 else 'NOT met'})")
    # Both torch forms are shown: the training net stepped one event at a time (how torch
    # would run this model as trained), and the fused step module (the same Gemms as the
    # ONNX graph), against which only framework overhead and kernels differ.
    for name in torch_rows:
        speedup = _percentiles_ms(rows[name])[0] / onnx_p50
        print(f"target: >= 5x faster than {name} (p50): {speedup:.1f}x "
              f"({'met' if speedup >= 5 else 'NOT met'})")
    return 0


# ---------------------------------------------------------------- bench engine

# The hand's third value flips at every jump between these velocity controls, so the
# notes planned under each jump's controls sound at their own velocity and a receiver can
# tell the notes planned before a change from those planned after. The Char-RNN learned one
# velocity, 80 (x 0.25/0.75 = 27, x 1.0/0.75 = 107), but a sampled velocity token or its
# decoder's default (64) gives another now and then, and its dynamics shape each by 0.8 to
# 1.25: the classes are 17-42 and 68-127, told apart at their geometric middle (54). Closer
# classes (0.5 and 0.9) let a note at 64 x 1.2 x 0.96 = 74 pass for the other class, and
# a run then counted an old note 340 ms after a change. The DCRNN and the Langevin model
# play their configured velocity, 80, scaled alike.
BENCH_VELOCITIES = (0.25, 1.0)
# A measure by velocity class is told only when the player's note-ons at the receiver fall
# in both classes and, where there are changes enough to judge, the last note-on before
# each next change is in the class asked in at least this share of them.
FOLLOWING_SHARE = 0.75
# A segment player hears a change at the first bar line at least one segment after it (it
# plans one segment ahead, under the controls of when that planning was due): 1 to 2
# segments later. The hand's jumps then come 2.5 segments apart, give or take a tenth, so
# each change is heard before the next one comes, at a phase of the bar that drifts.
SEGMENT_CHANGE_EVERY = 2.5
SEGMENT_SPREAD = 0.1
STEP_HEARING_S = 0.5  # a step player's change is heard well within this (commit_ms + a step)
PLANNING_SHARE = 0.5  # of a bar: a segment player's planning budget (SegmentPlayer's default)
# The MIDI inputs of `--midi-inputs N`: each hears controller KNOB_CC turning every
# KNOB_EVERY_S, mapped by a rule of its own (one rule per target) to a noise value beyond
# every shipped model's code (noise[63], noise[62], ...), held at its neutral 0: the
# inputs do all their work (a child process, parsing, readings, the mapper) and the music
# does not change because of them.
KNOB_CC = 20  # undefined in the MIDI standard: no synth reacts to it
KNOB_EVERY_S = 0.1
GENERATOR_TITLES = {"charrnn": "the Char-RNN", "dcrnn": "the DCRNN",
                    "langevin": "the Langevin model"}


def engine_hand(seconds: float, change_every: float, seed: int = 3,
                spread: float = 0.4) -> list[tuple[float, float, float, float]]:
    """A hand that jumps to a new height and side about every `change_every` seconds
    (each jump changes the pitch or density bin: a rollback), as 30 readings/s of
    (seconds, y, x, v); v flips between 0 and 1 at each jump. The gaps between jumps
    vary by `spread` (0.4: from 0.6 to 1.4 times `change_every`)."""
    rng = np.random.default_rng(seed)
    readings = []
    y, x, v = 0.5, 0.5, 0.0
    next_jump = 0
    for k in range(int(seconds * 30)):
        if k == next_jump:
            y, x = float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.3, 0.95))
            v = 1.0 - v
            # Jumps `change_every` apart on average, but never in step with the music's
            # beat (a hand is not): a change due on a beat would find a note there, which
            # is kept by the commit rule however soon after the reading it sounds.
            next_jump += max(1, round(change_every * 30 * rng.uniform(1 - spread, 1 + spread)))
        readings.append((k / 30, y, x, v))
    return readings


def play_hand(readings: list[tuple[float, float, float, float]], port: int, start: float,
              stop: threading.Event) -> list[float]:
    """Send the hand to the daemon's OSC input (`/livegen/in/h y x v`) at `start` + each
    reading's time, as a performer's OSC controller would; returns when each jump was
    sent (monotonic)."""
    from pythonosc.udp_client import SimpleUDPClient

    client = SimpleUDPClient("127.0.0.1", port)
    jumps, last_v = [], None
    for t, y, x, v in readings:
        delay = start + t - time.monotonic()
        if stop.wait(max(0.0, delay)):
            break
        sent = time.monotonic()
        client.send_message("/livegen/in/h", [y, x, v])
        if v != last_v:
            jumps.append(sent)
            last_v = v
    return jumps


@dataclass(frozen=True, slots=True)
class SwitchOver:
    """What a listener hears of each control change (ms, one value per change), and
    whether the velocity classes it is told by can be trusted."""

    switch_over_ms: np.ndarray  # reading -> after this, every note-on is planned under it
    first_note_ms: np.ndarray   # reading -> the first note-on planned under it
    classes: int = 2            # velocity classes among the note-ons since the first jump
    following: list[bool] = dataclasses.field(default_factory=list)  # per closed window:
    # whether its last note-on is in the class its change asked for
    unheard: int = 0            # changes left out: none of their notes came (heard_only)
    audible: int = 1            # changes that came early enough to be heard before the end

    def untold(self) -> str:
        """Why the velocity classes cannot tell old notes from new ('' when they can)."""
        if not self.audible:
            return ("no change came early enough to be heard before the end of the run; "
                    "run longer")
        if self.classes < 2:
            return ("its note-ons at the receiver fall in one velocity class only (their "
                    "velocities do not follow the velocity control)")
        if len(self.following) >= 2 and np.mean(self.following) < FOLLOWING_SHARE:
            return (f"the last note-on before the next change was in the velocity class "
                    f"asked in {np.mean(self.following):.0%} of {len(self.following)} "
                    "changes (its velocities do not follow the velocity control)")
        return ""


def switch_over(jumps: list[float], received: list[tuple[float, tuple[int, ...]]], *,
                channel: int | None = None, heard_only: bool = False, end: float = math.inf,
                hearing_s: float = 0.0) -> SwitchOver:
    """From the receiver's note-ons (on `channel`, 1..16, if given), by their velocity
    class (BENCH_VELOCITIES): for the change sent at each jump (monotonic times), the time
    after which no note-on of the old controls arrives (0 when none does after it) and the
    time of the first note-on of the new ones. A change whose next comes before any of its
    notes is left out of the second, and with `heard_only` of the first too (a segment
    player's change that the run's end cut off is not known to be quick). A change counts
    as audible when it came `hearing_s` (what the player may take) before the music's
    `end`."""
    ons = [(t, m[2]) for t, m in received if m[0] & 0xF0 == NOTE_ON and m[2] > 0
           and (channel is None or m[0] & 0x0F == channel - 1)]
    low, high = (round(80 * v / 0.75) for v in BENCH_VELOCITIES)
    middle = math.sqrt(low * high)
    switch, first, following, unheard = [], [], [], 0
    for k, t0 in enumerate(jumps[1:], start=1):  # the first sets the start
        t1 = jumps[k + 1] if k + 1 < len(jumps) else math.inf
        new_is_high = k % 2 == 0  # v flips at every jump, starting at 1 (high)
        window = [(t, (vel > middle) == new_is_high) for t, vel in ons if t0 <= t < t1]
        old = [t for t, is_new in window if not is_new]
        new = [t for t, is_new in window if is_new]
        if heard_only and not new:
            unheard += 1
        else:
            switch.append(max(0.0, max(old, default=t0) - t0) * 1e3)
        if new:
            first.append((min(new) - t0) * 1e3)
        if window and t1 < math.inf:  # the last window may be cut short by the end
            following.append(window[-1][1])
    since = {vel > middle for t, vel in ons if jumps and t >= jumps[0]}
    audible = sum(1 for t0 in jumps[1:] if t0 + hearing_s < end)
    return SwitchOver(np.array(switch), np.array(first), len(since), following, unheard,
                      audible)


def bench_engine(argv: Sequence[str]) -> int:
    """`livegen bench engine`: `livegen run` with a generator playing into a real JACK
    port (the Char-RNN unless --generator says otherwise), a listener connected, steered
    by a hand sent live over OSC that jumps about every half second (every 2.5 segments
    for a segment generator): per player, control latency, what the listener hears of
    each change (the switch-over, and the first note under it), generator step or segment
    planning; send lateness, the daemon's CPU and memory, and the time from start to
    READY (sd_notify on a real socket). --midi-inputs and --connections add MIDI inputs
    that a controller plays into and output.connect connections, what they cost being the
    question. With --pages N it runs twice, without the monitor page and then with N pages
    open, and sets the music's figures side by side."""
    from livegen import config
    from livegen.generators import REGISTRY

    parser = argparse.ArgumentParser(prog="livegen bench engine",
                                     description=bench_engine.__doc__)
    parser.add_argument("--config", "-c", type=Path, default=None, metavar="PATH",
                        help="takes the models, the generators' and the engine settings "
                             "from here")
    parser.add_argument("--generator", action="append", choices=sorted(REGISTRY),
                        metavar="NAME", help="the generator that plays: "
                        f"{', '.join(sorted(REGISTRY))} (default charrnn); given more than "
                        "once, they play layered, each on its own channel (1, 2, ...)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length (default 30)")
    parser.add_argument("--change-every", type=float, default=None, metavar="S",
                        help="seconds between hand jumps (default 0.5; 2.5 segments when a "
                             "segment generator plays)")
    parser.add_argument("--commit-ms", type=float, default=None,
                        help="override engine.commit_ms (what a rollback never touches)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="run N CPU-bound processes beside the daemon (load)")
    parser.add_argument("--midi-inputs", type=int, default=0, metavar="N",
                        help="give the daemon N MIDI inputs (virtual JACK ports), each sent "
                             f"a control change every {KNOB_EVERY_S:g} s by a controller "
                             "client (mapped to a noise value held at 0: no change of the "
                             "music)")
    parser.add_argument("--connections", type=int, default=0, metavar="N",
                        help="list N more receiving clients in output.connect (the "
                             "output's sink keeper checks each while it plays)")
    parser.add_argument("--pages", type=int, default=0, metavar="N",
                        help="run twice, back to back: without the monitor page, then with "
                             "it on and N pages open (WebSocket clients in another process)")
    args = parser.parse_args(argv)
    for option in ("midi_inputs", "connections", "busy", "pages"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')}: {getattr(args, option)} is below 0")
    if args.midi_inputs > NOISE_SIZE:
        parser.error(f"--midi-inputs: at most {NOISE_SIZE} (one noise value each)")
    cfg = config.load(args.config)
    setup = EngineSetup.of(cfg, args.generator or ["charrnn"], args.change_every)
    runs = [_engine_run(args, cfg, setup, pages)
            for pages in ([0, args.pages] if args.pages else [0])]
    if args.pages:
        _print_pages_table(args, runs)
    return 0


@dataclass(frozen=True, slots=True)
class Played:
    """One generator of a `bench engine` run: its name, kind, config section and channel."""

    name: str
    kind: str           # "step" or "segment"
    settings: Any
    channel: int
    segment_s: float    # a segment's length at the bench's tempo (0 for a step generator)

    def title(self) -> str:
        title = GENERATOR_TITLES.get(self.name, self.name)
        if self.kind == "segment":
            mode = getattr(self.settings, "mode", "")
            bars = self.settings.bars
            return f"{title} ({f'{mode}, ' if mode else ''}{bars} bar{'s' * (bars > 1)} a segment)"
        return f"{title} ({self.settings.variant})"


@dataclass(frozen=True, slots=True)
class EngineSetup:
    """What a `bench engine` run plays, and how often the hand changes it."""

    played: tuple[Played, ...]
    change_every: float
    spread: float

    @classmethod
    def of(cls, cfg: Any, names: Sequence[str], change_every: float | None) -> EngineSetup:
        from livegen.config import ClockConfig
        from livegen.generators import type_of

        clock = ClockConfig()  # the bench's daemon keeps the default tempo
        bar_s = clock.beats_per_bar * 60 / clock.bpm
        played = []
        for i, name in enumerate(dict.fromkeys(names)):
            settings = cfg.generator(name)
            kind = type_of(name, settings).kind
            segment_s = settings.bars * bar_s if kind == "segment" else 0.0
            played.append(Played(name, kind, settings, i + 1, segment_s))
        longest = max(p.segment_s for p in played)
        if longest:
            every = SEGMENT_CHANGE_EVERY * longest if change_every is None else change_every
            return cls(tuple(played), every, SEGMENT_SPREAD)
        return cls(tuple(played), 0.5 if change_every is None else change_every, 0.4)

    def heard_in_time(self, player: Played) -> bool:
        """Whether each change comes after the last is heard (1 to 2 segments later), so
        that a change's notes are not cut off by the next (step players: always)."""
        return self.change_every * (1 - self.spread) > 2 * player.segment_s


def _generator_section(cfg: Any, player: Played, layered: bool) -> str:
    """The [generators.NAME] section of the bench's config: what the config sets that
    differs from the defaults, the model's path made absolute (the bench's config lives in
    a folder of its own), and in a layered run the player's channel."""
    settings = player.settings
    defaults = type(settings)()
    items: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "model":
            base = cfg.source.parent if cfg.source is not None else Path.cwd()
            items["model"] = value if value.is_absolute() else base / value
        elif value is not None and value != getattr(defaults, f.name):
            items[f.name] = value
    if layered:
        items["channel"] = player.channel
    return "\n".join([f"[generators.{player.name}]", *toml_writer.assignments(items)])


def _engine_config(args: argparse.Namespace, cfg: Any, setup: EngineSetup, name: str,
                   osc_port: int, commit_ms: float, monitor: str) -> str:
    e = cfg.engine
    layered = len(setup.played) > 1
    names = [p.name for p in setup.played]
    playing = (f"generators = {toml_writer.value(names)}\nmode = \"layer\"\n" if layered
               else "")
    connect = [f"{name}-c{k}-rx:in" for k in range(1, args.connections + 1)]
    sections = [_generator_section(cfg, p, layered) for p in setup.played]
    for k in range(1, args.midi_inputs + 1):
        sections.append(f"""[inputs.knob{k}]
type = "midi"
api = "jack"
virtual = true
port = "{name}-knob{k}"

[[map]]
source = "knob{k}.cc.{KNOB_CC}"
target = "noise[{NOISE_SIZE - k}]"
out_range = [0.0, 0.0]""")
    return f"""
[engine]
seed = 1
generator = "{names[0]}"
{playing}lookahead_ms = {e.lookahead_ms}
commit_ms = {commit_ms}
latency_budget_ms = {e.latency_budget_ms}
switch_interval_ms = {e.switch_interval_ms}

[output]
api = "jack"
port = "{name}"
require_port = true
connect = {toml_writer.value(connect)}

[inputs.hand]
type = "osc"
port = {osc_port}

[[map]]
source = "hand.h.0"
target = "pitch"

[[map]]
source = "hand.h.1"
target = "density"

[[map]]
source = "hand.h.2"
target = "velocity"
out_range = {list(BENCH_VELOCITIES)}

""" + "\n\n".join(sections) + "\n" + monitor


# The controller of `bench engine --midi-inputs N`, in a process of its own (one JACK
# client per process, see livegen.ports).
KNOBS_CODE = "from livegen.bench import turn_knobs; turn_knobs()"


def turn_knobs() -> None:
    """A controller whose knob turns: a JACK client argv[1] with one output port that,
    from a line on stdin (once it is connected), sends controller KNOB_CC, its value going
    round, every KNOB_EVERY_S until stdin closes. Says `ready PORT` when its port is open,
    and at the end how many it sent."""
    import select

    from livegen.sinks import open_virtual_port

    sink = open_virtual_port("jack", sys.argv[1])
    print(f"ready {sink.port}", flush=True)
    sys.stdin.readline()
    sent, due = 0, time.monotonic()
    try:
        while not select.select([sys.stdin], [], [], max(0.0, due - time.monotonic()))[0]:
            sink.send((CONTROL_CHANGE, KNOB_CC, sent % 128), time.monotonic())
            sent += 1
            due += KNOB_EVERY_S
    finally:
        sink.close()
    print(sent, flush=True)


class Knobs:
    """`turn_knobs()` in a separate process, its port joined to each of the daemon's MIDI
    inputs (one port, many JACK connections: each input hears every message)."""

    def __init__(self, name: str) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", KNOBS_CODE, name],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        said = self._process.stdout.readline().split()
        if said[:1] != ["ready"] or len(said) != 2:
            self._process.kill()
            raise LivegenError(f"bench: the controller client did not start ({said!r})")
        self.port = said[1]

    def connect(self, destination: str, timeout: float = 30.0) -> None:
        """Join the knobs to `destination` (a full port name) once it is there."""
        deadline = time.monotonic() + timeout
        while destination not in (jack_port_names() or []):
            if time.monotonic() > deadline:
                raise LivegenError(f"bench: the daemon's MIDI input {destination} did not "
                                   f"appear within {timeout:g} s")
            time.sleep(0.05)
        jack_connect(self.port, destination)

    def turn(self) -> None:
        """Start turning (once connected: every control change sent reaches the inputs)."""
        self._process.stdin.write("\n")
        self._process.stdin.flush()

    def close(self) -> int:
        """Stop turning; how many control changes were sent."""
        out, _ = self._process.communicate("", timeout=30)
        return int(out.strip() or 0)


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One run of `bench engine`: the daemon's figures, what the listener heard of each
    player (by name), and what the monitor's pages got (empty without pages)."""

    pages: int
    figures: dict[str, Any]
    heard: dict[str, SwitchOver]
    watched: dict[str, Any]


def _engine_run(args: argparse.Namespace, cfg: Any, setup: EngineSetup,
                pages: int) -> EngineRun:
    name = f"livegen-bench-engine-{os.getpid()}-{pages}"
    monitor_port = _free_tcp_port() if pages else 0
    monitor = (f"\n[monitor]\nenabled = true\nport = {monitor_port}\n" if pages else "")
    with tempfile.TemporaryDirectory() as tmp, jack_server():
        folder = Path(tmp)
        hand = engine_hand(args.seconds, setup.change_every, spread=setup.spread)
        osc_port = _free_udp_port()
        commit_ms = cfg.engine.commit_ms if args.commit_ms is None else args.commit_ms
        (folder / "config.toml").write_text(
            _engine_config(args, cfg, setup, name, osc_port, commit_ms, monitor))
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(folder / "notify"))
        # The listener, then the receivers output.connect names (there before the daemon
        # looks for them), and the controller the MIDI inputs hear.
        receiver = Receiver(f"{name}-rx")
        connected: list[Receiver] = []
        knobs: Knobs | None = None
        stop = threading.Event()
        watcher: subprocess.Popen[str] | None = None
        daemon: subprocess.Popen[bytes] | None = None
        knobs_sent = 0
        try:
            connected += [Receiver(f"{name}-c{k}-rx") for k in range(1, args.connections + 1)]
            knobs = Knobs(f"{name}-knobs") if args.midi_inputs else None
            started = time.monotonic()
            daemon = subprocess.Popen(
                [sys.executable, "-m", "livegen.cli", "-q", "run", "--config",
                 str(folder / "config.toml"), "--duration", str(args.seconds),
                 "--stats-json", str(folder / "stats.json")],
                env={**os.environ, "NOTIFY_SOCKET": str(folder / "notify")})
            _wait_ready(notify, daemon)
            ready = time.monotonic()
            spawn_to_ready = ready - started
            receiver.connect(f"{name}:out")
            if knobs is not None:
                for k in range(1, args.midi_inputs + 1):
                    knobs.connect(f"{name}-knob{k}:in")
                knobs.turn()
            if pages:  # the pages are open before the hand moves, until the daemon stops
                watcher = subprocess.Popen(
                    [sys.executable, "-c", PAGES_CODE, f"http://127.0.0.1:{monitor_port}/",
                     str(pages)], stdout=subprocess.PIPE, text=True)
                time.sleep(0.5)
            start = time.monotonic() + 0.2
            # The music ends `seconds` after READY: a jump after that is heard by nobody.
            playing = [r for r in hand if start + r[0] < ready + args.seconds]
            jumps = play_hand(playing, osc_port, start, stop)
            if knobs is not None:  # the music is over: what is sent now nobody hears
                knobs_sent, knobs = knobs.close(), None
            daemon.wait(args.seconds + 60)
        except BaseException:
            for client in (receiver, *connected):
                client.close()
            raise
        finally:
            stop.set()
            notify.close()
            if knobs is not None:
                knobs_sent = knobs.close()
            for process in busy:
                process.kill()
            if daemon is not None and daemon.poll() is None:
                daemon.kill()
        watched: dict[str, Any] = {}
        if watcher is not None:
            out, _ = watcher.communicate(timeout=60)
            watched = json.loads(out.strip().splitlines()[-1])
        received = receiver.arrivals()
        through_connections = [len(r.arrivals()) for r in connected]
        figures = json.loads((folder / "stats.json").read_text())
    layered = len(setup.played) > 1
    heard = {p.name: switch_over(jumps, received, channel=p.channel if layered else None,
                                 heard_only=p.kind == "segment", end=ready + args.seconds,
                                 hearing_s=2 * p.segment_s or STEP_HEARING_S)
             for p in setup.played}
    _print_engine_table(args, cfg, setup, figures, spawn_to_ready, received, heard, commit_ms)
    if args.midi_inputs or args.connections:
        _print_scenario_check(args, figures, knobs_sent, len(received), through_connections)
    if watched:
        print(f"with {pages} monitor pages open: each received "
              + ", ".join(f"{p['frames'] / max(p['seconds'], 1e-9):.1f}" for p in watched["pages"])
              + f" frames/s (the page's rate: {watched['rate_hz']:g}), "
              f"{sum(p['bytes'] for p in watched['pages']) / 1e3:.0f} kB in all; building a "
              f"frame took p99 {watched['frame_ms_p99']:.2f} ms on the loop")
    print()
    return EngineRun(pages, figures, heard, watched)


def _wait_ready(notify: socket.socket, daemon: subprocess.Popen[bytes],
                timeout: float = 60.0) -> None:
    """Wait for the daemon's READY=1 on `notify`; one clear line when it exits first (its
    own error is printed above) or does not get ready within `timeout`."""
    notify.settimeout(0.25)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(TimeoutError):
            if notify.recv(4096).startswith(b"READY=1"):
                return
        if daemon.poll() is not None:
            raise LivegenError(f"bench: the daemon exited before it was ready (exit status "
                               f"{daemon.returncode}; its error is above)")
        if time.monotonic() > deadline:
            raise LivegenError(f"bench: the daemon was not ready within {timeout:g} s")


# The monitor's pages for `bench engine --pages N`: N WebSocket clients in a process of
# their own (as browsers would be), each loading the page, then reading frames until the
# daemon goes; then one line of JSON: what each got, and the monitor's own figures.
PAGES_CODE = "from livegen.bench import watch_pages; watch_pages()"


def watch_pages() -> None:
    import asyncio

    import aiohttp

    url, count = sys.argv[1], int(sys.argv[2])
    figures: dict[str, Any] = {}

    async def page(session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(url) as response:
            await response.read()
        frames, size = 0, 0
        async with session.ws_connect(url + "ws", origin=url.rstrip("/")) as socket:
            started = time.monotonic()
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                size += len(message.data)
                if frames == 0:
                    started = time.monotonic()
                frames += '"type":"frame"' in message.data[:40]
                if frames % 100 == 1:  # the monitor's own figures, the newest kept
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(url + "state") as response:
                            state = await response.json()
                            figures.update(rate_hz=state["rate_hz"],
                                           monitor=state["figures"]["monitor"])
        return {"frames": frames, "bytes": size, "seconds": time.monotonic() - started}

    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(page(session) for _ in range(count)))

    pages = asyncio.run(main())
    monitor = figures.get("monitor", {})
    print(json.dumps({"pages": pages, "rate_hz": figures.get("rate_hz", math.nan),
                      "frame_ms_p99": monitor.get("frame_ms_p99", math.nan)}))


def _print_pages_table(args: argparse.Namespace, runs: list[EngineRun]) -> None:
    """The music's figures without pages and with them, side by side."""
    print(f"the music without the monitor and with {args.pages} pages open (back to back, "
          "the same hand):")
    print(f"{'':<34}{'without':>22} {f'with {args.pages} pages':>22}")

    def cells(values: Any) -> str:
        if not isinstance(values, dict):
            if values.size == 0:
                return "-"
            p50, p99 = np.percentile(values, [50, 99])
            return f"{p50:.2f} / {p99:.2f} / {values.max():.2f}"
        if not values.get("n", 1):
            return "-"
        return f"{values['p50']:.2f} / {values['p99']:.2f} / {values['max']:.2f}"

    def lateness(run: EngineRun) -> dict[str, float]:
        out = run.figures["output"]
        return {"p50": out["lateness_p50_ms"], "p99": out["lateness_p99_ms"],
                "max": out["lateness_max_ms"]}

    rows: list[tuple[str, Callable[[EngineRun], Any]]] = [
        ("send lateness p50/p99/max ms", lateness)]
    several = len(runs[0].heard) > 1
    for name in runs[0].heard:
        who = f" ({name})" if several else ""
        rows += [
            (f"control latency{who} p50/p99/max ms",
             lambda run, name=name: run.figures["generators"][name]["control_latency_ms"]),
            (f"switch-over{who} p50/p99/max ms",
             lambda run, name=name: run.heard[name].switch_over_ms),
        ]
    for what, pick in rows:
        print(f"{what:<34}" + " ".join(f"{cells(pick(run)):>22}" for run in runs))
    print(f"{'daemon CPU, % of one core':<34}"
          + " ".join(f"{run.figures['cpu_percent']:>22.1f}" for run in runs))


def _scenario(args: argparse.Namespace) -> str:
    inputs = (f"{args.midi_inputs} MIDI input(s) (virtual JACK ports), each sent a control "
              f"change every {KNOB_EVERY_S:g} s (mapped to a noise value held at 0: the "
              "music does not change)" if args.midi_inputs else "no MIDI inputs")
    connections = (f"{args.connections} output.connect connection(s) to receiving clients "
                   "(checked by the output's sink keeper)" if args.connections
                   else "no output.connect connections")
    return f"scenario: {inputs}; {connections}"


def _print_engine_table(args: argparse.Namespace, cfg: Any, setup: EngineSetup,
                        figures: dict[str, Any], spawn_to_ready: float, received: list,
                        heard: dict[str, SwitchOver], commit_ms: float) -> None:
    out = figures["output"]
    notes = sum(1 for _, m in received if m[0] & 0xF0 == NOTE_ON and m[2] > 0)
    layered = len(setup.played) > 1

    def row(what: str, p50: float, p99: float, worst: float, target: str) -> None:
        print(f"{what:<36}{p50:9.3f} {p99:9.3f} {worst:9.3f}   {target}")

    def summary_row(what: str, values: dict[str, float], target: str) -> None:
        row(f"{what} (n={values.get('n', 0)})", values.get("p50", np.nan),
            values.get("p99", np.nan), values.get("max", np.nan), target)

    def heard_rows(player: Played, switch_target: str) -> None:
        so = heard[player.name]
        if not setup.heard_in_time(player):
            print(f"  switch-over not measured: the hand changes every {setup.change_every:g}"
                  f" s, less than the two segments ({2 * player.segment_s:g} s) a change "
                  "may take to be heard (leave --change-every to its default)")
            return
        untold = so.untold()
        if untold:
            print(f"  switch-over not measured: {untold}")
            return
        for what, values, target in (
                ("switch-over at the receiver", so.switch_over_ms, switch_target),
                ("first note under the change", so.first_note_ms, "(the music's)")):
            if values.size:
                p50, p99 = np.percentile(values, [50, 99])
                row(f"{what} (n={values.size})", p50, p99, values.max(), target)

    titles = " and ".join(p.title() for p in setup.played)
    print(f"livegen bench engine: {args.seconds:g} s of {titles}"
          f"{', layered, each on its own channel,' if layered else ''} through JACK, a hand "
          f"sent over OSC jumping about every {setup.change_every:g} s; lookahead "
          f"{cfg.engine.lookahead_ms:g} ms, commit {commit_ms:g} ms; {notes} note-ons "
          "received by a second client"
          f"{f'; {args.busy} CPU-bound processes beside it' if args.busy else ''}")
    print(_scenario(args))
    print()
    print(f"{'':<36}{'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}   target")
    footer = []
    for player in setup.played:
        figs = figures["generators"][player.name]
        latency = figs["control_latency_ms"]
        print(f"{player.name}, {player.kind} player"
              f"{f' on channel {player.channel}' if layered else ''}:")
        if player.kind == "step":
            budget = cfg.engine.latency_budget_ms
            summary_row("control latency", latency, f"p99 <= {budget:g} ms")
            summary_row("generator step", figs["step_ms"], "")
            heard_rows(player, "p99 <= 10 ms")
            footer.append(
                f"{player.name}: over the latency budget: {figs['budget_overruns']} of "
                f"{latency.get('n', 0)}; rollbacks {figs['rollbacks']}; plan ran dry "
                f"{figs['late']}; stalls {figs['stalls']}; changes seen after their cut "
                f"{figs.get('late_changes', 0)}")
            continue
        segment_ms, bar_ms = player.segment_s * 1e3, player.segment_s * 1e3 / player.settings.bars
        summary_row("segment planning", figs["plan_ms"],
                    f"<= {PLANNING_SHARE * bar_ms:g} ms (its share of a bar)")
        summary_row("control latency", latency,
                    f"{segment_ms:g}-{2 * segment_ms:g} ms (to its bar line)")
        heard_rows(player, f"<= {2 * segment_ms:g} ms (two segments)")
        own = ", ".join(f"{key} {value:g}" for key, value in figs["generator"].items()
                        if isinstance(value, int | float))
        unheard = heard[player.name].unheard
        footer.append(
            f"{player.name}: segments {figs['segments']}; missed bar lines {figs['missed']};"
            f" over the planning budget {figs['budget_overruns']}; replans "
            f"{figs['replans']}; failures {figs['failures']}"
            f"{f'; changes the end cut off (left out) {unheard}' if unheard else ''}"
            f"{f'; its last segment: {own}' if own else ''}")
    print("output:")
    row(f"send lateness (n={out['messages']})", out["lateness_p50_ms"],
        out["lateness_p99_ms"], out["lateness_max_ms"], "p99 <= 1 ms")
    print()
    for line in footer:
        print(line)
    print(f"daemon CPU {figures['cpu_percent']:.1f}% of one core; RSS {figures['rss_mb']:.0f} "
          f"MB (peak {figures['peak_rss_mb']:.0f} MB; target <= 300 MB)")
    print(f"start to READY: {spawn_to_ready:.2f} s from spawning the process "
          f"({figures['ready_s']:.2f} s inside it; target <= 2 s)")


def _print_scenario_check(args: argparse.Namespace, figures: dict[str, Any], knobs_sent: int,
                          listened: int, through_connections: list[int]) -> None:
    """What the scenario's parts got: a check that the work measured was done."""
    parts = []
    if args.midi_inputs:
        readings = [figures["inputs"].get(f"knob{k}", {}).get("readings", 0)
                    for k in range(1, args.midi_inputs + 1)]
        parts.append(f"the MIDI inputs made {', '.join(map(str, readings))} readings of "
                     f"{knobs_sent} control changes sent")
    if args.connections:
        parts.append(f"the connections received {', '.join(map(str, through_connections))} "
                     f"messages (the listener {listened})")
    print("; ".join(parts))


def _free_tcp_port() -> int:

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _free_udp_port() -> int:

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- the table of benches

BENCHES: dict[str, Callable[[Sequence[str]], int]] = {
    "output": bench_output,
    "camera": bench_camera,
    "charrnn": bench_charrnn,
    "engine": bench_engine,
}


def bench_command(args: argparse.Namespace) -> int:
    """`livegen bench WHAT [options]`: run the bench named `args.what` with `args.rest`."""
    bench = BENCHES.get(args.what)
    if bench is None:
        raise LivegenError(f"bench {args.what}: not written yet "
                           f"(benches: {', '.join(sorted(BENCHES))})")
    return bench(list(args.rest))
