"""Reading runs back and turning a sweep into a verdict: `python -m minigpt.compare <multirun dir> --baseline arch=gpt2`.

local_runs.py / wandb_runs.py read runs (run directories or the W&B API); groups.py pools the seeds of one
configuration and splits the groups into comparable tables; stats.py and verdicts.py compare each
group with its baseline; plots.py and report.py write report.md with its plots; cli.py is the command.
"""


def main(argv: list[str] | None = None) -> int:
    from minigpt.compare.cli import main as cli_main  # imported on use: keeps `import minigpt.compare.local_runs` light

    return cli_main(argv)
