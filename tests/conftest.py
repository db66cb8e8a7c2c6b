"""Shared test helpers: a session token cache, Hydra composition, tiny configs, the committed fixtures."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl  # Hydra's own override step (see compose_config)
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from minigpt.paths import CONF_DIR  # the one place the package names conf/

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
# The first 200 HellaSwag validation examples in both layouts (see tests/fixtures/hellaswag/README.md).
HELLASWAG_200 = FIXTURES / "hellaswag" / "val_ctx_only_first200.jsonl"
HELLASWAG_200_OFFICIAL = FIXTURES / "hellaswag" / "val_official_schema_first200.jsonl"


def full_hellaswag() -> Path:
    """The full 10,042-example validation set from $MINIGPT_HELLASWAG; skips the test when it is not set."""
    path = os.environ.get("MINIGPT_HELLASWAG")
    if not path:
        pytest.skip("needs the full HellaSwag validation set: set MINIGPT_HELLASWAG=<hellaswag_val.jsonl>")
    if not Path(path).is_file():
        pytest.fail(f"MINIGPT_HELLASWAG={path} is not a file")
    return Path(path)

# A tiny shape that trains in well under a second per step on 2 CPU cores.
TINY = [
    "model.n_layer=2",
    "model.n_embd=64",
    "model.n_head=4",
    "model.block_size=64",
    "train.batch_size=4",
    "train.val_max_steps=4",
    "train.sample_tokens=8",
    "train.device=cpu",
]


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """One token cache for the whole session, so the corpus is tokenized once."""
    cache = tmp_path_factory.mktemp("minigpt-cache")
    old = os.environ.get("MINIGPT_CACHE")
    os.environ["MINIGPT_CACHE"] = str(cache)
    # logger=wandb is the default: tests record nothing unless they opt in (tests/test_tracking.py does).
    old_mode = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "disabled"
    yield cache
    if old_mode is None:
        os.environ.pop("WANDB_MODE", None)
    else:
        os.environ["WANDB_MODE"] = old_mode
    if old is None:
        os.environ.pop("MINIGPT_CACHE", None)
    else:
        os.environ["MINIGPT_CACHE"] = old


@functools.lru_cache(maxsize=None)
def _composed(group_overrides: tuple[str, ...], config_name: str) -> DictConfig:
    """Hydra's composition of the defaults list (presets) for these group overrides, once per test session."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(group_overrides))


def _is_value_override(override) -> bool:
    """A plain `key=value` (or `+key=`, `~key`) that Hydra applies after composing the presets, rather than
    a preset choice (`arch=rope`, `cluster/gpu=...`, `x@pkg=`), a sweep (`a=1,2`) or a `hydra.` key."""
    key = override.key_or_group
    return (override.package is None and not override.is_sweep_override() and not key.startswith("hydra")
            and not (CONF_DIR / key.replace(".", "/")).is_dir())


def compose_config(overrides: list[str] = (), config_name: str = "config") -> DictConfig:
    """The primary config as Hydra's compose API makes it (no run dir, no logging setup).

    Composing costs ~150 ms, so the presets are composed once per session for each set of group overrides
    and each call gets a copy with its `key=value` overrides applied by Hydra's own override step: the
    same result and errors as `compose(overrides=...)`, in which Hydra applies those after the presets too.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = tuple(o.input_line for o in parsed if not _is_value_override(o))
    cfg = copy.deepcopy(_composed(groups, config_name))
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if _is_value_override(o)], cfg)
    return cfg


def tiny_config(*overrides: str):
    """Typed Config of a tiny model with extra overrides applied last."""
    from minigpt.config import to_config

    return to_config(compose_config([*TINY, *overrides]))


def run_cli(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m <args>` in a subprocess, as a user would."""
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_metrics(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def read_losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss from metrics.jsonl; fails if a step was logged twice."""
    rows = [r for r in read_metrics(run_dir) if "train/loss" in r]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["train/loss"] for r in rows}
