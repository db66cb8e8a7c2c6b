"""minigpt -> native transformers classes: one converter per target class, picked by components.

A converter declares which component combination it expresses *exactly* (positional encoding, norm,
MLP, linear biases), builds the transformers config and maps the weights. `find_converter` picks the
first one that fits; a combination none fits is refused with a ConfigError naming its components,
because a "close" class (e.g. partial rotary, parallel residual, a different GELU) would load fine
and silently compute something else.

Facts the mappings rely on (each is checked by the parity tests in tests/test_hf_export.py):
- our RoPE is the half-split (rotate_half) convention with inv_freq = theta^(-2i/d) over the whole
  head, as HF Llama/Arcee/Starcoder2/StableLm (partial_rotary_factor=1.0): no weight permutation;
- our GELU is the tanh approximation: `gelu_pytorch_tanh` in transformers;
- a LayerNorm without bias equals one with a zero bias, and a GQA layer equals an MHA layer whose
  key/value heads are repeated (query head h reads kv head h // (n_head / n_kv)); this lets a
  class with mandatory biases or without GQA express those variants exactly;
- nn.Linear stores (out, in); HF GPT-2's Conv1D stores (in, out): transposed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.config import ArchConfig, MLPKind, Norm, PosEncoding
from minigpt.data.tokenizer import EOT_TOKEN
from minigpt.errors import ConfigError
from minigpt.model.components import resolve_kv_heads, swiglu_hidden_size

GELU_TANH = "gelu_pytorch_tanh"  # == F.gelu(approximate="tanh"), our GeluMLP's activation


def components(arch: ArchConfig) -> str:
    """Human-readable component list, e.g. 'learned positions + rmsnorm + swiglu MLP + biases'."""
    pos = "learned positions" if arch.pos_encoding == PosEncoding.learned else "RoPE"
    return f"{pos} + {arch.norm.value} + {arch.mlp.value} MLP + {'biases' if arch.bias else 'no biases'}"


@dataclass(frozen=True)
class Converter:
    """Maps one family of component combinations onto one transformers class."""

    hf_class: str
    pos_encoding: PosEncoding
    norm: Norm
    mlp: MLPKind
    biases: tuple[bool, ...] = (True, False)  # which values of arch.bias the class can express

    def fits(self, arch: ArchConfig) -> bool:
        return (arch.pos_encoding, arch.norm, arch.mlp) == (self.pos_encoding, self.norm, self.mlp) and (
            arch.bias in self.biases
        )

    def describe(self) -> str:
        pos = "learned positions" if self.pos_encoding == PosEncoding.learned else "RoPE"
        bias = "" if len(self.biases) == 2 else (" + biases" if self.biases[0] else " + no biases")
        return f"{self.hf_class}: {pos} + {self.norm.value} + {self.mlp.value} MLP{bias}"

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
    supported = "; ".join(c.describe() for c in CONVERTERS)
    raise ConfigError(
        f"no native transformers class expresses {components(arch)} exactly, so it cannot be exported "
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


# ---------------------------------------------------------------------------------- converters


@dataclass(frozen=True)
class GPT2Converter(Converter):
    """Learned positions + LayerNorm + GELU: GPT2LMHeadModel (GQA is expanded to MHA, missing biases are zeros)."""

    def hf_config(self, model):
        from transformers import GPT2Config

        cfg, arch = model.model_config, model.arch
        return GPT2Config(
            **_common_config(model),
            n_positions=cfg.block_size,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=4 * cfg.n_embd,
            activation_function=GELU_TANH,
            layer_norm_epsilon=arch.norm_eps,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )

    def state_dict(self, model):
        n_head, n_kv, hd = _shapes(model)
        d = model.model_config.n_embd

        def expand(t: torch.Tensor) -> torch.Tensor:  # (n_kv*hd, ...) -> (n_head*hd, ...)
            return t.reshape(n_kv, hd, *t.shape[1:]).repeat_interleave(n_head // n_kv, dim=0).reshape(n_head * hd, *t.shape[1:])

        def qkv(t: torch.Tensor) -> torch.Tensor:
            q, k, v = _split_qkv(model, t)
            return torch.cat([q, expand(k), expand(v)], dim=0)

        sd = {
            "transformer.wte.weight": _vocab(model, model.wte.weight),
            "transformer.wpe.weight": model.wpe.weight,
            "lm_head.weight": _vocab(model, model.lm_head.weight),
            "transformer.ln_f.weight": model.ln_f.weight,
            "transformer.ln_f.bias": _bias_or_zeros(model.ln_f, d),
        }
        for i, block in enumerate(model.h):
            p = f"transformer.h.{i}"
            attn, mlp = block.attn, block.mlp
            qkv_bias = attn.c_attn.bias if attn.c_attn.bias is not None else torch.zeros(attn.c_attn.out_features)
            sd.update({
                f"{p}.ln_1.weight": block.ln_1.weight,
                f"{p}.ln_1.bias": _bias_or_zeros(block.ln_1, d),
                f"{p}.attn.c_attn.weight": qkv(attn.c_attn.weight).t(),  # Conv1D: (in, out)
                f"{p}.attn.c_attn.bias": qkv(qkv_bias),
                f"{p}.attn.c_proj.weight": attn.c_proj.weight.t(),
                f"{p}.attn.c_proj.bias": _bias_or_zeros(attn.c_proj, d),
                f"{p}.ln_2.weight": block.ln_2.weight,
                f"{p}.ln_2.bias": _bias_or_zeros(block.ln_2, d),
                f"{p}.mlp.c_fc.weight": mlp.c_fc.weight.t(),
                f"{p}.mlp.c_fc.bias": _bias_or_zeros(mlp.c_fc, 4 * d),
                f"{p}.mlp.c_proj.weight": mlp.c_proj.weight.t(),
                f"{p}.mlp.c_proj.bias": _bias_or_zeros(mlp.c_proj, d),
            })
        return {k: v.detach().contiguous().clone() for k, v in sd.items()}


@dataclass(frozen=True)
class LlamaConverter(Converter):
    """RoPE + RMSNorm + SwiGLU (+/- GQA, +/- biases via attention_bias/mlp_bias): LlamaForCausalLM."""

    def hf_config(self, model):
        from transformers import LlamaConfig

        n_head, n_kv, hd = _shapes(model)
        return LlamaConfig(
            **_rope_config(model, swiglu_hidden_size(model.model_config.n_embd), "silu"),
            head_dim=hd,
            rms_norm_eps=model.arch.norm_eps,
            attention_bias=model.arch.bias,
            mlp_bias=model.arch.bias,
        )

    def state_dict(self, model):
        return _llama_layout(model, SWIGLU_NAMES, norm_bias=False)


@dataclass(frozen=True)
class ArceeConverter(Converter):
    """RoPE + RMSNorm + GELU: ArceeForCausalLM (Llama with a plain up -> act -> down MLP)."""

    def hf_config(self, model):
        from transformers import ArceeConfig

        n_head, n_kv, hd = _shapes(model)
        return ArceeConfig(
            **_rope_config(model, 4 * model.model_config.n_embd, GELU_TANH),
            head_dim=hd,
            rms_norm_eps=model.arch.norm_eps,
            attention_bias=model.arch.bias,
            mlp_bias=model.arch.bias,
        )

    def state_dict(self, model):
        return _llama_layout(model, {"c_fc": "up_proj", "c_proj": "down_proj"}, norm_bias=False)


@dataclass(frozen=True)
class Starcoder2Converter(Converter):
    """RoPE + LayerNorm + GELU (+/- GQA): Starcoder2ForCausalLM, sequential residual, no sliding window."""

    def hf_config(self, model):
        from transformers import Starcoder2Config

        return Starcoder2Config(
            **_rope_config(model, 4 * model.model_config.n_embd, GELU_TANH),
            norm_epsilon=model.arch.norm_eps,
            use_bias=model.arch.bias,
            sliding_window=None,
            residual_dropout=0.0,
            embedding_dropout=0.0,
        )

    def state_dict(self, model):
        return _llama_layout(model, {"c_fc": "c_fc", "c_proj": "c_proj"}, norm_bias=True)


@dataclass(frozen=True)
class StableLmConverter(Converter):
    """RoPE + LayerNorm + SwiGLU without biases: StableLmForCausalLM with full rotary, sequential residual.

    StableLm's o_proj and MLP never have biases, so the biased variant is refused.
    """

    def hf_config(self, model):
        from transformers import StableLmConfig

        kwargs = _rope_config(model, swiglu_hidden_size(model.model_config.n_embd), "silu")
        kwargs["rope_parameters"]["partial_rotary_factor"] = 1.0
        return StableLmConfig(
            **kwargs,
            partial_rotary_factor=1.0,
            layer_norm_eps=model.arch.norm_eps,
            use_qkv_bias=False,
            qk_layernorm=False,
            use_parallel_residual=False,
            hidden_dropout=0.0,
        )

    def state_dict(self, model):
        return _llama_layout(model, SWIGLU_NAMES, norm_bias=True)


register(GPT2Converter("GPT2LMHeadModel", PosEncoding.learned, Norm.layernorm, MLPKind.gelu))
register(LlamaConverter("LlamaForCausalLM", PosEncoding.rope, Norm.rmsnorm, MLPKind.swiglu))
register(ArceeConverter("ArceeForCausalLM", PosEncoding.rope, Norm.rmsnorm, MLPKind.gelu))
register(Starcoder2Converter("Starcoder2ForCausalLM", PosEncoding.rope, Norm.layernorm, MLPKind.gelu))
register(StableLmConverter("StableLmForCausalLM", PosEncoding.rope, Norm.layernorm, MLPKind.swiglu, biases=(False,)))
