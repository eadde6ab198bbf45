"""The evaluation's own arithmetic: ranks and Spearman, shared runs, weighted BLEU; and
the register-change figure on the shipped model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from livegen import evaluate


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


def test_register_change_is_answered_at_once_when_steered() -> None:
    from livegen.generators.charrnn import CharRNN

    model = CharRNN(Path(__file__).resolve().parents[1] / "models" / "charrnn.json")
    change = evaluate.register_change(model, seeds=2, settle_s=4.0)
    for name in ("up", "down"):
        target = change["targets"][name]
        steered, free = change[f"{name}_steered"][0], change[f"{name}_free"][0]
        assert abs(steered - target) < abs(free - target) - 10, change
