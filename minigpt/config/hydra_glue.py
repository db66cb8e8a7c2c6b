"""Hydra glue: composing the typed config outside a Hydra run, and the callback that expands `~` in Hydra's
own output folders."""

from __future__ import annotations

import os
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import open_dict, read_write

from minigpt.config.schema import Config, to_config


def compose_typed(overrides: list[str]) -> Config:
    """The typed Config that `python -m minigpt.train <overrides>` would use, without a Hydra run dir.

    For the other entrypoints (prepare, bench), so they take the same presets and overrides.
    """
    from hydra import compose, initialize_config_dir

    from minigpt.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


class ExpandUserDirs(Callback):
    """Expand a leading `~` in Hydra's own output folders, `hydra.run.dir` and `hydra.sweep.dir`.

    They are Hydra's keys, not ours, so `to_config` never sees them, and Hydra would create a folder
    literally named `~` in the current directory. Listed first in conf/config.yaml's callbacks, so
    the run-dir lock and Hydra's own mkdir see the expanded folder.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _expand_hydra_dir(config, "run")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # Each job's config is composed again from the recorded overrides (Hydra's load_sweep_config),
        # so the override itself is rewritten too, not only this composed value.
        if (expanded := _expand_hydra_dir(config, "sweep")) is not None:
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.overrides.hydra = [
                    f"hydra.sweep.dir={_hydra_quote(expanded)}" if o.split("=", 1)[0] == "hydra.sweep.dir" else o
                    for o in config.hydra.overrides.hydra
                ]


def _expand_hydra_dir(config: Any, mode: str) -> Optional[str]:
    """Replace `hydra.<mode>.dir` by its home-expanded value if it starts with `~`; returns that value, else None."""
    try:
        folder = str(config.hydra[mode].dir)
    except Exception:  # noqa: BLE001 - a folder that only resolves later (per job) is left to Hydra
        return None
    if not folder.startswith("~"):
        return None
    expanded = os.path.expanduser(folder)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[mode].dir = expanded
    return expanded


def _hydra_quote(value: str) -> str:
    """`value` as a quoted string in Hydra's override grammar."""
    return f"'{value}'" if "'" not in value else f'"{value}"'
