"""A small deterministic segment generator for the tests (not shipped): one note per beat,
up the key's scale from a register the pitch control sets, on the clock's grid.

Played as a plugin (`[generators.arp] plugin = "arpeggio:Arpeggio"`, with tests/plugins on
PYTHONPATH). Test-only switches make it misbehave on purpose: raise at a bar, take longer
than a bar, or hang (forever, as a generator stuck in native code would) while the pitch
control is above a level.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from livegen.config import GeneratorConfig, setting
from livegen.generators.segment import Segment, SegmentNote, SegmentRequest
from livegen.music.scales import MAJOR_SCALE as MAJOR


@dataclass(frozen=True, slots=True)
class ArpeggioConfig(GeneratorConfig):
    bars: int = setting(1, lo=1, hi=4, doc="bars per segment")
    fail_at_bar: int = setting(-1, doc="raise when asked for this bar (-1: never)")
    slow_at_bar: int = setting(-1, doc="take 1.5 bars to make this bar (-1: never)")
    hang_above: float = setting(2.0, doc="hang while the pitch control is above this")


class Arpeggio:
    kind = "segment"
    Config = ArpeggioConfig
    name = "arpeggio"

    def __init__(self, config: ArpeggioConfig) -> None:
        self.config = config
        self.bars = config.bars

    @classmethod
    def from_config(cls, config: ArpeggioConfig, *, seed: int) -> Arpeggio:
        return cls(config)

    def warm_up(self) -> None:
        """Nothing to warm."""

    def segment(self, request: SegmentRequest) -> Segment:
        config, controls = self.config, request.controls
        if request.bar == config.fail_at_bar:
            raise RuntimeError(f"asked to fail at bar {request.bar}")
        if controls.pitch > config.hang_above:
            threading.Event().wait()  # stuck for good
        if request.bar == config.slow_at_bar:
            time.sleep(1.5 * request.beats_per_bar * 60.0 / request.bpm)
        low = 48 + round(controls.pitch * 36)  # the register: C3 .. C6
        notes = []
        for beat in range(request.beats):
            degree = (request.bar * request.beats_per_bar + beat) % len(MAJOR)
            pitch = low + (controls.key + MAJOR[degree]) % 12
            notes.append(SegmentNote(beat=float(beat), length=0.5, pitch=pitch, velocity=90))
        return Segment(bar=request.bar, bars=request.bars, notes=tuple(notes))
