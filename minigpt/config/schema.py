"""The whole schema, `Config`, registered in Hydra's ConfigStore as `base_config`, and its conversions."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from minigpt.config.arch import ArchConfig, ModelConfig
from minigpt.config.cluster import ClusterConfig
from minigpt.config.data import DataConfig
from minigpt.config.logging_eval import EvalConfig, LoggerConfig
from minigpt.config.optim import OptimConfig
from minigpt.config.train import TrainConfig
from minigpt.halving.config import HalvingConfig
from minigpt.run_identity import register_resolvers


@dataclass
class Config:
    arch: ArchConfig = field(default_factory=ArchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: Optional[str] = None  # set by conf/experiment presets, for grouping runs
    halving: HalvingConfig = field(default_factory=HalvingConfig)  # python -m minigpt.halving's settings (not hashed)


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)


register_configs()

register_resolvers(Config)  # ${minigpt.run_hash:} / ${minigpt.run_name:} in hydra.run.dir and the sweeps' subdirs


def to_container(cfg: Any) -> dict:
    """Resolved plain-dict view of a config (for checkpoints and loggers); enums become their names."""
    import dataclasses

    from omegaconf import OmegaConf

    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def expand_user_paths(node: Any) -> Any:
    """Expand a leading `~` (`~user`) in every `path_field` of a config tree, in place; returns `node`.

    Done once here rather than where each path is opened, so no code path can miss it: Hydra passes
    `'data.path="~/corpus"'` through as the literal `~/corpus` (the shell does not expand a quoted `~`,
    nor an unquoted one after `data.path=`), as it does `~` in YAML presets.
    """
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            expand_user_paths(value)
        elif f.metadata.get("path") and isinstance(value, str):
            setattr(node, f.name, os.path.expanduser(value))
    return node


def to_config(cfg: Any) -> Config:
    """DictConfig (from Hydra) -> typed `Config` objects, resolving interpolations and expanding `~` in paths.

    A `???` left in the config (e.g. data=text without data.path) becomes one clear ConfigError line.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    from minigpt.errors import ConfigError

    try:
        return expand_user_paths(OmegaConf.to_object(cfg))
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a required value"
        raise ConfigError(f"{key} is required but not set: add {key}=... to the command line") from exc
