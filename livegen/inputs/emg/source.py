"""What an EMG sample source is (`SampleSource`), what each protocol delivers (its
sample rate, the envelope of a strong contraction, the largest sample it can make), and how
a source opens its serial port."""

from __future__ import annotations

import errno
import os
from typing import Any, Protocol

import numpy as np

from livegen.inputs.emg.config import EmgInputConfig

# Samples per second each protocol delivers when the config does not say.
PROTOCOL_RATE = {"myo-bled112": 200.0, "cyton": 250.0, "csv": 200.0}
# An envelope that counts as a strong contraction when there is no calibration: Myo int8
# counts, Cyton and BrainFlow microvolts, Arduino ADC counts (0..1023 around mid-scale).
FULL_SCALE = {"myo-bled112": 50.0, "cyton": 200.0, "csv": 300.0, "brainflow": 200.0}
READ_TIMEOUT_S = 0.02  # a serial read returns after this long without data: "idle"
CYTON_UV_PER_COUNT = 4.5 / 24.0 / (2**23 - 1) * 1e6  # Vref 4.5 V, gain 24, 24-bit ADC
# The largest magnitude a sample of each source can have. A number beyond it is not a
# measurement (a corrupted line, a driver's bug) and would only wreck the filters, so it is
# dropped as 'out of range'. Myo: int8 counts. Cyton: its ADC's full scale at gain 24
# (about 187,500 uV), which decoding cannot exceed. CSV: counts of an ADC of up to 24 bits,
# or microvolts of the same size; Arduino boards send 10- to 16-bit counts. BrainFlow:
# microvolts; 10 V is beyond the input range of any biopotential amplifier at any gain.
SAMPLE_LIMIT = {"myo-bled112": 128.0, "cyton": 2**23 * CYTON_UV_PER_COUNT,
                "csv": float(2**24), "brainflow": 1e7}


class SampleSource(Protocol):
    """Where samples come from: `read` returns an (n, channels) array, often empty, soon."""

    sample_rate: float

    def open(self) -> str: ...

    def read(self) -> np.ndarray: ...

    def close(self) -> None: ...


def open_serial(config: EmgInputConfig) -> Any:
    """The configured serial port, opened. Raises OSError with one line for people."""
    import serial  # imported here so `livegen --help` stays light

    try:
        return serial.Serial(config.port, config.baud, timeout=READ_TIMEOUT_S,
                             exclusive=True)
    except serial.SerialException as exc:
        raise OSError(serial_open_problem(config.port, exc)) from None


def serial_open_problem(port: str, exc: OSError) -> str:
    """Why `port` would not open and what to do, naming the port once (pyserial's own
    message names it twice more, in its text and in the OS error it quotes)."""
    code = exc.errno
    if code == errno.ENOENT:
        return (f"{port}: no such device; plug the EMG receiver in, or set the input's port "
                "to one that `livegen devices` lists")
    if code == errno.EACCES:
        return f"{port}: no permission; add your user to group 'dialout' and log in again"
    if code == errno.EBUSY or "exclusively lock" in str(exc):
        return f"{port}: in use by another program; close it (is livegen already running?)"
    # pyserial quotes the port only in the messages that carry an errno.
    reason = os.strerror(code) if code else str(exc)
    return (f"{port}: cannot open it as a serial port ({reason}); check the input's port "
            "with `livegen devices`")
