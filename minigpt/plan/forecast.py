"""One job's forecast: size, FLOPs, memory per device, throughput, wall time, GPU-hours, cost, time-limit chunks.

`forecast_job(cfg, ...)` takes the typed config a job would train with and builds the model on the
meta device (shapes only, no memory, no GPU). Stated assumptions:

- FLOPs per token: 6N plus the attention term 12 * n_layer * n_embd * T (PaLM, appendix B; GPT.flops_per_token).
- Throughput: MFU x the GPU's dense peak for the run's dtype (conf/cluster/gpu/), with the MFU from this
  user's finished runs of the same model on the same GPU type (plan/history.py), else DEFAULT_MFU. On a
  CPU, the achieved FLOP/s of earlier CPU runs of the same model; without any, no time is forecast.
  Data-parallel ranks scale throughput linearly.
- Wall time: training tokens / throughput, plus validation and HellaSwag forward passes (a third of a
  training token's cost each), plus STARTUP_S (and COMPILE_S with train.compile) per job segment.
- SLURM: each chunk of `cluster.time_min` trains for time_min - signal_delay_s - start-up; a job needs
  ceil(work / chunk) chunks, i.e. chunks - 1 requeues, which must not exceed `cluster.max_requeues`.
- Memory: minigpt/memory.py (the same model as the trainer's start-up line); a job fits when its peak
  is within MEMORY_HEADROOM of the device's memory.
- Cost: wall hours x (nodes x cluster.node_hour_cost + GPUs x cluster.gpu_hour_cost).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from minigpt.config import Config, OptimizerKind, uses_gqa
from minigpt.errors import ConfigError
from minigpt.memory import (ADAM_STATES, FP32, GIB, MUON_STATES, MemoryEstimate, estimate_step_memory, model_memory,
                            params_without_building)
from minigpt.plan.history import PastRun, calibrate
from minigpt.run_record import model_shape, run_cost
from minigpt.runtime import attention_kernel, resolve_dtype

DEFAULT_MFU = 0.35  # GPT-2-size PyTorch training in bf16 typically reaches 30-45% of peak (llm.c: ~40% on H100)
STARTUP_S = 60.0  # per segment: interpreter, imports, data, first step
COMPILE_S = 120.0  # per segment with train.compile=true
MEMORY_HEADROOM = 0.9  # the rest: CUDA context, NCCL buffers, the caching allocator's fragmentation
HELLASWAG_EXAMPLES = 10042
HELLASWAG_TOKENS_PER_ROW = 100  # a (context, ending) row is about 100 GPT-2 tokens; 4 rows per example


CUDA = torch.device("cuda")


@dataclass
class Device:
    """What one rank trains on."""

    label: str  # a100_40gb, cpu, ...
    match: str  # a100 -> "A100": matches torch.cuda.get_device_name(); "cpu"
    memory_gb: float
    peak_flops: float | None  # for the run's dtype; None on CPUs
    is_gpu: bool = True


def device_of(device: torch.device, dtype: str, peak_override: float | None = None, ranks_per_node: int = 1) -> Device:
    """A device this process can see: a CUDA GPU (its type from conf/cluster/gpu/ when known), else the CPU."""
    from minigpt.perf import match_gpu, peak_flops

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        known = match_gpu(props.name, props.total_memory / GIB)
        return Device(known.name if known else props.name, known.device_match if known else props.name,
                      props.total_memory / GIB, peak_flops(props.name, dtype, peak_override))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return Device(device.type, device.type, ram / max(ranks_per_node, 1), peak_override, is_gpu=False)


def job_device(cfg: Config, ranks_per_node: int = 1) -> Device | None:
    """The cluster preset's GPU type; else this machine (its GPU if train.device allows, else its CPU);
    None when a SLURM preset asks for GPUs without naming their type."""
    gpu = cfg.cluster.gpu
    if gpu is not None:
        peak = gpu.peak_tflops.get(resolve_dtype(cfg.train.dtype, CUDA, bf16_supported=True))
        return Device(gpu.name, gpu.device_match, float(gpu.memory_gb), peak * 1e12 if peak else None)
    if cfg.cluster.name != "local" and (cfg.cluster.gpus_per_node or cfg.cluster.gres):
        return None
    local_gpu = cfg.cluster.name == "local" and str(cfg.train.device) in ("auto", "cuda") and torch.cuda.is_available()
    where = torch.device("cuda" if local_gpu else "cpu")
    device = device_of(where, resolve_dtype(cfg.train.dtype, where), cfg.train.peak_flops, ranks_per_node)
    if not device.is_gpu and cfg.cluster.name != "local" and cfg.cluster.mem_gb:
        device.memory_gb = cfg.cluster.mem_gb / max(ranks_per_node, 1)  # a CPU job gets the memory it asks for
    return device


@dataclass
class JobForecast:
    params: int = 0
    params_non_embedding: int = 0
    flops_per_token: float = 0.0
    tokens: int = 0  # the whole run's training tokens
    ranks: int = 1
    gpus: int = 0
    device: str = "?"
    memory: MemoryEstimate | None = None
    memory_limit_gb: float | None = None
    max_batch_size: int | None = None  # the largest micro-batch that fits (and keeps the batch), None: unknown
    tokens_per_s: float | None = None  # all ranks
    mfu: float | None = None
    throughput_source: str = ""
    remaining: float = 1.0  # fraction of the run still to train (a resumed job: less)
    run_s: float | None = None  # training and evaluation of the remaining work (what run_summary.json's wall_s measures)
    wall_s: float | None = None  # run_s plus a start-up per job segment: what the cluster bills
    gpu_hours: float | None = None
    cost: float | None = None
    cost_unit: str = ""
    chunks: int | None = None  # SLURM time-limit chunks (1 + requeues); None: local or unknown
    problems: list[str] = field(default_factory=list)  # each one refuses the job, with its fix
    warnings: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens

    @property
    def fits(self) -> bool | None:
        if self.memory is None or self.memory_limit_gb is None:
            return None
        return self.memory.peak / GIB <= self.memory_limit_gb

    def summary(self) -> dict:
        """What run_summary.json keeps, so `minigpt.compare` can set it against what was measured."""
        return {
            "device": self.device, "ranks": self.ranks, "params": self.params, "tokens": self.tokens,
            "peak_mem_gb": self.memory.peak / GIB if self.memory else None, "memory_limit_gb": self.memory_limit_gb,
            "tokens_per_s": self.tokens_per_s, "mfu": self.mfu, "throughput_source": self.throughput_source,
            "run_s": self.run_s, "wall_s": self.wall_s, "gpu_hours": self.gpu_hours, "cost": self.cost, "cost_unit": self.cost_unit,
            "chunks": self.chunks,
        }


def _batch_candidates(cfg: Config, seq_len: int, ranks: int) -> tuple[list[int], int | None]:
    """Micro-batches that keep the tokens per optimizer step, largest first, and the total they keep."""
    tc = cfg.train
    total = tc.total_batch_size or tc.batch_size * seq_len * ranks
    per_rank = total // (seq_len * ranks) if total % (seq_len * ranks) == 0 else None
    if per_rank is None:
        return [], None
    return [b for b in range(per_rank, 0, -1) if per_rank % b == 0], total


def _eval_tokens(cfg: Config, seq_len: int) -> float:
    """Forward-pass tokens spent on validation and HellaSwag over the whole run."""
    tc = cfg.train

    def times(every: int) -> int:
        return tc.num_iterations // every + (1 if tc.num_iterations % every else 0) if every > 0 else 1

    tokens = times(tc.val_loss_every) * tc.val_max_steps * tc.batch_size * seq_len
    if cfg.eval.name == "hellaswag":
        hs = cfg.eval.hellaswag
        tokens += times(hs.every) * (hs.limit or HELLASWAG_EXAMPLES) * 4 * HELLASWAG_TOKENS_PER_ROW
    return float(tokens)


def beyond_every_gpu(cfg: Config, ranks: int) -> str | None:
    """One line when even the weights, gradients and optimizer state (sharded over every rank at best) of
    `cfg`'s model need more memory than the largest GPU in conf/cluster/gpu/ has; counted without building it."""
    from minigpt.perf import gpu_types

    params = params_without_building(cfg.arch, cfg.model)
    states = MUON_STATES if cfg.optim.kind == OptimizerKind.muon else ADAM_STATES  # Muon's fewer: a lower bound
    need = FP32 * params * 2 + FP32 * states * params / ranks
    largest = max(gpu_types().values(), key=lambda gpu: gpu.memory_gb)
    if need / GIB <= largest.memory_gb:
        return None
    return (f"the model has {params / 1e9:,.1f}B parameters: its weights, gradients and optimizer state alone need "
            f"{need / GIB:,.0f} GiB per device, more than any GPU minigpt knows holds (the largest: {largest.name}, "
            f"{largest.memory_gb:g} GB): use a smaller model (model.n_layer={cfg.model.n_layer}, "
            f"model.n_embd={cfg.model.n_embd})")


def forecast_job(cfg: Config, history: list[PastRun] = (), *, remaining: float = 1.0,
                 default_mfu: float = DEFAULT_MFU, device: Device | None = None, ranks: int | None = None) -> JobForecast:
    """Everything `python -m minigpt.plan` says about one job; problems are listed, never raised.

    `device` and `ranks` default to what the cluster preset asks for (`local`: this machine, one rank).
    """
    from minigpt.model import GPT
    from minigpt.validate import validate_train_config

    cl, tc = cfg.cluster, cfg.train
    local = cl.name == "local"
    ranks = ranks or (1 if local else cl.nodes * cl.tasks_per_node)
    out = JobForecast(ranks=ranks, remaining=remaining, cost_unit=cl.cost_unit)
    seq_len = tc.sequence_length or cfg.model.block_size
    try:
        grad_accum = validate_train_config(cfg, ranks)
        too_big = beyond_every_gpu(cfg, ranks)
        if too_big:
            out.problems.append(too_big)
            return out
        with torch.device("meta"):
            model = GPT(cfg.arch, cfg.model)
    except ConfigError as exc:
        out.problems.append(str(exc))
        return out
    out.params, out.params_non_embedding = model.num_params(), model.num_params(non_embedding=True)
    out.flops_per_token = model.flops_per_token(seq_len)
    out.tokens = tc.num_iterations * grad_accum * tc.batch_size * seq_len * ranks

    if not local and cl.max_gpus_per_node and (cl.gpus_per_node or 0) > cl.max_gpus_per_node:
        n = cl.max_gpus_per_node
        out.problems.append(
            f"cluster.gpus_per_node={cl.gpus_per_node} but {cl.name} nodes have {n} GPUs: use cluster.gpus_per_node={n} "
            f"cluster.nodes={math.ceil(cl.gpus_per_node / n)}")
    device = device or job_device(cfg, 1 if local else cl.tasks_per_node)
    if device is None:
        out.warnings.append(f"{cl.name} asks for GPUs of an unknown type: name it with cluster/gpu=<type> "
                            "(a100_40gb, a100_80gb, h100, h100_pcie, h100_nvl, h200, h200_nvl) to forecast memory and time")
        return out
    out.device = device.label
    out.gpus = ranks if device.is_gpu else 0

    fixed = model_memory(model, cfg.optim.kind, ranks, tc.zero_stage)  # once: the same for every micro-batch
    dtype = job_dtype(cfg, device)
    math_attention = attention_kernel(CUDA if device.is_gpu else torch.device("cpu"), dtype,
                                      uses_gqa(cfg.arch, cfg.model)) == "math"

    def memory_at(batch_size: int, accum: int) -> MemoryEstimate:
        return estimate_step_memory(fixed, cfg.arch, cfg.model, batch_size=batch_size, seq_len=seq_len,
                                    dtype=dtype, world_size=ranks, zero_stage=tc.zero_stage,
                                    grad_accum=accum, optimizer=cfg.optim.kind, math_attention=math_attention)

    out.memory = memory_at(tc.batch_size, grad_accum)
    out.memory_limit_gb = MEMORY_HEADROOM * device.memory_gb
    candidates, total = _batch_candidates(cfg, seq_len, ranks)
    per_rank = total // (seq_len * ranks) if total else 0
    fitting = [b for b in candidates if memory_at(b, per_rank // b).peak / GIB <= out.memory_limit_gb]
    out.max_batch_size = fitting[0] if fitting else (0 if candidates else None)
    if not out.fits:
        need = f"needs {out.memory.peak / GIB:.1f} GiB per {device.label} at train.batch_size={tc.batch_size}, " \
               f"{out.memory_limit_gb:.1f} GiB usable"
        if fitting:
            keep = f" train.total_batch_size={total}" if not tc.total_batch_size else ""
            out.problems.append(f"out of memory: {need}: use train.batch_size={fitting[0]}{keep} "
                                "(the largest micro-batch that fits; gradient accumulation keeps the batch)")
        else:
            out.problems.append(f"out of memory: {need}, even at batch 1: use a GPU with more memory "
                                "(cluster/gpu=...) or more ranks with train.zero_stage=1")

    _throughput(out, cfg, history, device, default_mfu)
    if out.tokens_per_s and remaining > 0:
        _time_and_cost(out, cfg, seq_len, local)
    elif out.tokens_per_s:  # finished (or running elsewhere): nothing left to pay for
        out.run_s = out.wall_s = out.gpu_hours = out.cost = 0.0
        out.chunks = None if local else 0
    return out


def job_dtype(cfg: Config, device: Device) -> str:
    """train.dtype on the job's device: `auto` is bfloat16 on a GPU (every type in conf/cluster/gpu/ is
    Ampere or later; a GPU this process sees is asked), float32 on a CPU."""
    if not device.is_gpu:
        return resolve_dtype(cfg.train.dtype, torch.device("cpu"))
    return resolve_dtype(cfg.train.dtype, CUDA, bf16_supported=None if torch.cuda.is_available() else True)


def _throughput(out: JobForecast, cfg: Config, history: list[PastRun], device: Device, default_mfu: float) -> None:
    shape, dtype = model_shape(cfg), job_dtype(cfg, device)
    found = calibrate(history, model_shape=shape, dtype=dtype, arch=cfg.arch.name, device_match=device.match)
    if device.peak_flops:
        mfu = found.mfu if found else default_mfu
        out.mfu = mfu
        per_device = mfu * device.peak_flops
        out.throughput_source = (f"MFU {100 * mfu:.0f}% from {found.runs} finished run(s) of {shape} on {device.label}"
                                 if found else f"MFU {100 * mfu:.0f}% assumed (no finished {shape} {dtype} run on "
                                 f"{device.label} yet)")
    elif found and found.flops_per_s:
        per_device = found.flops_per_s
        out.throughput_source = f"{per_device / 1e9:.1f} GFLOP/s from {found.runs} finished run(s) of {shape} on {device.label}"
    else:
        out.throughput_source = f"no time forecast: no finished {shape} {dtype} run on {device.label} to calibrate from " \
                                "(a short run of this model gives one)"
        return
    out.tokens_per_s = per_device * out.ranks / out.flops_per_token


def _time_and_cost(out: JobForecast, cfg: Config, seq_len: int, local: bool) -> None:
    cl, tc = cfg.cluster, cfg.train
    work_s = out.remaining * (out.tokens + _eval_tokens(cfg, seq_len) / 3) / out.tokens_per_s
    overhead = STARTUP_S + (COMPILE_S if tc.compile else 0.0)
    segments = 1
    if not local:
        if cl.max_time_min and cl.time_min > cl.max_time_min:
            out.problems.append(f"cluster.time_min={cl.time_min} is over the partition's limit "
                                f"cluster.max_time_min={cl.max_time_min}: lower it")
        if cl.max_time_min is None:
            out.warnings.append(f"{cl.name}: the partition's time limit is unknown: set cluster.max_time_min "
                                "(`sinfo -o \"%P %l\"` shows it)")
        chunk_s = cl.time_min * 60 - cl.signal_delay_s - overhead
        if chunk_s <= 0:
            out.problems.append(f"cluster.time_min={cl.time_min} leaves no time to train after start-up and the "
                                f"{cl.signal_delay_s} s checkpoint signal: raise it")
            return
        segments = out.chunks = max(1, math.ceil(work_s / chunk_s))
        if out.chunks - 1 > cl.max_requeues:
            longest = cl.max_time_min or cl.time_min
            fix = f"cluster.max_requeues={out.chunks - 1}"
            if longest > cl.time_min:
                chunks_at_max = math.ceil(work_s / (longest * 60 - cl.signal_delay_s - overhead))
                fix += f", or cluster.time_min={longest} ({chunks_at_max} chunk{'s' if chunks_at_max > 1 else ''})"
            out.problems.append(
                f"cannot finish: about {work_s / 3600:.1f} h of training needs {out.chunks} chunks of "
                f"cluster.time_min={cl.time_min} min, but cluster.max_requeues={cl.max_requeues} allows "
                f"{cl.max_requeues + 1}: set {fix}")
    out.run_s = work_s
    out.wall_s = work_s + segments * overhead
    out.gpu_hours = out.wall_s / 3600 * out.gpus
    out.cost = run_cost(cl, out.wall_s / 3600, out.gpus)


def start_forecast(trainer, start_step: int = 0) -> dict:
    """The forecast for a run started (or resumed) at `start_step`, on its own device and world size."""
    from minigpt.plan.history import load_history

    cfg = trainer.cfg
    device = device_of(trainer.device, trainer.dtype, cfg.train.peak_flops)
    history = load_history(["outputs"], exclude=trainer.run_dir)
    remaining = 1.0 - start_step / max(cfg.train.num_iterations, 1)
    return forecast_job(cfg, history, remaining=remaining, device=device, ranks=trainer.dist.world_size).summary()
