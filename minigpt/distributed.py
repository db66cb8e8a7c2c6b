"""Data parallelism: who am I (rank / world size from torchrun or SLURM), DDP, ZeRO-1, reductions.

One process per device. Under `torchrun` the rank comes from RANK / WORLD_SIZE / LOCAL_RANK; under
SLURM (`srun`, or submitit with tasks_per_node = GPUs per node) from SLURM_PROCID / SLURM_NTASKS /
SLURM_LOCALID, with the master address taken from the job's node list (first node) and a port
derived from the job id, so every task agrees without talking. NCCL on GPUs, gloo on CPU.

Every rank runs the same loop; only rank 0 writes metrics, logs and checkpoints. With
`train.zero_stage=1` the optimizer state is sharded across ranks (ZeroRedundancyOptimizer); its
state is consolidated onto rank 0 for checkpoints, and every rank loads the full state on resume.

Before joining, each rank checks that the master address resolves (`check_master_resolves`: one line
naming the host and the fix, instead of a hang), and the join itself (`rendezvous`) is bounded: a rank
that does not arrive within `cluster.rendezvous_timeout_s` ends the job with the ranks that are missing.
Node-local work (the token cache) runs first on each node's local rank 0 (`node_first`), never on
the assumption that global rank 0 shares a node with the others (under torchrun's c10d it need not).

Timeouts (torchtitan's scheme): the group starts with a long collective timeout (LONG_TIMEOUT_S) for
set-up, where one rank may work alone for long (tokenizing, compiling); after the first step the
trainer shortens it to `cluster.collective_timeout_s` (`shorten_timeout`), so a lost or frozen rank
ends the job in minutes instead of half an hour. Rank-0 work the others wait for (checkpoint writes)
runs under `long_timeout()`. A collective that fails because a peer is gone becomes one line naming
the rank (minigpt/peers.py, from a per-rank heartbeat in the rendezvous store).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist

from minigpt import peers
from minigpt.errors import ConfigError, RunFailure

log = logging.getLogger("minigpt")

LONG_TIMEOUT_S = 1800  # torch's gloo default; NCCL's (10 min) is too short for tokenizing a corpus on one rank
# (the default group, its short timeout), set after the first step (shorten_timeout); a group destroyed and
# made anew in the same process (tests, the Python API) starts with the long one again
_short_timeout: tuple[object, timedelta] | None = None


def _current_short_timeout() -> timedelta | None:
    if _short_timeout is None or not (dist.is_available() and dist.is_initialized()):
        return None
    group, timeout = _short_timeout
    return timeout if group is dist.group.WORLD else None

@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _slurm_master(env: Mapping[str, str]) -> tuple[str, int]:
    from submitit.slurm.slurm import _parse_node_list  # the same parser submitit's own helpers use

    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ConfigError("SLURM_NTASKS > 1 but SLURM_JOB_NODELIST is unset: launch the tasks with srun")
    addr = env.get("MASTER_ADDR") or _parse_node_list(nodelist)[0]
    # Same port on every task of the job: derived from the job id, away from well-known ports.
    port = int(env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID", "0")) % 40000)
    return addr, port


def detect(env: Mapping[str, str] | None = None) -> DistEnv:
    """Rank, world size and master address from the launcher's environment variables."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (also torchrun inside a SLURM allocation)
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR"), int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else None, "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:  # srun / submitit, one task per GPU
        addr, port = _slurm_master(env)
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       addr, port, "slurm")
    return DistEnv()


def rank_device(env: DistEnv, device: torch.device) -> torch.device:
    """This rank's device: its own GPU (cuda:LOCAL_RANK) under data parallelism, else `device` itself."""
    return torch.device("cuda", env.local_rank) if env.enabled and device.type == "cuda" else device


def check_master_resolves(env: DistEnv, source: str) -> None:
    """The master address must resolve on this host before we wait on it: say which name and what to do.
    `source` says where the name came from (MASTER_ADDR, or SLURM's first node)."""
    try:
        socket.getaddrinfo(env.master_addr, env.master_port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"rank {env.rank} on host {socket.gethostname()}: the master address {env.master_addr!r} ({source}) does not "
            f"resolve ({getattr(exc, 'strerror', exc)}): add the node names to /etc/hosts or DNS, "
            "or set MASTER_ADDR to a name or IP address that every node resolves"
        ) from None


def rendezvous(env: DistEnv, timeout_s: float) -> "dist.Store":
    """A TCP store that every rank has reached, within `timeout_s`; else RunFailure naming the missing ranks.

    Rank 0 (under torchrun: its agent) hosts the store at master_addr:master_port; every rank writes its
    host name under its rank and waits for all the others, so a rank that never started (or sits on an
    unreachable node) ends the job in bounded time with its number instead of a silent hang. Each rank's
    heartbeat (minigpt/peers.py) starts here too, in the same store.
    """
    where = f"{env.master_addr}:{env.master_port}"
    # torchrun's agent already hosts a store at MASTER_ADDR:MASTER_PORT (every rank is its client there);
    # under srun rank 0 hosts it. Keys carry torchrun's restart count: the agent's store outlives a restart.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=env.is_main and not agent_store,
                              timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
    except (RuntimeError, OSError) as exc:  # DistStoreError / DistNetworkError are RuntimeErrors
        raise RunFailure(f"rank {env.rank} on host {socket.gethostname()} could not reach rank 0's store at {where} "
                         f"within {timeout_s:g} s (cluster.rendezvous_timeout_s): did rank 0 start? is the port free "
                         f"and open between the nodes? ({str(exc).splitlines()[0]})") from None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    keys = [f"minigpt/{attempt}/arrived/{rank}" for rank in range(env.world_size)]
    peers.start(env.master_addr, env.master_port, env.rank, env.world_size, prefix=f"minigpt/{attempt}")
    store.set(keys[env.rank], socket.gethostname())
    try:
        store.wait(keys, timedelta(seconds=timeout_s))
    except RuntimeError:
        missing = [rank for rank, key in enumerate(keys) if not store.check([key])]
        raise RunFailure(f"rendezvous at {where} did not complete within {timeout_s:g} s (cluster.rendezvous_timeout_s): "
                         f"rank(s) {', '.join(map(str, missing))} of {env.world_size} did not arrive; "
                         "check that every task started (squeue, their logs)") from None
    return store


def setup(device: torch.device, rendezvous_timeout_s: float = 600.0) -> tuple[DistEnv, torch.device]:
    """Join the process group (idempotent) and pick this rank's device; single process: a no-op.

    The one side effect of data parallelism, run by the entrypoint after `validate()` and before the
    Trainer is built (the Trainer wraps its model in DDP, which needs the group).
    """
    env = detect()
    if not env.enabled:
        return env, device
    device = rank_device(env, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        check_master_resolves(env, "MASTER_ADDR" if os.environ.get("MASTER_ADDR") else "the first node of SLURM_JOB_NODELIST")
        # torchrun's variables, also under SLURM, so code that reads RANK / WORLD_SIZE agrees with us
        for key, value in (("RANK", env.rank), ("WORLD_SIZE", env.world_size), ("LOCAL_RANK", env.local_rank),
                           ("MASTER_ADDR", env.master_addr or "127.0.0.1"), ("MASTER_PORT", env.master_port or 29500)):
            os.environ.setdefault(key, str(value))
        store = rendezvous(env, rendezvous_timeout_s)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=LONG_TIMEOUT_S), device_id=device if device.type == "cuda" else None)
    # every rank says where it is and whom it joined (one line each, in the run's train.log and its task log)
    node = f" (node {os.environ['SLURMD_NODENAME']})" if "SLURMD_NODENAME" in os.environ else ""
    log.info(f"distributed: rank {env.rank} (local {env.local_rank}) on {socket.gethostname()}{node}, "
             f"master {env.master_addr}:{env.master_port}")
    if not env.is_main:
        log.setLevel(logging.WARNING)  # one rank talks; the others only warn
    log.info(f"distributed: {env.world_size} ranks via {env.launcher}, backend {dist.get_backend()}")
    return env, device


def joined() -> DistEnv:
    """The launcher's ranks, once `setup()` has joined their process group (a Trainer built without one)."""
    env = detect()
    if env.enabled and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{env.world_size} ranks ({env.launcher}) but no process group: "
                           "call minigpt.distributed.setup() before building a Trainer")
    return env


def shutdown() -> None:
    global _short_timeout
    peers.stop()
    _short_timeout = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def lost_peer(exc: BaseException) -> RunFailure | None:
    """A collective's failure as one line naming the lost rank(s), if a peer is gone (minigpt/peers.py);
    None for any other error, which keeps its own message and traceback."""
    if isinstance(exc, RunFailure) or not isinstance(exc, RuntimeError):
        return None
    line = peers.lost_rank_message(exc)
    return RunFailure(line) if line else None


def _set_timeout(timeout: timedelta) -> None:
    # torch has no public setter for a live group's default timeout; torchtitan calls this one too
    from torch.distributed.distributed_c10d import _set_pg_timeout

    _set_pg_timeout(timeout)


def shorten_timeout(seconds: float) -> None:
    """From now on a collective that waits `seconds` for a peer fails (called after the first step: set-up,
    compilation and first-step warm-up ran under the long timeout). Idempotent, every rank alike."""
    global _short_timeout
    if not (dist.is_available() and dist.is_initialized()) or _current_short_timeout() == timedelta(seconds=seconds):
        return
    _short_timeout = (dist.group.WORLD, timedelta(seconds=seconds))
    _set_timeout(_short_timeout[1])


@contextlib.contextmanager
def long_timeout():
    """The long timeout inside the block (rank 0 writing a checkpoint while the others wait at a collective),
    the short one again after it; every rank enters the block at the same point."""
    short = _current_short_timeout()
    if short is not None:
        _set_timeout(timedelta(seconds=LONG_TIMEOUT_S))
    try:
        yield
    finally:
        if short is not None:
            _set_timeout(short)


def wrap_model(model: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """DDP for training (gradients all-reduced in buckets during backward); unchanged for one process."""
    if not env.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def settle_buckets(model: torch.nn.Module, batch_shape: tuple[int, int], device: torch.device, autocast) -> None:
    """Let DDP rebuild its gradient buckets before a resumed segment's first real step.

    DDP's first backward in a process all-reduces one bucket in parameter order, later ones the buckets it
    rebuilt in the order gradients became ready; the all-reduce sums an element in an order that depends on
    where it sits, so a resumed segment's first step would differ in the last bit from the same step of an
    uninterrupted run (whose first backward was step 1). One throwaway forward and backward on zeros, its
    gradients dropped and the RNG untouched, makes the resumed run's steps bit-identical to it. Collective:
    every rank calls it at the same point."""
    if not hasattr(model, "reducer"):  # one process: no buckets
        return
    tokens = torch.zeros(batch_shape, dtype=torch.long, device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with autocast():
            _, loss = model(tokens, tokens)
        loss.backward()
    model.zero_grad(set_to_none=True)


def grad_sync(model: torch.nn.Module, last_micro_step: bool):
    """No all-reduce on all but the last micro-step of gradient accumulation (gradients pile up locally)."""
    if last_micro_step or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def shard_optimizer(optimizer: torch.optim.Optimizer, env: DistEnv, zero_stage: int) -> torch.optim.Optimizer:
    """ZeRO-1: rebuild the optimizer as a ZeroRedundancyOptimizer of the same class, groups and settings.

    A CombinedOptimizer (optim.kind=muon: AdamW + Muon) has each of its parts sharded on its own. A joined
    group of one rank shards too (over that rank), so ZeRO-1's code path can be tested in one process.
    """
    if zero_stage == 0 or not (env.enabled or (dist.is_available() and dist.is_initialized())):
        return optimizer
    parts = getattr(optimizer, "parts", None)
    if parts is not None:
        return type(optimizer)({name: shard_optimizer(part, env, zero_stage) for name, part in parts.items()})
    from minigpt.optim.amp import ScaledZeroRedundancyOptimizer  # float16: no host read of the inf flag

    cls = type(optimizer)
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [{k: v for k, v in g.items() if k in accepted or k == "params"} for g in optimizer.param_groups]
    return ScaledZeroRedundancyOptimizer(groups, optimizer_class=cls, **defaults)


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The full optimizer state; under ZeRO a collective that gathers the shards onto rank 0 (empty elsewhere)."""
    consolidate = getattr(optimizer, "consolidate_state_dict", None)
    if consolidate is None or not (dist.is_available() and dist.is_initialized()):
        return optimizer.state_dict()
    consolidate(to=0)
    return optimizer.state_dict() if dist.get_rank() == 0 else {}


@contextlib.contextmanager
def node_first(env: DistEnv):
    """Each node's local rank 0 runs the block first (node-local work: a cache on the node's own disk),
    then the node's other ranks; global rank 0 need not be on any particular node. Writes are atomic,
    so local ranks 0 of several nodes sharing one file system may write the same file safely."""
    with long_timeout():  # the other ranks wait for as long as the work takes
        if env.enabled and env.local_rank != 0:
            barrier()
        yield
        if env.enabled and env.local_rank == 0:
            barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place); the identity in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any rank (e.g. a stop signal that reached only some ranks)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class OptimizerState:
    """An optimizer as a checkpoint Stateful: under ZeRO `state_dict()` is a collective that gathers the
    shards onto rank 0 (every rank must call it); `load_state_dict` takes the full state on every rank."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def state_dict(self) -> dict:
        return optimizer_state(self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
