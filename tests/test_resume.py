"""Exact checkpoint/resume on CPU float32: a stopped run continues with bit-identical per-step losses.

Stops covered: SIGUSR1 (checkpoint and go on), SIGTERM (checkpoint and stop) and SIGUSR2 with a
scheduler's handler installed before ours (checkpoint, stop, then that handler) at a step boundary,
SIGKILL between checkpoints (the steps after the last checkpoint are redone), and SIGKILL in the
middle of a checkpoint write plus a corrupt newest checkpoint (the previous one is used).
"""

import json
import logging
import os
import signal
import sys

import pytest

from minigpt.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from minigpt.errors import ConfigError
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from tests.conftest import ROOT, TINY, read_losses as losses, read_metrics, run_cli, tiny_config

STEPS = 8
RUN = ["optim.learning_rate=3e-3", "optim.warmup_iters=2", f"train.num_iterations={STEPS}",
       "train.val_loss_every=4", "train.sample_every=0"]


def signal_at(step: int, sig: int) -> StepHook:
    """A task that sends `sig` to this process after `step` (the loop sees it at that step boundary)."""

    def send(trainer) -> dict:
        if trainer.step == step:
            os.kill(os.getpid(), sig)
        return {}

    return StepHook(f"send-{sig}", 1, send)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
    """The uninterrupted run every stopped-and-resumed run must match bit for bit."""
    run_dir = tmp_path_factory.mktemp("reference")
    Trainer(tiny_config(*RUN), run_dir).fit()
    ref = losses(run_dir)
    assert sorted(ref) == list(range(1, STEPS + 1))
    return ref


def test_signals_checkpoint_at_the_step_boundary_and_the_run_resumes_exactly(tmp_path, reference):
    run_dir = tmp_path / "run"
    cfg = tiny_config(*RUN, "train.checkpoint_every=3", "train.keep_checkpoints=3")
    handler_before = signal.getsignal(signal.SIGTERM)

    # A plain run (no handler before ours): SIGUSR1 at 2 saves and goes on, SIGTERM at 5 saves and stops.
    with pytest.raises(SystemExit) as stop:
        Trainer(cfg, run_dir, extra_hooks=[signal_at(2, signal.SIGUSR1), signal_at(5, signal.SIGTERM)]).fit()
    assert stop.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handlers restored after the loop
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run_dir)] == [2, 3, 5]  # 3: periodic
    assert max(losses(run_dir)) == 5

    # A handler installed before ours, as submitit's SIGUSR2 handler is under SLURM: the run saves at
    # the step boundary, stops, closes its loggers and only then calls that handler (which requeues).
    calls = []

    def scheduler_handler(signum, frame):
        status = json.loads((run_dir / "run_summary.json").read_text())["status"]
        calls.append((signum, [load_checkpoint(p)["step"] for p in list_checkpoints(run_dir)], status))

    previous = signal.signal(signal.SIGUSR2, scheduler_handler)
    try:
        with pytest.raises(SystemExit) as stop:
            Trainer(cfg, run_dir, extra_hooks=[signal_at(6, signal.SIGUSR2)]).fit()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stop.value.code == 128 + signal.SIGUSR2
    assert calls == [(signal.SIGUSR2, [3, 5, 6], "interrupted")]

    resumed = Trainer(cfg, run_dir)
    resumed.fit()
    assert losses(run_dir) == reference  # bit-identical, every step logged once
    # the step-0 validation of the first segment is not repeated by the resumed segments
    assert [r["step"] for r in read_metrics(run_dir) if "val/loss" in r] == [0, 4, 8]
    # keep_checkpoints=3: the oldest were pruned as newer ones were written
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run_dir)] == [5, 6, 8]
    assert resumed.step == STEPS and resumed.tokens_seen == STEPS * 4 * 64

    # train.resume=<checkpoint> starts a new run dir from another run's checkpoint
    other = tmp_path / "from_ckpt"
    from_ckpt = tiny_config(*RUN, f"train.resume={checkpoint_path(run_dir, 5)}")
    Trainer(from_ckpt, other).fit()
    assert losses(other) == {s: reference[s] for s in range(6, STEPS + 1)}
    assert [r["step"] for r in read_metrics(other) if "val/loss" in r] == [8]  # a fork starts past step 0
    # rerun (e.g. requeued) with the same train.resume: its own newer checkpoints win, nothing is redone
    again = Trainer(from_ckpt, other)
    again.fit()
    assert again.step == STEPS and losses(other) == {s: reference[s] for s in range(6, STEPS + 1)}


DRIVER = """
import os, sys
import torch
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from tests.conftest import tiny_config

run_dir, mode, kill_step, *overrides = sys.argv[1:]
kill_step = int(kill_step)
if mode == "between":  # SIGKILL after a step that is not a checkpoint
    def kill(trainer):
        if trainer.step == kill_step:
            os.kill(os.getpid(), 9)
        return {}
    tasks = [StepHook("kill", 1, kill)]
else:  # "mid-write": SIGKILL after torch.save wrote the temp file, before fsync and rename
    real_save, tasks = torch.save, []
    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if isinstance(obj, dict) and obj.get("step") == kill_step:
            os.kill(os.getpid(), 9)
    torch.save = dying_save
Trainer(tiny_config(*overrides), run_dir, extra_hooks=tasks).fit()
"""


def run_driver(run_dir, mode: str, kill_step: int, *overrides: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    import subprocess

    proc = subprocess.run([sys.executable, "-c", DRIVER, str(run_dir), mode, str(kill_step), *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_sigkill_between_checkpoints_then_cli_resume_redoes_the_lost_steps(tmp_path, reference):
    run_dir = tmp_path / "run"
    run_driver(run_dir, "between", 5, *RUN, "train.checkpoint_every=3")
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run_dir)] == [3]
    assert max(losses(run_dir)) == 5  # steps 4 and 5 were logged, then lost
    lost_rows = sum(r["step"] > 3 for r in read_metrics(run_dir))

    res = run_cli(["minigpt.train", *TINY, *RUN, "train.checkpoint_every=3", f"hydra.run.dir={run_dir}"], cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    assert "resumed from" in log and "ckpt_0000003.pt at step 3" in log
    assert f"dropped {lost_rows} metrics.jsonl rows logged after step 3" in log
    assert losses(run_dir) == reference


def test_kill_mid_write_and_corrupt_newest_fall_back_to_previous(tmp_path, reference, caplog):
    run_dir = tmp_path / "run"
    run_driver(run_dir, "mid-write", 6, *RUN, "train.checkpoint_every=2")
    (tmp,) = run_dir.glob(".ckpt_0000006.pt.tmp-*")  # the write that never finished
    assert [p.name for p in list_checkpoints(run_dir)] == ["ckpt_0000002.pt", "ckpt_0000004.pt"]
    newest = checkpoint_path(run_dir, 4)  # and the newest finished one is torn as well
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    with caplog.at_level(logging.INFO, logger="minigpt"):
        trainer = Trainer(tiny_config(*RUN, "train.checkpoint_every=2"), run_dir)
        trainer.fit()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ckpt_0000004.pt is unreadable" in warnings[0]
    assert "using ckpt_0000002.pt instead" in warnings[0]
    assert not tmp.exists()
    assert losses(run_dir) == reference


def test_resume_choices_fail_clearly(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ckpt_0000002.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="train.resume=never but .* already holds checkpoints"):
        Trainer(tiny_config(*RUN, "train.resume=never"), run_dir).fit()
    with pytest.raises(ConfigError, match="no readable checkpoint there"):
        Trainer(tiny_config(*RUN, f"train.resume={run_dir / 'ckpt_0000002.pt'}"), tmp_path / "new").fit()
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(tiny_config(*RUN, f"train.resume={tmp_path / 'missing.pt'}"), tmp_path / "new2").fit()
