"""minigpt's SLURM launcher: Hydra's submitit launcher, which can submit and go (`cluster.wait=false`).

Hydra instantiates launchers only from the `hydra_plugins` namespace, so the class lives here; the
SLURM presets (conf/cluster/slurm.yaml) name it as `hydra.launcher._target_`. Its jobs are the parent's
(`__call__` and `checkpoint` unchanged: a job requeued at its time limit resumes as before); only
`launch`, which runs on the submitting machine, differs: see minigpt/slurm_launcher.py. The import
there is deferred so that Hydra's plugin scan, which imports this module in every Hydra app, stays fast.
"""

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class MinigptSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from minigpt.slurm_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
