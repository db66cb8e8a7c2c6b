"""The one memory model (minigpt/memory.py: start-up line, bench and forecast) against what torch measures on
CPU: the peak MemTracker sees over a training step, and the tensors autograd saves for backward; the 124M
recipe fits a 40 GB A100."""

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from minigpt.config import compose_typed
from minigpt.memory import GIB, activation_bytes_per_token, estimate_memory
from minigpt.model import GPT
from minigpt.optim import build_optimizer
from minigpt.runtime import autocast_context
from tests.conftest import tiny_config

TOLERANCE = 0.02  # the estimate is within 2% of the measured peak (observed: within 0.1%, always below)

# 1024 tokens over the 50,257-row head: two chunks of the lean loss, so the loss dominates;
# a 1,000-token vocabulary with 2048 tokens: the activations dominate.
LOSS_BOUND = ["model.n_layer=2", "model.n_embd=64", "model.n_head=4", "model.block_size=128", "train.batch_size=8"]
BODY_BOUND = ["model.n_layer=4", "model.n_embd=128", "model.n_head=8", "model.block_size=128",
              "train.batch_size=16", "model.vocab_size=1000"]
# Wide and short: the end of backward (all gradients and the tied embedding's second one) is the peak.
GRADIENT_BOUND = ["model.n_embd=512", "model.n_layer=4", "model.n_head=8", "model.block_size=16", "train.batch_size=1"]


def measured_peak(cfg) -> int:
    """Peak tensor bytes of the second training step (the first allocates the AdamW state), eager on CPU."""
    torch.manual_seed(0)
    model = GPT(cfg.arch, cfg.model)
    optimizer = build_optimizer(model, cfg.optim, "cpu")
    accum = (cfg.train.total_batch_size or 0) // (cfg.train.batch_size * cfg.model.block_size) or 1
    idx = torch.randint(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.model.block_size))

    def step(tracker=None):
        for _ in range(accum):
            with autocast_context(torch.device("cpu"), cfg.train.dtype.value):
                _, loss = model(idx, idx.roll(-1, 1))
            (loss / accum).backward()
            if tracker is not None:
                tracker.reset_mod_stats()  # MemTracker's per-module stats expect one forward; the peak stays
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    tracker = MemTracker()
    tracker.track_external(model, *getattr(optimizer, "parts", {"": optimizer}).values())  # optim=muon: both parts
    with tracker:
        step(tracker)
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


@pytest.mark.parametrize("arch", ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope", "modern",
                                  "modern optim=muon"])  # modern: softcap, QK- and embedding norm, untied, ReLU^2
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_estimate_matches_measured_peak_on_cpu(arch, dtype):
    preset, *switches = arch.split()
    for shape, extra in ((LOSS_BOUND, []), (BODY_BOUND, ["train.total_batch_size=4096"])):  # the latter: 2 micro-steps
        cfg = tiny_config(f"arch={preset}", *switches, f"train.dtype={dtype}", *shape, *extra)
        estimate, measured = estimate_memory(cfg).peak, measured_peak(cfg)
        assert estimate == pytest.approx(measured, rel=TOLERANCE), (shape[1], estimate / 2**20, measured / 2**20)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_estimate_matches_measured_peak_when_the_gradients_dominate(dtype):
    cfg = tiny_config(f"train.dtype={dtype}", *GRADIENT_BOUND)
    estimate = estimate_memory(cfg)
    assert estimate.peak == estimate.weights + estimate.optimizer + estimate.grads + 2 * 4 * 50304 * 512  # end of backward
    assert estimate.peak == pytest.approx(measured_peak(cfg), rel=TOLERANCE)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope", "modern", "gpt2 arch.qk_norm=true",
                                  "modern arch.n_kv_head=2"])
def test_activation_term_matches_what_autograd_saves(arch, dtype):
    """The body's activation bytes (the Korthikanti-style count) against every tensor autograd keeps for
    backward, by storage (q, k and v share one), weights and buffers excluded, autocast's weight copies apart.
    QK-norm without RoPE makes attention keep the normalised q and k instead of views of c_attn's output."""
    preset, *switches = arch.split()
    cfg = tiny_config(f"arch={preset}", *switches, f"train.dtype={dtype}")
    model = GPT(cfg.arch, cfg.model)
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    B, T = 2, cfg.model.block_size
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_context(torch.device("cpu"), dtype):
        model.body(torch.randint(0, cfg.model.vocab_size, (B, T)))
    half = dtype == "bfloat16"
    expected = activation_bytes_per_token(cfg.arch, cfg.model, half) * B * T
    if half:  # 16-bit copies of the body's matmul weights
        expected += 2 * sum(m.weight.numel() for name, m in model.named_modules()
                            if isinstance(m, torch.nn.Linear) and name != "lm_head")
    assert sum(saved.values()) == pytest.approx(expected, rel=0.01)


def test_gpt2_124m_recipe_fits_a_40gb_a100():
    """llm.c's micro-batch of 64 x 1024 on one A100 (gradient accumulation 8) and on 8 (ZeRO-1), eager bf16.

    The whole-logits loss alone would need ~40 GB here (bf16 logits, their fp32 copy, log-softmax and its
    gradient); the lean loss holds one 640-row chunk."""
    cfg = compose_typed(["experiment=gpt2_124m_fineweb_edu"])
    assert cfg.train.batch_size == 64
    for world_size in (1, 8):
        estimate = estimate_memory(cfg, world_size=world_size)
        assert estimate.peak < 36 * GIB  # 40 GB cards hold 40 GiB; room for the CUDA context and fragmentation
        assert estimate.loss < 1 * GIB < estimate.activations
