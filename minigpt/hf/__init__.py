"""Hugging Face interop: export any exportable minigpt model to a native transformers class, import GPT-2.

- `export_model(model, out_dir)` / `python -m minigpt.export_hf <ckpt or run dir> <out dir>`;
- `from_pretrained_gpt2(dir)`: a minigpt GPT initialised from a local HF GPT-2 folder;
- `lm_eval_task.write_task_dir(out_dir, data)` / `python -m minigpt.hf.lm_eval_task <task dir>`: a local
  HellaSwag task for lm-evaluation-harness.
"""

from minigpt.hf.converters import CONVERTERS, find_converter
from minigpt.hf.exporter import export_model, to_hf

__all__ = ["CONVERTERS", "find_converter", "export_model", "to_hf"]
