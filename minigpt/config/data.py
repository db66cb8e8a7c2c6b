"""The `data` group: the corpus, its split and token cache (conf/data/), and `python -m minigpt.prepare`'s settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from minigpt.config.fields import path_field


class DataKind(str, Enum):
    shakespeare = "shakespeare"  # the embedded tiny-shakespeare plays
    text = "text"  # local text files (.txt .md .jsonl)
    shards = "shards"  # llm.c .bin token shards (python -m minigpt.prepare writes them)


@dataclass
class PrepareConfig:
    """`python -m minigpt.prepare`: documents -> llm.c shards in data.path (first shard = val)."""

    source: Optional[str] = path_field()  # HF dataset id, or local files (folder/file/glob of .jsonl .json .parquet .txt .csv)
    subset: Optional[str] = None  # HF dataset config, e.g. sample-10BT
    split: str = "train"
    text_field: str = "text"
    shard_size: int = 100_000_000  # tokens per shard, as llm.c's fineweb.py
    num_workers: int = 0  # tokenizer processes; 0: one per CPU core
    max_shards: Optional[int] = None  # stop after this many shards; rerun without it to continue


@dataclass
class DataConfig:
    """Where tokens come from. `kind`: shakespeare (embedded, default) | text (local files) | shards (.bin)."""

    name: str = "shakespeare"
    kind: DataKind = DataKind.shakespeare
    path: Optional[str] = path_field()  # folder, file or glob (text: .txt/.md/.jsonl; shards: .bin)
    val_plays: List[str] = field(default_factory=lambda: ["hamlet", "the-tempest"])
    val_fraction: float = 0.05  # text kind: the tail of the token stream held out for validation
    jsonl_field: str = "text"
    cache_dir: str = path_field("${oc.env:MINIGPT_CACHE,${oc.env:HOME,.}/.cache/minigpt}/data")
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
