"""Throughput, MFU, peak memory and GC scheduling for the training loop.

Peak numbers are dense (no sparsity) tensor-core FLOP/s per GPU from the vendor data sheets, keyed
by the exact `torch.cuda.get_device_name()` string: an H100 PCIe is not an H100 SXM (756 vs 989
TFLOP/s bf16), so a substring match would under-report its MFU by a quarter. Unknown devices (CPUs,
other GPUs) give no MFU unless `train.peak_flops` supplies the peak.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
import time

import torch


def _dense(with_sparsity: float) -> float:
    """Data sheets print tensor-core peaks "with sparsity" (2:4); dense matmuls get half."""
    return with_sparsity / 2


# Exact device name -> {dtype: peak FLOP/s}; float32 means TF32 tensor cores (on: runtime.configure_backends).
_A100 = {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12}  # A100 data sheet (dense figures)
_H100_SXM = {"bfloat16": _dense(1979e12), "float16": _dense(1979e12), "float32": _dense(989e12)}
_H100_PCIE = {"bfloat16": _dense(1513e12), "float16": _dense(1513e12), "float32": _dense(756e12)}
_H100_NVL = {"bfloat16": _dense(1671e12), "float16": _dense(1671e12), "float32": _dense(835e12)}
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA H100 80GB HBM3": _H100_SXM,  # H100 SXM5
    "NVIDIA H100 PCIe": _H100_PCIE,
    "NVIDIA H100 NVL": _H100_NVL,
    "NVIDIA H200": _H100_SXM,  # H200 SXM: the H100 SXM's compute, more and faster memory
    "NVIDIA H200 NVL": _H100_NVL,
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def peak_flops(name: str, dtype: str, override: float | None = None) -> float | None:
    """Peak FLOP/s for an exact device name and dtype; `override` wins; None when unknown."""
    if override:
        return float(override)
    return PEAK_FLOPS.get(name.strip(), {}).get(str(getattr(dtype, "value", dtype)))


def peak_flops_hint(name: str, dtype: str) -> str:
    """The one line to print when `peak_flops` returns None."""
    return (f"no peak FLOP/s known for device {name!r} in {dtype}, so train/mfu is not logged: "
            "set train.peak_flops=<dense FLOP/s of one device> (e.g. 312e12 for an A100 in bf16)")


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Fraction of peak achieved (0..1), or None without a known peak."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s / peak


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory since the process started, in GiB (2^30 bytes).

    CUDA: the caching allocator's peak of allocated tensor memory (`torch.cuda.max_memory_allocated`),
    what decides whether a config fits. Elsewhere: the process's peak resident set (`ru_maxrss`), which
    also counts the Python runtime and libraries (a few hundred MB).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


class StepClock:
    """Wall time per training step, read only where the loop already waits for the device.

    Steps are queued without waiting; at a log step the metrics' device-to-host copy waits for all
    queued work, so (time since the last read) / (steps since) is the true mean step time. Periodic
    tasks and checkpoints run inside `paused()` and are not counted.
    """

    def __init__(self):
        self.start, self.steps, self.excluded = time.perf_counter(), 0, 0.0

    def tick(self) -> None:
        self.steps += 1

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t0

    def read(self) -> float:
        """Mean seconds per step since the last read (call after the device caught up); restarts the clock."""
        now = time.perf_counter()
        seconds = (now - self.start - self.excluded) / max(self.steps, 1)
        self.start, self.steps, self.excluded = now, 0, 0.0
        return seconds


class GarbageCollection:
    """Python's cyclic GC on a schedule instead of whenever allocations trip it.

    An automatic collection pauses the process for tens of milliseconds at a random step, and under
    data parallelism every other rank waits for it at the next all-reduce. As nanochat, lingua and
    torchtitan do: collect and freeze the start-up objects (models, configs, modules) so no collection
    scans them again, disable the automatic GC, and collect every `every` steps, on all ranks at the
    same step. `every=0` leaves Python's GC alone.
    """

    def __init__(self, every: int):
        self.every = every
        self._was_enabled = gc.isenabled()

    def __enter__(self) -> "GarbageCollection":
        if self.every > 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
            gc.collect()
            gc.freeze()
        return self

    def step(self, step: int) -> None:
        if self.every > 0 and step % self.every == 0:
            gc.collect()

    def __exit__(self, *exc) -> None:
        if self.every > 0:
            gc.unfreeze()
            if self._was_enabled:
                gc.enable()
