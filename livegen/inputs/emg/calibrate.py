"""`livegen calibrate emg`: record rest and maximum contraction with the performer and
write the calibration file the input's `calibration` key points to."""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from livegen.errors import LivegenError
from livegen.inputs.base import InputEnded
from livegen.inputs.emg.calibration import Calibration
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.input import EmgInput

PHASES = (
    ("rest", "relax: let the arm hang loose and still"),
    ("squeeze", "squeeze: make a fist, as hard as you can hold it"),
)


def calibrate_command(args: argparse.Namespace) -> int:
    """`livegen calibrate emg`: record rest and maximum contraction, write the file the
    input's `calibration` key points to (or propose one), and say what was measured."""
    from livegen import config as config_module

    config = config_module.load(args.config)
    emg_inputs = {n: c for n, c in config.inputs.items() if isinstance(c, EmgInputConfig)}
    if not emg_inputs:
        raise LivegenError(f"{config.source}: no [inputs.NAME] with type = 'emg' to calibrate")
    name = args.input or next(iter(emg_inputs))
    if name not in emg_inputs:
        raise LivegenError(f"no emg input named {name!r} in {config.source} "
                           f"(emg inputs: {', '.join(emg_inputs)})")
    input_config = emg_inputs[name]
    base = config.source.parent if config.source else Path.cwd()
    path = input_config.calibration or base / f"{name}-calibration.json"
    seconds = float(args.seconds)
    out = sys.stdout

    emg = EmgInput(name, input_config)
    stopping = threading.Event()
    envelopes = emg.envelopes(stopping)
    print(f"Calibrating {name} ({input_config.protocol}): {len(PHASES)} phases of "
          f"{seconds:g} s. Follow each line.", file=out, flush=True)
    levels: dict[str, np.ndarray] = {}
    try:
        for number, (phase, instruction) in enumerate(PHASES, start=1):
            levels[phase] = _record_phase(envelopes, f"{number}/{len(PHASES)} {instruction}",
                                          seconds, out)
    except (OSError, InputEnded) as exc:
        raise LivegenError(f"{name}: the EMG source failed during calibration ({exc}); "
                           "check the connection (`livegen devices`) and try again") from None
    finally:
        stopping.set()
        envelopes.close()

    # The first quarter of each phase is the performer reacting; the envelope window also
    # still holds the previous phase.
    rest = np.median(levels["rest"], axis=0)
    top = np.percentile(levels["squeeze"], 90, axis=0)
    weak = [i for i in range(len(rest)) if not top[i] > 1.5 * rest[i] + 1e-9]
    if len(weak) == len(rest):
        raise LivegenError(f"{name}: no channel changed between rest and squeeze; is the "
                           "armband on and the performer squeezing? Nothing written.")
    for i in weak:
        print(f"warning: ch{i} barely changed (rest {rest[i]:.3g}, squeeze {top[i]:.3g}); "
              "check its electrode", file=out)
        top[i] = max(top[i], 2.0 * rest[i], rest[i] + 1e-6)
    about = {"livegen_emg_calibration": 1, "input": name, "protocol": input_config.protocol,
             "signal": input_config.signal, "envelope": input_config.envelope,
             "window_ms": input_config.window_ms,
             "created": datetime.datetime.now().isoformat(timespec="seconds")}
    Calibration(rest, top).save(path, about)
    for i in range(len(rest)):
        print(f"  ch{i}: rest {rest[i]:9.3f}   max {top[i]:9.3f}", file=out)
    print(f"wrote {path}", file=out)
    if input_config.calibration is None:
        print(f'add  calibration = "{path.name}"  to [inputs.{name}] in {config.source}',
              file=out)
    return 0


def _record_phase(envelopes: Iterator[np.ndarray], prompt: str, seconds: float,
                  out: Any) -> np.ndarray:
    """Collect envelopes for `seconds` while counting down on one line; drop the first
    quarter (reaction time)."""
    print(prompt, end="", file=out, flush=True)
    started = time.monotonic()
    shown = math.ceil(seconds)
    print(f"  {shown}", end="", file=out, flush=True)
    collected: list[tuple[float, np.ndarray]] = []
    for envelope in envelopes:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        collected.append((elapsed, envelope))
        left = math.ceil(seconds - elapsed)
        if left < shown:
            shown = left
            print(f" {shown}", end="", file=out, flush=True)
    print("  done", file=out, flush=True)
    kept = [envelope for elapsed, envelope in collected if elapsed >= seconds / 4]
    if not kept:
        raise InputEnded("no samples arrived")
    return np.array(kept)
