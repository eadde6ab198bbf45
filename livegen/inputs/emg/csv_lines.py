"""Text lines of numbers on a serial port (an Arduino with MyoWare sensors), at the
configured `sample_rate`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from livegen.inputs.base import InputStats, LineReader
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.source import PROTOCOL_RATE, open_serial


class CsvSource:
    """Text lines of numbers separated by commas, spaces, tabs or semicolons; the first
    `channels` numbers of each line are the channels."""

    def __init__(self, config: EmgInputConfig, stats: InputStats) -> None:
        self.config = config
        self.stats = stats
        self.sample_rate = config.sample_rate or PROTOCOL_RATE["csv"]
        self.lines = LineReader(stats)
        self.port: Any = None

    def open(self) -> str:
        self.port = open_serial(self.config)
        return f"CSV lines on {self.config.port}"

    def read(self) -> np.ndarray:
        rows = []
        for line in self.lines.feed(self.port.read(max(1, self.port.in_waiting))):
            row = parse_csv_line(line, self.config.channels)
            if isinstance(row, str):
                self.stats.drop(row)
            else:
                rows.append(row)
        return np.array(rows, float).reshape(-1, self.config.channels)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()


def parse_csv_line(line: str, channels: int) -> list[float] | str:
    """The first `channels` numbers of a line, or the reason it was dropped."""
    fields = line.replace(",", " ").replace(";", " ").split()
    try:
        numbers = [float(f) for f in fields[:channels]]
    except ValueError:
        return "garbage"
    if len(numbers) < channels:
        return "short line"
    if not all(math.isfinite(n) for n in numbers):
        return "nan"
    return numbers
