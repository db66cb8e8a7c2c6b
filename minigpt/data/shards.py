"""llm.c token shard format, so shards interoperate with llm.c and modded-nanogpt.

Layout: a header of 256 int32 (magic 20240520, version 1, token count, rest zero), then the tokens
as uint16. Files are written to a temp name and renamed, so a crash never leaves a half shard.
Opened for training, a shard is checked against the model's vocabulary (one max() over the memmap,
a sequential read of the file): an id the embedding table does not have would otherwise crash deep in
the forward pass (an IndexError on CPU, a device-side assert on a GPU).
"""

from __future__ import annotations

import os

import numpy as np

from minigpt.atomic import atomic_write
from minigpt.errors import ConfigError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def write_shard(path: str | os.PathLike, tokens) -> None:
    """Write tokens (any int sequence < 2**16) as an llm.c shard, atomically."""
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() >= 2**16):
        raise ValueError("token ids must fit in uint16 for the llm.c shard format")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = MAGIC, VERSION, toks.size
    with atomic_write(path, durable=True) as f:  # a shard costs tokenizing time: fsync before the rename
        f.write(header.tobytes())
        f.write(toks.astype(np.uint16).tobytes())


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and return its token count."""
    with open(path, "rb") as f:
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
    return count


def open_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.memmap:
    """Memory-map a shard's tokens (uint16) without reading them into RAM; with `vocab_size`, check that
    every id fits the model's vocabulary."""
    count = read_header(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(count,))
    if vocab_size is not None and count:
        top = int(tokens.max())
        if top >= vocab_size:
            raise ConfigError(
                f"{path} holds token id {top}, outside the model's vocabulary (model.vocab_size={vocab_size}): "
                f"it was tokenized with another tokenizer; re-create it with GPT-2's (python -m minigpt.prepare) "
                f"or set model.vocab_size={top + 1} or more"
            )
    return tokens
