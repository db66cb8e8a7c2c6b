"""The one training entrypoint: `python -m minigpt.train arch=swiglu_gqa_rope model=d12 ...`.

Runs locally, under torchrun, or on SLURM through Hydra's submitit launcher (`cluster=...`); the run
directory is Hydra's (`hydra.run.dir`, under outputs/ by default, named by the config's hash so the
same command finds it again: minigpt/rundir.py) and holds metrics.jsonl, checkpoints and the resolved
config in .hydra/. A finished run is skipped, an unfinished one resumed.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import minigpt.config  # noqa: F401 - registers the typed schema (base_config) with Hydra
from minigpt.config import to_config
from minigpt.errors import ConfigError, RunFailure
from minigpt.run_lock import RunDirBusy

log = logging.getLogger("minigpt")


def run(cfg: DictConfig, run_dir: str) -> dict:
    """Build a Trainer from a composed config and train; returns the final metrics (a finished run's: skipped)."""
    from minigpt import distributed, run_lock, rundir
    from minigpt.trainer import Trainer  # imported here so --help and config errors stay fast

    typed = to_config(cfg)
    decision = rundir.decide(typed, run_dir)  # read-only, on every rank alike
    if decision.message and distributed.detect().is_main:  # one line, not one per rank
        log.info(decision.message)
    if decision.skip:
        return decision.final
    lock = None
    try:
        trainer = Trainer(typed, run_dir)
        lock = run_lock.acquire_for_ranks(run_dir, trainer.dist)  # the lock fit() takes (re-entrant), held from here
        rundir.claim(typed, run_dir, trainer.dist.is_main)  # train.rerun moves the old run aside; run_config.yaml
        distributed.barrier()
        return trainer.fit()
    finally:
        run_lock.release(lock)
        distributed.shutdown()  # leave the process group (torchrun / srun ranks) cleanly


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | float:
    try:
        final = run(cfg, HydraConfig.get().runtime.output_dir)
        # A search sweeper (Optuna) minimises what the job returns: one number, named by train.objective.
        objective = cfg.train.objective
        if objective is None:
            return final
        if objective not in final:
            raise ConfigError(f"train.objective={objective} is not a final metric: choose one of {sorted(final)}")
        return float(final[objective])
    except (ConfigError, RunFailure) as exc:
        if isinstance(exc, RunDirBusy):  # another process owns the run dir (and its train.log): write nothing there
            print(f"error: {exc}", file=sys.stderr)
        else:
            log.error(f"error: {exc}")
        if "SUBMITIT_FOLDER" in os.environ:  # a SLURM job: fail it so submitit reports the error to the submitter
            raise
        sys.exit(2 if isinstance(exc, ConfigError) else 1)  # 2: bad input, fixed before starting; 1: the run failed


if __name__ == "__main__":
    main()
