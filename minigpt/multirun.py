"""How a failed job ends, and the summary that ends a `--multirun` sweep.

Hydra's basic launcher runs a sweep's jobs one after another in this process. An exception escaping a
job only surfaces after the whole batch (Hydra then raises the first one, with no word on the other
jobs), and a `sys.exit` stops the sweep at once: the outcome would depend on the failing job's place
in the sweep. So a job that fails in a local multirun records its failure (status `failed` and the
message in its run_summary.json), logs it, and *returns* `JobFailed` instead of raising; the other jobs
run, and `SweepSummary` (a Hydra callback, see conf/config.yaml) prints the ok / failed jobs when the
sweep ends and exits 1 if any failed. A search sweeper (Optuna) cannot read `JobFailed` as a number, so
it marks that trial failed and the study goes on.

A single run keeps the plain behaviour (a config error: one `error:` line and exit 2; a run failure
the user can fix, e.g. divergence: one line and exit 1; a bug: the traceback), and so does a job on
SLURM, where the exception tells submitit the job failed.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from minigpt.errors import ConfigError, RunFailure
from minigpt.run_lock import RunDirBusy
from minigpt.run_record import error_text, record_failure

log = logging.getLogger("minigpt")


@dataclass(frozen=True)
class JobFailed:
    """What a failed job of a local multirun returns in place of its result."""

    error: str

    def __str__(self) -> str:
        return f"job failed: {self.error}"


def handle_failure(exc: Exception, run_dir: str) -> JobFailed:
    """Record and report a failed job (call it from the `except` block). Returns JobFailed in a local
    multirun; otherwise exits after one `error:` line for a cause the user can fix (2: a bad config,
    1: a run failure such as divergence or a full disk) or re-raises a bug, for its traceback."""
    user_facing = isinstance(exc, (ConfigError, RunFailure))
    if isinstance(exc, RunDirBusy):  # another process owns the run dir and its train.log: write nothing there
        print(f"error: {exc}", file=sys.stderr)
    else:
        from minigpt.distributed import detect

        record_failure(run_dir, exc, is_main=detect().is_main)
        if user_facing:
            log.error(f"error: {exc}")
    if "SUBMITIT_FOLDER" in os.environ:  # a job of Hydra's submitit launcher: submitit reports the exception
        raise exc
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        if user_facing:
            sys.exit(2 if isinstance(exc, ConfigError) else 1)
        raise exc  # Hydra prints the traceback
    if not user_facing:  # a bug: the traceback goes to the console and the job's train.log
        log.error(f"job failed, the sweep goes on: {error_text(exc)}", exc_info=exc)
    return JobFailed(error_text(exc))


class SweepSummary(Callback):
    """Counts the jobs of a multirun that run in this process; at the end, one line per job and the
    totals, then exit 1 if any job failed. Jobs run elsewhere (SLURM) are not seen, so nothing is printed."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, list[str], str | None]] = []  # (run dir name, overrides, error or None)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        value = job_return._return_value  # the property would raise for a failed job
        if job_return.status == JobStatus.FAILED:
            error = error_text(value)
        else:
            error = value.error if isinstance(value, JobFailed) else None
        name = os.path.basename(str(config.hydra.runtime.output_dir))
        self.jobs.append((name, list(job_return.overrides or []), error))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.jobs:
            return
        failed = [job for job in self.jobs if job[2] is not None]
        common = set.intersection(*(set(overrides) for _, overrides, _ in self.jobs))
        print(f"sweep {config.hydra.sweep.dir}: {len(self.jobs)} jobs, {len(self.jobs) - len(failed)} ok, "
              f"{len(failed)} failed")
        for name, overrides, error in self.jobs:
            varied = " ".join(o for o in overrides if o not in common)
            print(f"  {'failed' if error else 'ok':6s}  {name}" + (f" [{varied}]" if varied else "")
                  + (f": {error}" if error else ""))
        sys.stdout.flush()
        if failed:
            sys.exit(1)  # not an exception: Hydra turns a callback's exceptions into warnings
