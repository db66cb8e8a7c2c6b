"""What makes two runs the same experiment: their configs agree on everything but seeds and where they ran.

Runs that differ only in `SEED_KEYS` are repeats of one experiment (an "arm" of an ablation):
`minigpt.compare` pools them into one group, and the W&B `job_type` leaves the seeds out, so W&B's
"group by job_type" shows one line with a spread per arm. Keys under `NOT_EXPERIMENT` say where or
how a run executed or was recorded (cluster, logger, caches, checkpoint cadence), not what was
trained, and never split a group.
"""

from __future__ import annotations

import hashlib

SEED_KEYS = ("train.seed", "train.init_seed", "train.data_seed")
NOT_EXPERIMENT = (
    "hydra", "cluster", "logger",  # where it ran and where it was recorded
    "data.cache_dir", "eval.hellaswag.cache_dir", "eval.hellaswag.path", "eval.hellaswag.download",
    "eval.hellaswag.url", "eval.hellaswag.batch_size",  # where the data came from (the example ids check it)
    "train.resume", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
    "train.objective",
)
JOB_TYPE_MAX = 64  # W&B's limit for job_type


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    key = key.lstrip("+~")
    return any(key == p or key.startswith(p + ".") or key.startswith(p + "/") for p in prefixes)


def is_experiment_key(key: str) -> bool:
    """False for seeds and for keys that only say where/how a run executed (see NOT_EXPERIMENT)."""
    return not (_under(key, SEED_KEYS) or _under(key, NOT_EXPERIMENT))


def experiment_overrides(overrides: list[str]) -> list[str]:
    """A job's `key=value` overrides without seeds and infrastructure: what defines its arm."""
    return [o for o in overrides if is_experiment_key(o.split("=", 1)[0])]


def job_type(overrides: list[str], fallback: str) -> str:
    """The configuration without seeds as a W&B job_type (at most 64 characters, still unique per config)."""
    name = " ".join(experiment_overrides(overrides)) or fallback
    if len(name) <= JOB_TYPE_MAX:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return name[: JOB_TYPE_MAX - len(digest) - 2].rstrip() + " #" + digest
