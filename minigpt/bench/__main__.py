"""`python -m minigpt.bench [--steps N] [--warmup N] [--reference] [config overrides ...]`

Measures training throughput of a config (the same presets and overrides as minigpt.train) and
prints one line: tokens/s, per-device tokens/s and MFU. With --reference it also runs the plain
nanoGPT-style GPT-2 in minigpt/bench/reference.py on the same config in the same process, and prints
ours / reference. Works under torchrun too (throughput of all ranks, MFU per GPU).

  python -m minigpt.bench model=d12 train.batch_size=16 train.dtype=bfloat16 train.compile=true
  python -m minigpt.bench --reference train.device=cpu            # CPU: ours vs the reference
  python -m minigpt.bench --gpu-suite                              # GPU: the whole suite (minigpt/bench/suite.py)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile

from minigpt.cli import cli_errors


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:,.0f}" for v in values)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps (per round)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, allocator)")
    parser.add_argument("--reference", action="store_true", help="also time the nanoGPT-style reference; print the ratio")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for --reference")
    parser.add_argument("--gpu-suite", action="store_true",
                        help="the GPU suite: d12 x four arch presets, bf16, compile, largest micro-batch; reference; "
                             "HellaSwag (minigpt/bench/suite.py)")
    parser.add_argument("--archs", type=lambda s: s.split(","), default=None, help="suite: comma-separated arch presets")
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[64, 32, 16, 8],
                        help="suite: candidate micro-batches, the largest that fits is used")
    parser.add_argument("--hellaswag-examples", type=int, default=2000, help="suite: HellaSwag-shaped examples to score")
    parser.add_argument("--hellaswag-batch-size", type=int, default=256, help="suite: evaluator rows per forward")
    parser.add_argument("--json", default=None, help="suite: also write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for minigpt.train")
    # intermixed: options may come after the overrides too (`... train.device=cpu --steps 5`)
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)

    from minigpt import distributed
    from minigpt.bench.throughput import check_reference_config, compare_reference, measure
    from minigpt.config import compose_typed
    from minigpt.runtime import pick_device
    from minigpt.trainer import Trainer
    from minigpt.validate import validate

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.gpu_suite:
            from minigpt.bench.suite import ARCHS, run_suite

            args.archs = args.archs or list(ARCHS)
            run_suite(args, args.overrides)
            return 0
        cfg = compose_typed(["train.val_loss_every=0", "train.sample_every=0", *args.overrides])
        if args.reference:
            check_reference_config(cfg)  # before any compute
        validate(cfg, distributed.detect().world_size)  # as the train entrypoint: before any side effect
        dist, device = distributed.setup(pick_device(cfg.train.device))
        with tempfile.TemporaryDirectory() as run_dir:  # train_step writes nothing; the Trainer wants a dir
            trainer = Trainer(cfg, run_dir, dist=dist, device=device).prepare_data()
            desc = (f"{cfg.arch.name} {cfg.model.name} (L{cfg.model.n_layer} d{cfg.model.n_embd} T{trainer.seq_len}) | "
                    f"{trainer.device} x{trainer.dist.world_size} | {cfg.train.dtype.value}"
                    f"{' compile' if cfg.train.compile else ''} | B{cfg.train.batch_size} accum {trainer.grad_accum}")
            r = measure(trainer, args.steps, args.warmup)
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no peak FLOPs for this device)"
            if trainer.dist.is_main:
                print(f"bench | {desc} | {args.steps} steps | {r['tokens_per_s']:,.0f} tok/s | "
                      f"{r['tokens_per_s_per_device']:,.0f} tok/s/device | {r['ms_per_step']:.1f} ms/step | MFU {mfu}")
            if args.reference:
                c = compare_reference(trainer, args.steps, args.warmup, args.rounds)
                if trainer.dist.is_main:
                    print(f"reference | {desc} | ours {c['ours_tokens_per_s']:,.0f} tok/s | nanoGPT-style "
                          f"{c['reference_tokens_per_s']:,.0f} tok/s | ratio {c['ratio']:.3f}x (median of {args.rounds} rounds; "
                          f"ours {_fmt(c['rounds_ours'])}, reference {_fmt(c['rounds_ref'])})")
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
