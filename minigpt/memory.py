"""Peak memory of one training step on one device, estimated from the config alone (no model built).

`estimate_memory(cfg)` adds up what an eager training step holds at its two candidate peaks:
- the end of the forward pass, inside the lean loss (minigpt/model/loss.py): weights, AdamW state,
  gradients of earlier micro-steps, every activation autograd saved, the loss's own gradients and
  one chunk of logits with its softmax and matmul temporaries (and autocast's 16-bit head weight);
- the end of the backward pass: weights, AdamW state, all gradients and the tied embedding's second
  gradient (the lookup's and the head's are summed).

Activations are counted per token, term by term, for what autograd keeps here (checked against
`saved_tensors_hooks`): LayerNorm keeps its input, mean and rstd (RMSNorm, decomposed on CPU: input,
normalised input, rstd); every linear keeps its input (a 16-bit copy under autocast); attention keeps
q, k, v (views of the qkv projection's output, so all of it), the output and a log-sum-exp per head
(SDPA's flash kernels: no T x T scores); RoPE keeps the rotated q and k; GELU its input and output,
SwiGLU gate, silu(gate), up and their product (and, under autocast, one 16-bit copy of its
input for each of its two input projections); the modern switches what `switch_bytes_per_token` lists.
The residual stream and norms stay float32 under autocast. optim=muon keeps one float32 state (Muon's
momentum) for the block matrices and AdamW's two for the rest. A compiled step (torch.compile fuses
and recomputes elementwise ops) needs less: the estimate is an upper bound there. tests/test_memory.py
compares it with the peak torch's MemTracker measures on CPU (eager, float32 and bf16 autocast, the
four seed arch presets and arch=modern with AdamW and with Muon).
"""

from __future__ import annotations

from dataclasses import dataclass

from minigpt.config import ArchConfig, Config, MLPKind, ModelConfig, Norm, OptimizerKind, PosEncoding
from minigpt.model.components import resolve_kv_heads, swiglu_hidden_size
from minigpt.model.loss import CHUNK_ELEMENTS, chunk_rows

FP32, HALF, INT64 = 4, 2, 8
GIB = 2**30


@dataclass
class MemoryEstimate:
    """Bytes on one device; `peak` is the larger of the two moments (see the module docstring)."""

    weights: int
    optimizer: int
    grads: int
    activations: int  # saved for backward by the body, plus autocast's 16-bit weight copies
    loss: int  # the lean loss at its largest: its gradients and one chunk's buffers
    peak: int

    def gib(self) -> dict[str, float]:
        return {k: v / GIB for k, v in vars(self).items()}


def param_counts(arch: ArchConfig, model: ModelConfig) -> tuple[int, int, int]:
    """(all parameters, the body's linear weights, padded vocabulary) without building the model."""
    from minigpt.model.gpt import padded_vocab_size

    h, vp = model.n_embd, padded_vocab_size(model)
    kv = resolve_kv_heads(arch, model) * (h // model.n_head)
    mlp_hidden = swiglu_hidden_size(h) if arch.mlp == MLPKind.swiglu else 4 * h
    mlp_mats = 3 if arch.mlp == MLPKind.swiglu else 2
    linear = (h * (h + 2 * kv) + h * h) + mlp_mats * h * mlp_hidden  # per layer: qkv, attn out, MLP
    biases = ((h + 2 * kv) + h + (mlp_mats - 1) * mlp_hidden + h) if arch.bias else 0
    norm = h * (2 if arch.norm == Norm.layernorm and arch.bias else 1)
    per_layer = linear + biases + 2 * norm
    embeddings = vp * h * (1 if arch.tie_embeddings else 2)
    positions = model.block_size * h if arch.pos_encoding == PosEncoding.learned else 0
    total = model.n_layer * per_layer + norm + embeddings + positions
    return total, model.n_layer * linear, vp


def switch_bytes_per_token(arch: ArchConfig, model: ModelConfig, half: bool) -> tuple[int, int]:
    """(per layer, once) bytes per token that the modern switches add to what autograd saves, as measured
    with saved_tensors_hooks (tests/test_plan.py): QK-norm keeps an rsqrt per query and key head, one
    query-sized tensor, under autocast the float32 casts of q and k (the norm runs in float32), and
    without RoPE the normalised q and k that attention then keeps (with RoPE: the rotated ones, counted
    already); the embedding norm keeps its float32 input and rsqrt. ReLU^2 keeps what GELU keeps."""
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


def lean_loss_bytes(tokens: int, width: int, head_rows: int, half: bool, softcap: bool = False) -> int:
    """The lean loss at its largest (minigpt/model/loss.py), also the forecast's (minigpt/plan/memory.py).

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


def estimate_memory(cfg: Config, world_size: int = 1) -> MemoryEstimate:
    """Peak bytes of one training step of `cfg` on one of `world_size` devices (eager; compiled needs less)."""
    from minigpt.validate import validate_train_config

    arch, model, tc = cfg.arch, cfg.model, cfg.train
    grad_accum = validate_train_config(cfg, world_size)
    half = str(getattr(tc.dtype, "value", tc.dtype)) in ("bfloat16", "float16")
    params, body_linear, vp = param_counts(arch, model)
    h, tokens = model.n_embd, tc.batch_size * (tc.sequence_length or model.block_size)
    head_rows = vp  # the loss multiplies the padded head on every device

    weights = FP32 * params
    if arch.pos_encoding == PosEncoding.rope:
        weights += 2 * FP32 * model.block_size * (h // model.n_head)  # cos / sin tables
    optimizer = 2 * FP32 * params  # AdamW's exp_avg and exp_avg_sq
    if OptimizerKind(cfg.optim.kind) == OptimizerKind.muon:  # Muon's one momentum for the block matrices
        optimizer -= FP32 * body_linear
    if tc.zero_stage >= 1 and world_size > 1:
        optimizer = -(-optimizer // world_size)
    grads = FP32 * params
    activations = activation_bytes_per_token(arch, model, half) * tokens + (HALF * body_linear if half else 0)

    loss = lean_loss_bytes(tokens, h, head_rows, half, softcap=arch.logit_softcap is not None)

    earlier_grads = grads if grad_accum > 1 else 0
    end_of_forward = weights + optimizer + earlier_grads + activations + loss
    end_of_backward = weights + optimizer + grads + FP32 * vp * h * (1 if arch.tie_embeddings else 0)
    ddp = grads if world_size > 1 else 0  # DDP's gradient buckets
    return MemoryEstimate(weights, optimizer, grads, activations, loss, max(end_of_forward, end_of_backward) + ddp)
