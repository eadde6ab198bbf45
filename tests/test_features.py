"""The control vector: layout, bins at their edges, the vectorised windows, the engine mapping."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livegen.music.events import (
    NOTE_OFF,
    NOTE_ON,
    TIME_SHIFT,
    VELOCITY,
    Note,
    TimedEvent,
    notes_to_tokens,
)
from livegen.music.features import (
    CONTROL_SIZE,
    DENSITY_EDGES,
    DENSITY_SLICE,
    HISTOGRAM_SLICE,
    PITCH_SLICE,
    WINDOW_S,
    control_vector,
    control_vectors,
    controls_to_vector,
    density_bin,
    note_on_density,
    pitch_bin,
    realised_features,
    window_features,
)

C_MAJOR = [1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1]


def test_layout_is_deep_symphony():
    assert CONTROL_SIZE == 32
    layout = [PITCH_SLICE, DENSITY_SLICE, HISTOGRAM_SLICE]
    assert layout == [slice(0, 10), slice(10, 20), slice(20, 32)]
    assert len(DENSITY_EDGES) == 9
    assert all(a < b for a, b in itertools.pairwise(DENSITY_EDGES))
    assert WINDOW_S > 0


def test_pitch_bins_at_their_edges():
    assert [pitch_bin(p) for p in (0, 49.9, 50, 53.99, 54, 70, 85.99, 86, 90, 127)] == [
        0, 0, 0, 0, 1, 5, 8, 9, 9, 9,
    ]
    with pytest.raises(ValueError, match="NaN"):
        pitch_bin(math.nan)


def test_density_bins_at_their_edges():
    for index, edge in enumerate(DENSITY_EDGES):
        assert density_bin(edge) == index + 1
        assert density_bin(math.nextafter(edge, 0)) == index
    assert density_bin(0.0) == 0
    assert density_bin(1000.0) == 9
    with pytest.raises(ValueError, match="NaN"):
        density_bin(math.nan)


def test_each_part_lands_in_its_own_slice():
    histogram = np.arange(12, dtype=float)
    for p in range(10):
        for d in range(10):
            vector = control_vector(p, d, histogram)
            assert vector.dtype == np.float32 and vector.shape == (32,)
            expected_pitch = np.zeros(10)
            expected_pitch[p] = 1
            expected_density = np.zeros(10)
            expected_density[d] = 1
            np.testing.assert_array_equal(vector[PITCH_SLICE], expected_pitch)
            np.testing.assert_array_equal(vector[DENSITY_SLICE], expected_density)
            np.testing.assert_allclose(vector[HISTOGRAM_SLICE], histogram / histogram.sum())


def test_control_vector_rejects_bad_parts():
    with pytest.raises(ValueError, match="pitch bin"):
        control_vector(10, 0, C_MAJOR)
    with pytest.raises(ValueError, match="density bin"):
        control_vector(0, -1, C_MAJOR)
    with pytest.raises(ValueError, match="12 values"):
        control_vector(0, 0, [1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        control_vector(0, 0, [-1, *[0] * 11])


def test_controls_to_vector_maps_the_engine_controls():
    vector = controls_to_vector(0.5, 0.2, C_MAJOR)
    assert vector[PITCH_SLICE].argmax() == 5  # round(4.5) rounds half up
    assert vector[DENSITY_SLICE].argmax() == 2  # round(1.8)
    np.testing.assert_allclose(vector[HISTOGRAM_SLICE], np.array(C_MAJOR) / 7)
    assert controls_to_vector(0.0, 1.0, C_MAJOR)[PITCH_SLICE].argmax() == 0
    assert controls_to_vector(0.0, 1.0, C_MAJOR)[DENSITY_SLICE].argmax() == 9
    assert controls_to_vector(1.7, -0.3, C_MAJOR)[PITCH_SLICE].argmax() == 9  # clamped
    assert controls_to_vector(1.7, -0.3, C_MAJOR)[DENSITY_SLICE].argmax() == 0
    with pytest.raises(ValueError, match="NaN"):
        controls_to_vector(math.nan, 0.5, C_MAJOR)


def test_neutral_controls_equal_an_empty_window():
    empty = control_vector(*window_features([], [], start=0.0))
    np.testing.assert_array_equal(controls_to_vector(0.5, 0.0, [0] * 12), empty)
    np.testing.assert_allclose(empty[HISTOGRAM_SLICE], 1 / 12)


def test_window_features_counts_note_ons_in_the_half_open_window():
    times = [0.0, 0.5, 1.0, 2.99, 3.0, 7.0]
    pitches = [60, 64, 67, 72, 40, 40]
    pitch, density, histogram = window_features(times, pitches, start=0.0, window_s=3.0)
    assert pitch == pitch_bin((60 + 64 + 67 + 72) / 4)
    assert density == density_bin(4 / 3)
    np.testing.assert_allclose(histogram[[0, 4, 7]], [0.5, 0.25, 0.25])


def test_note_on_density_per_token():
    notes = [Note(60, 80, i * 0.25, i * 0.25 + 0.2) for i in range(8)]  # 4 note-ons per s
    tokens = notes_to_tokens(notes)
    density = note_on_density(tokens, window_s=1.0)
    assert density.shape == (len(tokens),)
    assert density[0] == 4.0
    assert density[-1] == 0.0


def reference_control_vectors(tokens: list[int], window_s: float) -> np.ndarray:
    """The slow, obvious version: for each position, walk the tokens ahead of it."""
    window_steps = round(window_s * 100)
    rows = []
    step = 0
    for i, token in enumerate(tokens):
        pitches = []
        ahead = step
        for later in tokens[i:]:
            if ahead >= step + window_steps:
                break
            if later < NOTE_OFF:
                pitches.append(later)
            elif TIME_SHIFT <= later < VELOCITY:
                ahead += later - TIME_SHIFT + 1
        if pitches:
            mean = sum(pitches) / len(pitches)
            p = min(max(math.floor((mean - 50) / 4), 0), 9)
            histogram = [sum(1 for x in pitches if x % 12 == c) / len(pitches) for c in range(12)]
        else:
            p, histogram = 5, [1 / 12] * 12
        d = sum(1 for edge in DENSITY_EDGES if len(pitches) / (window_steps / 100) >= edge)
        row = np.zeros(32)
        row[p] = 1
        row[10 + d] = 1
        row[20:] = histogram
        rows.append(row)
        if TIME_SHIFT <= token < VELOCITY:
            step += token - TIME_SHIFT + 1
    return np.array(rows).reshape(len(tokens), 32)


token_lists = st.lists(
    st.one_of(
        st.integers(NOTE_ON, NOTE_OFF - 1),
        st.integers(NOTE_OFF, TIME_SHIFT - 1),
        st.integers(TIME_SHIFT, TIME_SHIFT + 40),
        st.integers(TIME_SHIFT, VELOCITY - 1),
        st.integers(VELOCITY, VELOCITY + 31),
    ),
    max_size=200,
)


@given(token_lists, st.sampled_from([0.5, 1.0, WINDOW_S]))
@settings(max_examples=200, deadline=None)
def test_control_vectors_equal_the_slow_reference(tokens, window_s):
    vectors = control_vectors(tokens, window_s=window_s)
    assert vectors.dtype == np.float32 and vectors.shape == (len(tokens), 32)
    np.testing.assert_allclose(vectors, reference_control_vectors(tokens, window_s), atol=1e-6)


def test_control_vectors_on_a_long_random_piece_equal_the_reference():
    rng = np.random.default_rng(7)
    notes = []
    for _ in range(300):
        start = float(rng.uniform(0, 120))
        notes.append(Note(int(rng.integers(30, 100)), 80, start, start + float(rng.uniform(0, 2))))
    tokens = notes_to_tokens(notes)
    np.testing.assert_allclose(
        control_vectors(tokens), reference_control_vectors(tokens, WINDOW_S), atol=1e-6
    )


def test_control_vector_rows_agree_with_window_features():
    notes = [Note(48 + 3 * i, 80, 0.3 * i, 0.3 * i + 0.5) for i in range(12)]
    tokens = notes_to_tokens(notes)
    vectors = control_vectors(tokens)
    # Token 0 is the velocity token at time 0, so its window starts at 0.
    times = [note.start for note in notes]
    expected = control_vector(*window_features(times, [n.pitch for n in notes], start=0.0))
    np.testing.assert_allclose(vectors[0], expected)


def test_control_vectors_reject_tokens_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"0\.\.387"):
        control_vectors([0, 388])
    assert control_vectors([]).shape == (0, 32)


def test_realised_features_of_notes_and_events():
    notes = [Note(60, 80, 0.0, 0.5), Note(64, 80, 0.5, 1.0), Note(67, 80, 1.0, 2.0)]
    features = realised_features(notes, duration_s=2.0)
    assert features.note_ons == 3
    assert features.mean_pitch == pytest.approx(191 / 3)
    assert features.note_ons_per_s == 1.5
    np.testing.assert_allclose(features.histogram[[0, 4, 7]], 1 / 3)
    assert features.pitch_bin == pitch_bin(191 / 3)
    assert features.density_bin == density_bin(1.5)
    events = [TimedEvent(0.0, 60, 80), TimedEvent(0.5, 60, 0), TimedEvent(0.5, 64, 80)]
    assert realised_features(events, duration_s=1.0).note_ons == 2
    silent = realised_features([], duration_s=1.0)
    assert silent.mean_pitch is None
    np.testing.assert_array_equal(silent.control_vector(), controls_to_vector(0.5, 0.0, [0] * 12))
    with pytest.raises(ValueError, match="positive"):
        realised_features(notes, duration_s=0)
