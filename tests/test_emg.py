"""The EMG input through real pyserial on pseudo-terminals: a fake Cyton, a fake BLED112
dongle with a Myo behind it and an Arduino writing CSV lines, each with garbage, cut-off
packets and a hang-up (the pty closed, then a new one behind the same stable name)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import os
import select
import struct
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livegen.config import loads
from livegen.errors import LivegenError
from livegen.inputs import create
from livegen.inputs.base import Backoff, InputStats, Reading, supervise
from livegen.inputs.emg.bgapi import BgapiFramer
from livegen.inputs.emg.calibrate import calibrate_command
from livegen.inputs.emg.calibration import Calibration
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.cyton import CytonFramer, decode_cyton
from livegen.inputs.emg.envelope import EnvelopeChain
from livegen.inputs.emg.input import EmgInput
from livegen.inputs.emg.source import SAMPLE_LIMIT

FAST = Backoff(first=0.1, factor=2.0, cap=1.0)
UV_PER_COUNT = 4.5 / 24.0 / (2**23 - 1) * 1e6


class PtyDevice:
    """A serial device on a pty behind a stable name (a symlink, as udev makes), which can
    be unplugged and plugged in again as a new pty."""

    def __init__(self, folder: Path, name: str = "livegen-emg") -> None:
        self.link = folder / name
        self.master = -1
        self.slave = -1
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)

    def replug(self) -> None:
        self.unplug()
        self.plug()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if ready else b""


def cyton_packet(sample: int, microvolts: np.ndarray) -> bytes:
    counts = np.clip(np.round(microvolts / UV_PER_COUNT), -(2**23), 2**23 - 1).astype(int)
    body = b"".join((int(c) & 0xFFFFFF).to_bytes(3, "big") for c in counts)
    return bytes([0xA0, sample & 0xFF]) + body + bytes(6) + b"\xc0"


# A performance: (samples, the channel that bursts or None for rest).
SCRIPT_BEFORE = [(150, None), (150, 0), (150, None), (150, 3), (100, None)]
SCRIPT_AFTER = [(150, None), (150, 5), (150, None)]
BURST_ORDER = [0, 3, 5]


def signal(script: list[tuple[int, int | None]], amplitude: float, rest: float,
           seed: int, offset: float = 0.0) -> Iterator[np.ndarray]:
    """Rows of 8 channels: small noise at rest, loud noise on the bursting channel."""
    rng = np.random.default_rng(seed)
    dc = offset * np.arange(1, 9)  # electrode offsets the chain must remove
    for count, channel in script:
        for _ in range(count):
            row = rng.normal(0.0, rest, 8)
            if channel is not None:
                row[channel] = rng.normal(0.0, amplitude)
            yield row + dc


def burst_sequence(readings: list[Reading], channels: int = 8) -> list[int]:
    """The channels that burst, in order, one entry per burst (rest readings between)."""
    order: list[int] = []
    resting = True
    for reading in readings:
        levels = [reading.values[f"ch{i}"] for i in range(channels)]
        loudest = int(np.argmax(levels))
        if levels[loudest] > 0.5 and resting:
            order.append(loudest)
            resting = False
        elif max(levels) < 0.2:
            resting = True
    return order


def run_input(emg: EmgInput, until: Callable[[], bool], timeout: float) -> list[Reading]:
    """Run the input under the real supervisor until `until()` holds; its readings."""
    readings: list[Reading] = []

    async def main() -> None:
        task = asyncio.create_task(supervise(emg, readings.append, FAST))
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the last samples through the chain
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return readings


def feed_and_read(emg: EmgInput, device: PtyDevice, feed: Callable[[], None],
                  done: threading.Event, timeout: float) -> list[Reading]:
    """Run `feed` (which writes to the device, then sets `done`) in a thread while the
    input runs under the supervisor; unplug the device after. The input's readings."""
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    readings = run_input(emg, done.is_set, timeout=timeout)
    writer.join(1)
    device.unplug()
    return readings


def emg_config(device: PtyDevice, **keys: object) -> EmgInputConfig:
    return EmgInputConfig(type="emg", port=str(device.link), stall_s=1.0, **keys)


# ---------------------------------------------------------------- Cyton

def test_cyton_envelopes_follow_bursts_through_garbage_and_a_replug(tmp_path: Path) -> None:
    device = PtyDevice(tmp_path)
    emg = create("arm", emg_config(device, protocol="cyton", full_scale=100.0))
    assert isinstance(emg, EmgInput)
    done = threading.Event()

    def cyton() -> None:
        # Like a real Cyton: silent until the host sends 'b', then 250 packets a second
        # (here four times faster).
        for part, script in enumerate((SCRIPT_BEFORE, SCRIPT_AFTER)):
            while b"b" not in device.read(0.1):
                pass
            packets = [cyton_packet(i, row) for i, row in
                       enumerate(signal(script, 150.0, 3.0, seed=part, offset=4000.0))]
            for i in range(0, len(packets), 10):
                chunk = b"".join(packets[i:i + 10])
                if i in (100, 400):
                    chunk = b"\x13\xa0\xff garbage \xc0\xa0" + chunk
                if i in (200, 500):
                    chunk = packets[i][:17] + chunk  # a packet cut short
                device.write(chunk)
                time.sleep(0.01)
            if part == 0:
                device.replug()
        done.set()

    readings = feed_and_read(emg, device, cyton, done, timeout=20)

    assert burst_sequence(readings) == BURST_ORDER
    assert emg.stats.restarts >= 1
    assert emg.stats.dropped["garbage"] >= 2
    assert emg.stats.dropped["partial packet"] >= 2
    assert all(0.0 <= v <= 1.0 for r in readings for v in r.values.values())
    assert set(readings[0].values) == {f"ch{i}" for i in range(8)} | {"total"}


def test_cyton_decoding_scales_24_bit_counts_to_microvolts() -> None:
    microvolts = np.array([0.0, 1.0, -1.0, 1000.0, -1000.0, 187000.0, -187000.0, 5.5])
    decoded = decode_cyton([cyton_packet(7, microvolts)])
    assert decoded.shape == (1, 8)
    np.testing.assert_allclose(decoded[0], microvolts, atol=UV_PER_COUNT)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\xa0", b"")), min_size=1,
                max_size=6),
       st.integers(1, 64))
def test_cyton_framer_keeps_every_packet_that_garbage_does_not_touch(garbage: list[bytes],
                                                                     chunk: int) -> None:
    stats = InputStats()
    framer = CytonFramer(stats)
    rows = np.arange(8 * len(garbage)).reshape(-1, 8) * 10.0
    stream = b"".join(g + cyton_packet(i, row) for i, (g, row) in enumerate(zip(garbage, rows,
                                                                             strict=True)))
    packets = []
    for i in range(0, len(stream), chunk):
        packets += framer.feed(stream[i:i + chunk])
    packets += framer.feed(b"", idle=True)
    # A packet directly followed by garbage cannot be told from a cut-off one whose footer
    # happens to look right: it is dropped, never misread.
    kept = [i for i in range(len(rows)) if i + 1 == len(rows) or not garbage[i + 1]]
    np.testing.assert_allclose(decode_cyton(packets).reshape(-1, 8), rows[kept],
                               atol=UV_PER_COUNT)
    lost = len(rows) - len(kept)
    assert stats.dropped["partial packet"] == lost
    assert stats.dropped["garbage"] == sum(len(g) for g in garbage) + 32 * lost


@given(st.binary(max_size=300))
def test_framers_never_raise_on_arbitrary_bytes(data: bytes) -> None:
    for framer in (CytonFramer(InputStats()), BgapiFramer(InputStats())):
        framer.feed(data)
        framer.feed(b"", idle=True)


# ---------------------------------------------------------------- Myo through a BLED112

MYO_UUID_ON_AIR = bytes.fromhex("4248124a7f2c4847b9de04a9010006d5")
MYO_ADDRESS = bytes.fromhex("071de5842fc8")  # c8:2f:84:e5:1d:07, least significant first


def bgapi(event: bool, cls: int, cmd: int, payload: bytes) -> bytes:
    return bytes([0x80 if event else 0x00, len(payload), cls, cmd]) + payload


def notification(handle: int, rows: np.ndarray) -> bytes:
    """An attclient_attribute_value event carrying EMG samples as int8."""
    value = np.clip(np.round(rows), -128, 127).astype(np.int8).tobytes()
    return bgapi(True, 4, 5, struct.pack("<BHBB", 0, handle, 1, len(value)) + value)


class FakeBled112:
    """A BLED112 with a Myo in range: answers the host's BGAPI commands as the dongle
    does and, once EMG is switched on, notifies EMG samples (two per notification)."""

    def __init__(self, device: PtyDevice) -> None:
        self.device = device
        self.pending = b""
        self.writes: list[tuple[int, bytes]] = []
        self.streaming = False

    def serve(self, timeout: float) -> None:
        """Answer commands until the host has switched EMG on."""
        self.streaming = False
        self.pending = b""
        deadline = time.monotonic() + timeout
        while not self.streaming and time.monotonic() < deadline:
            self.answer_waiting(0.05)

    def answer_waiting(self, timeout: float) -> None:
        """Answer the commands that have arrived (the host keeps sending a few while the
        EMG stream already runs)."""
        self.pending += self.device.read(timeout)
        while len(self.pending) >= 4 and len(self.pending) >= 4 + self.pending[1]:
            size = 4 + self.pending[1]
            command, self.pending = self.pending[:size], self.pending[size:]
            self.answer(command[2], command[3], command[4:])

    def answer(self, cls: int, cmd: int, payload: bytes) -> None:
        send = self.device.write
        if (cls, cmd) == (6, 4):  # end procedure
            send(bgapi(False, 6, 4, struct.pack("<H", 0)))
        elif (cls, cmd) == (3, 0):  # disconnect
            send(bgapi(False, 3, 0, struct.pack("<BH", payload[0], 0x0186)))
        elif (cls, cmd) == (6, 2):  # discover: a stranger first, then the Myo
            send(bgapi(False, 6, 2, struct.pack("<H", 0)))
            for address, data in ((bytes(range(6)), b"\x03\x03\x0f\x18"),
                                  (MYO_ADDRESS, b"\x11\x07" + MYO_UUID_ON_AIR)):
                send(bgapi(True, 6, 0, struct.pack("<bB", -60, 0) + address + b"\x00\xff"
                           + bytes([len(data)]) + data))
        elif (cls, cmd) == (6, 3):  # connect_direct
            assert payload[:6] == MYO_ADDRESS
            send(bgapi(False, 6, 3, struct.pack("<HB", 0, 0)))
            send(bgapi(True, 3, 0, struct.pack("<BB", 0, 5) + MYO_ADDRESS
                       + struct.pack("<BHHHB", 0, 6, 64, 0, 0xFF)))
        elif (cls, cmd) == (4, 5):  # attribute write
            connection, handle, size = struct.unpack_from("<BHB", payload)
            value = payload[4:4 + size]
            self.writes.append((handle, value))
            send(bgapi(False, 4, 5, struct.pack("<BH", connection, 0)))
            send(bgapi(True, 4, 1, struct.pack("<BHH", connection, 0, handle)))
            if handle == 0x19 and value[:1] == b"\x01" and value[2] in (2, 3):
                self.streaming = True



@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=30).map(lambda b: bytes(c for c in b if c not in (0, 0x80))),
                min_size=1, max_size=6),
       st.integers(1, 40))
def test_bgapi_framer_keeps_every_packet_that_garbage_does_not_touch(garbage: list[bytes],
                                                                     chunk: int) -> None:
    stats = InputStats()
    framer = BgapiFramer(stats)
    # EMG notifications whose samples are full of 0x00 and 0x80, the bytes that also start
    # BGAPI headers.
    rows = [np.array([[0, -128, i, 0, 0, -128, 0, 1]] * 2) for i in range(len(garbage))]
    packets = [notification(0x2B, r) for r in rows]
    stream = b"".join(g + packet for g, packet in zip(garbage, packets, strict=True))
    found = []
    for i in range(0, len(stream), chunk):
        found += framer.feed(stream[i:i + chunk])
    found += framer.feed(b"", idle=True)
    kept = [i for i in range(len(packets)) if i + 1 == len(packets) or not garbage[i + 1]]
    assert found == [packets[i] for i in kept]
    # A lost packet's bytes count as garbage, or as partial packets where they start with
    # 0x00 or 0x80; every garbage byte is counted.
    assert stats.dropped["garbage"] >= sum(len(g) for g in garbage)
    assert stats.dropped["partial packet"] >= len(packets) - len(kept)


def test_myo_over_bled112_connects_streams_and_reconnects(tmp_path: Path) -> None:
    device = PtyDevice(tmp_path)
    emg = EmgInput("arm", emg_config(device, protocol="myo-bled112", full_scale=30.0))
    dongle = FakeBled112(device)
    done = threading.Event()
    handshakes = []

    def bled112() -> None:
        for part, script in enumerate((SCRIPT_BEFORE, SCRIPT_AFTER)):
            dongle.serve(timeout=10)
            handshakes.append(list(dongle.writes))
            dongle.writes.clear()
            rows = np.array(list(signal(script, 45.0, 1.0, seed=10 + part)))
            events = [notification((0x2B, 0x2E, 0x31, 0x34)[i % 4], rows[j:j + 2])
                      for i, j in enumerate(range(0, len(rows) - 1, 2))]
            for i in range(0, len(events), 5):
                chunk = b"".join(events[i:i + 5])
                if i in (50, 150):
                    chunk = b"\x7f\x80\x15\x04garbage" + chunk
                if i in (100, 200):
                    chunk = events[i][:9] + chunk  # cut off mid-notification
                device.write(chunk)
                dongle.answer_waiting(0.01)
            if part == 0:
                device.replug()
        done.set()

    readings = feed_and_read(emg, device, bled112, done, timeout=25)

    assert len(handshakes) == 2
    for writes in handshakes:
        handles = [handle for handle, _ in writes]
        assert {0x2C, 0x2F, 0x32, 0x35} <= set(handles)  # all four EMG notifications on
        assert (0x19, bytes([0x01, 3, 0x02, 0, 0])) in writes  # EMG on, IMU and poses off
    assert burst_sequence(readings) == BURST_ORDER
    assert emg.stats.restarts >= 1
    assert emg.stats.dropped["garbage"] > 0
    assert emg.stats.dropped["partial packet"] > 0


# ---------------------------------------------------------------- CSV (Arduino + MyoWare)

def test_csv_lines_with_nan_garbage_and_a_hangup(tmp_path: Path) -> None:
    device = PtyDevice(tmp_path)
    emg = EmgInput("arm", emg_config(device, protocol="csv", full_scale=100.0))
    done = threading.Event()

    def arduino() -> None:
        # An Arduino streams whether or not anyone listens; after the replug it keeps
        # resting long enough for the input to reopen the port.
        for part, script in enumerate((SCRIPT_BEFORE, [(300, None), *SCRIPT_AFTER])):
            rows = list(signal(script, 150.0, 3.0, seed=20 + part, offset=500.0))
            for i in range(0, len(rows), 8):
                text = "".join(",".join(f"{v:.2f}" for v in row) + "\r\n"
                               for row in rows[i:i + 8])
                if i in (80, 400):
                    text = "nan,1,2,3,4,5,6,7\n\x00\xffnoise here\n1,2,3\n" + text
                device.write(text.encode("latin-1"))
                time.sleep(0.02)
            if part == 0:
                device.replug()
        done.set()

    readings = feed_and_read(emg, device, arduino, done, timeout=20)

    assert burst_sequence(readings) == BURST_ORDER
    assert emg.stats.restarts >= 1
    assert emg.stats.dropped["nan"] >= 1
    assert emg.stats.dropped["garbage"] >= 1
    assert emg.stats.dropped["short line"] >= 1


# Lines an Arduino sketch with a bug might send: the largest doubles of both signs (which
# overflowed the DC tracker to inf, then NaN, for good), other finite numbers no ADC can
# produce, and NaN and infinities in several spellings ('1e999' parses to inf).
EXTREME_LINES = [",".join([v] * 8) for v in ("1.7e308", "-1.7e308")] * 5
HUGE_LINES = [*EXTREME_LINES, "-3e7,0,0,0,0,0,0,0", "0,0,0,0,0,0,0,4e7"]
NAN_LINES = ["nan,1,2,3,4,5,6,7", "1,inf,2,3,4,5,6,7", "1,2,-inf,3,4,5,6,7",
             "1e999,0,0,0,0,0,0,0", "0,0,0,0,0,0,0,NaN", "-1e999,0,0,0,0,0,0,0"]
# Rest, the poison, then a burst on ch0 straight away: 40 samples (0.2 s), little more than
# one envelope window (30 samples), so the chain must be whole again at once to show it.
BEFORE_POISON = [(100, None)]
AFTER_POISON = [(40, 0), (100, None), (150, 3), (100, None)]


def feed_poisoned_csv(tmp_path: Path, poison: list[str]) -> tuple[EmgInput, list[Reading]]:
    """Run a CSV input on a pty fed rest, the `poison` lines and NAN_LINES, then bursts;
    the input and its readings."""
    device = PtyDevice(tmp_path)
    emg = EmgInput("arm", emg_config(device, protocol="csv", full_scale=100.0))
    done = threading.Event()

    def lines(script: list[tuple[int, int | None]], seed: int) -> list[str]:
        return [",".join(f"{v:.2f}" for v in row)
                for row in signal(script, 150.0, 3.0, seed=seed, offset=500.0)]

    def arduino() -> None:
        stream = lines(BEFORE_POISON, 40) + poison + NAN_LINES + lines(AFTER_POISON, 41)
        for i in range(0, len(stream), 8):
            device.write("".join(line + "\r\n" for line in stream[i:i + 8]).encode())
            time.sleep(0.02)
        done.set()

    return emg, feed_and_read(emg, device, arduino, done, timeout=20)


def test_csv_huge_nan_and_infinite_values_are_dropped_before_the_filters(
        tmp_path: Path) -> None:
    emg, readings = feed_poisoned_csv(tmp_path, HUGE_LINES)

    assert burst_sequence(readings) == [0, 3]
    assert all(0.0 <= v <= 1.0 for r in readings for v in r.values.values())
    assert emg.stats.dropped["out of range"] == len(HUGE_LINES)
    assert emg.stats.dropped["nan"] == len(NAN_LINES)
    assert emg.stats.dropped["filter reset"] == 0  # nothing bad reached the filters
    assert emg.stats.restarts == 0  # it recovered in place, without a restart
    # Every good sample made its readings: 4 samples (200 Hz / 50 Hz) per reading.
    good = sum(count for count, _ in BEFORE_POISON + AFTER_POISON)
    assert len(readings) >= good // 4 - 2


def test_a_filter_overflowed_past_the_sample_limit_resets_and_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Lift the CSV limit so the largest doubles reach the DC tracker and overflow it, as a
    # source with a wrong limit would: the chain resets instead of staying poisoned.
    monkeypatch.setitem(SAMPLE_LIMIT, "csv", math.inf)
    with caplog.at_level(logging.WARNING, logger="livegen.inputs.emg"):
        emg, readings = feed_poisoned_csv(tmp_path, EXTREME_LINES)

    assert burst_sequence(readings) == [0, 3]
    assert all(0.0 <= v <= 1.0 for r in readings for v in r.values.values())
    assert emg.stats.dropped["filter reset"] >= 5
    assert emg.stats.dropped["nan"] == len(NAN_LINES)
    assert emg.stats.restarts == 0
    warnings = [r for r in caplog.records if "reset" in r.getMessage()]
    assert len(warnings) == 1  # logged once; the rest are counted
    assert warnings[0].levelno == logging.WARNING


def test_a_missing_port_fails_and_is_retried_with_backoff(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = str(tmp_path / "nothing-here")
    emg = EmgInput("arm", EmgInputConfig(type="emg", port=port))
    with caplog.at_level(logging.WARNING, logger="livegen.inputs.base"):
        readings = run_input(emg, lambda: emg.stats.restarts >= 3, timeout=5)
    assert not readings
    assert emg.stats.restarts >= 3
    # One line that names the port once, the problem and the fix.
    assert emg.stats.last_error.count(port) == 1
    assert "no such device; plug the EMG receiver in" in emg.stats.last_error
    logged = [r.getMessage() for r in caplog.records if port in r.getMessage()]
    assert logged
    assert all(line.count(port) == 1 and "\n" not in line for line in logged)


def test_a_port_in_use_says_so_naming_it_once(tmp_path: Path) -> None:
    import serial

    device = PtyDevice(tmp_path)
    emg = EmgInput("arm", emg_config(device, protocol="csv"))
    # Another program holds the port, with the lock pyserial takes (as livegen itself does).
    other = serial.Serial(str(device.link), exclusive=True)
    try:
        with pytest.raises(OSError) as failure:
            next(emg.envelopes(threading.Event()))
    finally:
        other.close()
        device.unplug()
    message = str(failure.value)
    assert message.count(str(device.link)) == 1
    assert "in use by another program" in message


# ---------------------------------------------------------------- the signal chain

@pytest.mark.parametrize(("method", "expected"), [("rms", 1 / math.sqrt(2)),
                                                  ("mav", 2 / math.pi)])
def test_envelope_of_a_sine_over_a_dc_offset(method: str, expected: float) -> None:
    config = EmgInputConfig(type="emg", envelope=method, window_ms=500.0, highpass_hz=5.0)
    chain = EnvelopeChain(2, 1000.0, config)
    t = np.arange(3000) / 1000.0
    amplitude = np.array([10.0, 0.0])
    chain.push(np.sin(2 * np.pi * 80.0 * t)[:, None] * amplitude + np.array([3000.0, -50.0]))
    envelope = chain.envelope()
    assert envelope[0] == pytest.approx(10.0 * expected, rel=0.03)
    assert envelope[1] == pytest.approx(0.0, abs=1e-6)


NON_FINITE = [[np.nan], [np.inf], [-np.inf], [np.nan]]
# The largest doubles overflow the RMS chain's square (and the DC tracker after them).
OVERFLOWING = [[1.7e308], [-1.7e308], [1.7e308], [-1.7e308]]


@pytest.mark.parametrize(("signal_kind", "method", "poison"), [
    ("raw", "rms", OVERFLOWING + NON_FINITE), ("raw", "mav", NON_FINITE),
    ("envelope", "rms", OVERFLOWING + NON_FINITE)])
def test_a_chain_whose_state_turns_non_finite_resets_and_recovers(
        signal_kind: str, method: str, poison: list[list[float]]) -> None:
    # Straight into the chain, past the input's checks (the chain's own last defence):
    # its state is finite again at once and its envelope right within a window and the DC
    # tracker's settling.
    config = EmgInputConfig(type="emg", signal=signal_kind, envelope=method, window_ms=50.0,
                            highpass_hz=10.0)
    chain = EnvelopeChain(1, 1000.0, config)
    t = np.arange(1000) / 1000.0
    offset = 3000.0 if signal_kind == "raw" else 0.0
    sine = (10.0 * np.abs(np.sin(2 * np.pi * 80.0 * t)) + offset)[:, None]
    chain.push(sine[:500])
    clean = chain.envelope()
    chain.push(np.array(poison))
    assert np.isfinite(chain.envelope()).all()
    assert chain.dc is None or np.isfinite(chain.dc).all()
    chain.push(sine[500:700])  # 200 samples: 4 windows, 12 DC time constants
    np.testing.assert_allclose(chain.envelope(), clean, rtol=0.05)
    assert chain.resets >= len(NON_FINITE)  # counted, for the input's stats


def test_a_calibration_whose_range_overflows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text('{"rest": [-1.7e308, 0], "max": [1.7e308, 5]}')
    with pytest.raises(LivegenError, match="finite levels with max above rest"):
        Calibration.load(path, 2)


def test_calibration_normalises_rest_to_0_and_max_to_1(tmp_path: Path) -> None:
    calibration = Calibration(np.array([1.0, 2.0]), np.array([11.0, 4.0]))
    np.testing.assert_allclose(calibration.normalise(np.array([6.0, 5.0])), [0.5, 1.0])
    np.testing.assert_allclose(calibration.normalise(np.array([0.0, 3.0])), [0.0, 0.5])
    for suffix in (".json", ".toml"):
        path = tmp_path / f"cal{suffix}"
        calibration.save(path, {"input": "arm"})
        loaded = Calibration.load(path, 2)
        np.testing.assert_allclose(loaded.rest, calibration.rest)
        np.testing.assert_allclose(loaded.top, calibration.top)
    (tmp_path / "bad.json").write_text('{"rest": [1, 2], "max": [0, 5]}')
    with pytest.raises(LivegenError, match="max above rest"):
        Calibration.load(tmp_path / "bad.json", 2)


# ---------------------------------------------------------------- livegen calibrate emg

class PromptWatch(io.StringIO):
    """stdout that notices when the squeeze phase is announced."""

    def __init__(self) -> None:
        super().__init__()
        self.squeezing = threading.Event()

    def write(self, text: str) -> int:
        if "squeeze" in text:
            self.squeezing.set()
        return super().write(text)


def test_calibrate_emg_guides_rest_then_squeeze_and_writes_the_file(tmp_path: Path) -> None:
    device = PtyDevice(tmp_path)
    config_path = tmp_path / "config.toml"
    config_path.write_text(f'[inputs.arm]\ntype = "emg"\nprotocol = "csv"\nport = '
                           f'"{device.link}"\nwindow_ms = 100.0\n')
    out = PromptWatch()
    finished = threading.Event()

    def arduino() -> None:
        rng = np.random.default_rng(5)
        while not finished.is_set():
            # At rest a little noise; squeezing, every channel but ch6 fires.
            loud = np.where(np.arange(8) == 6, 2.0, 80.0) if out.squeezing.is_set() else 2.0
            rows = rng.normal(0.0, 1.0, (8, 8)) * loud + 512.0
            text = "".join(" ".join(f"{v:.1f}" for v in row) + "\n" for row in rows)
            with contextlib.suppress(OSError):
                device.write(text.encode())
            time.sleep(0.02)

    writer = threading.Thread(target=arduino, daemon=True)
    writer.start()
    try:
        with contextlib.redirect_stdout(out):
            code = calibrate_command(argparse.Namespace(config=config_path, input=None,
                                                        seconds=1.0))
    finally:
        finished.set()
        writer.join(1)
        device.unplug()
    assert code == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert any(line.startswith("1/2 relax") and line.endswith("1  done") for line in lines)
    assert any(line.startswith("2/2 squeeze") and line.endswith("1  done") for line in lines)
    assert "ch6 barely changed" in text
    written = tmp_path / "arm-calibration.json"
    assert f"wrote {written}" in text
    assert 'calibration = "arm-calibration.json"' in text
    table = json.loads(written.read_text())
    rest, top = np.array(table["rest"]), np.array(table["max"])
    assert np.all(top > rest)
    assert np.all(np.delete(top, 6) > 10 * np.delete(rest, 6))

    # The config that points to it loads it.
    config = loads(config_path.read_text() + 'calibration = "arm-calibration.json"\n',
                   base_dir=tmp_path)
    emg = EmgInput("arm", config.inputs["arm"])
    np.testing.assert_allclose(emg.calibration().rest, rest)


# ---------------------------------------------------------------- BrainFlow (optional extra)

def test_brainflow_synthetic_board_streams_normalised_channels() -> None:
    if os.environ.get("CI") != "true":  # in CI the dev extra brings brainflow: it must run
        pytest.importorskip("brainflow", reason="the [sensors] extra is not installed")
    emg = EmgInput("arm", EmgInputConfig(type="emg", protocol="brainflow", board="synthetic",
                                         port=""))
    readings = run_input(emg, lambda: emg.stats.readings >= 40, timeout=10)
    assert len(readings) >= 40
    assert emg.stats.restarts == 0
    for reading in readings:
        assert set(reading.values) == {f"ch{i}" for i in range(8)} | {"total"}
        assert all(0.0 <= v <= 1.0 for v in reading.values.values())
    # The synthetic board's channels carry signal: some reading is above rest.
    assert max(r.values["total"] for r in readings) > 0.0
