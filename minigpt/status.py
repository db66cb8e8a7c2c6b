"""`python -m minigpt.status <sweep dir | run dirs> [--watch]`: where every job of a sweep stands.

One row per job: the swept values (or the run's arch and model), its SLURM job id, its state (queued,
running, requeued k times, finished, failed with its one-line cause, diverged, interrupted), step of total
with a progress bar, the last train and validation loss, tokens/s, the time left, and GPU-hours so far and
forecast; then a totals line. It works for local multiruns, SLURM arrays and single runs alike.

It reads files only: each run directory through minigpt/compare/local_runs.py (metrics.jsonl,
run_summary.json, .hydra/), plus `slurm_job.json`, which the SLURM launcher writes at submission
(minigpt/slurm_jobs.py): a queued job has nothing else yet. Where SLURM answers, `squeue` says which jobs
are queued or running now, and `sacct` (if accounting is on) how a job that left the queue ended.
The time left is the remaining steps times the median of the last logged step times (train/ms_per_step).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from minigpt.cli import cli_errors
from minigpt.compare.local_runs import STALE_S, Run, find_run_dirs, load_run
from minigpt.errors import ConfigError
from minigpt.run_record import SUMMARY_FILE
from minigpt.slurm_jobs import ENDED, JOB_FILE, accounting_states, queue_states, recorded_job

RECENT_ROWS = 20  # the step times an ETA is taken from
BAR = 12
ACTIVE = ("queued", "running")  # states of a job that is not over


@dataclass
class Row:
    run_dir: Path
    label: str
    job_id: str
    state: str  # queued | running | finished | failed | diverged | interrupted
    detail: str  # the cause of a failure, SLURM's reason for a queued job, requeues
    step: int
    total: int
    train_loss: float | None
    val_loss: float | None
    tokens_per_s: float | None
    eta_s: float | None
    gpu_hours: float
    gpu_hours_forecast: float | None
    arch_model: str = ""  # "arch=<name> model=<name>": a lone run's label


def _short(text: str, width: int = 90) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= width else line[:width - 3] + "..."


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress(step: int, total: int) -> str:
    filled = min(BAR, round(BAR * step / total)) if total else 0
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {step}/{total or '?'}"


def step_seconds(run: Run) -> float | None:
    """Median seconds per step over the last logged rows (each row's time is the mean since the row before)."""
    times = [ms for _, ms in run.series("train/ms_per_step")[-RECENT_ROWS:]]
    return statistics.median(times) / 1000 if times else None


# ------------------------------------------------------------------------------------------- finding runs


def find_jobs(path: Path) -> list[Path]:
    """Run directories under `path` (or `path` itself), including queued ones that hold only slurm_job.json."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist: pass a sweep directory or run directories")
    queued = [path] if (path / JOB_FILE).is_file() else sorted(
        d.parent for d in path.rglob(JOB_FILE) if not any(p.startswith("replaced_") for p in d.relative_to(path).parts))
    try:
        found = find_run_dirs([path])
    except ConfigError:
        if not queued:
            raise ConfigError(f"no runs under {path} (no metrics.jsonl, .hydra/config.yaml or {JOB_FILE}): pass a "
                              "sweep directory (e.g. outputs/multirun) or run directories") from None
        found = []
    return list(dict.fromkeys([*found, *(d for d in queued if d not in found)]))


# ------------------------------------------------------------------------------------------------- state


def job_state(run: Run, job: dict | None, queue: dict | None, accounting: dict) -> tuple[str, str]:
    """(state, detail) from SLURM's word where it has one, else from the run directory."""
    summary = run.summary
    job_id = str(job["job_id"]) if job else ""
    squeue_state, reason = (queue or {}).get(job_id, ("", ""))
    in_queue = bool(squeue_state) and squeue_state not in ENDED
    # Every segment that trained recorded itself; between segments (requeued, not yet training again) the
    # summary says interrupted, and the segment that will resume is not counted yet.
    segments = int(summary.get("segments") or 0)
    requeues = (segments if in_queue and summary.get("status") != "running" else max(segments - 1, 0)) if job else 0
    again = f"requeued {requeues}x" if requeues else ""
    if in_queue:
        if squeue_state == "PENDING":
            return "queued", ", ".join(x for x in (again, reason) if x)
        return ("running", again) if squeue_state in ("RUNNING", "COMPLETING", "CONFIGURING") else (
            squeue_state.lower(), again)
    ended = squeue_state or accounting.get(job_id, "")
    if not summary and not run.rows and job:  # submitted, never started training
        if queue is None and not ended:
            return "queued", "squeue unavailable: submitted, not started"
        return "failed", f"left the queue before training ({ended.lower() or 'sacct -j ' + job_id + ' says why'})"
    if run.status == "running" and job and queue is not None and summary.get("host") != socket.gethostname():
        return "failed", f"SLURM {ended.lower() or 'no longer runs it'} (killed?) at step {last_step(run)}"
    if run.status in ("failed", "diverged"):
        return run.status, _short(run.note) or ended.lower()
    if run.status == "running" and summary.get("host") != socket.gethostname():  # no process to look at from here
        age = time.time() - _timestamp(summary.get("updated_at"))
        if age > STALE_S:  # the summary is rewritten about once a minute while a run trains
            return "running", ", ".join(x for x in (again, f"no word for {duration(age)}: ended without saying?") if x)
    return run.status, again


def _timestamp(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return time.time()


def last_step(run: Run) -> int:
    steps = [int(r.get("step", 0)) for r in run.rows]
    return max([int(run.summary.get("step") or 0), *steps])


def make_row(run_dir: Path, queue: dict | None, accounting: dict) -> tuple[Row, str]:
    """The job's row, and a warning line ("" if none) for what could not be read."""
    run, job = load_run(run_dir), recorded_job(run_dir)
    warning = ""
    if (run_dir / SUMMARY_FILE).exists() and not run.summary:
        warning = (f"warning: {run_dir / SUMMARY_FILE} cannot be read (half-written?): its row shows what "
                   "metrics.jsonl says")
    state, detail = job_state(run, job, queue, accounting)
    summary = run.summary
    total = int(summary.get("num_iterations") or run.cfg("train.num_iterations") or 0)
    step = last_step(run)
    rate = summary.get("tokens_per_s") or run.last("train/tokens_per_s")
    per_step = step_seconds(run)
    eta = max(total - step, 0) * per_step if state == "running" and per_step is not None and total else None
    so_far = float(summary.get("gpu_hours") or 0.0)
    forecast = (summary.get("forecast") or {}).get("gpu_hours")
    if forecast is None and so_far and step and total:
        forecast = so_far * total / step  # extrapolated from this run's own pace
    overrides = run.overrides or list((job or {}).get("overrides") or [])
    label = " ".join(overrides) if overrides else run_dir.name
    arch, model = summary.get("arch") or run.cfg("arch.name"), summary.get("model") or run.cfg("model.name")
    return Row(run_dir, label, str(job["job_id"]) if job else "-", state, detail, step, total, run.last("train/loss"),
               run.last("val/loss"), rate, eta, so_far, forecast,
               f"arch={arch} model={model}" if arch and model else ""), warning


def drop_common(rows: list[Row]) -> None:
    """Label each row by what differs between the jobs (the swept values); a lone run keeps its arch and model."""
    if len(rows) < 2:
        for row in rows:
            row.label = row.arch_model or row.run_dir.name
        return
    split = [row.label.split() for row in rows]
    common = set.intersection(*(set(s) for s in split))
    for row, words in zip(rows, split):
        row.label = " ".join(w for w in words if w not in common) or row.run_dir.name


# ------------------------------------------------------------------------------------------------- table


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(rows: list[Row]) -> str:
    head = ["job", "slurm id", "state", "progress", "train", "val", "tok/s", "ETA", "GPU-h", "forecast"]
    cells = [[r.label, r.job_id, r.state + (f" ({r.detail})" if r.detail else ""), progress(r.step, r.total),
              _num(r.train_loss, ".3f"), _num(r.val_loss, ".3f"), _num(r.tokens_per_s, ",.0f"), duration(r.eta_s),
              f"{r.gpu_hours:.2f}", _num(r.gpu_hours_forecast, ".2f")] for r in rows]
    widths = [max(len(row[i]) for row in [head, *cells]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *cells]]
    return "\n".join(lines + [totals(rows)])


def totals(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    so_far = sum(r.gpu_hours for r in rows)
    forecasts = [r.gpu_hours_forecast for r in rows if r.gpu_hours_forecast is not None]
    etas = [r.eta_s for r in rows if r.eta_s is not None]
    parts = [f"{len(rows)} job(s): " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
             f"GPU-hours {so_far:.2f} so far" + (f", {sum(forecasts):.2f} forecast ({len(forecasts)} of {len(rows)} "
                                                 "jobs forecast)" if forecasts else "")]
    if etas:
        parts.append(f"the last running job ends in {duration(max(etas))}")
    return "total: " + "; ".join(parts)


def collect(paths: list[str]) -> tuple[list[Row], list[str]]:
    """The rows of every job under `paths`, and one line for each input that could not be read."""
    problems, run_dirs = [], []
    for path in paths:
        try:
            run_dirs += [d for d in find_jobs(Path(path)) if d not in run_dirs]
        except ConfigError as exc:
            problems.append(f"error: {exc}")
    queue = queue_states() if any((d / JOB_FILE).is_file() for d in run_dirs) else None
    gone = [str(j["job_id"]) for j in map(recorded_job, run_dirs) if j and str(j["job_id"]) not in (queue or {})]
    accounting = accounting_states(gone) if queue is not None else {}
    rows = []
    for d in run_dirs:
        row, warning = make_row(d, queue, accounting)
        rows.append(row)
        if warning:
            problems.append(warning)
    drop_common(rows)
    return rows, problems


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.status", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="a sweep directory (e.g. outputs/multirun) or run directories")
    parser.add_argument("--watch", action="store_true", help="redraw until no job is queued or running")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between redraws with --watch (30)")
    args = parser.parse_args(argv)
    if args.every <= 0:
        raise ConfigError(f"--every {args.every} must be positive (seconds between redraws)")
    while True:
        rows, problems = collect(args.paths)
        if args.watch and sys.stdout.isatty():
            print("\033[H\033[J", end="")  # redraw in place
        if rows:
            print(render(rows))
        for line in problems:
            print(line, file=sys.stderr)
        sys.stdout.flush()
        if not rows:
            return 2
        if not args.watch or not any(r.state in ACTIVE for r in rows):
            return 2 if any(p.startswith("error:") for p in problems) else 0
        time.sleep(args.every)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
