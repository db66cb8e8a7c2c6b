"""minigpt: architecture ablations for small GPT-2-style language models."""

__version__ = "0.1.0"
