"""The GPT model with switchable components."""

from minigpt.model.gpt import GPT, padded_vocab_size

__all__ = ["GPT", "padded_vocab_size"]
