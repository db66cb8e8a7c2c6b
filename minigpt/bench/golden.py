"""Golden losses for the GPU test tier: `python -m minigpt.bench.golden --write tests/assets/losses/d12_bf16.txt`.

`model=d12` (GPT-2 124M), bf16 autocast, `torch.compile`, 20 optimizer steps of 16 x 1024 tokens from a
fixed seed on the Shakespeare plays committed with minigpt (no download). The file has one
`step loss` line per step (torchtitan keeps such files in tests/assets/losses/) under `#` lines that say
where and how it was made, compile time included. tests/test_gpu.py reruns the same steps and compares
each loss with the file within `TOLERANCE`; it can only be written on a CUDA GPU.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from minigpt.cli import cli_errors
from minigpt.errors import ConfigError

STEPS = 20
OVERRIDES = ["model=d12", "train.dtype=bfloat16", "train.compile=true", "train.device=cuda", "train.batch_size=16",
             "train.sequence_length=1024", "train.total_batch_size=null", f"train.num_iterations={STEPS}",
             "train.seed=1337", "optim.warmup_iters=5", "train.val_loss_every=0", "train.sample_every=0"]
# Per-step loss difference allowed against the file, in nats: a judgment until reruns are compared. Reruns
# on the same GPU model and torch differ only by non-deterministic kernels (the embedding backward's
# atomic adds); a real change to the model, the init, the schedule or the loss moves the first 20 steps by
# more. Rewrite the file when the GPU type or torch version changes on purpose (its header names both).
TOLERANCE = 0.02


def golden_run(run_dir: str | Path, overrides: list[str] = ()) -> dict:
    """The steps the golden file records: each step's loss, the first step's time (Dynamo and Inductor
    compile inside it), the steady step time, the compile time (their difference) and the peak memory."""
    from minigpt.config import compose_typed
    from minigpt.memory import estimate_memory
    from minigpt.perf import device_name
    from minigpt.trainer import Trainer
    from minigpt.validate import validate

    cfg = compose_typed([*OVERRIDES, *overrides])
    validate(cfg)
    trainer = Trainer(cfg, run_dir).prepare_data()
    cuda = trainer.device.type == "cuda"  # elsewhere (the CPU test of this code) no peak memory
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    losses, seconds = [], []
    for _ in range(cfg.train.num_iterations):
        t0 = time.perf_counter()
        result = trainer.train_step()
        losses.append(result.loss.item())  # waits for the step: the golden run times every step on purpose
        seconds.append(time.perf_counter() - t0)
    steady = statistics.median(seconds[len(seconds) // 2:])
    return {"losses": losses, "first_step_s": seconds[0], "steady_step_s": steady,
            "compile_s": seconds[0] - steady, "peak_bytes": torch.cuda.max_memory_allocated(trainer.device) if cuda else None,
            "estimate_bytes": estimate_memory(cfg, device=trainer.device).peak,
            "device": device_name(trainer.device), "torch": torch.__version__, "cuda": torch.version.cuda}


def format_golden(run: dict) -> str:
    head = [f"# minigpt golden losses: python -m minigpt.bench.golden --write PATH ({' '.join(OVERRIDES)})",
            f"# {run['device']} | torch {run['torch']} (CUDA {run['cuda']}) | {datetime.date.today()} | "
            f"compile {run['compile_s']:.1f} s | peak {(run['peak_bytes'] or 0) / 2**30:.2f} GiB "
            f"(estimate {run['estimate_bytes'] / 2**30:.2f} GiB, eager)"]
    return "\n".join(head + [f"{i} {loss:.6f}" for i, loss in enumerate(run["losses"], 1)]) + "\n"


def read_golden(path: str | Path) -> dict[int, float]:
    """{step: loss} from a golden file (`#` lines are its provenance)."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {int(step): float(loss) for step, loss in rows}


@cli_errors
def main(argv: list[str] | None = None) -> int:
    from minigpt.atomic import write_text_atomic

    parser = argparse.ArgumentParser(prog="python -m minigpt.bench.golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", required=True, help="the golden file to (over)write, e.g. tests/assets/losses/d12_bf16.txt")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        raise ConfigError("the golden losses are a GPU run (d12, bf16, compiled): run this on a CUDA GPU")
    with tempfile.TemporaryDirectory() as run_dir:
        run = golden_run(run_dir)
    write_text_atomic(args.write, format_golden(run))
    print(f"wrote {args.write}: {len(run['losses'])} steps, loss {run['losses'][0]:.4f} -> {run['losses'][-1]:.4f}, "
          f"compile {run['compile_s']:.1f} s on {run['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
