"""Multiple comparisons with the best (Hsu's constrained MCB) on seed-paired runs.

A halving sweep stops an arm when it is worse than the rung's best arm. That best arm is picked from
the same data, so "arm vs the best" is not one t-test but a comparison with a *selected* arm: testing
each arm against the observed winner with an ordinary t-test stops the true best arm far more often
than alpha (whenever noise makes another arm look best). Hsu's multiple comparisons with the best
(Hsu 1984; "Multiple Comparisons", 1996, ch. 4) is the procedure made for exactly this: simultaneous
(1 - alpha) intervals for theta_i = mu_i - min_{j != i} mu_j (lower is better), one per arm, such
that with probability >= 1 - alpha every interval holds, in particular the true best arm's, so the
true best arm is called `worse` at most alpha of the time (tests/test_best.py simulates it).

Design: every arm ran the same seeds, and a seed fixes the init and the data order of all arms, so
the runs form a randomized block design (arms x seeds, seeds the blocks). The seed effect shared by
all arms is removed by the two-way ANOVA without replication; its residual mean square s^2, with
(k - 1)(n - 1) degrees of freedom, estimates the noise of an arm's run around arm + seed effects
(assumed the same for every arm, as for arms that differ in one setting of one recipe). The
difference of two arm means over n seeds then has standard error s * sqrt(2 / n).

The critical value d is Dunnett's one-sided one for k - 1 comparisons with a common arm: the (1 -
alpha) quantile of the max of k - 1 t variables with correlation 1/2 (every difference shares the
common arm's mean) and the residual's degrees of freedom, from scipy.stats.multivariate_t's cdf
(Genz's quasi-Monte Carlo, seeded, so the same inputs give the same d); with two arms it is the
one-sided t quantile. With D_i = mean_i - min_{j != i} mean_j and h = d * s * sqrt(2 / n), Hsu's
constrained intervals are

    [min(0, D_i - h), max(0, D_i + h)]

("constrained": they always contain 0, which is what makes them valid for every arm at once). The
arm is `worse` when D_i - h > 0: then the interval is [0, D_i + h], theta_i >= 0 at confidence 1 -
alpha, and with a continuous metric the arm is not the best. When D_i + h < 0 the interval is
[D_i - h, 0]: the arm is the best (it is better than every other arm). Identical arms give D_i = 0
and are never `worse`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class BestComparison:
    arm: str
    mean: float  # the arm's mean over the common seeds
    delta: float  # mean(arm) - mean(best of the OTHER arms), lower_is_better orientation
    low: float  # simultaneous (1 - alpha) interval for delta (Hsu's constrained MCB)
    high: float
    worse: bool  # the interval lies on the bad side of 0: the arm is not the best
    n_seeds: int


@lru_cache(maxsize=256)
def dunnett_critical(n_comparisons: int, df: float, alpha: float) -> float:
    """Dunnett's one-sided critical value: P(max of m t_df variables with correlation 1/2 <= d) = 1 - alpha.

    Cached: a halving sweep's rungs and the tests' simulations ask for the same few (m, df, alpha).
    """
    one_sided_t = float(stats.t.ppf(1 - alpha, df))
    if n_comparisons == 1:
        return one_sided_t
    m = n_comparisons
    corr = np.full((m, m), 0.5) + 0.5 * np.eye(m)
    # seeded: the quasi-Monte Carlo cdf is then a fixed function of d, so brentq's root is reproducible
    dist = stats.multivariate_t(shape=corr, df=df, seed=0)
    # bracket: the max of m is at least one t (d >= t quantile) and Bonferroni bounds it from above
    upper = float(stats.t.ppf(1 - alpha / m, df))
    return float(optimize.brentq(lambda d: dist.cdf(np.full(m, d)) - (1 - alpha), one_sided_t, upper,
                                 xtol=1e-6))


def compare_with_best(values: Mapping[str, Mapping[int, float]], *, alpha: float = 0.05,
                      lower_is_better: bool = True) -> dict[str, BestComparison]:
    """Hsu's constrained MCB of every arm against the best of the others, paired over their common seeds.

    values[arm][seed] is the final metric of that arm's run with that seed (val loss: lower is better;
    pass lower_is_better=False for accuracy, whose deltas are then mean(best other) - mean(arm), so a
    positive delta is still the bad side). Seeds that some arm lacks are left out of every arm.
    """
    arms = list(values)
    if len(arms) < 2:
        raise ValueError(f"comparison with the best needs at least 2 arms, got {len(arms)}: {arms}")
    common = set.intersection(*(set(values[a]) for a in arms))
    if len(common) < 2:
        raise ValueError(f"comparison with the best needs >= 2 seeds common to all arms, got {len(common)} "
                         f"({sorted(common, key=str)}): run every arm with the same seeds, e.g. train.seed=1,2,3")
    seeds = sorted(common, key=str)
    y = np.array([[float(values[a][s]) for s in seeds] for a in arms])  # (arms, seeds)
    if not np.isfinite(y).all():
        bad = [a for a, row in zip(arms, y) if not np.isfinite(row).all()]
        raise ValueError(f"non-finite values for arms {bad}: leave diverged runs out (they count as worse)")
    if not lower_is_better:
        y = -y  # one orientation below: lower is better
    k, n = y.shape
    means = y.mean(axis=1)
    resid = y - means[:, None] - y.mean(axis=0)[None, :] + y.mean()  # arm x seed residual (seed effect removed)
    df = (k - 1) * (n - 1)
    s = math.sqrt(float((resid ** 2).sum()) / df)
    h = dunnett_critical(k - 1, df, alpha) * s * math.sqrt(2 / n) if s > 0 else 0.0
    sign = 1.0 if lower_is_better else -1.0
    out = {}
    for i, arm in enumerate(arms):
        delta = float(means[i] - np.delete(means, i).min())
        out[arm] = BestComparison(arm, sign * float(means[i]), delta, min(0.0, delta - h), max(0.0, delta + h),
                                  delta - h > 0, n)
    return out
