"""minigpt -> native transformers classes: one converter per target class, picked by components.

A converter declares which component combination it expresses *exactly* (positional encoding, norm,
MLP, linear biases, QK-norm, embedding norm, logit softcap), builds the transformers config and maps
the weights. `find_converter` picks the first one that fits; a combination none fits is refused with a
ConfigError naming its components and what the closest class lacks, because a "close" class (e.g.
partial rotary, parallel residual, a different GELU) would load fine and silently compute something else.

Facts the mappings rely on (each is checked by the parity tests in tests/test_hf_export.py):
- our RoPE is the half-split (rotate_half) convention with inv_freq = theta^(-2i/d) over the whole
  head, as HF Llama/Arcee/Starcoder2/StableLm (partial_rotary_factor=1.0): no weight permutation;
- our GELU is the tanh approximation: `gelu_pytorch_tanh` in transformers;
- a LayerNorm without bias equals one with a zero bias, and a GQA layer equals an MHA layer whose
  key/value heads are repeated (query head h reads kv head h // (n_head / n_kv)); this lets a
  class with mandatory biases or without GQA express those variants exactly;
- nn.Linear stores (out, in); HF GPT-2's Conv1D stores (in, out): transposed;
- zero-initialised projections and untied heads are training choices: the weights carry them;
- an RMSNorm gain g in front of a linear layer W folds into it (W diag(g)), which lets a class whose
  norms have no gain (NanoChat) express ours; our QK-norm has no gain (Qwen3's q/k norms get ones) and
  commutes with RoPE, a rotation, so normalising after RoPE (NanoChat) is the same; NanoChat rotates
  the other way (rotate_half flipped), which swapping the two halves of each q/k head undoes.
"""

from minigpt.config import MLPKind, Norm, PosEncoding
from minigpt.hf.converters.base import CONVERTERS, PLAIN_MLPS, Converter, components, find_converter, register
from minigpt.hf.converters.classic import (ArceeConverter, GPT2Converter, LlamaConverter, StableLmConverter,
                                           Starcoder2Converter)
from minigpt.hf.converters.modern import NanoChatConverter, Qwen3Converter

# Order matters only for readability of the refusal message: the combinations are disjoint.
register(GPT2Converter("GPT2LMHeadModel", PosEncoding.learned, Norm.layernorm, PLAIN_MLPS))
register(LlamaConverter("LlamaForCausalLM", PosEncoding.rope, Norm.rmsnorm, (MLPKind.swiglu,)))
register(ArceeConverter("ArceeForCausalLM", PosEncoding.rope, Norm.rmsnorm, PLAIN_MLPS))
register(Starcoder2Converter("Starcoder2ForCausalLM", PosEncoding.rope, Norm.layernorm, PLAIN_MLPS))
register(StableLmConverter("StableLmForCausalLM", PosEncoding.rope, Norm.layernorm, (MLPKind.swiglu,), biases=(False,)))
register(Qwen3Converter("Qwen3ForCausalLM", PosEncoding.rope, Norm.rmsnorm, (MLPKind.swiglu,), biases=(False,),
                        qk_norm=True))
register(NanoChatConverter("NanoChatForCausalLM", PosEncoding.rope, Norm.rmsnorm, PLAIN_MLPS, biases=(False,),
                           qk_norm=True, embed_norm=True, softcap=True))

__all__ = ["CONVERTERS", "Converter", "components", "find_converter", "register"]
