"""Validate once, before any side effect: every value check of a training config, in one place.

`validate(cfg, world_size)` runs right after Hydra composes the config, before the run directory, the
token cache, the process group or the network is touched (lingua's `validate_train_args`, and
torchtitan's `Config.__post_init__`: a config that cannot train fails at the door, never halfway
through set-up). Every problem is one `ConfigError` line saying what is wrong and how to fix it.
Types and misspelt keys are Hydra's job (the typed schema in minigpt/config.py); this module checks
values and the relations between them: shapes the model cannot build, batches that do not divide,
choices a table does not hold (`eval=`, `logger=`, protocols, W&B modes, devices, resume modes).

A few checks also run where a part is built outside training: `check_model` in `GPT.__init__`
(HF import, forecasts on the meta device), `check_hellaswag` in `python -m minigpt.eval`, and
`check_slurm_account` and `check_cluster` at SLURM submission (minigpt/slurm.py), the one moment it matters.
"""

from __future__ import annotations

import re
from pathlib import Path

from minigpt.config import Config
from minigpt.errors import ConfigError
from minigpt.halving.config import DECAY_SHAPES
from minigpt.loggers import LOGGERS
from minigpt.model.checks import check_model  # the model's own checks, re-exported: validate runs them all

ZERO_STAGES = (0, 1)
RESUME_MODES = ("auto", "never")  # or a checkpoint file / run directory
# train.device: auto, or a torch device string (cpu, mps, cuda, cuda:<index>)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# The numeric metrics every run logs at each log step (train.objective may name them); train/mfu too
# when the device's peak FLOP/s is known.
TRAIN_METRICS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens", "train/ms_per_step",
                 "train/tokens_per_s", "train/peak_mem_gb")


def validate(cfg: Config, world_size: int = 1) -> None:
    """Raise ConfigError (one line) for the first value of `cfg` that cannot train on `world_size` ranks."""
    check_model(cfg.arch, cfg.model)
    validate_train_config(cfg, world_size)
    check_device(cfg.train.device)
    check_optimizer(cfg)
    check_resume(cfg.train.resume)
    check_logger(cfg)
    check_eval(cfg)
    check_objective(cfg)
    check_cluster(cfg.cluster)


def check_cluster(cluster) -> None:
    """The job's shape: several nodes need a launcher, one task per GPU, and no more nodes than the partition has."""
    if cluster.nodes < 1 or cluster.tasks_per_node < 1:
        raise ConfigError(f"cluster.nodes={cluster.nodes} and cluster.tasks_per_node={cluster.tasks_per_node} must be >= 1")
    if cluster.nodes > 1 and cluster.name == "local":
        raise ConfigError(f"cluster.nodes={cluster.nodes} needs a SLURM preset (cluster=slurm or an HPRC one): "
                          "cluster=local runs on this machine only; use torchrun on each node for a manual multi-node run")
    gpus, field_name = gpus_per_node(cluster)
    if gpus is not None and cluster.tasks_per_node != gpus:
        raise ConfigError(f"cluster.tasks_per_node={cluster.tasks_per_node} does not match {field_name}: one data-parallel "
                          f"task per GPU, set cluster.tasks_per_node={gpus}")
    if cluster.max_nodes is not None and cluster.nodes > cluster.max_nodes:
        raise ConfigError(f"cluster.nodes={cluster.nodes} is more than partition {cluster.partition}'s "
                          f"{cluster.max_nodes} nodes (cluster.max_nodes): ask for at most {cluster.max_nodes}")


def gpus_per_node(cluster) -> tuple[int | None, str]:
    """The GPUs a job asks for per node and the setting that says so: `gpus_per_node`, or the count that
    ends a `gres` such as gpu:a100:2 (gpu:a100 alone is one); (None, "") for a CPU job."""
    if cluster.gpus_per_node is not None:
        return cluster.gpus_per_node, f"cluster.gpus_per_node={cluster.gpus_per_node}"
    if cluster.gres and cluster.gres.startswith("gpu"):
        count = cluster.gres.rsplit(":", 1)[-1]
        return (int(count) if count.isdigit() else 1), f"cluster.gres={cluster.gres}"
    return None, ""


def validate_train_config(cfg: Config, world_size: int = 1) -> int:
    """Check the run's shape (also for forecasts); returns the gradient-accumulation steps per rank."""
    check_model(cfg.arch, cfg.model)
    tc = cfg.train
    seq_len = tc.sequence_length or cfg.model.block_size
    if seq_len > cfg.model.block_size:
        raise ConfigError(
            f"train.sequence_length={seq_len} is longer than the model context model.block_size={cfg.model.block_size}: "
            "lower the sequence length or raise the block size"
        )
    if tc.num_iterations <= 0 or tc.batch_size <= 0:
        raise ConfigError("train.num_iterations and train.batch_size must be positive")
    if cfg.optim.decay_shape not in DECAY_SHAPES:
        raise ConfigError(f"optim.decay_shape={cfg.optim.decay_shape!r}: choose one of {', '.join(DECAY_SHAPES)}")
    if tc.stop_at is not None and tc.stop_at <= 0:
        raise ConfigError(f"train.stop_at={tc.stop_at} must be a positive step (or null to train to train.num_iterations)")
    check_zero_stage(tc.zero_stage)
    micro_tokens = tc.batch_size * seq_len * world_size  # one micro-batch on every rank
    total = tc.total_batch_size or micro_tokens
    if total % micro_tokens:
        raise ConfigError(
            f"train.total_batch_size={total} is not a multiple of batch_size * sequence_length * ranks = {micro_tokens}: "
            f"use a multiple such as {micro_tokens * max(1, round(total / micro_tokens))}"
        )
    return grad_accum_steps(cfg, world_size)


def grad_accum_steps(cfg: Config, world_size: int = 1) -> int:
    """Micro-batches per rank per optimizer step (of a config validate_train_config accepts)."""
    tc = cfg.train
    micro_tokens = tc.batch_size * (tc.sequence_length or cfg.model.block_size) * world_size
    return (tc.total_batch_size or micro_tokens) // micro_tokens


# torch.optim.Muon (optim=muon) arrived in PyTorch 2.9; pyproject.toml allows older torch for AdamW runs.
MUON_TORCH = "2.9"


def check_optimizer(cfg: Config) -> None:
    """optim=muon on a torch without torch.optim.Muon (a cluster's older CUDA build): one line, before set-up."""
    import torch

    if cfg.optim.kind.value == "muon" and not hasattr(torch.optim, "Muon"):
        raise ConfigError(f"optim=muon needs torch.optim.Muon (PyTorch {MUON_TORCH} or later), this torch is "
                          f"{torch.__version__}: upgrade torch or use optim=adamw")


def check_zero_stage(stage: int) -> None:
    if stage not in ZERO_STAGES:
        raise ConfigError(
            f"train.zero_stage={stage} is not supported: use 0 (plain DDP) or 1 (optimizer state sharded across ranks)"
        )


def check_device(device: str) -> None:
    """A device string, and one this machine has (train.device=cuda without CUDA fails here)."""
    if not DEVICE_PATTERN.fullmatch(str(device)):
        raise ConfigError(f"train.device={device} is not a device: use auto, cpu, cuda, cuda:<index> or mps")
    from minigpt.runtime import pick_device

    pick_device(device)


def check_resume(resume: str) -> None:
    """auto | never | a checkpoint file or run directory. Whether a path exists is resume's to judge: a
    requeued fork continues from its own checkpoints even if the one it started from is gone."""
    if not str(resume or "").strip():
        raise ConfigError(f"train.resume is empty: use {' or '.join(RESUME_MODES)}, or a checkpoint file or run dir")


def check_logger(cfg: Config) -> None:
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger={name!r}: choose one of {sorted(LOGGERS)}")
    if name == "wandb":
        from minigpt.wandb_logger import requested_mode

        requested_mode(cfg.logger.mode)  # logger.mode, else WANDB_MODE: one of online | offline | disabled


def check_eval(cfg: Config) -> None:
    from minigpt.eval.training import EVALS

    name = cfg.eval.name
    if name not in EVALS:
        raise ConfigError(f"unknown eval={name!r}: choose one of {sorted(EVALS)}")
    if name == "hellaswag":
        check_hellaswag(cfg.eval.hellaswag)


def check_hellaswag(hc) -> None:
    from minigpt.eval.hellaswag import get_protocol

    for name in hc.protocols:
        get_protocol(name)
    if not hc.protocols:
        raise ConfigError("eval.hellaswag.protocols is empty: use [llmc,harness] or one of them")
    if hc.batch_size <= 0:
        raise ConfigError(f"eval.hellaswag.batch_size={hc.batch_size} must be positive")
    if hc.limit is not None and hc.limit <= 0:
        raise ConfigError(f"eval.hellaswag.limit={hc.limit} must be positive (or null for all examples)")
    if hc.every < 0:
        raise ConfigError(f"eval.hellaswag.every={hc.every} must be >= 0 (0: only after the last step)")
    if hc.path and not Path(hc.path).is_file():
        raise ConfigError(f"eval.hellaswag.path={hc.path} does not exist: point it at hellaswag_val.jsonl")


def check_slurm_account(cluster) -> None:
    if cluster.account_required and not cluster.account:
        raise ConfigError(
            f"cluster={cluster.name} needs a SLURM account: add cluster.account=<account> "
            "(on TAMU HPRC, `myproject` lists your project accounts)"
        )


def final_metrics(cfg: Config, with_mfu: bool) -> list[str]:
    """The numeric metrics a run of `cfg` returns: every step's train/ ones, val/loss and its evals' results."""
    from minigpt.eval.training import EVALS

    names = [*TRAIN_METRICS, *(["train/mfu"] if with_mfu else []), "val/loss", *EVALS[cfg.eval.name].metrics(cfg)]
    return sorted(names)


def check_objective(cfg: Config) -> None:
    """train.objective (what a search sweeper minimises) must be one of the numeric metrics the run logs."""
    objective = cfg.train.objective
    if objective is None:
        return
    from minigpt.perf import device_name, peak_flops
    from minigpt.runtime import pick_device, resolve_dtype

    tc = cfg.train
    device = pick_device(tc.device)
    metrics = final_metrics(cfg, peak_flops(device_name(device), resolve_dtype(tc.dtype, device), tc.peak_flops) is not None)
    if objective not in metrics:
        raise ConfigError(f"train.objective={objective} is not a metric this run logs: choose one of {', '.join(metrics)}")
