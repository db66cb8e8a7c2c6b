"""A halving sweep's pieces are exact: a WSD trunk paused with train.stop_at and a cooldown branch forked from
its checkpoint give, step for step, the losses and lr of a fresh WSD run of the branch's length (CPU float32,
bit for bit), with AdamW, with Muon, and with gradient accumulation; the paused trunk goes on in its own dir,
under the same hash, as if it had never paused. Also the 1-sqrt cooldown shape.
"""

import pytest

from minigpt.checkpoint import checkpoint_path, list_checkpoints
from minigpt.config import OptimConfig
from minigpt.optim.schedule import lr_factor
from minigpt.rundir import config_hash, decide
from minigpt.trainer import Trainer
from tests.conftest import read_metrics, tiny_config

BUDGET, RUNG, COOLDOWN = 12, 6, 0.34  # branch: 6 steps, its last round(0.34 * 6) = 2 the cooldown, forked at step 4
COMMON = ["optim.schedule=wsd", "optim.warmup_iters=2", "train.val_loss_every=0", "train.sample_every=0",
          "optim.learning_rate=3e-3"]
VARIANTS = {
    "adamw": [],
    "muon": ["optim=muon", "arch=modern", "optim.schedule=wsd", "optim.warmup_iters=2"],
    "grad_accum": ["train.batch_size=2", "train.total_batch_size=256"],
    "1-sqrt": ["optim.decay_shape=1-sqrt"],
}


def curve(run_dir) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["train/loss"], r["train/lr"]) for r in read_metrics(run_dir) if "train/loss" in r}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trunk_segment_plus_branch_is_a_fresh_wsd_run(tmp_path, variant):
    extra = [*COMMON, *VARIANTS[variant]]
    pause = RUNG - round(COOLDOWN * RUNG)
    trunk_args = [*extra, f"train.num_iterations={BUDGET}", f"optim.decay_frac={COOLDOWN}"]
    trunk_dir = tmp_path / "trunk"
    Trainer(tiny_config(*trunk_args, f"train.stop_at={pause}"), trunk_dir).fit()
    assert [p.name for p in list_checkpoints(trunk_dir)] == [checkpoint_path(trunk_dir, pause).name]
    assert max(curve(trunk_dir)) == pause

    branch_args = [*extra, f"train.num_iterations={RUNG}", f"optim.decay_frac={round(COOLDOWN * RUNG) / RUNG}"]
    Trainer(tiny_config(*branch_args, f"train.resume={checkpoint_path(trunk_dir, pause)}"), tmp_path / "branch").fit()
    Trainer(tiny_config(*branch_args), tmp_path / "fresh").fit()
    branch, fresh = curve(tmp_path / "branch"), curve(tmp_path / "fresh")
    assert sorted(branch) == list(range(pause + 1, RUNG + 1))
    assert [branch[s] for s in sorted(branch)] == [fresh[s] for s in sorted(branch)]  # bit for bit, lr included
    assert fresh[RUNG][1] < fresh[pause][1]  # the branch really decayed

    # The trunk goes on from its pause (same hash: stop_at is not identity) to the budget, as a run never paused.
    paused_cfg, full_cfg = tiny_config(*trunk_args, f"train.stop_at={pause}"), tiny_config(*trunk_args)
    assert config_hash(paused_cfg) == config_hash(full_cfg)
    assert decide(paused_cfg, trunk_dir).skip  # rerunning the pause trains nothing
    Trainer(full_cfg, trunk_dir).fit()
    Trainer(full_cfg, tmp_path / "unpaused").fit()
    trunk, unpaused = curve(trunk_dir), curve(tmp_path / "unpaused")
    assert sorted(trunk) == list(range(1, BUDGET + 1))
    assert [trunk[s] for s in sorted(trunk)] == [unpaused[s] for s in sorted(trunk)]


def test_one_minus_sqrt_cooldown_shape():
    linear = OptimConfig(schedule="wsd", warmup_iters=0, decay_frac=0.5, learning_rate_decay_frac=0.0)
    sqrt = OptimConfig(schedule="wsd", warmup_iters=0, decay_frac=0.5, learning_rate_decay_frac=0.0,
                       decay_shape="1-sqrt")
    assert [lr_factor(s, linear, 8) for s in range(8)] == [1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    # 1 - sqrt(progress through the decay): progress 0, 1/4, 1/2, 3/4 at the decay's four steps
    assert [lr_factor(s, sqrt, 8) for s in range(4, 8)] == pytest.approx([1.0, 0.5, 1 - 0.5 ** 0.5, 1 - 0.75 ** 0.5])
    assert lr_factor(3, sqrt, 8) == 1.0
