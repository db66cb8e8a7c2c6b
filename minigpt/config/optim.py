"""The `optim` group: optimizer and lr schedule (conf/optim/)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional


class OptimizerKind(str, Enum):
    adamw = "adamw"
    muon = "muon"  # Muon for the blocks' matrices, AdamW for embeddings, head, norms and biases


class LRSchedule(str, Enum):
    cosine = "cosine"  # llm.c: linear warmup, cosine down to learning_rate * learning_rate_decay_frac
    wsd = "wsd"  # warmup-stable-decay: linear warmup, constant, linear decay over the last decay_frac


@dataclass
class OptimConfig:
    """Optimizer and lr schedule, with llm.c's key names (defaults: llm.c's GPT-2 124M AdamW recipe).

    kind=muon (conf/optim/muon.yaml): `learning_rate` is Muon's, for the 2-D matrices inside the
    blocks; AdamW (beta1, beta2, eps) trains the rest with embedding_lr / head_lr / scalar_lr, given for
    width `lr_ref_width` and scaled by sqrt(lr_ref_width / n_embd) as nanochat does. The schedule scales
    every group's own lr by the same factor.
    """

    name: str = "adamw"
    kind: OptimizerKind = OptimizerKind.adamw
    learning_rate: float = 6e-4
    warmup_iters: int = 700
    schedule: LRSchedule = LRSchedule.cosine
    learning_rate_decay_frac: float = 0.0  # the schedule ends at learning_rate * this
    decay_frac: float = 0.2  # wsd: the lr decays over this last fraction of the run
    decay_shape: str = "linear"  # wsd's decay: linear | 1-sqrt (Hägele et al. 2024)
    weight_decay: float = 0.1  # adamw: 2-D weights only; muon: Muon's matrices only (decoupled, lr * wd)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    fused: Optional[bool] = None  # None: fused AdamW on CUDA and CPU, plain elsewhere
    # kind=muon: AdamW's groups and Muon's momentum (nanochat's values at width 768)
    embedding_lr: float = 0.3  # token and position embeddings
    head_lr: float = 0.008  # the output head (tied embeddings take this lr too)
    scalar_lr: float = 0.01  # norm gains and biases
    lr_ref_width: Optional[int] = 768  # AdamW lrs above are for this width; None: use them as given
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # warmed up linearly to muon_momentum over muon_momentum_warmup_iters
    muon_momentum_warmup_iters: int = 300
    muon_ns_steps: int = 5  # Newton-Schulz iterations (torch.optim.Muon runs them in bfloat16)
