"""Throughput, MFU, peak memory and GC scheduling for the training loop.

The GPU types and their dense (no sparsity) tensor-core peaks live in one table, the presets
`conf/cluster/gpu/*.yaml` (from the vendors' data sheets), which the forecast (`python -m minigpt.plan`)
reads too. Unknown devices (CPUs, other GPUs) give no MFU unless `train.peak_flops` supplies the peak.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
import time
from collections import deque
from datetime import timedelta
from functools import lru_cache

import torch

from minigpt.paths import CONF_DIR

GPU_PRESETS = CONF_DIR / "cluster" / "gpu"


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
    """Peak FLOP/s for a device name (as `torch.cuda.get_device_name()` prints it) and dtype; `override` wins; None when unknown."""
    if override:
        return float(override)
    gpu, dtype = match_gpu(name), str(getattr(dtype, "value", dtype))
    if gpu is None or dtype not in gpu.peak_tflops:
        return None
    return gpu.peak_tflops[dtype] * 1e12


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

    def __init__(self, window: int = 10):
        self.start, self.steps, self.excluded = time.perf_counter(), 0, 0.0
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)  # (steps, seconds) of the last reads

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
        elapsed = now - self.start - self.excluded
        if self.steps:
            self.recent.append((self.steps, elapsed))
        seconds = elapsed / max(self.steps, 1)
        self.start, self.steps, self.excluded = now, 0, 0.0
        return seconds

    def eta(self, steps_left: int) -> float | None:
        """Seconds until `steps_left` more steps are done, at the mean step time of the last reads (the
        first read, which holds compilation and warm-up, drops out once the window is full); None before one."""
        steps = sum(n for n, _ in self.recent)
        return steps_left * sum(t for _, t in self.recent) / steps if steps else None


def format_eta(seconds: float | None) -> str:
    """h:mm:ss (days spelt out past 24 h), or ? when unknown."""
    return "?" if seconds is None else str(timedelta(seconds=round(seconds)))


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
