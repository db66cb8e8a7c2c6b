"""Throughput from this user's own finished runs: the forecast's MFU comes from here when it can.

Every run's `run_summary.json` (minigpt/run_record.py) records its model shape, dtype, device,
world size, FLOPs per token and median training tokens/s. A finished run of the same model shape and
dtype on the same GPU type gives its MFU (achieved FLOP/s over the GPU's peak); on a CPU, which has no
peak, its achieved FLOP/s per process. The median over all such runs is used (with the same arch
preferred when there is one), so the forecast follows the user's history as it grows.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from minigpt.perf import peak_flops
from minigpt.run_record import SUMMARY_FILE, read_summary


@dataclass(frozen=True)
class PastRun:
    path: Path
    arch: str
    model_shape: str
    dtype: str
    device_name: str  # torch.cuda.get_device_name() or "cpu"
    flops_per_s: float  # achieved training FLOP/s per process (device)

    @property
    def mfu(self) -> float | None:
        peak = peak_flops(self.device_name, self.dtype)
        return self.flops_per_s / peak if peak else None


SKIP_DIRS = {"wandb", ".submitit", ".hydra", "compare", "plan"}  # large or never a run dir: not walked


def _summary_dirs(roots: list[str | os.PathLike]):
    """Folders holding a run_summary.json under `roots`, without walking W&B's and submitit's many files."""
    for root in map(Path, roots):
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            if SUMMARY_FILE in files:
                yield Path(folder)


def load_history(roots: list[str | os.PathLike], exclude: Path | None = None) -> list[PastRun]:
    """Finished runs with a measured throughput under `roots` (searched recursively; missing roots are skipped)."""
    runs = []
    for run_dir in _summary_dirs(roots):
        if exclude is not None and run_dir.resolve() == Path(exclude).resolve():
            continue
        s = read_summary(run_dir) or {}
        if s.get("status") != "finished" or not s.get("tokens_per_s") or not s.get("model_shape"):
            continue
        try:
            per_device = float(s["flops_per_token"]) * float(s["tokens_per_s"]) / max(int(s.get("world_size", 1)), 1)
        except (KeyError, TypeError, ValueError):
            continue  # an older or hand-edited summary: not evidence
        runs.append(PastRun(run_dir, str(s.get("arch")), str(s["model_shape"]), str(s.get("dtype")),
                            str(s.get("device_name")), per_device))
    return runs


@dataclass(frozen=True)
class Calibration:
    mfu: float | None  # fraction of the GPU's peak (GPUs)
    flops_per_s: float | None  # achieved FLOP/s per device (CPUs, which have no peak)
    runs: int  # how many finished runs it comes from (0: a default)


def calibrate(history: list[PastRun], *, model_shape: str, dtype: str, arch: str, device_match: str) -> Calibration | None:
    """Median MFU (GPU) or FLOP/s (CPU: device_match "cpu") of matching finished runs; None if there are none."""
    def same_device(run: PastRun) -> bool:
        return run.device_name == "cpu" if device_match == "cpu" else device_match in run.device_name

    matches = [r for r in history if r.model_shape == model_shape and r.dtype == dtype and same_device(r)]
    same_arch = [r for r in matches if r.arch == arch]
    matches = same_arch or matches
    if not matches:
        return None
    if device_match == "cpu":
        return Calibration(None, statistics.median(r.flops_per_s for r in matches), len(matches))
    mfus = [r.mfu for r in matches if r.mfu is not None]
    return Calibration(statistics.median(mfus), None, len(mfus)) if mfus else None
