"""Stop a run whose loss or gradient norm is no longer finite, before it saves (or prunes for) NaN weights.

Cost, by design: `allow_update()` runs every step on the device. It folds "loss and grad norm are
finite" into one flag tensor and remembers the first bad step and its values with `torch.where`: a
few scalar kernels and no host sync. `check()` reads the flag (one `.item()`); the trainer calls it
where the loop syncs anyway (right after a step's metrics are read, before they are logged, evaluated
or checkpointed) and, unconditionally, at the top of every checkpoint save. A loop that stops
syncing every step only needs to keep calling `check()` at the steps it does sync and before tasks
and saves: the flag keeps the first bad step in between, so the error still names it.

`train.skip_nonfinite=N` (opt-in) skips up to N bad steps instead: their gradients are dropped and
the optimizer does not step; one more bad step stops the run. Deciding that before the optimizer
step needs the flag on the host, so this mode costs one sync per step; the default (0: stop at the
first bad step) costs none.

Under float16 the GradScaler already skips steps with inf/nan gradients (that is how it finds its
scale), so there only a non-finite loss counts, and a skipped step is the scaler's skip.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from minigpt.errors import RunFailure

log = logging.getLogger("minigpt")


class Diverged(RunFailure):
    """The loss or gradient norm went non-finite; run_summary.json records status `diverged`."""


class DivergenceGuard:
    def __init__(self, max_skips: int, device: torch.device, run_dir: str | Path, grads_checked: bool = True):
        self.max_skips, self.run_dir, self.grads_checked = max_skips, Path(run_dir), grads_checked
        self.skipped = 0
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)  # step, or -1: none yet
        self._bad_values = torch.zeros(2, device=device)  # loss and grad norm at that step

    def _observe(self, loss: torch.Tensor, grad_norm: torch.Tensor, step: int) -> torch.Tensor:
        values = torch.stack([loss.detach().float(), grad_norm.detach().float()])
        bad = ~torch.isfinite(values).all() if self.grads_checked else ~torch.isfinite(values[0])
        first = bad & (self._first_bad < 0)
        self._first_bad = torch.where(first, step, self._first_bad)
        self._bad_values = torch.where(first, values, self._bad_values)
        return bad

    def allow_update(self, loss: torch.Tensor, grad_norm: torch.Tensor, step: int) -> bool:
        """Record step `step`; False when the optimizer must not step (skip mode, a bad step)."""
        bad = self._observe(loss, grad_norm, step)
        if self.max_skips <= 0:
            return True  # stop mode: check() raises at the loop's next sync, before anything is saved
        if not bad.item():
            return True
        self.skipped += 1
        values = self._bad_values.tolist()
        self._first_bad.fill_(-1)  # a skipped step is handled; the flag waits for the next one
        if self.skipped > self.max_skips:
            raise Diverged(self._message(step, *values, f" after skipping {self.max_skips} such steps "
                                         f"(train.skip_nonfinite={self.max_skips})"))
        log.warning(f"step {step:6d} | loss {values[0]} / grad norm {values[1]}: not finite, step skipped "
                    f"({self.skipped} of train.skip_nonfinite={self.max_skips})")
        return not self.grads_checked  # float16: the GradScaler's own step skips it (and lowers its scale)

    def check(self) -> None:
        """Raise Diverged if a step since the last check was not finite (one host sync)."""
        step = int(self._first_bad.item())
        if step >= 0:
            raise Diverged(self._message(step, *self._bad_values.tolist(), ""))

    def _message(self, step: int, loss: float, grad_norm: float, after: str) -> str:
        from minigpt.checkpoint import list_checkpoints

        kept = list_checkpoints(self.run_dir)
        resume = (f"train.resume=auto continues from {kept[-1].name}, saved before it" if kept
                  else "no checkpoint was saved before it, so it starts over")
        skip = "" if after else ", or set train.skip_nonfinite=N to skip up to N such steps"
        return (f"training diverged at step {step}: loss {loss:.4g}, grad norm {grad_norm:.4g} (not finite){after}; "
                f"lower optim.learning_rate or raise optim.warmup_iters and rerun ({resume}){skip}")
