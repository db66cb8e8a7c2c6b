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


# measured (2026-12-08, 6 steps): bf16 2.2e-4, fp16 1.1e-4 from float32; a softmax in bf16 (the loss's logits
# not cast to float32) moves bf16 past 1e-3
@pytest.mark.parametrize("dtype,tolerance", [("bfloat16", 1e-3), ("float16", 5e-4)])
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


def test_dtype_auto_is_bfloat16_on_a_cuda_gpu_that_has_it_and_float32_elsewhere(tmp_path, caplog):
    from minigpt.runtime import resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_dtype("auto", cuda, bf16_supported=True) == "bfloat16"
    assert resolve_dtype("auto", cuda, bf16_supported=False) == "float32"  # V100, T4: no bf16
    assert resolve_dtype("auto", cpu) == resolve_dtype("auto", torch.device("mps")) == "float32"
    assert resolve_dtype("float16", cuda, bf16_supported=True) == "float16"  # an explicit dtype is kept
    assert tiny_config().train.dtype.value == "auto"  # the schema default
    import logging

    with caplog.at_level(logging.INFO, logger="minigpt"):
        trainer = Trainer(tiny_config(*RUN, "train.num_iterations=1"), tmp_path)
        trainer.fit()
    assert trainer.dtype == "float32" and not trainer.scaler.is_enabled()
    assert any("| dtype float32 (auto) |" in r.getMessage() for r in caplog.records)  # the start-up line says so


def test_float32_gqa_on_cuda_takes_the_math_kernel_and_the_memory_model_counts_its_scores():
    """The rule the CUDA run follows, checked here: enable_gqa needs the flash kernel, which needs 16-bit."""
    from minigpt.memory import estimate_memory
    from minigpt.runtime import attention_kernel, math_attention_warning

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert attention_kernel(cuda, "float32", gqa=True) == "math"
    assert attention_kernel(cuda, "bfloat16", gqa=True) == attention_kernel(cuda, "float32", gqa=False) == "flash"
    assert attention_kernel(cpu, "float32", gqa=True) == "flash"  # CPU's flash kernel takes float32
    warning = math_attention_warning(cuda, "float32", gqa=True)
    assert "math kernel" in warning and "\n" not in warning
    assert math_attention_warning(cuda, "bfloat16", gqa=True) is None

    cfg = tiny_config("arch=rope_gqa", "train.dtype=float32", "train.batch_size=4")
    flash, math = estimate_memory(cfg, device=cpu), estimate_memory(cfg, device=cuda)
    m, T = cfg.model, cfg.model.block_size
    scores = m.n_layer * 4 * cfg.train.batch_size * m.n_head * T * T  # B x H x T^2 float32 per layer
    assert math.activations - flash.activations >= scores
    bf16 = tiny_config("arch=rope_gqa", "train.dtype=bfloat16", "train.batch_size=4")
    assert estimate_memory(bf16, device=cuda).activations == estimate_memory(bf16, device=cpu).activations


def test_bfloat16_on_a_cpu_without_bf16_kernels_warns_that_it_is_slow():
    """The capability flags decide: AVX512-BF16 or AMX-BF16 give native kernels, anything else emulates."""
    from minigpt.runtime import cpu_features, cpu_has_bf16_kernels, slow_dtype_warning

    cpu = torch.device("cpu")
    old_cpu = {"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}
    warning = slow_dtype_warning(cpu, "bfloat16", features=old_cpu)
    assert warning and "train.dtype=bfloat16 on this CPU is much slower than float32" in warning and "\n" not in warning
    for fast in ({**old_cpu, "avx512_bf16": True}, {**old_cpu, "amx_bf16": True}):
        assert cpu_has_bf16_kernels(fast) and slow_dtype_warning(cpu, "bfloat16", features=fast) is None
    assert slow_dtype_warning(cpu, "bfloat16", features={}) is None  # flags unknown: no claim
    assert slow_dtype_warning(torch.device("cuda"), "bfloat16", features=old_cpu) is None
    assert "float16 on CPU" in slow_dtype_warning(cpu, "float16", features=old_cpu)
    here = cpu_features()  # this machine's flags, as torch reads them (the warning's real input)
    assert not here or isinstance(here.get("avx512_bf16"), bool)


def test_a_skipped_float16_step_puts_muon_back_on_the_device():
    """torch.optim.Muon takes no inf flag: scaled_step lets it step, then restores weights and state."""
    from minigpt.optim.amp import scaled_step

    torch.manual_seed(0)
    p, q = torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8, 8))
    q.data.copy_(p.data)
    grad = torch.randn(8, 8)
    opt, ref = torch.optim.Muon([p], lr=0.1), torch.optim.Muon([q], lr=0.1)
    before = p.detach().clone()
    p.grad = grad.clone()
    with scaled_step(opt, torch.ones(()), None):  # inf found: the step is undone
        opt.step()
    assert torch.equal(p.detach(), before) and not opt.state[p]["momentum_buffer"].any()
    for _ in range(2):  # no inf: exactly the plain step
        p.grad, q.grad = grad.clone(), grad.clone()
        with scaled_step(opt, torch.zeros(()), None):
            opt.step()
        ref.step()
    assert torch.equal(p.detach(), q.detach()) and not torch.equal(p.detach(), before)
