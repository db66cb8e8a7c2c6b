"""Peak memory of one training step on one device: the one memory model, for the start-up line, the bench
and the forecast (`python -m minigpt.plan`). Only shapes count: a model built on the meta device is enough.

`estimate_memory(cfg, world_size)` (or `estimate_step_memory(model, ...)` for a model already built, at
any micro-batch) adds up what an eager training step holds at its two candidate peaks:
- the end of the forward pass, inside the lean loss (minigpt/model/loss.py): weights, optimizer state,
  gradients of earlier micro-steps, every activation autograd saved, the loss's own gradients and
  one chunk of logits with its softmax and matmul temporaries (and autocast's 16-bit head weight);
- the end of the backward pass: weights, optimizer state, all gradients and, with tied embeddings, the
  head's and the lookup's gradients of the shared table while autograd sums them;
plus, on data-parallel runs, DDP's gradient buckets (a second copy of the gradients).
Where SDPA falls back to its math kernel (`minigpt.runtime.attention_kernel`: float32 GQA on CUDA), each
layer also keeps its B x n_head x T^2 float32 softmax scores and the key/value heads expanded to n_head.

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv:2205.05198), section 4.1 (34*h bytes per layer and token plus 5*a*s of attention
scores), redone term by term for what autograd keeps here (checked against `saved_tensors_hooks`): no
dropout (no masks); SDPA's flash kernels keep the output and a log-sum-exp per head, no s x s scores;
LayerNorm keeps its input, mean and rstd (RMSNorm, decomposed on CPU: input, normalised input, rstd);
every linear keeps its input (a 16-bit copy under autocast, and a 16-bit copy of its weight); attention
keeps q, k, v (views of the qkv projection's output, so all of it; GQA: k and v at n_kv_head heads);
RoPE keeps the rotated q and k; GELU and ReLU^2 their input and output, SwiGLU gate, silu(gate), up and
their product (and, under autocast, one 16-bit copy of its input for each of its two input
projections); the modern switches what `switch_bytes_per_token` lists. The residual stream and norms
stay float32 under autocast. The loss term is the lean loss's: never B x T x V logits at once, and the
same chunks compiled or not (under torch.compile its loop stays eager, each chunk compiled on its own).

Optimizer state is float32: AdamW's two states per parameter; optim=muon, Muon's one (momentum) for the
block matrices and AdamW's two for the rest; ZeRO-1, the largest shard as ZeroRedundancyOptimizer
partitions it. A compiled step (torch.compile fuses and recomputes elementwise ops) needs less: the
estimate is an upper bound there. tests/test_memory.py compares it with the peak torch's MemTracker
measures on CPU (eager, float32 and bf16 autocast, every arch preset, AdamW and Muon, loss-, body- and
gradient-bound shapes) and the body's term with the tensors autograd saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.config import ArchConfig, Config, MLPKind, ModelConfig, Norm, OptimizerKind, PosEncoding, uses_gqa
from minigpt.model.components import resolve_kv_heads, swiglu_hidden_size
from minigpt.model.loss import CHUNK_ELEMENTS, chunk_rows

FP32, HALF, INT64 = 4, 2, 8
GIB = 2**30
ADAM_STATES = 2  # exp_avg and exp_avg_sq, float32, per parameter
MUON_STATES = 1  # momentum_buffer, float32, per matrix element (optim=muon's block matrices)


@dataclass
class MemoryEstimate:
    """Bytes on one device; `peak` is the larger of the two moments (see the module docstring) plus DDP's buckets."""

    weights: int  # float32 master weights and buffers (RoPE's cos/sin tables)
    grads: int  # float32, one per weight
    optimizer: int  # the optimizer's float32 state; the largest shard under ZeRO-1
    ddp_buckets: int  # DDP's gradient buckets, data-parallel runs only
    activations: int  # saved for backward by the body, plus autocast's 16-bit weight copies
    loss: int  # the lean loss at its largest: its gradients and one chunk's buffers
    peak: int

    def gib(self) -> dict[str, float]:
        return {k: v / GIB for k, v in vars(self).items()}


def switch_bytes_per_token(arch: ArchConfig, model: ModelConfig, half: bool) -> tuple[int, int]:
    """(per layer, once) bytes per token that the modern switches add to what autograd saves: QK-norm keeps
    an rsqrt per query and key head, one query-sized tensor, under autocast the float32 casts of q and k
    (the norm runs in float32), and without RoPE the normalised q and k that attention then keeps (with
    RoPE: the rotated ones, counted already); the embedding norm keeps its float32 input and rsqrt.
    ReLU^2 keeps what GELU keeps."""
    h = model.n_embd
    a = HALF if half else FP32
    kv_heads = resolve_kv_heads(arch, model)
    kv = kv_heads * (h // model.n_head)
    per_layer = 0
    if arch.qk_norm:
        per_layer = (FP32 * (model.n_head + kv_heads) + a * h + (FP32 * (h + kv) if half else 0)
                     + (a * (h + kv) if arch.pos_encoding != PosEncoding.rope else 0))
    once = FP32 * h + FP32 if arch.embed_norm else 0
    return per_layer, once


def activation_bytes_per_token(arch: ArchConfig, model: ModelConfig, half: bool) -> int:
    """Bytes the body saves for backward per token (all layers, the final norm, the token ids)."""
    h = model.n_embd
    a = HALF if half else FP32  # linear inputs and outputs: the autocast dtype
    kv = resolve_kv_heads(arch, model) * (h // model.n_head)
    norm = FP32 * h + 2 * FP32 if arch.norm == Norm.layernorm else 2 * FP32 * h + FP32
    attn = a * h + a * (h + 2 * kv) + a * h + FP32 * model.n_head  # input, qkv, output, log-sum-exp
    if arch.pos_encoding == PosEncoding.rope:
        attn += a * (h + kv)  # rotated q and k
    if arch.mlp == MLPKind.swiglu:  # gate and up read the same input: autocast casts it once for each
        mlp = (2 if half else 1) * a * h + 4 * a * swiglu_hidden_size(h)
    else:
        mlp = a * h + 2 * a * 4 * h
    switches, once = switch_bytes_per_token(arch, model, half)
    return model.n_layer * (2 * norm + attn + mlp + switches) + norm + once + INT64


def math_attention_bytes_per_token(model: ModelConfig, seq_len: int) -> int:
    """What SDPA's math kernel keeps beyond the flash kernel, per token (all layers): the float32 softmax
    scores of every query head against the sequence (B x H x T^2 per layer), and k and v expanded from
    n_kv_head to n_head heads for the batched matmuls."""
    return model.n_layer * (FP32 * model.n_head * seq_len + 2 * FP32 * model.n_embd)


def lean_loss_bytes(tokens: int, width: int, head_rows: int, half: bool, softcap: bool = False) -> int:
    """The lean loss at its largest (minigpt/model/loss.py).

    Its input (the float32 final-norm output), grad_x and grad_w (held from its forward to its backward),
    one chunk of float32 logits (softmax computed in place) and the largest temporary next to it. With a
    logit softcap that temporary can be a second float32 chunk: tanh's output, kept for the gradient.
    """
    rows = chunk_rows(tokens, head_rows, CHUNK_ELEMENTS)
    held = 2 * FP32 * tokens * width + FP32 * head_rows * width
    softmax = rows * head_rows * FP32
    tanh = softmax if softcap else 0
    if half:  # autocast's cached 16-bit head weight; 16-bit copies of softmax and inputs, matmul outputs, casts
        chunk = softmax + HALF * head_rows * width + max(rows * head_rows * HALF + HALF * (head_rows + rows) * width,
                                                         (HALF + FP32) * head_rows * width, tanh)
    else:  # the larger matmul output next to the softmax: this chunk's grad_x rows or its grad_w
        chunk = softmax + max(FP32 * max(rows, head_rows) * width, tanh)
    return held + chunk


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


@dataclass
class ModelMemory:
    """What a step holds whatever its micro-batch: counted once per model (walking a deep model's modules
    for every batch size a forecast tries would take minutes)."""

    weights: int
    grads: int
    optimizer: int
    linear: int  # elements of the body's linear weights (autocast keeps a 16-bit copy of each)
    head_rows: int  # the padded vocabulary the loss multiplies
    embedding: int  # elements of the token embedding table


def model_memory(model: torch.nn.Module, optimizer: OptimizerKind = OptimizerKind.adamw, world_size: int = 1,
                 zero_stage: int = 0) -> ModelMemory:
    params = sum(p.numel() for p in model.parameters())
    grads = FP32 * params
    weights = grads + sum(b.numel() * b.element_size() for b in model.buffers())  # + RoPE's cos/sin tables
    linear = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head")
    return ModelMemory(weights, grads, optimizer_state_bytes(model, OptimizerKind(optimizer), world_size, zero_stage),
                       linear, model.wte.weight.shape[0], model.wte.weight.numel())


def estimate_step_memory(model: torch.nn.Module | ModelMemory, arch: ArchConfig, model_cfg: ModelConfig, *,
                         batch_size: int, seq_len: int, dtype: str, world_size: int = 1, zero_stage: int = 0,
                         grad_accum: int = 1, optimizer: OptimizerKind = OptimizerKind.adamw,
                         math_attention: bool = False) -> MemoryEstimate:
    """Peak bytes on one device while training `model` (built on the meta device is enough, or its
    `model_memory`, counted once for many micro-batches) at this micro-batch; `math_attention`: SDPA
    runs its math kernel (see `minigpt.runtime.attention_kernel`)."""
    half = dtype in ("bfloat16", "float16")
    fixed = model if isinstance(model, ModelMemory) else model_memory(model, optimizer, world_size, zero_stage)
    grads, weights, optimizer_state = fixed.grads, fixed.weights, fixed.optimizer
    ddp_buckets = grads if world_size > 1 else 0

    tokens = batch_size * seq_len
    # Under autocast each body matmul keeps a 16-bit copy of its weight (the head's: in the loss term).
    activations = activation_bytes_per_token(arch, model_cfg, half) * tokens + (HALF * fixed.linear if half else 0)
    if math_attention:
        activations += math_attention_bytes_per_token(model_cfg, seq_len) * tokens
    # the loss multiplies the padded head on every device
    loss = lean_loss_bytes(tokens, model_cfg.n_embd, fixed.head_rows, half, softcap=arch.logit_softcap is not None)

    earlier_grads = grads if grad_accum > 1 else 0
    end_of_forward = weights + optimizer_state + earlier_grads + activations + loss
    # The tied table's two gradients (the head's, made in the loss's forward, and the lookup's) wait for each
    # other and are summed into a third: two tables beyond the gradient (MemTracker sees them, tests/test_memory.py).
    embedding = 2 * FP32 * fixed.embedding if arch.tie_embeddings else 0
    end_of_backward = weights + optimizer_state + grads + embedding
    peak = max(end_of_forward, end_of_backward) + ddp_buckets
    return MemoryEstimate(weights, grads, optimizer_state, ddp_buckets, activations, loss, peak)


def params_without_building(arch: ArchConfig, model_cfg: ModelConfig) -> int:
    """The parameter count of a model of any depth, from a one- and a two-layer model on the meta device
    (every layer has the same size), so a forecast can refuse a model too large to build at all."""
    from dataclasses import replace

    from minigpt.model.gpt import GPT

    with torch.device("meta"):
        one, two = (sum(p.numel() for p in GPT(arch, replace(model_cfg, n_layer=n)).parameters()) for n in (1, 2))
    return one + (two - one) * (model_cfg.n_layer - 1)


def estimate_memory(cfg: Config, world_size: int = 1, device: torch.device | None = None) -> MemoryEstimate:
    """Peak bytes of one training step of `cfg` on one of `world_size` devices (eager; compiled needs less).
    `device`: where it trains (None: where train.device would put it), which decides train.dtype=auto and
    the attention kernel."""
    from minigpt.model.gpt import GPT
    from minigpt.runtime import attention_kernel, pick_device, resolve_dtype
    from minigpt.validate import validate_train_config

    tc = cfg.train
    device = pick_device(tc.device) if device is None else device
    dtype = resolve_dtype(tc.dtype, device)
    grad_accum = validate_train_config(cfg, world_size)
    with torch.device("meta"):  # shapes only
        model = GPT(cfg.arch, cfg.model)
    return estimate_step_memory(model, cfg.arch, cfg.model, batch_size=tc.batch_size,
                                seq_len=tc.sequence_length or cfg.model.block_size,
                                dtype=dtype, world_size=world_size, zero_stage=tc.zero_stage, grad_accum=grad_accum,
                                optimizer=cfg.optim.kind,
                                math_attention=attention_kernel(device, dtype, uses_gqa(cfg.arch, cfg.model)) == "math")
