"""Prepare token shards: `python -m minigpt.prepare data=fineweb_edu_10b [data.path=/scratch/fw] [key=value ...]`.

Takes the same config groups and overrides as `minigpt.train` (so `data=...` names the same preset
for preparing and for training) and writes llm.c shards into `data.path` (see minigpt/data/shard_builder.py).
Local files work too: `data=fineweb_edu_10b data.prepare.source=docs/*.jsonl data.path=/tmp/mine`.
Interrupt it at any time; rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import sys

from minigpt.cli import cli_errors


def compose_data_config(overrides: list[str]):
    from minigpt.config import compose_typed

    return compose_typed(overrides).data


@cli_errors
def main(argv: list[str] | None = None) -> int:
    from minigpt.data.shard_builder import prepare_shards

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    prepare_shards(compose_data_config(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
