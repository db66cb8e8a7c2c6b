"""Hsu's multiple comparisons with the best (minigpt/compare/best.py): hand-computed cases, Dunnett's
critical values against the published table and an independent quadrature, and simulated null arms
showing that a true best arm is called `worse` at most alpha of the time (seeded, a few seconds)."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from minigpt.compare.best import compare_with_best, dunnett_critical

A = {1: 3.0, 2: 3.1, 3: 3.2}
B = {1: 3.1, 2: 3.3, 3: 3.3}  # B - A = 0.1, 0.2, 0.1 on seeds 1, 2, 3


def test_two_arms_by_hand():
    # two arms: the residual mean square is var(B - A) / 2, so h = t_{0.95, 2} * sd(B - A) / sqrt(3)
    # sd(B - A) = sqrt(((-1/30)^2 + (2/30)^2 + (-1/30)^2) / 2) = sqrt(1/300) = 0.057735
    # h = 2.919986 * 0.057735 / 1.732051 = 0.097333; D_B = 0.133333
    out = compare_with_best({"a": A, "b": B})
    b, a = out["b"], out["a"]
    assert (b.mean, b.delta, b.n_seeds) == (pytest.approx(3.233333, abs=1e-6), pytest.approx(0.133333, abs=1e-6), 3)
    assert (b.low, b.high) == (0.0, pytest.approx(0.133333 + 0.097333, abs=1e-6)) and b.worse
    assert (a.delta, a.low, a.high) == (pytest.approx(-0.133333, abs=1e-6), pytest.approx(-0.230667, abs=1e-6), 0.0)
    assert not a.worse
    # with two arms, `worse` is the one-sided paired t-test at alpha
    assert stats.ttest_rel(list(B.values()), list(A.values()), alternative="greater").pvalue < 0.05
    # at alpha = 0.01 the same data are not enough: t_{0.99, 2} = 6.9646, h = 0.232 > D_B
    assert not compare_with_best({"a": A, "b": B}, alpha=0.01)["b"].worse


def test_higher_is_better_mirrors_lower_is_better():
    acc = compare_with_best({"a": {s: -v for s, v in A.items()}, "b": {s: -v for s, v in B.items()}},
                            lower_is_better=False)
    loss = compare_with_best({"a": A, "b": B})
    for arm in "ab":
        assert acc[arm].mean == pytest.approx(-loss[arm].mean)
        assert (acc[arm].delta, acc[arm].low, acc[arm].high, acc[arm].worse) == pytest.approx(
            (loss[arm].delta, loss[arm].low, loss[arm].high, loss[arm].worse))


@pytest.mark.parametrize("m, d", [(2, 1.916), (3, 2.062), (4, 2.160)])
def test_dunnett_critical_value_matches_the_table(m, d):
    # Dunnett (1955), one-sided, alpha 0.05, infinite degrees of freedom
    assert dunnett_critical(m, math.inf, 0.05) == pytest.approx(d, abs=2e-3)
    assert dunnett_critical(1, 7, 0.05) == pytest.approx(stats.t.ppf(0.95, 7))


def test_dunnett_critical_value_matches_a_quadrature():
    # T_j = (X_j - X_0) / sqrt(2) / S with X iid N(0, 1), S = sqrt(chi2_df / df): correlation 1/2, and
    # P(max T_j <= d) = E[Phi(X_0 + sqrt(2) d S)^m], integrated over X_0 and S
    m, df = 3, 6
    d = dunnett_critical(m, df, 0.05)
    s_pdf = lambda s: stats.chi.pdf(s * math.sqrt(df), df) * math.sqrt(df)  # noqa: E731
    p, _ = integrate.dblquad(lambda x, s: s_pdf(s) * stats.norm.pdf(x) * stats.norm.cdf(x + math.sqrt(2) * d * s) ** m,
                             0, 5, -8, 8)
    assert p == pytest.approx(0.95, abs=1e-3)


SEED_EFFECT = np.array([0.0, 0.1, -0.05, 0.2])  # shared by every arm on that seed (init, data order)


def arm(level, noise):
    return dict(zip((1, 2, 3, 4), level + SEED_EFFECT + np.asarray(noise)))


def test_a_clearly_worse_arm_is_flagged_and_identical_arms_are_not():
    base = arm(3.30, [0.01, -0.01, 0.0, 0.005])
    values = {"base": base, "twin": dict(base), "other": arm(3.30, [-0.005, 0.01, 0.01, -0.01]),
              "bad": arm(3.50, [0.0, 0.01, -0.01, 0.0])}
    out = compare_with_best(values)
    assert out["bad"].worse and out["bad"].low == 0.0 and out["bad"].delta > 0.15
    assert not any(out[a].worse for a in ("base", "twin", "other"))
    assert out["base"].delta == out["twin"].delta <= 0  # each one's best other is at most its twin
    # the seed effect shared by all arms cancels: shifting every arm's seed 2 by 1.0 changes nothing
    shifted = {a: {s: v + (1.0 if s == 2 else 0.0) for s, v in r.items()} for a, r in values.items()}
    moved = compare_with_best(shifted)
    for a in values:
        assert (moved[a].delta, moved[a].low, moved[a].high, moved[a].worse) == pytest.approx(
            (out[a].delta, out[a].low, out[a].high, out[a].worse))
    same = compare_with_best({"x": base, "y": dict(base)})
    assert all(c.delta == c.low == c.high == 0.0 and not c.worse for c in same.values())


def test_seeds_not_common_to_all_arms_are_left_out_and_fewer_than_two_raise():
    out = compare_with_best({"a": {**A, 9: 0.0}, "b": B})  # seed 9 only in a: left out
    assert out["b"].n_seeds == 3 and out["b"].delta == pytest.approx(0.133333, abs=1e-6)
    with pytest.raises(ValueError, match=r"needs >= 2 seeds common to all arms, got 1 \(\[2\]\)"):
        compare_with_best({"a": {1: 3.0, 2: 3.1}, "b": {2: 3.2, 3: 3.3}})
    with pytest.raises(ValueError, match="at least 2 arms"):
        compare_with_best({"a": A})
    with pytest.raises(ValueError, match=r"non-finite values for arms \['b'\]"):
        compare_with_best({"a": A, "b": {**B, 2: math.nan}})


def rate_called_worse(rng, shifts, n_seeds, trials, critical=None):
    """Share of simulated sweeps in which arm 0 (a true best arm) is called worse."""
    k = len(shifts)
    hits = 0
    for _ in range(trials):
        y = 3.3 + np.asarray(shifts)[:, None] + rng.normal(0, 0.05, n_seeds)[None, :] + rng.normal(0, 0.01, (k, n_seeds))
        values = {f"arm{i}": dict(enumerate(row)) for i, row in enumerate(y)}
        if critical is None:
            hits += compare_with_best(values)["arm0"].worse
        else:  # the naive rule: a one-sided paired t-test against the observed best of the other arms
            best = min(range(1, k), key=lambda j: y[j].mean())
            diff = y[0] - y[best]
            hits += diff.mean() - critical * diff.std(ddof=1) / math.sqrt(n_seeds) > 0
    return hits


@pytest.mark.parametrize("name, shifts", [("all arms equal", [0.0] * 4),
                                          ("true best, others 0.005 worse", [0.0, 0.005, 0.005, 0.005])])
def test_a_true_best_arm_is_called_worse_at_most_alpha_of_the_time(name, shifts):
    trials, n_seeds = 4000, 3
    hits = rate_called_worse(np.random.default_rng(1), shifts, n_seeds, trials)
    ci = stats.binomtest(hits, trials).proportion_ci(0.95)
    print(f"MCB, {name}: true best called worse {hits}/{trials} = {hits / trials:.4f}, "
          f"95% CI [{ci.low:.4f}, {ci.high:.4f}]")
    assert ci.low <= 0.05  # not detectably above alpha
    if name == "all arms equal":  # and not needlessly conservative: the rate is alpha when arm 0 ties the rest
        assert ci.high >= 0.05
    # the naive rule (an ordinary one-sided t against the observed best) stops a tied best far too often
    naive = rate_called_worse(np.random.default_rng(1), shifts, n_seeds, trials, stats.t.ppf(0.95, n_seeds - 1))
    naive_ci = stats.binomtest(naive, trials).proportion_ci(0.95)
    print(f"naive, {name}: {naive}/{trials} = {naive / trials:.4f}, 95% CI [{naive_ci.low:.4f}, {naive_ci.high:.4f}]")
    if name == "all arms equal":
        assert naive_ci.low > 0.05
