"""Typed configuration: dataclasses registered in Hydra's ConfigStore.

`conf/config.yaml` lists `base_config` (this schema) first in its defaults, so every preset in
`conf/<group>/` and every command-line override is checked against these types: a misspelt key or a
wrong type fails before any work, with Hydra naming the key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, open_dict, read_write

from minigpt.halving.config import HalvingConfig
from minigpt.run_identity import register_resolvers


def path_field(default: Optional[str] = None) -> Any:
    """A field that holds a filesystem path: `to_config` expands a leading `~` in it (see expand_user_paths)."""
    return field(default=default, metadata={"path": True})


class PosEncoding(str, Enum):
    learned = "learned"
    rope = "rope"


class Norm(str, Enum):
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class MLPKind(str, Enum):
    gelu = "gelu"
    swiglu = "swiglu"
    relu2 = "relu2"  # relu(x)^2 (Primer; modded-nanogpt, nanochat): a plain d -> 4d -> d MLP like gelu


class OptimizerKind(str, Enum):
    adamw = "adamw"
    muon = "muon"  # Muon for the blocks' matrices, AdamW for embeddings, head, norms and biases


class LRSchedule(str, Enum):
    cosine = "cosine"  # llm.c: linear warmup, cosine down to learning_rate * learning_rate_decay_frac
    wsd = "wsd"  # warmup-stable-decay: linear warmup, constant, linear decay over the last decay_frac


class DataKind(str, Enum):
    shakespeare = "shakespeare"  # the embedded tiny-shakespeare plays
    text = "text"  # local text files (.txt .md .jsonl)
    shards = "shards"  # llm.c .bin token shards (python -m minigpt.prepare writes them)


class DType(str, Enum):
    auto = "auto"  # bfloat16 on a CUDA GPU that supports it, float32 elsewhere (minigpt.runtime.resolve_dtype)
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ArchConfig:
    """Architecture components; each one is an independent switch."""

    name: str = "gpt2"
    pos_encoding: PosEncoding = PosEncoding.learned
    norm: Norm = Norm.layernorm
    mlp: MLPKind = MLPKind.gelu
    # Grouped-query attention: number of key/value heads (must divide model.n_head). None = n_head
    # (plain multi-head attention). `q_per_kv` is the alternative ratio form, used when n_kv_head is None.
    n_kv_head: Optional[int] = None
    q_per_kv: int = 1
    rope_theta: float = 10000.0
    bias: bool = True  # biases in linear layers and LayerNorm (GPT-2 has them, Llama does not)
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    # Switches of the modern (speedrun / nanochat) recipe; all off in the seed's four presets.
    qk_norm: bool = False  # parameter-free RMSNorm of each query and key head before RoPE and attention
    logit_softcap: Optional[float] = None  # c: logits -> c * tanh(logits / c); None = off
    zero_init_proj: bool = False  # attention and MLP output projections start at zero: blocks start as identities
    embed_norm: bool = False  # parameter-free RMSNorm of the embeddings before the first block (as nanochat)


def resolve_kv_heads(arch: "ArchConfig", model: "ModelConfig") -> int:
    """Number of key/value heads: explicit `n_kv_head`, else n_head / q_per_kv."""
    if arch.n_kv_head is not None:
        return arch.n_kv_head
    return model.n_head // max(arch.q_per_kv, 1)


def uses_gqa(arch: "ArchConfig", model: "ModelConfig") -> bool:
    """Grouped-query attention: fewer key/value heads than query heads (SDPA's enable_gqa)."""
    return resolve_kv_heads(arch, model) != model.n_head


@dataclass
class ModelConfig:
    """Size: layers, width, heads, context."""

    name: str = "tiny"
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128  # context length
    vocab_size: int = 50257
    # Pad the embedding table to a multiple of this for faster matmuls (50257 -> 50304 at 128).
    vocab_pad_multiple: int = 128


@dataclass
class OptimConfig:
    """Optimizer and lr schedule, with llm.c's key names (defaults: llm.c's GPT-2 124M AdamW recipe).

    kind=muon (conf/optim/muon.yaml): `learning_rate` is Muon's, for the 2-D matrices inside the
    blocks; AdamW (beta1, beta2, eps) trains the rest with embedding_lr / head_lr / scalar_lr, given for
    width `lr_ref_width` and scaled by sqrt(lr_ref_width / n_embd) as nanochat does. The schedule scales
    every group's own lr by the same factor.
    """

    name: str = "adamw"
    kind: OptimizerKind = OptimizerKind.adamw
    learning_rate: float = 6e-4
    warmup_iters: int = 700
    schedule: LRSchedule = LRSchedule.cosine
    learning_rate_decay_frac: float = 0.0  # the schedule ends at learning_rate * this
    decay_frac: float = 0.2  # wsd: the lr decays over this last fraction of the run
    decay_shape: str = "linear"  # wsd's decay: linear | 1-sqrt (Hägele et al. 2024)
    weight_decay: float = 0.1  # adamw: 2-D weights only; muon: Muon's matrices only (decoupled, lr * wd)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    fused: Optional[bool] = None  # None: fused AdamW on CUDA and CPU, plain elsewhere
    # kind=muon: AdamW's groups and Muon's momentum (nanochat's values at width 768)
    embedding_lr: float = 0.3  # token and position embeddings
    head_lr: float = 0.008  # the output head (tied embeddings take this lr too)
    scalar_lr: float = 0.01  # norm gains and biases
    lr_ref_width: Optional[int] = 768  # AdamW lrs above are for this width; None: use them as given
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # warmed up linearly to muon_momentum over muon_momentum_warmup_iters
    muon_momentum_warmup_iters: int = 300
    muon_ns_steps: int = 5  # Newton-Schulz iterations (torch.optim.Muon runs them in bfloat16)


@dataclass
class PrepareConfig:
    """`python -m minigpt.prepare`: documents -> llm.c shards in data.path (first shard = val)."""

    source: Optional[str] = path_field()  # HF dataset id, or local files (folder/file/glob of .jsonl .json .parquet .txt .csv)
    subset: Optional[str] = None  # HF dataset config, e.g. sample-10BT
    split: str = "train"
    text_field: str = "text"
    shard_size: int = 100_000_000  # tokens per shard, as llm.c's fineweb.py
    num_workers: int = 0  # tokenizer processes; 0: one per CPU core
    max_shards: Optional[int] = None  # stop after this many shards; rerun without it to continue


@dataclass
class DataConfig:
    """Where tokens come from. `kind`: shakespeare (embedded, default) | text (local files) | shards (.bin)."""

    name: str = "shakespeare"
    kind: DataKind = DataKind.shakespeare
    path: Optional[str] = path_field()  # folder, file or glob (text: .txt/.md/.jsonl; shards: .bin)
    val_plays: List[str] = field(default_factory=lambda: ["hamlet", "the-tempest"])
    val_fraction: float = 0.05  # text kind: the tail of the token stream held out for validation
    jsonl_field: str = "text"
    cache_dir: str = path_field("${oc.env:MINIGPT_CACHE,${oc.env:HOME,.}/.cache/minigpt}/data")
    prepare: PrepareConfig = field(default_factory=PrepareConfig)


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


@dataclass
class LoggerConfig:
    """Extra metrics destination besides metrics.jsonl: `none` or `wandb` (see minigpt/wandb_logger.py)."""

    name: str = "none"
    project: str = "minigpt"
    entity: Optional[str] = None  # W&B team or user; None: the API key's default entity
    group: Optional[str] = None  # None: the sweep's name under --multirun, else `experiment`
    job_type: Optional[str] = None  # None: the run's overrides without seeds (minigpt/experiment.py), else the arch
    tags: List[str] = field(default_factory=list)  # added to the automatic arch=/model= tags
    mode: Optional[str] = None  # online | offline | disabled; None: follow WANDB_MODE (default online)
    dir: Optional[str] = path_field()  # where the wandb/ folder goes; None: the run directory


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


@dataclass
class HellaSwagConfig:
    """HellaSwag validation (minigpt/eval/): where the data comes from, how often, how much."""

    path: Optional[str] = path_field()  # a hellaswag_val.jsonl; None: the cache, then a verified download
    cache_dir: str = path_field("${oc.env:MINIGPT_CACHE,${oc.env:HOME,.}/.cache/minigpt}/hellaswag")
    download: bool = True  # fetch the official file (sha256-checked) when it is not cached
    url: str = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"  # or a mirror
    every: int = 250  # steps between evaluations in training; 0: only after the last step
    limit: Optional[int] = None  # the first N examples only (CPU runs); None: all 10042
    batch_size: int = 64  # (context, ending) rows per forward pass; 4 rows per example
    protocols: List[str] = field(default_factory=lambda: ["llmc", "harness"])


@dataclass
class EvalConfig:
    name: str = "none"
    hellaswag: HellaSwagConfig = field(default_factory=HellaSwagConfig)


@dataclass
class Config:
    arch: ArchConfig = field(default_factory=ArchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: Optional[str] = None  # set by conf/experiment presets, for grouping runs
    halving: HalvingConfig = field(default_factory=HalvingConfig)  # python -m minigpt.halving's settings (not hashed)


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)


register_configs()
register_resolvers(Config)  # ${minigpt.run_hash:} / ${minigpt.run_name:} in hydra.run.dir and the sweeps' subdirs


def to_container(cfg: Any) -> dict:
    """Resolved plain-dict view of a config (for checkpoints and loggers); enums become their names."""
    import dataclasses

    from omegaconf import OmegaConf

    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def expand_user_paths(node: Any) -> Any:
    """Expand a leading `~` (`~user`) in every `path_field` of a config tree, in place; returns `node`.

    Done once here rather than where each path is opened, so no code path can miss it: Hydra passes
    `'data.path="~/corpus"'` through as the literal `~/corpus` (the shell does not expand a quoted `~`,
    nor an unquoted one after `data.path=`), as it does `~` in YAML presets.
    """
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            expand_user_paths(value)
        elif f.metadata.get("path") and isinstance(value, str):
            setattr(node, f.name, os.path.expanduser(value))
    return node


def to_config(cfg: Any) -> Config:
    """DictConfig (from Hydra) -> typed `Config` objects, resolving interpolations and expanding `~` in paths.

    A `???` left in the config (e.g. data=text without data.path) becomes one clear ConfigError line.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    from minigpt.errors import ConfigError

    try:
        return expand_user_paths(OmegaConf.to_object(cfg))
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a required value"
        raise ConfigError(f"{key} is required but not set: add {key}=... to the command line") from exc


def compose_typed(overrides: list[str]) -> Config:
    """The typed Config that `python -m minigpt.train <overrides>` would use, without a Hydra run dir.

    For the other entrypoints (prepare, bench), so they take the same presets and overrides.
    """
    from hydra import compose, initialize_config_dir

    from minigpt.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


class ExpandUserDirs(Callback):
    """Expand a leading `~` in Hydra's own output folders, `hydra.run.dir` and `hydra.sweep.dir`.

    They are Hydra's keys, not ours, so `to_config` never sees them, and Hydra would create a folder
    literally named `~` in the current directory. Listed first in conf/config.yaml's callbacks, so
    the run-dir lock and Hydra's own mkdir see the expanded folder.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _expand_hydra_dir(config, "run")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # Each job's config is composed again from the recorded overrides (Hydra's load_sweep_config),
        # so the override itself is rewritten too, not only this composed value.
        if (expanded := _expand_hydra_dir(config, "sweep")) is not None:
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.overrides.hydra = [
                    f"hydra.sweep.dir={_hydra_quote(expanded)}" if o.split("=", 1)[0] == "hydra.sweep.dir" else o
                    for o in config.hydra.overrides.hydra
                ]


def _expand_hydra_dir(config: Any, mode: str) -> Optional[str]:
    """Replace `hydra.<mode>.dir` by its home-expanded value if it starts with `~`; returns that value, else None."""
    try:
        folder = str(config.hydra[mode].dir)
    except Exception:  # noqa: BLE001 - a folder that only resolves later (per job) is left to Hydra
        return None
    if not folder.startswith("~"):
        return None
    expanded = os.path.expanduser(folder)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[mode].dir = expanded
    return expanded


def _hydra_quote(value: str) -> str:
    """`value` as a quoted string in Hydra's override grammar."""
    return f"'{value}'" if "'" not in value else f'"{value}"'
