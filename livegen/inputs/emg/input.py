"""The EMG input: opens the configured source, runs the envelope chain, and emits ch0 ..
ch{n-1} and total, normalised by the calibration, once per 1 / rate_hz seconds of
samples."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import numpy as np

from livegen.inputs.base import Emit, InputEnded, InputStats, ThreadedInput
from livegen.inputs.emg.brainflow_board import BrainFlowSource
from livegen.inputs.emg.calibration import Calibration
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.csv_lines import CsvSource
from livegen.inputs.emg.cyton import CytonSource
from livegen.inputs.emg.envelope import EnvelopeChain, plausible_samples
from livegen.inputs.emg.myo import MyoSource
from livegen.inputs.emg.source import FULL_SCALE, SAMPLE_LIMIT, SampleSource

log = logging.getLogger(__name__)


def make_source(config: EmgInputConfig, stats: InputStats,
                stopping: threading.Event) -> SampleSource:
    if config.protocol == "cyton":
        return CytonSource(config, stats)
    if config.protocol == "csv":
        return CsvSource(config, stats)
    if config.protocol == "myo-bled112":
        return MyoSource(config, stats, stopping)
    return BrainFlowSource(config, stats)


class EmgInput(ThreadedInput):
    """Eight (or `channels`) normalised EMG envelopes, read in a thread of their own."""

    def __init__(self, name: str, config: EmgInputConfig) -> None:
        super().__init__(name)
        self.config = config

    def calibration(self) -> Calibration:
        config = self.config
        if config.calibration is not None:
            return Calibration.load(config.calibration, config.channels)
        full_scale = config.full_scale or FULL_SCALE[config.protocol]
        return Calibration.default(config.channels, full_scale)

    def envelopes(self, stopping: threading.Event) -> Iterator[np.ndarray]:
        """Open the source and yield the raw envelopes, one per 1 / rate_hz of samples.

        Ends with InputEnded when no sample arrives for `stall_s`; a failing port raises
        its own error. The source is closed when the generator is closed.
        """
        config = self.config
        source = make_source(config, self.stats, stopping)
        try:
            what = source.open()
            log.info("emg input %s: %s", self.name, what)
            chain = EnvelopeChain(config.channels, source.sample_rate, config)
            limit = SAMPLE_LIMIT[config.protocol]
            per_reading = max(1, round(source.sample_rate / config.rate_hz))
            due = per_reading
            last_sample = rate_since = time.monotonic()
            counted = 0
            while not stopping.is_set():
                samples = source.read()
                now = time.monotonic()
                if len(samples):
                    samples = plausible_samples(samples, limit, self.stats)
                if not len(samples):
                    if now - last_sample > config.stall_s:
                        raise InputEnded(f"{what}: no samples for {config.stall_s:g} s")
                    continue
                last_sample = now
                counted += len(samples)
                if now - rate_since >= 1.0:
                    self.stats.figures["samples_per_s"] = counted / (now - rate_since)
                    rate_since, counted = now, 0
                # Cut the block at reading boundaries so each reading sees exactly its
                # samples, however the driver batched them.
                while len(samples):
                    take = min(due, len(samples))
                    chain.push(samples[:take])
                    if chain.resets:
                        self.count_resets(chain.resets)
                        chain.resets = 0
                    samples = samples[take:]
                    due -= take
                    if due == 0:
                        due = per_reading
                        yield chain.envelope()
        finally:
            source.close()

    def count_resets(self, resets: int) -> None:
        """Count filter resets; the first of this input's life is logged, the rest are in
        the stats (one line per sample would flood the log)."""
        first = not self.stats.dropped["filter reset"]
        self.stats.drop("filter reset", resets)
        if first:
            log.warning("emg input %s: a filter's state overflowed and was reset; further "
                        "resets are counted as dropped 'filter reset'", self.name)

    def run(self, emit: Emit, stopping: threading.Event) -> None:
        # Read the calibration at each (re)start, so a new one applies after a replug.
        calibration = self.calibration()
        keys = [f"ch{i}" for i in range(self.config.channels)]
        envelopes = self.envelopes(stopping)
        try:
            for envelope in envelopes:
                levels = calibration.normalise(envelope)
                values = dict(zip(keys, levels.tolist(), strict=True))
                values["total"] = float(levels.mean())
                emit(values)
        finally:
            envelopes.close()
