"""AdamW with weight decay on 2-D weights only (llm.c's recipe)."""

from __future__ import annotations

import torch

from minigpt.config import OptimConfig


def use_fused(cfg: OptimConfig, device_type: str) -> bool:
    # Fused kernels exist for CUDA and (torch >= 2.4) CPU: one pass over all parameters per step.
    return cfg.fused if cfg.fused is not None else device_type in ("cuda", "cpu")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear weights, embeddings); never biases or norm gains (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() already dedups tied weights
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_adamw(model: torch.nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=use_fused(cfg, device_type),
    )
