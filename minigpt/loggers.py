"""Where metrics go: the local metrics.jsonl (always, the source of truth) plus optional loggers.

A logger implements `log(metrics, step)` and `finish()`. `build_loggers` picks extra loggers by
`cfg.logger.name` from `LOGGERS`; a failing extra logger is reported once and dropped, so logging
can never stop training.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Protocol


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
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()  # a crash must not lose logged lines

    def finish(self) -> None:
        self._f.close()


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    return v


class MultiLogger:
    def __init__(self, primary: Logger, extras: list[Logger], warn: Callable[[str], None] = print):
        self.primary, self.extras, self.warn = primary, list(extras), warn

    def log(self, metrics: dict, step: int) -> None:
        self.primary.log(metrics, step)
        for lg in list(self.extras):
            try:
                lg.log(metrics, step)
            except Exception as exc:  # noqa: BLE001 - a tracking failure must never stop training
                self.warn(f"logger {type(lg).__name__} failed ({exc}); continuing with metrics.jsonl only")
                self.extras.remove(lg)

    def finish(self) -> None:
        for lg in self.extras:
            try:
                lg.finish()
            except Exception as exc:  # noqa: BLE001
                self.warn(f"logger {type(lg).__name__} failed to finish ({exc})")
        self.primary.finish()


# name -> factory(cfg, run_dir) returning a Logger
LOGGERS: dict[str, Callable] = {"none": lambda cfg, run_dir: None}


def build_loggers(cfg, run_dir: str | os.PathLike, warn: Callable[[str], None] = print,
                  run_id: str | None = None) -> MultiLogger:
    """`run_id`: the logger run a resumed run continues (stored in checkpoints); ignored by `none`."""
    from minigpt.errors import ConfigError

    name = cfg.logger.name
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger={name!r}: choose one of {sorted(LOGGERS)}")
    extra = LOGGERS[name](cfg, run_dir)
    return MultiLogger(JsonlLogger(Path(run_dir) / "metrics.jsonl"), [extra] if extra else [], warn)
