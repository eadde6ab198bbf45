"""The signal chain before calibration, for all channels at once: implausible samples
dropped, the DC offset removed (one-pole high-pass), rectified, and the RMS or mean
absolute value over a window."""

from __future__ import annotations

import math

import numpy as np

from livegen.inputs.base import InputStats
from livegen.inputs.emg.config import EmgInputConfig


def plausible_samples(samples: np.ndarray, limit: float, stats: InputStats) -> np.ndarray:
    """The rows of (n, channels) samples whose every value is finite and within +-limit;
    the others are counted as dropped ('nan', 'out of range')."""
    finite = np.isfinite(samples).all(axis=1)
    plausible = finite & (np.abs(samples) <= limit).all(axis=1)
    if plausible.all():
        return samples
    if not finite.all():
        stats.drop("nan", int((~finite).sum()))
    beyond = int((finite & ~plausible).sum())
    if beyond:
        stats.drop("out of range", beyond)
    return samples[plausible]


class EnvelopeChain:
    """DC removal, rectification and a windowed RMS/MAV envelope, for all channels at once.

    Whatever it is fed, its state stays finite: a sample that would make it non-finite
    (an overflow, a NaN) restarts the DC tracker and is left out of the window, and
    `resets` counts it. The window itself holds only finite values, so the envelope is
    right again once the tracker has settled.
    """

    def __init__(self, channels: int, sample_rate: float, config: EmgInputConfig) -> None:
        self.raw = config.signal == "raw"
        self.rms = config.envelope == "rms"
        window = max(1, round(config.window_ms / 1000.0 * sample_rate))
        self.ring = np.zeros((window, channels))
        self.position = 0
        self.filled = 0
        # One-pole low-pass that tracks the DC level; the signal minus it is high-passed.
        self.alpha = 1.0 - math.exp(-2.0 * math.pi * config.highpass_hz / sample_rate)
        self.dc: np.ndarray | None = None
        self.resets = 0

    def push(self, samples: np.ndarray) -> None:
        """Add (n, channels) samples in time order."""
        for row in samples:
            # Overflow is handled below, by a reset; numpy's warning would only be noise.
            with np.errstate(over="ignore", invalid="ignore"):
                if self.raw:
                    if self.dc is None:
                        self.dc = row.copy()  # start at the first sample: no transient
                    self.dc += self.alpha * (row - self.dc)
                    value = np.abs(row - self.dc)
                else:
                    value = np.maximum(row, 0.0)
                level = value * value if self.rms else value
            # A non-finite DC level makes every later level non-finite too: the one check
            # catches both, and the tracker starts afresh from the next sample.
            if not np.isfinite(level).all():
                self.dc = None
                self.resets += 1
                continue
            self.ring[self.position] = level
            self.position = (self.position + 1) % len(self.ring)
            self.filled = min(self.filled + 1, len(self.ring))

    def envelope(self) -> np.ndarray:
        """The envelope of each channel over the last window (shorter at the start)."""
        if not self.filled:
            return np.zeros(self.ring.shape[1])
        mean = self.ring[:self.filled].mean(axis=0) if self.filled < len(self.ring) \
            else self.ring.mean(axis=0)
        return np.sqrt(mean) if self.rms else mean
