"""The training loop end to end on CPU: learning, overfitting, metrics, checkpoints, CLI errors."""

import math

import pytest
import torch

from minigpt.checkpoint import list_checkpoints, load_checkpoint, load_model
from minigpt.errors import ConfigError
from minigpt.trainer import Trainer
from minigpt.validate import validate
from tests.conftest import ROOT, TINY, read_losses, read_metrics, run_cli, tiny_config

FAST = ["optim.learning_rate=3e-3", "optim.warmup_iters=10", "train.sample_every=0"]


@pytest.mark.slow
def test_validation_loss_falls_substantially(tmp_path):
    cfg = tiny_config(*FAST, "train.num_iterations=60", "train.val_loss_every=30")
    final = Trainer(cfg, tmp_path).fit()
    rows = read_metrics(tmp_path)
    # validation runs at step 0 too, before the first optimizer step: the curve starts at ln(vocab)
    val_rows = [r for r in rows if "val/loss" in r]
    assert [r["step"] for r in val_rows] == [0, 30, 60]
    initial = val_rows[0]["val/loss"]
    assert initial == pytest.approx(math.log(50257), abs=0.3)
    assert final["val/loss"] == val_rows[-1]["val/loss"] < initial - 3.0

    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 61))
    for key in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"):
        assert all(isinstance(r[key], float) and math.isfinite(r[key]) for r in train_rows), key
    assert train_rows[9]["train/lr"] == pytest.approx(3e-3)  # warmup peaks at step warmup_iters
    assert train_rows[-1]["train/lr"] < train_rows[30]["train/lr"]  # then cosine decay


@pytest.mark.slow
def test_overfit_single_batch_drives_loss_near_zero(tmp_path):
    cfg = tiny_config(
        "train.overfit_single_batch=true", "train.num_iterations=150", "train.batch_size=2",
        "train.sequence_length=32", "optim.learning_rate=3e-3", "optim.warmup_iters=5",
        "optim.weight_decay=0", "train.val_loss_every=0", "train.sample_every=0",
    )
    final = Trainer(cfg, tmp_path).fit()
    assert final["train/loss"] < 0.1


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """total_batch_size = 2 micro-batches of 2 gives the same update as one micro-batch of 4."""
    common = ["train.num_iterations=3", "train.val_loss_every=0", "train.sample_every=0", "train.sequence_length=32"]
    big = Trainer(tiny_config(*common, "train.batch_size=4"), tmp_path / "a").prepare_data()
    accum = Trainer(tiny_config(*common, "train.batch_size=2", "train.total_batch_size=128"), tmp_path / "b").prepare_data()
    assert accum.grad_accum == 2
    losses_big = [big.train_step().loss.item() for _ in range(3)]
    losses_acc = [accum.train_step().loss.item() for _ in range(3)]
    assert losses_acc == pytest.approx(losses_big, abs=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"])
def test_every_arch_trains_and_checkpoints(tmp_path, arch):
    cfg = tiny_config(f"arch={arch}", *FAST, "optim.warmup_iters=2", "train.num_iterations=8", "train.val_loss_every=4")
    final = Trainer(cfg, tmp_path).fit()
    assert final["val/loss"] < math.log(50257) - 0.5  # learning, not just running
    (ckpt,) = list_checkpoints(tmp_path)
    state = load_checkpoint(ckpt)  # weights_only=True
    assert state["step"] == 8 and state["config"]["arch"]["name"] == arch
    model, _ = load_model(tmp_path)
    idx = torch.randint(0, 50257, (1, 12))
    assert model(idx)[0].shape == (1, 12, 50257)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["model.n_head=5"], "does not divide model.n_embd"),
        (["arch=rope_gqa", "arch.n_kv_head=3"], "n_kv_head=3 does not divide model.n_head=4"),
        (["train.sequence_length=128"], "longer than the model context"),
        (["model.block_size=40000", "train.batch_size=64"], "too few for 64 sequences"),
        (["train.total_batch_size=1000"], "not a multiple"),
        (["data=text"], "data.path"),
    ],
)
def test_bad_input_fails_before_compute(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):  # as the entrypoint: validate, then build and open the data
        cfg = tiny_config(*overrides)
        validate(cfg)
        Trainer(cfg, tmp_path).prepare_data()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cli_trains_writes_run_dir_and_reports_bad_input_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    ok = run_cli(
        ["minigpt.train", *TINY, *FAST, "train.num_iterations=3", "train.val_loss_every=0", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert [r["step"] for r in read_metrics(run_dir) if "train/loss" in r] == [1, 2, 3] and list_checkpoints(run_dir)
    # val_loss_every=0: validation only after the last step (none at step 0)
    assert [r["step"] for r in read_metrics(run_dir) if "val/loss" in r] == [3]
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "train.log").exists()

    bad = run_cli(["minigpt.train", "model.n_head=5", f"hydra.run.dir={tmp_path / 'bad'}"], cwd=ROOT)
    assert bad.returncode == 2
    errors = [line for line in (bad.stdout + bad.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "model.n_head=5 does not divide model.n_embd=128" in errors[0]
    assert "Traceback" not in bad.stderr

    unknown = run_cli(["minigpt.train", "arch=nope"], cwd=tmp_path)
    assert unknown.returncode != 0 and "Could not find 'arch/nope'" in unknown.stderr


def test_mfu_is_logged_against_a_given_peak(tmp_path):
    cfg = tiny_config(*FAST, "train.num_iterations=2", "train.val_loss_every=0", "train.peak_flops=1e12")
    trainer = Trainer(cfg, tmp_path)
    trainer.fit()
    # nanoGPT's 6N + 12 L H Q T by hand for TINY (2 layers, width 64, 4 heads of 16, T 64): N without the position
    # table = 2 x (12 x 64^2 + 13 x 64) + 50304 x 64 + 2 x 64 = 3,319,552, so 19,917,312 + 98,304 FLOPs per token
    assert trainer.flops_per_token == 20_015_616
    rows = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    for r in rows:
        assert r["train/mfu"] == pytest.approx(20_015_616 * r["train/tokens_per_s"] / 1e12)


def test_validation_including_step_0_leaves_the_training_losses_unchanged(tmp_path):
    """Validating (at step 0 and every 2 steps) reads no training batch and draws no random number."""
    losses = {}
    for every in (0, 2):
        cfg = tiny_config(*FAST, "train.num_iterations=4", f"train.val_loss_every={every}")
        Trainer(cfg, tmp_path / str(every)).fit()
        losses[every] = read_losses(tmp_path / str(every))
        assert bool([r for r in read_metrics(tmp_path / str(every)) if r["step"] == 0]) == (every > 0)
    assert losses[2] == losses[0] and sorted(losses[0]) == [1, 2, 3, 4]


def test_sample_every_0_generates_nothing_not_even_at_the_end(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Trainer, "sample", lambda self: calls.append(self.step) or {})
    Trainer(tiny_config("train.num_iterations=2", "train.val_loss_every=0", "train.sample_every=0"), tmp_path / "a").fit()
    assert calls == []
    Trainer(tiny_config("train.num_iterations=2", "train.val_loss_every=0", "train.sample_every=5"), tmp_path / "b").fit()
    assert calls == [2]  # every > 0: also at the end
