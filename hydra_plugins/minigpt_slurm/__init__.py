"""minigpt's SLURM launcher: hydra-submitit-launcher's, except that a failed job fails in SLURM too.

Hydra's `run_job` keeps a job's exception in the JobReturn it hands back, so with the plain submitit
launcher the job's task exits 0 and SLURM shows a failed run COMPLETED (hydra#1928). This launcher's job
raises the failure instead: submitit stores the error for the submitting side (which fails with it) and
the task exits 1, so `sacct` / `scontrol show job` say FAILED. Hydra only instantiates launchers from the
`hydra_plugins` namespace, hence this package beside `minigpt`; conf/cluster/slurm.yaml selects it.
"""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs inside the job
        job_return = super().__call__(*args, **kwargs)
        if job_return.status == JobStatus.FAILED:
            raise job_return._return_value  # the exception itself (the public property wraps nothing more)
        return job_return
