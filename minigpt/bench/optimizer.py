"""`python -m minigpt.bench.optimizer [--steps N] [--rounds R] [config overrides ...]`: Muon's cost per step.

Builds one trainer per variant on the same config (default: arch=modern, the tiny model, CPU):
AdamW (optim=adamw), Muon (optim=muon: torch.optim.Muon, Newton-Schulz in bfloat16) and Muon with the
Newton-Schulz iterations in float32 (torch's function with the one cast changed, patched in for this
measurement only: bfloat16 matmuls can be slow on CPUs without bf16 units). Timed rounds alternate over
the variants in one process, so drifting machine load hits all alike. Prints, per variant, the median
ms per training step and per optimizer step (the update alone, on fixed gradients), and each Muon
variant's training-step time / AdamW's with a 95% CI (t interval over the rounds' log ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import statistics
import sys
import tempfile

import torch

from minigpt.cli import cli_errors

VARIANTS = {"adamw": ["optim=adamw"], "muon": ["optim=muon"], "muon_fp32_ns": ["optim=muon"]}


def _newton_schulz_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz with float32 instead of bfloat16."""
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


@contextlib.contextmanager
def newton_schulz_dtype(variant: str):
    import torch.optim._muon as muon_module

    original = muon_module._zeropower_via_newtonschulz
    if variant == "muon_fp32_ns":
        muon_module._zeropower_via_newtonschulz = _newton_schulz_fp32
    try:
        yield
    finally:
        muon_module._zeropower_via_newtonschulz = original


def optimizer_step_ms(trainer, steps: int) -> float:
    """The update alone: one backward for gradients, then `steps` optimizer steps on them."""
    import time

    x, y = trainer.batches.next()
    trainer.model(x, y)[1].backward()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.optimizer.step()
    ms = 1000 * (time.perf_counter() - t0) / steps
    trainer.optimizer.zero_grad(set_to_none=True)
    return ms


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.bench.optimizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for minigpt.train (optim is set here)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    import numpy as np
    from scipy.stats import ttest_1samp

    from minigpt.bench.throughput import time_steps
    from minigpt.config import compose_typed
    from minigpt.trainer import Trainer
    from minigpt.validate import validate

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    base = ["arch=modern", "train.device=cpu", "train.val_loss_every=0", "train.sample_every=0"]
    with tempfile.TemporaryDirectory() as tmp:  # bad overrides: one error: line (cli_errors)
        configs = {name: compose_typed([*base, *extra, *args.overrides]) for name, extra in VARIANTS.items()}
        for cfg in configs.values():
            validate(cfg)
        trainers = {name: Trainer(cfg, f"{tmp}/{name}").prepare_data() for name, cfg in configs.items()}
    first = next(iter(trainers.values()))
    cfg = first.cfg
    print(f"model: {cfg.arch.name} {cfg.model.name} ({first.model.num_params() / 1e6:.2f}M params, "
          f"{sum(p.numel() for p in first.model.h.parameters() if p.dim() == 2) / 1e6:.2f}M in block matrices) | "
          f"{first.device}, {torch.get_num_threads()} threads | {first.tokens_per_step:,} tokens/step | "
          f"{args.rounds} rounds x {args.steps} steps, median")
    step_ms = {name: [] for name in trainers}
    update_ms = {name: [] for name in trainers}
    for name, trainer in trainers.items():
        with newton_schulz_dtype(name):
            time_steps(trainer.train_step, args.warmup, trainer.device)
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            with newton_schulz_dtype(name):
                step_ms[name].append(1000 * time_steps(trainer.train_step, args.steps, trainer.device) / args.steps)
                update_ms[name].append(optimizer_step_ms(trainer, args.steps))
    for name in trainers:
        line = f"{name:13s} {statistics.median(step_ms[name]):8.1f} ms/step | optimizer step {statistics.median(update_ms[name]):7.1f} ms"
        if name != "adamw":
            logs = np.log(np.asarray(step_ms[name]) / np.asarray(step_ms["adamw"]))  # paired by round
            ratio = math.exp(logs.mean())
            low, high = (np.exp(ttest_1samp(logs, 0.0).confidence_interval(0.95)) if len(logs) > 1
                         else (math.nan, math.nan))
            line += f" | x{ratio:.3f} of AdamW's step time [95% CI {low:.3f}, {high:.3f}]"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
