"""The one training entrypoint: `python -m minigpt.train arch=swiglu_gqa_rope model=d12 ...`.

A run is validate -> set up -> build -> prepare -> fit, each step explicit (minigpt/trainer.py):
`validate()` checks every value right after Hydra composes the config (for a single run already in
the `ValidateConfig` callback, before Hydra creates the run directory), so a bad config touches no
disk, no process group and no network; then the process group, the model, the token cache, the eval
data, and training.

Runs locally, under torchrun, or on SLURM through Hydra's submitit launcher (`cluster=...`); the run
directory is Hydra's (`hydra.run.dir`, under outputs/ by default, named by the config's hash so the
same command finds it again: minigpt/rundir.py) and holds metrics.jsonl, checkpoints and the resolved
config in .hydra/. A finished run is skipped, an unfinished one resumed.
"""

from __future__ import annotations

import copy
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

import minigpt.config  # noqa: F401 - registers the typed schema (base_config) with Hydra
from minigpt.config import to_config
from minigpt.multirun import JobFailed, handle_failure

log = logging.getLogger("minigpt")


def run(cfg: DictConfig, run_dir: str) -> dict:
    """Validate, set up and build a Trainer from a composed config, and train; returns the final metrics
    (a finished run's: skipped)."""
    from minigpt import distributed, run_lock, rundir
    from minigpt.validate import validate

    typed = to_config(cfg)
    world = distributed.detect()  # the launcher's ranks, from the environment: nothing joined yet
    validate(typed, world.world_size)  # pure; a multirun or SLURM job checks its own config here
    decision = rundir.decide(typed, run_dir)  # read-only, on every rank alike
    if decision.message and world.is_main:  # one line, not one per rank
        log.info(decision.message)
    if decision.skip:
        return decision.final
    from minigpt.runtime import pick_device
    from minigpt.trainer import Trainer  # imported here so --help and config errors stay fast

    lock = None
    try:
        dist, device = distributed.setup(pick_device(typed.train.device), typed.cluster.rendezvous_timeout_s)  # joins the group
        trainer = Trainer(typed, run_dir, dist=dist, device=device)  # builds; writes nothing
        trainer.prepare_data()  # tokens into the cache (each node's local rank 0 first)
        trainer.load_eval_data()  # e.g. HellaSwag: the cached file, or a verified download
        lock = run_lock.acquire_for_ranks(run_dir, trainer.dist)  # the lock fit() takes (re-entrant), held from here
        rundir.claim(typed, run_dir, trainer.dist.is_main)  # train.rerun moves the old run aside; run_config.yaml
        distributed.barrier()
        return trainer.fit()
    except RuntimeError as exc:  # a collective failed in set-up: if a peer is gone, one line naming it
        lost = distributed.lost_peer(exc)
        if lost is None:
            raise
        raise lost from None
    finally:
        run_lock.release(lock)
        distributed.shutdown()  # leave the process group (torchrun / srun ranks) cleanly


FINISHED_READ_ONLY = -1  # check()'s status for a finished run on read-only storage: said so, exit 0


class ValidateConfig(Callback):
    """A single run's config is validated here, before Hydra creates `hydra.run.dir` and its train.log
    (listed before the run-dir lock in conf/config.yaml): a bad config leaves the disk as it was, and so
    does a config that differs from the run already recorded in that directory (before Hydra rewrites
    its `.hydra/`)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from pathlib import Path

        from minigpt import distributed
        from minigpt.cli import cli_errors
        from minigpt.rundir import check_run_config, read_only_stop
        from minigpt.validate import validate

        job = copy.deepcopy(config)  # what main() receives: the config without Hydra's node (as Hydra's run_job)
        with read_write(job), open_dict(job):
            del job["hydra"]

        @cli_errors  # the same boundary as every other command: one `error:` line, status 2
        def check() -> int:
            typed = to_config(job)
            validate(typed, distributed.detect().world_size)
            run_dir = Path(str(config.hydra.run.dir))
            check_run_config(typed, run_dir)  # run() says an extension's line in train.log
            finished = read_only_stop(typed, run_dir)  # before Hydra's train.log and .hydra/ fail to be written
            if finished:
                print(finished)
                return FINISHED_READ_ONLY
            return 0

        status = check()
        if status:  # not an exception: Hydra turns a callback's exceptions into warnings
            sys.exit(0 if status == FINISHED_READ_ONLY else status)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """A multirun into a sweep dir that exists (a rerun, or a forced `hydra.sweep.subdir`): each job whose run
        dir records a run is compared with it here, before any job starts and Hydra rewrites that job's `.hydra/`.
        A fresh sweep dir holds no run, so a first submission pays nothing; search sweepers (Optuna) pick their
        trials as they run, so each of their jobs checks its own dir when it starts (minigpt/rundir.py)."""
        from pathlib import Path

        from minigpt.cli import cli_errors

        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001 - a sweep dir that only resolves per job: each job checks its own
            return
        if not sweep_dir.is_dir():
            return
        status = cli_errors(check_sweep_run_dirs)(config)
        if status:  # not an exception: Hydra turns a callback's exceptions into warnings
            sys.exit(status)


def check_sweep_run_dirs(config: DictConfig) -> int:
    """Raise RunDirTaken for the jobs of this multirun whose run dir holds a run of other settings."""
    from hydra.core.global_hydra import GlobalHydra

    from minigpt.errors import ConfigError
    from minigpt.plan.compose import MAX_JOBS, compose_jobs, count_sweep_jobs, task_config
    from minigpt.rundir import RUN_CONFIG_FILE, RunDirTaken, check_run_config

    loader = GlobalHydra.instance().config_loader()
    job_overrides, search_note = count_sweep_jobs(config, loader)
    if search_note or len(job_overrides) > MAX_JOBS:
        return 0
    taken = []
    for job in compose_jobs(config, loader, job_overrides):  # the overrides just counted, not parsed again
        if not (job.run_dir / RUN_CONFIG_FILE).exists():
            continue
        try:
            check_run_config(to_config(task_config(job)), job.run_dir)
        except RunDirTaken as exc:
            taken.append(str(exc))
        except ConfigError:
            continue  # a job with a bad config fails on its own, as any multirun job does; the others still run
    if taken:
        more = f" (and {len(taken) - 1} more job(s) of this sweep)" if len(taken) > 1 else ""
        # a sweep's jobs get their dirs from hydra.sweep.dir, not the single run's hydra.run.dir
        raise RunDirTaken(taken[0].replace("another hydra.run.dir", "another hydra.sweep.dir") + more)
    return 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | float | JobFailed:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        final = run(cfg, run_dir)
    except Exception as exc:  # recorded in run_summary.json; a local multirun goes on with its other jobs
        return handle_failure(exc, run_dir)
    # A search sweeper (Optuna) minimises what the job returns: one number, named by train.objective
    # (checked against the metrics the run logs before training starts).
    objective = cfg.train.objective
    return final if objective is None else float(final[objective])


if __name__ == "__main__":
    main()
