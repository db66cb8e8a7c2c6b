"""minigpt's SLURM launcher: hydra-submitit-launcher's, except that a failed job fails in SLURM too.

Hydra's `run_job` keeps a job's exception in the JobReturn it hands back, so with the plain submitit
launcher the job's task exits 0 and SLURM shows a failed run COMPLETED (hydra#1928). This launcher's job
raises the failure instead: submitit stores the error for the submitting side (which fails with it) and
the task exits 1, so `sacct` / `scontrol show job` say FAILED. Its `launch`, on the submitting machine, is
minigpt/slurm_launcher.py's: it skips jobs still in flight, splits arrays over `cluster.max_array_size`,
and with `cluster.wait=false` submits and returns at once (imported there, when a sweep is launched, so
that Hydra's plugin scan, which imports this module in every Hydra app, stays fast). Hydra only instantiates launchers from the
`hydra_plugins` namespace, hence this package beside `minigpt`; conf/cluster/slurm.yaml selects it.
"""

from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs inside the job
        job_return = super().__call__(*args, **kwargs)
        if job_return.status == JobStatus.FAILED:
            raise job_return._return_value  # the exception itself (the public property wraps nothing more)
        return job_return

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from minigpt.slurm_launcher import launch  # runs on the submitting machine

        return launch(self, job_overrides, initial_job_idx)
