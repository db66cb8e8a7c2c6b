"""The `cluster` group: where runs execute, local or a SLURM preset (conf/cluster/), and the GPU types the
forecast knows (conf/gpu/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING


@dataclass
class GPUConfig:
    """One GPU type (conf/cluster/gpu/): its memory and dense tensor-core peak, for `python -m minigpt.plan` and MFU."""

    name: str = MISSING
    device_match: str = MISSING  # a substring of torch.cuda.get_device_name() that identifies this type
    memory_gb: float = MISSING  # GiB (2^30 bytes), as nvidia-smi and torch report it
    peak_tflops: Dict[str, float] = field(default_factory=dict)  # per train.dtype; float32 means TF32


@dataclass
class ClusterConfig:
    """Where runs execute: `local` (this machine) or a SLURM preset (conf/cluster/), which selects Hydra's
    submitit launcher and fills `hydra.launcher` from these fields; override them as cluster.<field>=..."""

    name: str = "local"
    partition: Optional[str] = None
    account: Optional[str] = None  # SLURM account / allocation
    account_required: bool = False  # the HPRC presets refuse to submit without an account
    qos: Optional[str] = None
    nodes: int = 1
    max_nodes: Optional[int] = None  # nodes the partition has (`sinfo -p <partition> -h -o %D`); None: unknown
    tasks_per_node: int = 1  # processes per node (one per GPU once training is data-parallel)
    gpus_per_node: Optional[int] = None  # generic `--gpus-per-node`; HPRC presets use `gres` instead
    max_gpus_per_node: Optional[int] = None  # GPUs a node has (Grace: 2), checked by the forecast; None: unknown
    gpu: Optional[GPUConfig] = None  # the GPU type (cluster/gpu=a100_40gb|a100_80gb|h100|h200); None: none named
    gres: Optional[str] = None  # e.g. gpu:a100:2
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    time_min: int = 60  # job time limit; a job that reaches it is checkpointed and requeued
    max_time_min: Optional[int] = None  # the partition's longest allowed time limit (`sinfo -o "%P %l"`); None: unknown
    max_requeues: int = 3  # times a job may be requeued at its time limit (submitit's max_num_timeout)
    signal_delay_s: int = 120  # SIGUSR2 this many seconds before the time limit: time to checkpoint
    setup: List[str] = field(default_factory=list)  # shell lines run before the job (module load, venv)
    rendezvous_timeout_s: int = 600  # ranks that have not all joined by then end the job, naming the missing ones
    collective_timeout_s: int = 300  # after the first step: a collective waiting this long for a lost rank fails
    # What an hour costs here, for the forecast, the comparison report and W&B (dollars, HPRC service units...):
    # per GPU, plus per node for clusters that bill whole nodes (HPRC bills GPU jobs as whole nodes).
    gpu_hour_cost: float = 0.0
    node_hour_cost: float = 0.0
    cost_unit: str = "USD"
    # Submitting to SLURM (minigpt/slurm_launcher.py). wait=false: submit, print each job's id and run dir, return.
    wait: bool = True  # true: the command waits for the jobs (as Hydra's submitit launcher does); they requeue alone either way
    max_array_size: int = 1001  # the cluster's MaxArraySize (`scontrol show config | grep MaxArraySize`): bigger sweeps go as several arrays
    array_parallelism: int = 256  # at most this many jobs of one array run at once (sbatch --array=...%N)
