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


def _name(dtype) -> str:
    return str(getattr(dtype, "value", dtype))


def resolve_dtype(requested, device: torch.device, bf16_supported: bool | None = None) -> str:
    """train.dtype as the run uses it. `auto` (nanoGPT's rule): bfloat16 autocast on a CUDA GPU that supports
    it (Ampere and later), float32 everywhere else: CPUs and MPS train fastest and most simply in float32,
    and float16 needs a gradient scaler, so it is never picked for you. `bf16_supported` stands in for the
    GPU's answer (None: ask torch), so the CUDA branch's decision can be checked on any machine."""
    requested = _name(requested)
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "float32"
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return "bfloat16" if bf16_supported else "float32"


def autocast_context(device: torch.device, dtype_name: str):
    """Mixed precision for bf16/fp16; a no-op for float32 (`auto` resolved for this device first)."""
    dtype = DTYPES[resolve_dtype(dtype_name, device)]
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def attention_kernel(device: torch.device, dtype: str, gqa: bool) -> str:
    """The SDPA kernel a training step reaches: `math` where the flash kernel cannot run, else `flash`.

    On CUDA, `enable_gqa=True` (n_kv_head < n_head) is served by the flash kernel only, and it needs
    fp16/bf16, so a float32 GQA run falls back to the math kernel, which keeps B x H x T^2 float32 scores
    per layer (minigpt/memory.py counts them). CPU's flash kernel takes float32, so CPU runs never fall back.
    """
    if device.type == "cuda" and gqa and _name(dtype) == "float32":
        return "math"
    return "flash"


def math_attention_warning(device: torch.device, dtype: str, gqa: bool) -> str | None:
    """One line when a run's attention falls back to the math kernel (see `attention_kernel`)."""
    if attention_kernel(device, dtype, gqa) != "math":
        return None
    return ("train.dtype=float32 with grouped-query attention on CUDA runs SDPA's math kernel (flash with enable_gqa "
            "needs bfloat16/float16): it keeps B x n_head x T^2 float32 scores per layer, counted in the memory "
            "estimate; use train.dtype=auto or bfloat16 for the flash kernel")


# CPU features that give bfloat16 fast matmul kernels (oneDNN): AVX512-BF16 (Cooper Lake, Zen 4) or AMX.
BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_features() -> dict:
    """This CPU's feature flags as torch reads them (cpuinfo); {} where this torch does not expose them."""
    read = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    return dict(read()) if callable(read) else {}


def cpu_has_bf16_kernels(features: dict) -> bool:
    """Whether a CPU with these feature flags (`cpu_features()`) has native bfloat16 kernels."""
    return any(features.get(flag) for flag in BF16_CPU_FEATURES)


def slow_dtype_warning(device: torch.device, dtype_name: str, features: dict | None = None) -> str | None:
    """A warning when the device has no fast kernels for the dtype: float16 on any CPU (5-20x slower than
    float32), bfloat16 on a CPU without AVX512-BF16 or AMX (about 15x measured). `features` stands in for
    this CPU's flags (None: read them), so the rule can be checked on any machine."""
    dtype_name = _name(dtype_name)
    if device.type != "cpu":
        return None
    if dtype_name == "float16":
        return ("train.dtype=float16 on CPU is much slower than float32 (5-20x for the quick-start model: CPUs lack "
                "fast float16 kernels); use train.dtype=float32 here, and float16/bfloat16 on a GPU")
    if dtype_name == "bfloat16":
        features = cpu_features() if features is None else features
        if features and not cpu_has_bf16_kernels(features):  # unknown flags: no claim either way
            return ("train.dtype=bfloat16 on this CPU is much slower than float32 (about 15x: it has neither "
                    "AVX512-BF16 nor AMX, so bfloat16 runs in emulation); use train.dtype=float32 (or auto) here")
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere+
        torch.backends.cudnn.allow_tf32 = True
