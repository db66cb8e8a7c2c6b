"""The `logger` group (W&B, the local metrics file) and the `eval` group (HellaSwag) (conf/logger/, conf/eval/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from minigpt.config.fields import path_field


@dataclass
class LoggerConfig:
    """Extra metrics destination besides metrics.jsonl: `none` or `wandb` (see minigpt/wandb_logger.py)."""

    name: str = "none"
    project: str = "minigpt"
    entity: Optional[str] = None  # W&B team or user; None: the API key's default entity
    group: Optional[str] = None  # None: the sweep's name under --multirun, else `experiment`
    job_type: Optional[str] = None  # None: the run's overrides without seeds (minigpt/experiment.py), else the arch
    tags: List[str] = field(default_factory=list)  # added to the automatic arch=/model= tags
    mode: Optional[str] = None  # online | offline | disabled; None: follow WANDB_MODE (default online)
    dir: Optional[str] = path_field()  # where the wandb/ folder goes; None: the run directory


@dataclass
class HellaSwagConfig:
    """HellaSwag validation (minigpt/eval/): where the data comes from, how often, how much."""

    path: Optional[str] = path_field()  # a hellaswag_val.jsonl; None: the cache, then a verified download
    cache_dir: str = path_field("${oc.env:MINIGPT_CACHE,${oc.env:HOME,.}/.cache/minigpt}/hellaswag")
    download: bool = True  # fetch the official file (sha256-checked) when it is not cached
    url: str = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"  # or a mirror
    every: int = 250  # steps between evaluations in training; 0: only after the last step
    limit: Optional[int] = None  # the first N examples only (CPU runs); None: all 10042
    batch_size: int = 64  # (context, ending) rows per forward pass; 4 rows per example
    protocols: List[str] = field(default_factory=lambda: ["llmc", "harness"])


@dataclass
class EvalConfig:
    name: str = "none"
    hellaswag: HellaSwagConfig = field(default_factory=HellaSwagConfig)
