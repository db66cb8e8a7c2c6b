"""The import direction: a minigpt GPT initialised from a local Hugging Face GPT-2 folder.

Use it to evaluate or fine-tune OpenAI's GPT-2 weights (or any GPT2LMHeadModel folder, e.g. one
written by `minigpt.export_hf`) with minigpt's own code. Only GPT-2 is imported: it is the one
family whose every variant is a minigpt `arch=gpt2` model (learned positions, LayerNorm, tanh GELU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minigpt.config import ArchConfig, ModelConfig, to_container
from minigpt.errors import ConfigError

# All three are the tanh approximation of GELU (the same function up to float rounding).
TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}


def is_hf_gpt2_dir(path: str | Path) -> bool:
    """A folder with a config.json whose model_type is gpt2."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    return read_hf_config(config).get("model_type") == "gpt2"


def read_hf_config(config: Path) -> dict:
    """A Hugging Face folder's config.json, or one line saying why it cannot be read."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {config} ({getattr(exc, 'strerror', None) or exc}): fix or replace it") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                          "fix or replace it (save_pretrained writes a valid one)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{config} is not a model config (a JSON object): fix or replace it")
    return data


def load_hf_model(model_class, path: Path, **kwargs):
    """`model_class.from_pretrained(path)`, each way it can fail (weights that safe loading refuses, a missing
    or damaged weights file, a config transformers rejects) as one line."""
    import pickle

    from minigpt.errors import refusal_reason

    try:
        return model_class.from_pretrained(path, **kwargs)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{path}: its weights cannot be loaded safely ({refusal_reason(exc)}); "
                          "use a folder with model.safetensors") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path} is not a loadable Hugging Face model folder ({first})") from None


def _check_config(config, path: Path) -> None:
    unsupported = {
        "activation_function": config.activation_function not in TANH_GELUS,
        "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
        "scale_attn_weights": not config.scale_attn_weights,
        "n_inner": config.n_inner not in (None, 4 * config.n_embd),
    }
    bad = [f"{key}={getattr(config, key)}" for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ConfigError(f"{path} is a GPT-2 variant minigpt cannot express ({', '.join(bad)}): only plain GPT-2 imports")


def from_pretrained_gpt2(path: str | Path):
    """A minigpt `GPT` (arch=gpt2, float32, CPU) with the weights of the HF GPT-2 folder at `path`.

    The vocabulary is padded to minigpt's multiple with zero rows (they are never predicted: logits
    are cut back to the real vocabulary). `model.arch` / `model.model_config` describe the result, so
    it can be saved as a minigpt checkpoint (see `checkpoint_state`).
    """
    from transformers import GPT2LMHeadModel

    from minigpt.model import GPT

    path = Path(path)
    if not is_hf_gpt2_dir(path):
        raise ConfigError(f"{path} is not a Hugging Face GPT-2 folder (needs config.json with model_type gpt2)")
    hf = load_hf_model(GPT2LMHeadModel, path, dtype=torch.float32)
    c = hf.config
    _check_config(c, path)
    arch = ArchConfig(name="gpt2", norm_eps=c.layer_norm_epsilon, bias=True, tie_embeddings=c.tie_word_embeddings)
    model_cfg = ModelConfig(
        name=path.name, n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head, block_size=c.n_positions, vocab_size=c.vocab_size
    )
    model = GPT(arch, model_cfg)
    src = hf.state_dict()
    V = c.vocab_size

    def pad_vocab(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(model.padded_vocab_size, t.size(1), dtype=t.dtype)
        out[:V] = t
        return out

    sd = {
        "wte.weight": pad_vocab(src["transformer.wte.weight"]),
        "wpe.weight": src["transformer.wpe.weight"],
        "ln_f.weight": src["transformer.ln_f.weight"],
        "ln_f.bias": src["transformer.ln_f.bias"],
        "lm_head.weight": pad_vocab(src["lm_head.weight"]),
    }
    conv1d = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # (in, out) in HF: transpose
    for i in range(c.n_layer):
        p = f"transformer.h.{i}"
        for name in ("ln_1", "ln_2"):
            sd[f"h.{i}.{name}.weight"] = src[f"{p}.{name}.weight"]
            sd[f"h.{i}.{name}.bias"] = src[f"{p}.{name}.bias"]
        for name in conv1d:
            sd[f"h.{i}.{name}.weight"] = src[f"{p}.{name}.weight"].t()
            sd[f"h.{i}.{name}.bias"] = src[f"{p}.{name}.bias"]
    model.load_state_dict({k: v.contiguous() for k, v in sd.items()}, strict=True)
    return model.eval()


def checkpoint_state(model) -> dict:
    """A minigpt checkpoint dict for an imported model, loadable with `minigpt.checkpoint.load_model`."""
    return {
        "model": model.state_dict(),
        "config": {"arch": to_container(model.arch), "model": to_container(model.model_config)},
        "step": 0,
    }
