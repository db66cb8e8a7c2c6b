"""run_summary.json: a run's status, wall time, hardware and cost — what metrics.jsonl cannot say.

The trainer writes it when training starts (status `running`), after every checkpoint (periodic,
final, or asked for by a signal), about once a minute while logging, and at the end: `finished`,
`failed` (an exception, named in `error`), `diverged` (a non-finite loss or gradient norm) or
`interrupted` (Ctrl-C, or stopped before the last step to be requeued). A kill -9 therefore loses
at most the time since the last checkpoint, which is also all the training it loses. A resumed run
adds its wall time, GPU-hours and cost to the earlier segments' (each segment priced with its own
GPU count). GPU-hours are wall time times the number of GPUs (world size on CUDA, 0 on CPU); cost is
wall hours x (nodes x `cluster.node_hour_cost` + GPUs x `cluster.gpu_hour_cost`). A segment's wall
time starts when its Trainer is built (data and model set-up included). It also keeps the model's
shape and dtype, the median training tokens/s and the peak memory (`train/peak_mem_gb`) measured in
this segment, and the forecast made at the run's start (minigpt/plan/): `minigpt.compare` sets the
two side by side, and `python -m minigpt.plan` calibrates its MFU on finished runs' figures.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from minigpt.atomic import write_text_atomic


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (the summary records host and pid, so a reader on the same
    host can tell a run that is still going from one whose process died without saying so)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True

SUMMARY_FILE = "run_summary.json"
HEARTBEAT_S = 60.0
log = logging.getLogger("minigpt")


def model_shape(cfg) -> str:
    """The model's size and context, e.g. "L12 d768 h12 T1024": what throughput history is matched on."""
    m = cfg.model
    return f"L{m.n_layer} d{m.n_embd} h{m.n_head} T{cfg.train.sequence_length or m.block_size}"


def run_cost(cluster, hours: float, gpus: int) -> float:
    """What `hours` of a job cost on `cluster`: whole nodes (SLURM presets that bill nodes) plus GPUs."""
    nodes = cluster.nodes if cluster.name != "local" else 0
    return hours * (nodes * cluster.node_hour_cost + gpus * cluster.gpu_hour_cost)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def failure_status(exc: BaseException) -> str:
    from minigpt.divergence import Diverged

    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "interrupted"
    return "diverged" if isinstance(exc, Diverged) else "failed"


def error_text(exc: BaseException) -> str:
    """The `error` of run_summary.json. A cause the user can fix is stored as the very line train.log and
    the console show after "error: "; anything else (a bug) with its exception type."""
    from minigpt.errors import ConfigError, RunFailure

    user_facing = isinstance(exc, (ConfigError, RunFailure))
    return (str(exc) if user_facing else f"{type(exc).__name__}: {exc}")[:1000]


def record_failure(run_dir: str | os.PathLike, exc: BaseException, is_main: bool = True) -> None:
    """A run that failed before its trainer wrote run_summary.json (a bad config): write one with the
    status and error RunRecord.fail() would give, so the run directory says why it has no metrics.
    An existing summary is left alone: the trainer has recorded its own failure there, or it belongs
    to an earlier run that this command was refused to touch (a busy or finished run directory)."""
    if not is_main or (Path(run_dir) / SUMMARY_FILE).exists():
        return
    data = {"status": failure_status(exc), "error": error_text(exc), "ended_at": _now()}
    try:
        write_text_atomic(Path(run_dir) / SUMMARY_FILE, json.dumps(data, indent=1))
    except OSError as write_error:  # the run's own error is still reported; this says why the record is missing
        log.warning(f"warning: could not record the failure in {Path(run_dir) / SUMMARY_FILE}: {write_error}")


class RunRecord:
    """Also a logger (log/finish), so it sees every step and keeps `step`, `tokens` and `wall_s` fresh.

    The ranks come from the trainer's `dist` (what distributed.setup() joined), not from the environment."""

    def __init__(self, trainer, forecast: Callable | None = None):
        """`forecast(trainer, start_step)`: the plan made at the run's start (minigpt.plan.forecast.start_forecast),
        handed in so this module does not import the planner, which reads run records."""
        from minigpt.perf import device_name

        self.path = Path(trainer.run_dir) / SUMMARY_FILE
        self.active = trainer.dist.is_main  # one writer per run
        world = trainer.dist.world_size
        cluster = trainer.cfg.cluster
        previous = read_summary(trainer.run_dir) or {}
        self.prior = {key: float(previous.get(key) or 0.0) for key in ("wall_s", "gpu_hours", "cost")}
        self.t0 = getattr(trainer, "created_at", None) or time.time()
        self._last_write = 0.0
        self.error: str | None = None
        self.status = "running"
        self.cluster = cluster
        self.rates: list[float] = []  # train/tokens_per_s as logged
        model = trainer.model
        self.data = {
            "status": "running",
            "started_at": previous.get("started_at", _now()),
            "segments": int(previous.get("segments", 0)) + 1,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": trainer.device.type,
            "device_name": device_name(trainer.device),
            "world_size": world,
            "n_gpus": world if trainer.device.type == "cuda" else 0,
            "params": model.num_params(),
            "params_non_embedding": model.num_params(non_embedding=True),
            "flops_per_token": trainer.flops_per_token,
            "tokens_per_step": trainer.tokens_per_step,
            "num_iterations": trainer.cfg.train.num_iterations,
            "arch": trainer.cfg.arch.name,
            "model": trainer.cfg.model.name,
            "model_shape": model_shape(trainer.cfg),
            "dtype": trainer.dtype,  # as run: train.dtype=auto resolved
            "batch_size": trainer.cfg.train.batch_size,
            "gpu_hour_cost": cluster.gpu_hour_cost,
            "node_hour_cost": cluster.node_hour_cost,
            "cost_unit": cluster.cost_unit,
            "step": trainer.step,
            "tokens": trainer.tokens_seen,
            "tokens_per_s": None,
            "peak_mem_gb": None,
            "forecast": previous.get("forecast"),  # a resumed segment keeps what was forecast before the run began
        }
        extended = list(previous.get("extended") or [])  # train.num_iterations raised on a resume (rundir.py)
        if previous.get("num_iterations") not in (None, self.data["num_iterations"]):
            extended.append({"from": previous["num_iterations"], "to": self.data["num_iterations"], "at_step": trainer.step})
        if extended:
            self.data["extended"] = extended
        if previous.get("forked_from"):  # a fork keeps saying where it came from across its own resumes
            self.data["forked_from"] = previous["forked_from"]
        # Forecast at the first logged step, not here: start-up (before the checkpoint signal handlers are
        # installed) stays as short as it was. It depends only on the config, device and earlier runs.
        self._forecast_for = trainer if self.active and forecast and not self.data["forecast"] else None
        self._forecast = forecast
        self._start_step = trainer.step
        self._write()

    def _record_forecast(self) -> None:
        trainer, self._forecast_for = self._forecast_for, None
        try:
            self.data["forecast"] = self._forecast(trainer, self._start_step)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never stop training
            log.warning(f"no forecast recorded ({type(exc).__name__}: {exc})")

    def _update_costs(self) -> None:
        d = self.data
        segment_s = time.time() - self.t0
        segment_gpu_hours = segment_s / 3600 * d["n_gpus"]
        d["wall_s"] = self.prior["wall_s"] + segment_s
        d["gpu_hours"] = self.prior["gpu_hours"] + segment_gpu_hours
        d["cost"] = self.prior["cost"] + run_cost(self.cluster, segment_s / 3600, d["n_gpus"])
        rates = self.rates[1:] if len(self.rates) >= 3 else self.rates  # the first logged step includes warm-up
        d["tokens_per_s"] = statistics.median(rates) if rates else d.get("tokens_per_s")
        d["updated_at"] = _now()

    def _write(self) -> None:
        self._update_costs()  # also on ranks that do not write: close() returns these figures everywhere
        if not self.active:
            return
        try:
            write_text_atomic(self.path, json.dumps(self.data, indent=1))
        except OSError:
            pass  # bookkeeping must never stop training; metrics.jsonl still has everything
        self._last_write = time.time()

    # Logger protocol: keep progress current; rewrite the file at most once a heartbeat.
    def log(self, metrics: dict, step: int) -> None:
        self.data["step"] = step
        if "train/tokens" in metrics:
            self.data["tokens"] = int(metrics["train/tokens"])
        if "train/tokens_per_s" in metrics:
            self.rates.append(float(metrics["train/tokens_per_s"]))
        if metrics.get("train/peak_mem_gb") is not None:
            self.data["peak_mem_gb"] = max(self.data["peak_mem_gb"] or 0.0, float(metrics["train/peak_mem_gb"]))
        if self._forecast_for is not None:
            self._record_forecast()
            self._write()
        if time.time() - self._last_write > HEARTBEAT_S:
            self._write()

    def finish(self) -> None:
        pass  # the final write is close(), which knows how the run ended

    def checkpointed(self, step: int | None = None) -> None:
        """After every checkpoint (also those a signal asked for): the time spent so far is on disk."""
        if step is not None:
            self.data["step"] = step
        self._write()

    def forked(self, origin: dict) -> None:
        """This run started from another run's checkpoint: {"checkpoint", "step", "logger_run_id"}."""
        self.data["forked_from"] = origin
        self._write()

    def fail(self, exc: BaseException) -> None:
        self.status, self.error = failure_status(exc), error_text(exc)

    def close(self, step: int, tokens: int) -> dict:
        """Write the final status; returns the run-level metrics to log (wall time, GPU-hours, cost)."""
        if self.status == "running":
            self.status = "finished" if step >= self.data["num_iterations"] else "interrupted"
        self.data.update(status=self.status, step=step, tokens=tokens, ended_at=_now(), error=self.error)
        self._write()
        d = self.data
        return {"run/wall_hours": d["wall_s"] / 3600, "run/gpu_hours": d["gpu_hours"], "run/cost": d["cost"],
                "run/params": d["params"]}
