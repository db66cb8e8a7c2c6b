"""llm.c token shard format, so shards interoperate with llm.c and modded-nanogpt.

Layout: a header of 256 int32 (magic 20240520, version 1, token count, 1 + the largest token id, rest
zero), then the tokens as uint16. llm.c reads the first three fields only; the fourth is one of the
spare ones, 0 in shards written before it (or by llm.c). Files are written to a temp name and renamed,
so a crash never leaves a half shard.

Opened for training, a shard is checked against the model's vocabulary: an id the embedding table does
not have would otherwise crash deep in the forward pass (an IndexError on CPU, a device-side assert on a
GPU). The check reads the header only (llm.c and nanoGPT trust the header too), so start-up reads 1 KiB
per shard, not the corpus (FineWeb-Edu 10B: 20 GB per rank, at every start and requeue). A shard
without the field is read once, in blocks, and its largest id cached beside it in `<shard>.maxid.json`,
keyed on the shard's size and mtime (rewriting the shard invalidates it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from minigpt.atomic import atomic_write, write_text_atomic
from minigpt.errors import ConfigError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_ID_FIELD = 3  # header[3] = 1 + the largest token id; 0: not recorded (older shards, llm.c's)
SCAN_TOKENS = 2**24  # tokens per block when an old shard is read for its largest id (32 MB)


def write_shard(path: str | os.PathLike, tokens) -> None:
    """Write tokens (any int sequence < 2**16) as an llm.c shard, atomically."""
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() >= 2**16):
        raise ValueError("token ids must fit in uint16 for the llm.c shard format")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = MAGIC, VERSION, toks.size
    header[MAX_ID_FIELD] = int(toks.max()) + 1 if toks.size else 0
    with atomic_write(path, durable=True) as f:  # a shard costs tokenizing time: fsync before the rename
        f.write(header.tobytes())
        f.write(toks.astype(np.uint16).tobytes())


def _header(path: str | os.PathLike) -> np.ndarray:
    """A shard's validated header (magic, version, size against the token count)."""
    with open(path, "rb", buffering=0) as f:  # unbuffered: 1 KiB read, not a buffer's worth of tokens
        header = np.frombuffer(f.read(HEADER_BYTES), dtype=np.int32)
    if header.size != HEADER_INTS or header[0] != MAGIC:
        raise ConfigError(f"{path} is not an llm.c token shard (bad magic); re-run data preparation")
    if header[1] != VERSION:
        raise ConfigError(f"{path} has shard version {header[1]}, expected {VERSION}")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    actual = os.path.getsize(path)
    if actual != expected:
        raise ConfigError(f"{path} is truncated ({actual} bytes, header says {expected}); delete it and re-run preparation")
    return header


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and return its token count."""
    return int(_header(path)[2])


def max_id_cache(path: str | os.PathLike) -> Path:
    return Path(f"{path}.maxid.json")


def _scanned_max_id(path: str | os.PathLike, count: int) -> int:
    """The largest id of a shard without the header field: read once in blocks, then cached beside it."""
    st = os.stat(path)
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = max_id_cache(path)
    try:
        cached = json.loads(cache.read_text())
        if {k: cached.get(k) for k in key} == key:
            return int(cached["max_id"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or a stale or torn one: read the shard
    top = 0
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        for _ in range(0, count, SCAN_TOKENS):
            top = max(top, int(np.fromfile(f, dtype=np.uint16, count=SCAN_TOKENS).max()))
    try:  # atomic: ranks checking the same shard at once each write a whole file
        write_text_atomic(cache, json.dumps({**key, "max_id": top}))
    except OSError:
        pass  # a read-only corpus folder: the shard is read again next start, nothing else is lost
    return top


def max_token_id(path: str | os.PathLike, header: np.ndarray | None = None) -> int | None:
    """A shard's largest token id (None when empty): from the header, or for older shards a cached scan."""
    header = _header(path) if header is None else header
    count = int(header[2])
    if not count:
        return None
    recorded = int(header[MAX_ID_FIELD])
    return recorded - 1 if recorded else _scanned_max_id(path, count)


def open_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.memmap:
    """Memory-map a shard's tokens (uint16) without reading them into RAM; with `vocab_size`, check that
    every id fits the model's vocabulary (from the header: the tokens themselves are not read)."""
    header = _header(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(int(header[2]),))
    top = max_token_id(path, header) if vocab_size is not None else None
    if top is not None and top >= vocab_size:
        raise ConfigError(
            f"{path} holds token id {top}, outside the model's vocabulary (model.vocab_size={vocab_size}): "
            f"it was tokenized with another tokenizer; re-create it with GPT-2's (python -m minigpt.prepare) "
            f"or set model.vocab_size={top + 1} or more"
        )
    return tokens
