"""The one training entrypoint: `python -m minigpt.train arch=swiglu_gqa_rope model=d12 ...`.

Runs locally, under torchrun, or on SLURM through Hydra's submitit launcher (`cluster=...`); the run
directory is Hydra's (`hydra.run.dir`, under outputs/ by default, named by the config's hash so the
same command finds it again: minigpt/rundir.py) and holds metrics.jsonl, checkpoints and the resolved
config in .hydra/. A finished run is skipped, an unfinished one resumed.
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import minigpt.config  # noqa: F401 - registers the typed schema (base_config) with Hydra
from minigpt.config import to_config
from minigpt.multirun import JobFailed, handle_failure

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
