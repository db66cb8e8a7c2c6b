"""Peak memory per device for one training step: weights, gradients, optimizer state, activations.

The activation term follows Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (arXiv:2205.05198), section 4.1: per layer and token a GPT block saves 34*h bytes
(16-bit activations) plus 5*a*s bytes of attention scores. Our blocks differ from theirs, so the
count is redone term by term for what autograd really keeps here:

- no dropout (their 3 dropout masks: -2h bytes, and the score-sized mask goes with the scores);
- `F.scaled_dot_product_attention` uses flash/memory-efficient kernels, which keep the output and a
  log-sum-exp per head instead of the s x s scores (the 5*a*s term vanishes);
- under autocast the residual stream and the norms stay float32 (4 bytes), and the linear layers keep
  a 16-bit copy of their input (and of their weight);
- GQA keeps k and v at n_kv_head * head_dim; RoPE keeps rotated copies of q and k; SwiGLU keeps gate,
  silu(gate), up and their product (4 x hidden) where GELU and ReLU^2 keep fc and act(fc) (2 x 4h);
- the modern switches: QK-norm keeps its per-head rsqrt, one query-sized tensor, under autocast the
  float32 casts of q and k, and without RoPE the normalised q and k that attention keeps; the
  embedding norm keeps its float32 input once (minigpt/memory.py: switch_bytes_per_token); a logit
  softcap keeps one more chunk of the lean loss.

tests/test_plan.py checks the body's term against the tensors autograd actually saves (every arch
preset, float32 and bfloat16 autocast, within 1%), and the whole peak against torch's memory profiler.

For small models the vocabulary dominates instead: the loss term is the chunked (lean) loss's, from
minigpt/memory.py (its gradients, made in forward, and one chunk of logits; never B*T*V at once).
The peak is the larger of two moments of a step: the start of backward (all activations and the
cross-entropy buffers alive) and its end (all gradients plus the embedding's gradient temporary).
tests/test_plan.py checks the total against the peak measured by torch's memory profiler on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.config import ArchConfig, MLPKind, ModelConfig, Norm, OptimizerKind, PosEncoding
from minigpt.memory import lean_loss_bytes, switch_bytes_per_token
from minigpt.model.components import resolve_kv_heads, swiglu_hidden_size

GIB = 2**30
FP32 = 4
HALF = 2
ADAM_STATES = 2  # exp_avg and exp_avg_sq, float32, per parameter
MUON_STATES = 1  # momentum_buffer, float32, per matrix element (optim=muon's block matrices)


@dataclass
class MemoryEstimate:
    """Bytes per device at the peak of a training step, and the parts that make it up."""

    weights: int  # float32 master weights (autocast computes in 16 bits from them)
    grads: int  # float32, one per weight
    optimizer: int  # AdamW's two float32 states (Muon's one); the largest shard under ZeRO-1
    ddp_buckets: int  # DDP's gradient buckets (a second copy of the gradients), data-parallel runs only
    activations: int  # saved for backward by the transformer body (and autocast's 16-bit weight copies)
    cross_entropy: int  # logits, log_softmax and the two B*T*V gradient buffers of its backward
    peak: int

    def as_gb(self) -> dict:
        return {k: v / GIB for k, v in vars(self).items()}


def zero1_largest_shard(groups: list[list[int]], world_size: int) -> int:
    """Elements of the largest optimizer shard under ZeRO-1, partitioned as ZeroRedundancyOptimizer does.

    torch.distributed.optim.ZeroRedundancyOptimizer._partition_parameters: per parameter group, the
    parameters sorted by size (largest first) each go to the rank with the smallest total so far.
    One big tensor (the tied embedding) can make one rank's shard far larger than total / world_size.
    """
    sizes = [0] * world_size
    for group in groups:
        for n in sorted(group, reverse=True):
            rank = sizes.index(min(sizes))
            sizes[rank] += n
    return max(sizes)


def activation_bytes_per_token(arch: ArchConfig, model: ModelConfig, half: bool) -> int:
    """Bytes the transformer body saves for backward per token: every layer, the final norm, the head's input."""
    h = model.n_embd
    a = HALF if half else FP32  # what linear layers keep: their (autocast) input, their outputs
    r = FP32  # residual stream and norms: float32 even under autocast
    head_dim = h // model.n_head
    kv = resolve_kv_heads(arch, model) * head_dim
    norm = (r * h + 2 * FP32) if arch.norm == Norm.layernorm else (2 * r * h + FP32)  # LN: x, mean, rstd; RMS: x, x*rsqrt, rsqrt
    attn = (
        a * h  # c_attn input
        + a * (h + 2 * kv)  # q, k, v (views of c_attn's output, kept by attention)
        + (a * (h + kv) if arch.pos_encoding == PosEncoding.rope else 0)  # rotated q, k
        + a * h + FP32 * model.n_head  # attention output (also c_proj's input: already contiguous) and log-sum-exp
    )
    if arch.mlp == MLPKind.swiglu:  # autocast casts the input once for gate and once for up
        mlp = (2 if half else 1) * a * h + 4 * a * swiglu_hidden_size(h)
    else:
        mlp = a * h + 2 * a * 4 * h
    switches, once = switch_bytes_per_token(arch, model, half)  # QK-norm, embedding norm (minigpt/memory.py)
    layer = 2 * norm + attn + mlp + switches
    final = norm + a * h  # ln_f and the head's input
    return model.n_layer * layer + final + once


def optimizer_state_bytes(model: torch.nn.Module, kind: OptimizerKind, world_size: int, zero_stage: int) -> int:
    """Float32 optimizer state on the busiest rank. optim=muon: Muon's one state for the block matrices and
    AdamW's two for the rest, each optimizer sharded on its own under ZeRO-1 (their largest shards added:
    an upper bound when they land on different ranks)."""
    from minigpt.optim import muon_param_groups, param_groups

    if kind == OptimizerKind.muon:
        groups = muon_param_groups(model)
        parts = [(MUON_STATES, [groups.pop("matrices")]), (ADAM_STATES, list(groups.values()))]
    else:
        parts = [(ADAM_STATES, [g["params"] for g in param_groups(model, 0.0)])]
    total = 0
    for states, part in parts:
        sizes = [[p.numel() for p in group] for group in part]
        shard = zero1_largest_shard(sizes, world_size) if zero_stage >= 1 and world_size > 1 else sum(map(sum, sizes))
        total += states * FP32 * shard
    return total


def estimate_memory(model: torch.nn.Module, arch: ArchConfig, model_cfg: ModelConfig, *, batch_size: int,
                    seq_len: int, dtype: str, world_size: int = 1, zero_stage: int = 0,
                    grad_accum: int = 1, optimizer: OptimizerKind = OptimizerKind.adamw) -> MemoryEstimate:
    """Peak bytes on one device while training `model` (built on the meta device is enough: only shapes count).

    Two candidate peaks, measured on CPU with torch's memory profiler (tests/test_plan.py):
    - start of backward: weights + optimizer state (+ gradients already accumulated by earlier micro-steps)
      + every saved activation + the cross-entropy buffers;
    - end of backward: weights + optimizer state + all gradients + one embedding-sized temporary (the tied
      embedding's two gradients are summed) + the logits the caller still holds.
    """
    half = dtype in ("bfloat16", "float16")
    params = sum(p.numel() for p in model.parameters())
    grads = FP32 * params
    weights = grads + sum(b.numel() * b.element_size() for b in model.buffers())  # + RoPE's cos/sin tables
    optimizer_state = optimizer_state_bytes(model, OptimizerKind(optimizer), world_size, zero_stage)
    ddp_buckets = FP32 * params if world_size > 1 else 0

    tokens = batch_size * seq_len
    body = activation_bytes_per_token(arch, model_cfg, half)
    # Under autocast each body matmul keeps a 16-bit copy of its weight for backward (the head's: in the loss term).
    linear = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head")
    autocast_copies = HALF * linear if half else 0
    activations = int(body * tokens) + autocast_copies
    # The chunked loss multiplies the padded head, a chunk of rows at a time, and never holds B*T*V logits.
    cross_entropy = lean_loss_bytes(tokens, model_cfg.n_embd, model.wte.weight.shape[0], half,
                                    softcap=arch.logit_softcap is not None)

    accumulated = grads if grad_accum > 1 else 0
    start_of_backward = weights + optimizer_state + accumulated + activations + cross_entropy
    embedding = FP32 * model.wte.weight.numel() if arch.tie_embeddings else 0  # the tied table's two gradients summed
    end_of_backward = weights + optimizer_state + grads + embedding
    peak = max(start_of_backward, end_of_backward) + ddp_buckets
    return MemoryEstimate(weights, grads, optimizer_state, ddp_buckets, activations, cross_entropy, int(peak))
