"""A run's identity: the hash and name of what it computes, for `${minigpt.run_hash:}` / `${minigpt.run_name:}`.

The hash covers the resolved config minus NOT_HASHED (where a run executes and logs, how often it saves
or prints, the rerun flags), and only values that differ from the schema's defaults (minigpt/rundir.py
says why). The schema is handed over by minigpt.config when it registers the resolvers, so this module
imports no minigpt module and config.py <-> rundir.py is no import circle.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import OmegaConf

HASH_LEN = 8
# Where a run executes and logs, how often it saves or prints, how reruns behave: not part of its identity.
NOT_HASHED = (
    "hydra", "cluster", "logger", "halving",
    "train.device", "train.resume", "train.rerun", "train.objective", "train.stop_at",
    "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
    "data.cache_dir", "data.prepare",
    "eval.hellaswag.cache_dir", "eval.hellaswag.download", "eval.hellaswag.url", "eval.hellaswag.batch_size",
)

# ---------------------------------------------------------------------------------------------- identity

_SAME = object()  # marks "no difference" (None is a value)


def _drop(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def _differences(values: Any, defaults: Any) -> Any:
    """The part of `values` that differs from `defaults` (nested dicts compared key by key)."""
    if isinstance(values, dict) and isinstance(defaults, dict):
        out = {}
        for key, value in values.items():
            if key not in defaults:
                out[key] = value
            else:
                diff = _differences(value, defaults[key])
                if diff is not _SAME:
                    out[key] = diff
        return out if out else _SAME
    return _SAME if values == defaults else values


_SCHEMA: type | None = None  # minigpt.config.Config, handed over by register_resolvers (this module imports no config)
_DEFAULTS: dict | None = None


def schema_defaults() -> dict:
    global _DEFAULTS
    if _DEFAULTS is None:
        if _SCHEMA is None:
            raise RuntimeError("no config schema registered: import minigpt.config first")
        tree = OmegaConf.to_container(OmegaConf.structured(_SCHEMA), resolve=False, enum_to_str=True)
        for key in NOT_HASHED:
            _drop(tree, key)
        _DEFAULTS = tree
    return _DEFAULTS


def identity(cfg: Any) -> dict:
    """What makes a run this run: its resolved settings that differ from the schema defaults."""
    if not OmegaConf.is_config(cfg):  # a typed Config (dataclass)
        cfg = OmegaConf.structured(cfg)
    tree = {}
    for key in cfg.keys():
        if key in NOT_HASHED:
            continue
        node = cfg[key]
        tree[key] = OmegaConf.to_container(node, resolve=True, enum_to_str=True) if OmegaConf.is_config(node) else node
    for dotted in NOT_HASHED:
        _drop(tree, dotted)
    diff = _differences(tree, schema_defaults())
    return {} if diff is _SAME else diff


def config_hash(cfg: Any) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]


def run_name(cfg: Any) -> str:
    """`[<experiment>_]<arch>_<model>-<hash>`: readable, and the same for the same config."""
    parts = [cfg.experiment] if cfg.experiment else []
    parts += [cfg.arch.name, cfg.model.name]
    return "_".join(str(p) for p in parts) + f"-{config_hash(cfg)}"


def trunk_name(cfg: Any, num_iterations: int, decay_frac: float) -> str:
    """The run name of this config's halving trunk: the same run at `num_iterations` steps and wsd's
    `decay_frac` (a branch names the trunk it forks from with `${minigpt.trunk_name:B,f}` in train.resume)."""
    import copy

    from omegaconf import open_dict, read_write

    trunk = copy.deepcopy(cfg)
    with read_write(trunk), open_dict(trunk):
        trunk.train.num_iterations, trunk.optim.decay_frac = int(num_iterations), float(decay_frac)
        trunk.train.resume = "auto"  # the branch's own train.resume names this resolver: not part of the identity
    return run_name(trunk)


def register_resolvers(schema: type) -> None:
    """`${minigpt.run_hash:}` and `${minigpt.run_name:}` for hydra.run.dir / hydra.sweep.subdir; `schema`
    (the Config dataclass) gives the defaults a run's identity leaves out. Called by minigpt.config."""
    global _SCHEMA, _DEFAULTS
    _SCHEMA, _DEFAULTS = schema, None
    OmegaConf.register_new_resolver("minigpt.run_hash", lambda *, _root_: config_hash(_root_), replace=True)
    OmegaConf.register_new_resolver("minigpt.run_name", lambda *, _root_: run_name(_root_), replace=True)
    OmegaConf.register_new_resolver("minigpt.trunk_name", lambda steps, frac, *, _root_: trunk_name(_root_, steps, frac),
                                    replace=True)
