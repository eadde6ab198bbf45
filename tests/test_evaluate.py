"""The evaluation's own arithmetic: ranks and Spearman, shared runs, weighted BLEU; the
live figures' features, overlap, failures, bands and responses on hand-made music; and the
live figures end to end on the shipped model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from livegen import evaluate
from livegen import evaluate_charrnn as live
from livegen.music import features
from livegen.music.events import Note


def test_ranks_average_ties():
    assert evaluate.ranks(np.array([10, 20, 20, 5])).tolist() == [2, 3.5, 3.5, 1]


def test_spearman_monotone_and_reversed():
    x = np.arange(10)
    assert evaluate.spearman(x, x ** 3) == pytest.approx(1.0)
    assert evaluate.spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(evaluate.spearman(x, np.ones(10)))


def test_spearman_matches_the_textbook_formula_without_ties():
    rng = np.random.default_rng(3)
    x, y = rng.permutation(20), rng.permutation(20)
    d = evaluate.ranks(x) - evaluate.ranks(y)
    assert evaluate.spearman(x, y) == pytest.approx(1 - 6 * (d ** 2).sum() / (20 * (400 - 1)))


def test_spearman_with_repeated_levels():
    levels = np.repeat(np.arange(10), 8)
    realised = levels * 2.0 + np.tile(np.linspace(0, 0.5, 8), 10)
    assert evaluate.spearman(levels, realised) > 0.95


def test_longest_shared_runs_finds_the_longest_and_not_across_pieces():
    reference = [np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8, 9])]
    queries = [np.array([0, 2, 3, 4, 9]),       # 2 3 4
               np.array([5, 6, 7, 8, 9]),       # 7 8 9; 5 6 7 spans two references
               np.array([42, 43])]              # nothing
    assert evaluate.longest_shared_runs(queries, reference).tolist() == [3, 3, 0]


def test_copying_sees_transposed_copies():
    train = [np.array([60, 62, 64, 65, 67, 69, 71, 72])]
    generated = [np.array([65, 67, 69, 70, 72, 74, 76, 77])]  # the same tune a fourth up
    report = evaluate.copying(generated, train)
    assert report["exact"]["max"] < 4
    assert report["transposed"]["max"] == 8


def test_weighted_bleu_identical_disjoint_and_partial():
    piece = list(range(40))
    assert evaluate.weighted_bleu([piece], [piece]) == pytest.approx(1.0)
    disjoint = evaluate.weighted_bleu([list(range(100, 140))], [piece])
    partial = evaluate.weighted_bleu([list(range(20)) + list(range(100, 120))], [piece])
    assert 0 < disjoint < partial < 1


def test_weighted_bleu_ignores_unigrams():
    # The same tokens in another order share unigrams only: weight 0, so a low score.
    rng = np.random.default_rng(0)
    piece = list(range(60))
    shuffled = rng.permutation(60).tolist()
    assert evaluate.weighted_bleu([shuffled], [piece]) < 0.05


def test_weighted_bleu_clips_counts_per_reference():
    # "1 2 1 2 ..." repeated cannot earn more 2-gram credit than one reference holds.
    candidate = [1, 2] * 10
    once = evaluate.weighted_bleu([candidate], [[1, 2, 3, 4] * 5])
    fully = evaluate.weighted_bleu([candidate], [[1, 2] * 10])
    assert once < fully == pytest.approx(1.0)


def test_unigram_nll_of_a_constant_stream_is_small():
    train = [np.array([300] * 1000)]
    assert evaluate.unigram_nll(train, [np.array([300] * 10)]) < 0.5
    assert evaluate.unigram_nll(train, [np.array([5] * 10)]) > evaluate.UNIFORM_NLL


# ---------------------------------------------------------------- the live figures

def notes_at(times, pitches, length: float = 0.2) -> list[Note]:
    return [Note(int(p), 80, float(t), float(t) + length) for t, p in zip(times, pitches,
                                                                          strict=True)]


def test_overlap_is_one_for_the_same_music_and_low_for_other_music() -> None:
    rng = np.random.default_rng(0)
    tune = notes_at(np.arange(0, 60, 0.25), rng.integers(60, 72, 240))
    same = live.pooled_features([(tune, 60.0)])
    assert live.overlap(same, same)["mean"] == pytest.approx(1.0)
    drone = notes_at(np.arange(0, 60, 0.5), [70] * 120, length=0.45)
    other = live.overlap(live.pooled_features([(drone, 60.0)]), same)
    assert other["mean"] < 0.6
    assert other["pitch_range"] == 0 and other["melodic_interval"] < 0.2


def test_music_features_measure_what_they_say() -> None:
    notes = notes_at([0, 0, 0.5, 1.0], [60, 64, 67, 72], length=0.5)
    f = live.music_features(notes, 4.0)
    assert f["inter_onset_s"].tolist() == [0.5, 0.5]
    assert f["melodic_interval"].tolist() == [4, 3, 5]
    assert f["pitch_range"].tolist() == [12]
    assert f["pitch_class_entropy"][0] == pytest.approx(1.5)  # C twice, E, G
    assert f["polyphony"][:2].tolist() == [2, 2] and f["polyphony"][-1] == 0


def test_failures_are_found_and_real_music_has_none() -> None:
    held = [Note(60, 80, 0.0, 9.0)]
    drone = notes_at(np.arange(9, 19, 0.5), [62, 64] * 10)
    cluster = notes_at([30, 30, 30], [60, 61, 63], length=1.0)
    run = live.Run(held + drone + cluster, 60.0, 1, {})
    f = live.failures(run)
    assert f["held_8s"] == 1 and f["drone_windows"] >= 2 and f["cluster_onsets"] == 1
    assert f["silences_10s"] == 2  # 18.5 -> 30 s and 30 -> 60 s; 0 -> 9 s is shorter
    assert f["longest_gap_s"] == 30.0 and f["restruck"] == 1
    tune = notes_at(np.arange(0, 60, 0.25), np.tile([60, 62, 64, 65, 67], 48))
    assert live.failures(live.Run(tune, 60.0, 0, {}))["drone_windows"] == 0


def test_in_band_counts_the_windows_whose_bin_is_asked() -> None:
    steady = notes_at(np.arange(0, 60, 1 / 3), [72] * 180)  # 3 a second at MIDI 72
    run = live.Run(steady, 60.0, 0, {})
    assert live.in_band(run, "density", 4) == 1.0
    assert live.in_band(run, "pitch", features.pitch_bin(72)) == 1.0
    assert live.in_band(run, "density", 5) == 0.0


def test_density_response_and_pitch_answers_from_runs() -> None:
    jump_at = live.JUMP_SETTLE_S
    slow = notes_at(np.arange(0, jump_at, 1.0), [60] * int(jump_at))
    fast = notes_at(np.round(np.arange(jump_at + 0.5, jump_at + 8, 1 / 6), 6), [84] * 45)
    response = live.density_response([live.Run(slow + fast, 18.0, 0, {})], 8)
    assert response["reached_s"] == 1.0 and not response["overshoot"]
    answers = live.pitch_answers([live.Run(slow + fast, 18.0, 0, {})], 8)
    assert answers["answers_s"] == [0.5] and answers["silent_0.3s"] == 1


def test_a_sparse_steady_rate_reads_as_itself_in_windows_shorter_than_its_notes() -> None:
    # One note-on every 0.6 s: counted whole, 0.5-s windows read 0 or 2 a second; spread
    # over their intervals they read 1/0.6 in every window.
    onsets = np.arange(0.0, 20.0, 0.6)
    windows = [(a, a + 0.5) for a in np.arange(5.0, 15.0, 0.5)]
    whole = {int(((onsets >= a) & (onsets < b)).sum()) for a, b in windows}
    assert whole == {0, 1} or whole == {0, 1, 2}
    spread = [live.spread_count(onsets, a, b, 20.0) / 0.5 for a, b in windows]
    assert np.allclose(spread, 1 / 0.6)
    # Over a whole run it is the count of note-ons; a chord's notes count one each.
    chords = np.array([1.0, 1.0, 1.0, 2.5, 4.0, 4.0])
    assert live.spread_count(chords, 0.0, 10.0, 10.0) == pytest.approx(6.0)
    assert live.spread_count(chords, 0.0, 1.5, 10.0) == pytest.approx(2 + 0.5 / 1.5)
    assert live.spread_count(np.array([]), 0.0, 1.0, 1.0) == 0.0


def test_real_music_follows_a_walk_in_its_own_key() -> None:
    from livegen.control import Controls

    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    notes = notes_at(np.arange(0, 16, 0.5), np.resize(scale, 32))
    high = live.held(Controls(pitch=7 / 9))
    moved, seconds = live.following([(notes, 16.0)], lambda k: high)[0]
    assert seconds == 16.0 and len(moved) == len(notes)
    assert {n.pitch % 12 for n in moved} <= {p % 12 for p in scale}  # C major still
    assert abs(np.mean([n.pitch for n in moved]) - features.pitch_at_position(7)) <= 1
    # A walk that jumps mid-piece takes the notes after the jump with it.
    steps = live.Steering((0.0, 8.0), (Controls(pitch=2 / 9), Controls(pitch=7 / 9)))
    moved, _ = live.following([(notes, 16.0)], lambda k: steps)[0]
    before = np.mean([n.pitch for n in moved if n.start < 8])
    after = np.mean([n.pitch for n in moved if n.start >= 8])
    assert after - before == pytest.approx(20, abs=4)  # five bins of 4 semitones


def test_the_gesture_walk_holds_then_glides_and_the_restless_one_moves_every_step(
        ) -> None:
    def pitches(style: str) -> list[np.ndarray]:
        return [np.asarray([c.pitch for c in live.random_walk(seed, 120.0,
                                                              style=style).snapshots])
                for seed in range(20)]

    gestures, restless = pitches("gestures"), pitches("restless")
    assert [c.pitch for c in live.random_walk(3, 30.0).snapshots] == \
        [c.pitch for c in live.random_walk(3, 30.0, style="restless").snapshots]
    for walk in (gestures, restless):
        values = np.concatenate(walk)
        assert values.min() >= 0 and values.max() <= 1
        assert 0.15 <= values.std() <= 0.25 and abs(values.mean() - 0.5) < 0.05
    # Held: the hand stays within its tremor; a hold lasts 4 s on average (a little more
    # as measured here, where a move too small to tell from the tremor joins two holds).
    still = np.concatenate([np.abs(np.diff(w)) < 0.05 for w in gestures])
    assert still.mean() >= 0.8
    holds = [len(run) * 0.25 for w in gestures
             for run in np.split(w, np.flatnonzero(np.abs(np.diff(w)) >= 0.05) + 1)
             if len(run) > 1]
    assert 3.5 <= np.mean(holds) <= 7.0, np.mean(holds)
    # The restless hand moves every step, 0.07 (0.6 of a pitch bin) on average.
    assert np.concatenate([np.abs(np.diff(w)) < 0.05 for w in restless]).mean() < 0.6
    with pytest.raises(ValueError, match="walk style 'drunk'"):
        live.random_walk(0, 10.0, style="drunk")


def test_the_live_figures_run_end_to_end_on_the_shipped_model() -> None:
    from livegen.generators.charrnn import CharRNN, CopyIndex
    from livegen.music import events

    model = CharRNN(Path(__file__).resolve().parents[1] / "models" / "charrnn.json")
    rng = np.random.default_rng(1)
    pieces = [np.asarray(events.notes_to_tokens(notes_at(np.arange(0, 30, 0.25),
                                                         rng.integers(60, 76, 120))))
              for _ in range(8)]
    notes = [p[p < 128] for p in pieces]
    index = CopyIndex(np.concatenate(notes), np.concatenate(([0], np.cumsum(
        [len(n) for n in notes]))))
    report = live.live_figures(model, copy_index=index, guide=None, test=pieces,
                               train_notes=notes, train_sample=pieces[:1], free="self",
                               seconds=12.0, seeds=1, bin_seeds=1, key_seeds=1,
                               jump_seeds=1)
    assert set(report["overlap"]) >= {"live_default", "random_walk", "gesture_walk",
                                      "held_out_timelines", "held_out_real", "random_notes",
                                      "real_random_walk", "real_gesture_walk"}
    assert len(report["bands"]["pitch"]["in_band"]) == 10
    assert report["copying"]["runs"] > 40 and report["step_ms"]["steps"] > 1000
    assert "pitch_1_to_8" in report["response"]
    assert "guards" in report and live.format_live(report).count("\n") > 20
