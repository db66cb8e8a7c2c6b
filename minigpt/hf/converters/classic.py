"""Converters for the seed's component families: GPT-2, Llama, Arcee, Starcoder2, StableLm."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.hf.converters.base import (HF_ACTIVATION, SWIGLU_NAMES, Converter, _bias_or_zeros, _common_config,
                                        _llama_layout, _rope_config, _shapes, _split_qkv, _vocab)
from minigpt.model.components import swiglu_hidden_size


@dataclass(frozen=True)
class GPT2Converter(Converter):
    """Learned positions + LayerNorm + GELU or ReLU^2: GPT2LMHeadModel (GQA is expanded to MHA, missing biases are zeros)."""

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
            activation_function=HF_ACTIVATION[arch.mlp],
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


def _llama_fields(model, mlp_hidden: int, hidden_act: str) -> dict:
    """LlamaConfig's fields, which ArceeConfig (Llama with a plain MLP) shares."""
    return dict(
        _rope_config(model, mlp_hidden, hidden_act),
        head_dim=_shapes(model)[2],
        rms_norm_eps=model.arch.norm_eps,
        attention_bias=model.arch.bias,
        mlp_bias=model.arch.bias,
    )


@dataclass(frozen=True)
class LlamaConverter(Converter):
    """RoPE + RMSNorm + SwiGLU (+/- GQA, +/- biases via attention_bias/mlp_bias): LlamaForCausalLM."""

    def hf_config(self, model):
        from transformers import LlamaConfig

        return LlamaConfig(**_llama_fields(model, swiglu_hidden_size(model.model_config.n_embd), "silu"))

    def state_dict(self, model):
        return _llama_layout(model, SWIGLU_NAMES, norm_bias=False)


@dataclass(frozen=True)
class ArceeConverter(Converter):
    """RoPE + RMSNorm + GELU or ReLU^2: ArceeForCausalLM (Llama with a plain up -> act -> down MLP)."""

    def hf_config(self, model):
        from transformers import ArceeConfig

        return ArceeConfig(**_llama_fields(model, 4 * model.model_config.n_embd, HF_ACTIVATION[model.arch.mlp]))

    def state_dict(self, model):
        return _llama_layout(model, {"c_fc": "up_proj", "c_proj": "down_proj"}, norm_bias=False)


@dataclass(frozen=True)
class Starcoder2Converter(Converter):
    """RoPE + LayerNorm + GELU or ReLU^2 (+/- GQA): Starcoder2ForCausalLM, sequential residual, no sliding window."""

    def hf_config(self, model):
        from transformers import Starcoder2Config

        return Starcoder2Config(
            **_rope_config(model, 4 * model.model_config.n_embd, HF_ACTIVATION[model.arch.mlp]),
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
