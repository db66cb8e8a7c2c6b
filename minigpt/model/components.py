"""Switchable transformer components: norm, MLP, attention (MHA/GQA, QK-norm), RoPE (logit softcap: loss.py).

Each component is picked by one field of `ArchConfig`; the block in `gpt.py` never branches on them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.config import ArchConfig, MLPKind, ModelConfig, Norm, PosEncoding, resolve_kv_heads  # noqa: F401 - re-exported


def make_norm(arch: ArchConfig, dim: int) -> nn.Module:
    if arch.norm == Norm.rmsnorm:
        return nn.RMSNorm(dim, eps=arch.norm_eps)  # torch's own RMSNorm
    return nn.LayerNorm(dim, eps=arch.norm_eps, bias=arch.bias)


def plain_rmsnorm(dim: int, eps: float, enabled: bool) -> nn.Module:
    """Parameter-free RMSNorm over the last `dim` channels (QK-norm, embedding norm), or nothing.

    No gain, as in modded-nanogpt and nanochat: it adds no parameters, and it commutes with RoPE
    (a rotation keeps the norm), so it maps exactly onto HF classes that normalise after RoPE.
    """
    return nn.RMSNorm(dim, eps=eps, elementwise_affine=False) if enabled else nn.Identity()


def swiglu_hidden_size(n_embd: int) -> int:
    """SwiGLU hidden width that keeps parameters close to the 4x GELU MLP.

    GELU MLP: 2 matrices of d x 4d = 8d^2. SwiGLU: 3 matrices of d x h = 3dh. Equal at h = 8d/3,
    rounded to the nearest multiple of 64 for matmul efficiency (of 16 below width 512, where 64 is
    too coarse). d=768 gives exactly 2048, d=1024 gives 2752.
    """
    multiple = 64 if n_embd >= 512 else 16
    return max(multiple, multiple * round(8 * n_embd / 3 / multiple))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")  # GPT-2's GELU


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()  # Primer (So et al. 2021); modded-nanogpt and nanochat use it


class PlainMLP(nn.Module):
    """GPT-2 MLP: d -> 4d -> activation -> d; GELU (tanh approximation, as GPT-2) or ReLU^2."""

    ACTIVATIONS = {MLPKind.gelu: gelu_tanh, MLPKind.relu2: relu_squared}

    def __init__(self, arch: ArchConfig, model: ModelConfig):
        super().__init__()
        self.act = self.ACTIVATIONS[arch.mlp]
        self.c_fc = nn.Linear(model.n_embd, 4 * model.n_embd, bias=arch.bias)
        self.c_proj = nn.Linear(4 * model.n_embd, model.n_embd, bias=arch.bias)
        self.c_proj.residual_scaled_init = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class SwiGLUMLP(nn.Module):
    """Llama MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, arch: ArchConfig, model: ModelConfig):
        super().__init__()
        hidden = swiglu_hidden_size(model.n_embd)
        self.gate_proj = nn.Linear(model.n_embd, hidden, bias=arch.bias)
        self.up_proj = nn.Linear(model.n_embd, hidden, bias=arch.bias)
        self.down_proj = nn.Linear(hidden, model.n_embd, bias=arch.bias)
        self.down_proj.residual_scaled_init = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


MLPS = {MLPKind.gelu: PlainMLP, MLPKind.relu2: PlainMLP, MLPKind.swiglu: SwiGLUMLP}


def make_mlp(arch: ArchConfig, model: ModelConfig) -> nn.Module:
    return MLPS[arch.mlp](arch, model)


class RotaryEmbedding(nn.Module):
    """RoPE in the half-split ("rotate_half") convention used by HF Llama/NeoX/Starcoder2.

    Channel i is paired with channel i + head_dim/2, so exported weights need no permutation.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        t = torch.arange(max_seq_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (T, head_dim/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T, head_dim)
        # Not persistent: derived from config, so checkpoints stay free of it.
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate x of shape (B, H, T, head_dim); positions (T,) or (B, T) default to 0..T-1."""
        T = x.size(-2)
        if positions is None:
            cos, sin = self.cos[:T], self.sin[:T]
        else:  # (T,) shared by the batch, or (B, T) per row: broadcast over the heads
            cos, sin = self.cos[positions], self.sin[positions]
            if positions.dim() == 2:
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Causal attention with n_kv_head <= n_head key/value heads (GQA; MHA when equal).

    Uses F.scaled_dot_product_attention, which picks flash / memory-efficient kernels on GPU.
    """

    def __init__(self, arch: ArchConfig, model: ModelConfig):
        super().__init__()
        self.n_head = model.n_head
        self.n_kv_head = resolve_kv_heads(arch, model)
        self.head_dim = model.n_embd // model.n_head
        qkv_out = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(model.n_embd, qkv_out, bias=arch.bias)
        self.c_proj = nn.Linear(model.n_embd, model.n_embd, bias=arch.bias)
        self.c_proj.residual_scaled_init = True
        self.rotary = (
            RotaryEmbedding(self.head_dim, model.block_size, arch.rope_theta)
            if arch.pos_encoding == PosEncoding.rope
            else None
        )
        self.qk_norm = plain_rmsnorm(self.head_dim, arch.norm_eps, arch.qk_norm)  # per head, before RoPE

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal by default; `positions` and a boolean `attn_mask` serve packed scoring (see GPT.body)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1
        )
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = self.qk_norm(q), self.qk_norm(k)
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None, enable_gqa=self.n_kv_head != self.n_head
        )
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
