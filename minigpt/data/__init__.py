"""Data: tokenizer, llm.c shard format, corpora and the resumable loader."""
