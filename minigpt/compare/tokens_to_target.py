"""Tokens to reach a target validation loss: the sample-efficiency number of the speedrun world.

A run's validation curve is (tokens seen, val loss) at each evaluation. `tokens_to_reach` is where a
curve first gets down to a target loss, interpolated linearly between the two evaluations around the
crossing (None if it never does). For a group of runs that differ only in their seed, the curve is the
mean over seeds at each evaluation; the target is the baseline group's mean final val loss, so the
baseline needs (about) its whole budget, and `efficiency_ratio(baseline, arm)` = baseline tokens / arm
tokens: 1.5 means the arm reaches the baseline's result with 2/3 of the tokens.

In the report (report.py) the target is each table's baseline group (finished runs only): two group
columns (`tokens to target`, `tokens ratio vs baseline [95% CI]`) and a per-run column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from minigpt.compare.groups import Group, Table
from minigpt.compare.local_runs import Run
from minigpt.compare.verdicts import by_seed, seeds_match
from minigpt.units import si

Curve = Sequence[tuple[float, float]]  # (tokens seen, val loss), in any order


def final_loss(curve: Curve) -> float | None:
    """The val loss at the most tokens."""
    return max(curve)[1] if curve else None


def tokens_to_reach(curve: Curve, target: float) -> float | None:
    """Tokens at which the curve first reaches `target` (loss <= target), interpolated; None if never.

    A curve already at or below the target at its first evaluation returns that evaluation's tokens
    (the crossing happened before it: an upper bound).
    """
    previous = None
    for tokens, loss in sorted(curve):
        if loss <= target:
            if previous is None:
                return float(tokens)
            t0, l0 = previous  # l0 > target >= loss: the crossing lies between the two evaluations
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        previous = (tokens, loss)
    return None


def mean_curve(curves: Sequence[Curve]) -> list[tuple[float, float]]:
    """The seeds' mean val loss at every evaluation (token count) that all the curves share."""
    curves = [dict(c) for c in curves if c]
    if not curves:
        return []
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    return [(t, math.fsum(c[t] for c in curves) / len(curves)) for t in shared]


def target_loss(baseline_curves: Sequence[Curve]) -> float | None:
    """The baseline's final val loss: the last point of its seeds' mean curve."""
    return final_loss(mean_curve(baseline_curves))


@dataclass(frozen=True)
class Ratio:
    """Baseline tokens / arm tokens to reach the baseline's final loss, with a confidence interval."""

    ratio: float  # 0: the arm never reaches the target
    low: float  # nan when there are too few seeds for an interval; 0: the arm never reaches it at that end
    high: float
    confidence: float = 0.95

    def __str__(self) -> str:
        def end(x: float) -> str:  # a ratio of 0 codes "never reached": say so, it is not a ratio near 0
            return f"{x:.2f}" if x > 0 else "not reached"

        point = end(self.ratio) + ("x" if self.ratio > 0 else "")
        if math.isnan(self.low):
            return point
        return f"{point} [{end(self.low)}, {end(self.high)}]"


def _ratio(baseline_curves: Sequence[Curve], arm_curves: Sequence[Curve]) -> float:
    base = mean_curve(baseline_curves)
    target = final_loss(base)
    arm_tokens = tokens_to_reach(mean_curve(arm_curves), target) if target is not None else None
    base_tokens = tokens_to_reach(base, target) if target is not None else None
    if not base_tokens:
        return math.nan
    return base_tokens / arm_tokens if arm_tokens else 0.0


def efficiency_ratio(baseline_curves: Sequence[Curve], arm_curves: Sequence[Curve], confidence: float = 0.95,
                     n_resamples: int = 4000, seed: int = 0, paired: bool = False) -> Ratio | None:
    """How many times fewer tokens the arm's mean curve needs than the baseline's to reach the baseline's
    final loss; the interval is a percentile bootstrap over seeds (scipy.stats.bootstrap), resampling
    the runs of both groups, so the baseline's own seed noise (which moves the target) counts too.
    `paired`: the i-th curves of both groups share a seed (same init and data order), and a resample
    draws seeds, keeping each seed's two runs together, as the paired t-test of val loss does.
    None if either group has no validation curve; with `paired`, the lists must match one to one."""
    import numpy as np
    from scipy.stats import bootstrap

    if paired:  # drop a seed whose run has no curve on either side, keeping the pairs aligned
        if len(baseline_curves) != len(arm_curves):
            raise ValueError(f"paired curves: {len(baseline_curves)} baseline vs {len(arm_curves)} arm runs")
        kept = [(b, a) for b, a in zip(baseline_curves, arm_curves) if b and a]
        baseline_curves, arm_curves = [b for b, _ in kept], [a for _, a in kept]
    baseline_curves = [c for c in baseline_curves if c]
    arm_curves = [c for c in arm_curves if c]
    if not baseline_curves or not arm_curves:
        return None
    ratio = _ratio(baseline_curves, arm_curves)
    if len(baseline_curves) < 2 or len(arm_curves) < 2 or math.isnan(ratio):
        return Ratio(ratio, math.nan, math.nan, confidence)

    def resampled(base_idx, arm_idx) -> float:
        return _ratio([baseline_curves[int(i)] for i in base_idx], [arm_curves[int(i)] for i in arm_idx])

    indices = (np.arange(len(baseline_curves)), np.arange(len(arm_curves)))
    with np.errstate(all="ignore"):
        result = bootstrap(indices, resampled, vectorized=False, paired=paired, method="percentile",
                           confidence_level=confidence, n_resamples=n_resamples, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Ratio(ratio, float(low), float(high), confidence)


# ------------------------------------------------------------------------------------- in the report


def val_curve(run: Run) -> list[tuple[float, float]]:
    return [(run.tokens_at(step), loss) for step, loss in run.series("val/loss")]


def table_target(table: Table) -> float | None:
    """The final val loss of the table's baseline group (its seeds' mean curve); None without one."""
    return target_loss([val_curve(r) for r in table.baseline.runs]) if table.baseline else None


def _tokens_text(tokens: float | None, reached_anything: bool) -> str:
    return si(tokens) if tokens is not None else ("not reached" if reached_anything else "-")


def group_tokens(group: Group, table: Table) -> str:
    """Tokens the group's mean val-loss curve needs to reach the baseline's final val loss."""
    target, mean = table_target(table), mean_curve([val_curve(r) for r in group.runs])
    if target is None or not mean:
        return "-"
    return _tokens_text(tokens_to_reach(mean, target), True)


def group_ratio(group: Group, table: Table) -> str:
    """Baseline tokens / group tokens to the target, with a bootstrap CI over both groups' seeds."""
    if table.baseline is None:
        return "-"
    if group is table.baseline:  # 1 by definition; resampling it against itself would only show the target's noise
        return "1.00x" if table_target(table) is not None else "-"
    paired = seeds_match(group.runs, table.baseline.runs)
    base_runs, runs = (by_seed(table.baseline.runs), by_seed(group.runs)) if paired else (table.baseline.runs, group.runs)
    ratio = efficiency_ratio([val_curve(r) for r in base_runs], [val_curve(r) for r in runs], paired=paired)
    return str(ratio) if ratio is not None and not math.isnan(ratio.ratio) else "-"


def run_tokens(tables: list[Table]) -> dict[int, str]:
    """id(run) -> the tokens each run (finished or not) needed to reach its table's target."""
    cells = {}
    for table in tables:
        target = table_target(table)
        for group in table.groups:
            for run in group.all_runs:
                curve = val_curve(run)
                reached = tokens_to_reach(curve, target) if target is not None else None
                cells[id(run)] = _tokens_text(reached, bool(curve)) if target is not None else "-"
    return cells


def note(table: Table) -> str | None:
    target = table_target(table)
    if target is None:
        return None
    return (f"tokens to target: tokens the group's mean val-loss curve (over its seeds) needed to reach the final "
            f"val loss of the baseline group {table.baseline.label!r}, {target:.4f}, interpolated between evaluations; "
            "tokens ratio: baseline tokens / group tokens (>1: fewer tokens than the baseline), 95% CI: percentile "
            "bootstrap over seeds, drawing each seed's two runs together when both groups ran the same seeds "
            "(else each group's seeds apart); `not reached` as the CI's low end: over 2.5% of the resamples never got there.")
