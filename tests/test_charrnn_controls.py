"""What the Char-RNN is told: the soft control layout, undriven controls from the mapper,
the keys and key profile of pieces, the augmented training controls, the guide of real
pieces, and the copy index of the training runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from livegen import config
from livegen.control import FREE_TARGETS, Controls, Mapper
from livegen.generators.charrnn import CopyIndex
from livegen.inputs.base import Reading
from livegen.music import events, features
from livegen.music.events import Note, notes_to_tokens
from livegen.train import data

C_MAJOR_TUNE = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60, 65, 69, 72, 71, 67]


def tune_piece(pitches: list[int], name: str, step_s: float = 0.25) -> data.Piece:
    notes = [Note(p, 80, i * step_s, i * step_s + step_s * 0.9) for i, p in enumerate(pitches)]
    return data.Piece(name, "essen", np.asarray(notes_to_tokens(notes), dtype=np.int16))


# ---------------------------------------------------------------- the soft layout

def test_two_hot_shares_a_position_between_its_two_bins() -> None:
    rows = features.two_hot(np.array([0.0, 4.25, 9.0, 12.0, -1.0]), 10)
    assert rows[0].tolist() == [1] + [0] * 9
    assert rows[1][4] == pytest.approx(0.75) and rows[1][5] == pytest.approx(0.25)
    assert rows[2][9] == 1 and rows[3][9] == 1 and rows[4][0] == 1  # clamped
    assert np.allclose(rows.sum(axis=1), 1)


def test_positions_invert_and_hit_the_bin_middles() -> None:
    for b in range(10):
        assert features.pitch_position(features.pitch_at_position(b)) == pytest.approx(b)
        assert features.density_position(features.DENSITY_CENTRES[b]) == pytest.approx(b)
        middle = features.density_at_position(b)
        assert features.density_bin(middle) == b  # a bin's middle lies in the bin
        assert features.pitch_bin(features.pitch_at_position(b)) == b


def test_a_soft_vector_leaves_what_is_not_asked_zero() -> None:
    vector = features.soft_vector(None, 3.0, None)
    assert not vector[features.PITCH_SLICE].any()
    assert not vector[features.HISTOGRAM_SLICE].any()
    assert vector[features.DENSITY_SLICE].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    full = features.soft_vector(4.5, 0.0, [2] + [0] * 11)
    assert full[features.PITCH_SLICE][[4, 5]].tolist() == [0.5, 0.5]
    assert full[features.HISTOGRAM_SLICE][0] == 1
    with pytest.raises(ValueError, match="NaN"):
        features.soft_vector(math.nan, 1.0, None)


def test_soft_control_vectors_describe_the_music_ahead() -> None:
    # 4 note-ons a second at MIDI 60 for 2 s, then silence, then 72 twice a second.
    notes = [Note(60, 80, i * 0.25, i * 0.25 + 0.2) for i in range(8)]
    notes += [Note(72, 80, 6 + i * 0.5, 6 + i * 0.5 + 0.4) for i in range(6)]
    tokens = notes_to_tokens(notes)
    vectors = features.soft_control_vectors(tokens)
    first = vectors[0]
    assert features.PITCH_SLICE.start + 2 == np.argmax(first[features.PITCH_SLICE])  # 60
    assert first[features.DENSITY_SLICE].argmax() == 6  # 8 note-ons in 2 s: 4.0 a second
    assert first[features.HISTOGRAM_SLICE][0] == 1
    decoder, times = events.TokenDecoder(), []
    for token in tokens:
        times.append(decoder.time)
        decoder.feed(token)
    silent = next(i for i, t in enumerate(times) if 2.5 < t < 3.0)  # nothing within 3 s
    assert not vectors[silent][features.PITCH_SLICE].any()
    assert not vectors[silent][features.HISTOGRAM_SLICE].any()
    assert vectors[silent][features.DENSITY_SLICE][0] == 1
    late = next(i for i, t in enumerate(times) if t >= 6.0)
    assert vectors[late][features.HISTOGRAM_SLICE][0] == 1  # pitch class of 72 is C
    assert features.density_at_position(
        float(vectors[late][features.DENSITY_SLICE] @ np.arange(10))) == pytest.approx(2.0)


# ---------------------------------------------------------------- undriven controls

def test_the_mapper_says_which_controls_no_rule_drives(tmp_path: Path) -> None:
    cfg = config.loads("""
[inputs.hand]
type = "osc"
[[map]]
source = "hand.y"
target = "pitch"
[[map]]
source = "hand.k"
target = "charrnn.key"
in_range = [0, 11]
""", base_dir=tmp_path)
    mapper = Mapper(cfg)
    assert mapper.controls.undriven == FREE_TARGETS  # nothing has moved yet
    controls = mapper.update(Reading("hand", 1.0, {"y": 0.8}))
    assert controls.undriven == ("density", "key")
    controls = mapper.update(Reading("hand", 1.1, {"k": 7.0}))
    assert controls.undriven == ("density", "key")  # the key rule is the Char-RNN's own
    own = controls.for_generator("charrnn")
    assert own.undriven == ("density",) and own.key == 7
    assert Controls(pitch=0.3).undriven == ()  # Controls made in code ask for everything


# ---------------------------------------------------------------- keys

def test_the_key_of_a_piece_and_the_profile_of_the_corpus() -> None:
    pieces = [tune_piece(C_MAJOR_TUNE, "a"),
              tune_piece([p + 7 for p in C_MAJOR_TUNE], "b"),
              tune_piece([p + 2 for p in C_MAJOR_TUNE], "c")]
    keys = data.Keys.of(pieces)
    assert keys.roots.tolist() == [0, 7, 2]
    assert keys.in_scale == 1.0
    assert keys.profile.sum() == pytest.approx(1)
    outside = [1, 3, 6, 8, 10]
    assert keys.profile[outside].sum() == 0
    assert keys.profile[0] == keys.profile.max()  # the tonic (C is struck most)


# ---------------------------------------------------------------- augmented controls

def test_training_controls_hold_spans_key_profiles_and_unasked_parts() -> None:
    rng = np.random.default_rng(0)
    pieces = [tune_piece([int(p) for p in rng.integers(55, 80, 200)], f"p{i}",
                         step_s=float(rng.choice([0.125, 0.25, 0.5]))) for i in range(6)]
    laid = data.laid_out(pieces)
    keys = data.Keys.of(pieces)
    exact = features.soft_control_vectors(laid.tokens)
    rows = data.training_controls(laid, keys.roots, keys.profile, np.random.default_rng(1),
                                  data.Augment(held=0.5, profile=0.5, unasked=0.3))
    assert rows.shape == exact.shape and rows.dtype == np.float32
    same = np.all(rows == exact, axis=1)
    assert 0.02 < same.mean() < 0.6  # some positions keep the music's own controls
    parts = (features.PITCH_SLICE, features.DENSITY_SLICE, features.HISTOGRAM_SLICE)
    for part in parts:
        unasked = ~rows[:, part].any(axis=1)
        assert 0.15 < unasked.mean() < 0.5
    profiles = np.stack([np.roll(keys.profile, r) for r in range(12)]).astype(np.float32)
    histograms = rows[:, features.HISTOGRAM_SLICE]
    as_profile = (np.abs(histograms[:, None, :] - profiles[None]).max(axis=2) < 1e-6).any(1)
    assert as_profile.mean() > 0.05
    # A held span: one vector for consecutive positions over seconds of changing music.
    runs = np.flatnonzero(np.any(rows[1:] != rows[:-1], axis=1))
    assert np.diff(runs).max() > 20
    assert not np.isnan(rows).any()


def test_an_epoch_of_augmented_windows_is_seeded() -> None:
    pieces = [tune_piece(C_MAJOR_TUNE * 8, f"p{i}") for i in range(4)]
    keys = data.Keys.of(pieces)

    def epoch(seed: int) -> data.Windows:
        return data.training_epoch(pieces, 32, np.random.default_rng(seed), encoding="soft",
                                   augment=data.Augment(), keys=keys)

    a, b, c = epoch(3), epoch(3), epoch(4)
    assert np.array_equal(a.controls, b.controls) and np.array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.controls, c.controls)


# ---------------------------------------------------------------- the copy index

def test_the_copy_index_knows_every_training_run_in_any_transposition(tmp_path: Path) -> None:
    tune = tune_piece(C_MAJOR_TUNE, "tune")
    other = tune_piece([50, 52, 54, 56], "other")
    data.write_train_notes(tmp_path / "notes.npz", [tune, other])
    index = CopyIndex.from_file(tmp_path / "notes.npz", run=5)
    played = C_MAJOR_TUNE[:4]  # 60 62 64 65, then 67; and 67 69 71 72 (the same steps),
    assert index.forbidden(played).tolist() == [60, 67]  # then 67: down a fourth from 65
    assert index.forbidden([p + 3 for p in played]).tolist() == [63, 70]
    assert index.forbidden(played[:3]).tolist() == []  # too few notes to be a run yet
    assert index.forbidden([61, 62, 64, 65]).tolist() == []
    # Runs never cross from one piece into the next.
    assert index.forbidden([*C_MAJOR_TUNE[-2:], 50, 52]).tolist() == []
    assert len(index) == len(C_MAJOR_TUNE) - 4


def test_a_piece_of_the_wrong_length_guards_nothing() -> None:
    index = CopyIndex(np.asarray([60, 62], dtype=np.uint8), np.asarray([0, 2]), run=5)
    assert len(index) == 0 and index.forbidden([1, 2, 3, 4]).tolist() == []
    with pytest.raises(ValueError, match="too short"):
        CopyIndex(np.zeros(3, np.uint8), np.asarray([0, 3]), run=2)
