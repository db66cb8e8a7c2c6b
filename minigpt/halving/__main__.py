"""`python -m minigpt.halving -m --config-dir sweeps --config-name <halving preset> [overrides]`: a successive-
halving sweep on WSD trunks with cooldown branches (docs/halving.md). The arguments are the train command's;
the preset's `halving:` block sets the budget, the rungs and the stop rule. Every bad input is one `error:` line
before anything runs; rerunning the same command resumes the sweep where it stopped. Ends in
<sweep dir>/halving_report.md.
"""

from __future__ import annotations

import logging
import sys

from minigpt.cli import cli_errors
from minigpt.errors import RunFailure


@cli_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    from minigpt.halving.driver import load_state, run_sweep
    from minigpt.halving.report import write_report
    from minigpt.halving.sweep import read_sweep

    sweep = read_sweep(argv)
    load_state(sweep)  # a sweep dir of another sweep: refused before anything runs
    try:
        state = run_sweep(sweep)
    except RunFailure as exc:  # a run of a stage failed: its run dir says why; rerunning resumes
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path, text = write_report(sweep, state)
    print(text)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
