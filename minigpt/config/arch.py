"""The model's groups: `arch` (components: positional encoding, norm, MLP, attention heads / kv-heads) and
`model` (size: layers, width, heads, context); conf/arch/ and conf/model/."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional


class PosEncoding(str, Enum):
    learned = "learned"
    rope = "rope"


class Norm(str, Enum):
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class MLPKind(str, Enum):
    gelu = "gelu"
    swiglu = "swiglu"
    relu2 = "relu2"  # relu(x)^2 (Primer; modded-nanogpt, nanochat): a plain d -> 4d -> d MLP like gelu


@dataclass
class ArchConfig:
    """Architecture components; each one is an independent switch."""

    name: str = "gpt2"
    pos_encoding: PosEncoding = PosEncoding.learned
    norm: Norm = Norm.layernorm
    mlp: MLPKind = MLPKind.gelu
    # Grouped-query attention: number of key/value heads (must divide model.n_head). None = n_head
    # (plain multi-head attention). `q_per_kv` is the alternative ratio form, used when n_kv_head is None.
    n_kv_head: Optional[int] = None
    q_per_kv: int = 1
    rope_theta: float = 10000.0
    bias: bool = True  # biases in linear layers and LayerNorm (GPT-2 has them, Llama does not)
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    # Switches of the modern (speedrun / nanochat) recipe; all off in the seed's four presets.
    qk_norm: bool = False  # parameter-free RMSNorm of each query and key head before RoPE and attention
    logit_softcap: Optional[float] = None  # c: logits -> c * tanh(logits / c); None = off
    zero_init_proj: bool = False  # attention and MLP output projections start at zero: blocks start as identities
    embed_norm: bool = False  # parameter-free RMSNorm of the embeddings before the first block (as nanochat)


def resolve_kv_heads(arch: "ArchConfig", model: "ModelConfig") -> int:
    """Number of key/value heads: explicit `n_kv_head`, else n_head / q_per_kv."""
    if arch.n_kv_head is not None:
        return arch.n_kv_head
    return model.n_head // max(arch.q_per_kv, 1)


def uses_gqa(arch: "ArchConfig", model: "ModelConfig") -> bool:
    """Grouped-query attention: fewer key/value heads than query heads (SDPA's enable_gqa)."""
    return resolve_kv_heads(arch, model) != model.n_head


@dataclass
class ModelConfig:
    """Size: layers, width, heads, context."""

    name: str = "tiny"
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128  # context length
    vocab_size: int = 50257
    # Pad the embedding table to a multiple of this for faster matmuls (50257 -> 50304 at 128).
    vocab_pad_multiple: int = 128
