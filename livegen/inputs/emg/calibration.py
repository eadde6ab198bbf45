"""A performer's calibration: per channel, the envelope at rest (-> 0) and at maximum
contraction (-> 1); read from and written to JSON or TOML."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livegen import toml_writer
from livegen.errors import LivegenError


@dataclass(frozen=True)
class Calibration:
    """Per channel: the envelope at rest (-> 0) and at maximum contraction (-> 1)."""

    rest: np.ndarray
    top: np.ndarray

    def normalise(self, envelope: np.ndarray) -> np.ndarray:
        return np.clip((envelope - self.rest) / (self.top - self.rest), 0.0, 1.0)

    @classmethod
    def default(cls, channels: int, full_scale: float) -> Calibration:
        return cls(np.zeros(channels), np.full(channels, full_scale))

    @classmethod
    def load(cls, path: Path, channels: int) -> Calibration:
        """Read a calibration file (JSON or TOML). Raises LivegenError naming the fix."""
        fix = "run `livegen calibrate emg` to write a new one"
        try:
            text = path.read_text(encoding="utf-8")
            table = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            rest = np.asarray(table["rest"], float)
            top = np.asarray(table["max"], float)
        except OSError as exc:
            raise LivegenError(f"cannot read the EMG calibration {path}: {exc.strerror}; "
                               f"{fix}") from None
        except (ValueError, KeyError, TypeError, tomllib.TOMLDecodeError):
            raise LivegenError(f"{path} is not an EMG calibration (it needs 'rest' and 'max' "
                               f"arrays of numbers); {fix}") from None
        if rest.ndim != 1 or rest.shape != top.shape or len(rest) < channels:
            raise LivegenError(f"{path} calibrates {len(rest)} channels, the input uses "
                               f"{channels}; {fix}")
        rest, top = rest[:channels], top[:channels]
        with np.errstate(over="ignore", invalid="ignore"):
            spread = top - rest  # the divisor of every reading: it must be finite too
        if not (np.all(np.isfinite(rest)) and np.all(np.isfinite(spread))
                and np.all(spread > 0)):
            raise LivegenError(f"{path}: every channel needs finite levels with max above "
                               f"rest; {fix}")
        return cls(rest, top)

    def save(self, path: Path, about: Mapping[str, Any]) -> None:
        """Write JSON, or TOML when the path ends in .toml; `about` records the settings."""
        table = {**about, "rest": [round(float(v), 6) for v in self.rest],
                 "max": [round(float(v), 6) for v in self.top]}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".toml":
            text = "".join(f"{line}\n" for line in toml_writer.assignments(table))
        else:
            text = json.dumps(table, indent=2) + "\n"
        path.write_text(text, encoding="utf-8")
