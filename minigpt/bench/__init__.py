"""Benchmarks: run as modules, e.g. `python -m minigpt.bench.hellaswag`; they print ratios measured side by side."""
