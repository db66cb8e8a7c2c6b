"""Converters for the modern recipe's components: Qwen3 (QK-norm) and NanoChat (QK-norm, embedding norm,
ReLU^2, logit softcap: `arch=modern`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minigpt.hf.converters.base import (HF_ACTIVATION, SWIGLU_NAMES, Converter, _common_config, _llama_layout,
                                        _rope_config, _shapes, _split_qkv, _vocab)
from minigpt.model.components import swiglu_hidden_size


@dataclass(frozen=True)
class Qwen3Converter(Converter):
    """RoPE + RMSNorm + SwiGLU + QK-norm (+/- GQA), no biases: Qwen3ForCausalLM, no sliding window.

    Qwen3 normalises each q/k head with a gain before RoPE, as we do without one: its gains are ones.
    """

    def hf_config(self, model):
        from transformers import Qwen3Config

        n_head, n_kv, hd = _shapes(model)
        return Qwen3Config(
            **_rope_config(model, swiglu_hidden_size(model.model_config.n_embd), "silu"),
            head_dim=hd,
            rms_norm_eps=model.arch.norm_eps,
            attention_bias=False,
            use_sliding_window=False,
        )

    def state_dict(self, model):
        sd = _llama_layout(model, SWIGLU_NAMES, norm_bias=False)
        hd = _shapes(model)[2]
        for i in range(model.model_config.n_layer):
            sd[f"model.layers.{i}.self_attn.q_norm.weight"] = torch.ones(hd)
            sd[f"model.layers.{i}.self_attn.k_norm.weight"] = torch.ones(hd)
        return sd


def _fold_gain(weight: torch.Tensor, norm) -> torch.Tensor:
    """W diag(g): the linear layer that reads an RMSNorm's output, taking over the norm's gain g."""
    return weight * norm.weight[None, :]


def _swap_head_halves(t: torch.Tensor, hd: int) -> torch.Tensor:
    """Swap the two halves of every head's rows: NanoChat's rotate_half is ours with the sign flipped,
    and RoPE_theirs(swap(x)) = swap(RoPE_ours(x)), while q.k is unchanged by the same swap of both."""
    heads = t.reshape(-1, 2, hd // 2, *t.shape[1:])
    return heads.flip(1).reshape(t.shape)


@dataclass(frozen=True)
class NanoChatConverter(Converter):
    """RoPE + RMSNorm + GELU or ReLU^2 + QK-norm + embedding norm (+/- logit softcap, +/- GQA), no biases:
    NanoChatForCausalLM (karpathy/nanochat's architecture), the target of `arch=modern`.

    NanoChat's RMSNorms have no gain: ours fold into the linear layers they feed (input norms into
    q/k/v and the MLP's up projection, the final norm into the head, so the head is exported untied).
    """

    def hf_config(self, model):
        from transformers import NanoChatConfig

        arch = model.arch
        kwargs = _rope_config(model, 4 * model.model_config.n_embd, HF_ACTIVATION[arch.mlp])
        kwargs.update(tie_word_embeddings=False, pad_token_id=_common_config(model)["eos_token_id"])
        return NanoChatConfig(
            **kwargs,
            rms_norm_eps=arch.norm_eps,
            final_logit_softcapping=arch.logit_softcap,
            attention_bias=False,
        )

    def state_dict(self, model):
        hd = _shapes(model)[2]
        sd = {
            "model.embed_tokens.weight": _vocab(model, model.wte.weight),
            "lm_head.weight": _fold_gain(_vocab(model, model.lm_head.weight), model.ln_f),
        }
        for i, block in enumerate(model.h):
            p = f"model.layers.{i}"
            q, k, v = _split_qkv(model, _fold_gain(block.attn.c_attn.weight, block.ln_1))
            sd.update({
                f"{p}.self_attn.q_proj.weight": _swap_head_halves(q, hd),
                f"{p}.self_attn.k_proj.weight": _swap_head_halves(k, hd),
                f"{p}.self_attn.v_proj.weight": v,
                f"{p}.self_attn.o_proj.weight": block.attn.c_proj.weight,
                f"{p}.mlp.fc1.weight": _fold_gain(block.mlp.c_fc.weight, block.ln_2),
                f"{p}.mlp.fc2.weight": block.mlp.c_proj.weight,
            })
        return {k: v.detach().contiguous().clone() for k, v in sd.items()}
