"""What a halving sweep will cost, and how many seeds a verdict on an effect needs, before anything runs.

`python -m minigpt.plan` on a sweep preset with a `halving:` block (minigpt/halving/config.py) prices
three cases with the spec's step arithmetic (halving/config.py's run_steps): the full sweep (every run
`budget` steps), the worst case (no arm stopped: every run pays its trunk plus every cooldown branch;
also what audit mode costs) and the best case (all but the survivors the rule allows stop at the first
rung: under `verdict` the best arm, and the baseline with keep_baseline; under `top_k` ceil(n / eta)
of the arms left at each rung). Each run's GPU-hours, cost and wall time per step come from its job's
own forecast (plan/forecast.py), so an arm that trains faster costs less per step; the best case lets
the cheapest arms survive, a lower bound.

`--effect X` answers the question before any sweep: how many seeds a full-budget verdict on an effect
of X nats of val loss needs (80% power, compare's paired t-test at Holm's strictest level alpha / (arms
- 1); minigpt.compare.stats.seeds_needed), from the seed noise of the user's own finished groups of the
same model shape (the pooled std of their final val loss over seeds, and the pooled variance of the
per-seed difference of groups run on the same seeds when there are such), else DEFAULT_SEED_STD, and
what that many seeds cost as a full sweep and as the halving sweep.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from minigpt.errors import ConfigError
from minigpt.halving.config import HalvingConfig, StopRule, run_steps, top_k_keep
from minigpt.halving.sweep import check_halving, same_value

# Repeated GPT-2 small (124M) runs differ by about 0.002 nats of final val loss over seeds (the figure
# docs/comparing-runs.md sets the tiny CPU models' 0.03-0.09 against). Used only when no finished
# group of the same model shape has >= 2 seeds; tiny models are far noisier, so the output says so.
DEFAULT_SEED_STD = 0.002


@dataclass(frozen=True)
class Spend:
    """What some training costs: steps, GPU-hours, cost in the cluster's unit, wall seconds (None: unknown)."""

    steps: float = 0.0
    gpu_hours: float | None = 0.0
    cost: float | None = 0.0
    wall_s: float | None = 0.0

    def __add__(self, other: Spend) -> Spend:
        add = lambda a, b: None if a is None or b is None else a + b  # noqa: E731
        return Spend(self.steps + other.steps, add(self.gpu_hours, other.gpu_hours), add(self.cost, other.cost),
                     add(self.wall_s, other.wall_s))

    def __mul__(self, k: float) -> Spend:
        mul = lambda a: None if a is None else a * k  # noqa: E731
        return Spend(self.steps * k, mul(self.gpu_hours), mul(self.cost), mul(self.wall_s))

    def share_of(self, full: Spend) -> float:
        """Fraction of `full`, by wall time when both are known (GPU-hours and cost scale with it), else steps."""
        if self.wall_s is not None and full.wall_s:
            return self.wall_s / full.wall_s
        return self.steps / full.steps if full.steps else math.nan


def per_step(forecast, num_iterations: int) -> Spend:
    """One job's forecast spread over its steps: what one more (or one fewer) step of that run costs."""
    k = 1 / max(num_iterations, 1)
    per = lambda x: None if x is None else x * k  # noqa: E731
    return Spend(1.0, per(forecast.gpu_hours), per(forecast.cost), per(forecast.wall_s))


@dataclass(frozen=True)
class Case:
    name: str
    spend: Spend


def survivors(h: HalvingConfig, n_arms: int) -> list[int]:
    """Arms left after each decision (rungs but the last) in the best case the rule allows."""
    if h.rule == StopRule.top_k:
        left, out = n_arms, []
        for _ in h.rungs[:-1]:
            left = top_k_keep(h, left)
            out.append(left)
        return out
    keep = min(n_arms, 2 if h.keep_baseline else 1)  # the best arm, and the baseline when it is kept
    return [keep] * (len(h.rungs) - 1)


def halving_cases(h: HalvingConfig, arms: dict[str, Spend], n_seeds: int, baseline: str) -> list[Case]:
    """The full sweep, the worst and the best case; `arms` holds each arm's per-step spend of one run."""
    last = len(h.rungs) - 1
    full = sum((rate * (h.budget * n_seeds) for rate in arms.values()), Spend())
    worst = sum((rate * (run_steps(h, last) * n_seeds) for rate in arms.values()), Spend())
    # the cheapest arms survive longest (a lower bound); the kept baseline first
    order = sorted(arms, key=lambda a: (not (h.keep_baseline and a == baseline), arms[a].wall_s or 0.0))
    left = survivors(h, len(arms))
    best = Spend()
    for i, arm in enumerate(order):
        stop = next((r for r, n in enumerate(left) if i >= n), last)
        best = best + arms[arm] * (run_steps(h, stop) * n_seeds)
    kept = order[: left[0]] if left else order
    runs = len(arms) * n_seeds
    return [Case(f"full sweep ({runs} runs x {h.budget} steps)", full),
            Case("worst case: no arm stopped" + (" (audit mode's cost)" if h.audit else ""), worst),
            Case(f"best case: all but {', '.join(kept)} stop at rung 1 ({h.rungs[0]})", best)]


def arms_of(jobs: list) -> tuple[dict[str, list[int]], set[str]]:
    """The sweep's arms (its jobs' non-seed overrides that vary) -> job indices, and the seeds swept."""
    def axes(job) -> list[str]:
        return [o for o in job.overrides if not o.startswith(("train.seed=", "hydra."))]

    common = set.intersection(*(set(axes(j)) for j in jobs)) if jobs else set()
    arms: dict[str, list[int]] = {}
    seeds = set()
    for i, job in enumerate(jobs):
        name = " ".join(o for o in axes(job) if o not in common) or "base"
        arms.setdefault(name, []).append(i)
        seeds.update(o.split("=", 1)[1] for o in job.overrides if o.startswith("train.seed="))
    return arms, seeds or {"default"}


def baseline_arm(h: HalvingConfig, arms: list[str]) -> str:
    """The arm named by halving.baseline (its value, e.g. gpt2, or its override, arch=gpt2); else the first."""
    if h.baseline is None:
        return arms[0]
    for arm in arms:
        if arm == str(h.baseline) or any(same_value(o.split("=", 1)[-1], str(h.baseline)) for o in arm.split()):
            return arm
    raise ConfigError(f"halving.baseline={h.baseline} is none of the sweep's arms ({', '.join(arms)}): "
                      "name one of them, or leave it null for the first")


def checked(configs: list, n_seeds: int) -> HalvingConfig | None:
    """The sweep's `halving:` block, checked as `python -m minigpt.halving` checks it; None without one."""
    first = configs[0]
    if not first.halving.budget:
        return None
    check_halving(first.halving, n_seeds, first.optim.schedule.value)
    return first.halving


def arm_rates(arms: dict[str, list[int]], forecasts: list, configs: list) -> dict[str, Spend]:
    """Each arm's per-step spend of one run (the mean over its jobs: seeds cost the same)."""
    out = {}
    for arm, idx in arms.items():
        rates = [per_step(forecasts[i], configs[i].train.num_iterations) for i in idx]
        out[arm] = sum(rates, Spend()) * (1 / len(rates))
    return out


# ------------------------------------------------------------------------------------- --effect

@dataclass(frozen=True)
class SeedNoise:
    std: float  # of one run's final val loss over seeds
    source: str
    diff_var: float | None = None  # of the per-seed difference of two groups run on the same seeds, when measured

    @property
    def per_seed_var(self) -> float:
        """The planned paired difference's variance per seed: measured when groups shared seeds, else 2 std^2
        (the seed noise two arms share is then unknown, so pairing gets no credit: conservative)."""
        return self.diff_var if self.diff_var is not None else 2 * self.std ** 2


def seed_noise(roots: list[str], model_shape: str) -> SeedNoise:
    """Pooled over-seeds std of the final val loss of finished groups of this model shape under `roots`."""
    from minigpt.compare.groups import group_runs
    from minigpt.compare.local_runs import load_runs
    from minigpt.compare.verdicts import val_loss_values

    try:
        found = load_runs([r for r in roots if Path(r).exists()]) if any(Path(r).exists() for r in roots) else []
    except ConfigError:  # no run under them: no evidence, the default below
        found = []
    runs = [r for r in found if r.summary.get("model_shape") == model_shape]
    groups = [v for v in (val_loss_values(g.runs) for g in group_runs(runs)) if len(v) >= 2]
    if not groups:
        return SeedNoise(DEFAULT_SEED_STD, f"seed std {DEFAULT_SEED_STD} nats assumed: repeated GPT-2 small runs "
                         f"(docs/comparing-runs.md); no finished group of {model_shape} with >= 2 seeds under "
                         f"{', '.join(roots)}; tiny models are 15-45x noisier")
    std = math.sqrt(_pooled_variance([list(v.values()) for v in groups]))
    source = (f"seed std {std:.4g} nats: pooled over {len(groups)} finished group(s) "
              f"({sum(map(len, groups))} runs) of {model_shape} under {', '.join(roots)}")
    # every two groups run on the same seeds show how much of that noise pairing by seed removes
    diffs = [[a[s] - b[s] for s in a.keys() & b.keys()] for i, a in enumerate(groups) for b in groups[i + 1:]]
    diffs = [d for d in diffs if len(d) >= 2]
    if not diffs:
        return SeedNoise(std, source)
    diff_var = _pooled_variance(diffs)
    return SeedNoise(std, f"{source}; paired over shared seeds ({len(diffs)} pair(s) of groups) their difference's "
                          f"std is {math.sqrt(diff_var):.4g}", diff_var)


def _pooled_variance(samples: list[list[float]]) -> float:
    df = sum(len(x) - 1 for x in samples)
    return sum(statistics.variance(x) * (len(x) - 1) for x in samples) / df


def seeds_for_effect(effect: float, noise: SeedNoise, n_arms: int, alpha: float = 0.05) -> tuple[int | None, float]:
    """Seeds per arm for 80% power on |effect| with the paired t-test, at Holm's strictest level."""
    from minigpt.compare.stats import Difference, seeds_needed

    level = alpha / max(n_arms - 1, 1)
    diff = Difference(0.0, 0.0, 0.0, 1.0, "planned", True, per_seed_var=noise.per_seed_var)
    return seeds_needed(effect, diff, alpha=level), level


def effect_cases(effect: float, noise: SeedNoise, h: HalvingConfig | None, arms: dict[str, Spend],
                 baseline: str, budget: int) -> tuple[int | None, float, list[Case]]:
    """Seeds per arm for a verdict on `effect`, Holm's level, and what that many seeds cost."""
    n, level = seeds_for_effect(effect, noise, len(arms), h.alpha if h else 0.05)
    if n is None:
        return n, level, []
    from minigpt.compare.stats import MAX_SEEDS

    if n > MAX_SEEDS:
        return n, level, []
    if h is not None and h.budget:
        return n, level, halving_cases(h, arms, n, baseline)
    full = sum((rate * (budget * n) for rate in arms.values()), Spend())
    return n, level, [Case(f"full sweep ({len(arms) * n} runs x {budget} steps)", full)]
