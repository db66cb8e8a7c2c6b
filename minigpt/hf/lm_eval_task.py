"""Write the local HellaSwag task for lm-evaluation-harness, pointing at a HellaSwag jsonl:
`python -m minigpt.hf.lm_eval_task <task dir> [--data <hellaswag jsonl>] [--name hellaswag_local]`.

Without --data the task reads the official file minigpt downloaded, verified and cached
($MINIGPT_CACHE/hellaswag/, default ~/.cache/minigpt/hellaswag/); with nothing cached the command says
how to get it. Then: `lm_eval run --model hf --model_args pretrained=<export dir> --tasks <name>
--include_path <task dir>`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from minigpt.cli import cli_errors
from minigpt.eval.hellaswag_data import data_file

TEMPLATE_DIR = Path(__file__).parent / "lm_eval_tasks"
TEMPLATE = TEMPLATE_DIR / "hellaswag_local.yaml.template"
DATA_PLACEHOLDER = "HELLASWAG_JSONL"


def write_task_dir(out_dir: str | Path, data_path: str | Path | None = None, name: str = "hellaswag_local") -> Path:
    """Copy the task template into out_dir with its data path (absolute) and task name filled in.

    `data_path` None: the cached official file (ConfigError saying how to get one when there is none).
    """
    data = data_file(str(data_path) if data_path else None, "--data").resolve()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # json.dumps quotes the values, so paths with spaces or colons stay valid YAML.
    yaml = TEMPLATE.read_text().replace(DATA_PLACEHOLDER, json.dumps(str(data)))
    yaml = yaml.replace("task: hellaswag_local", f"task: {name}")
    (out / f"{name}.yaml").write_text(yaml)
    shutil.copy(TEMPLATE_DIR / "utils.py", out / "utils.py")
    return out


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.hf.lm_eval_task", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the task into (pass it to lm_eval --include_path)")
    parser.add_argument("--data", default=None, help="hellaswag jsonl (official layout with ctx_a/ctx_b, or "
                        "activity_label/ctx/endings/label); default: minigpt's cached official hellaswag_val.jsonl")
    parser.add_argument("--name", default="hellaswag_local", help="task name for lm_eval --tasks")
    args = parser.parse_args(argv)
    out = write_task_dir(args.out_dir, args.data, args.name)
    print(f"wrote task {args.name} to {out}: lm_eval run --model hf --tasks {args.name} --include_path {out} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
