import hashlib
import pytest

from minigpt.data.tokenizer import (
    ENCODER_JSON_SHA256,
    EOT_TOKEN,
    VOCAB_BPE_SHA256,
    get_gpt2_encoding,
    gpt2_bpe_dir,
)
from minigpt.errors import ConfigError


def test_offline_gpt2_figures():
    enc = get_gpt2_encoding()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.eot_token == EOT_TOKEN == 50256
    assert enc.n_vocab == 50257


def test_shipped_files_match_tiktoken_pins():
    folder = gpt2_bpe_dir()
    assert hashlib.sha256((folder / "vocab.bpe").read_bytes()).hexdigest() == VOCAB_BPE_SHA256
    assert hashlib.sha256((folder / "encoder.json").read_bytes()).hexdigest() == ENCODER_JSON_SHA256


def test_same_ids_as_stock_tiktoken_gpt2(tmp_path, monkeypatch):
    """Stock tiktoken.get_encoding('gpt2') gives the same ids as ours.

    tiktoken looks for its downloads in TIKTOKEN_CACHE_DIR under sha1(url); filled with the shipped files
    (which match its pins, see above), its own gpt2 definition loads offline.
    """
    import tiktoken
    from tiktoken_ext.openai_public import gpt2

    from minigpt.data.corpus import list_plays, play_markdown_to_text

    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1((base + name).encode()).hexdigest()
        (tmp_path / key).write_bytes((gpt2_bpe_dir() / name).read_bytes())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    stock = tiktoken.Encoding(**gpt2())  # tiktoken's own recipe; get_encoding would cache it process-wide
    plays = list_plays()
    text = "".join(play_markdown_to_text(plays[name].read_text(encoding="utf-8")) for name in ("hamlet", "macbeth"))
    text += " it's  3.14\t\u00e9t\u00e9 \u65e5\u672c\u8a9e\n\n  \U0001f600 <|endoftext|> don't   "
    assert len(text) > 200_000
    assert get_gpt2_encoding().encode_ordinary(text) == stock.encode_ordinary(text)
    assert get_gpt2_encoding().encode(text, allowed_special="all") == stock.encode(text, allowed_special="all")


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
