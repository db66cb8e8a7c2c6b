"""Training batches on the device, the next one prepared while the current step computes.

The trainer calls `prefetch()` right after queueing a micro-step's forward pass: while the GPU runs
it, the host gathers the next rows from the memory-mapped shards, pins them and queues their
copy (non-blocking), so the next forward never waits for data. The loader's position in a
checkpoint is the one after the batches training has used, not after the prefetched one, so a
resumed run sees exactly the batches an uninterrupted run does.
"""

from __future__ import annotations

from typing import Callable

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class DevicePrefetcher:
    def __init__(self, loader, device: torch.device, fixed_batch: Batch | None = None):
        self.loader, self.device = loader, device
        self._source: Callable[[], Batch] = (lambda: fixed_batch) if fixed_batch is not None else loader.next_batch
        self._pending: Batch | None = None
        self._state_before_pending: dict | None = None

    def _to_device(self, batch: Batch) -> Batch:
        x, y = batch
        if self.device.type == "cuda":  # page-locked host memory makes the copy asynchronous
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def prefetch(self) -> None:
        """Start preparing the next batch (a no-op when one is already pending)."""
        if self._pending is None:
            self._state_before_pending = self.loader.state_dict()
            self._pending = self._to_device(self._source())

    def next(self) -> Batch:
        """The next batch, on the device."""
        self.prefetch()
        batch, self._pending = self._pending, None
        return batch

    def state_dict(self) -> dict:
        """The loader's position after the batches handed out (a pending prefetch is not counted)."""
        return dict(self._state_before_pending) if self._pending is not None else self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._pending = None
        self.loader.load_state_dict(state)
