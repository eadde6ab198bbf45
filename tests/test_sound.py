"""Sound out of the box: FluidSynth renders MIDI to WAV with a General MIDI soundfont, and
`livegen demo` writes out/demo.wav beside out/demo.mid; without FluidSynth, or with a
soundfont that is not there, it says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from livegen import synth
from livegen.errors import LivegenError
from livegen.music.events import read_midi

ROOT = Path(__file__).resolve().parents[1]
MISSING = "fluidsynth or a General MIDI soundfont is missing: apt-get install fluidsynth " \
          "fluid-soundfont-gm"


@pytest.fixture(scope="module")
def fluidsynth() -> tuple[Path, Path]:
    program, soundfont = synth.find_fluidsynth(), synth.find_soundfont()
    if program is None or soundfont is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING)  # scripts/test installs them: in CI this never skips
        pytest.skip(MISSING)
    return program, soundfont


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono samples in -1..1 and the sample rate of a 16-bit PCM WAV."""
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return frames.reshape(-1, 2).mean(axis=1) / 32768, wav.getframerate()


def loudness(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    """RMS level between two times, in seconds."""
    window = samples[int(start * rate):int(end * rate)]
    return float(np.sqrt(np.mean(window ** 2))) if window.size else 0.0


def demo(out: Path, *extra: str, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegen.cli", "-q", "demo", "--out",
                           str(out), *extra], capture_output=True, text=True, timeout=180,
                          cwd=ROOT, env=env)


def test_render_sounds_each_note_when_it_is_played(tmp_path: Path,
                                                   fluidsynth: tuple[Path, Path]) -> None:
    # Four notes of 0.25 s, one a second, after a second of silence.
    song = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: a beat is 0.5 s
    track = mido.MidiTrack()
    song.tracks.append(track)
    rest = 960
    for pitch in (60, 64, 67, 72):
        track.append(mido.Message("note_on", note=pitch, velocity=100, time=rest))
        track.append(mido.Message("note_off", note=pitch, time=240))
        rest = 720
    song.save(tmp_path / "four.mid")
    synth.render_wav(tmp_path / "four.mid", tmp_path / "four.wav", fluidsynth[1],
                     fluidsynth[0])
    samples, rate = read_wav(tmp_path / "four.wav")
    assert rate == synth.SAMPLE_RATE
    assert 4.25 <= len(samples) / rate <= 4.25 + 4  # the notes, then the release and reverb
    assert loudness(samples, rate, 0.0, 0.95) < 1e-4, "sound before the first note"
    for onset in (1.0, 2.0, 3.0, 4.0):
        during = loudness(samples, rate, onset + 0.02, onset + 0.2)
        before = loudness(samples, rate, onset - 0.2, onset - 0.02)
        assert during > 0.01 and during > 3 * before, f"no note heard at {onset} s"


def test_demo_writes_a_wav_of_its_notes(tmp_path: Path,
                                        fluidsynth: tuple[Path, Path]) -> None:
    done = demo(tmp_path, "--seconds", "3")
    assert done.returncode == 0, done.stderr
    wav_path = tmp_path / "demo.wav"
    assert f"wrote {tmp_path / 'demo.mid'}, {wav_path}" in done.stdout
    assert wav_path.read_bytes()[:4] == b"RIFF" and wav_path.read_bytes()[8:12] == b"WAVE"
    samples, rate = read_wav(wav_path)
    notes = read_midi(tmp_path / "demo.mid")
    assert notes, "the demo recorded no notes"
    midi_seconds = mido.MidiFile(tmp_path / "demo.mid").length
    assert 2.5 <= midi_seconds <= 4.5
    assert midi_seconds <= len(samples) / rate <= midi_seconds + 4
    first = min(note.start for note in notes)
    heard = loudness(samples, rate, first, max(note.end for note in notes))
    assert heard > 0.005, f"the notes are near silent (RMS {heard:.5f})"
    assert loudness(samples, rate, 0, max(first - 0.05, 0)) < heard / 10


def test_demo_without_fluidsynth_says_how_to_get_it(tmp_path: Path) -> None:
    (tmp_path / "demo.wav").write_bytes(b"an earlier run's sound")
    empty = tmp_path / "bin"
    empty.mkdir()
    done = demo(tmp_path, "--seconds", "1", env={**os.environ, "PATH": str(empty)})
    assert done.returncode == 0, done.stderr
    assert (f"no {tmp_path / 'demo.wav'}: FluidSynth is not installed; to hear the demo: "
            f"{synth.INSTALL}") in done.stdout.splitlines()
    assert not (tmp_path / "demo.wav").exists(), "an earlier run's demo.wav was left"
    assert read_midi(tmp_path / "demo.mid"), "the demo recorded no notes"


def test_a_soundfont_that_is_not_there_is_refused_before_the_demo_plays(
        tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sf2"
    done = demo(tmp_path / "out", "--soundfont", str(missing))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"livegen: --soundfont: {missing} is not a file; name a General MIDI .sf2 soundfont "
        f"(Debian: {synth.SOUNDFONTS[1]}, from fluid-soundfont-gm)"]
    assert not (tmp_path / "out").exists()


def test_the_given_soundfont_comes_before_livegen_soundfont(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env, given = tmp_path / "env.sf2", tmp_path / "given.sf2"
    from_env.write_bytes(b"sfbk")
    given.write_bytes(b"sfbk")
    monkeypatch.setenv(synth.SOUNDFONT_ENV, str(from_env))
    assert synth.find_soundfont() == from_env
    assert synth.find_soundfont(given) == given
    monkeypatch.setenv(synth.SOUNDFONT_ENV, str(tmp_path / "gone.sf2"))
    with pytest.raises(LivegenError, match=r"^\$LIVEGEN_SOUNDFONT: .*gone.sf2 is not a file"):
        synth.find_soundfont()
