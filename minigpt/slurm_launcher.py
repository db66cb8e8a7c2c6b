"""Submitting a sweep to SLURM: skip what is in flight, split big arrays, and optionally do not wait.

`hydra_plugins/minigpt_slurm` (the launcher the SLURM presets name) hands its `launch` to `launch()`
here, which does what Hydra's submitit launcher does (one executor, `map_array`: one job array), and:

- composes every job as the job will (minigpt/plan/compose.py) to know its run directory, and skips a
  job whose run directory records a SLURM job (`slurm_job.json`, minigpt/slurm_jobs.py) that `squeue`
  still shows queued or running: rerunning a command never submits a run twice; it prints which are in
  flight. A finished run is submitted as before, and skips at once on its node;
- splits a sweep of more than `cluster.max_array_size` jobs (the cluster's MaxArraySize) into several
  arrays of at most that many; `cluster.array_parallelism` caps the running jobs of each array;
- records each submitted job's id in its run directory and prints it with the run directory;
- with `cluster.wait=true` (the default) waits for the results as Hydra's launcher does; with
  `cluster.wait=false` returns at once, printing the command that shows the jobs' progress. The jobs
  need nothing from this process: they checkpoint, requeue and resume on their own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from minigpt.errors import ConfigError
from minigpt.slurm_jobs import in_flight, queue_states, record_job


def check_submission(config: Any) -> None:
    """The submit-and-go and array settings, checked before anything is submitted (minigpt/slurm.py)."""
    cluster = config.cluster
    if cluster.max_array_size < 1:
        raise ConfigError(f"cluster.max_array_size={cluster.max_array_size} must be at least 1: set it to the "
                          "cluster's MaxArraySize (`scontrol show config | grep MaxArraySize`)")
    if cluster.array_parallelism < 1:
        raise ConfigError(f"cluster.array_parallelism={cluster.array_parallelism} must be at least 1 (jobs of an "
                          "array that may run at once)")
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if not cluster.wait and not sweeper.endswith("BasicSweeper"):
        raise ConfigError(f"cluster.wait=false needs the jobs' results up front, but {sweeper.rsplit('.', 1)[-1]} "
                          "picks its next trials from them: drop cluster.wait=false for a search sweep")


def make_executor(launcher: Any) -> Any:
    """The executor Hydra's submitit launcher builds in its `launch` (same keys, same renaming)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster=launcher._EXECUTOR,
                                     **{f"{launcher._EXECUTOR}_max_num_timeout": params["max_num_timeout"]})
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"{launcher._EXECUTOR}_{k}": v
                                  for k, v in params.items() if k not in init_keys})
    return executor


def _done(overrides: Sequence[str]) -> JobReturn:
    """What launch() returns for a job it does not wait for: its result is in its run directory."""
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    from minigpt.plan.compose import compose_jobs

    config, cluster = launcher.config, launcher.config.cluster
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    jobs = compose_jobs(config, launcher.hydra_context.config_loader, job_overrides, initial_job_idx)
    states = queue_states()
    if states is None:
        print("warning: squeue did not answer: jobs still in flight from an earlier submission cannot be "
              "told apart and are submitted again (each run directory admits one process at a time)")
    flying = {job.num: in_flight(job.run_dir, states) for job in jobs}
    for job in jobs:
        if flying[job.num]:
            job_id, state = flying[job.num]
            print(f"in flight, not submitted again: job {job_id} ({state.lower()})  {job.run_dir}")
    todo = [job for job in jobs if not flying[job.num]]
    if not todo:
        print(f"nothing submitted: all {len(jobs)} job(s) are in flight; follow them: python -m minigpt.status {sweep_dir}")
        return [_done(o) for o in job_overrides]

    executor = make_executor(launcher)
    folder = str(launcher.params["submitit_folder"])
    size = cluster.max_array_size
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    submitted = {}
    for chunk in chunks:
        for job in chunk:
            print(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}")
        args = [(job.overrides, "hydra.sweep.dir", job.num, f"job_id_for_{job.num}", Singleton.get_state())
                for job in chunk]
        for job, slurm_job in zip(chunk, executor.map_array(launcher, *zip(*args))):
            record_job(job.run_dir, str(slurm_job.job_id), folder, list(filter_overrides(job.overrides)))
            submitted[job.num] = slurm_job
    arrays = f"{len(chunks)} arrays of at most {size} (cluster.max_array_size)" if len(chunks) > 1 else "one array"
    print(f"submitted {len(todo)} job(s) as {arrays}:")
    for job in todo:
        print(f"  job {submitted[job.num].job_id}  {job.run_dir}")
    sys.stdout.flush()
    if not cluster.wait:
        print(f"not waiting (cluster.wait=false): the jobs requeue and resume on their own; "
              f"follow them: python -m minigpt.status {sweep_dir}")
        return [_done(o) for o in job_overrides]
    return [submitted[job.num].results()[0] if job.num in submitted else _done(job.overrides) for job in jobs]
