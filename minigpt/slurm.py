"""SLURM submission through Hydra's submitit launcher: checks made once, at submit time.

The `cluster=slurm|grace_a100|faster_a100|aces_h100` presets select `hydra/launcher=submitit_slurm`
and register `SubmitCheck` as a Hydra callback. Before anything is submitted it

- fails with one clear line when a preset needs `cluster.account` and none was given;
- forecasts every job of the submission (minigpt/plan/) and fails with one line per job, and the
  fix, when a job cannot fit in its GPU's memory or cannot finish within `cluster.max_requeues`
  time-limit chunks; it prints the plan's totals and how many jobs have already finished (a rerun's
  finished jobs start, print "skipped" and end at once);
- pins `hydra.sweep.dir` to its resolved value. The launcher pickles its config into each job and a
  job requeued at its time limit unpickles it again, possibly days later; the sweep dir must come out
  the same, or the job would start over in a new, empty run directory instead of resuming. Today
  OmegaConf's resolver cache travels in the pickle and keeps `${now:...}` fixed; pinning the plain
  string makes that independent of the cache and of any resolver that is not cached.

A failed job fails in SLURM too: the presets' launcher is hydra_plugins/minigpt_slurm's, which raises the
job's exception where Hydra's `run_job` would keep it (the task would exit 0, SLURM show COMPLETED).

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
from minigpt.slurm_launcher import check_submission
from minigpt.validate import check_cluster, check_slurm_account


def pin_sweep_dir(config: DictConfig) -> str:
    """Replace hydra.sweep.dir by its resolved value, so every (re)run of a job sees the same one."""
    sweep_dir = str(config.hydra.sweep.dir)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = sweep_dir
    return sweep_dir


def check_plan(config: DictConfig) -> str:
    """Forecast every job of this submission; raise ConfigError for the first that cannot fit or finish.

    Returns a one-line summary (jobs, GPU-hours, cost, jobs already finished).
    """
    from hydra.core.global_hydra import GlobalHydra

    from minigpt.config import to_config
    from minigpt.plan.compose import MAX_JOBS, compose_jobs, count_sweep_jobs, task_config
    from minigpt.plan.forecast import forecast_job
    from minigpt.plan.history import load_history
    from minigpt.rundir import run_state

    loader = GlobalHydra.instance().config_loader()
    job_overrides = count_sweep_jobs(config, loader)[0]
    n_jobs = len(job_overrides)
    if n_jobs > MAX_JOBS:
        return (f"warning: this submits {n_jobs:,} jobs (arrays of at most cluster.max_array_size), too many "
                f"to forecast here; `python -m minigpt.plan ... --max-jobs {n_jobs}` forecasts them")
    jobs = compose_jobs(config, loader, job_overrides)  # the overrides just counted, not parsed again
    history = load_history(["outputs"])
    hours = cost = 0.0
    finished = 0
    for job in jobs:
        cfg = to_config(task_config(job))
        state = run_state(job.run_dir, cfg.train.num_iterations, rerun=cfg.train.rerun)
        finished += state.kind == "finished"
        forecast = forecast_job(cfg, history, remaining=state.remaining(cfg.train.num_iterations))
        if forecast.problems:
            raise ConfigError(f"{job.run_dir.name}: {forecast.problems[0]} (python -m minigpt.plan shows the whole plan)")
        hours += forecast.gpu_hours or 0.0
        cost += forecast.cost or 0.0
    unit = to_config(task_config(jobs[0])).cluster.cost_unit
    return (f"plan: {len(jobs)} job(s), about {hours:.1f} GPU-hours, {cost:.0f} {unit}"
            + (f"; {finished} already finished (they will skip at once)" if finished else ""))


class SubmitCheck(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from minigpt.cli import cli_errors

        summary = []

        @cli_errors  # the one boundary: a missing account or a job that cannot run is one `error:` line, status 2
        def check() -> int:
            check_slurm_account(config.cluster)
            check_cluster(config.cluster)
            check_submission(config)
            summary.append(check_plan(config))
            return 0

        if status := check():
            sys.exit(status)  # not an exception: Hydra turns a callback's exceptions into warnings
        print(summary[0], file=sys.stderr)
        pin_sweep_dir(config)

