"""`python -m minigpt.prepare`: local documents through `datasets` -> llm.c shards, resumable."""

import json

import numpy as np
import pytest

from minigpt.data.corpus import prepare_splits
from minigpt.data.shard_builder import prepare_shards
from minigpt.data.shards import HEADER_BYTES, MAGIC, open_shard
from minigpt.data.tokenizer import EOT_TOKEN, get_gpt2_encoding
from minigpt.errors import ConfigError
from minigpt.prepare import compose_data_config
from tests.conftest import ROOT, run_cli

SHARD = 3000


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """300 documents of varied length (1..40 words), as jsonl."""
    texts = [f"Document {i}. " + " ".join(f"word{(j * i) % 97}" for j in range(i % 40 + 1)) for i in range(300)]
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path, texts


def cfg_for(source, out, *extra):
    return compose_data_config(["data=fineweb_edu_10b", f"data.prepare.source={source}", f"data.path={out}",
                                f"data.prepare.shard_size={SHARD}", "data.prepare.num_workers=2", *extra])


def test_shards_hold_every_document_after_an_eot_and_resume_byte_identical(docs, tmp_path):
    source, texts = docs
    enc = get_gpt2_encoding()
    expected = np.concatenate([[EOT_TOKEN, *enc.encode_ordinary(t)] for t in texts]).astype(np.uint16)

    full = prepare_shards(cfg_for(source, tmp_path / "full"), progress=False)
    n = -(-expected.size // SHARD)
    assert [f.name for f in full] == ["val_000000.bin"] + [f"train_{i:06d}.bin" for i in range(1, n)]
    for f in full:
        header = np.fromfile(f, dtype=np.int32, count=256)
        assert (header[0], header[1]) == (MAGIC, 1) and not header[4:].any()
        assert header[3] == int(open_shard(f).max()) + 1  # 1 + its largest id, for the loader's vocabulary check
        assert f.stat().st_size == HEADER_BYTES + 2 * int(header[2])
    sizes = [len(open_shard(f)) for f in full]
    assert sizes[:-1] == [SHARD] * (n - 1) and sum(sizes) == expected.size
    stream = np.concatenate([open_shard(f) for f in full])
    assert np.array_equal(stream, expected)  # order kept, EOT before every document
    doc_starts = np.cumsum([0] + [len(enc.encode_ordinary(t)) + 1 for t in texts[:-1]])
    assert np.array_equal(np.flatnonzero(stream == EOT_TOKEN), doc_starts)

    # data=shards recognises the split: the first shard is validation
    train, val = prepare_splits(cfg_for(source, tmp_path / "full"))
    assert [f.name for f in val] == ["val_000000.bin"] and len(train) == n - 1

    # Interrupted after 2 shards, then the second one torn and a half-written temp file left behind.
    part = tmp_path / "part"
    assert len(prepare_shards(cfg_for(source, part, "data.prepare.max_shards=2"), progress=False)) == 2
    val_mtime = (part / "val_000000.bin").stat().st_mtime_ns
    torn = part / "train_000001.bin"
    torn.write_bytes(torn.read_bytes()[:-100])
    (part / ".train_000002.bin.tmp-999").write_bytes(b"half a shard")  # as minigpt/atomic.py names them
    resumed = prepare_shards(cfg_for(source, part), progress=False)
    assert [f.name for f in resumed] == [f.name for f in full]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(full, resumed))
    assert (part / "val_000000.bin").stat().st_mtime_ns == val_mtime  # intact shards are kept, not rewritten
    again = prepare_shards(cfg_for(source, part), progress=False)  # complete: nothing to do
    assert again == resumed

    with pytest.raises(ConfigError, match="other settings"):
        prepare_shards(cfg_for(source, part, "data.prepare.shard_size=5000"), progress=False)


def test_parquet_source_with_another_text_field(docs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, texts = docs
    pq.write_table(pa.table({"content": texts[:50]}), tmp_path / "docs.parquet")
    files = prepare_shards(cfg_for(tmp_path / "docs.parquet", tmp_path / "out", "data.prepare.text_field=content"),
                           progress=False)
    stream = np.concatenate([open_shard(f) for f in files])
    assert (stream == EOT_TOKEN).sum() == 50
    with pytest.raises(ConfigError, match="no field 'body'"):
        prepare_shards(cfg_for(tmp_path / "docs.parquet", tmp_path / "bad", "data.prepare.text_field=body"),
                       progress=False)


def test_cli_reports_an_unreachable_hub_dataset_in_one_line(tmp_path):
    out = run_cli(["minigpt.prepare", "data=fineweb_edu_10b", f"data.path={tmp_path}"], cwd=ROOT,
                  env_extra={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HuggingFaceFW/fineweb-edu" in errors[0] and "Traceback" not in out.stderr
