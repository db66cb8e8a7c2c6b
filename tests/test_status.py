"""`python -m minigpt.status` on real runs: a local sweep with a finished, a diverged and a failed arm, plus a
run seen while it trains and again after kill -9; a half-written run_summary.json and a folder with no runs.

(Queued, running and requeued SLURM jobs: tests/test_slurm.py's submit-and-go test.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from minigpt.status import collect, duration, progress
from tests.conftest import ROOT, TINY, run_cli

# The divergence recipe of tests/test_run_safety.py: at lr=10 this shape goes non-finite after ~11 steps.
SHAPE = [*TINY, "model.n_layer=4", "model.n_embd=128", "optim.warmup_iters=20", "train.val_loss_every=10",
         "train.sample_every=0", "logger=none"]


def status_cli(*paths: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_cli(["minigpt.status", *map(str, paths), *extra], cwd=ROOT, timeout=120)


def test_status_shows_each_state_of_a_local_sweep_and_a_killed_run(tmp_path):
    sweep, long_dir = tmp_path / "sweep", tmp_path / "long" / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # A run that trains long enough to be seen running (every step logged: its ETA comes from those step times).
    long_run = subprocess.Popen([sys.executable, "-m", "minigpt.train", *SHAPE, "optim.learning_rate=3e-3",
                                 "train.num_iterations=100000", f"hydra.run.dir={long_dir}"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = run_cli(["minigpt.train", "-m", *SHAPE, "train.num_iterations=30", "optim.learning_rate=10,3e-3,-1",
                       f"hydra.sweep.dir={sweep}"], cwd=ROOT, env_extra={"OMP_NUM_THREADS": "1"})
        assert out.returncode == 1, out.stderr[-3000:]  # two of the three arms failed
        deadline = time.time() + 300
        while len([line for line in _lines(long_dir / "metrics.jsonl") if "train/ms_per_step" in line]) < 5:
            assert long_run.poll() is None and time.time() < deadline, "the long run did not start training"
            time.sleep(1)

        rows, problems = collect([str(sweep), str(long_dir)])
        assert problems == []
        arm = {lr: next(row for row in rows if f"optim.learning_rate={lr}" in row.label.split()) for lr in ("0.003", "10", "-1")}
        finished, diverged, failed = arm["0.003"], arm["10"], arm["-1"]
        assert (finished.state, finished.step, finished.total, finished.eta_s) == ("finished", 30, 30, None)
        assert finished.val_loss is not None and finished.train_loss is not None and finished.tokens_per_s > 0
        assert diverged.state == "diverged" and diverged.detail.startswith("training diverged at step")
        assert 5 < diverged.step < 30
        assert (failed.state, failed.detail) == ("failed", "ValueError: Invalid learning rate: -1.0")
        running = next(row for row in rows if row.run_dir == long_dir)
        assert running.state == "running" and running.total == 100000 and running.step >= 5
        assert running.eta_s is not None and running.eta_s > 0  # remaining steps x the recent step time

        # The command: one row per job, a progress bar, the totals line.
        shown = status_cli(sweep, long_dir)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split()[:4] == ["job", "slurm", "id", "state"]
        assert any("finished" in line and progress(30, 30) in line for line in lines)
        assert any("optim.learning_rate=-1 " in line and "failed (ValueError: Invalid learning rate" in line
                   for line in lines)
        assert lines[-1].startswith("total: 4 job(s): 1 diverged, 1 failed, 1 finished, 1 running; GPU-hours 0.00 so far")
        assert "the last running job ends in" in lines[-1]
    finally:
        long_run.kill()
        long_run.wait()

    # kill -9 left its summary saying "running": its process is gone, and the status says so.
    assert json.loads((long_dir / "run_summary.json").read_text())["status"] == "running"
    killed = next(row for row in collect([str(long_dir)])[0])
    assert (killed.state, killed.detail, killed.eta_s) == ("failed", "process gone", None)

    # A half-written run_summary.json: one line, and its row from metrics.jsonl; the other rows still shown.
    half = tmp_path / "copy" / "half"
    shutil.copytree(finished.run_dir, half)
    text = (half / "run_summary.json").read_text()
    (half / "run_summary.json").write_text(text[: len(text) // 2])
    empty = tmp_path / "empty"
    empty.mkdir()
    shown = status_cli(half, failed.run_dir, empty)
    assert shown.returncode == 2  # a folder without runs is bad input; what could be read is still shown
    assert shown.stderr.splitlines() == [
        f"error: no runs under {empty} (no metrics.jsonl, .hydra/config.yaml or slurm_job.json): pass a sweep "
        "directory (e.g. outputs/multirun) or run directories",
        f"warning: {half / 'run_summary.json'} cannot be read (half-written?): its row shows what metrics.jsonl says"]
    rows = shown.stdout.splitlines()
    assert len(rows) == 4 and "finished" in rows[1] and "failed" in rows[2] and rows[3].startswith("total: 2 job(s)")

    # Nothing to read at all: the one error line, exit 2. --watch on a sweep whose jobs are all over: one table.
    nothing = status_cli(empty)
    assert (nothing.returncode, nothing.stdout, len(nothing.stderr.splitlines())) == (2, "", 1)
    watched = status_cli(sweep, extra=("--watch", "--every", "1"))
    assert watched.returncode == 0 and watched.stdout.count("total: 3 job(s)") == 1


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def test_durations_and_bars():
    assert [duration(s) for s in (None, 5, 65, 3600 * 2 + 61, 86400 * 3 + 3600 * 5)] == ["-", "5s", "1m05s", "2h01m", "3d05h"]
    assert progress(0, 200) == "[............] 0/200" and progress(100, 200) == "[######......] 100/200"
    assert progress(3, 0) == "[............] 3/?"
