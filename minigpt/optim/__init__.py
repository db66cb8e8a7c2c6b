"""Optimizers and learning-rate schedules, chosen by config (`optim.kind`, `optim.schedule`).

- `adamw`: one AdamW, weight decay on 2-D weights only (llm.c).
- `muon`: torch.optim.Muon for the 2-D matrices inside the transformer blocks, AdamW for embeddings,
  the head, norms and biases, each group with its own lr; the two run as one `CombinedOptimizer`.
- `Schedule` sets every group's lr each step: the group's own base lr times the schedule's factor
  (cosine or warmup-stable-decay), plus Muon's momentum warmup.

The trainer only calls `build_optimizer` and `Schedule.apply`; it never branches on the optimizer.
"""

from __future__ import annotations

from typing import Callable

import torch

from minigpt.config import OptimConfig, OptimizerKind
from minigpt.optim.adamw import build_adamw, param_groups
from minigpt.optim.combined import CombinedOptimizer
from minigpt.optim.muon import build_muon, muon_param_groups
from minigpt.optim.schedule import Schedule, lr_at, lr_factor, muon_momentum_at, warmup_warning

BUILDERS: dict[OptimizerKind, Callable[[torch.nn.Module, OptimConfig, str], object]] = {
    OptimizerKind.adamw: build_adamw,
    OptimizerKind.muon: build_muon,
}


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device_type: str):
    """The optimizer `cfg.kind` names: a torch optimizer, or a CombinedOptimizer of several."""
    return BUILDERS[OptimizerKind(cfg.kind)](model, cfg, device_type)


__all__ = ["BUILDERS", "CombinedOptimizer", "Schedule", "build_optimizer", "lr_at", "lr_factor", "muon_momentum_at",
           "muon_param_groups", "param_groups", "warmup_warning"]
