"""Metrics against hand-computed values (arithmetic in the comments)."""
import itertools
import math
import random

import numpy as np

import pytest

from harness.metrics import (bootstrap_ci, majority_correct, pass_at_k, pass_at_k_curve, per_problem_metrics,
                             summarize)


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 1, 1 / 4),  # 1 - C(3,1)/C(4,1) = 1 - 3/4
    (4, 1, 2, 1 / 2),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (5, 2, 3, 9 / 10),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (16, 0, 8, 0.0),  # nothing correct
    (16, 9, 8, 1.0),  # n - c = 7 < k = 8: every 8-subset holds a correct sample
    (16, 1, 16, 1.0),
    (16, 3, 4, 1 - 715 / 1820),  # C(13,4) = 715, C(16,4) = 1820
])
def test_pass_at_k_hand_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_subset_probability():
    # pass@k = share of k-subsets of the n samples that contain a correct one, by enumeration
    samples = [True, False, False, True, False, False]
    for k in range(1, 7):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(6, 2, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_1_equals_accuracy():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote():
    # "2" is said twice (wrong), "3" once (right): the majority is wrong
    assert not majority_correct(["2", "3", "2", None], [False, True, False, False])
    # normalised text groups "\\frac{1}{2}" and "\\dfrac{1}{2}": 2 votes, right
    assert majority_correct(["\\frac{1}{2}", "\\dfrac{1}{2}", "7"], [True, True, False])
    # tie 1-1: the first seen wins
    assert majority_correct(["5", "6"], [True, False])
    assert not majority_correct([None, None], [False, False])


def test_per_problem_and_summary_values():
    # two problems, 4 samples each
    correct = [[True, False, False, False], [True, True, True, True]]
    extracted = [["1", "2", "2", None], ["4", "4", "4", "4"]]
    lengths = [[10, 20, 30, 40], [5, 5, 5, 5]]
    truncated = [[False, False, False, True], [False] * 4]
    pp = per_problem_metrics(correct, extracted, lengths, truncated, ks=(1, 2, 4, 8))
    assert pp[("avg@k", 4)] == [0.25, 1.0]
    assert pp[("pass@k", 2)] == pytest.approx([0.5, 1.0])  # 1 - C(3,2)/C(4,2) = 1/2
    assert ("pass@k", 8) not in pp  # k > n is skipped
    assert pp[("maj@k", 4)] == [0.0, 1.0]  # problem 1: "2" wins with 2 votes, wrong
    assert pp[("len@k", 4)] == [25.0, 5.0]
    assert pp[("no_answer", 4)] == [0.25, 0.0]
    rows = {(r["metric"], r["k"]): r for r in summarize(correct, extracted, lengths, truncated, ks=(1, 2, 4))}
    assert rows[("avg@k", 4)]["value"] == pytest.approx(62.5)  # (25 + 100) / 2 percent
    assert rows[("pass@k", 1)]["value"] == pytest.approx(62.5)
    assert rows[("len@k", 4)]["value"] == pytest.approx(15.0)  # tokens, not percent
    assert rows[("truncated", 4)]["value"] == pytest.approx(12.5)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows.values())
    assert rows[("avg@k", 4)]["n_problems"] == 2 and rows[("avg@k", 4)]["n_samples"] == 4


def test_unequal_sample_counts_fail():
    with pytest.raises(ValueError, match="same number of samples"):
        per_problem_metrics([[True], [True, False]], [["1"], ["1", "2"]], [[1], [1, 1]], [[False], [False] * 2],
                            ks=(1,))


def test_bootstrap_ci_matches_a_plain_loop():
    # the vectorised bootstrap (count matrices) equals a plain resampling loop with the same random indices
    from harness.metrics import rng_for

    values = [random.Random(s).random() for s in range(30)]
    lo, hi = bootstrap_ci(values, iters=500, confidence=0.9, seed=3)
    idx = rng_for(3, "problems", 30, 0).integers(0, 30, size=(500, 30))  # Resampler's draw for 30 problems
    means = sorted(sum(values[i] for i in row) / 30 for row in idx)
    assert lo == pytest.approx(float(np.quantile(means, 0.05)))
    assert hi == pytest.approx(float(np.quantile(means, 0.95)))
    assert lo < sum(values) / 30 < hi
    # a constant has a zero-width interval; one problem too
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_bootstrap_width_shrinks_with_more_problems():
    small = [1.0, 0.0] * 5
    large = [1.0, 0.0] * 500
    lo_s, hi_s = bootstrap_ci(small, seed=0)
    lo_l, hi_l = bootstrap_ci(large, seed=0)
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ~ 1/sqrt(P): 100x more problems, ~10x narrower


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pass_at_k_curve_matches_combinatorial_reference(seed):
    """The running-product curve against 1 - C(n-c,k)/C(n,k) with exact integers, on random problems."""
    rng = np.random.default_rng(seed)
    n = rng.integers(16, 40, size=50)
    c = rng.integers(0, n + 1)
    curve = pass_at_k_curve(n, c, 16)  # [P, 16]
    for k in (1, 2, 5, 16):
        ref = [1 - math.comb(int(a - b), k) / math.comb(int(a), k) for a, b in zip(n, c)]
        assert curve[:, k - 1] == pytest.approx(ref, abs=1e-12)
