"""One process per run directory: an exclusive flock(2) on `<run dir>/.lock`, held for the whole run.

Two processes writing one run directory (the same `hydra.run.dir` pasted twice, a requeued SLURM job
overlapping the one still running) would log every step twice and overwrite each other's
checkpoints. The OS drops a flock when its process dies, so kill -9 never leaves a stale lock; the
file stays, holding the last holder's pid and host for the error message only.

Where the lock is taken:
- `LockRunDir`, a Hydra callback (conf/config.yaml), takes it for a single-process command line run
  before Hydra writes anything there (`.hydra/`, train.log), so a second command stops at once;
- `Trainer.fit` takes it (again: the lock is re-entrant within a process) for every run, including
  multiruns, SLURM jobs and the Python API. Under data parallelism all ranks share the directory:
  rank 0 locks and the others wait, in a collective, to hear whether it could, so no rank writes
  anything before rank 0 holds the lock, and all of them stop if it does not.

Filesystems without flock (Lustre mounted without `-o flock`, NFS without a lock manager) fail the
call with ENOSYS / ENOLCK / EOPNOTSUPP: the run then warns once and goes on without a lock.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from minigpt.errors import ConfigError

log = logging.getLogger("minigpt")

LOCK_FILE = ".lock"
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
UNSUPPORTED = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
_held: dict[str, list] = {}  # resolved run dir -> [open lock file, users]: re-entrant within a process


class RunDirBusy(ConfigError):
    """Another process holds the run directory's lock."""


def read_only_error(run_dir: str | os.PathLike, why: str = "") -> ConfigError:
    return ConfigError(f"{run_dir} is read-only{f' ({why})' if why else ''}: this run cannot write its checkpoints "
                       "or metrics there; make it writable, or give this run another hydra.run.dir")


def acquire(run_dir: str | os.PathLike) -> str:
    """Lock `run_dir` for this process (creating it) or raise RunDirBusy; returns the key for release()."""
    import fcntl

    path = Path(run_dir)
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        return key
    try:
        path.mkdir(parents=True, exist_ok=True)
        f = open(path / LOCK_FILE, "a+")
    except OSError as exc:
        if exc.errno not in READ_ONLY:
            raise
        raise read_only_error(path, exc.strerror) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            f.seek(0)
            holder = f.read().split()
            f.close()
            who = f"pid {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
            raise RunDirBusy(f"{path} is in use by {who}: wait for that run to end (or stop it), "
                             "or give this one another hydra.run.dir") from None
        if exc.errno not in UNSUPPORTED:
            f.close()
            raise
        log.warning(f"cannot lock {path} ({exc.strerror}: this filesystem does not support flock); "
                    "going on without a lock, so make sure no other process uses this run directory")
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()} {socket.gethostname()}\n")
    f.flush()
    _held[key] = [f, 1]
    return key


def release(key: str | None) -> None:
    entry = _held.get(key) if key else None
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        entry[0].close()  # closing the file drops the flock


def acquire_for_ranks(run_dir: str | os.PathLike, dist) -> str | None:
    """Rank 0 locks; every rank learns (a collective) whether it could, and all raise if not."""
    from minigpt import distributed

    key, busy = None, None
    if dist.is_main:
        try:
            key = acquire(run_dir)
        except RunDirBusy as exc:
            busy = exc
    if distributed.any_rank(busy is not None):
        raise busy or RunDirBusy(f"{run_dir} is in use by another process (rank 0 could not lock it)")
    return key


class LockRunDir(Callback):
    """Lock `hydra.run.dir` before Hydra creates it and writes `.hydra/` and train.log into it."""

    def __init__(self) -> None:
        self.key: str | None = None

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from minigpt import distributed

        if distributed.detect().enabled:
            return  # several ranks: Trainer.fit locks, with the ranks agreeing in a collective
        try:
            run_dir = str(config.hydra.run.dir)
        except Exception:  # noqa: BLE001 - a run dir that only resolves later: Trainer.fit locks it
            return
        from minigpt.cli import cli_errors

        @cli_errors  # the one boundary: busy or read-only is one `error:` line, status 2
        def lock() -> int:
            self.key = acquire(run_dir)
            return 0

        if status := lock():
            sys.exit(status)  # not an exception: Hydra turns a callback's exceptions into warnings

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        release(self.key)
        self.key = None
