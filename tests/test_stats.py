"""The statistics behind compare's verdicts: scipy's numbers on fixed inputs, Holm, power, and the
HellaSwag test's calibration and power on simulated per-example records (seeded)."""

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.special import expit, logit

from minigpt.compare import stats

A = [3.2791, 3.2812, 3.2770, 3.2803, 3.2779]  # five seeds of one arm (val loss)
B = [3.2712, 3.2745, 3.2731, 3.2702, 3.2740]  # the same five seeds of another arm


def test_group_summary_is_scipys_t_interval():
    s = stats.summarize(A)
    lo, hi = sps.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=sps.sem(A))
    assert (s.n, s.mean, s.std) == (5, pytest.approx(np.mean(A)), pytest.approx(np.std(A, ddof=1)))
    assert (s.lo, s.hi) == (pytest.approx(lo), pytest.approx(hi))
    one = stats.summarize([3.3])
    assert one.n == 1 and math.isnan(one.std) and math.isnan(one.lo)
    assert stats.summarize([]) is None


def test_val_loss_pairs_by_seed_when_seeds_match_and_equals_scipy():
    seeds = [1, 2, 3, 4, 5]
    d = stats.val_loss_difference(dict(zip(seeds, B)), dict(zip(seeds, A)))
    ref = sps.ttest_rel(B, A)
    ci = ref.confidence_interval(0.95)
    assert d.paired and d.test == "paired t, 5 seeds"
    assert (d.delta, d.p, d.lo, d.hi) == pytest.approx((np.mean(np.subtract(B, A)), ref.pvalue, ci.low, ci.high))
    # the seed order in the dicts does not matter: pairs are matched by seed
    shuffled = stats.val_loss_difference(dict(zip(seeds[::-1], B[::-1])), dict(zip(seeds, A)))
    assert shuffled.p == pytest.approx(d.p)


def test_val_loss_uses_welch_when_seeds_differ_and_equals_scipy():
    d = stats.val_loss_difference(dict(zip([6, 7, 8, 9], B[:4])), dict(zip([1, 2, 3, 4, 5], A)))
    ref = sps.ttest_ind(B[:4], A, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert not d.paired and d.test == "Welch t, 4 vs 5 seeds"
    assert (d.delta, d.p, d.lo, d.hi) == pytest.approx((np.mean(B[:4]) - np.mean(A), ref.pvalue, ci.low, ci.high))


def test_a_single_seed_gets_no_val_loss_verdict():
    reason = stats.val_loss_difference({1: 3.27}, {1: 3.28, 2: 3.29})
    assert isinstance(reason, str) and reason.startswith("single seed (n=1 vs 2): no verdict on val loss")


def test_holm_adjusts_like_the_textbook():
    # Holm (1979) step-down; values also given by statsmodels' multipletests(method="holm")
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.001, 0.2, 0.01, 0.04]) == pytest.approx([0.004, 0.2, 0.03, 0.08])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0]) and stats.holm([]) == []


def test_seeds_needed_matches_the_t_test_power_of_statsmodels():
    # effect size 0.5: statsmodels' TTestPower().solve_power -> 33.37 pairs, TTestIndPower() -> 63.77 per group
    paired = stats.Difference(0.0, 0, 0, 1, "", True, per_seed_var=1.0)
    welch = stats.Difference(0.0, 0, 0, 1, "", False, per_seed_var=2.0)  # two groups of variance 1
    assert stats.seeds_needed(0.5, paired) == 34
    assert stats.seeds_needed(0.5, welch) == 64
    assert stats.power(0.5, paired, 34) >= 0.8 > stats.power(0.5, paired, 33)
    # an example part of the variance that seeds cannot shrink puts small effects out of reach
    floor = stats.Difference(0.0, 0, 0, 1, "", True, per_seed_var=1e-4, fixed_var=1e-4)
    assert stats.seeds_needed(0.01, floor) == stats.MAX_SEEDS + 1
    assert stats.seeds_needed(0.01, stats.Difference(0.0, 0, 0, 1, "", True, per_seed_var=None)) is None


def simulate(rng, seeds, n_examples=2000, shift=0.0, seed_sd=0.02, base_seeds=None):
    """Per-example correctness (seeds, examples) of two arms on shared examples of varying difficulty."""
    difficulty = rng.normal(logit(0.3), 1.0, n_examples)

    def arm(shift, n_seeds):
        return np.array([rng.random(n_examples) < expit(difficulty + shift + rng.normal(0, seed_sd))
                         for _ in range(n_seeds)])

    return arm(0.0, base_seeds or seeds), arm(shift, seeds)


def test_a_planted_three_point_hellaswag_gain_on_2000_examples_is_detected():
    rng = np.random.default_rng(0)
    found = []
    for _ in range(20):
        base, cand = simulate(rng, seeds=5, shift=0.16)  # +0.16 logits ~ +3 points at 30% accuracy
        d = stats.hellaswag_difference(cand, base, paired_seeds=True)
        found.append((d.delta, d.p))
    deltas, ps = np.array(found).T
    assert 0.025 < deltas.mean() < 0.035
    assert (ps < stats.ALPHA).mean() >= 0.9  # power of this design: ~0.95


@pytest.mark.parametrize("paired, seed_sd", [(True, 0.0), (True, 0.1), (False, 0.02)])
def test_hellaswag_test_is_calibrated_without_a_true_difference(paired, seed_sd):
    """200 simulated null comparisons: better/worse at most ~7% of the time at alpha 0.05, whether the
    noise comes from examples or mostly from seeds (seed_sd 0.1 ~ 2 points per seed)."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        base, cand = simulate(rng, seeds=3, seed_sd=seed_sd, base_seeds=None if paired else 4)
        hits += stats.hellaswag_difference(cand, base, paired_seeds=paired).p < stats.ALPHA
    assert hits / 200 <= 0.07


def test_one_seed_per_group_is_the_paired_test_of_examples():
    rng = np.random.default_rng(2)
    base, cand = simulate(rng, seeds=1, shift=0.3)
    d = stats.hellaswag_difference(cand, base, paired_seeds=True)
    diff = cand[0].astype(float) - base[0].astype(float)
    ref = sps.ttest_1samp(diff, 0.0)
    assert d.p == pytest.approx(ref.pvalue) and d.per_seed_var is None
    assert (d.lo, d.hi) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    same = stats.hellaswag_difference(base, base, paired_seeds=True)
    assert isinstance(same, str) and "nothing to test" in same
