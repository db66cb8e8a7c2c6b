"""Model FLOPs utilisation: achieved training FLOPs over the accelerator's peak.

The GPU types and their dense (no sparsity) tensor-core peaks live in one table, the presets
`conf/cluster/gpu/*.yaml` (from the vendors' data sheets), which the forecast (`python -m minigpt.plan`)
reads too. Unknown devices (CPUs, other GPUs) give no MFU unless `train.peak_flops` supplies the peak.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

GPU_PRESETS = Path(__file__).resolve().parents[1] / "conf" / "cluster" / "gpu"


@lru_cache(maxsize=1)
def gpu_types() -> dict:
    """name -> GPUConfig for every preset in conf/cluster/gpu/."""
    from omegaconf import OmegaConf

    from minigpt.config import GPUConfig

    types = {}
    for path in sorted(GPU_PRESETS.glob("*.yaml")):
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GPUConfig), OmegaConf.load(path)))
        types[spec.name] = spec
    return types


def match_gpu(name: str, memory_gb: float | None = None):
    """The GPU type whose `device_match` is in a device name (the longest match: "H100 PCIe" over "H100");
    among equals (A100 40GB / 80GB) the one whose memory is closest to `memory_gb`. None if unknown."""
    found = [t for t in gpu_types().values() if t.device_match in name]
    if not found:
        return None
    longest = max(len(t.device_match) for t in found)
    found = [t for t in found if len(t.device_match) == longest]
    if memory_gb is not None:
        found.sort(key=lambda t: abs(t.memory_gb - memory_gb))
    return found[0]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def peak_flops(name: str, dtype: str, override: float | None = None) -> float | None:
    """Peak FLOP/s for a device name and dtype; `override` wins; None when unknown."""
    if override:
        return float(override)
    gpu = match_gpu(name)
    if gpu is None or dtype not in gpu.peak_tflops:
        return None
    return gpu.peak_tflops[dtype] * 1e12


def peak_memory_gb(device: torch.device) -> float | None:
    """Peak memory so far, GiB: on CUDA the most allocated by tensors (torch.cuda.max_memory_allocated);
    on CPU the process's maximum resident set size (which includes the Python runtime and libraries)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "cpu":
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / (2**30 if sys.platform == "darwin" else 2**20)
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Fraction of peak achieved (0..1), or None without a known peak."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s / peak
