"""Statistics behind the verdicts: a group's spread, differences against a baseline, Holm, seeds needed.

- **Val loss**, one number per run: a t-test across seeds (scipy.stats). Paired by seed
  (`ttest_rel`) when both groups ran the same seeds: a seed fixes the init and the data order, and
  pairing removes their shared part of the noise from the difference; Welch's t-test
  (`ttest_ind(equal_var=False)`) otherwise. With fewer than 2 seeds in a group there is no spread to
  test against, so no verdict. The confidence intervals are scipy's for the same tests.
- **HellaSwag**, per-example correctness of every run: `hellaswag_difference`, a t-test whose
  variance has a seed part and an example part (its docstring says why not McNemar or a bootstrap).
- **Several groups against one baseline**: Holm's step-down correction of the p-values of one metric
  in one table (the family: every group of the table against its baseline, on that metric), which
  keeps the chance of any false `better`/`worse` among them at alpha with more power than Bonferroni
  (scipy has only Benjamini-Hochberg, which controls something else: the false share). Different
  metrics and different tables are separate families.
- **Seeds needed**: the fewest seeds per group at which the same test would detect the observed
  difference (or a given effect) with 80% power, from the noncentral t distribution (scipy.stats.nct;
  the normal approximation where nct fails numerically, at large noncentrality, where the power is
  ~1 anyway), found by trying every count from 2 up, so it is the first count with the power.
  It assumes the observed variance is the true one. The verdicts call it at alpha / m (m: the tested
  comparisons in the Holm family), the level Holm's first step uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 0.95
MAX_SEEDS = 1000  # seeds needed above this are reported as "> 1000"


@dataclass
class Summary:
    """n, mean, sample std and 95% t-interval of the mean of one group's values (std/CI nan when n < 2)."""

    n: int
    mean: float
    std: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def summarize(values) -> Summary | None:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return None
    mean = float(x.mean())
    if len(x) < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    if std == 0:
        return Summary(len(x), mean, 0.0, mean, mean)
    lo, hi = stats.t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=stats.sem(x))
    return Summary(len(x), mean, std, float(lo), float(hi))


@dataclass
class Difference:
    """candidate - baseline with its 95% CI and two-sided p-value, and how its variance scales with seeds.

    The variance of the estimate with n seeds per group is `per_seed_var / n + fixed_var`: the seed
    part shrinks with more seeds, the fixed part (examples shared by every run) does not. That is
    what `seeds_needed` extrapolates, at n - 1 degrees of freedom (paired) or 2n - 2 (Welch).
    """

    delta: float
    lo: float
    hi: float
    p: float
    test: str  # e.g. "paired t, 3 seeds"
    paired: bool  # seeds paired: n seeds give n - 1 degrees of freedom, not 2n - 2
    per_seed_var: float  # the variance of the estimate with one seed per group, less fixed_var
    fixed_var: float = 0.0


def _ci_and_p(delta: float, var: float, df: float) -> tuple[float, float, float]:
    if var <= 0:
        return delta, delta, (1.0 if delta == 0 else 0.0)
    se = math.sqrt(var)
    q = float(stats.t.ppf((1 + CONFIDENCE) / 2, df))
    return delta - q * se, delta + q * se, float(2 * stats.t.sf(abs(delta) / se, df))


def val_loss_difference(candidate: dict, baseline: dict) -> Difference | str:
    """Difference of final val loss between two groups, {seed: value} each; a reason string when untestable."""
    if len(candidate) < 2 or len(baseline) < 2:
        return (f"single seed (n={len(candidate)} vs {len(baseline)}): no verdict on val loss; "
                "run >= 2 seeds per group, e.g. train.seed=1,2,3")
    if set(candidate) == set(baseline):
        seeds = sorted(candidate, key=str)
        a = np.array([candidate[s] for s in seeds])
        b = np.array([baseline[s] for s in seeds])
        if np.ptp(a - b) == 0:
            return "the same difference on every seed: no spread to test against"
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(CONFIDENCE)
        return Difference(float(np.mean(a - b)), float(ci.low), float(ci.high), float(res.pvalue),
                          f"paired t, {len(a)} seeds", True, float(np.var(a - b, ddof=1)))
    a, b = np.array(list(candidate.values())), np.array(list(baseline.values()))
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "identical values on every seed: no spread to test against"
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    per_run_var = (np.var(a, ddof=1) + np.var(b, ddof=1)) / 2  # n seeds per group: var = 2 * per_run_var / n
    return Difference(float(a.mean() - b.mean()), float(ci.low), float(ci.high), float(res.pvalue),
                      f"Welch t, {len(a)} vs {len(b)} seeds", False, float(2 * per_run_var))


def _mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA without replication of a (seeds >= 2, examples) matrix: MS of seeds, examples, residual."""
    S, N = x.shape
    rows, cols, grand = x.mean(axis=1), x.mean(axis=0), x.mean()
    ms_seed = N * float(np.var(rows, ddof=1))
    ms_ex = S * float(np.var(cols, ddof=1))
    resid = x - rows[:, None] - cols[None, :] + grand
    ms_res = float((resid ** 2).sum()) / ((S - 1) * (N - 1))
    return ms_seed, ms_ex, ms_res


def _satterthwaite(terms: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of scaled mean squares, terms = (coefficient * MS, its df)."""
    num = sum(v for v, _ in terms) ** 2
    den = sum(v * v / df for v, df in terms if df > 0)
    return num / den if den > 0 else math.inf


def _crossed_terms(seed_terms: list[tuple[float, float]], ex_terms: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The estimate's variance as (term, df) pairs that add up to it, for Satterthwaite's df of exactly
    the variance used: the seed part in full, the example part only where it came out above 0.

    The seed part is each group's MS_seed / (S N) = var_seed / S + var_res / (S N), the variance of the
    mean of its runs' accuracies: unbiased, with S - 1 df, never clipped (with 2-4 seeds a seed part
    estimated at 0 is often a real one; dropping it called `better`/`worse` up to 19% of the time on
    simulated nulls at alpha 0.05, 2 seeds x 2,000-10,042 examples). The example part, var_ex / N, is
    what the examples' mean squares hold beyond the residual that the seed part already counts:
    (MS_ex - MS_res) / (S N), from many df; below 0 (no example effect measured) it is dropped, and
    the df is then the seeds' alone, S - 1. Subtracting the residual from the few-df seed part
    instead would add the same variance with a Satterthwaite df near 1. Where the seed part is 0 too
    (every run the same accuracy) the examples' mean square, not less the residual, stands in."""
    if sum(v for v, _ in ex_terms) > 0:
        return seed_terms + ex_terms
    if sum(v for v, _ in seed_terms) > 0:
        return seed_terms
    return seed_terms + [(v, df) for v, df in ex_terms if v > 0]


def hellaswag_difference(candidate: np.ndarray, baseline: np.ndarray, paired_seeds: bool) -> Difference | str:
    """Difference in accuracy from per-example correctness, (seeds, examples) bool per group, same examples.

    Every run scores the same examples, so seeds and examples are crossed: the estimate's variance is
    a seed part (retrain and the accuracy moves) plus an example part (another sample of questions
    and it moves), estimated from the two-way ANOVA mean squares of the correctness matrix (seeds x
    examples, per group, or of the paired differences when both groups ran the same seeds), with
    Satterthwaite's degrees of freedom for the t reference. Pairing by example is kept throughout:
    the example part is the variance of the per-example difference, so questions that both models
    find easy or impossible cost nothing.

    Why not exact McNemar: it conditions on the trained models, so pooling the discordant pairs of
    several seeds treats the seed-to-seed differences as fixed; where seed noise is comparable to
    the example noise (as at GPT-2 small on 10,042 examples) its intervals are too narrow. Why not a
    bootstrap of seeds then examples: with 3-5 seeds, resampling seeds underestimates their spread
    and the percentile interval undercovers; simulated with 3 seeds whose noise is twice the example
    noise, it said `better`/`worse` 10.5% of the time at alpha 0.05. The t reference with
    Satterthwaite's df falls back to n_seeds - 1 degrees of freedom when seeds dominate and to the
    many examples' when they do not. With one seed in a group the seed part cannot be measured: no
    verdict (as for val loss); a test of the examples alone would be about those two trained models,
    and with seeds carrying 20-50% of the variance it says `better`/`worse` 8-16% of the time.
    """
    if min(candidate.shape[0], baseline.shape[0]) < 2:
        return (f"single seed (n={candidate.shape[0]} vs {baseline.shape[0]}): no verdict on HellaSwag, the seed "
                "noise is not measured (a test of examples alone would hold for these two trained models only); "
                "run >= 2 seeds per group, e.g. train.seed=1,2,3")
    c, b = candidate.astype(float), baseline.astype(float)
    N = c.shape[1]
    delta = float(c.mean() - b.mean())
    if paired_seeds:
        S = c.shape[0]
        ms_seed, ms_ex, ms_res = _mean_squares(c - b)
        seed_terms = [(ms_seed / (S * N), S - 1)]
        terms = _crossed_terms(seed_terms, [(ms_ex / (S * N), N - 1), (-ms_res / (S * N), (S - 1) * (N - 1))])
        per_seed = ms_seed / N
        test = f"paired seeds x examples t, {S} seeds x {N} examples"
    else:
        seed_terms, ex_terms, per_seed = [], [], 0.0
        for x in (c, b):
            S = x.shape[0]
            ms_seed, _, ms_res = _mean_squares(x)
            seed_terms.append((ms_seed / (S * N), S - 1))
            ex_terms.append((-ms_res / (S * N), (S - 1) * (N - 1)))  # already in the seed part
            per_seed += ms_seed / N
        ex_var = float(np.var(c.mean(axis=0) - b.mean(axis=0), ddof=1))  # per-example difference of means
        terms = _crossed_terms(seed_terms, [(ex_var / N, N - 1), *ex_terms])
        test = f"seeds x examples t, {c.shape[0]} vs {b.shape[0]} seeds x {N} examples"
    var, df = sum(v for v, _ in terms), _satterthwaite(terms)
    fixed = float(sum(v for v, _ in terms[len(seed_terms):]))  # the example part, if kept: more seeds do not shrink it
    if var <= 0:
        return "every run gave the same answer on every example: nothing to test"
    lo, hi, p = _ci_and_p(delta, var, df)
    return Difference(delta, lo, hi, p, test, paired_seeds, per_seed, fixed)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the k-th smallest (k = 0, 1, ...) of m p-values is multiplied by m - k; the running
    maximum keeps the adjusted values in the same order as the raw ones, and they are capped at 1.
    A comparison is significant when its adjusted p-value is below alpha.
    """
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for k, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _powers(effect: float, diff: Difference, ns: np.ndarray, alpha: float) -> np.ndarray:
    """Power at each seed count in ns (all >= 2), never nan: scipy's noncentral t returns nan (or values
    outside [0, 1]) at large noncentrality; there the normal approximation, whose error is below the
    nct's own tail there (the power is ~1), stands in."""
    ns = np.asarray(ns, dtype=float)
    se = np.sqrt(max(diff.per_seed_var, 0.0) / ns + diff.fixed_var)
    df = ns - 1 if diff.paired else 2 * ns - 2
    nc = abs(effect) / se
    crit = stats.t.ppf(1 - alpha / 2, df)
    with np.errstate(all="ignore"):
        exact = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    approx = stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc)
    return np.where(np.isfinite(exact) & (exact >= 0) & (exact <= 1), exact, approx)


def power(effect: float, diff: Difference, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test of diff's design with n >= 2 seeds per group to detect |effect|."""
    if n < 2 or diff.per_seed_var is None or max(diff.per_seed_var, 0.0) / n + diff.fixed_var <= 0:
        raise ValueError(f"power needs n >= 2 seeds and a positive variance (n={n}, {diff})")
    return float(_powers(effect, diff, np.array([n]), alpha)[0])


def seeds_needed(effect: float, diff: Difference, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """Fewest seeds per group (>= 2) reaching `target` power for |effect|; None if unknown, MAX_SEEDS + 1 if
    beyond reach (for HellaSwag the example part of the variance does not shrink with seeds).

    Every count from 2 to MAX_SEEDS is tried (one vectorized call): the answer is the first with the
    power, whatever the shape of the curve, so no count below it has the power and it skips none."""
    if not effect or not math.isfinite(effect) or diff.per_seed_var is None or not math.isfinite(diff.per_seed_var):
        return None
    if diff.per_seed_var <= 0 and diff.fixed_var <= 0:
        return 2  # no noise at all: any two seeds show the difference
    ns = np.arange(2, MAX_SEEDS + 1)
    reached = _powers(effect, diff, ns, alpha) >= target
    return int(ns[np.argmax(reached)]) if reached.any() else MAX_SEEDS + 1
