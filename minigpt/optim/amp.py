"""float16 steps without a host sync: GradScaler's found-inf check stays on the device.

`torch.amp.GradScaler.step` reads its inf/nan flag on the host (an `.item()`, so the host waits for the
device every step) unless the optimizer declares `_step_supports_amp_scaling`; then it hands the flag
over as the tensor attributes `found_inf` and `grad_scale` and calls `step()`. Fused AdamW declares it
and skips on the device itself. The optimizers minigpt wraps (CombinedOptimizer for optim=muon, and
ZeroRedundancyOptimizer for train.zero_stage=1) declare it too and pass the flag to each part with
`scaled_step`: a part that takes the flag gets it; any other (torch.optim.Muon) steps anyway and its
parameters and state are put back where the flag is set, with `torch.where`, on the device. That costs
one copy of the part's parameters and state per float16 step (bfloat16 needs no scaler at all).
"""

from __future__ import annotations

import contextlib

import torch
from torch.distributed.optim import ZeroRedundancyOptimizer


def _tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = [v for p in params for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v) and v.dim() > 0]
    return params + state


@contextlib.contextmanager
def scaled_step(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor | None, grad_scale: torch.Tensor | None):
    """Around one `optimizer.step()`: skip it on the device where `found_inf` is set (None: a plain step)."""
    if found_inf is None:
        yield
        return
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf, optimizer.grad_scale = found_inf, grad_scale
        try:
            yield
        finally:
            del optimizer.found_inf, optimizer.grad_scale
        return
    if grad_scale is not None:  # the trainer unscales before clipping, so the scaler never hands a scale here
        raise RuntimeError("scaled_step: unscale the gradients (GradScaler.unscale_) before the step")
    before = {id(t): t.detach().clone() for t in _tensors(optimizer)}
    yield
    skip = found_inf > 0
    with torch.no_grad():
        for t in _tensors(optimizer):
            old = before.get(id(t))
            # state made by this very step (Muon's momentum buffer starts at zeros) goes back to zeros
            t.copy_(torch.where(skip, old if old is not None else torch.zeros_like(t), t))


class ScaledZeroRedundancyOptimizer(ZeroRedundancyOptimizer):
    """ZeRO-1 that takes GradScaler's flag on the device: the local shard's step is skipped (or put back)
    before the updated shards are broadcast, so every rank keeps the same weights."""

    _step_supports_amp_scaling = True

    def step(self, closure=None, **kwargs):
        found_inf, grad_scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
        if found_inf is None:
            return super().step(closure=closure, **kwargs)
        with scaled_step(self.optim, found_inf, grad_scale):
            loss = self._local_step(closure=closure, **kwargs)
        self._sync_params()
        return loss
