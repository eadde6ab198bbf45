"""The EMG input's config: [inputs.NAME] with type = "emg" (what `livegen devices` says of
it too). Light: neither a serial port nor BrainFlow is touched until asked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from livegen.config import InputConfig, setting
from livegen.errors import LivegenError
from livegen.inputs.base import Check, check_serial_device


@dataclass(frozen=True, slots=True)
class EmgInputConfig(InputConfig):
    """An EMG armband or board: eight (or so) channels of muscle activity, each turned into
    an envelope normalised to 0..1 by the performer's calibration."""
    protocol: Literal["myo-bled112", "cyton", "csv", "brainflow"] = setting(
        "csv", doc="myo-bled112: a Myo through a BLED112 dongle; cyton: OpenBCI Cyton "
                   "packets; csv: text lines of numbers (Arduino + MyoWare); brainflow: "
                   "a BrainFlow board (needs the [sensors] extra)")
    port: str = setting("/dev/livegen-emg", doc="serial device ('' = BrainFlow's default)")
    baud: int = setting(115200, lo=1200, hi=4_000_000, doc="serial baud rate")
    channels: int = setting(8, lo=1, hi=16, doc="channels used: ch0, ch1, ... up to this many")
    sample_rate: float | None = setting(
        None, lo=10.0, hi=20000.0, doc="samples per second; unset = the protocol's own "
                                       "(Myo 200, Cyton 250, BrainFlow the board's, csv 200)")
    signal: Literal["raw", "envelope"] = setting(
        "raw", doc="raw: remove DC and rectify first; envelope: the sensor already sends "
                   "an envelope (MyoWare SIG pin), only smooth and normalise it")
    envelope: Literal["rms", "mav"] = setting(
        "rms", doc="root mean square or mean absolute value over the window")
    window_ms: float = setting(150.0, lo=5.0, hi=5000.0, doc="envelope window")
    highpass_hz: float = setting(10.0, lo=0.1, hi=200.0,
                                 doc="raw: cut-off that removes the DC offset and drift")
    rate_hz: float = setting(50.0, lo=1.0, hi=1000.0, doc="readings per second")
    calibration: Path | None = setting(
        None, doc="rest and squeeze levels from `livegen calibrate emg` (JSON or TOML); "
                  "unset = rest 0, full_scale at the top")
    full_scale: float | None = setting(
        None, lo=1e-9, hi=1e9, doc="envelope read as 1.0 without a calibration; unset = the "
                                   "protocol's typical strong contraction")
    stall_s: float = setting(2.0, lo=0.1, hi=600.0,
                             doc="no samples for this long counts as an unplug")
    myo_address: str = setting("", doc="myo: its Bluetooth address 'aa:bb:cc:dd:ee:ff'; "
                                       "'' = the first Myo a scan finds")
    myo_emg_mode: Literal["filtered", "raw"] = setting(
        "filtered", doc="myo: the armband's own mains/band filter on (filtered) or off (raw)")
    scan_s: float = setting(10.0, lo=0.5, hi=120.0, doc="myo: how long to scan for it")
    board: str = setting("synthetic", doc="brainflow: board name (synthetic, cyton, "
                                          "gforce_pro, ...) or its numeric id")

    def offered_keys(self) -> tuple[str, ...]:
        return (*(f"ch{i}" for i in range(self.channels)), "total")

    def describe(self) -> str:
        where = f"board {self.board}" if self.protocol == "brainflow" else self.port
        return f"emg, {self.protocol} on {where}"

    def reachable(self) -> Check:
        """Its serial device (or BrainFlow and its board), and its calibration file."""
        if self.protocol == "brainflow":
            try:
                import brainflow  # noqa: F401
            except ImportError:
                return Check(False, "BrainFlow is not installed: pip install 'livegen[sensors]'")
            if self.board == "synthetic":
                return Check(True, "BrainFlow's synthetic board")
            return (check_serial_device(self.port) if self.port
                    else Check(True, f"BrainFlow board {self.board}"))
        serial_check = check_serial_device(self.port)
        if serial_check.ok and self.calibration is not None:
            from livegen.inputs.emg.calibration import Calibration

            try:
                Calibration.load(self.calibration, self.channels)
            except LivegenError as exc:
                return Check(False, str(exc))
        return serial_check

    def check(self, path: str, problems: list[str]) -> None:
        fixed = {"myo-bled112": 8, "cyton": 8}
        if self.protocol in fixed and self.channels > fixed[self.protocol]:
            problems.append(f"{path}.channels: {self.protocol} has {fixed[self.protocol]} "
                            f"channels, got {self.channels}")
        if self.protocol != "brainflow" and not self.port:
            problems.append(f"{path}.port: needed for protocol {self.protocol!r}; name the "
                            "serial device, e.g. '/dev/livegen-myo' (see `livegen devices`)")
        if self.myo_address and not re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}",
                                                 self.myo_address):
            problems.append(f"{path}.myo_address: {self.myo_address!r} is not a Bluetooth "
                            "address like 'c8:2f:84:e5:1d:07'")
