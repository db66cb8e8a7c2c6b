"""Typed configuration: dataclasses registered in Hydra's ConfigStore.

`conf/config.yaml` lists `base_config` (this schema) first in its defaults, so every preset in
`conf/<group>/` and every command-line override is checked against these types: a misspelt key or a
wrong type fails before any work, with Hydra naming the key.

One module per config group (arch, optim, data, train, cluster, logging_eval), the whole `Config` in
schema.py, Hydra glue in hydra_glue.py; every name is importable from `minigpt.config` as before.
"""

from minigpt.config.fields import path_field  # noqa: F401
from minigpt.config.arch import PosEncoding, Norm, MLPKind, ArchConfig, resolve_kv_heads, uses_gqa, ModelConfig  # noqa: F401
from minigpt.config.optim import OptimizerKind, LRSchedule, OptimConfig  # noqa: F401
from minigpt.config.data import DataKind, PrepareConfig, DataConfig  # noqa: F401
from minigpt.config.train import DType, TrainConfig  # noqa: F401
from minigpt.config.cluster import GPUConfig, ClusterConfig  # noqa: F401
from minigpt.config.logging_eval import LoggerConfig, HellaSwagConfig, EvalConfig  # noqa: F401
from minigpt.config.schema import Config, register_configs, to_container, expand_user_paths, to_config  # noqa: F401
from minigpt.config.hydra_glue import compose_typed, ExpandUserDirs  # noqa: F401
