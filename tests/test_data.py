"""Corpus conversion, the llm.c shard format, the token cache and the resumable loader."""

import json

import numpy as np
import pytest
import torch

from minigpt.config import DataConfig
from minigpt.data.corpus import list_plays, play_markdown_to_text, prepare_splits
from minigpt.data.loader import DataLoader
from minigpt.data.shards import HEADER_BYTES, MAGIC, open_shard, read_header, write_shard
from minigpt.data.tokenizer import EOT_TOKEN, get_gpt2_encoding
from minigpt.errors import ConfigError


def data_cfg(tmp_path=None, **kw):
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), kw))


def test_shard_format_roundtrip(tmp_path):
    tokens = np.array([EOT_TOKEN, 1, 2, 65535, 0], dtype=np.int64)
    path = tmp_path / "x.bin"
    write_shard(path, tokens)
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert (header[0], header[1], header[2], header[3]) == (MAGIC, 1, 5, 65536) and not header[4:].any()  # 1 + max id
    assert path.stat().st_size == HEADER_BYTES + 2 * 5
    assert open_shard(path).tolist() == tokens.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]  # no temp file left


def test_truncated_shard_is_reported(tmp_path):
    path = tmp_path / "x.bin"
    write_shard(path, np.arange(100))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="truncated"):
        read_header(path)


def test_plays_convert_to_tiny_shakespeare_layout():
    plays = list_plays()
    assert len(plays) >= 36 and "hamlet" in plays and "macbeth" in plays
    text = play_markdown_to_text(plays["macbeth"].read_text(encoding="utf-8"))
    assert "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n" in text
    assert "**" not in text and "  \n" not in text and "#" not in text


def test_shakespeare_split_holds_out_whole_plays_and_is_cached():
    cfg = data_cfg()
    (train,), (val,) = prepare_splits(cfg)
    enc = get_gpt2_encoding()
    val_text = enc.decode(open_shard(val).tolist())
    train_tokens = open_shard(train)
    assert "HAMLET:" in val_text and "PROSPERO:" in val_text
    assert "PROSPERO:" not in enc.decode(train_tokens[:2_000_000].tolist())
    assert len(train_tokens) > 1_000_000 and train_tokens[0] == EOT_TOKEN
    assert int((np.asarray(train_tokens) == EOT_TOKEN).sum()) == len(list_plays()) - 2  # one EOT per play
    mtime = train.stat().st_mtime_ns
    assert prepare_splits(cfg) == ([train], [val])  # reused, not rebuilt
    assert train.stat().st_mtime_ns == mtime


def test_unknown_val_play_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown plays"):
        prepare_splits(data_cfg(val_plays=["hamlet", "hamlett"]))


def test_local_text_folder_with_jsonl(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The quick brown fox. " * 200)
    with open(corpus / "b.jsonl", "w") as f:
        for i in range(50):
            f.write(json.dumps({"text": f"Document number {i} jumps over the lazy dog."}) + "\n")
    (corpus / "ignored.csv").write_text("x,y\n")
    (train,), (val,) = prepare_splits(data_cfg(name="text", kind="text", path=str(corpus), val_fraction=0.1))
    n_train, n_val = len(open_shard(train)), len(open_shard(val))
    assert n_val == int((n_train + n_val) * 0.1)
    all_tokens = np.concatenate([open_shard(train), open_shard(val)])
    assert int((all_tokens == EOT_TOKEN).sum()) == 51  # 1 txt document + 50 jsonl rows


@pytest.mark.parametrize("path", [None, "/definitely/not/here"])
def test_missing_data_path_is_a_clear_error(path):
    with pytest.raises(ConfigError, match="data.path"):
        prepare_splits(data_cfg(name="text", kind="text", path=path))


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "train.bin"
    write_shard(path, np.arange(10_000) % 50_000)
    return path


def test_loader_batches_are_shifted_and_deterministic(shard):
    a = DataLoader([shard], batch_size=4, seq_len=16, seed=3)
    b = DataLoader([shard], batch_size=4, seq_len=16, seed=3)
    for _ in range(5):
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(xa[:, 1:], ya[:, :-1]) and xa.shape == (4, 16)
    other = DataLoader([shard], batch_size=4, seq_len=16, seed=4)
    assert not torch.equal(other.next_batch()[0], DataLoader([shard], 4, 16, seed=3).next_batch()[0])


def test_loader_state_dict_resumes_exactly_across_epochs(shard):
    ref = DataLoader([shard], batch_size=8, seq_len=32, seed=0)  # 312 chunks: ~39 batches per epoch
    batches = [ref.next_batch()[0] for _ in range(100)]
    first = DataLoader([shard], batch_size=8, seq_len=32, seed=0)
    for _ in range(57):
        first.next_batch()
    resumed = DataLoader([shard], batch_size=8, seq_len=32, seed=0)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(resumed.next_batch()[0], batches[i]) for i in range(57, 100))


def test_ranks_split_the_single_process_batches(shard):
    single = DataLoader([shard], batch_size=2, seq_len=16, seed=1)
    ranks = [DataLoader([shard], batch_size=2, seq_len=16, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(10):
        expected = torch.cat([single.next_batch()[0], single.next_batch()[0]])
        got = torch.cat([r.next_batch()[0] for r in ranks])
        assert torch.equal(expected, got)


def test_context_longer_than_data_is_a_clear_error(shard):
    with pytest.raises(ConfigError, match="too few"):
        DataLoader([shard], batch_size=8, seq_len=5000)


def test_num_batches_counts_whole_batches_a_multiple_of_the_ranks(shard):
    """10,000 tokens cut at every 32nd: (10,000 - 1) // 32 = 312 chunks. Batches of 8: 39 whole ones; 2 ranks take
    turns in rounds of 16 chunks: 19 rounds, 38 batches; 4 ranks in rounds of 32: 9 rounds, 36 batches."""
    assert DataLoader([shard], batch_size=8, seq_len=32).num_batches() == 39
    assert DataLoader([shard], batch_size=8, seq_len=32, world_size=2).num_batches() == 38
    assert DataLoader([shard], batch_size=8, seq_len=32, world_size=4).num_batches() == 36
