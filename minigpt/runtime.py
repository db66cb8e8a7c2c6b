"""Device, precision and seeding: the small bits of environment every entrypoint shares."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from minigpt.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else must be available."""
    requested = str(requested)
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={requested} but CUDA is not available: use train.device=auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device={requested} but MPS is not available: use train.device=auto or cpu")
    return dev


def autocast_context(device: torch.device, dtype_name: str):
    """Mixed precision for bf16/fp16; a no-op for float32."""
    dtype = DTYPES[str(getattr(dtype_name, "value", dtype_name))]
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def slow_dtype_warning(device: torch.device, dtype_name: str) -> str | None:
    """A warning when the device has no fast kernels for the dtype (float16 on CPU: 5-20x slower than float32)."""
    dtype_name = str(getattr(dtype_name, "value", dtype_name))
    if device.type == "cpu" and dtype_name == "float16":
        return ("train.dtype=float16 on CPU is much slower than float32 (5-20x for the quick-start model: CPUs lack "
                "fast float16 kernels); use train.dtype=float32 here, and float16/bfloat16 on a GPU")
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere+
        torch.backends.cudnn.allow_tf32 = True
