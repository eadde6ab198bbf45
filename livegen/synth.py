"""FluidSynth with a General MIDI soundfont: how the demo is heard without a synth of one's own.

livegen calls the `fluidsynth` program (fast render to a file); it needs no Python binding.
Debian: `apt-get install fluidsynth fluid-soundfont-gm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from livegen.errors import LivegenError

SOUNDFONT_ENV = "LIVEGEN_SOUNDFONT"
# General MIDI soundfonts where distributions put them: Debian's alternative and its
# fluid-soundfont-gm, then Fedora's and Arch's.
SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/default.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
)
INSTALL = ("apt-get install fluidsynth fluid-soundfont-gm (macOS: brew install fluid-synth, "
           "then give a General MIDI .sf2 with --soundfont)")
SAMPLE_RATE = 44100
# FluidSynth's default gain (0.2) leaves one GM piano near -30 dBFS; 1.0 brings the demo
# to about -15 dBFS, with room for chords.
GAIN = 1.0


def find_fluidsynth() -> Path | None:
    """The fluidsynth program on PATH, or None."""
    found = shutil.which("fluidsynth")
    return Path(found) if found else None


def find_soundfont(given: Path | None = None) -> Path | None:
    """The soundfont to render with: `given`, else $LIVEGEN_SOUNDFONT, else the first of
    SOUNDFONTS that exists; None when there is none. Raises LivegenError (one line) when
    a soundfont named by the caller or the environment does not exist."""
    named = given if given is not None else (
        Path(os.environ[SOUNDFONT_ENV]) if os.environ.get(SOUNDFONT_ENV) else None)
    if named is not None:
        if not named.is_file():
            where = "--soundfont" if given is not None else f"${SOUNDFONT_ENV}"
            raise LivegenError(f"{where}: {named} is not a file; name a General MIDI .sf2 "
                               f"soundfont (Debian: {SOUNDFONTS[1]}, from fluid-soundfont-gm)")
        return named
    return next((path for path in SOUNDFONTS if path.is_file()), None)


def render_wav(midi: Path, wav: Path, soundfont: Path, fluidsynth: Path,
               timeout: float = 300.0) -> None:
    """Render a MIDI file to a 16-bit stereo WAV at SAMPLE_RATE, faster than real time,
    with FluidSynth's own reverb and chorus. Raises LivegenError (one line) when
    FluidSynth fails or writes no audio."""
    command = [str(fluidsynth), "-n", "-i", "-q", "-F", str(wav), "-T", "wav", "-O", "s16",
               "-r", str(SAMPLE_RATE), "-g", str(GAIN), str(soundfont), str(midi)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LivegenError(f"fluidsynth did not render {midi} within {timeout:g} s; try "
                           f"by hand: {' '.join(command)}") from None
    if done.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise LivegenError(f"fluidsynth could not render {midi} to {wav} (exit "
                           f"{done.returncode}: {said}); try by hand: {' '.join(command)}")
