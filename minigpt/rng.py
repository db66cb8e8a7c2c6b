"""Every RNG state (python, numpy, torch CPU and CUDA) as tensors and plain values.

Kept free of numpy objects so checkpoints load with torch.load(weights_only=True).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def get_rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState:
    """The process's RNGs as a checkpoint Stateful: restored last, so loading nothing else draws from them."""

    def state_dict(self) -> dict:
        return get_rng_state()

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(state)
