"""Compare runs: `python -m minigpt.compare <multirun dir | run dirs...> [--baseline KEY=VALUE] [--effect X] [--out DIR]`.

Pools the runs of each configuration over seeds (n, mean, std, 95% CI of final val loss, final and
best HellaSwag acc_norm per protocol, tokens/s, cost, tokens to reach the baseline's final val loss and
that as a ratio to the baseline's tokens with a 95% CI), compares every group with the baseline
(`--baseline arch=gpt2`, default: the first group with a finished run) and says `better`, `worse` or `no detectable
difference (|Δ| < X at 95%)`, with the seeds per group needed to tell. Prints the tables and writes
`<out>/report.md` with val_loss.png, hellaswag.png (mean line and min-max band per group) and
forest.png (differences with CIs). Works offline from run directories; `--wandb ENTITY/PROJECT[/GROUP]`
reads the same from the W&B API. Unfinished or failed runs are listed and left out of the statistics.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from minigpt.cli import cli_errors
from minigpt.errors import ConfigError


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="run directories, or a multirun/sweep directory holding them")
    parser.add_argument("--baseline", metavar="KEY=VALUE",
                        help="the group others are compared with, e.g. arch=gpt2 or optim.learning_rate=1e-3 "
                             "(default: the first group with a finished run); groups differing in other keys get separate tables")
    parser.add_argument("--effect", type=float, metavar="X",
                        help="difference to size 'seeds needed' for (val loss in nats, HellaSwag as a fraction: "
                             "0.01 = 1 point); default: the observed difference")
    parser.add_argument("--out", help="report folder (default: <the one path>/compare, else outputs/compare/<time>)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT[/GROUP]", help="read the runs from the W&B API instead")
    args = parser.parse_args(argv)

    from minigpt.compare.report import build_report, write_files
    from minigpt.compare.local_runs import load_runs

    if args.out:
        out = Path(args.out)
    elif len(args.paths) == 1:
        out = Path(args.paths[0]) / "compare"
    else:
        out = Path("outputs/compare") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if bool(args.paths) == bool(args.wandb):
        raise ConfigError("pass run directories (or a multirun directory) or --wandb ENTITY/PROJECT[/GROUP], not both")
    if args.effect is not None and args.effect <= 0:
        raise ConfigError(f"--effect {args.effect}: give a positive difference, e.g. --effect 0.01")
    if args.wandb:
        from minigpt.compare.wandb_runs import load_wandb_runs

        runs = load_wandb_runs(args.wandb)
    else:
        runs = load_runs(args.paths)
    text, tables, verdicts, protocols, warnings = build_report(runs, args.wandb or " ".join(args.paths),
                                                               args.baseline, args.effect)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(text, flush=True)  # before any file: a full disk still shows the tables
    files = write_files(text, tables, verdicts, protocols, out)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
