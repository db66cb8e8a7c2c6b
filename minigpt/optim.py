"""AdamW with weight decay on 2-D weights only, and llm.c's warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from minigpt.config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear weights, embeddings); never biases or norm gains (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() already dedups tied weights
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.Optimizer:
    # Fused kernels exist for CUDA and (torch >= 2.4) CPU: one pass over all parameters per step.
    fused = cfg.fused if cfg.fused is not None else device_type in ("cuda", "cpu")
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=fused,
    )


def lr_at(step: int, cfg: OptimConfig, num_iterations: int) -> float:
    """llm.c schedule: linear warmup over warmup_iters, then cosine from lr to lr * decay_frac.

    `step` counts from 0; warmup reaches the full lr at step warmup_iters - 1.
    """
    lr = cfg.learning_rate
    min_lr = lr * cfg.learning_rate_decay_frac
    if step < cfg.warmup_iters:
        return lr * (step + 1) / cfg.warmup_iters
    if num_iterations <= cfg.warmup_iters:
        return lr
    ratio = min(1.0, (step - cfg.warmup_iters) / (num_iterations - cfg.warmup_iters))
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)


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
