"""Muon (torch.optim.Muon) for the 2-D matrices inside the blocks, AdamW for the rest (nanochat's split).

Muon orthogonalises each matrix's momentum (Newton-Schulz), which suits hidden-layer matrices but not
embedding tables (a lookup, not a matmul), the output head or 1-D gains and biases; those get AdamW,
each kind with its own lr. Attention's fused q/k/v projection is one matrix here, orthogonalised as
a whole; torch's "original" lr adjustment (x sqrt(rows / cols) for tall matrices) keeps its update
size in line with the square ones.
"""

from __future__ import annotations

import math

import torch

from minigpt.config import OptimConfig
from minigpt.optim.adamw import use_fused
from minigpt.optim.combined import CombinedOptimizer

MUON_GROUP = "matrices"
ADAMW_GROUPS = ("embeddings", "head", "scalars")


def muon_param_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Every trainable parameter in exactly one group (checked):

    - matrices: 2-D weights inside the transformer blocks (Muon);
    - embeddings: the token and position tables;
    - head: the output head (with tied embeddings the shared table is the head: its gradient is
      dominated by the output side, and the head's small lr keeps the logits stable);
    - scalars: everything else, i.e. norm gains and biases.
    """
    in_blocks = {id(p) for p in model.h.parameters()}
    embeddings = {id(model.wte.weight)} | ({id(model.wpe.weight)} if model.wpe is not None else set())
    groups: dict[str, list] = {MUON_GROUP: [], **{name: [] for name in ADAMW_GROUPS}}
    for p in model.parameters():  # each tensor once, tied weights included
        if not p.requires_grad:
            continue
        if p is model.lm_head.weight:
            groups["head"].append(p)
        elif id(p) in embeddings:
            groups["embeddings"].append(p)
        elif id(p) in in_blocks and p.dim() == 2:
            groups[MUON_GROUP].append(p)
        else:
            groups["scalars"].append(p)
    check_partition(model, groups)
    return groups


def check_partition(model: torch.nn.Module, groups: dict[str, list]) -> None:
    """Each trainable parameter in exactly one group, and no matrix among the scalars."""
    seen = [id(p) for params in groups.values() for p in params]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(seen) == len(set(seen)), "a parameter is in two optimizer groups"
    assert set(seen) == trainable, f"{len(trainable - set(seen))} parameters are in no optimizer group"
    stray = [tuple(p.shape) for p in groups["scalars"] if p.dim() >= 2]
    assert not stray, f"matrices {stray} outside the blocks have no optimizer group: give them one"


def adamw_lr_scale(cfg: OptimConfig, n_embd: int) -> float:
    """nanochat scales AdamW's lrs by 1/sqrt(width / 768): narrower models take larger steps."""
    return math.sqrt(cfg.lr_ref_width / n_embd) if cfg.lr_ref_width else 1.0


def build_muon(model: torch.nn.Module, cfg: OptimConfig, device_type: str) -> CombinedOptimizer:
    groups = muon_param_groups(model)
    scale = adamw_lr_scale(cfg, model.model_config.n_embd)
    lrs = {"embeddings": cfg.embedding_lr, "head": cfg.head_lr, "scalars": cfg.scalar_lr}
    adamw = torch.optim.AdamW(
        [{"params": groups[name], "lr": lrs[name] * scale} for name in ADAMW_GROUPS if groups[name]],
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=0.0,
        fused=use_fused(cfg, device_type),
    )
    muon = torch.optim.Muon(
        groups[MUON_GROUP],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum,
        nesterov=True,
        ns_steps=cfg.muon_ns_steps,
        adjust_lr_fn="original",
    )
    return CombinedOptimizer({"adamw": adamw, "muon": muon})
