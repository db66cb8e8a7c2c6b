"""Where metrics go: the local metrics.jsonl (always, the source of truth) plus optional loggers.

A logger implements `log(metrics, step)` and `finish()`, and may implement `log_file(path, kind)` for
files the run produces (per-example HellaSwag records; W&B uploads the last of each kind). `build_loggers` picks extra loggers by
`cfg.logger.name` from `LOGGERS`; an extra logger that fails to start, log or finish is reported once
and dropped, so logging can never stop training. An extra logger may expose `run_id` (W&B's run id):
the trainer stores it in checkpoints and passes it back on resume, so the same tracked run continues;
a run started from another run's checkpoint passes `forked_from` instead and gets a new tracked run
that records its origin. metrics.jsonl is the one logger that may stop a run: if it cannot be
written (a full disk), the run stops with one line saying so rather than training unrecorded.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Protocol

from minigpt.errors import write_failure


class Logger(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...

    def finish(self) -> None: ...


class JsonlLogger:
    """One JSON object per line: {"step": N, "train/loss": ..., ...}. Appends, so resumed runs continue the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, metrics: dict, step: int) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        try:
            self._f.write(json.dumps(row) + "\n")
            self._f.flush()  # a crash must not lose logged lines
        except OSError as exc:
            raise write_failure("metrics to", self.path, exc) from exc

    def finish(self) -> None:
        self._f.close()


def last_logged(path: Path) -> dict:
    """The last logged value of every key in metrics.jsonl: a finished run's final metrics."""
    final: dict = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                final.update({k: v for k, v in json.loads(line).items() if k != "step"})
            except json.JSONDecodeError:
                continue
    return final


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    return v


class NullLogger:
    """What ranks other than 0 log to under data parallelism: nothing."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_file(self, path: Path, kind: str) -> None:
        pass

    def finish(self) -> None:
        pass

    def add(self, logger: Logger) -> None:
        pass


class MultiLogger:
    def __init__(self, primary: Logger, extras: list[Logger], warn: Callable[[str], None] = print):
        self.primary, self.extras, self.warn = primary, list(extras), warn
        # The tracked run's id (None without an extra logger that has one), for checkpoints and resume.
        self.run_id = next((lg.run_id for lg in self.extras if getattr(lg, "run_id", None)), None)

    def add(self, logger: Logger) -> None:
        self.extras.append(logger)

    def log(self, metrics: dict, step: int) -> None:
        self.primary.log(metrics, step)
        for lg in list(self.extras):
            try:
                lg.log(metrics, step)
            except Exception as exc:  # noqa: BLE001 - a tracking failure must never stop training
                self.warn(f"logger {type(lg).__name__} failed ({exc}); continuing with metrics.jsonl only")
                self.extras.remove(lg)

    def log_file(self, path: Path, kind: str) -> None:
        """Offer a file the run wrote (metrics.jsonl's folder already has it) to the loggers that keep files."""
        for lg in list(self.extras):
            if hasattr(lg, "log_file"):
                try:
                    lg.log_file(path, kind)
                except Exception as exc:  # noqa: BLE001
                    self.warn(f"logger {type(lg).__name__} failed ({exc}); continuing with metrics.jsonl only")
                    self.extras.remove(lg)

    def finish(self) -> None:
        for lg in self.extras:
            try:
                lg.finish()
            except Exception as exc:  # noqa: BLE001
                self.warn(f"logger {type(lg).__name__} failed to finish ({exc})")
        self.primary.finish()


def _wandb(cfg, run_dir, run_id=None, warn=print, forked_from=None, is_main=True):
    from minigpt.wandb_logger import create_wandb_logger  # imported on use: wandb is slow to import

    return create_wandb_logger(cfg, run_dir, run_id=run_id, warn=warn, forked_from=forked_from, is_main=is_main)


# The explicit table `logger=` chooses from (checked by minigpt.validate before any side effect):
# name -> factory(cfg, run_dir, run_id=None, warn=print, forked_from=None, is_main=True) returning a Logger or None
LOGGERS: dict[str, Callable] = {"none": lambda cfg, run_dir, **kwargs: None, "wandb": _wandb}


def build_loggers(
    cfg, run_dir: str | os.PathLike, warn: Callable[[str], None] = print, run_id: str | None = None,
    forked_from: dict | None = None, is_main: bool = True,
) -> MultiLogger:
    """metrics.jsonl plus the `cfg.logger.name` logger (a name minigpt.validate checked against LOGGERS);
    `run_id` continues an earlier tracked run, `forked_from` ({"checkpoint", "step", "logger_run_id"})
    starts a new one that records its origin; `is_main`: this is the rank that logs."""
    from minigpt.errors import ConfigError

    name = cfg.logger.name
    try:
        extra = LOGGERS[name](cfg, run_dir, run_id=run_id, warn=warn, forked_from=forked_from, is_main=is_main)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a tracking service that cannot start must not stop training
        warn(f"logger {name} failed to start ({type(exc).__name__}: {exc}); continuing with metrics.jsonl only")
        extra = None
    return MultiLogger(JsonlLogger(Path(run_dir) / "metrics.jsonl"), [extra] if extra else [], warn)
