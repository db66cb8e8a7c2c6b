"""bf16 autocast and fp16 + GradScaler against float32 on CPU: close but not identical trajectories, an
overflowing fp16 step that leaves the weights alone and halves the scale, and exact resume under fp16."""

import signal

import pytest
import torch

from minigpt.checkpoint import list_checkpoints
from minigpt.trainer import Trainer
from tests.conftest import read_losses as losses, tiny_config
from tests.test_resume import signal_at

STEPS = 6
RUN = ["optim.learning_rate=3e-3", "optim.warmup_iters=2", f"train.num_iterations={STEPS}",
       "train.val_loss_every=0", "train.sample_every=0", "logger=none"]


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> dict[str, dict[int, float]]:
    out = {}
    for dtype in ("float32", "bfloat16", "float16"):
        run_dir = tmp_path_factory.mktemp(dtype)
        Trainer(tiny_config(*RUN, f"train.dtype={dtype}"), run_dir).fit()
        out[dtype] = losses(run_dir)
    return out


@pytest.mark.parametrize("dtype,tolerance", [("bfloat16", 0.05), ("float16", 0.01)])
def test_half_precision_follows_float32_closely_but_not_exactly(trajectories, dtype, tolerance):
    """bf16 keeps 8 mantissa bits, fp16 11: both round (so the losses differ: autocast is really on), and
    neither drifts (the residual stream, norms and loss stay float32; fp16's scaler keeps gradients)."""
    ref, half = trajectories["float32"], trajectories[dtype]
    assert sorted(half) == sorted(ref) == list(range(1, STEPS + 1))
    diffs = [abs(half[s] - ref[s]) for s in ref]
    assert max(diffs) > 0, f"{dtype} gave float32's losses exactly: autocast did not run"
    assert max(diffs) < tolerance, diffs
    assert half[STEPS] < half[1] - 0.5  # and it learns


def test_an_overflowing_fp16_step_leaves_the_weights_and_halves_the_scale(tmp_path):
    trainer = Trainer(tiny_config(*RUN, "train.dtype=float16"), tmp_path).prepare_data()
    trainer.train_step()  # one normal step first: the optimizer has state, the scale is settled
    scale = trainer.scaler.get_scale()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    param = next(p for n, p in trainer.model.named_parameters() if n.endswith("mlp.c_proj.weight"))
    hook = param.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    trainer.train_step()
    hook.remove()
    assert trainer.scaler.get_scale() == scale / 2  # GradScaler's backoff factor
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == []  # the whole step was skipped, not only the overflowing tensor
    trainer.train_step()  # and the next finite step updates again
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_fp16_resumes_exactly_with_its_scaler_state(tmp_path, trajectories):
    """Stopped by SIGTERM after step 3 and resumed: the same losses as the uninterrupted fp16 run, bit for bit
    (the GradScaler's scale and growth tracker are in the checkpoint)."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(*RUN, "train.dtype=float16", "train.checkpoint_every=0")
    with pytest.raises(SystemExit):
        Trainer(cfg, run_dir, extra_hooks=[signal_at(3, signal.SIGTERM)]).fit()
    assert len(list_checkpoints(run_dir)) == 1 and max(losses(run_dir)) == 3
    Trainer(cfg, run_dir).fit()
    assert losses(run_dir) == trajectories["float16"]
