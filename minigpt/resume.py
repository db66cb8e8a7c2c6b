"""Never lose work: resume from the newest valid checkpoint, keep the last K, checkpoint on signals.

A `Checkpoint` holds the run's stateful pieces (model, optimizer, scaler, loader position, RNGs, the
step counters), each an object with `state_dict()` / `load_state_dict()`, the way torchtitan's
checkpointer takes `Stateful`s: saving and resuming see those pieces, the run dir and the ranks,
never the Trainer (which this module does not import).

- `Checkpoint.resume(...)` runs before the loggers open: it picks the checkpoint named by
  `train.resume` (auto: the newest readable one in the run dir; an unreadable one is reported in one
  line and renamed `<name>.corrupt`, so it is never resumed from or counted by pruning again; if none
  is readable the run refuses to start over), loads it, and drops the metrics.jsonl rows logged after
  that step, so the steps the run redoes are logged exactly once. A run already at
  `train.num_iterations` trains nothing and says so in one line. A checkpoint from another run
  directory starts a new tracked (W&B) run that records where it came from (`forked_from`).
- `Checkpointer` decides when the loop saves (every `train.checkpoint_every` steps, at the end, and
  at the next step boundary after SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT; a second Ctrl-C stops at once) and prunes to `train.keep_checkpoints`,
  only ever deleting checkpoints older than the one just written. Signal handlers only set a flag:
  saving inside a handler could snapshot a half-applied optimizer step. One process acts on the flag
  at the next step boundary. Under data parallelism the ranks must agree (saving is collective), and
  agreeing costs a collective and a host sync, so the flags travel in the all-reduce the trainer
  already does at its log / task / checkpoint steps: a signal is acted on at the next such step, at
  most `train.log_every` steps later. After the save, a handler that was installed before ours
  (submitit's USR2 handler, which requeues the SLURM job) is called once the loop has ended and the
  loggers are closed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

from minigpt import distributed
from minigpt.atomic import write_text_atomic
from minigpt.checkpoint import (CheckpointUnreadable, checkpoint_path, find_checkpoint, is_complete_checkpoint,
                                list_checkpoints, load_checkpoint, save_checkpoint)
from minigpt.errors import ConfigError, RunFailure
from minigpt.rundir import finished_message

log = logging.getLogger("minigpt")

REQUIRED_KEYS = ("model", "optimizer", "scaler", "step", "tokens_seen", "train_loader", "rng")
# The signals a scheduler sends before it stops a job: SIGTERM (kill/scancel, time limit reached),
# SIGUSR1 (`sbatch --signal=USR1@120`), SIGUSR2 (submitit's default `--signal=USR2@...`); and SIGINT
# (Ctrl-C), which saves and stops like SIGTERM, while a second Ctrl-C stops at once.
CHECKPOINT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
CORRUPT_SUFFIX = ".corrupt"


# ---------------------------------------------------------------------- choosing a checkpoint


def _candidates(resume: str, run_dir: Path) -> list[Path]:
    """Checkpoints to try, best first."""
    if resume == "auto":
        return list_checkpoints(run_dir)[::-1]
    if resume == "never":
        if list_checkpoints(run_dir):
            raise ConfigError(
                f"train.resume=never but {run_dir} already holds checkpoints: "
                "choose a new hydra.run.dir, or use train.resume=auto to continue that run"
            )
        return []
    own = list_checkpoints(run_dir)
    if own:  # this run was restarted (requeue, rerun): its own newer checkpoints win over the start point
        log.info(f"{run_dir} already holds checkpoints: continuing from them rather than train.resume={resume}")
        return own[::-1]
    path = Path(resume)
    if path.is_dir():
        return [find_checkpoint(path), *list_checkpoints(path)[-2::-1]]
    return [find_checkpoint(path)]  # a file, or a clear error if it does not exist


def _read(path: Path) -> dict:
    state = load_checkpoint(path)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointUnreadable(path, f"not a training checkpoint (it lacks {', '.join(missing)})")
    return state


def _set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint of this run to <name>.corrupt: kept for inspection, never resumed or pruned."""
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, aside)
    return aside


def load_resume_state(resume: str, run_dir: str | os.PathLike, tidy: bool = False) -> Optional[tuple[dict, Path]]:
    """(state, path) of the newest readable checkpoint that `resume` allows, or None for a fresh start.

    tidy=True (rank 0): unreadable checkpoints of this run dir are renamed aside (`*.corrupt`).
    """
    resume, run_dir = str(resume), Path(run_dir)
    candidates = _candidates(resume, run_dir)
    unreadable = []
    for i, path in enumerate(candidates):
        try:
            return _read(path), path
        except Exception as exc:  # noqa: BLE001 - whatever the reader hits, the next candidate may do
            reason = getattr(exc, "reason", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            aside = ""
            if tidy and path.parent.resolve() == run_dir.resolve() and path.exists():
                aside = f"; renamed {_set_aside(path).name}"
            unreadable.append(f"{path.name}: {reason}")
            fallback = candidates[i + 1].name if i + 1 < len(candidates) else None
            if fallback:
                log.warning(f"checkpoint {path} is unreadable ({reason}){aside}; using {fallback} instead")
    if candidates and candidates[0].parent.resolve() == run_dir.resolve():  # this run's own: never start over unasked
        moved = " (now renamed *.corrupt)" if tidy else ""
        start = "step 0" if resume == "auto" else f"train.resume={resume}"
        raise ConfigError(
            f"no readable checkpoint in {run_dir} ({len(unreadable)} unreadable{moved}: {'; '.join(unreadable)}); "
            f"rerun to start this run over from {start} (its metrics.jsonl rows are then redone), "
            "or use a new hydra.run.dir"
        )
    if candidates:
        raise ConfigError(f"train.resume={resume}: no readable checkpoint there ({'; '.join(unreadable)}); "
                          "pass another checkpoint or train.resume=auto")
    return None


# ---------------------------------------------------------------------- the checkpoint's state objects


class Stateful(Protocol):
    """What a checkpoint holds: nn.Module, optimizers, GradScaler, the loaders, TrainState, RNGState."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainState:
    """The loop's counters; kept at the checkpoint's top level (`step`, `tokens_seen`), where readers look."""

    step: int = 0
    tokens_seen: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])


@dataclass
class Resumed:
    """What `Checkpoint.resume` found: the tracked run to continue, where a fork came from, or nothing to do."""

    logger_run_id: Optional[str] = None  # continue this W&B run (the run's own checkpoint)
    forked_from: Optional[dict] = None  # another run's checkpoint: {"checkpoint", "step", "logger_run_id"}
    finished: bool = False  # already at train.num_iterations: train nothing, write nothing


class Checkpoint:
    """A run's checkpoints: `parts` (key -> Stateful, loaded in this order: put RNGs last) and `train`
    (the counters) make its state; `info()` adds what is stored but never loaded (config, logger run id).

    Saving is collective (ZeRO gathers optimizer shards); rank 0 writes. `before_save` runs first on
    every rank (the trainer's divergence check: never save a model that went non-finite)."""

    def __init__(self, run_dir: str | os.PathLike, dist: distributed.DistEnv, train: TrainState,
                 parts: dict[str, Stateful], info: Callable[[], dict] = dict,
                 before_save: Callable[[], None] = lambda: None):
        self.run_dir, self.dist, self.train, self.parts = Path(run_dir), dist, train, parts
        self.info, self.before_save = info, before_save

    def state_dict(self) -> dict:
        return {**{key: part.state_dict() for key, part in self.parts.items()}, **self.train.state_dict(), **self.info()}

    def load_state_dict(self, state: dict) -> None:
        self.train.load_state_dict(state)
        for key, part in self.parts.items():
            part.load_state_dict(state[key])

    def save(self) -> Path | None:
        """Write ckpt_<step>.pt (rank 0); returns its path there, None on other ranks."""
        with distributed.long_timeout():  # the other ranks wait at any_rank while rank 0 writes, however long
            return self._save()

    def _save(self) -> Path | None:
        self.before_save()
        state = self.state_dict()  # every rank takes part (ZeRO gathers optimizer shards); rank 0 writes
        step, path, failure = self.train.step, None, None
        if self.dist.is_main:
            try:
                path = save_checkpoint(state, checkpoint_path(self.run_dir, step))
                log.info(f"step {step:6d} | checkpoint {path}")
            except RunFailure as exc:  # e.g. a full disk: every rank stops, none waits for rank 0 forever
                failure = exc
        # a collective, so nobody races ahead (or exits) before the checkpoint is on disk
        if distributed.any_rank(failure is not None):
            raise failure or RunFailure(f"step {step}: rank 0 could not write the checkpoint (its log says why)")
        return path

    def resume(self, resume: str, num_iterations: int) -> Resumed:
        """Load the checkpoint `train.resume` selects (every rank loads; rank 0 tidies files)."""
        run_dir, main = self.run_dir, self.dist.is_main
        if main:
            remove_stale_temp_files(run_dir)
        found = load_resume_state(resume, run_dir, tidy=main)
        resumed = Resumed()
        if found is not None:
            state, path = found
            try:
                self.load_state_dict(state)
            except (RuntimeError, KeyError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0][:160]
                raise ConfigError(
                    f"checkpoint {path} does not fit this config ({first}): resume with the config it was "
                    "trained with, or start fresh with train.resume=never in a new run dir"
                ) from exc
            step = self.train.step
            own = path.resolve().parent == run_dir.resolve()
            if own:
                resumed.logger_run_id = state.get("logger_run_id")
            else:  # a fork: a new tracked run, which records its origin
                resumed.forked_from = {"checkpoint": str(path.resolve()), "step": step,
                                       "logger_run_id": state.get("logger_run_id")}
            if step >= num_iterations:
                resumed.finished = True
                log.info(_nothing_to_train(run_dir, resume, num_iterations, step, path, own))
                return resumed
            log.info(f"resumed from {path} at step {step} ({self.train.tokens_seen:,} tokens seen)")
        if main:  # a fresh start (no checkpoint) redoes step 0's hooks too: drop every earlier row
            drop_metrics_after(run_dir / "metrics.jsonl", self.train.step if found is not None else -1)
        return resumed


def _nothing_to_train(run_dir: Path, resume: str, total: int, step: int, path: Path, own: bool) -> str:
    more = f"train.num_iterations=<more than {step}> (the lr schedule is recomputed for the new length)"
    if own:
        return finished_message(run_dir, step, total)  # the same line as a rerun skipped before any set-up
    return (f"train.resume={resume}: {path.name} is at step {step}, already "
            f"train.num_iterations={total}: nothing to train; to continue training from it set {more}")


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files left by a save that was killed mid-write (the rename never happened)."""
    for tmp in Path(run_dir).glob(".ckpt_*.pt.tmp-*"):
        log.info(f"removing {tmp.name}, left by a checkpoint write that did not finish")
        tmp.unlink(missing_ok=True)


def _is_run_row(row: dict) -> bool:
    """A segment's closing row (run/wall_hours, run/cost, ...): superseded by the next segment's totals."""
    keys = [k for k in row if k != "step"]
    return bool(keys) and all(k.startswith("run/") for k in keys)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only rows with step <= `step` (and drop a torn last line), so redone steps appear once;
    `step` -1 (a fresh start, which logs step 0 again) keeps none.

    An earlier segment's `run/*` row goes too: this segment logs the running totals again when it ends.
    """
    if not path.exists():
        return
    kept, dropped, superseded = [], 0, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(row.get("step", 0)) > step:
            dropped += 1
        elif _is_run_row(row):
            superseded += 1
        else:
            kept.append(line)
    if dropped or superseded:
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    if dropped:
        after = f"after step {step}" if step >= 0 else "by an earlier start (no checkpoint to resume from)"
        log.info(f"dropped {dropped} metrics.jsonl rows logged {after}; those steps run again")


def prune_checkpoints(run_dir: Path, keep: int, newest: Path) -> None:
    """Keep `newest` (just written) and the keep-1 checkpoints before it; keep <= 0 keeps all.

    Only checkpoints older than `newest` are ever deleted, and only once `newest` is a complete
    archive: a file with a higher step (which resume=auto would have used, or renamed aside if
    unreadable) is left alone.
    """
    if keep <= 0 or not is_complete_checkpoint(newest):
        return
    older = [p for p in list_checkpoints(run_dir) if p.name < newest.name]  # names sort by step
    for old in older[: max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)


# ---------------------------------------------------------------------- when to save


class Checkpointer:
    """`install()` before the loop, `after_step()` at each step boundary, `uninstall()` last of all.

    After a signal the run saves at the next step boundary, then:
    - no handler was installed before ours (a plain run): SIGUSR1/SIGUSR2 go on training, SIGTERM stops;
    - a Python handler was (submitit's under SLURM): training stops, and `uninstall()` runs that handler
      once the loggers are closed, so submitit requeues the job only after W&B has flushed its files.
    """

    def __init__(self, every: int, keep: int, on_save: Callable[[], None] = lambda: None, distributed: bool = False):
        self.every, self.keep, self.on_save = every, keep, on_save  # on_save: e.g. rewrite run_summary.json
        self.distributed = distributed
        self.pending: list[int] = []
        self.agreed: list[int] = []  # under data parallelism: the signals all ranks agreed on at the last sync
        self.previous: dict[int, object] = {}
        self.deferred: list[int] = []
        self.interrupted = False  # a first SIGINT arrived

    def install(self) -> "Checkpointer":
        # Handlers can only be installed from the main thread; elsewhere the run just lacks them.
        if threading.current_thread() is threading.main_thread():
            for sig in CHECKPOINT_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        previous, self.previous = self.previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        deferred, self.deferred = self.deferred, []
        for signum in deferred:
            previous[signum](signum, None)  # e.g. submitit: requeue this SLURM job, then exit

    def _on_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.interrupted:  # a second Ctrl-C: the user will not wait for the save
            raise KeyboardInterrupt
        self.interrupted = self.interrupted or signum == signal.SIGINT
        self.pending.append(signum)  # only a flag: the loop saves at the next step boundary

    def periodic(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def wants_sync(self, step: int, last: bool) -> bool:
        """Whether the loop must read the device at this boundary: a save is due (periodic, final, or a
        signal in a single process; under data parallelism pending signals wait for the next sync step)."""
        return last or self.periodic(step) or (bool(self.pending) and not self.distributed)

    def signal_flags(self) -> list[float]:
        """This rank's pending signals as one flag per CHECKPOINT_SIGNALS entry, for the trainer's all-reduce."""
        return [float(sig in self.pending) for sig in CHECKPOINT_SIGNALS]

    def agree(self, flags: list[float]) -> None:
        """Flags summed over ranks: the signals that reached any rank, so every rank saves and stops alike."""
        self.agreed = [sig for sig, count in zip(CHECKPOINT_SIGNALS, flags) if count > 0]

    def after_step(self, checkpoint: Checkpoint, last: bool) -> None:
        if self.distributed:  # only what all ranks agreed on at a sync step (none in between)
            signals, self.agreed = self.agreed, []
        else:  # one process: whatever arrived, up to this very moment
            signals = list(dict.fromkeys(self.pending))
        self.pending = [sig for sig in self.pending if sig not in signals]  # a later signal stays pending
        if last or signals or self.periodic(checkpoint.train.step):
            path = checkpoint.save()
            if path is not None:  # None on ranks other than 0, which write nothing
                prune_checkpoints(checkpoint.run_dir, self.keep, path)
            self.on_save()
        step = checkpoint.train.step
        if signal.SIGINT in signals:  # Ctrl-C: one line, exit 130; Python's own handler is not handed the signal
            log.warning(f"step {step:6d} | Ctrl-C: checkpoint saved, stopping; rerun the same command to resume")
            raise SystemExit(128 + signal.SIGINT)
        for signum in signals:
            log.warning(f"step {step:6d} | {signal.Signals(signum).name} received: checkpoint saved")
            if callable(self.previous.get(signum)):
                self.deferred.append(signum)
        if self.deferred:
            log.warning(f"step {checkpoint.train.step:6d} | stopping; the signal goes on to the handler installed before ours")
            raise SystemExit(128 + self.deferred[0])
        if signal.SIGTERM in signals:
            log.warning(f"step {checkpoint.train.step:6d} | stopping on SIGTERM; rerun the same command to resume")
            raise SystemExit(128 + signal.SIGTERM)
