"""The export direction (importer.py is the other): a minigpt model as a self-contained Hugging Face folder.

The command is `python -m minigpt.export_hf` (minigpt/export_hf.py).

The folder holds config.json, model.safetensors, generation_config.json and the GPT-2 tokenizer
(tokenizer.json, tokenizer_config.json, vocab.json, merges.txt), so that
`AutoModelForCausalLM.from_pretrained(dir)` (no trust_remote_code), transformers pipelines and
lm-evaluation-harness's `hf` model type all work on it offline.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from minigpt.data.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, get_gpt2_encoding, gpt2_bpe_dir
from minigpt.errors import ConfigError
from minigpt.hf.converters import find_converter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# A wrong mapping gives O(1) logit differences; float32 rounding stays orders of magnitude below this.
VERIFY_TOLERANCE = 1e-3


def to_hf(model) -> "transformers.PreTrainedModel":  # noqa: F821
    """The equivalent native transformers model (float32, eval mode), weights loaded strictly."""
    from transformers import AutoModelForCausalLM

    converter = find_converter(model.arch)
    config = converter.hf_config(model)
    # float32 regardless of the exporting machine's default dtype; the mapping is checked with strict loading.
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if type(hf).__name__ != converter.hf_class:
        raise RuntimeError(f"config built {type(hf).__name__}, expected {converter.hf_class}")
    hf.load_state_dict(converter.state_dict(model.float().cpu()), strict=True)
    return hf.eval()


@torch.no_grad()
def max_logit_diff(model, hf, n_tokens: int = 64, seed: int = 0) -> float:
    """Max |logits(minigpt) - logits(transformers)| on random tokens (both on CPU, float32)."""
    g = torch.Generator().manual_seed(seed)
    T = min(n_tokens, model.block_size)
    idx = torch.randint(0, model.vocab_size, (2, T), generator=g)
    ours, _ = model.eval()(idx)
    theirs = hf(idx).logits
    return (ours.float() - theirs.float()).abs().max().item()


def save_tokenizer(out_dir: str | Path, model_max_length: int) -> None:
    """GPT-2's tokenizer files, built from the same BPE files minigpt trains with (no download)."""
    from transformers import GPT2TokenizerFast

    src = gpt2_bpe_dir()
    get_gpt2_encoding()  # checks the two files' sha256 against tiktoken's pins
    with tempfile.TemporaryDirectory() as tmp:
        # transformers names them vocab.json / merges.txt; contents are byte-identical.
        shutil.copy(src / "encoder.json", Path(tmp) / "vocab.json")
        shutil.copy(src / "vocab.bpe", Path(tmp) / "merges.txt")
        tok = GPT2TokenizerFast.from_pretrained(tmp, model_max_length=model_max_length)
        tok.save_pretrained(out_dir)
        for name in ("vocab.json", "merges.txt"):  # for slow tokenizers and other tools
            shutil.copy(Path(tmp) / name, Path(out_dir) / name)


def export_model(model, out_dir: str | Path, dtype: str = "float32", verify: bool = True) -> dict:
    """Convert `model` (a minigpt GPT; moved to float32 on CPU in place) and write the folder.

    Returns a small report: hf_class, dtype, out_dir and max_logit_diff (when verified).

    verify=True compares logits against minigpt before writing and refuses to write a model that
    disagrees (max abs diff above VERIFY_TOLERANCE).
    """
    from transformers import GenerationConfig

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype} is not supported: use one of {', '.join(DTYPES)}")
    if model.vocab_size < GPT2_VOCAB_SIZE:
        raise ConfigError(
            f"model.vocab_size={model.vocab_size} is smaller than the GPT-2 tokenizer's {GPT2_VOCAB_SIZE} tokens "
            "the export ships: only GPT-2-vocabulary models can be exported"
        )
    model = model.float().cpu().eval()
    hf = to_hf(model)
    report = {"hf_class": type(hf).__name__, "dtype": dtype}
    if verify:
        diff = max_logit_diff(model, hf)
        report["max_logit_diff"] = diff
        if not diff <= VERIFY_TOLERANCE:
            raise RuntimeError(f"exported {report['hf_class']} disagrees with minigpt: max logit diff {diff:.3g}")
    hf.generation_config = GenerationConfig(bos_token_id=EOT_TOKEN, eos_token_id=EOT_TOKEN, pad_token_id=EOT_TOKEN)
    hf.to(DTYPES[dtype])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out, safe_serialization=True)
    save_tokenizer(out, model.block_size)
    report["out_dir"] = str(out)
    return report
