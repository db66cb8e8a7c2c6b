"""Write the local HellaSwag task for lm-evaluation-harness, pointing at any jsonl:
`python -m minigpt.hf.lm_eval_task <hellaswag jsonl> <task dir> [--name hellaswag_local]`.

Then: `lm_eval run --model hf --model_args pretrained=<export dir> --tasks <name> --include_path <task dir>`.
The shipped template (minigpt/hf/lm_eval_tasks/) reads ../shared/data relative to the working directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from minigpt.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "lm_eval_tasks"
TEMPLATE_DATA = "../shared/data/hellaswag/hellaswag_val_preprocessed.jsonl"


def write_task_dir(data_path: str | Path, out_dir: str | Path, name: str = "hellaswag_local") -> Path:
    """Copy the task template into out_dir with its data path (absolute) and task name replaced."""
    data = Path(data_path).expanduser().resolve()
    if not data.is_file():
        raise ConfigError(f"HellaSwag file {data} not found: pass the path of a hellaswag jsonl")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yaml = (TEMPLATE_DIR / "hellaswag_local.yaml").read_text()
    # json.dumps quotes the values, so paths with spaces or colons stay valid YAML.
    yaml = yaml.replace(TEMPLATE_DATA, json.dumps(str(data))).replace("task: hellaswag_local", f"task: {name}")
    (out / f"{name}.yaml").write_text(yaml)
    shutil.copy(TEMPLATE_DIR / "utils.py", out / "utils.py")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.hf.lm_eval_task", description=__doc__.splitlines()[0])
    parser.add_argument("data", help="hellaswag jsonl (official layout with ctx_a/ctx_b, or activity_label/ctx/endings/label)")
    parser.add_argument("out_dir")
    parser.add_argument("--name", default="hellaswag_local", help="task name for lm_eval --tasks")
    args = parser.parse_args(argv)
    try:
        out = write_task_dir(args.data, args.out_dir, args.name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote task {args.name} to {out}: lm_eval run --model hf --tasks {args.name} --include_path {out} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
