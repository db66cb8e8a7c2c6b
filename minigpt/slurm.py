"""SLURM submission through Hydra's submitit launcher: checks made once, at submit time.

The `cluster=slurm|grace_a100|faster_a100|aces_h100` presets select `hydra/launcher=submitit_slurm`
and register `SubmitCheck` as a Hydra callback. Before anything is submitted it

- fails with one clear line when a preset needs `cluster.account` and none was given;
- pins `hydra.sweep.dir` to its resolved value. The launcher pickles its config into each job and a
  job requeued at its time limit unpickles it again, possibly days later; the sweep dir must come out
  the same, or the job would start over in a new, empty run directory instead of resuming. Today
  OmegaConf's resolver cache travels in the pickle and keeps `${now:...}` fixed; pinning the plain
  string makes that independent of the cache and of any resolver that is not cached.

Checkpointing at the time limit itself needs nothing here: submitit sends SIGUSR2 before the limit,
`minigpt.resume.Checkpointer` saves at the next step boundary and then hands the signal to submitit,
which requeues the job (`cluster.max_requeues` times at most); the requeued job resumes from the run
directory with `train.resume=auto`.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from minigpt.errors import ConfigError


def check_account(config: DictConfig) -> None:
    if config.cluster.account_required and not config.cluster.account:
        name = config.cluster.name
        raise ConfigError(
            f"cluster={name} needs a SLURM account: add cluster.account=<account> "
            "(on TAMU HPRC, `myproject` lists your project accounts)"
        )


def pin_sweep_dir(config: DictConfig) -> str:
    """Replace hydra.sweep.dir by its resolved value, so every (re)run of a job sees the same one."""
    sweep_dir = str(config.hydra.sweep.dir)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = sweep_dir
    return sweep_dir


class SubmitCheck(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_account(config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)  # not an exception: Hydra turns a callback's exceptions into warnings
        pin_sweep_dir(config)
