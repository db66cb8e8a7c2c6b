import hashlib
import os

import pytest

from minigpt.data.tokenizer import (
    ENCODER_JSON_SHA256,
    EOT_TOKEN,
    VOCAB_BPE_SHA256,
    get_gpt2_encoding,
    gpt2_bpe_dir,
)
from minigpt.errors import ConfigError
from tests.conftest import SHARED_DATA


def test_offline_gpt2_figures():
    enc = get_gpt2_encoding()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.eot_token == EOT_TOKEN == 50256
    assert enc.n_vocab == 50257


def test_shipped_files_match_tiktoken_pins():
    folder = gpt2_bpe_dir()
    assert hashlib.sha256((folder / "vocab.bpe").read_bytes()).hexdigest() == VOCAB_BPE_SHA256
    assert hashlib.sha256((folder / "encoder.json").read_bytes()).hexdigest() == ENCODER_JSON_SHA256


def test_same_ids_as_stock_tiktoken_gpt2():
    """Stock tiktoken.get_encoding('gpt2') from the pre-filled shared cache gives the same ids."""
    cache = SHARED_DATA / "gpt2" / "tiktoken_cache"
    if not cache.is_dir():
        pytest.skip("../shared/data/gpt2/tiktoken_cache not present")
    import tiktoken

    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        stock = tiktoken.get_encoding("gpt2")
    finally:
        os.environ.pop("TIKTOKEN_CACHE_DIR") if old is None else os.environ.__setitem__("TIKTOKEN_CACHE_DIR", old)
    text = (SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:200_000]
    assert get_gpt2_encoding().encode_ordinary(text) == stock.encode_ordinary(text)


def test_tampered_files_are_rejected(tmp_path, monkeypatch):
    folder = gpt2_bpe_dir()
    (tmp_path / "vocab.bpe").write_bytes((folder / "vocab.bpe").read_bytes() + b"x")
    (tmp_path / "encoder.json").write_bytes((folder / "encoder.json").read_bytes())
    monkeypatch.setenv("MINIGPT_GPT2_BPE_DIR", str(tmp_path))
    get_gpt2_encoding.cache_clear()
    try:
        with pytest.raises(ConfigError, match="sha256"):
            get_gpt2_encoding()
    finally:
        monkeypatch.delenv("MINIGPT_GPT2_BPE_DIR")
        get_gpt2_encoding.cache_clear()
