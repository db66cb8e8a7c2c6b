"""Learning-rate schedules (cosine, warmup-stable-decay) and Muon's momentum warmup.

A schedule is a factor in [0, 1] of each param group's own base lr, so groups with different lrs
(Muon's matrices, AdamW's embeddings and head) follow one shape.
"""

from __future__ import annotations

import math
from typing import Callable

from minigpt.config import LRSchedule, OptimConfig


def _warmup(step: int, cfg: OptimConfig) -> float | None:
    """Linear warmup over warmup_iters (the full lr at step warmup_iters - 1); None after it."""
    return (step + 1) / cfg.warmup_iters if step < cfg.warmup_iters else None


def cosine(step: int, cfg: OptimConfig, num_iterations: int) -> float:
    """llm.c: linear warmup, then cosine from 1 down to learning_rate_decay_frac at the last step."""
    warm = _warmup(step, cfg)
    if warm is not None:
        return warm
    if num_iterations <= cfg.warmup_iters:
        return 1.0
    ratio = min(1.0, (step - cfg.warmup_iters) / (num_iterations - cfg.warmup_iters))
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    end = cfg.learning_rate_decay_frac
    return end + coeff * (1.0 - end)


# How the decay falls: `left` is the fraction of the decay still ahead (1 at its first step, 1 / decay_steps
# at its last), so a decay's factor depends only on where the step is in it, never on the run's length.
DECAY_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda left: left,
    "1-sqrt": lambda left: 1.0 - math.sqrt(1.0 - left),  # Hägele et al. 2024
}


def wsd(step: int, cfg: OptimConfig, num_iterations: int) -> float:
    """Warmup-stable-decay: linear warmup, 1 until the last decay_frac of the run, then down towards
    learning_rate_decay_frac in `decay_shape` (nanochat's warmdown: the last step still takes a small step)."""
    warm = _warmup(step, cfg)
    if warm is not None:
        return warm
    decay_steps = round(cfg.decay_frac * num_iterations)
    left = num_iterations - step  # steps left, this one included
    if decay_steps <= 0 or left > decay_steps:
        return 1.0
    progress = DECAY_SHAPES[cfg.decay_shape](left / decay_steps)
    end = cfg.learning_rate_decay_frac
    return end + progress * (1.0 - end)


SCHEDULES: dict[LRSchedule, Callable[[int, OptimConfig, int], float]] = {
    LRSchedule.cosine: cosine,
    LRSchedule.wsd: wsd,
}


def lr_factor(step: int, cfg: OptimConfig, num_iterations: int) -> float:
    """The schedule's multiplier of every group's base lr at `step` (counted from 0)."""
    return SCHEDULES[LRSchedule(cfg.schedule)](step, cfg, num_iterations)


def lr_at(step: int, cfg: OptimConfig, num_iterations: int) -> float:
    """`optim.learning_rate` under the schedule: the lr that is logged as train/lr."""
    return cfg.learning_rate * lr_factor(step, cfg, num_iterations)


def warmup_warning(cfg: OptimConfig, num_iterations: int) -> str | None:
    """One line when the warmup is as long as the run or longer: the lr then never gets past its warmup."""
    if cfg.warmup_iters < num_iterations:
        return None
    last = lr_at(num_iterations - 1, cfg, num_iterations)
    return (
        f"warning: optim.warmup_iters={cfg.warmup_iters} >= train.num_iterations={num_iterations}: the whole run is "
        f"warmup (lr {last:.2e} at the last step, peak {cfg.learning_rate:.2e}, no decay); "
        f"lower optim.warmup_iters or raise train.num_iterations"
    )

def muon_momentum_at(step: int, cfg: OptimConfig) -> float:
    """nanochat: momentum rises linearly from muon_momentum_start to muon_momentum over the warmup."""
    if cfg.muon_momentum_warmup_iters <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_iters, 1.0)
    return (1.0 - frac) * cfg.muon_momentum_start + frac * cfg.muon_momentum


class Schedule:
    """Sets each param group's lr (its base lr at construction x the schedule's factor) every step,
    and the momentum of Muon's groups (the only groups with Newton-Schulz `ns_steps`)."""

    def __init__(self, optimizer, cfg: OptimConfig, num_iterations: int):
        self.optimizer, self.cfg, self.num_iterations = optimizer, cfg, num_iterations
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]  # from the config, before any resume

    def apply(self, step: int) -> float:
        """Set the hyperparameters for `step`; returns the scheduled optim.learning_rate (for logging)."""
        factor = lr_factor(step, self.cfg, self.num_iterations)
        momentum = muon_momentum_at(step, self.cfg)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
            if "ns_steps" in group:
                group["momentum"] = momentum
        return self.cfg.learning_rate * factor
