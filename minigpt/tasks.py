"""Periodic tasks run by the trainer between steps (validation, samples, evaluations).

`EVAL_TASKS` maps `cfg.eval.name` to a factory returning extra tasks, so an evaluation is added by
registering a factory here, never by editing the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from minigpt.errors import ConfigError

if TYPE_CHECKING:
    from minigpt.trainer import Trainer


@dataclass
class PeriodicTask:
    """Runs every `every` steps (if > 0) and after the last step; returns metrics to log.

    With `at_start` (and `every` > 0) it also runs at step 0 of a fresh run, before the first
    optimizer step, so a curve starts where training starts (validation: at ~ln(vocab) = 10.8).
    """

    name: str
    every: int
    run: Callable[["Trainer"], dict]
    metrics: tuple[str, ...] = ()  # the numeric metrics `run` returns (what train.objective may name)
    at_start: bool = False

    def due(self, step: int, last: bool) -> bool:
        if step == 0:
            return self.at_start and self.every > 0
        return last or (self.every > 0 and step % self.every == 0)


# cfg.eval.name -> factory(cfg) -> list of PeriodicTask
EVAL_TASKS: dict[str, Callable] = {"none": lambda cfg: []}


def build_eval_tasks(cfg) -> list[PeriodicTask]:
    import minigpt.eval  # noqa: F401 - registers the evaluation factories (imported here: no import cycle)

    name = cfg.eval.name
    if name not in EVAL_TASKS:
        raise ConfigError(f"unknown eval={name!r}: choose one of {sorted(EVAL_TASKS)}")
    return EVAL_TASKS[name](cfg)
