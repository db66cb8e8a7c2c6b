"""Never lose work, part 2: divergence stops a run before it saves NaN weights, one process per run dir,
a finished run is not rerun, a fork starts its own W&B run, float16 on CPU warns."""

import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import torch

from minigpt.checkpoint import list_checkpoints, load_checkpoint
from minigpt.run_record import read_summary
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from tests.conftest import ROOT, TINY, read_losses, read_metrics, run_cli, tiny_config

QUIET = ["train.val_loss_every=0", "train.sample_every=0", "optim.warmup_iters=2", "optim.learning_rate=3e-3"]


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]


# ------------------------------------------------------------------------------------------ divergence


def test_lr_10_stops_with_one_error_line_and_keeps_the_good_checkpoints(tmp_path):
    """The issue's case: at lr=10 the quick-start shape goes non-finite after ~11 steps. It used to train on,
    save NaN checkpoints, prune the finite ones and die in sampling; now it stops at the first bad step."""
    from minigpt.compare.report import run_table
    from minigpt.compare.local_runs import load_run

    run_dir = tmp_path / "run"
    res = run_cli(["minigpt.train", *TINY, "model.n_layer=4", "model.n_embd=128", "optim.learning_rate=10",
                   "optim.warmup_iters=20", "train.num_iterations=30", "train.checkpoint_every=5",
                   "train.keep_checkpoints=2", "train.val_loss_every=0", "train.sample_every=0",
                   f"hydra.run.dir={run_dir}"], cwd=ROOT)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    (line,) = error_lines(res)
    bad_step = int(re.search(r"error: training diverged at step (\d+): loss \S+, grad norm \S+ \(not finite\)", line)[1])
    assert 5 < bad_step < 30, line

    # the checkpoints before it survive (keep_checkpoints=2) and hold finite weights; none after it was written
    saved = [s for s in range(5, bad_step, 5)][-2:]
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run_dir)] == saved
    for p in list_checkpoints(run_dir):
        assert all(torch.isfinite(t).all() for t in load_checkpoint(p)["model"].values())
    assert f"train.resume=auto continues from ckpt_{saved[-1]:07d}.pt" in line
    # every logged step is finite, and the bad step is not logged
    train = [r for r in read_metrics(run_dir) if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(1, bad_step))
    assert all(math.isfinite(r["train/loss"]) for r in train)

    # the same text in train.log, run_summary.json and the comparison report
    message = line.split("error: ", 1)[1]
    assert f"error: {message}" in (run_dir / "train.log").read_text()
    summary = read_summary(run_dir)
    assert summary["status"] == "diverged" and summary["error"] == message and summary["step"] == bad_step
    run = load_run(run_dir)
    assert run.status == "diverged"
    _, rows = run_table([run], protocols=[])
    assert rows[0][-1].startswith("diverged (training diverged at step")


def poison(trainer: Trainer, steps: set[int]) -> None:
    """Make the training loss NaN at the given steps (the step being computed is trainer.step + 1)."""

    def hook(module, args, out):
        if module.training and trainer.step + 1 in steps:
            return out[0], out[1] * float("nan")
        return out

    trainer.model.register_forward_hook(hook)


def test_skip_nonfinite_drops_bad_steps_without_stepping_then_stops(tmp_path, caplog):
    snapshots = {}

    def snapshot(trainer):
        snapshots[trainer.step] = trainer.model.lm_head.weight.detach().clone()
        return {}

    cfg = tiny_config(*QUIET, "train.num_iterations=6", "train.skip_nonfinite=2")
    trainer = Trainer(cfg, tmp_path / "skip", extra_hooks=[StepHook("snapshot", 1, snapshot)])
    poison(trainer, {3, 5})
    with caplog.at_level(logging.WARNING, logger="minigpt"):
        trainer.fit()
    skips = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert len(skips) == 2 and "(1 of train.skip_nonfinite=2)" in skips[0] and "(2 of" in skips[1]
    assert torch.equal(snapshots[3], snapshots[2]) and torch.equal(snapshots[5], snapshots[4])  # no update
    assert not torch.equal(snapshots[4], snapshots[3])  # the good steps do update
    adam_steps = {int(s["step"]) for s in trainer.optimizer.state.values()}
    assert adam_steps == {4}  # 6 steps, 2 skipped: the optimizer stepped 4 times
    assert read_summary(tmp_path / "skip")["status"] == "finished"

    # a third bad step is one too many
    from minigpt.divergence import Diverged

    again = Trainer(cfg, tmp_path / "too_many")
    poison(again, {2, 3, 4})
    with pytest.raises(Diverged, match=r"at step 4: .* after skipping 2 such steps \(train.skip_nonfinite=2\)"):
        again.fit()
    assert read_summary(tmp_path / "too_many")["status"] == "diverged"


def test_default_stop_saves_nothing_after_the_bad_step(tmp_path):
    from minigpt.divergence import Diverged

    cfg = tiny_config(*QUIET, "train.num_iterations=6", "train.checkpoint_every=2", "train.keep_checkpoints=1")
    trainer = Trainer(cfg, tmp_path)
    poison(trainer, {4})
    with pytest.raises(Diverged, match="at step 4: loss nan, grad norm nan"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000002.pt"]  # not pruned, no step-4 save
    assert max(read_losses(tmp_path)) == 3


# ------------------------------------------------------------------------------------------ run dir lock

HOLDER = """
import sys, time
from pathlib import Path
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from tests.conftest import tiny_config

run_dir, flags, *overrides = sys.argv[1:]
flags = Path(flags)

def hold(trainer):  # after step 1: say so, then wait until the test has tried its second process
    if trainer.step == 1:
        (flags / "holding").write_text("")
        deadline = time.time() + 240
        while not (flags / "release").exists() and time.time() < deadline:
            time.sleep(0.1)
    return {}

Trainer(tiny_config(*overrides), run_dir, extra_hooks=[StepHook("hold", 1, hold)]).fit()
"""


def start_holder(run_dir, flags, *overrides) -> subprocess.Popen:
    flags.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(flags), *overrides], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (flags / "holding").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    return proc


def test_a_second_process_on_a_run_dir_stops_at_once_and_writes_nothing(tmp_path):
    run_dir, flags = tmp_path / "run", tmp_path / "flags"
    steps = ["train.num_iterations=4", *QUIET]
    holder = start_holder(run_dir, flags, *steps)
    try:
        before = sorted(p.name for p in run_dir.iterdir())
        rows_before = (run_dir / "metrics.jsonl").read_text()
        second = run_cli(["minigpt.train", *TINY, *steps, "train.seed=7", f"hydra.run.dir={run_dir}"], cwd=ROOT)
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = error_lines(second)
        assert line == (f"error: {run_dir} is in use by pid {holder.pid} on {socket.gethostname()}: wait for that run "
                        "to end (or stop it), or give this one another hydra.run.dir")
        # nothing written: no .hydra/ (config of the other command), no train.log, no metrics row
        assert sorted(p.name for p in run_dir.iterdir()) == before
        assert (run_dir / "metrics.jsonl").read_text() == rows_before

        # the Python API (and DDP / multirun jobs) are stopped by the same lock in Trainer.fit
        from minigpt.run_lock import RunDirBusy

        with pytest.raises(RunDirBusy, match=f"in use by pid {holder.pid}"):
            Trainer(tiny_config(*steps), run_dir).fit()
    finally:
        (flags / "release").write_text("")
        out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err[-2000:]
    assert sorted(read_losses(run_dir)) == [1, 2, 3, 4]  # each step exactly once
    # the lock went with the process: the same run dir is free again (here: already finished, so nothing to do)
    assert Trainer(tiny_config(*steps), run_dir).fit()["train/loss"] == read_losses(run_dir)[4]


def test_without_flock_support_the_run_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def unsupported(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    with caplog.at_level(logging.WARNING, logger="minigpt"):
        # no warmup, so that a one-step run has no warmup warning either
        Trainer(tiny_config(*QUIET, "train.num_iterations=1", "optim.warmup_iters=0"), tmp_path).fit()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not support flock" in warnings[0] and "without a lock" in warnings[0]
    assert read_summary(tmp_path)["status"] == "finished"


# ------------------------------------------------------------------------------------------ reruns and forks


def test_rerunning_a_finished_run_says_so_in_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    cmd = ["minigpt.train", *TINY, *QUIET, "train.num_iterations=2", f"hydra.run.dir={run_dir}"]
    assert run_cli(cmd, cwd=ROOT).returncode == 0
    def kept() -> dict:  # checkpoints, metrics.jsonl, run_summary.json
        return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name.endswith((".pt", ".json", ".jsonl"))}

    files = kept()

    again = run_cli(cmd, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = [line for line in (again.stdout + again.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{run_dir} already finished (step 2 of train.num_iterations=2): nothing to train" in lines[0]
    assert "new hydra.run.dir" in lines[0] and "train.num_iterations=<more than 2>" in lines[0]
    # metrics.jsonl (no second run/* row), checkpoints and run_summary.json are untouched
    assert kept() == files and len(files) == 3
    assert sum("run/wall_hours" in r for r in read_metrics(run_dir)) == 1


def test_a_fork_starts_a_new_wandb_run_that_names_its_source(tmp_path, monkeypatch):
    from tests.wandb_records import config, finished_run_records, run_record

    monkeypatch.setenv("WANDB_MODE", "offline")
    source, fork = tmp_path / "source", tmp_path / "fork"
    Trainer(tiny_config(*QUIET, "train.num_iterations=2"), source).fit()
    source_id = run_record(finished_run_records(source)).run_id

    def stop_at_4(trainer):  # the fork is stopped (Ctrl-C) at step 4, after its own checkpoint at step 3
        if trainer.step == 4:
            raise KeyboardInterrupt
        return {}

    fork_cfg = tiny_config(*QUIET, "train.num_iterations=5", "train.checkpoint_every=1", f"train.resume={source}")
    with pytest.raises(KeyboardInterrupt):
        Trainer(fork_cfg, fork, extra_hooks=[StepHook("stop", 1, stop_at_4)]).fit()
    (first,) = fork.glob("wandb/offline-run-*")
    records = finished_run_records(first)
    fork_id = run_record(records).run_id
    assert fork_id != source_id
    checkpoint = str((source / "ckpt_0000002.pt").resolve())
    flat = config(records)
    assert flat["forked_from.checkpoint"] == checkpoint and flat["forked_from.step"] == 2
    assert flat["forked_from.logger_run_id"] == source_id
    assert run_record(records).notes == f"forked from {checkpoint} at step 2 (W&B run {source_id})"
    assert read_summary(fork)["forked_from"] == {"checkpoint": checkpoint, "step": 2, "logger_run_id": source_id}

    # rerun after the stop: its own checkpoint (step 3) wins over the source's, and its own W&B run continues
    Trainer(fork_cfg, fork).fit()
    ids = {run_record(finished_run_records(d)).run_id for d in fork.glob("wandb/offline-run-*")}
    assert ids == {fork_id}
    summary = read_summary(fork)
    assert summary["forked_from"]["checkpoint"] == checkpoint and summary["status"] == "finished"
    assert json.loads((fork / "run_summary.json").read_text())["segments"] == 2


def test_float16_on_cpu_warns_that_it_is_slow(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="minigpt"):
        Trainer(tiny_config(*QUIET, "train.num_iterations=1", "train.dtype=float16"), tmp_path).fit()
    assert any("train.dtype=float16 on CPU is much slower than float32" in r.getMessage() for r in caplog.records)
