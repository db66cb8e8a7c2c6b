"""The sbatch script the submitit launcher would submit for a sweep, rendered by submitit itself, not submitted.

Hydra's submitit launcher (hydra_plugins.hydra_submitit_launcher) passes `hydra.launcher.*` to
`submitit.AutoExecutor`, which renames the generic keys (timeout_min -> time, mem_gb -> mem, ...) for
SLURM and renders the script with `submitit.slurm.slurm._make_sbatch_string`; a sweep of n jobs is one
array (`--array=0-(n-1)%parallelism`). The same translation is done here without an executor, since
creating a SlurmExecutor needs `srun` on this machine.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def submits_with_submitit(sweep_config: DictConfig) -> bool:
    """Whether the launcher is Hydra's submitit launcher or a subclass (minigpt's, which the SLURM presets name):
    their configs all extend the plugin's BaseQueueConf, which holds `submitit_folder`. (Not issubclass: Hydra's
    plugin scan may load the plugin's module a second time, with classes of their own.)"""
    return "submitit_folder" in (sweep_config.hydra.get("launcher") or {})


def render_sbatch(sweep_config: DictConfig, n_jobs: int) -> str:
    """The script `sbatch` would receive for this multirun config's job array."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

    launcher = OmegaConf.to_container(sweep_config.hydra.launcher, resolve=True)
    launcher.pop("_target_", None)
    folder = Path(str(launcher.pop("submitit_folder"))).expanduser().absolute()
    launcher.pop("max_num_timeout", None)  # an executor setting (requeues), not an sbatch flag
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    renamed = SlurmExecutor._equivalence_dict()
    params = {(renamed.get(k, k) if k in generic else k): v for k, v in launcher.items() if v is not None}
    if "mem" in params:
        params["mem"] = _convert_mem(params["mem"])
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=n_jobs if n_jobs > 1 else None, **params)
