"""Never lose work, part 3: a run dir never mixes two configs, Ctrl-C saves, every step is logged once,
broken or refused Hugging Face folders and read-only run dirs give one line."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from minigpt.checkpoint import list_checkpoints, load_checkpoint
from minigpt.errors import ConfigError
from minigpt.hooks import StepHook
from minigpt.rundir import claim, decide
from minigpt.run_record import read_summary
from minigpt.trainer import Trainer
from tests.conftest import ROOT, TINY, read_losses, read_metrics, run_cli, tiny_config

QUIET = ["train.val_loss_every=0", "train.sample_every=0", "optim.warmup_iters=2", "optim.learning_rate=3e-3"]


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]


# ------------------------------------------------------------------------------------------ one config per run dir


def test_a_changed_setting_forced_into_a_run_dir_is_refused_and_an_extension_is_said(tmp_path):
    run_dir = tmp_path / "forced"
    base = ["minigpt.train", *TINY, *QUIET, "optim.warmup_iters=1", "train.checkpoint_every=1", f"hydra.run.dir={run_dir}"]
    assert run_cli([*base, "train.num_iterations=2"], cwd=ROOT).returncode == 0
    kept = {name: (run_dir / name).read_bytes() for name in
            ("run_config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl", "run_summary.json")}

    changed = run_cli([*base, "train.num_iterations=2", "optim.learning_rate=4e-3"], cwd=ROOT)
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert "Traceback" not in changed.stderr
    (line,) = error_lines(changed)
    assert line == (f"error: {run_dir} holds a run with other settings (optim.learning_rate: 0.003 -> 0.004): add "
                    "train.rerun=true to replace it (its files are moved aside) or give this run another hydra.run.dir")
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept  # .hydra/ and run_config.yaml untouched

    # a longer run alone is an extension: said in one line, trained on from step 2, recorded in run_summary.json
    longer = run_cli([*base, "train.num_iterations=3"], cwd=ROOT)
    assert longer.returncode == 0, longer.stderr[-2000:]
    said = [line for line in (longer.stdout + longer.stderr).splitlines() if "extending" in line]
    assert len(said) == 1 and f"extending {run_dir}: train.num_iterations 2 -> 3, going on from step 2" in said[0]
    assert "the lr schedule changes from step 2 on (cosine over the new length: lr 3.00e-04 -> 1.65e-03 there)" in said[0]
    assert sorted(read_losses(run_dir)) == [1, 2, 3]
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["extended"] == [{"from": 2, "to": 3, "at_step": 2}]

    # the Python API / a multirun job: refused the same way, and a finished run returns no old metrics
    with pytest.raises(ConfigError, match=r"optim.learning_rate: 0.003 -> 0.004"):
        decide(tiny_config(*QUIET, "optim.warmup_iters=1", "train.num_iterations=3", "optim.learning_rate=4e-3"), run_dir)
    assert decide(tiny_config(*QUIET, "optim.warmup_iters=1", "train.num_iterations=3", "optim.learning_rate=4e-3", "train.rerun=true"),
                  run_dir).skip is False  # the way out the line names


def test_a_multirun_forced_into_a_job_dir_with_other_settings_is_refused_before_any_job_rewrites_it(tmp_path):
    sweep = ["minigpt.train", "-m", *TINY, *QUIET, "optim.warmup_iters=1", "train.num_iterations=2",
             f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=forced_${hydra.job.num}"]
    assert run_cli([*sweep, "train.seed=0,1"], cwd=ROOT).returncode == 0
    job_dirs = [tmp_path / "forced_0", tmp_path / "forced_1"]
    kept = {d / name: (d / name).read_bytes() for d in job_dirs for name in ("run_config.yaml", ".hydra/config.yaml")}

    changed = run_cli([*sweep, "train.seed=0,1", "optim.learning_rate=4e-3"], cwd=ROOT)
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert "Traceback" not in changed.stderr
    (line,) = error_lines(changed)
    assert line.startswith(f"error: {job_dirs[0]} holds a run with other settings (optim.learning_rate: 0.003 -> 0.004)")
    assert line.endswith("give this run another hydra.sweep.dir (and 1 more job(s) of this sweep)")
    assert {path: path.read_bytes() for path in kept} == kept  # no job ran, no .hydra/ rewritten

    rerun = run_cli([*sweep, "train.seed=0,1"], cwd=ROOT)  # the same sweep again: its finished jobs skip
    assert rerun.returncode == 0 and (rerun.stdout + rerun.stderr).count("already finished") == 2, rerun.stderr[-2000:]


def test_under_wsd_an_extension_in_the_stable_phase_continues_the_schedule_exactly(tmp_path):
    wsd = [*QUIET, "optim.schedule=wsd", "optim.decay_frac=0.25", "train.checkpoint_every=2"]

    def stop_at_3(trainer):
        if trainer.step == 3:
            raise KeyboardInterrupt
        return {}

    first = tiny_config(*wsd, "train.num_iterations=8")
    claim(first, tmp_path, is_main=True)  # run_config.yaml, as `python -m minigpt.train` records it
    with pytest.raises(KeyboardInterrupt):
        Trainer(first, tmp_path, extra_hooks=[StepHook("stop", 1, stop_at_3)]).fit()
    message = decide(tiny_config(*wsd, "train.num_iterations=12"), tmp_path).message
    assert message.startswith(f"extending {tmp_path}: train.num_iterations 8 -> 12, going on from step 2; "
                              "the lr schedule continues exactly (lr 3.00e-03 at step 2)")


# ------------------------------------------------------------------------------------------ every step once


def test_a_restart_from_step_0_logs_the_step_0_validation_once(tmp_path):
    cfg = tiny_config(*QUIET, "train.val_loss_every=2", "train.num_iterations=3", "train.checkpoint_every=10")

    def kill_at_1(trainer):  # dies before its first checkpoint (like a kill -9 at step 1)
        if trainer.step == 1:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path, extra_hooks=[StepHook("die", 1, kill_at_1)]).fit()
    assert not list_checkpoints(tmp_path)
    Trainer(cfg, tmp_path).fit()
    val_steps = [r["step"] for r in read_metrics(tmp_path) if "val/loss" in r]
    assert val_steps == [0, 2, 3]
    assert sorted(read_losses(tmp_path)) == [1, 2, 3]


# ------------------------------------------------------------------------------------------ Ctrl-C

CTRL_C = """
import os, signal, sys
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from tests.conftest import tiny_config

run_dir, at, twice, *overrides = sys.argv[1:]

def press(trainer):  # Ctrl-C during step `at`'s hooks: the save comes at this step boundary
    if trainer.step == int(at):
        os.kill(os.getpid(), signal.SIGINT)
        if twice == "1":
            os.kill(os.getpid(), signal.SIGINT)
    return {}

Trainer(tiny_config(*overrides), run_dir, extra_hooks=[StepHook("ctrl-c", 1, press)]).fit()
"""


def ctrl_c(run_dir, at: int, twice: bool, *overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", CTRL_C, str(run_dir), str(at), str(int(twice)), *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_ctrl_c_saves_at_the_step_boundary_exits_130_and_resumes_bit_exact(tmp_path):
    run = [*QUIET, "train.num_iterations=6", "train.checkpoint_every=10"]
    Trainer(tiny_config(*run), tmp_path / "reference").fit()
    reference = read_losses(tmp_path / "reference")

    stopped = ctrl_c(tmp_path / "run", 3, False, *run)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr and "KeyboardInterrupt" not in stopped.stderr
    said = [line for line in stopped.stderr.splitlines() if "Ctrl-C" in line]
    assert len(said) == 1 and "Ctrl-C: checkpoint saved, stopping; rerun the same command to resume" in said[0]
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path / "run")] == [3]
    assert read_summary(tmp_path / "run")["status"] == "interrupted"
    Trainer(tiny_config(*run), tmp_path / "run").fit()
    assert read_losses(tmp_path / "run") == reference  # bit-exact, each step once

    # a second Ctrl-C does not wait for the save
    now = ctrl_c(tmp_path / "now", 3, True, *run)
    assert now.returncode != 0 and "KeyboardInterrupt" in now.stderr
    assert not list_checkpoints(tmp_path / "now")


# ------------------------------------------------------------------------------------------ HF folders


def _tiny_hf_folder(path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16, vocab_size=100,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(path)
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_broken_and_refused_hugging_face_folders_give_one_line_everywhere(tmp_path):
    import torch

    broken = _tiny_hf_folder(tmp_path / "broken")
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": ')
    refused = _tiny_hf_folder(tmp_path / "refused")
    (refused / "model.safetensors").unlink()
    torch.save({"evil": Evil()}, refused / "pytorch_model.bin")
    evil_ckpt = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil_ckpt)

    expected = {
        broken: f"error: {broken / 'config.json'} is not valid JSON (Expecting value at line 1 column 35): fix or "
                "replace it (save_pretrained writes a valid one)",
        refused: f"error: {refused}: its weights cannot be loaded safely (it holds objects safe loading refuses: "
                 "Trying to load unsupported GLOBAL posix.system whose module posix is blocked; minigpt never "
                 "unpickles arbitrary objects); use a folder with model.safetensors",
        evil_ckpt: f"error: {evil_ckpt} is not a minigpt checkpoint (it holds objects safe loading refuses: Trying to "
                   "load unsupported GLOBAL posix.system whose module posix is blocked; minigpt never unpickles "
                   "arbitrary objects)",
    }
    for source, line in expected.items():
        for args in (["minigpt.train", *TINY, *QUIET, "train.num_iterations=1", f"train.init_from={source}",
                      f"hydra.run.dir={tmp_path / 'run'}"],
                     ["minigpt.export_hf", str(source), str(tmp_path / "out")]):
            res = run_cli(args, cwd=ROOT)
            assert res.returncode in (1, 2) and "Traceback" not in res.stderr, res.stderr[-3000:]
            assert [found[found.index("error:"):] for found in error_lines(res)] == [line], (args[0], res.stderr[-2000:])
            assert "weights_only=False" not in res.stderr and "pwned" not in res.stdout


# ------------------------------------------------------------------------------------------ read-only storage


def _read_only_copy_script(src, mnt, command: list[str]) -> str:
    return (f"mount --bind {src} {mnt} && mount -o remount,bind,ro {mnt} && {' '.join(command)}")


def test_a_read_only_run_dir_gives_one_line_and_a_finished_one_is_reported_finished(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("read-only check skipped: no unshare command")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind {tmp_path} {mnt} && "
                            f"mount -o remount,bind,ro {mnt} && ! touch {mnt}/x"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"read-only check skipped: cannot make a read-only bind mount ({probe.stderr.strip()[:80]})")
    src = tmp_path / "src"
    run = [*TINY, *QUIET, "train.num_iterations=2"]
    assert run_cli(["minigpt.train", *run, f"hydra.run.dir={src / 'done'}"], cwd=ROOT).returncode == 0
    (src / "unfinished").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    train = [sys.executable, "-m", "minigpt.train", *run]
    for name, rc, wanted in (("done", 0, f"skipped: {mnt / 'done'} already finished (step 2 of train.num_iterations=2)"),
                             ("unfinished", 2, f"error: {mnt / 'unfinished'} is read-only: this run cannot write")):
        script = _read_only_copy_script(src, mnt, [*train, f"hydra.run.dir={mnt / name}"])
        res = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
        lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
        assert res.returncode == rc and len(lines) == 1 and lines[0].startswith(wanted), (name, lines[-20:])
