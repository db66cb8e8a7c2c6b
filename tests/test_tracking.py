"""W&B logging (real wandb, offline), run summaries and logging-failure isolation."""

import json
import math

import pytest

from minigpt.errors import ConfigError
from minigpt.loggers import build_loggers
from minigpt.run_record import read_summary
from minigpt.hooks import StepHook
from minigpt.trainer import Trainer
from minigpt.wandb_logger import resolve_mode
from tests.conftest import compose_config, read_metrics, tiny_config
from tests.wandb_records import config, finished_run_records, history, run_record

QUICK = ["optim.learning_rate=3e-3", "optim.warmup_iters=2", "train.num_iterations=3", "train.val_loss_every=3",
         "train.sample_every=3", "train.peak_flops=1e12", "train.log_every=1"]


@pytest.fixture
def wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_wandb_is_the_default_logger_and_none_still_works():
    assert compose_config([]).logger.name == "wandb"
    assert compose_config(["logger=none"]).logger.name == "none"


def test_offline_run_history_holds_the_logged_keys(tmp_path, wandb_offline):
    cfg = tiny_config("experiment=quickstart", *QUICK, "logger.tags=[smoke]")
    trainer = Trainer(cfg, tmp_path)
    trainer.fit()
    records = finished_run_records(tmp_path)
    rows = history(records)
    jsonl = read_metrics(tmp_path)

    # every train step reached W&B with the same values as metrics.jsonl, after the step-0 validation
    train = [r for r in jsonl if "train/loss" in r]
    val = [r for r in jsonl if "val/loss" in r]
    assert [r["_step"] for r in rows] == [0, 1, 2, 3] and [r["step"] for r in val] == [0, 3]
    assert "train/loss" not in rows[0] and rows[0]["val/loss"] == pytest.approx(val[0]["val/loss"])
    for wb, local in zip(rows[1:], train, strict=True):
        for key in ("train/loss", "train/lr", "train/grad_norm", "train/tokens", "train/tokens_per_s",
                    "train/ms_per_step", "train/mfu"):
            assert wb[key] == pytest.approx(local[key]), key
    last = rows[-1]
    assert last["val/loss"] == pytest.approx(val[-1]["val/loss"])
    assert last["samples/_type"] == "table-file" and last["samples/nrows"] == 1  # the text sample table
    assert last["run/gpu_hours"] == 0 and last["run/cost"] == 0 and last["run/wall_hours"] > 0

    assert records[-1].exit.exit_code == 0
    run = run_record(records)
    assert trainer.logger.run_id == run.run_id
    assert run.run_group == "quickstart" and run.job_type == "gpt2"  # group = experiment outside a sweep
    assert {"arch=gpt2", "model=tiny", "experiment=quickstart", "smoke"} <= set(run.tags)
    flat = config(records)
    assert flat["arch.name"] == "gpt2" and flat["model.n_embd"] == 64 and flat["train.num_iterations"] == 3

    summary = read_summary(tmp_path)
    assert summary["status"] == "finished" and summary["step"] == 3 and summary["tokens"] == 3 * 4 * 64
    assert summary["n_gpus"] == 0 and summary["params"] == trainer.model.num_params()


def test_run_id_continues_the_same_wandb_run(tmp_path, wandb_offline):
    cfg = tiny_config()
    first = build_loggers(cfg, tmp_path / "a")
    first.log({"train/loss": 1.0}, 1)
    first.finish()
    again = build_loggers(cfg, tmp_path / "b", run_id=first.run_id)
    again.log({"train/loss": 0.5}, 2)
    again.finish()
    assert first.run_id and again.run_id == first.run_id
    assert run_record(finished_run_records(tmp_path / "b")).run_id == first.run_id
    assert build_loggers(tiny_config("logger=none"), tmp_path / "c").run_id is None


def test_wandb_failing_mid_run_does_not_stop_training(tmp_path, wandb_offline):
    """The W&B run dies after step 1 (its next log raises wandb's UsageError): training finishes on metrics.jsonl."""
    warnings = []

    def kill_wandb(trainer):
        if trainer.step == 1:
            trainer.logger.extras[0].run.finish()
            trainer.logger.warn = warnings.append
        return {}

    cfg = tiny_config(*QUICK, "train.sample_every=0")
    final = Trainer(cfg, tmp_path, extra_hooks=[StepHook("kill_wandb", 1, kill_wandb)]).fit()
    assert math.isfinite(final["val/loss"])
    assert [r["step"] for r in read_metrics(tmp_path) if "train/loss" in r] == [1, 2, 3]
    assert len(warnings) == 1 and "WandbLogger failed" in warnings[0] and "is finished" in warnings[0]
    assert [r["_step"] for r in history(finished_run_records(tmp_path))] == [0, 1]  # W&B got steps 0 (val) and 1 only
    assert read_summary(tmp_path)["status"] == "finished"


def test_wandb_failing_to_start_does_not_stop_training(tmp_path, wandb_offline, monkeypatch):
    import wandb

    def unreachable(**kwargs):
        raise wandb.errors.CommError("could not reach api.wandb.ai")

    monkeypatch.setattr(wandb, "init", unreachable)
    warnings = []
    logger = build_loggers(tiny_config(), tmp_path, warn=warnings.append)
    assert logger.extras == [] and logger.run_id is None
    assert warnings == ["logger wandb failed to start (CommError: could not reach api.wandb.ai); "
                        "continuing with metrics.jsonl only"]
    final = Trainer(tiny_config(*QUICK, "train.num_iterations=1", "train.sample_every=0"), tmp_path / "run").fit()
    assert math.isfinite(final["train/loss"])


def test_mode_follows_wandb_mode_and_falls_back_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == ("disabled", None)
    assert build_loggers(tiny_config(), tmp_path).extras == []  # disabled: no W&B run at all
    assert resolve_mode("offline") == ("offline", None)  # logger.mode wins over the environment
    with pytest.raises(ConfigError, match="not one of online"):
        resolve_mode("onlien")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    mode, why = resolve_mode(None)
    assert mode == "offline" and "no W&B API key" in why
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    mode, why = resolve_mode(None)
    assert mode == "offline" and "not reachable" in why


def test_failed_run_is_recorded_as_failed(tmp_path, wandb_offline):
    def crash(trainer):
        raise RuntimeError("out of memory (simulated)")

    cfg = tiny_config(*QUICK, "train.val_loss_every=0", "train.sample_every=0")
    with pytest.raises(RuntimeError):
        Trainer(cfg, tmp_path, extra_hooks=[StepHook("crash", 2, crash)]).fit()
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "failed" and summary["step"] == 2
    assert summary["error"] == "RuntimeError: out of memory (simulated)"
    exit_record = finished_run_records(tmp_path)[-1]
    assert exit_record.WhichOneof("record_type") == "exit" and exit_record.exit.exit_code == 1


def test_resumed_run_continues_the_same_wandb_run_and_adds_up_wall_time(tmp_path, wandb_offline):
    common = ["optim.warmup_iters=2", "train.val_loss_every=0", "train.sample_every=0"]
    Trainer(tiny_config(*common, "train.num_iterations=2"), tmp_path).fit()
    first = read_summary(tmp_path)
    Trainer(tiny_config(*common, "train.num_iterations=3"), tmp_path).fit()  # train.resume=auto: from step 2
    ids = {run_record(finished_run_records(d)).run_id for d in sorted(tmp_path.glob("wandb/offline-run-*"))}
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 2 and len(ids) == 1
    second = read_summary(tmp_path)
    assert second["segments"] == 2 and second["status"] == "finished" and second["step"] == 3
    assert second["wall_s"] > first["wall_s"] and second["started_at"] == first["started_at"]


def test_online_without_api_key_records_offline_and_says_how_to_sync(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    warnings = []
    logger = build_loggers(tiny_config(), tmp_path, warn=warnings.append)
    logger.log({"train/loss": 2.0}, 1)
    logger.finish()
    assert len(warnings) == 1 and warnings[0].startswith("W&B run recorded offline: no W&B API key")
    sync_dir = warnings[0].split("Upload it later with: wandb sync ")[1]
    assert history(finished_run_records(sync_dir))[0]["train/loss"] == 2.0
