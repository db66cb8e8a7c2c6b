"""A sweep outlives its failed jobs; train.objective is checked before any compute."""

import json
import re

import pytest
from omegaconf import OmegaConf

from minigpt.errors import ConfigError
from minigpt.trainer import Trainer
from minigpt.validate import validate
from tests.conftest import HELLASWAG_200, ROOT, TINY, read_metrics, run_cli, tiny_config

QUICK = [*TINY, "train.num_iterations=2", "train.val_loss_every=0", "train.sample_every=0", "logger=none"]


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "run_summary.json").read_text())


def test_failed_jobs_do_not_end_a_basic_multirun(tmp_path):
    """Job 0 has a bad config, job 2 crashes while building the optimizer: job 3 still trains, each failure is
    recorded in its run dir, the sweep ends with a summary and a non-zero exit code."""
    sweep = tmp_path / "sweep"
    out = run_cli(["minigpt.train", "-m", *QUICK, "model.n_head=5,4", "optim.learning_rate=-1,3e-3",
                   f"hydra.sweep.dir={sweep}"], cwd=ROOT)  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    # job dirs are named <arch>_<model>-<config hash>: find each job by its overrides
    jobs = {}
    for run_dir in (p for p in sweep.iterdir() if p.is_dir()):
        assert re.fullmatch(r"gpt2_tiny-[0-9a-f]{8}", run_dir.name), run_dir.name
        overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        jobs[tuple(o for o in overrides if o.startswith(("model.n_head=", "optim.learning_rate=")))] = run_dir
    bad_heads = [jobs[("model.n_head=5", f"optim.learning_rate={lr}")] for lr in ("-1", "0.003")]
    crashed_dir = jobs[("model.n_head=4", "optim.learning_rate=-1")]
    ok_dir = jobs[("model.n_head=4", "optim.learning_rate=0.003")]
    for run_dir in bad_heads:  # model.n_head=5: a config error, before any compute
        summary = _summary(run_dir)
        assert summary["status"] == "failed" and "model.n_head=5 does not divide model.n_embd=64" in summary["error"]
        assert not (run_dir / "metrics.jsonl").exists()
    crashed = _summary(crashed_dir)
    assert crashed["status"] == "failed" and crashed["error"] == "ValueError: Invalid learning rate: -1.0"
    assert _summary(ok_dir)["status"] == "finished"
    assert [r["step"] for r in read_metrics(ok_dir) if "train/loss" in r] == [1, 2]
    # the summary that ends the sweep: totals, then one line per job (in launch order) with what varied and the error
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"sweep {sweep}:"))
    assert lines[start] == f"sweep {sweep}: 4 jobs, 1 ok, 3 failed"
    assert lines[start + 1].split()[:3] == ["failed", bad_heads[0].name, "[model.n_head=5"]
    assert lines[start + 3] == (f"  failed  {crashed_dir.name} [model.n_head=4 optim.learning_rate=-1]: "
                                "ValueError: Invalid learning rate: -1.0")
    assert lines[start + 4] == f"  ok      {ok_dir.name} [model.n_head=4 optim.learning_rate=0.003]"
    # the config error is one line in the job's log, the crash keeps its traceback
    assert "error: model.n_head=5 does not divide" in (bad_heads[0] / "train.log").read_text()
    assert "Traceback" in (crashed_dir / "train.log").read_text()


def test_a_failed_optuna_trial_does_not_end_the_study(tmp_path):
    """A trial that crashes is marked failed; the study goes on and keeps the best of the others."""
    sweep = tmp_path / "optuna"
    out = run_cli(["minigpt.train", "-m", "--config-dir", "sweeps", "--config-name", "lr_optuna_tiny", *QUICK,
                   "optim.learning_rate=choice(-1.0,3e-3)", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"],
                  cwd=ROOT)  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    status = {}
    for run_dir in (p for p in sweep.iterdir() if p.is_dir()):
        lr = next(o for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml") if o.startswith("optim.learning_rate="))
        status.setdefault(lr, set()).add(_summary(run_dir)["status"])
    # the sampler is seeded: both values are drawn, every job with lr -1 failed and the others finished
    assert status == {"optim.learning_rate=-1.0": {"failed"}, "optim.learning_rate=0.003": {"finished"}}
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_params["optim.learning_rate"] == 3e-3
    assert f"sweep {sweep}: 3 jobs, 1 ok, 2 failed" in out.stdout


def test_objective_must_be_a_numeric_metric_of_the_run(tmp_path):
    """Checked by validate(), before anything is built: one line listing what the run will log (never sample/text)."""
    with pytest.raises(ConfigError) as info:
        validate(tiny_config("train.objective=sample/text"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("train.objective=sample/text is not a metric this run logs")
    listed = message.split("choose one of ")[1].split(", ")
    assert listed == ["train/grad_norm", "train/loss", "train/lr", "train/ms_per_step", "train/peak_mem_gb",
                      "train/tokens", "train/tokens_per_s", "val/loss"]  # fmt: skip (peak memory: RSS on CPU)
    assert not (tmp_path / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="hellaswag/llmc/acc is not a metric"):  # no eval=hellaswag
        validate(tiny_config("train.objective=hellaswag/llmc/acc"))


def test_final_metrics_name_every_number_fit_returns(tmp_path):
    from minigpt.validate import final_metrics

    cfg = tiny_config("train.num_iterations=1", "train.val_loss_every=0", "train.peak_flops=1e12", "eval=hellaswag",
                      f"eval.hellaswag.path={HELLASWAG_200}", "eval.hellaswag.limit=4", "train.objective=hellaswag/harness/acc")
    final = Trainer(cfg, tmp_path).fit()
    numeric = sorted(k for k, v in final.items() if isinstance(v, (int, float)))
    # the list train.objective is checked against before the run (minigpt/validate.py) is what fit() returns
    assert final_metrics(cfg, with_mfu=True) == numeric
    assert {"train/mfu", "val/loss", "hellaswag/llmc/acc_norm", "hellaswag/harness/acc"} <= set(numeric)
    assert "sample/text" in final and "sample/text" not in numeric


def test_cli_objective_error_is_one_line_before_training(tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli(["minigpt.train", *QUICK, "train.objective=val/los", f"hydra.run.dir={run_dir}"], cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = [line for line in (out.stdout + out.stderr).splitlines() if "error:" in line]
    assert "train.objective=val/los is not a metric this run logs: choose one of train/grad_norm," in line
    assert not run_dir.exists()  # validated before Hydra creates the run dir (a multirun job records it instead)
