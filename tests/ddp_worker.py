"""Launched by tests/test_distributed.py under torchrun (2 ranks, gloo): several trainings, one launch.

Each launch of two processes costs seconds of start-up, so one launch checks, for each suite of
overrides, plain DDP, ZeRO-1, and checkpoint-under-2-ranks + resume-under-2-ranks (in OUT_DIR/NAME/),
and once that a run dir locked by another process stops every rank.
Usage: ddp_worker.py OUT_DIR NAME OVERRIDE... [-- NAME OVERRIDE...]...
"""

import json
import sys
from pathlib import Path

import torch

from minigpt import distributed
from minigpt.checkpoint import checkpoint_path
from minigpt.run_lock import RunDirBusy
from minigpt.trainer import Trainer
from tests.conftest import tiny_config


def main(out: Path, suites: list[list[str]]) -> None:
    distributed.setup(torch.device("cpu"))  # the entrypoint's set-up step: join the gloo group once, for all runs
    # out/busy is locked by the test process: rank 0 cannot lock it and every rank stops (none waits forever)
    try:
        Trainer(tiny_config(*suites[0][1:]), out / "busy").fit()
        outcome = "trained"
    except RunDirBusy as exc:
        outcome = str(exc)
    rank = int(__import__("os").environ["RANK"])
    (out / f"busy_rank{rank}.txt").write_text(outcome)
    for name, *overrides in suites:
        run_suite(out / name, overrides)


def run_suite(out: Path, overrides: list[str]) -> None:
    plain = Trainer(tiny_config(*overrides, "train.zero_stage=0"), out / "zero0")
    plain.fit()

    zero = Trainer(tiny_config(*overrides, "train.zero_stage=1", "train.checkpoint_every=2"), out / "zero1")
    zero.fit()
    parts = getattr(zero.optimizer, "parts", {"": zero.optimizer})  # optim=muon: AdamW and Muon, each sharded
    local = sum(len(part.optim.state) for part in parts.values())  # this rank's shard of the optimizer state
    n_params = len(list(zero.model.parameters()))
    (out / f"rank{zero.dist.rank}.json").write_text(json.dumps({"local_state": local, "params": n_params}))

    # A new run started from the step-2 checkpoint written by 2 ranks (train.resume=<file>), under 2 ranks.
    start = checkpoint_path(out / "zero1", 2)
    Trainer(tiny_config(*overrides, "train.zero_stage=1", f"train.resume={start}"), out / "resumed").fit()


def suites(args: list[str]) -> list[list[str]]:
    """`NAME OVERRIDE... -- NAME OVERRIDE...` -> [[NAME, OVERRIDE...], ...]."""
    out = [[]]
    for arg in args:
        if arg == "--":
            out.append([])
        else:
            out[-1].append(arg)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), suites(sys.argv[2:]))
