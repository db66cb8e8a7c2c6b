"""Several torch optimizers stepping as one, for code written against a single optimizer."""

from __future__ import annotations

import torch

from minigpt.optim.amp import scaled_step


class CombinedOptimizer:
    """Named parts (e.g. {"adamw": AdamW, "muon": Muon}), each over its own parameters.

    What the trainer, GradScaler, the schedule and checkpoints use works as for one optimizer:
    `param_groups` lists every part's groups (the same dicts, so setting a group's lr reaches its
    part), `step` and `zero_grad` run on every part, and `state_dict` nests the parts' state dicts by
    name. Under ZeRO-1 each part is sharded on its own (`distributed.shard_optimizer`). float16: it takes
    GradScaler's inf flag as a device tensor and hands it to each part (minigpt/optim/amp.py), so the
    scaler never reads it on the host.
    """

    _step_supports_amp_scaling = True

    def __init__(self, parts: dict[str, torch.optim.Optimizer]):
        if not parts:
            raise ValueError("CombinedOptimizer needs at least one part")
        self.parts = dict(parts)

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    @property
    def state(self) -> dict:
        """Per-parameter state of all parts (read-only view, for inspection)."""
        return {p: s for part in self.parts.values() for p, s in part.state.items()}

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf, grad_scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
        for part in self.parts.values():
            with scaled_step(part, found_inf, grad_scale):
                part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.parts):
            raise ValueError(
                f"optimizer state holds parts {sorted(state)}, this optimizer has {sorted(self.parts)}"
            )
        for name, part in self.parts.items():
            part.load_state_dict(state[name])

    def consolidate_state_dict(self, to: int = 0) -> None:
        """ZeRO-1: gather every sharded part's state onto rank `to` (a collective; no-op for plain parts)."""
        for part in self.parts.values():
            consolidate = getattr(part, "consolidate_state_dict", None)
            if consolidate is not None:
                consolidate(to=to)

    def __repr__(self) -> str:
        return f"CombinedOptimizer({', '.join(f'{k}={type(v).__name__}' for k, v in self.parts.items())})"
