"""The one training entrypoint: `python -m minigpt.train arch=swiglu_gqa_rope model=d12 ...`.

Runs locally, under torchrun, or on SLURM through Hydra's submitit launcher (`cluster=...`); the run
directory is Hydra's (`hydra.run.dir`, under outputs/ by default) and holds metrics.jsonl,
checkpoints and the resolved config in .hydra/.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import minigpt.config  # noqa: F401 - registers the typed schema (base_config) with Hydra
from minigpt.config import to_config
from minigpt.multirun import JobFailed, handle_failure


def run(cfg: DictConfig, run_dir: str) -> dict:
    """Build a Trainer from a composed config and train; returns the final metrics."""
    from minigpt import distributed
    from minigpt.trainer import Trainer  # imported here so --help and config errors stay fast

    try:
        return Trainer(to_config(cfg), run_dir).fit()
    finally:
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
