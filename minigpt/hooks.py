"""Step hooks: what the trainer runs between optimizer steps (validation, samples, evaluations).

A `StepHook` is the loop's one extension point: the trainer keeps a list of them (its own val and
sample hooks, the ones the `eval=` choice brings, minigpt/eval/training.py, and any a caller passes),
so a feature is added as a hook, never as a branch in the training loop. ("Task" is left to
lm-evaluation-harness's own meaning, minigpt/hf/lm_eval_task.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # for the annotation only; never imported at run time (no trainer <-> hooks circle)
    from minigpt.trainer import Trainer


@dataclass
class StepHook:
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
