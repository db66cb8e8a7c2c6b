"""Resumable, idempotent runs and sweeps: run directories named by the config's hash (minigpt/rundir.py).

Rerunning a killed 3-job multirun skips the finished job, resumes the interrupted one bit-exactly and
runs the one that never started; the identity hash ignores where a run executes and logs; a directory
whose recorded config was edited is refused; train.rerun=true moves the old run aside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from minigpt.checkpoint import list_checkpoints
from minigpt.config import to_config
from minigpt.errors import ConfigError
from minigpt.plan.compose import compose_command
from minigpt.rundir import RUN_CONFIG_FILE, claim, config_hash, decide, identity, run_state
from minigpt.run_record import read_summary
from tests.conftest import ROOT, TINY, compose_config, read_losses, run_cli, tiny_config

RUN = [*TINY, "optim.warmup_iters=5", "train.val_loss_every=0", "train.sample_every=0", "logger=none"]


def test_the_hash_is_what_the_run_computes_not_where_it_runs_or_logs():
    base = config_hash(tiny_config())
    same = ["cluster=grace_a100", "logger=none", "train.checkpoint_every=5", "train.keep_checkpoints=1",
            "train.log_every=7", "train.device=auto", "train.resume=never", "train.rerun=true"]
    assert config_hash(tiny_config(*same)) == base
    for different in (["optim.learning_rate=1e-3"], ["train.seed=2"], ["arch=rope"], ["train.num_iterations=7"]):
        assert config_hash(tiny_config(*different)) != base, different
    # Only values that differ from the schema defaults count, so a field added to minigpt later leaves the
    # hashes (and so the directories) of existing runs unchanged.
    ident = identity(tiny_config())
    assert ident["model"] == {"n_layer": 2, "n_embd": 64, "block_size": 64} and "cluster" not in ident
    # model=tiny brings optim=tiny: only where it differs from the schema's default (adamw, llm.c's recipe) counts
    assert ident["optim"] == {"name": "tiny", "learning_rate": 3e-3, "warmup_iters": 20, "learning_rate_decay_frac": 0.1}


def test_default_run_dirs_are_readable_and_stable():
    (job,) = compose_command(["experiment=quickstart", "arch=rope"]).jobs
    digest = config_hash(to_config(compose_config(["experiment=quickstart", "arch=rope"])))
    assert str(job.run_dir) == f"outputs/runs/quickstart_rope_tiny-{digest}"
    jobs = compose_command(["arch=gpt2,rope"], multirun=True).jobs
    assert [str(j.run_dir.parent) for j in jobs] == ["outputs/multirun"] * 2
    assert [j.run_dir.name.split("-")[0] for j in jobs] == ["gpt2_tiny", "rope_tiny"]
    sweep = compose_command([], multirun=True, config_dir=str(ROOT / "sweeps"), config_name="lr_sweep_tiny").jobs
    assert [j.run_dir.name.rsplit("-", 1)[0] for j in sweep] == [
        f"swiglu_gqa_rope_lr{lr}_s{seed}" for lr in ("0.001", "0.003", "0.01") for seed in (1, 2, 3)]
    assert {str(j.run_dir.parent) for j in sweep} == {"outputs/sweeps/lr_sweep_tiny"}


def test_a_run_dir_whose_recorded_config_was_edited_is_refused_naming_both_files(tmp_path):
    cfg = tiny_config(*RUN)
    run_dir = tmp_path / f"gpt2_tiny-{config_hash(cfg)}"
    claim(cfg, run_dir, is_main=True)
    assert decide(cfg, run_dir).skip is False  # the recorded config matches
    saved = run_dir / RUN_CONFIG_FILE
    saved.write_text(saved.read_text().replace("n_embd: 64", "n_embd: 96"))
    with pytest.raises(ConfigError) as exc:
        decide(cfg, run_dir)
    message = str(exc.value)
    mine = run_dir / f"{RUN_CONFIG_FILE}.this_command"
    assert str(saved) in message and str(mine) in message and "\n" not in message
    assert "n_embd: 64" in mine.read_text()


def test_train_rerun_moves_the_earlier_run_aside_and_starts_afresh(tmp_path):
    cfg = tiny_config(*RUN, "train.num_iterations=3")
    done = run_cli(["minigpt.train", *RUN, "train.num_iterations=3", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert run_state(tmp_path / "run", 3).kind == "finished"
    skip = decide(cfg, tmp_path / "run")  # what the same command would do: the CLI's "skipped" line is tested below
    assert skip.skip and skip.message.startswith(f"skipped: {tmp_path / 'run'} already finished (step 3 of train.num_iterations=3)")
    assert skip.final["train/loss"] == read_losses(tmp_path / "run")[3]  # what the job returns (Optuna's objective)
    fresh = run_cli(["minigpt.train", *RUN, "train.num_iterations=3", "train.rerun=true", f"hydra.run.dir={tmp_path / 'run'}"],
                    cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (old,) = (tmp_path / "run").glob("replaced_*")
    assert sorted(p.name for p in old.iterdir()) == ["ckpt_0000003.pt", "metrics.jsonl", RUN_CONFIG_FILE, "run_summary.json"]
    assert read_losses(old) == read_losses(tmp_path / "run")  # the same config trained again, from scratch
    assert read_summary(tmp_path / "run")["segments"] == 1


def _start(args: list[str], cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_rerunning_a_killed_multirun_skips_the_finished_job_resumes_the_interrupted_one_and_starts_the_last(tmp_path):
    n = 16
    sweep = [*RUN, f"train.num_iterations={n}", "train.checkpoint_every=4", "train.seed=1,2,3",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    finished, interrupted, unstarted = [j.run_dir for j in compose_command(sweep, multirun=True).jobs]  # as train names them

    proc = _start(["minigpt.train", "-m", *sweep], tmp_path)
    try:
        deadline = time.time() + 600
        while not list_checkpoints(interrupted):  # job 2 saved its first checkpoint: kill the sweep, as a crash would
            assert proc.poll() is None and time.time() < deadline, "the sweep ended before job 2 checkpointed"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert run_state(finished, n).kind == "finished"
    state = run_state(interrupted, n)
    assert state.kind == "resume" and 4 <= state.step < n
    assert not unstarted.exists()
    losses_before = read_losses(finished)

    reference = run_cli(["minigpt.train", *RUN, f"train.num_iterations={n}", "train.seed=2",
                         f"hydra.run.dir={tmp_path / 'reference'}"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    again = run_cli(["minigpt.train", "-m", *sweep], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert f"skipped: {finished} already finished (step {n} of train.num_iterations={n})" in out
    assert read_losses(finished) == losses_before  # untouched
    assert "resumed from" in (interrupted / "train.log").read_text()
    assert read_losses(interrupted) == read_losses(tmp_path / "reference")  # bit-identical, every step once
    assert sorted(read_losses(unstarted)) == list(range(1, n + 1))
    assert [run_state(d, n).kind for d in (finished, interrupted, unstarted)] == ["finished"] * 3
