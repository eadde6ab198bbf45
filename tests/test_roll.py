"""16th-note grids: the piano roll and the four-voice chorale encoding."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from livegen.music.events import Note
from livegen.music.roll import (
    CHORALE_DIM,
    HOLD,
    ONSET,
    PAD,
    REST,
    SUSTAIN,
    VOICE_RANGES,
    VOICE_SIZES,
    VOICE_SLICES,
    GridNote,
    chorale_tokens_to_notes,
    onehot_to_tokens,
    piano_roll,
    roll_to_notes,
    tokens_to_onehot,
    transpose_tokens,
    transpositions_in_range,
    voices_to_tokens,
)

SIXTEENTH_AT_120 = 0.125


# --- piano roll -----------------------------------------------------------------------------


def test_piano_roll_marks_onsets_and_sustain():
    notes = [
        Note(60, 80, 0.0, 0.5),  # 4 cells
        Note(60, 80, 0.5, 0.75),  # repeated: a new onset right after
        Note(64, 80, 0.26, 0.26),  # zero length: snaps to cell 2, still takes it
    ]
    roll = piano_roll(notes, bpm=120)
    assert roll.shape == (6, 128) and roll.dtype == np.uint8
    assert roll[:, 60].tolist() == [ONSET, SUSTAIN, SUSTAIN, SUSTAIN, ONSET, SUSTAIN]
    assert roll[:, 64].tolist() == [0, 0, ONSET, 0, 0, 0]
    assert roll.sum() == roll[:, 60].sum() + roll[:, 64].sum()


def test_piano_roll_length_cuts_and_pads():
    notes = [Note(60, 80, 0.0, 1.0), Note(62, 80, 0.75, 1.0)]
    assert piano_roll(notes, bpm=120, length=4)[:, 60].tolist() == [ONSET, 1, 1, 1]
    assert not piano_roll(notes, bpm=120, length=4)[:, 62].any()
    assert piano_roll(notes, bpm=120, length=20).shape == (20, 128)
    assert piano_roll([], bpm=120).shape == (0, 128)


def test_roll_to_notes_inverts_piano_roll_with_repeated_notes():
    notes = [
        Note(60, 80, 0.0, 0.5),
        Note(67, 80, 0.0, 1.0),
        Note(60, 80, 0.5, 0.75),
        Note(72, 80, 1.5, 2.0),
    ]
    assert roll_to_notes(piano_roll(notes, bpm=120), bpm=120) == notes


def test_boolean_roll_joins_consecutive_cells():
    roll = np.zeros((8, 128), dtype=bool)
    roll[0:3, 60] = True
    roll[5:8, 60] = True
    assert roll_to_notes(roll, bpm=60, velocity=90) == [
        Note(60, 90, 0.0, 0.75),
        Note(60, 90, 1.25, 2.0),
    ]
    # The same cells in a roll from piano_roll keep repeated notes apart.
    onsets = roll.astype(np.uint8)
    onsets[[0, 2, 5], 60] = ONSET
    assert [n.start for n in roll_to_notes(onsets, bpm=60)] == [0.0, 0.5, 1.25]


def test_roll_to_notes_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="128"):
        roll_to_notes(np.zeros((4, 88)), bpm=120)


# --- chorale encoding: layout and rules -----------------------------------------------------


def test_chorale_layout_is_deepbach_style():
    assert VOICE_SIZES == (23, 25, 25, 32)
    assert sum(VOICE_SIZES) == CHORALE_DIM == 105
    assert (PAD, HOLD, REST) == (0, 1, 2)
    assert VOICE_SLICES[0].start == 0 and VOICE_SLICES[-1].stop == CHORALE_DIM
    for before, after in itertools.pairwise(VOICE_SLICES):
        assert before.stop == after.start
    for (low, high), size in zip(VOICE_RANGES, VOICE_SIZES, strict=True):
        assert size == 3 + high - low + 1


def test_voices_to_tokens_names_the_voice_and_pitch_out_of_range():
    with pytest.raises(ValueError, match=r"alto pitch 52 \(E3\) at step 4 .* F3-D5"):
        voices_to_tokens([[], [GridNote(52, 4, 8)], [], []])
    with pytest.raises(ValueError, match="soprano pitch 80"):
        voices_to_tokens([[GridNote(80, 0, 1)], [], [], []])


def test_voices_to_tokens_rejects_overlaps_and_wrong_voice_count():
    with pytest.raises(ValueError, match="tenor notes overlap at step 2"):
        voices_to_tokens([[], [], [(60, 0, 4), (62, 2, 6)], []])
    with pytest.raises(ValueError, match="4 voices"):
        voices_to_tokens([[], []])


def test_voices_to_tokens_writes_pitch_hold_rest():
    tokens = voices_to_tokens([[(60, 1, 4), (60, 4, 5)], [], [], [(36, 0, 2)]], length=6)
    assert tokens[:, 0].tolist() == [REST, 3, HOLD, HOLD, 3, REST]
    assert tokens[:, 1].tolist() == [REST] * 6
    assert tokens[:, 3].tolist() == [3, HOLD, REST, REST, REST, REST]


def test_hold_with_nothing_to_hold_decodes_as_rest():
    tokens = np.array([[HOLD, REST, REST, REST], [PAD, REST, REST, REST],
                       [HOLD, REST, REST, REST], [5, REST, REST, REST], [HOLD, REST, REST, REST]])
    decoded = onehot_to_tokens(tokens_to_onehot(tokens))
    assert decoded[:, 0].tolist() == [REST, PAD, REST, 5, HOLD]
    assert chorale_tokens_to_notes(decoded, bpm=120) == [
        Note(62, 80, 3 * SIXTEENTH_AT_120, 5 * SIXTEENTH_AT_120)
    ]


def test_tokens_to_onehot_rejects_tokens_outside_a_voice():
    with pytest.raises(ValueError, match=r"soprano tokens must lie in 0\.\.22"):
        tokens_to_onehot(np.array([[23, 2, 2, 2]]))


def test_transpositions_of_hand_made_voices():
    only_soprano_at_70 = voices_to_tokens([[(70, 0, 4)], [], [], []])
    assert transpositions_in_range(only_soprano_at_70) == range(-10, 10)
    whole_soprano_range = voices_to_tokens([[(60, 0, 1), (79, 1, 2)], [], [], []])
    assert transpositions_in_range(whole_soprano_range) == range(0, 1)
    assert transpositions_in_range(voices_to_tokens([[], [], [], []], length=4)) == range(0, 1)


# --- a real chorale -------------------------------------------------------------------------


def chorale_voices(name: str) -> list[list[GridNote]]:
    """The four parts of a music21 corpus chorale as notes on the 16th grid."""
    from music21 import corpus  # a dev dependency: the tests always have it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = corpus.parse(name)
    assert len(score.parts) == 4
    voices = []
    for part in score.parts:
        notes = []
        for note in part.stripTies().flatten().notes:
            start, end = float(note.offset) * 4, float(note.offset + note.quarterLength) * 4
            assert start.is_integer() and end.is_integer(), "not on the 16th grid"
            notes.append(GridNote(note.pitch.midi, int(start), int(end)))
        voices.append(notes)
    return voices


@pytest.fixture(scope="module")
def bwv66_6() -> list[list[GridNote]]:
    return chorale_voices("bach/bwv66.6")


def test_real_chorale_round_trips(bwv66_6):
    tokens = voices_to_tokens(bwv66_6)
    assert tokens.shape == (36 * 4, 4)  # 36 quarter notes
    onehot = tokens_to_onehot(tokens)
    assert onehot.shape == (len(tokens), CHORALE_DIM) and onehot.dtype == np.float32
    for block in VOICE_SLICES:
        np.testing.assert_array_equal(onehot[:, block].sum(axis=1), 1)
    np.testing.assert_array_equal(onehot_to_tokens(onehot), tokens)
    # Small noise, as after Langevin's last denoising step, decodes to the same tokens.
    noisy = onehot + np.random.default_rng(0).normal(0, 0.1, onehot.shape)
    np.testing.assert_array_equal(onehot_to_tokens(noisy), tokens)

    expected = sorted(
        (
            Note(note.pitch, 80, note.start * SIXTEENTH_AT_120, note.end * SIXTEENTH_AT_120)
            for voice in bwv66_6
            for note in voice
        ),
        key=lambda note: (note.start, note.pitch),
    )
    assert chorale_tokens_to_notes(tokens, bpm=120) == expected


def test_real_chorale_transpositions(bwv66_6):
    tokens = voices_to_tokens(bwv66_6)
    # Soprano 64-76, alto 54-69, tenor 53-64, bass 42-62: alto limits going down (F#3 to F3)
    # and bass going up (D4 to E4).
    assert transpositions_in_range(tokens) == range(-1, 3)
    notes = chorale_tokens_to_notes(tokens, bpm=120)
    for shift in range(-1, 3):
        moved = chorale_tokens_to_notes(transpose_tokens(tokens, shift), bpm=120)
        assert [n.pitch for n in moved] == [n.pitch + shift for n in notes]
        voices = [[GridNote(n.pitch + shift, n.start, n.end) for n in v] for v in bwv66_6]
        np.testing.assert_array_equal(voices_to_tokens(voices), transpose_tokens(tokens, shift))
    for shift in (-2, 3):
        with pytest.raises(ValueError, match="out of its range"):
            transpose_tokens(tokens, shift)


def test_real_soprano_line_through_the_piano_roll(bwv66_6):
    soprano = [
        Note(n.pitch, 80, n.start * SIXTEENTH_AT_120, n.end * SIXTEENTH_AT_120)
        for n in bwv66_6[0]
    ]
    assert roll_to_notes(piano_roll(soprano, bpm=120), bpm=120) == soprano
