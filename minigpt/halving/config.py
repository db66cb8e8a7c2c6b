"""The `halving:` block of a halving sweep preset (docs/halving.md), and its step arithmetic.

A halving sweep's runs are full-length WSD runs (the *trunks*, `train.num_iterations=budget`,
`optim.decay_frac=cooldown`); at each rung s_r < budget every surviving run branches a cooldown of
c_r = round(cooldown * s_r) steps from its trunk's checkpoint at s_r - c_r, which is step for step a
fresh WSD run of s_r steps; the last rung's "branch" is the trunk's own decay. This module imports
nothing from minigpt, so the schema (minigpt/config/) and the planner can both read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional


class StopRule(str, Enum):
    verdict = "verdict"  # stop an arm only when it is worse than the rung's best (multiple comparisons with the best)
    top_k = "top_k"  # classic successive halving: keep the best ceil(n / eta) by mean (noise-blind)


# The cooldown shapes (minigpt/optim/schedule.py's DECAY_SHAPES; strings, since `1-sqrt` is no enum name).
DECAY_SHAPES = ("linear", "1-sqrt")


@dataclass
class HalvingConfig:
    """Read by `python -m minigpt.halving` only: it is not part of a run's identity (minigpt/run_identity.py)."""

    budget: int = 0  # B, steps of a full run; 0: not a halving sweep
    rungs: List[int] = field(default_factory=list)  # increasing, the last == budget
    cooldown: float = 0.2  # f: each rung's cooldown is round(f * rung) steps; the trunk's optim.decay_frac
    cooldown_shape: str = "linear"  # linear | 1-sqrt: the branches' and the trunk's optim.decay_shape
    rule: StopRule = StopRule.verdict
    eta: int = 3  # top_k keeps ceil(n_arms / eta) arms per rung
    keep_baseline: bool = True  # the baseline arm runs to the end, so every arm gets its verdict against it
    baseline: Optional[str] = None  # the baseline arm's value (e.g. gpt2 or 0.003); None: the first arm
    audit: bool = False  # every arm also runs to the budget; the report compares early and full verdicts
    alpha: float = 0.05


def cooldown_steps(cfg: HalvingConfig, rung: int) -> int:
    """c_r, the cooldown of the branch that ends at step `rung`."""
    return round(cfg.cooldown * rung)


def pause_step(cfg: HalvingConfig, rung: int) -> int:
    """s_r - c_r: the trunk checkpoint the rung's branch forks from (for the last rung: the budget)."""
    return cfg.budget if rung == cfg.budget else rung - cooldown_steps(cfg, rung)


def run_steps(cfg: HalvingConfig, last_rung: int) -> int:
    """Steps one run costs when its last rung is `last_rung` (an index): its trunk to that rung's
    checkpoint (or to the budget) plus every cooldown branch it ran."""
    rungs = cfg.rungs[: last_rung + 1]
    branches = sum(cooldown_steps(cfg, s) for s in rungs if s != cfg.budget)
    return pause_step(cfg, rungs[-1]) + branches


def top_k_keep(cfg: HalvingConfig, n_arms: int) -> int:
    return max(1, math.ceil(n_arms / cfg.eta))
