"""The jobs `python -m minigpt.train <args>` would run, composed the same way, without running anything.

Hydra's own pieces do the work, in the order `hydra.main` uses them: the search path of
minigpt/train.py (`../conf`, plus `--config-dir`), the run mode (`-m`, or `hydra.mode` set by a
SLURM preset), the sweep config, the sweeper's expansion of `hydra.sweeper.params` and command-line
lists into jobs (BasicSweeper.split_arguments), and each job's config from
`config_loader.load_sweep_config`, as the basic and submitit launchers build it. A search sweeper
(Optuna) picks its trials' values while it runs, so its `n_trials` jobs are forecast at the base config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from minigpt.config import Config, register_configs
from minigpt.errors import ConfigError
from minigpt.run_identity import register_resolvers

TRAIN_ENTRYPOINT = Path(__file__).resolve().parents[1] / "train.py"
MAX_JOBS = 1000


@dataclass
class Job:
    num: int
    overrides: list[str]  # this job's own overrides (the sweep's axes included)
    config: DictConfig  # the job's full config, hydra node included
    run_dir: Path  # as Hydra will name it (relative to the working directory unless absolute)


@dataclass
class Plan:
    jobs: list[Job]
    sweep_config: DictConfig | None  # the multirun config (hydra.launcher...), None for a single run
    note: str = ""


def _job_dir(config: DictConfig, multirun: bool) -> Path:
    HydraConfig.instance().set_config(config)  # `${hydra:...}` interpolations resolve as in the job
    if multirun:
        return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    return Path(str(config.hydra.run.dir))


def count_sweep_jobs(sweep_config: DictConfig, config_loader: Any) -> tuple[list[list[str]], str]:
    """Each job's overrides, in launch order (without composing them), and a note for search sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    task_overrides = list(OmegaConf.to_container(sweep_config.hydra.overrides.task, resolve=False))
    target = str(sweep_config.hydra.sweeper.get("_target_", ""))
    parser = OverridesParser.create(config_loader=config_loader)
    if target.endswith("BasicSweeper"):
        params = [f"{k}={v}" for k, v in (sweep_config.hydra.sweeper.params or {}).items()]
        batches = BasicSweeper.split_arguments(parser.parse_overrides(params + task_overrides), None)
        return [list(job) for batch in batches for job in batch], ""
    n_trials = int(sweep_config.hydra.sweeper.get("n_trials", 1))
    fixed = [o.input_line for o in parser.parse_overrides(task_overrides) if not o.is_sweep_override()]
    searched = ", ".join(str(k) for k in (sweep_config.hydra.sweeper.get("params") or {}))
    note = f"{target.rsplit('.', 1)[-1]} picks each trial's values as it runs: {n_trials} trials forecast at the base config" + (
        f" (searching {searched})" if searched else "")
    return [fixed] * n_trials, note


def expand_sweep(sweep_config: DictConfig, config_loader: Any, max_jobs: int = MAX_JOBS) -> Plan:
    """The jobs of a multirun, each composed as its launcher composes it."""
    job_overrides, note = count_sweep_jobs(sweep_config, config_loader)
    if len(job_overrides) > max_jobs:
        raise ConfigError(f"this sweep expands to {len(job_overrides):,} jobs (more than {max_jobs:,}): "
                          f"narrow the sweep's lists, or pass --max-jobs {len(job_overrides)} to plan it anyway")
    return Plan(compose_jobs(sweep_config, config_loader, job_overrides), sweep_config, note)


def compose_jobs(sweep_config: DictConfig, config_loader: Any, job_overrides: Any, first_num: int = 0) -> list[Job]:
    """Each job of these overrides composed as its launcher composes it (numbered from `first_num`)."""
    jobs = []
    hydra_config, saved = HydraConfig.instance(), HydraConfig.instance().cfg
    try:
        for num, overrides in enumerate(job_overrides, first_num):
            config = config_loader.load_sweep_config(sweep_config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = num
                config.hydra.job.num = num
            jobs.append(Job(num, list(overrides), config, _job_dir(config, multirun=True)))
    finally:
        hydra_config.cfg = saved  # inside a Hydra run (the SLURM submit check, the launcher), leave its HydraConfig as it was
    return jobs


def compose_command(overrides: list[str], *, multirun: bool = False, config_name: str | None = None,
                    config_dir: str | None = None, max_jobs: int = MAX_JOBS) -> Plan:
    """The jobs of `python -m minigpt.train [-m] [--config-dir D] [--config-name N] <overrides>`."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, detect_task_name
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.config_search_path import SearchPathQuery

    search_path = create_automatic_config_search_path(str(TRAIN_ENTRYPOINT), None, "../conf")
    if config_dir is not None:
        abs_dir = Path(config_dir).resolve()
        if not abs_dir.is_dir():
            raise ConfigError(f"--config-dir {config_dir}: no such directory")
        search_path.prepend(provider="command-line", path=f"file://{abs_dir}", anchor=SearchPathQuery(provider="schema"))
    config_name = config_name or "config"
    overrides = list(overrides)
    register_configs()  # the schema (base_config) and the run-dir resolvers the configs name, said here, not
    register_resolvers(Config)  # left to an import's side effect (both idempotent)
    hydra = Hydra.create_main_hydra2(task_name=detect_task_name(str(TRAIN_ENTRYPOINT), None), config_search_path=search_path)
    saved_hydra_config = HydraConfig.instance().cfg  # _job_dir sets it; leave it as it was (a caller's run)
    try:
        mode = hydra.get_mode(config_name=config_name, overrides=overrides)
        if mode is None or (multirun and mode == RunMode.RUN):
            mode = RunMode.MULTIRUN if multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        config = hydra.compose_config(config_name=config_name, overrides=overrides, run_mode=mode,
                                      with_log_configuration=False)
        if mode == RunMode.RUN:
            with open_dict(config):
                config.hydra.job.num = 0
            return Plan([Job(0, overrides, config, _job_dir(config, multirun=False))], None)
        return expand_sweep(config, hydra.config_loader, max_jobs)
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = saved_hydra_config


def task_config(job: Job) -> DictConfig:
    """The job's config as its task function receives it: without the hydra node (as hydra's run_job makes it)."""
    task = copy.deepcopy(job.config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task
