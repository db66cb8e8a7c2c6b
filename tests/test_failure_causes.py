"""Every failure a user can fix ends in one line naming the cause, and no good checkpoint or metrics row is lost:
unreadable checkpoints, a full disk, text that is not UTF-8, token ids outside the vocabulary; and the
wall time of a killed run is not lost with it."""

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minigpt.atomic
from minigpt.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint, load_model
from minigpt.data.shards import write_shard
from minigpt.errors import ConfigError
from minigpt.run_record import read_summary
from minigpt.trainer import Trainer
from tests.conftest import ROOT, TINY, read_losses, read_metrics, tiny_config

QUIET = ["train.val_loss_every=0", "train.sample_every=0", "optim.warmup_iters=2", "optim.learning_rate=3e-3"]


# ------------------------------------------------------------------------------------------ checkpoints


def test_all_unreadable_checkpoints_refuse_a_fresh_start_then_new_checkpoints_survive_pruning(tmp_path):
    cfg = tiny_config(*QUIET, "train.num_iterations=4", "train.checkpoint_every=2", "train.keep_checkpoints=2")
    Trainer(cfg, tmp_path).fit()
    rows = (tmp_path / "metrics.jsonl").read_text()
    two, four = checkpoint_path(tmp_path, 2), checkpoint_path(tmp_path, 4)
    two.write_bytes(os.urandom(4096))  # random bytes
    four.write_bytes(four.read_bytes()[:100_000])  # torn
    checkpoint_path(tmp_path, 9).write_bytes(b"")  # empty

    more = tiny_config(*QUIET, "train.num_iterations=6", "train.checkpoint_every=2", "train.keep_checkpoints=2")
    with pytest.raises(ConfigError) as refused:
        Trainer(more, tmp_path).fit()
    message = str(refused.value)
    assert message.startswith(f"no readable checkpoint in {tmp_path} (3 unreadable (now renamed *.corrupt): ")
    assert "ckpt_0000002.pt: not a checkpoint (not a PyTorch zip archive" in message
    assert "ckpt_0000004.pt: a truncated checkpoint" in message
    assert "rerun to start this run over from step 0" in message and "Weights only" not in message
    assert (tmp_path / "metrics.jsonl").read_text() == rows  # no row lost
    assert list_checkpoints(tmp_path) == []
    assert sorted(p.name for p in tmp_path.glob("*.corrupt")) == [
        "ckpt_0000002.pt.corrupt", "ckpt_0000004.pt.corrupt", "ckpt_0000009.pt.corrupt"]

    # asked again, it starts over; pruning counts only real checkpoints, so the run's own survive
    Trainer(more, tmp_path).fit()
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [4, 6]
    assert sorted(read_losses(tmp_path)) == list(range(1, 7))


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    """keep_checkpoints=1 used to keep the highest step number: a stray newer file made it delete every new save."""
    from minigpt.checkpoint import save_checkpoint
    from minigpt.resume import prune_checkpoints

    for step in (2, 4):
        save_checkpoint({"step": step}, checkpoint_path(tmp_path, step))
    checkpoint_path(tmp_path, 9).write_bytes(b"junk")  # e.g. copied in by hand
    prune_checkpoints(tmp_path, 1, newest=checkpoint_path(tmp_path, 4))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000004.pt", "ckpt_0000009.pt"]


def test_a_random_bytes_checkpoint_is_named_as_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "ckpt_0000005.pt"
    bogus.write_bytes(os.urandom(5000))
    with pytest.raises(ConfigError) as exc:
        load_model(bogus)
    assert str(exc.value) == f"{bogus} is not a checkpoint (not a PyTorch zip archive: corrupt, or another kind of file)"


# ------------------------------------------------------------------------------------------ full disk


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: the write that crosses it fails with ENOSPC."""

    room = 0

    def write(self, data):
        FullDisk.room -= len(data)
        if FullDisk.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_no_metrics(tmp_path, monkeypatch):
    from minigpt.errors import RunFailure

    opened = []

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        opened.append(path)
        if "ckpt_0000004" in str(path):  # the second checkpoint: the disk is full by then
            FullDisk.room = 1_000_000
            return FullDisk(path, mode)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(minigpt.atomic, "open", open_on_full_disk, raising=False)
    cfg = tiny_config(*QUIET, "train.num_iterations=6", "train.checkpoint_every=2")
    with pytest.raises(RunFailure) as failed:
        Trainer(cfg, tmp_path).fit()
    target = checkpoint_path(tmp_path, 4)
    assert str(failed.value).startswith(f"could not write checkpoint {target}: No space left on device; free space")
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed" and summary["error"] == str(failed.value)
    assert sorted(read_losses(tmp_path)) == [1, 2, 3, 4]  # every logged row is still there
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000002.pt"]  # the good one, intact
    assert load_checkpoint(checkpoint_path(tmp_path, 2))["step"] == 2
    assert not list(tmp_path.glob(".ckpt_*"))  # the partial temp file is gone


def _can_mount_tmpfs(where) -> str | None:
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where}"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here ({probe.stderr.strip()[:80]})"


def test_a_really_full_filesystem_gives_the_same_line_in_console_log_and_summary(tmp_path):
    """A 60 MB tmpfs holds the first 40 MB checkpoint but not the second (in a private mount namespace)."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    why_not = _can_mount_tmpfs(mnt)
    if why_not:
        pytest.skip(f"tmpfs disk-full check skipped: {why_not}")
    run_dir = mnt / "run"
    train = [sys.executable, "-m", "minigpt.train", *TINY, *QUIET, "train.num_iterations=6", "train.checkpoint_every=2",
             "train.keep_checkpoints=1", f"hydra.run.dir={run_dir}"]
    script = (f"mount -t tmpfs -o size=60m tmpfs {mnt} && {' '.join(train)}; rc=$?; "
              f"rm -f {run_dir}/ckpt_*.pt; cp -a {run_dir} {out}; exit $rc")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    message = errors[0].split("error: ", 1)[1]
    assert message.startswith(f"could not write checkpoint {run_dir}/ckpt_0000004.pt: No space left on device")
    assert f"error: {message}" in (out / "train.log").read_text()
    assert read_summary(out)["error"] == message
    assert sorted(read_losses(out)) == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ bad data


def test_text_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    latin1 = tmp_path / "corpus" / "plays.txt"
    latin1.parent.mkdir()
    latin1.write_bytes("To be, or not to be: that is the question.\n".encode() * 50 + "Caf\u00e9\n".encode("latin-1"))
    offset = len("To be, or not to be: that is the question.\n".encode()) * 50 + 3
    with pytest.raises(ConfigError) as exc:
        Trainer(tiny_config("data=text", f"data.path={latin1.parent}"), tmp_path / "run").prepare_data()
    assert str(exc.value) == (f"{latin1} is not UTF-8 text: byte 0xe9 at offset {offset} cannot be decoded; convert it "
                              "(e.g. iconv -f latin1 -t utf-8) or leave it out of data.path")

    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"text": "fine"}\n{"text": "\xff\xfe broken"}\n')
    with pytest.raises(ConfigError, match=rf"{rows} is not UTF-8 text: byte 0xff at offset 27"):
        Trainer(tiny_config("data=text", f"data.path={rows}"), tmp_path / "run2").prepare_data()


def test_a_shard_with_token_ids_outside_the_vocabulary_fails_at_open(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, 4000)
    tokens[1234] = 60000  # e.g. a shard made with another tokenizer (ids up to 50303 fit the padded table silently)
    write_shard(tmp_path / "train_000001.bin", tokens)
    write_shard(tmp_path / "val_000000.bin", rng.integers(0, 50257, 2000))
    with pytest.raises(ConfigError) as exc:
        Trainer(tiny_config("data=shards", f"data.path={tmp_path}", *QUIET, "train.num_iterations=2"), tmp_path / "run").fit()
    assert str(exc.value).startswith(f"{tmp_path / 'train_000001.bin'} holds token id 60000, outside the model's "
                                     "vocabulary (model.vocab_size=50257)")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ------------------------------------------------------------------------------------------ wall time

SEGMENT = """
import os, sys, time
from pathlib import Path
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from tests.conftest import tiny_config

run_dir, times, *overrides = sys.argv[1:]

def kill(trainer):  # SIGKILL after step 6: the last checkpoint (and run_summary.json write) was at step 5
    if trainer.step == 6:
        Path(times).write_text(f"{start} {time.time()}")
        os.kill(os.getpid(), 9)
    return {}

def work(trainer):
    time.sleep(1.0)
    return {}

cfg = tiny_config(*overrides)
start = time.time()
Trainer(cfg, run_dir, extra_hooks=[StepHook("kill", 1, kill), StepHook("work", 1, work)]).fit()
"""


def test_wall_time_adds_up_over_a_killed_and_a_resumed_segment(tmp_path):
    run_dir, times = tmp_path / "run", tmp_path / "times"
    steps = [*QUIET, "train.num_iterations=9", "train.checkpoint_every=5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", SEGMENT, str(run_dir), str(times), *steps], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    start, end = map(float, times.read_text().split())
    first = read_summary(run_dir)
    assert first["status"] == "running" and first["step"] == 5  # written with the step-5 checkpoint
    # a kill loses the time since the last checkpoint: here step 6, which metrics.jsonl timed before the kill
    lost = next(r["train/ms_per_step"] for r in read_metrics(run_dir) if r["step"] == 6) / 1000

    from minigpt.hooks import StepHook

    cfg = tiny_config(*steps)
    t0 = time.time()
    Trainer(cfg, run_dir, extra_hooks=[StepHook("work", 1, lambda t: time.sleep(1.0) or {})]).fit()
    second = time.time() - t0
    summary = read_summary(run_dir)
    assert summary["segments"] == 2 and summary["status"] == "finished"
    assert summary["wall_s"] == pytest.approx((end - start - lost) + second, abs=2.0)
    assert summary["gpu_hours"] == 0 and summary["cost"] == 0  # CPU: no GPU-hours
    run_rows = [r for r in read_metrics(run_dir) if "run/wall_hours" in r]
    assert len(run_rows) == 1 and run_rows[0]["run/wall_hours"] == pytest.approx(summary["wall_s"] / 3600, rel=1e-3)
    assert json.loads((run_dir / "run_summary.json").read_text())["step"] == 9


def test_a_failure_record_that_cannot_be_written_says_so_in_one_line(tmp_path, caplog):
    """record_failure (a job's bad config in a sweep) on a run dir where nothing can be written: one warning line
    naming the file and why, and no exception in place of the run's own error."""
    from minigpt.run_record import SUMMARY_FILE, record_failure

    not_a_dir = tmp_path / "run"
    not_a_dir.write_text("a file where the run dir should be")
    with caplog.at_level("WARNING", logger="minigpt"):
        record_failure(not_a_dir, ConfigError("model.n_head=5 does not divide model.n_embd=128"))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"warning: could not record the failure in {not_a_dir / SUMMARY_FILE}: ") and "\n" not in line
    ok = tmp_path / "ok"
    ok.mkdir()
    record_failure(ok, ConfigError("bad"))
    assert read_summary(ok)["status"] == "failed" and read_summary(ok)["error"] == "bad"
