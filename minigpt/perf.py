"""Model FLOPs utilisation: achieved training FLOPs over the accelerator's peak.

Peak numbers are dense (no sparsity) tensor-core FLOPs per second per GPU from the vendor data sheets.
Unknown devices (CPUs, other GPUs) give no MFU unless `train.peak_flops` supplies the peak.
"""

from __future__ import annotations

import torch

# (substring of torch.cuda.get_device_name(), dtype) -> peak FLOP/s. float32 means TF32 tensor cores.
PEAK_FLOPS: dict[tuple[str, str], float] = {
    ("A100", "bfloat16"): 312e12,
    ("A100", "float16"): 312e12,
    ("A100", "float32"): 156e12,
    ("H100", "bfloat16"): 989e12,
    ("H100", "float16"): 989e12,
    ("H100", "float32"): 494e12,
    ("H200", "bfloat16"): 989e12,
    ("H200", "float16"): 989e12,
    ("H200", "float32"): 494e12,
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def peak_flops(name: str, dtype: str, override: float | None = None) -> float | None:
    """Peak FLOP/s for a device name and dtype; `override` wins; None when unknown."""
    if override:
        return float(override)
    for (key, key_dtype), value in PEAK_FLOPS.items():
        if key in name and key_dtype == dtype:
            return value
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Fraction of peak achieved (0..1), or None without a known peak."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s / peak
