"""The `train` group: steps, batch, dtype, evaluation cadence, checkpoints and resume (conf/train/)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from minigpt.config.fields import path_field


class DType(str, Enum):
    auto = "auto"  # bfloat16 on a CUDA GPU that supports it, float32 elsewhere (minigpt.runtime.resolve_dtype)
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class TrainConfig:
    """Loop settings, named like llm.c's flags."""

    num_iterations: int = 200
    batch_size: int = 8  # micro-batch (sequences per forward)
    sequence_length: Optional[int] = None  # None: model.block_size
    total_batch_size: Optional[int] = None  # tokens per optimizer step; None: one micro-batch
    dtype: DType = DType.auto  # auto: bfloat16 on a CUDA GPU that supports it, else float32
    zero_stage: int = 0
    overfit_single_batch: bool = False
    val_loss_every: int = 50  # also at step 0 and at the end; 0: only at the end
    val_max_steps: int = 10  # validation batches per evaluation
    sample_every: int = 100  # also a sample at the end; 0: no samples at all
    sample_tokens: int = 48
    seed: int = 1337  # the one knob: sets both seeds below unless they are given
    init_seed: Optional[int] = None  # weight initialisation (and torch/numpy/python RNGs); None: seed
    data_seed: Optional[int] = None  # order of the training batches; None: seed
    device: str = "auto"  # auto: cuda, then mps, then cpu
    compile: bool = False
    # torch.compile's backend: inductor (generated kernels); aot_eager traces the same graphs without code
    # generation (what a graph-break check needs, in a fraction of the time)
    compile_backend: str = "inductor"
    log_every: int = 1  # also how often the host reads the device (loss, norm, stop signals under DDP)
    gc_every: int = 100  # Python GC: automatic collection off, a collection every N steps; 0: Python's default
    checkpoint_every: int = 0  # 0: checkpoint only at the end (and on SIGTERM/SIGUSR1/SIGUSR2)
    keep_checkpoints: int = 3  # keep the newest K checkpoints; 0 keeps all
    skip_nonfinite: int = 0  # 0: a non-finite loss or grad norm stops the run; N: skip up to N such steps first
    resume: str = path_field("auto")  # auto: newest valid checkpoint in the run dir | never | <checkpoint file or run dir>
    # Fine-tuning: start from these weights (a checkpoint, run dir or HF GPT-2 folder); arch/model must match.
    init_from: Optional[str] = path_field()
    peak_flops: Optional[float] = None  # per-device peak FLOP/s for MFU; None: look up A100/H100/H200
    objective: Optional[str] = None  # a final metric (e.g. val/loss) that the job returns, for Optuna sweeps
    stop_at: Optional[int] = None  # pause at this step (checkpoint, then exit; rerun with a later one to go on): not hashed
    rerun: bool = False  # train a finished (or any earlier) run in this run dir again, from scratch (minigpt/rundir.py)

    # Separate seeds let a sweep tell initialisation noise from data-order noise; `seed` alone sets both.
    @property
    def effective_init_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed
