"""The Langevin chorale model played live, through JACK: harmonise mode, a melody played into
livegen's MIDI input by a second client during one bar comes back in the next bar, on the
clock's bar lines, as the soprano with alto, tenor and bass under it; SIGTERM leaves
nothing sounding."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
from conftest import (
    JackReceiver,
    JackSender,
    XrunCounter,
    retried_with_a_receiver,
    sounding_notes,
    unique_name,
    wait_for_port,
)
from test_engine import ROOT, Daemon

pytestmark = pytest.mark.jack

BPM = 100
BEAT_S = 60 / BPM
TOLERANCE_S = 0.010
MELODY = [(0, 72), (1, 74), (2, 76)]  # (beat of the bar, pitch): C5 D5 E5, a beat each


def test_harmonise_returns_the_melody_of_a_bar_as_the_soprano_of_the_next_with_three_voices(
        tmp_path: Path, jack_xruns: XrunCounter, daemons: list[Daemon]) -> None:
    # A whole run is tried again only when JACK reported an xrun meanwhile: a starved
    # client loses that cycle's MIDI (a chord's note-offs, once in CI).
    retried_with_a_receiver(
        jack_xruns, lambda receiver: harmonise(tmp_path, receiver, daemons))


def harmonise(tmp_path: Path, jack_receiver: JackReceiver, daemons: list[Daemon]) -> None:
    port, keys = unique_name("livegen-chorale"), unique_name("livegen-keys")
    config = tmp_path / "c.toml"
    config.write_text(f"""
[engine]
generator = "langevin"
melody_input = "keys"

[clock]
bpm = {BPM}
send = true

[output]
api = "jack"
port = "{port}"
require_port = true
connect = ["{jack_receiver.name}"]
panic_channels = [1]

[generators.langevin]
model = "{ROOT / 'models' / 'langevin.json'}"
mode = "harmonise"

[inputs.keys]
type = "midi"
api = "jack"
virtual = true
port = "{keys}"
""")
    stats = tmp_path / "stats.json"
    daemon = Daemon(config, "--stats-json", str(stats))
    daemons.append(daemon)
    keyboard = JackSender(unique_name("livegen-keyboard"))
    try:
        wait_for_port(f"{keys}:in", timeout=20)
        keyboard.connect(f"{keys}:in")
        jack_receiver.wait_for(1, timeout=20, notes_only=False)  # the Start: beat 0
        origin = next(t for t, m in jack_receiver.arrivals if m[0] in (0xFA, 0xF8))
        bar = int((time.monotonic() - origin) / (4 * BEAT_S)) + 2  # a bar well ahead
        for beat, pitch in MELODY:  # played in `bar`, each note 0.8 of a beat
            start = origin + (bar * 4 + beat) * BEAT_S
            time.sleep(max(0.0, start - time.monotonic()))
            keyboard.send([0x90, pitch, 90])
            time.sleep(0.8 * BEAT_S)
            keyboard.send([0x80, pitch, 0])
        time.sleep(max(0.0, origin + (bar + 2) * 4 * BEAT_S - time.monotonic()))
        assert daemon.stop() == 0, daemon.text()
    finally:
        keyboard.close()
    jack_receiver.settle()
    arrivals = jack_receiver.arrivals
    assert sounding_notes(jack_receiver.messages) == set()
    pulses = [t for t, m in arrivals if m[0] == 0xF8]
    # Pulse 0's time as the whole pulse train says it (each pulse numbered by its time):
    # one pulse stamped a few ms late must not move every onset (seen: the first one, 3 ms).
    period = BEAT_S / 24
    origin = statistics.median(t - round((t - pulses[0]) / period) * period for t in pulses)
    for beat, pitch in MELODY:  # in the next bar, on its beats
        # On the beat within TOLERANCE_S (a send or a stamp a few ms late on this shared
        # machine is not a wrong beat); the voices are those sounding once what was sent
        # with the melody's note has arrived.
        onset = origin + ((bar + 1) * 4 + beat) * BEAT_S
        struck = {m[1]: t for t, m in arrivals
                  if m[0] & 0xF0 == 0x90 and m[2] > 0 and abs(t - onset) <= TOLERANCE_S}
        assert pitch in struck, (beat, pitch, sorted(struck))
        heard = [m for t, m in arrivals if t <= struck[pitch] + TOLERANCE_S]
        voices = sorted(p for _, p in sounding_notes(heard))
        # The melody on top, three voices under it.
        assert voices[-1] == pitch and len(voices) >= 4, (beat, pitch, voices)
    figures = json.loads(stats.read_text())["generators"]["langevin"]
    assert figures["missed"] == 0 and figures["failures"] == 0, figures
