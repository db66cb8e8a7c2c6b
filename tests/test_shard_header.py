"""Start-up reads shard headers, not bodies: the largest token id is in the header (or, for shards written
before it was, scanned once and cached beside the shard), and an id outside the vocabulary is still refused."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from minigpt.data.loader import TokenChunks
from minigpt.data.shards import HEADER_BYTES, MAX_ID_FIELD, max_id_cache, write_shard
from minigpt.errors import ConfigError

VOCAB, TOKENS, SHARDS = 50257, 2**16, 40  # 40 shards of 128 KiB bodies
IO = Path("/proc/self/io")
needs_io = pytest.mark.skipif(not IO.exists(), reason="counts bytes read with Linux's /proc/self/io")


def bytes_read() -> int:
    """rchar: bytes this process has had returned by read() calls so far."""
    return int(next(line for line in IO.read_text().splitlines() if line.startswith("rchar:")).split()[1])


def open_all(files, vocab_size=VOCAB) -> int:
    """Bytes read while opening every shard for training (with the vocabulary check)."""
    before = bytes_read()
    TokenChunks(files, 64, vocab_size)
    return bytes_read() - before


def shards(folder: Path, n: int = SHARDS, top: int = 50000) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        tokens = rng.integers(0, top, TOKENS)
        tokens[i] = top  # the largest id, somewhere different in each shard
        write_shard(folder / f"train_{i:06d}.bin", tokens)
        files.append(folder / f"train_{i:06d}.bin")
    return files


def set_header_field(path: Path, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(4 * MAX_ID_FIELD)
        f.write(np.int32(value).tobytes())


@needs_io
def test_startup_reads_headers_not_bodies(tmp_path):
    files = shards(tmp_path)
    assert np.fromfile(files[0], dtype=np.int32, count=4)[MAX_ID_FIELD] == 50001  # 1 + the largest id
    # Ids no model has, written into every body after its header: opening never sees them.
    for f in files:
        with open(f, "r+b") as fh:
            fh.seek(HEADER_BYTES + 2 * 1000)
            fh.write(np.full(100, 65535, dtype=np.uint16).tobytes())
    read = open_all(files)
    bodies = SHARDS * 2 * TOKENS
    assert SHARDS * HEADER_BYTES <= read < bodies / 20, (read, bodies)  # the 1 KiB headers, a little more
    assert not list(tmp_path.glob("*.maxid.json"))  # nothing to cache: the headers have the field


@needs_io
def test_old_shards_are_scanned_once_and_the_result_cached(tmp_path):
    files = shards(tmp_path, n=8)
    for f in files:
        set_header_field(f, 0)  # as written before the field existed (and as llm.c writes them)
    bodies = 8 * 2 * TOKENS
    assert open_all(files) >= bodies  # first start: each body read once
    assert json.loads(max_id_cache(files[0]).read_text())["max_id"] == 50000
    assert not list(tmp_path.glob(".*"))  # written atomically: no temp file left
    assert open_all(files) < bodies / 20  # later starts: headers and the small cache files

    # Rewritten shard (new size, mtime): its cache is stale, so it is scanned again and the new id refused.
    write_shard(files[3], np.r_[np.zeros(TOKENS // 2, dtype=np.int64), 60000])
    set_header_field(files[3], 0)
    os.utime(files[3], ns=(1, 1))
    with pytest.raises(ConfigError, match=r"train_000003.bin holds token id 60000"):
        open_all(files)
    # A torn cache file is read past, not trusted.
    max_id_cache(files[5]).write_text('{"size": ')
    assert open_all(files[5:6]) >= 2 * TOKENS
    assert json.loads(max_id_cache(files[5]).read_text())["max_id"] == 50000


def test_a_header_id_outside_the_vocabulary_is_refused_in_one_line(tmp_path):
    (f,) = shards(tmp_path, n=1)
    set_header_field(f, 60001)  # the header says 60000; the body (ids < 50001) is not read to argue
    with pytest.raises(ConfigError) as exc:
        TokenChunks([f], 64, VOCAB)
    message = str(exc.value)
    assert message.startswith(f"{f} holds token id 60000, outside the model's vocabulary (model.vocab_size={VOCAB})")
    assert "\n" not in message
    TokenChunks([f], 64, 60001)  # a vocabulary that has it: accepted
