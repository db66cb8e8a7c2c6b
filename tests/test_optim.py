"""Optimizers and schedules: Muon + AdamW groups, cosine / WSD, momentum warmup, exact Muon resume,
gradient accumulation and float16 with two optimizers, and every new combination learning on CPU."""

import math

import pytest
import torch

from minigpt.checkpoint import load_checkpoint
from minigpt.config import OptimConfig
from minigpt.model import GPT
from minigpt.optim import CombinedOptimizer, Schedule, build_optimizer, lr_factor, muon_momentum_at, muon_param_groups
from minigpt.optim.muon import adamw_lr_scale, check_partition
from minigpt.trainer import Trainer
from tests.conftest import CONF_DIR, read_losses, tiny_config

ARCHS = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))
MUON = ["optim=muon", "optim.muon_momentum_warmup_iters=4", "train.sample_every=0"]


def model_for(*overrides: str) -> GPT:
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    return GPT(cfg.arch, cfg.model)


@pytest.mark.parametrize("untied", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_is_in_exactly_one_group(arch, untied):
    model = model_for(f"arch={arch}", f"arch.tie_embeddings={str(not untied).lower()}")
    groups = muon_param_groups(model)
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    block_matrices = {id(p) for p in model.h.parameters() if p.dim() == 2}
    assert {id(p) for p in groups["matrices"]} == block_matrices
    assert any(p is model.lm_head.weight for p in groups["head"])  # the tied table is the head
    assert all(p.dim() == 1 for p in groups["scalars"])
    assert {id(p) for p in groups["embeddings"]} == (
        {id(model.wpe.weight)} if model.wpe is not None else set()) | ({id(model.wte.weight)} if untied else set())


def test_muon_optimizer_parts_and_learning_rates():
    cfg = tiny_config("arch=modern", "optim=muon")
    model = GPT(cfg.arch, cfg.model)
    opt = build_optimizer(model, cfg.optim, "cpu")
    assert isinstance(opt, CombinedOptimizer) and set(opt.parts) == {"adamw", "muon"}
    muon, adamw = opt.parts["muon"], opt.parts["adamw"]
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    (mg,) = muon.param_groups
    assert mg["lr"] == 0.02 and mg["nesterov"] and mg["adjust_lr_fn"] == "original"
    assert {id(p) for p in mg["params"]} == {id(p) for p in model.h.parameters() if p.dim() == 2}
    scale = math.sqrt(768 / 64)  # nanochat's width scaling of AdamW's lrs
    assert adamw_lr_scale(cfg.optim, 64) == pytest.approx(scale)
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx([0.3 * scale, 0.008 * scale, 0.01 * scale])
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.0, 0.0, 0.0]
    assert len(opt.param_groups) == 4 and opt.param_groups[0] is adamw.param_groups[0]
    plain = build_optimizer(model, tiny_config("optim.lr_ref_width=null").optim, "cpu")
    assert isinstance(plain, torch.optim.AdamW)  # optim=adamw stays one plain optimizer (old checkpoints load)


def test_partition_check_catches_strays_and_duplicates():
    model = model_for("arch=gpt2")
    groups = muon_param_groups(model)
    with pytest.raises(AssertionError, match="in two optimizer groups"):
        check_partition(model, {**groups, "scalars": groups["scalars"] + groups["matrices"][:1]})
    with pytest.raises(AssertionError, match="in no optimizer group"):
        check_partition(model, {**groups, "matrices": groups["matrices"][1:]})
    model.extra = torch.nn.Linear(4, 4, bias=False)  # a matrix outside the blocks: nobody decided its optimizer
    with pytest.raises(AssertionError, match=r"matrices \[\(4, 4\)\] outside the blocks"):
        muon_param_groups(model)


def test_cosine_schedule_is_llmc():
    cfg = OptimConfig(learning_rate=1.0, warmup_iters=10, learning_rate_decay_frac=0.1)
    f = [lr_factor(s, cfg, 110) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    # by hand: step 60 is half way through the 100 decay steps, so half way between 1.0 and 0.1; step 35 a
    # quarter of the way, where cos(pi/4) = 0.7071 leaves 0.1 + 0.9 * (1 + 0.7071) / 2 = 0.8682
    assert f[60] == pytest.approx(0.55) and f[35] == pytest.approx(0.8682, abs=1e-4)
    assert lr_factor(110, cfg, 110) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))


def test_wsd_schedule_warms_up_holds_then_decays_linearly():
    cfg = OptimConfig(schedule="wsd", warmup_iters=5, decay_frac=0.25, learning_rate_decay_frac=0.0)
    f = [lr_factor(s, cfg, 100) for s in range(100)]
    assert f[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f[5:75] == [1.0] * 70  # stable until the last 25 steps
    assert f[75:] == pytest.approx([(100 - s) / 25 for s in range(75, 100)])  # linear to 1/25 at the last step
    assert lr_factor(100, cfg, 100) == 0.0
    no_decay = OptimConfig(schedule="wsd", warmup_iters=0, decay_frac=0.0)
    assert {lr_factor(s, no_decay, 50) for s in range(50)} == {1.0}


def test_schedule_scales_every_group_and_warms_up_muon_momentum():
    cfg = tiny_config("arch=modern", "optim=muon", "optim.warmup_iters=4", "optim.muon_momentum_warmup_iters=10")
    opt = build_optimizer(GPT(cfg.arch, cfg.model), cfg.optim, "cpu")
    base = [g["lr"] for g in opt.param_groups]
    schedule = Schedule(opt, cfg.optim, 100)
    assert schedule.apply(1) == pytest.approx(0.02 * 0.5)  # logged: optim.learning_rate x factor
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([b * 0.5 for b in base])
    assert opt.parts["muon"].param_groups[0]["momentum"] == pytest.approx(0.85 + 0.1 * 0.1)
    schedule.apply(50)
    assert [g["lr"] for g in opt.parts["adamw"].param_groups] == pytest.approx(base[:3])
    assert opt.parts["muon"].param_groups[0]["momentum"] == pytest.approx(0.95)
    assert muon_momentum_at(5, cfg.optim) == pytest.approx(0.90)
    assert "momentum" not in opt.parts["adamw"].param_groups[0]


RUN = [*MUON, "arch=modern", "train.num_iterations=6", "train.val_loss_every=0"]


def test_muon_resume_is_bit_exact_and_checkpoints_both_optimizers(tmp_path):
    Trainer(tiny_config(*RUN, "train.checkpoint_every=3"), tmp_path / "full").fit()
    full = read_losses(tmp_path / "full")
    ckpt = load_checkpoint(tmp_path / "full" / "ckpt_0000003.pt")
    assert set(ckpt["optimizer"]) == {"adamw", "muon"}
    assert all("momentum_buffer" in s for s in ckpt["optimizer"]["muon"]["state"].values())
    assert all("exp_avg" in s for s in ckpt["optimizer"]["adamw"]["state"].values())
    start = tmp_path / "full" / "ckpt_0000003.pt"
    Trainer(tiny_config(*RUN, f"train.resume={start}"), tmp_path / "resumed").fit()
    resumed = read_losses(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5, 6]
    assert [resumed[s] for s in (4, 5, 6)] == [full[s] for s in (4, 5, 6)]  # bit for bit


def test_muon_gradient_accumulation_matches_one_big_batch(tmp_path):
    common = [*MUON, "arch=modern", "train.val_loss_every=0", "train.sequence_length=32"]
    big = Trainer(tiny_config(*common, "train.batch_size=4"), tmp_path / "a").prepare_data()
    accum = Trainer(tiny_config(*common, "train.batch_size=2", "train.total_batch_size=128"), tmp_path / "b").prepare_data()
    assert accum.grad_accum == 2
    losses_big = [big.train_step().loss.item() for _ in range(3)]
    losses_acc = [accum.train_step().loss.item() for _ in range(3)]
    assert losses_acc == pytest.approx(losses_big, abs=1e-4)


def test_muon_with_float16_grad_scaler_follows_float32(tmp_path):
    """fp16 + GradScaler + Muon takes float32's path: 1.9e-5 apart after 3 steps when measured (2026-12-08);
    gradients left scaled (no unscale_ before clipping and stepping) leave it ~1e-2 away."""
    fp32 = Trainer(tiny_config(*RUN, "train.num_iterations=3"), tmp_path / "fp32")
    fp32.fit()
    trainer = Trainer(tiny_config(*RUN, "train.dtype=float16", "train.num_iterations=3"), tmp_path / "fp16")
    assert trainer.scaler.is_enabled()
    trainer.fit()
    ref, half = read_losses(tmp_path / "fp32"), read_losses(tmp_path / "fp16")
    assert sorted(half) == sorted(ref) == [1, 2, 3]
    assert [half[s] for s in ref] == pytest.approx([ref[s] for s in ref], abs=2e-4)
    assert half != ref  # autocast really ran
    assert trainer.scaler.get_scale() > 0 and trainer.optimizer.parts["muon"].state  # Muon stepped


COMBINATIONS = {
    "gpt2+relu2": ["arch.mlp=relu2"],
    "gpt2+qk_norm": ["arch.qk_norm=true"],
    "gpt2+softcap": ["arch.logit_softcap=15"],
    "gpt2+zero_init": ["arch.zero_init_proj=true"],
    "gpt2+untied": ["arch.tie_embeddings=false"],
    # normalised embeddings are 50x GPT-2's 0.02-scale init, so the blocks start out drowned: it starts slower
    "gpt2+embed_norm": ["arch.embed_norm=true", "train.num_iterations=16", "train.val_loss_every=16"],
    "modern": ["arch=modern", "train.num_iterations=16", "train.val_loss_every=16"],  # embed_norm too: with AdamW,
    # 8 steps take it only 0.42 nats below the init loss (10.41), 16 steps 1.4 nats (9.39)
    "gpt2+muon": MUON,
    "modern+muon": ["arch=modern", *MUON],
    "modern+muon+wsd_warmup": ["arch=modern", *MUON, "optim.warmup_iters=3", "optim.decay_frac=0.5"],
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_every_new_combination_learns_on_cpu(tmp_path, name):
    adamw = [] if "optim=muon" in COMBINATIONS[name] else ["optim.learning_rate=3e-3", "optim.warmup_iters=2"]
    cfg = tiny_config(*adamw, "train.sample_every=0", "train.num_iterations=8", "train.val_loss_every=8",
                      *COMBINATIONS[name])
    final = Trainer(cfg, tmp_path).fit()
    assert final["val/loss"] < math.log(50257) - 0.5  # from ~10.8 at init (checked per arch in test_model)


def test_optimizer_bench_cli_times_adamw_and_both_muon_variants():
    from tests.conftest import ROOT, TINY, run_cli

    out = run_cli(["minigpt.bench.optimizer", "--steps", "1", "--rounds", "2", "--warmup", "0", *TINY], cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert set(lines) == {"adamw", "muon", "muon_fp32_ns"}
    assert "of AdamW's step time [95% CI" in lines["muon"] and "ms/step" in lines["adamw"]
    bad = run_cli(["minigpt.bench.optimizer", "model.n_head=5"], cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_fp32_newton_schulz_matches_torchs_bfloat16_one():
    from torch.optim._muon import _zeropower_via_newtonschulz

    from minigpt.bench.optimizer import _newton_schulz_fp32

    g = torch.randn(96, 32)
    args = ((3.4445, -4.7750, 2.0315), 5, 1e-7)
    ours, torchs = _newton_schulz_fp32(g, *args), _zeropower_via_newtonschulz(g, *args).float()
    assert ours.dtype == torch.float32 and ours.shape == g.shape
    torch.testing.assert_close(ours, torchs, atol=0.05, rtol=0.05)  # the same iteration, bf16 rounding apart
    s = torch.linalg.svdvals(ours)
    assert 0.5 < s.min() and s.max() < 1.5  # roughly orthogonal, as Muon intends
