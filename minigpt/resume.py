"""Never lose work: resume from the newest valid checkpoint, keep the last K, checkpoint on signals.

- `resume_trainer(trainer)` runs before the loggers open: it picks the checkpoint named by
  `train.resume` (auto: the newest readable one in the run dir, skipping a torn or corrupt newest file
  with one warning line), loads it, and drops the metrics.jsonl rows logged after that step, so the
  steps the run redoes are logged exactly once.
- `Checkpointer` decides when the loop saves (every `train.checkpoint_every` steps, at the end, and
  at the next step boundary after SIGTERM / SIGUSR1 / SIGUSR2) and prunes to `train.keep_checkpoints`.
  Signal handlers only set a flag: saving inside a handler could snapshot a half-applied optimizer
  step. After the save, a handler that was installed before ours (submitit's USR2 handler, which
  requeues the SLURM job) is called once the loop has ended and the loggers are closed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from minigpt import distributed
from minigpt.atomic import write_text_atomic
from minigpt.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint
from minigpt.errors import ConfigError

if TYPE_CHECKING:
    from minigpt.trainer import Trainer

log = logging.getLogger("minigpt")

REQUIRED_KEYS = ("model", "optimizer", "scaler", "step", "tokens_seen", "train_loader", "rng")
# The signals a scheduler sends before it stops a job: SIGTERM (kill/scancel, time limit reached),
# SIGUSR1 (`sbatch --signal=USR1@120`), SIGUSR2 (submitit's default `--signal=USR2@...`).
CHECKPOINT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


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
    path = Path(resume).expanduser()
    if path.is_dir():
        return [find_checkpoint(path), *list_checkpoints(path)[-2::-1]]
    return [find_checkpoint(path)]  # a file, or a clear error if it does not exist


def load_resume_state(resume: str, run_dir: str | os.PathLike) -> Optional[tuple[dict, Path]]:
    """(state, path) of the newest readable checkpoint that `resume` allows, or None for a fresh start."""
    resume = str(resume)
    candidates = _candidates(resume, Path(run_dir))
    for i, path in enumerate(candidates):
        try:
            state = load_checkpoint(path)
            missing = [k for k in REQUIRED_KEYS if k not in state]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
        except Exception as exc:  # noqa: BLE001 - a torn file raises whatever the zip reader hits
            fallback = candidates[i + 1].name if i + 1 < len(candidates) else "a fresh start"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning(f"checkpoint {path} is unreadable ({reason[:120]}); using {fallback} instead")
            continue
        return state, path
    if candidates and resume not in ("auto", "never"):
        raise ConfigError(f"train.resume={resume}: no readable checkpoint there; pass another checkpoint or train.resume=auto")
    return None


# ---------------------------------------------------------------------- resuming a trainer


def resume_trainer(trainer: "Trainer") -> Optional[str]:
    """Load the checkpoint `train.resume` selects into `trainer`; returns the logger run id stored with it."""
    run_dir = trainer.run_dir
    main = getattr(trainer, "dist", None) is None or trainer.dist.is_main  # every rank loads; rank 0 tidies files
    if main:
        remove_stale_temp_files(run_dir)
    found = load_resume_state(trainer.cfg.train.resume, run_dir)
    run_id = None
    if found is not None:
        state, path = found
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise ConfigError(
                f"checkpoint {path} does not fit this config ({first}): resume with the config it was "
                "trained with, or start fresh with train.resume=never in a new run dir"
            ) from exc
        run_id = state.get("logger_run_id")
        log.info(f"resumed from {path} at step {trainer.step} ({trainer.tokens_seen:,} tokens seen)")
    if main:
        drop_metrics_after(run_dir / "metrics.jsonl", trainer.step)
    return run_id


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files left by a save that was killed mid-write (the rename never happened)."""
    for tmp in Path(run_dir).glob(".ckpt_*.pt.tmp-*"):
        log.info(f"removing {tmp.name}, left by a checkpoint write that did not finish")
        tmp.unlink(missing_ok=True)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only rows with step <= `step` (and drop a torn last line), so redone steps appear once."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(row.get("step", 0)) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
        log.info(f"dropped {dropped} metrics.jsonl rows logged after step {step}; those steps run again")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


# ---------------------------------------------------------------------- when to save


class Checkpointer:
    """`install()` before the loop, `after_step()` at each step boundary, `uninstall()` last of all.

    After a signal the run saves at the next step boundary, then:
    - no handler was installed before ours (a plain run): SIGUSR1/SIGUSR2 go on training, SIGTERM stops;
    - a Python handler was (submitit's under SLURM): training stops, and `uninstall()` runs that handler
      once the loggers are closed, so submitit requeues the job only after W&B has flushed its files.
    """

    def __init__(self, every: int, keep: int):
        self.every, self.keep = every, keep
        self.pending: list[int] = []
        self.previous: dict[int, object] = {}
        self.deferred: list[int] = []

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
        self.pending.append(signum)  # only a flag: the loop saves at the next step boundary

    def after_step(self, trainer: "Trainer", last: bool) -> None:
        signals, self.pending = list(dict.fromkeys(self.pending)), []
        # Saving is collective under data parallelism, so a signal seen by any rank makes every rank save.
        asked = distributed.any_rank(bool(signals))
        if last or asked or (self.every > 0 and trainer.step % self.every == 0):
            if trainer.save() is not None:  # None on ranks other than 0, which write nothing
                prune_checkpoints(trainer.run_dir, self.keep)
        for signum in signals:
            log.warning(f"step {trainer.step:6d} | {signal.Signals(signum).name} received: checkpoint saved")
            if callable(self.previous.get(signum)):
                self.deferred.append(signum)
        if self.deferred:
            log.warning(f"step {trainer.step:6d} | stopping; the signal goes on to the handler installed before ours")
            raise SystemExit(128 + self.deferred[0])
        if signal.SIGTERM in signals:
            log.warning(f"step {trainer.step:6d} | stopping on SIGTERM; rerun the same command to resume")
            raise SystemExit(128 + signal.SIGTERM)
