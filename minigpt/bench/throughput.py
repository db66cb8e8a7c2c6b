"""Training throughput: tokens/s and MFU of real optimizer steps, and a side-by-side reference.

`measure` times `Trainer.train_step` (data, forward, backward, clipping, optimizer) for N steps after
warm-up steps (which absorb torch.compile and allocator start-up). `compare_reference` alternates
rounds of our trainer and the plain nanoGPT-style model in `reference.py` on the same batches, same
shapes, dtype and compile setting, in one process, and reports the ratio of their tokens/s.
"""

from __future__ import annotations

import statistics
import time

import torch

from minigpt.bench.reference import ReferenceGPT, train_step
from minigpt.config import MLPKind, Norm, OptimizerKind, PosEncoding
from minigpt.errors import ConfigError
from minigpt.perf import mfu


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls of `step()`, device work included."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t0


def measure(trainer, steps: int, warmup: int) -> dict:
    """tokens/s (all ranks), tokens/s per device, and MFU (None without a known peak)."""
    time_steps(trainer.train_step, warmup, trainer.device)
    seconds = time_steps(trainer.train_step, steps, trainer.device)
    tok_s = steps * trainer.tokens_per_step / seconds
    per_device = tok_s / trainer.dist.world_size
    return {"tokens_per_s": tok_s, "tokens_per_s_per_device": per_device, "ms_per_step": 1000 * seconds / steps,
            "mfu": mfu(trainer.flops_per_token, per_device, trainer.peak_flops)}


def check_reference_config(cfg) -> None:
    """The reference is plain GPT-2; other component choices have nothing to compare against."""
    a = cfg.arch
    same = (a.pos_encoding == PosEncoding.learned and a.norm == Norm.layernorm and a.mlp == MLPKind.gelu and a.bias
            and a.tie_embeddings and (a.n_kv_head or cfg.model.n_head // a.q_per_kv) == cfg.model.n_head
            and not (a.qk_norm or a.embed_norm or a.logit_softcap is not None))
    if not same:
        raise ConfigError("the reference is plain GPT-2: run --reference with arch=gpt2 (learned positions, "
                          "LayerNorm, GELU, multi-head attention, none of the modern switches)")
    if cfg.optim.kind != OptimizerKind.adamw:
        raise ConfigError(f"the reference trains with AdamW: run --reference with optim=adamw, not {cfg.optim.kind.value}")


def build_reference(trainer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    cfg = trainer.cfg
    check_reference_config(cfg)
    m = cfg.model
    model = ReferenceGPT(m.n_layer, m.n_embd, m.n_head, m.block_size, trainer.model.padded_vocab_size)
    model = model.to(trainer.device)
    if sum(p.numel() for p in model.parameters()) != trainer.model.num_params():
        raise ConfigError("reference and our model differ in size; the comparison would be unfair")
    optimizer = model.configure_optimizer(cfg.optim.learning_rate, cfg.optim.weight_decay,
                                          (cfg.optim.beta1, cfg.optim.beta2), fused=trainer.device.type == "cuda")
    if cfg.train.compile:
        model = torch.compile(model)
    return model, optimizer


def compare_reference(trainer, steps: int, warmup: int, rounds: int = 3) -> dict:
    """Median tokens/s of ours and the reference over alternating rounds; ratio = ours / reference."""
    ref_model, ref_opt = build_reference(trainer)

    def ref_step():
        batches = [tuple(t.to(trainer.device) for t in trainer.train_loader.next_batch())
                   for _ in range(trainer.grad_accum)]
        train_step(ref_model, ref_opt, batches, trainer.autocast)

    time_steps(trainer.train_step, warmup, trainer.device)
    time_steps(ref_step, warmup, trainer.device)
    ours, ref = [], []
    for _ in range(rounds):  # alternate, so drifting machine load hits both sides alike
        ours.append(steps * trainer.tokens_per_step / time_steps(trainer.train_step, steps, trainer.device))
        ref.append(steps * trainer.tokens_per_step / time_steps(ref_step, steps, trainer.device))
    o, r = statistics.median(ours), statistics.median(ref)
    return {"ours_tokens_per_s": o, "reference_tokens_per_s": r, "ratio": o / r, "rounds_ours": ours, "rounds_ref": ref}
