"""Figures the daemon keeps about itself: timing samples and the process's CPU and memory.

`Samples` is a preallocated ring buffer: recording is one store and one increment, cheap
enough for the output thread and the inference loop. Percentiles are computed only when a
report asks.
"""

from __future__ import annotations

import math
import os
import resource
import time

import numpy as np


class Samples:
    """The last `capacity` values of one measurement (e.g. send lateness in seconds)."""

    def __init__(self, capacity: int = 8192) -> None:
        self._values = np.zeros(capacity, dtype=np.float64)
        # One writer (the thread that measures), no lock: a report taken while it records
        # may miss or half-see the newest value, which does not move a percentile.
        self._count = 0

    def record(self, value: float) -> None:
        self._values[self._count % self._values.size] = value
        self._count += 1

    @property
    def count(self) -> int:
        """How many values were ever recorded (not only those still held)."""
        return self._count

    def values(self) -> np.ndarray:
        """The held values, oldest first (a copy)."""
        count, size = self._count, self._values.size
        if count <= size:
            return self._values[:count].copy()
        start = count % size
        return np.concatenate([self._values[start:], self._values[:start]])

    def percentiles(self, scale: float = 1e3) -> tuple[float, float, float]:
        """p50, p99 and max of the held values times `scale` (s -> ms); NaN when empty."""
        values = self.values()
        if values.size == 0:
            return math.nan, math.nan, math.nan
        p50, p99 = np.percentile(values, [50, 99])
        return float(p50 * scale), float(p99 * scale), float(values.max() * scale)

    def summary(self, scale: float = 1e3) -> dict[str, float]:
        """p50, p99, max and count of the held values, times `scale` (default: s -> ms)."""
        if self._count == 0:
            return {"n": 0}
        p50, p99, worst = self.percentiles(scale)
        return {"n": int(self._count), "p50": p50, "p99": p99, "max": worst}


class ProcessMeter:
    """CPU use since the last reading (percent of one core) and resident memory."""

    def __init__(self) -> None:
        self._last = self._cpu_and_wall()

    @staticmethod
    def _cpu_and_wall() -> tuple[float, float]:
        times = os.times()
        return times.user + times.system, time.monotonic()

    def cpu_percent(self) -> float:
        cpu, wall = self._cpu_and_wall()
        last_cpu, last_wall = self._last
        self._last = (cpu, wall)
        return 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-9)

    @staticmethod
    def peak_rss_mb() -> float:
        """The most resident memory the process has used, in MB (Linux counts KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6

    @staticmethod
    def rss_mb() -> float:
        """Resident set size now, in MB (from /proc; peak RSS where /proc is missing)."""
        try:
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
        except OSError:
            return ProcessMeter.peak_rss_mb()
