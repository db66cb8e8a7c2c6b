"""Which SLURM job trains which run directory, and what SLURM says about it now.

At submission the launcher (minigpt/slurm_launcher.py) writes `<run dir>/slurm_job.json` with the job's id
(`<array id>_<index>`), before the job exists on a node: a queued job has no other trace in its run
directory. A resubmission of the same command reads it back and asks `squeue` whether that job is still
queued or running (a requeued job keeps its id), so it never submits the same run twice;
`python -m minigpt.status` reads it to show queued jobs and SLURM's word on the running ones.

Only `squeue` is asked (no network, no accounting needed); where it is missing or fails, callers get
None and fall back to what the run directory says.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from minigpt.atomic import write_text_atomic

JOB_FILE = "slurm_job.json"
# squeue states of a job that is over (squeue keeps finished jobs for MinJobAge seconds); any other is in flight.
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}


def record_job(run_dir: str | os.PathLike, job_id: str, submitit_folder: str, overrides: list[str]) -> None:
    """Say, in the run directory, which SLURM job will train it (written before the job can start), and with
    which overrides (what `minigpt.status` labels a queued job by: Hydra writes .hydra/ only when it starts)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"job_id": job_id, "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "submitit_folder": submitit_folder, "overrides": list(overrides)}
    write_text_atomic(run_dir / JOB_FILE, json.dumps(data, indent=1))


def recorded_job(run_dir: str | os.PathLike) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("job_id") else None


def queue_states(timeout_s: float = 30.0) -> dict[str, tuple[str, str]] | None:
    """job id -> (state, reason) for this user's jobs, one line per array element; None if squeue cannot answer."""
    if shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    states = {}
    for line in res.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id:
            states[job_id] = (state, reason if reason not in ("None", "(null)") else "")
    return states


def accounting_states(job_ids: list[str], timeout_s: float = 30.0) -> dict[str, str]:
    """job id -> final state from SLURM's accounting (`sacct`), for jobs squeue no longer shows; {} without it."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        res = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if res.returncode != 0:  # accounting disabled (no slurmdbd): squeue and the run directory must do
        return {}
    pairs = (line.split("|", 1) for line in res.stdout.splitlines() if "|" in line)
    return {job_id: state.split()[0] for job_id, state in pairs if state.strip()}


def in_flight(run_dir: str | os.PathLike, states: dict[str, tuple[str, str]] | None) -> tuple[str, str] | None:
    """(job id, squeue state) when the job recorded in `run_dir` is still queued or running; None otherwise."""
    job = recorded_job(run_dir)
    if job is None or states is None:
        return None
    state = states.get(str(job["job_id"]), ("", ""))[0]
    return (str(job["job_id"]), state) if state and state not in ENDED else None
