"""minigpt: architecture ablations for small GPT-2-style language models.

Naming: a top-level module named by a verb (train, prepare, export_hf, plan, compare, bench, eval) is a
`python -m minigpt.X` command and stays thin; the work it runs lives in a module named for what it does
(prepare -> data/shard_builder.py, export_hf -> hf/exporter.py, compare -> compare/local_runs.py and the
rest of compare/).
"""

__version__ = "0.1.0"
