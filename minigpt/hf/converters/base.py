"""The converter interface, its registry and the weight/config pieces several converters share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.config import ArchConfig, MLPKind, Norm, PosEncoding
from minigpt.data.tokenizer import EOT_TOKEN
from minigpt.errors import ConfigError
from minigpt.model.components import resolve_kv_heads

# transformers' names (ACT2FN) of our plain MLP's activations
HF_ACTIVATION = {MLPKind.gelu: "gelu_pytorch_tanh", MLPKind.relu2: "relu2"}  # F.gelu(tanh), relu(x)^2
PLAIN_MLPS = (MLPKind.gelu, MLPKind.relu2)  # d -> 4d -> act -> d, as c_fc / c_proj


def _pos_name(pos: PosEncoding) -> str:
    return "learned positions" if pos == PosEncoding.learned else "RoPE"


def components(arch: ArchConfig) -> str:
    """Human-readable component list, e.g. 'learned positions + rmsnorm + swiglu MLP + biases'."""
    extras = [name for on, name in ((arch.qk_norm, "QK-norm"), (arch.embed_norm, "embedding norm"),
                                    (arch.logit_softcap is not None, f"logit softcap {arch.logit_softcap}")) if on]
    return " + ".join([_pos_name(arch.pos_encoding), arch.norm.value, f"{arch.mlp.value} MLP",
                       "biases" if arch.bias else "no biases", *extras])


@dataclass(frozen=True)
class Converter:
    """Maps one family of component combinations onto one transformers class."""

    hf_class: str
    pos_encoding: PosEncoding
    norm: Norm
    mlps: tuple[MLPKind, ...]
    biases: tuple[bool, ...] = (True, False)  # which values of arch.bias the class can express
    qk_norm: bool = False  # the class normalises q and k per head (always, when True)
    embed_norm: bool = False  # the class normalises the embeddings (always, when True)
    softcap: bool = False  # the class can cap the final logits (optional)

    def mismatches(self, arch: ArchConfig) -> list[str]:
        """The arch settings this class cannot express, as `arch.key=value` (empty: it fits)."""
        wrong = []
        if arch.pos_encoding != self.pos_encoding:
            wrong.append(f"arch.pos_encoding={arch.pos_encoding.value}")
        if arch.norm != self.norm:
            wrong.append(f"arch.norm={arch.norm.value}")
        if arch.mlp not in self.mlps:
            wrong.append(f"arch.mlp={arch.mlp.value}")
        if arch.bias not in self.biases:
            wrong.append(f"arch.bias={str(arch.bias).lower()}")
        if arch.qk_norm != self.qk_norm:
            wrong.append(f"arch.qk_norm={str(arch.qk_norm).lower()}")
        if arch.embed_norm != self.embed_norm:
            wrong.append(f"arch.embed_norm={str(arch.embed_norm).lower()}")
        if arch.logit_softcap is not None and not self.softcap:
            wrong.append(f"arch.logit_softcap={arch.logit_softcap}")
        return wrong

    def fits(self, arch: ArchConfig) -> bool:
        return not self.mismatches(arch)

    def describe(self) -> str:
        bias = "" if len(self.biases) == 2 else (" + biases" if self.biases[0] else " + no biases")
        extras = "".join(name for on, name in ((self.qk_norm, " + QK-norm"), (self.embed_norm, " + embedding norm"),
                                               (self.softcap, " (+/- logit softcap)")) if on)
        mlps = "/".join(m.value for m in self.mlps)
        return f"{self.hf_class}: {_pos_name(self.pos_encoding)} + {self.norm.value} + {mlps} MLP{bias}{extras}"

    # Subclasses implement these two.
    def hf_config(self, model) -> "transformers.PretrainedConfig":  # noqa: F821
        raise NotImplementedError

    def state_dict(self, model) -> dict[str, torch.Tensor]:
        raise NotImplementedError


CONVERTERS: list[Converter] = []


def register(converter: Converter) -> Converter:
    CONVERTERS.append(converter)
    return converter


def find_converter(arch: ArchConfig) -> Converter:
    for converter in CONVERTERS:
        if converter.fits(arch):
            return converter
    closest = min(CONVERTERS, key=lambda c: len(c.mismatches(arch)))  # first registered wins ties
    supported = "; ".join(c.describe() for c in CONVERTERS)
    raise ConfigError(
        f"no native transformers class expresses {components(arch)} exactly (the closest, {closest.hf_class}, "
        f"cannot express {', '.join(closest.mismatches(arch))}), so it cannot be exported "
        f"without trust_remote_code; exportable combinations: {supported}"
    )


# ---------------------------------------------------------------------------------- shared pieces


def _shapes(model) -> tuple[int, int, int]:
    """(n_head, n_kv_head, head_dim) of a minigpt GPT."""
    cfg = model.model_config
    return cfg.n_head, resolve_kv_heads(model.arch, cfg), cfg.n_embd // cfg.n_head


def _split_qkv(model, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split fused c_attn rows (weight or bias) into q, k, v."""
    n_head, n_kv, hd = _shapes(model)
    return t.split([n_head * hd, n_kv * hd, n_kv * hd], dim=0)


def _vocab(model, t: torch.Tensor) -> torch.Tensor:
    """Drop the rows that only pad the vocabulary to a matmul-friendly size."""
    return t[: model.vocab_size]


def _bias_or_zeros(linear_or_norm, size: int) -> torch.Tensor:
    b = linear_or_norm.bias
    return b.detach() if b is not None else torch.zeros(size)


def _common_config(model) -> dict:
    """Fields every exported config shares: vocab, special tokens, embeddings tying."""
    return dict(
        vocab_size=model.vocab_size,
        bos_token_id=EOT_TOKEN,
        eos_token_id=EOT_TOKEN,
        tie_word_embeddings=model.arch.tie_embeddings,
    )


def _rope_config(model, mlp_hidden: int, hidden_act: str) -> dict:
    """Llama-family fields (hidden_size, heads, rope) shared by the RoPE converters."""
    cfg, arch = model.model_config, model.arch
    n_head, n_kv, hd = _shapes(model)
    return dict(
        _common_config(model),
        hidden_size=cfg.n_embd,
        intermediate_size=mlp_hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv,
        hidden_act=hidden_act,
        max_position_embeddings=cfg.block_size,
        rope_parameters={"rope_type": "default", "rope_theta": float(arch.rope_theta)},
        attention_dropout=0.0,
    )


def _llama_layout(model, mlp_names: dict[str, str], norm_bias: bool) -> dict[str, torch.Tensor]:
    """Weights in the Llama naming (model.layers.i.self_attn.q_proj, ...) used by all RoPE targets.

    mlp_names maps our MLP submodule names to the target's; norm_bias: the target's norms carry a
    bias (LayerNorm in Starcoder2/StableLm), filled with zeros when ours has none.
    """
    d = model.model_config.n_embd
    sd = {"model.embed_tokens.weight": _vocab(model, model.wte.weight), "lm_head.weight": _vocab(model, model.lm_head.weight)}

    def norm(prefix: str, module) -> None:
        sd[f"{prefix}.weight"] = module.weight
        if norm_bias:
            sd[f"{prefix}.bias"] = _bias_or_zeros(module, d)

    for i, block in enumerate(model.h):
        p = f"model.layers.{i}"
        norm(f"{p}.input_layernorm", block.ln_1)
        norm(f"{p}.post_attention_layernorm", block.ln_2)
        attn = block.attn
        for name, w in zip("qkv", _split_qkv(model, attn.c_attn.weight)):
            sd[f"{p}.self_attn.{name}_proj.weight"] = w
        if attn.c_attn.bias is not None:
            for name, b in zip("qkv", _split_qkv(model, attn.c_attn.bias)):
                sd[f"{p}.self_attn.{name}_proj.bias"] = b
        sd[f"{p}.self_attn.o_proj.weight"] = attn.c_proj.weight
        if attn.c_proj.bias is not None:
            sd[f"{p}.self_attn.o_proj.bias"] = attn.c_proj.bias
        for ours, theirs in mlp_names.items():
            linear = getattr(block.mlp, ours)
            sd[f"{p}.mlp.{theirs}.weight"] = linear.weight
            if linear.bias is not None:
                sd[f"{p}.mlp.{theirs}.bias"] = linear.bias
    norm("model.norm", model.ln_f)
    return {k: v.detach().clone() for k, v in sd.items()}


SWIGLU_NAMES = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}


