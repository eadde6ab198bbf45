"""A simulated performer: a hand that moves between seeded positions and an arm whose eight
EMG channels tense in bursts. It yields the same keys as the camera (hand.*) and the EMG
input (emg.ch0..ch7, emg.total), so a config written for the sim works for the real rig.

Every value is a pure function of (seed, seconds since start): two runs with one seed
perform the same gestures.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from livegen.config import InputConfig, setting
from livegen.inputs.base import Check, InputStats, Reading
from livegen.inputs.camera import HAND_KEYS

EMG_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class SimInputConfig(InputConfig):
    seed: int = setting(1, lo=0, hi=2**32 - 1)
    rate_hz: float = setting(30.0, lo=1.0, hi=1000.0, doc="readings per second")
    period_s: float = setting(16.0, lo=1.0, hi=3600.0, doc="length of one gesture phrase")

    def offered_keys(self) -> tuple[str, ...]:
        return (*HAND_KEYS, *(f"emg.ch{i}" for i in range(EMG_CHANNELS)), "emg.total")

    def reachable(self) -> Check:
        return Check(True, "simulated, always there")


def _smoothstep(x: float) -> float:
    return x * x * (3.0 - 2.0 * x)


class Performer:
    """The gestures: waypoints every `period_s / 6` seconds, eased between."""

    def __init__(self, seed: int, period_s: float = 16.0) -> None:
        self.seed = seed
        self.step_s = period_s / 6.0
        rng = np.random.default_rng(seed)
        self.tremor_phase = rng.uniform(0.0, 2.0 * math.pi, size=3)
        self.emg_phase = rng.uniform(0.0, 2.0 * math.pi, size=EMG_CHANNELS)
        self.emg_rate = rng.uniform(0.2, 0.6, size=EMG_CHANNELS)

    def _waypoint(self, index: int) -> np.ndarray:
        # x, y, presence, squeeze: drawn per waypoint so any time can be evaluated alone.
        rng = np.random.default_rng((self.seed, index))
        x, y = rng.uniform(0.05, 0.95, size=2)
        present = 0.0 if rng.random() < 0.08 else 1.0
        squeeze = rng.uniform(0.0, 1.0) ** 2
        return np.array([x, y, present, squeeze])

    def values(self, t: float) -> dict[str, float]:
        index = int(t // self.step_s)
        frac = (t - index * self.step_s) / self.step_s
        # Hold each pose for most of its step, then move: gestures, not a constant drift.
        move = _smoothstep(min(1.0, max(0.0, (frac - 0.6) / 0.4)))
        a, b = self._waypoint(index), self._waypoint(index + 1)
        x, y, present, squeeze = a + (b - a) * move
        # A slight tremor on x and y, a slow breathing of the hand's apparent size.
        tremor = np.sin(2.0 * math.pi * np.array([5.1, 6.3, 0.7]) * t + self.tremor_phase)
        values = {
            "hand.x": float(np.clip(x + 0.01 * tremor[0], 0.0, 1.0)),
            "hand.y": float(np.clip(y + 0.01 * tremor[1], 0.0, 1.0)),
            "hand.present": float(present >= 0.5),
            "hand.size": float(0.25 + 0.05 * tremor[2]),
            "hand.fingers": float(round(5 * (1.0 - squeeze))),
        }
        # Each channel: the squeeze shared by all, shaped per channel, plus its own pulse.
        pulse = 0.5 + 0.5 * np.sin(2.0 * math.pi * self.emg_rate * t + self.emg_phase)
        emg = np.clip(squeeze * (0.6 + 0.4 * pulse), 0.0, 1.0)
        for channel in range(EMG_CHANNELS):
            values[f"emg.ch{channel}"] = float(emg[channel])
        values["emg.total"] = float(emg.mean())
        return values


class SimInput:
    """The simulated performer as an input: `rate_hz` readings per second."""

    def __init__(self, name: str, config: SimInputConfig) -> None:
        self.name = name
        self.config = config
        self.stats = InputStats()
        self.performer = Performer(config.seed, config.period_s)

    async def readings(self) -> AsyncIterator[Reading]:
        start = time.monotonic()
        period = 1.0 / self.config.rate_hz
        tick = 0
        while True:
            due = start + tick * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            yield Reading(self.name, now, self.performer.values(now - start))
            tick += 1
