"""Export a checkpoint to a Hugging Face folder: `python -m minigpt.export_hf <ckpt or run dir> <out dir>`.

The command only: the export itself is minigpt/hf/exporter.py.

The folder loads with `AutoModelForCausalLM.from_pretrained(out_dir)` (no trust_remote_code) and
works with transformers pipelines and lm-evaluation-harness (`--model hf`). Before writing, the
exported model's logits are compared with minigpt's on random tokens (skip with --no-verify).
"""

from __future__ import annotations

import argparse
import sys

from minigpt.cli import cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.export_hf", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a ckpt_*.pt file, a run directory (its newest checkpoint) or a Hugging Face GPT-2 folder")
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights dtype on disk")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the logits comparison")
    args = parser.parse_args(argv)

    from minigpt.checkpoint import load_model
    from minigpt.hf.converters import components
    from minigpt.hf.exporter import export_model

    model, ckpt = load_model(args.checkpoint)
    report = export_model(model, args.out_dir, dtype=args.dtype, verify=args.verify)
    check = f", max |logit diff| vs minigpt {report['max_logit_diff']:.2e}" if "max_logit_diff" in report else ""
    print(
        f"exported {components(model.arch)} (step {ckpt.get('step', '?')}) as {report['hf_class']} "
        f"({report['dtype']}) to {report['out_dir']}{check}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
