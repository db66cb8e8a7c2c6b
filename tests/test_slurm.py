"""SLURM through Hydra's submitit launcher, on a real SLURM of two node daemons on this host, started by
launch/local_slurm.sh (one-node jobs run on either node).

The `slurm` test proves, in one job array (to keep CI short): `--multirun cluster=slurm` submits an
array whose jobs both train and write metrics and checkpoints; the job whose training is longer than
its 1-minute time limit gets SIGUSR2, checkpoints at the next step boundary, is requeued by submitit,
resumes from that checkpoint in the same run directory, and finishes with per-step losses
bit-identical to an uninterrupted run (every step logged once), all its segments logging to one W&B run.
The script submitted is the one `python -m minigpt.plan` renders, and submitting the same command again
finds both jobs finished: each starts, prints "skipped" and ends.

A 2-node x 2-task job (4 gloo ranks) matches a one-process run's losses and, across a requeue, an
uninterrupted 4-rank run's bit for bit, every rank on the same master; a diverging job ends FAILED in SLURM;
job shapes the cluster cannot run stop with one line before submitting.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from minigpt.checkpoint import list_checkpoints, load_checkpoint
from minigpt.plan.compose import compose_command
from minigpt.plan.sbatch import render_sbatch
from minigpt.trainer import Trainer

from tests.conftest import CONF_DIR, ROOT, TINY, read_losses, run_cli, tiny_config
from tests.wandb_records import finished_run_records, run_record

SCRIPT = ROOT / "launch" / "local_slurm.sh"
SLURMCTLD_PID = Path("/var/run/slurm/slurmctld.pid")

# 1-minute jobs that get SIGUSR2 20 s before the limit: slurmctld checks limits every 30 s, so the
# signal lands 10-40 s into a job, after start-up, while training is still going on.
SLURM = ["cluster=slurm", "cluster.cpus_per_task=1", "cluster.mem_gb=1", "cluster.time_min=1",
         "cluster.signal_delay_s=20", "cluster.max_requeues=12"]  # requeues as needed: many on a busy machine
RUN = [*TINY, "optim.warmup_iters=5", "train.val_loss_every=0", "train.sample_every=0"]
# the same with a 30-minute limit, out of reach: for jobs that are not about the time limit
SLURM_UNLIMITED = [o for o in SLURM if not o.startswith("cluster.time_min=")] + ["cluster.time_min=30"]


def _running() -> bool:
    try:
        return Path(f"/proc/{int(SLURMCTLD_PID.read_text())}").exists()
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def local_slurm():
    """Start the local SLURM (installing it with apt-get if needed); stop it after if we started it."""
    started_here = not _running()
    # Two node daemons on this host: the multi-node test needs them and the one-node jobs run on either.
    res = subprocess.run(["bash", str(SCRIPT), "start", "--nodes", "2"], capture_output=True, text=True, timeout=900)
    if res.returncode == 3:
        pytest.skip(f"SLURM cannot be installed here: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, res.stdout + res.stderr
    yield
    if started_here:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


def steps_lasting(seconds: float) -> int:
    """How many tiny steps take `seconds` on one thread here (the jobs run with OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(tiny_config(*RUN), "unused").prepare_data()  # the token cache only
        trainer.train_step()  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return math.ceil(seconds / min(times))


def start_cli(args: list[str], cwd: Path, log: Path, **env_extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **env_extra}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop_and_cancel(client: subprocess.Popen, *others: subprocess.Popen, submitted: list[Path]) -> None:
    """A failed test leaves nothing running: kill the local processes and, unless the client succeeded, cancel
    the jobs it submitted (submitit's folder per task, `<job id>[_<array task>]`)."""
    for proc in (client, *others):
        if proc.poll() is None:
            proc.kill()
    job_ids = {p.name.split("_")[0] for p in submitted if p.is_dir()}
    if client.returncode != 0 and job_ids:
        subprocess.run(["scancel", *sorted(job_ids)], capture_output=True)


@pytest.mark.slurm
def test_multirun_array_trains_both_jobs_and_requeues_the_timed_out_one_exactly(local_slurm, tmp_path):
    # Training of the long job outlasts the latest possible signal (40 s after the job starts).
    n_long, n_short = steps_lasting(45), 6
    command = ["--multirun", *SLURM, *RUN, f"train.num_iterations={n_long},{n_short}"]
    # The job directories, as the plan predicts them (named by each config's hash, under outputs/multirun).
    long_dir, short_dir = [tmp_path / job.run_dir for job in compose_command(command[1:], multirun=True).jobs]
    client = start_cli(["minigpt.train", *command], tmp_path, tmp_path / "client.log", WANDB_MODE="offline")
    # The uninterrupted reference runs meanwhile on the other core.
    reference = start_cli(["minigpt.train", *RUN, f"train.num_iterations={n_long}", "logger=none",
                           f"hydra.run.dir={tmp_path / 'ref'}"], tmp_path, tmp_path / "reference.log")
    try:
        assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
        assert client.wait(timeout=900) == 0, (tmp_path / "client.log").read_text()[-3000:]
    finally:
        stop_and_cancel(client, reference, submitted=list(tmp_path.glob("outputs/multirun/.submitit/*_*")))

    # One sweep dir with the two job dirs: the requeued job came back to its own run directory.
    assert sorted(p for p in (tmp_path / "outputs" / "multirun").iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(
        [long_dir, short_dir])
    # The sbatch script the plan renders is the one submitit submitted.
    (submitted,) = tmp_path.glob("outputs/multirun/.submitit/*/*_submission.sh")
    os.chdir(tmp_path)  # the plan resolves the relative sweep dir as the client did, from its working directory
    try:
        assert render_sbatch(compose_command(command[1:], multirun=True).sweep_config, 2) == submitted.read_text()
    finally:
        os.chdir(ROOT)

    assert sorted(read_losses(short_dir)) == list(range(1, n_short + 1))
    assert load_checkpoint(list_checkpoints(short_dir)[-1])["step"] == n_short

    log = (long_dir / "train.log").read_text()
    for event in ("SIGUSR2 received: checkpoint saved", "Requeued job", "resumed from"):
        assert event in log, f"{event!r} missing from the long job's log"
    assert load_checkpoint(list_checkpoints(long_dir)[-1])["step"] == n_long
    reference_losses = read_losses(tmp_path / "ref")
    assert sorted(reference_losses) == list(range(1, n_long + 1))
    assert read_losses(long_dir) == reference_losses  # bit-identical, every step once

    # Every segment of the requeued job logged to the same W&B run (offline), and the run's record
    # counts the segments and ends finished.
    # A segment that gets its signal while still starting up (on a busy machine, during W&B's start) is requeued
    # by submitit before it trains or records anything: count the segments that started training.
    summary = json.loads((long_dir / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["segments"] == log.count("arch=gpt2 model=tiny |") >= 2
    wandb_runs = sorted(long_dir.glob("wandb/offline-run-*"))
    assert len(wandb_runs) >= summary["segments"]
    assert len({d.name.rsplit("-", 1)[1] for d in wandb_runs}) == 1  # offline-run-<time>-<run id>
    assert run_record(finished_run_records(wandb_runs[-1])).run_id == wandb_runs[0].name.rsplit("-", 1)[1]

    # The same command again: both jobs are found finished and skip at once (a new array, nothing retrained).
    again = run_cli(["minigpt.train", *command], cwd=tmp_path, env_extra={"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already finished (they will skip at once)" in again.stdout + again.stderr
    for run_dir, n in ((long_dir, n_long), (short_dir, n_short)):
        assert f"skipped: {run_dir} already finished (step {n} of train.num_iterations={n})" in (run_dir / "train.log").read_text()
    assert read_losses(long_dir) == reference_losses


MULTI_NODE = ["cluster.nodes=2", "cluster.tasks_per_node=2"]
# 4 ranks of batch 4 x 64 tokens: one micro-batch each; the one-process reference accumulates 4
RUN_DDP = [*RUN, "train.total_batch_size=1024", "logger=none"]


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until metrics.jsonl (rank 0's) has reached `step`: every rank is then training (each step is collective)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if max(read_losses(run_dir), default=0) >= step:
                return
        except (OSError, ValueError):  # not written yet, or a line being written
            pass
        time.sleep(0.5)
    raise AssertionError(f"{run_dir} did not reach step {step} within {timeout:.0f} s")


@pytest.mark.slurm
def test_two_node_job_matches_one_process_agrees_on_master_and_requeues_exactly(local_slurm, tmp_path):
    """One 2-node x 2-task job (4 gloo ranks) through the Hydra submitit launcher: losses equal a one-process
    run's (the DDP test's tolerance) and, bit for bit, an uninterrupted 4-rank torchrun run's, across a requeue.

    The requeue is the time limit's: SLURM's SIGUSR2 to every task of the job, the signal slurmctld sends
    `signal_delay_s` before the limit (the one-node test above waits for a real limit). Here `scancel
    --signal=USR2` sends it once rank 0 has logged step 10, so it lands while all 4 ranks train and not during
    their start-up, however slow that is on a loaded machine (a real 1-minute limit signals 25-55 s into a
    segment, which 4 ranks on 2 busy cores may still spend starting)."""
    n, signal_at = 60, 10
    command = ["--multirun", *SLURM_UNLIMITED, *MULTI_NODE, *RUN_DDP, f"train.num_iterations={n}"]
    (job_dir,) = [tmp_path / job.run_dir for job in compose_command(command[1:], multirun=True).jobs]
    client = start_cli(["minigpt.train", *command], tmp_path, tmp_path / "client.log")
    single = [*RUN_DDP, f"train.num_iterations={n}"]
    try:
        wait_for_step(job_dir, signal_at, client, timeout=600)
        (job_id,) = [p.name for p in tmp_path.glob("outputs/multirun/.submitit/*") if p.is_dir()]  # one job, no array
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, capture_output=True)
        # the references run meanwhile (the job keeps the four cores SLURM lent it busy)
        reference = run_cli(["minigpt.train", *single, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
        assert reference.returncode == 0, reference.stderr[-3000:]
        four = run_cli(["torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "minigpt.train", *single,
                        f"hydra.run.dir={tmp_path / 'ref4'}"], cwd=tmp_path, env_extra={"OMP_NUM_THREADS": "1"})
        assert four.returncode == 0, four.stderr[-3000:]
        assert client.wait(timeout=900) == 0, (tmp_path / "client.log").read_text()[-3000:]
    finally:
        stop_and_cancel(client, submitted=list(tmp_path.glob("outputs/multirun/.submitit/*")))

    log = (job_dir / "train.log").read_text()
    for event in ("SIGUSR2 received: checkpoint saved", "Requeued job", "resumed from"):
        assert event in log, f"{event!r} missing from the job's log"
    saved = int(re.search(r"step +(\d+) \| SIGUSR2 received: checkpoint saved", log).group(1))
    assert signal_at <= saved < n  # saved at a step boundary mid-run, and the rest trained after the requeue
    # Every rank of both segments joined the same master (the first node's name, resolved via /etc/hosts),
    # ranks 0-1 on node n1 and 2-3 on node n2.
    joins = re.findall(r"distributed: rank (\d) \(local (\d)\) on \S+ \(node (n\d)\), master (\S+)", log)
    assert {(int(r), int(lr), node) for r, lr, node, _ in joins} == {(0, 0, "n1"), (1, 1, "n1"), (2, 0, "n2"), (3, 1, "n2")}
    assert len(joins) == 8 and len({master for *_, master in joins}) == 1 and joins[0][3].startswith("n1:")

    got, expected = read_losses(job_dir), read_losses(tmp_path / "ref")
    assert sorted(got) == sorted(expected) == list(range(1, n + 1))  # every step once, across the requeue
    assert [got[s] for s in expected] == pytest.approx([expected[s] for s in expected], abs=1e-5)
    assert got == read_losses(tmp_path / "ref4")  # the resumed job is bit-exact: as if never interrupted
    assert json.loads((job_dir / "run_summary.json").read_text())["status"] == "finished"


@pytest.mark.slurm
def test_a_failed_job_exits_non_zero_and_shows_failed_in_slurm(local_slurm, tmp_path):
    """A job that diverges (a run failure only training finds) ends FAILED with exit code 1 in SLURM, not
    COMPLETED (hydra#1928: Hydra's run_job keeps the exception, so the task would exit 0), and the
    submitting command fails too."""
    command = ["--multirun", *SLURM_UNLIMITED, *RUN, "optim.learning_rate=1e4", "train.num_iterations=30", "logger=none"]
    res = run_cli(["minigpt.train", *command], cwd=tmp_path, env_extra={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode != 0
    (job_dir,) = [p for p in tmp_path.glob("outputs/multirun/.submitit/*") if p.is_dir()]
    # no accounting here (sacct needs slurmdbd): slurmctld keeps a finished job for MinJobAge (300 s)
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_dir.name], capture_output=True, text=True, check=True)
    assert "JobState=FAILED" in shown.stdout and "ExitCode=1:0" in shown.stdout, shown.stdout
    (run_dir,) = [p for p in (tmp_path / "outputs" / "multirun").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert "error: training diverged at step" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("name,gres", [("grace_a100", "gpu:a100:2"), ("faster_a100", "gpu:a100:2"), ("aces_h100", "gpu:h100:2")])
def test_hprc_presets_select_the_submitit_launcher(name, gres):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", [f"cluster={name}", "cluster.account=abc", "cluster.gpus_per_node=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert (launcher.gres, launcher.account, launcher.partition, launcher.gpus_per_node) == (gres, "abc", "gpu", None)
    assert launcher.max_num_timeout > 0 and any(line.startswith("module load") for line in launcher.setup)
    assert cfg.cluster.account_required and cfg.cluster.node_hour_cost > 0 and cfg.cluster.cost_unit == "SU"
    # every GPU the job pays for trains: one data-parallel task per GPU
    assert launcher.tasks_per_node == 2 and launcher.nodes == 1 and cfg.cluster.gpu.memory_gb >= 40


def test_hprc_preset_without_account_fails_in_one_line_before_submitting(tmp_path):
    res = run_cli(["minigpt.train", "cluster=grace_a100", "arch=rope_gqa"], cwd=tmp_path)
    assert res.returncode == 2
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "cluster=grace_a100 needs a SLURM account: add cluster.account=" in errors[0]
    assert not list(tmp_path.glob("outputs/multirun/.submitit/*_*"))  # nothing was submitted


@pytest.mark.slurm
def test_submit_and_go_returns_at_once_and_its_jobs_requeue_and_finish_on_their_own(local_slurm, tmp_path):
    """cluster.wait=false: the command submits the array, prints each job's id and run dir, and returns while
    the jobs are still in flight; the same command again submits nothing; `minigpt.status` follows the jobs
    (queued or running, requeued at the 1-minute limit) until both finish on their own."""
    from minigpt.slurm_jobs import in_flight, queue_states
    from minigpt.status import collect

    n_long, n_mid = steps_lasting(45), steps_lasting(30)  # the long one outlasts its time limit: requeued
    command = ["minigpt.train", "--multirun", *SLURM, *RUN, "logger=none", "cluster.wait=false",
               f"train.num_iterations={n_long},{n_mid}"]
    long_dir, mid_dir = [tmp_path / job.run_dir for job in compose_command(command[2:], multirun=True).jobs]
    env = {"OMP_NUM_THREADS": "1"}
    try:
        first = run_cli(command, cwd=tmp_path, env_extra=env, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        ids = {d: json.loads((d / "slurm_job.json").read_text())["job_id"] for d in (long_dir, mid_dir)}
        out = first.stdout + first.stderr
        for d in (long_dir, mid_dir):
            assert f"  job {ids[d]}  {d.relative_to(tmp_path)}" in out
        assert "follow them: python -m minigpt.status outputs/multirun" in out
        assert in_flight(long_dir, queue_states()) is not None  # it returned at once: 45 s of training are ahead
        rows, problems = collect([str(tmp_path / "outputs" / "multirun")])
        assert problems == [] and {r.state for r in rows} <= {"queued", "running"} and {r.job_id for r in rows} == set(ids.values())

        # The same command while they are in flight: nothing is submitted again, and it says which are in flight.
        arrays = sorted((tmp_path / "outputs" / "multirun" / ".submitit").iterdir())
        again = run_cli(command, cwd=tmp_path, env_extra=env, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        out = again.stdout + again.stderr
        assert "nothing submitted: all 2 job(s) are in flight" in out, out[-3000:]
        for d in (long_dir, mid_dir):
            assert f"in flight, not submitted again: job {ids[d]} (" in out
            assert json.loads((d / "slurm_job.json").read_text())["job_id"] == ids[d]
        assert sorted((tmp_path / "outputs" / "multirun" / ".submitit").iterdir()) == arrays

        # Nobody waits: the jobs requeue and finish by themselves; status sees them through.
        deadline, seen = time.time() + 900, set()
        while True:
            rows = {r.run_dir: r for r in collect([str(tmp_path / "outputs" / "multirun")])[0]}
            seen |= {(r.run_dir, r.state, r.detail.startswith("requeued")) for r in rows.values()}
            # "interrupted" is between segments: a job signalled at its last step saves, requeues and finishes then
            if all(r.state in ("finished", "failed", "diverged") for r in rows.values()):
                break
            assert time.time() < deadline, f"jobs still in flight: {rows}"
            time.sleep(5)
    finally:  # a failed test leaves nothing running (scancel of a finished job does nothing)
        subprocess.run(["scancel", *json_ids(tmp_path)], capture_output=True)
    long_row, mid_row = rows[long_dir], rows[mid_dir]
    assert (mid_row.state, mid_row.step, mid_row.total) == ("finished", n_mid, n_mid)
    assert (long_row.state, long_row.step) == ("finished", n_long)
    requeues = json.loads((long_dir / "run_summary.json").read_text())["segments"] - 1
    assert requeues >= 1 and long_row.detail == f"requeued {requeues}x"
    assert any(d == long_dir and state in ("queued", "running") and requeued for d, state, requeued in seen)
    assert "Requeued job" in (long_dir / "train.log").read_text()
    shown = run_cli(["minigpt.status", "outputs/multirun"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"finished (requeued {requeues}x)" in shown.stdout and "total: 2 job(s): 2 finished" in shown.stdout


def json_ids(root: Path) -> list[str]:
    """The SLURM job ids recorded under `root` (to cancel what a failed test left running)."""
    return [json.loads(p.read_text())["job_id"] for p in root.rglob("slurm_job.json")]


@pytest.mark.slurm
def test_a_sweep_larger_than_max_array_size_goes_as_several_arrays_capped_by_array_parallelism(local_slurm, tmp_path):
    command = ["minigpt.train", "--multirun", *SLURM, *RUN, "logger=none", "train.num_iterations=2",
               "train.seed=1,2,3", "cluster.max_array_size=2", "cluster.array_parallelism=1"]
    res = run_cli(command, cwd=tmp_path, env_extra={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "submitted 3 job(s) as 2 arrays of at most 2 (cluster.max_array_size):" in res.stdout + res.stderr
    scripts = sorted(p.read_text() for p in tmp_path.glob("outputs/multirun/.submitit/*/*_submission.sh"))
    arrays = [line for text in scripts for line in text.splitlines() if line.startswith("#SBATCH --array")]
    assert arrays == ["#SBATCH --array=0-1%1"] and len(scripts) == 2  # an array of 2, one at a time; then one job
    for job in compose_command(command[2:], multirun=True).jobs:
        assert json.loads((tmp_path / job.run_dir / "run_summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("setting,message", [
    ("cluster.max_array_size=0", "cluster.max_array_size=0 must be at least 1: set it to the cluster's MaxArraySize"),
    ("cluster.array_parallelism=0", "cluster.array_parallelism=0 must be at least 1"),
])
def test_bad_array_settings_fail_in_one_line_before_submitting(tmp_path, setting, message):
    res = run_cli(["minigpt.train", *SLURM, *RUN, setting], cwd=tmp_path)
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error:" in line]
    assert res.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {message}"), res.stderr[-2000:]
    assert not list(tmp_path.glob("outputs/multirun/.submitit/*_*"))  # nothing was submitted


def test_submit_and_go_refuses_a_search_sweeper(tmp_path):
    res = run_cli(["minigpt.train", *SLURM, *RUN, "cluster.wait=false", "hydra/sweeper=optuna",
                   "hydra.sweeper.n_trials=2", "optim.learning_rate=interval(1e-4,1e-2)"], cwd=tmp_path)
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error:" in line]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]
    assert errors[0] == ("error: cluster.wait=false needs the jobs' results up front, but OptunaSweeper picks its "
                         "next trials from them: drop cluster.wait=false for a search sweep")


@pytest.mark.parametrize("overrides,message", [
    (["cluster.nodes=3", "cluster.max_nodes=2"], "cluster.nodes=3 is more than partition gpu's 2 nodes (cluster.max_nodes)"),
    (["cluster.gpus_per_node=2"], "cluster.tasks_per_node=1 does not match cluster.gpus_per_node=2"),
    (["cluster.gres=gpu:a100:2"], "cluster.tasks_per_node=1 does not match cluster.gres=gpu:a100:2: one data-parallel task per GPU"),
])
def test_a_job_shape_the_partition_cannot_run_fails_in_one_line_before_submitting(tmp_path, overrides, message):
    res = run_cli(["minigpt.train", "cluster=slurm", "cluster.partition=gpu", *overrides, *TINY], cwd=tmp_path)
    assert res.returncode == 2
    errors = [line for line in (res.stdout + res.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]
    assert not list(tmp_path.glob("outputs/multirun/.submitit/*_*"))  # nothing was submitted


# A minimal halving sweep (tests/test_halving.py's shape): 2 lrs x 2 seeds, budget 30, rungs 10 / 30, the 30x too
# small lr stopped at the first rung. 10-minute jobs: no requeue here, the array per stage is what is tested.
HALVING = ["-m", "--config-dir", str(ROOT / "sweeps"), "--config-name", "lr_sweep_halving_tiny", "model.n_layer=1",
           "train.batch_size=4", "train.val_max_steps=2", "train.val_loss_every=10", "train.log_every=10",
           "halving.budget=30", "halving.rungs=[10,30]", "train.seed=1,2", "optim.learning_rate=3e-3,1e-4",
           "optim.warmup_iters=2"]


@pytest.mark.slurm
def test_a_halving_sweep_runs_each_stage_as_one_job_array_and_decides_as_locally(local_slurm, tmp_path):
    """The same halving command with cluster=slurm: every stage is one submitit job array (the trunks to the
    pause, the rung's branches, the survivors' trunks to the budget), and it ends in the same decisions, run for
    run the same val losses, and the same report as the command run locally."""
    on_slurm = ["cluster=slurm", "cluster.cpus_per_task=1", "cluster.mem_gb=1", "cluster.time_min=10"]
    client = start_cli(["minigpt.halving", *HALVING, *on_slurm, f"hydra.sweep.dir={tmp_path / 'slurm'}"], tmp_path,
                       tmp_path / "slurm.log")
    local = start_cli(["minigpt.halving", *HALVING, f"hydra.sweep.dir={tmp_path / 'local'}"], tmp_path,
                      tmp_path / "local.log")
    try:
        assert local.wait(timeout=900) == 0, (tmp_path / "local.log").read_text()[-3000:]
        assert client.wait(timeout=1500) == 0, (tmp_path / "slurm.log").read_text()[-3000:]
    finally:
        stop_and_cancel(client, local, submitted=list(tmp_path.glob("slurm/*/.submitit/*_*")))

    states = {where: json.loads((tmp_path / where / "halving_state.json").read_text()) for where in ("local", "slurm")}
    assert states["slurm"]["done"] == states["local"]["done"] == ["trunk@8", "branch@10", "trunk@30"]
    # one job array per stage (submitit's folder per task: <array id>_<task>), a task per run of the stage: the
    # trunks' folder holds trunk@8's array (4 runs) and trunk@30's (the 2 survivors' runs), the rung's folder one
    tasks = {folder: sorted(p.name for p in (tmp_path / "slurm" / folder / ".submitit").glob("*_*") if p.is_dir())
             for folder in ("trunks", "rung_10")}
    arrays = {folder: sorted({name.split("_")[0] for name in names}, key=int) for folder, names in tasks.items()}
    assert len(arrays["trunks"]) == 2 and len(arrays["rung_10"]) == 1, tasks
    first_trunks, last_trunks = arrays["trunks"]
    assert sum(n.startswith(first_trunks + "_") for n in tasks["trunks"]) == 4 and len(tasks["rung_10"]) == 4
    assert sum(n.startswith(last_trunks + "_") for n in tasks["trunks"]) == 2, tasks
    decisions = {where: state["decisions"] for where, state in states.items()}
    assert decisions["slurm"] == decisions["local"]
    rung1 = {r["arm"]: r for r in decisions["slurm"][0]["results"]}
    assert rung1["0.0001"]["stopped"] and not rung1["0.003"]["stopped"]
    assert [r["arm"] for r in decisions["slurm"][1]["results"]] == ["0.003"]
    # the runs are the same hash-named runs, in the same places under each sweep dir
    for stage, runs in states["local"]["runs"].items():
        assert [r["run_dir"].replace(str(tmp_path / "local"), "") for r in runs] == \
            [r["run_dir"].replace(str(tmp_path / "slurm"), "") for r in states["slurm"]["runs"][stage]]
    reports = {where: (tmp_path / where / "halving_report.md").read_text() for where in ("local", "slurm")}
    # the same report but for the measured time (the "Compute:" line) and the sweep's name
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("Compute:")]  # noqa: E731
    assert strip(reports["slurm"]) == strip(reports["local"])
    assert "Stopped: 0.0001" in reports["slurm"]
