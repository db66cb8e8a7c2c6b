"""Standalone HellaSwag: `python -m minigpt.eval <checkpoint or run dir> [eval.hellaswag.limit=N ...]`.

The model can also be a Hugging Face GPT-2 folder (what `minigpt.checkpoint.load_model` accepts).

Overrides use the training config's keys (typed: a typo fails at once), e.g. eval.hellaswag.path=...,
eval.hellaswag.protocols=[harness], eval.hellaswag.batch_size=128, train.device=cuda,
train.dtype=bfloat16. Prints one row per protocol: acc, acc_norm, examples, examples/second, and
writes the per-example records next to the model: `<run dir>/hellaswag/step_<step>.parquet` (the
checkpoint's folder for a checkpoint file), replacing the training-time file of that step, so
`minigpt.compare` pairs examples on what was evaluated last (e.g. all 10,042 after a limited run).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from minigpt.errors import ConfigError
from minigpt.paths import CONF_DIR

USAGE = "usage: python -m minigpt.eval <checkpoint.pt or run dir> [eval.hellaswag.limit=N] [key=value ...]"


def compose_eval_config(overrides: list[str]):
    """The typed Config with eval=hellaswag and the user's overrides applied."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from minigpt.config import to_config

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return to_config(compose(config_name="config", overrides=["eval=hellaswag", *overrides]))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(" ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None


def format_table(results: dict[str, dict]) -> str:
    lines = [f"{'protocol':<10} {'acc':>7} {'acc_norm':>9} {'n':>7} {'examples/s':>11}"]
    for name, r in results.items():
        lines.append(f"{name:<10} {r['acc']:>7.4f} {r['acc_norm']:>9.4f} {r['n']:>7d} {r['examples_per_s']:>11.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or "=" in argv[0]:
        print(USAGE + "\n\n" + (__doc__ or ""))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    from minigpt.checkpoint import load_model
    from minigpt.eval.hellaswag_data import load_hellaswag
    from minigpt.eval.records import records_path, write_records
    from minigpt.eval.training import run_protocols
    from minigpt.validate import check_hellaswag
    from minigpt.runtime import pick_device

    cfg = compose_eval_config(argv[1:])
    hc = cfg.eval.hellaswag
    check_hellaswag(hc)
    device = pick_device(cfg.train.device)
    model, ckpt = load_model(argv[0], map_location="cpu")  # a checkpoint, a run dir or an HF GPT-2 folder
    model.to(device)
    examples = load_hellaswag(hc, log=print)
    examples = examples[: hc.limit] if hc.limit else examples
    print(f"model {argv[0]} (step {ckpt.get('step', '?')}) | {len(examples)} examples | device {device} "
          f"| dtype {cfg.train.dtype.value}")
    results = run_protocols(model, examples, hc, device, cfg.train.dtype.value, progress=True)
    print(format_table(results))
    model_path = Path(argv[0])
    run_dir = model_path if model_path.is_dir() else model_path.parent
    path = write_records(records_path(run_dir, int(ckpt.get("step", 0))), examples,
                         {name: r["scores"] for name, r in results.items()}, step=ckpt.get("step"))
    print(f"per-example records: {path}")
    return results


if __name__ == "__main__":
    from minigpt.cli import cli_errors

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(cli_errors(main)())  # main returns the results (for callers); the shell gets 0, or 2 and one line
