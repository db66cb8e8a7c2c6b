"""Run directories named by what the run computes, so the same command always finds the same directory.

`hydra.run.dir` and the sweeps' `hydra.sweep.subdir` end in `-${minigpt.run_hash:}`: eight hex digits
of a hash of the resolved config. Rerunning a command (a crashed `--multirun`, a SLURM array whose
jobs hit their time limit) therefore lands every job in its earlier directory, where `decide` says:

- finished: skipped with one line (and the job returns its final metrics, for Optuna);
- unfinished (killed, interrupted, out of requeues): resumed from its newest checkpoint by
  `train.resume=auto`, continuing the same W&B run;
- failed (an exception): run again, from its newest checkpoint if it has one;
- `train.rerun=true`: the earlier run's files are moved into `<run dir>/replaced_<time>/` and it
  starts afresh (never on a SLURM requeue of that same job).

The hash covers the config minus what only says where a run executes and logs (`cluster`, `logger`,
`train.device`), how often it saves or prints, and the rerun flags, and it covers only values that
differ from the schema defaults: a field added to minigpt later (with a default) leaves existing
runs' hashes, and so their directories, unchanged. `run_config.yaml` in the run directory records
those values; a directory whose name carries this config's hash but whose `run_config.yaml` says
otherwise (edited by hand) is refused, naming both files.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from minigpt.atomic import write_text_atomic
from minigpt.errors import ConfigError
from minigpt.run_identity import config_hash, identity, run_name, schema_defaults  # noqa: F401 - the names of runs, re-exported

log = logging.getLogger("minigpt")

RUN_CONFIG_FILE = "run_config.yaml"
# Files a run writes into its directory; `train.rerun=true` moves them aside (`.hydra/` is Hydra's, rewritten anyway).
RUN_FILES = ("metrics.jsonl", "run_summary.json", RUN_CONFIG_FILE, "wandb")
RUN_FILE_GLOBS = ("ckpt_*.pt", "ckpt_*.pt.corrupt", ".ckpt_*.pt.tmp-*")


# ---------------------------------------------------------------------------------------------- state


@dataclass
class RunState:
    """What a rerun of this job will do: new | finished | resume | rerun_failed | running."""

    kind: str
    step: int = 0  # where it stopped (its newest checkpoint's step for resume / rerun_failed)
    detail: str = ""

    def remaining(self, num_iterations: int) -> float:
        """Fraction of the run a rerun still trains (0 for a finished or running job)."""
        if self.kind in ("finished", "running"):
            return 0.0
        return 1.0 - self.step / max(num_iterations, 1)

    def describe(self) -> str:
        return {
            "new": "new",
            "finished": "finished: skip",
            "resume": f"resume @{self.step}",
            "rerun_failed": f"failed: rerun @{self.step}",
            "running": "running now",
        }[self.kind]


def run_state(run_dir: str | os.PathLike, num_iterations: int, rerun: bool = False) -> RunState:
    """What a rerun of the job will find in its directory (`rerun`: train.rerun=true, which starts afresh)."""
    import socket

    from minigpt.checkpoint import list_checkpoints
    from minigpt.run_record import pid_alive, read_summary

    run_dir = Path(run_dir)
    if rerun:
        return RunState("new")
    checkpoints = list_checkpoints(run_dir) if run_dir.is_dir() else []
    ckpt_step = int(checkpoints[-1].stem.split("_")[-1]) if checkpoints else 0
    summary = read_summary(run_dir)
    if summary is None:
        return RunState("resume", ckpt_step) if checkpoints else RunState("new")
    status, step = summary.get("status"), int(summary.get("step") or 0)
    if status == "finished" and step >= num_iterations:
        return RunState("finished", step)
    if status in ("failed", "diverged"):
        return RunState("rerun_failed", ckpt_step, summary.get("error") or status)
    alive = status == "running" and summary.get("host") == socket.gethostname() and pid_alive(int(summary.get("pid", 0)))
    if alive and summary.get("pid") != os.getpid():
        return RunState("running", step)
    return RunState("resume", ckpt_step) if checkpoints else RunState("new")


def finished_message(run_dir: str | os.PathLike, step: int, num_iterations: int) -> str:
    """The one line a rerun of a finished run prints (here, before anything is built, and in resume.py)."""
    return (f"skipped: {run_dir} already finished (step {step} of train.num_iterations={num_iterations}): nothing to "
            "train. To train it again from scratch add train.rerun=true (or use a new hydra.run.dir); to train it "
            f"further add train.num_iterations=<more than {step}> train.resume={run_dir} (the lr schedule is "
            "recomputed for the new length)")


# ---------------------------------------------------------------------------------------------- at start


class RunDirTaken(ConfigError):
    """The run directory holds a run of other settings: this command must not train, skip or record there."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def config_differences(recorded: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """dotted key -> (recorded value, this command's value), for every identity value that differs (an
    identity leaves out what equals the schema default, so a key on one side only has its default on the other)."""
    old, new, defaults = _flatten(recorded), _flatten(current), _flatten(schema_defaults())
    return {key: (old.get(key, defaults.get(key)), new.get(key, defaults.get(key)))
            for key in sorted(old.keys() | new.keys()) if old.get(key, defaults.get(key)) != new.get(key, defaults.get(key))}


def extension_message(cfg: Any, run_dir: Path, old_total: int) -> str:
    """How the lr schedule goes on when only train.num_iterations changed (an explicit extension)."""
    from minigpt.optim.schedule import lr_at

    state = run_state(run_dir, old_total)
    step, new_total = state.step, cfg.train.num_iterations
    before, after = lr_at(step, cfg.optim, old_total), lr_at(step, cfg.optim, new_total)
    how = (f"the lr schedule continues exactly (lr {after:.2e} at step {step})" if math.isclose(before, after)
           else f"the lr schedule changes from step {step} on ({cfg.optim.schedule.value} over the new length: "
                f"lr {before:.2e} -> {after:.2e} there)")
    return (f"extending {run_dir}: train.num_iterations {old_total} -> {new_total}, going on from step {step}; "
            f"{how}; run_summary.json records the extension")


def check_run_config(cfg: Any, run_dir: Path) -> str:
    """Refuse a run dir whose recorded identity (run_config.yaml) is not this config's, whatever the dir is
    called; returns the extension line when only train.num_iterations differs ("" when nothing does)."""
    digest = config_hash(cfg)
    run_dir = Path(run_dir)
    saved = run_dir / RUN_CONFIG_FILE
    if not saved.exists() or (cfg.train.rerun and not is_requeued()):  # train.rerun moves that run aside
        return ""
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(saved), resolve=False) or {}
    except Exception:  # noqa: BLE001 - unreadable YAML is a difference like any other
        recorded = None
    current = identity(cfg)
    if recorded == current:
        return ""
    if run_dir.name.endswith(f"-{digest}"):  # the name says it is this config's: the file was changed
        mine = run_dir / f"{RUN_CONFIG_FILE}.this_command"
        write_text_atomic(mine, OmegaConf.to_yaml(OmegaConf.create(current)))
        raise RunDirTaken(
            f"{saved} does not match this command's config although the directory name carries its hash {digest} "
            f"(edited by hand?): compare it with {mine}, then restore it or move {run_dir} away"
        )
    ways_out = "add train.rerun=true to replace it (its files are moved aside) or give this run another hydra.run.dir"
    if recorded is None:
        raise RunDirTaken(f"{run_dir} holds a run whose {RUN_CONFIG_FILE} cannot be read: {ways_out}")
    diff = config_differences(recorded, current)
    if set(diff) == {"train.num_iterations"}:
        return extension_message(cfg, run_dir, int(diff["train.num_iterations"][0]))
    changes = ", ".join(f"{key}: {old} -> {new}" for key, (old, new) in diff.items())
    raise RunDirTaken(f"{run_dir} holds a run with other settings ({changes}): {ways_out}")


def read_only_stop(cfg: Any, run_dir: Path) -> str | None:
    """For a run dir on storage this process cannot write (a read-only mount, a finished project's archive):
    the finished line when the run there is finished (nothing to write), else one ConfigError; None if writable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or os.access(run_dir, os.W_OK):
        return None
    decision = decide(cfg, run_dir)
    if decision.skip:
        return decision.message
    from minigpt.run_lock import read_only_error

    raise read_only_error(run_dir)


def write_run_config(cfg: Any, run_dir: Path) -> None:
    """Record the run's identity (checked above when the directory is found again)."""
    header = f"# What makes this run this run (settings that differ from minigpt's defaults); hash {config_hash(cfg)}\n"
    write_text_atomic(Path(run_dir) / RUN_CONFIG_FILE, header + OmegaConf.to_yaml(OmegaConf.create(identity(cfg))))


def is_requeued() -> bool:
    """This process continues an earlier segment of the same job (SLURM requeue, torchrun restart)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 or int(
        os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def move_aside(run_dir: Path) -> Path | None:
    """Move an earlier run's files into `<run_dir>/replaced_<time>/` (train.rerun=true); nothing is deleted."""
    run_dir = Path(run_dir)
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    for pattern in RUN_FILE_GLOBS:
        found += sorted(run_dir.glob(pattern))
    if not found:
        return None
    target = run_dir / time.strftime("replaced_%Y%m%d-%H%M%S")
    target.mkdir()
    for path in found:
        shutil.move(str(path), str(target / path.name))
    return target


@dataclass
class Decision:
    skip: bool
    message: str = ""
    final: dict | None = None


def decide(cfg: Any, run_dir: str | os.PathLike) -> Decision:
    """Read-only: what this start of the job should do (skip a finished run, or train)."""
    run_dir = Path(run_dir)
    extension = check_run_config(cfg, run_dir)
    state = run_state(run_dir, cfg.train.num_iterations)
    if cfg.train.rerun and not is_requeued():
        return Decision(False, "train.rerun=true: starting afresh" if state.kind != "new" else "")
    if state.kind == "finished":
        from minigpt.loggers import last_logged

        return Decision(True, finished_message(run_dir, state.step, cfg.train.num_iterations),
                        last_logged(run_dir / "metrics.jsonl"))
    stop_at = cfg.train.stop_at
    if stop_at is not None and state.kind == "resume" and state.step >= stop_at:  # a paused trunk, already there
        from minigpt.loggers import last_logged

        return Decision(True, f"skipped: {run_dir} is paused at step {state.step} (train.stop_at={stop_at}): "
                              "nothing to train to that step", last_logged(run_dir / "metrics.jsonl"))
    if state.kind == "rerun_failed":
        where = f"from its checkpoint at step {state.step}" if state.step else "from the start"
        return Decision(False, f"{run_dir} failed before ({state.detail[:120]}): running it again {where}")
    return Decision(False, extension)


def claim(cfg: Any, run_dir: str | os.PathLike, is_main: bool) -> None:
    """On the main rank, before training: move an earlier run aside for train.rerun, record run_config.yaml."""
    if not is_main:
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.rerun and not is_requeued():
        moved = move_aside(run_dir)
        if moved is not None:
            log.info(f"train.rerun=true: moved the earlier run's files to {moved}")
    write_run_config(cfg, run_dir)
