"""Data: tokenizer, llm.c shard format (shards.py), documents -> shards (shard_builder.py), corpora and the resumable loader."""
