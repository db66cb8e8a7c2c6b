"""Resumable, deterministic batches of B x (T+1) tokens from memory-mapped shards.

The token stream of all shards is cut into non-overlapping chunks of T+1 tokens (chunk i starts at
i*T, so consecutive chunks share one token, as in llm.c). Training visits chunks in a permutation
that depends only on (seed, epoch); a batch is the next B chunks of it. The loader's whole position
is (epoch, cursor), so `state_dict()` / `load_state_dict()` resume exactly, and data-parallel rank r of
W takes the r-th of W consecutive micro-batches, which makes W ranks see the same global batches as
one process with W times the gradient accumulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from minigpt.data.shards import open_shard
from minigpt.errors import ConfigError


class TokenChunks:
    """Random access to chunk i (T+1 tokens) across a list of shards."""

    def __init__(self, files: list[Path], seq_len: int, vocab_size: int | None = None):
        self.seq_len = seq_len
        self.shards = [open_shard(f, vocab_size) for f in files]  # vocab_size: every id checked once, at open
        # chunks per shard: starts 0, T, 2T, ... with start + T + 1 <= len
        counts = [max(0, (len(s) - 1) // seq_len) for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.num_chunks = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_chunks

    def get(self, i: int) -> np.ndarray:
        shard = int(np.searchsorted(self.offsets, i, side="right") - 1)
        start = (i - int(self.offsets[shard])) * self.seq_len
        return np.asarray(self.shards[shard][start : start + self.seq_len + 1], dtype=np.int64)


class DataLoader:
    def __init__(self, files: list[Path], batch_size: int, seq_len: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, split: str = "train", vocab_size: int | None = None):
        self.chunks = TokenChunks(files, seq_len, vocab_size)
        self.B, self.T = batch_size, seq_len
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        needed = batch_size * world_size
        if len(self.chunks) < needed:
            total = sum(len(s) for s in self.chunks.shards)
            raise ConfigError(
                f"{split} data has {total:,} tokens, too few for {needed} sequences of {seq_len + 1} tokens: "
                "lower train.sequence_length / train.batch_size or use more data"
            )
        self.epoch, self.cursor = 0, 0
        self._order: np.ndarray | None = None

    def _chunk_order(self) -> np.ndarray:
        if self._order is None:
            n = len(self.chunks)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
            else:
                self._order = np.arange(n)
        return self._order

    def num_batches(self) -> int:
        """Whole batches in one pass over the data, all ranks together: a multiple of the world size, so that
        each rank takes the same number (rank r the batches r, r+W, ...)."""
        W = self.world_size
        return len(self.chunks) // (self.B * W) * W

    def reset(self) -> None:
        self.epoch, self.cursor, self._order = 0, 0, None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of shape (B, T); y is x shifted by one token. Advances the global cursor by B * world_size."""
        step = self.B * self.world_size
        if self.cursor + step > len(self.chunks):
            self.epoch, self.cursor, self._order = self.epoch + 1, 0, None
        order = self._chunk_order()
        start = self.cursor + self.rank * self.B
        rows = np.stack([self.chunks.get(int(i)) for i in order[start : start + self.B]])
        self.cursor += step
        buf = torch.from_numpy(rows)
        return buf[:, :-1], buf[:, 1:]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor, self._order = int(state["epoch"]), int(state["cursor"]), None
        self.seed = int(state.get("seed", self.seed))
