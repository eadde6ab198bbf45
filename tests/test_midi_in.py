"""The MIDI controller input: what each message becomes, what is dropped, and `livegen
learn` writing a [[map]] entry for the knob that moved (through a real JACK server)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
from conftest import JackSender, unique_name, wait_for_port

from livegen import config
from livegen.config import MidiInputConfig
from livegen.inputs.midi_in import MidiInput, values_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("message", "expected"), [
    (mido.Message("control_change", control=74, value=127), {"cc.74": 1.0}),
    (mido.Message("note_on", note=60, velocity=127),
     {"note.60": 1.0, "note": 60 / 127, "velocity": 1.0}),
    (mido.Message("note_on", note=60, velocity=0), {"note.60": 0.0}),
    (mido.Message("note_off", note=60), {"note.60": 0.0}),
    (mido.Message("pitchwheel", pitch=0), {"bend": 8192 / 16383}),
    (mido.Message("aftertouch", value=127), {"pressure": 1.0}),
    (mido.Message("polytouch", note=61, value=0), {"pressure.61": 0.0}),
    (mido.Message("program_change", program=127), {"program": 1.0}),
])
def test_each_kind_of_message_becomes_values_in_0_to_1(message: mido.Message,
                                                       expected: dict[str, float]) -> None:
    assert values_of(message) == pytest.approx(expected)


def test_sysex_stray_bytes_and_other_channels_are_dropped_and_counted() -> None:
    midi = MidiInput("knobs", MidiInputConfig(type="midi", virtual=True, channel=2))
    emitted: list[dict[str, float]] = []
    for data in ([0xF0, 1, 2, 0xF7], [0x45, 0x12], [0xB0], [0xF4], [0xB0, 7, 100],
                 [0xB1, 7, 100], [0xF8]):
        midi.handle(data, lambda values, t=None: emitted.append(values))
    assert emitted == [{"cc.7": 100 / 127}]  # channel 2 only; clock goes to the clock
    assert midi.stats.dropped == {"sysex": 1, "malformed": 3}


@pytest.mark.jack
def test_learn_writes_a_map_entry_for_the_knob_that_moved(tmp_path: Path,
                                                          jack_server: None) -> None:
    knobs = unique_name("livegen-learn")
    path = tmp_path / "config.toml"
    path.write_text(f'[inputs.knobs]\ntype = "midi"\nvirtual = true\nport = "{knobs}"\n'
                    'api = "jack"\n')
    learn = subprocess.Popen([sys.executable, "-m", "livegen.cli", "learn", "density",
                              "--config", str(path), "--write", "--timeout", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT)
    sender = JackSender(unique_name("livegen-knob"))
    try:
        wait_for_port(f"{knobs}:in", timeout=20)
        sender.connect(f"{knobs}:in")
        time.sleep(0.2)
        sender.send([0xB0, 21, 64])
        out, err = learn.communicate(timeout=30)
    finally:
        sender.close()
        if learn.poll() is None:
            learn.kill()
    assert learn.returncode == 0, err
    cfg = config.load(path)
    assert [(r.source, r.target) for r in cfg.map] == [("knobs.cc.21", "density")]
    assert "knobs.cc.21" in out
