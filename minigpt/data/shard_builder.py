"""Documents -> llm.c token shards at scale, resumably (FineWeb-Edu and any `datasets` source).

The command is `python -m minigpt.prepare` (minigpt/prepare.py); shards.py is the shard file format.

Documents stream through `datasets` (a Hub id such as HuggingFaceFW/fineweb-edu, or local
jsonl/json/parquet/txt/csv files), are tokenized with GPT-2 BPE in a pool of worker processes (order
kept), and an EOT token goes before each document. Tokens fill shards of exactly `shard_size`
(a document may continue into the next shard, as in llm.c's fineweb.py); the last shard holds the
rest. Shard 0 is `val_000000.bin`, the others `train_NNNNNN.bin`, as `data=shards` expects.

Resuming: after each shard, `prepare_state.json` records where the next shard starts (document
index, and how many of that document's tokens are already written). A rerun checks the recorded
shards, keeps the intact ones, skips the consumed documents without tokenizing them, and redoes any
shard that is missing or torn, so an interrupted run ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from minigpt.atomic import write_text_atomic
from minigpt.config import DataConfig, PrepareConfig
from minigpt.data.corpus import resolve_files
from minigpt.data.shards import read_header, write_shard
from minigpt.data.tokenizer import EOT_TOKEN, get_gpt2_encoding
from minigpt.errors import ConfigError

STATE_FILE = "prepare_state.json"
FORMAT = 1  # bump if the shard layout rule changes, so old state is not resumed
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".md": "text",
                  ".csv": "csv"}


def shard_name(index: int) -> str:
    return f"{'val' if index == 0 else 'train'}_{index:06d}.bin"


def is_local(source: str) -> bool:
    return os.path.exists(source) or any(ch in source for ch in "*?[") or source.startswith((".", "/", "~"))


def open_documents(pc: PrepareConfig):
    """A streaming `datasets.IterableDataset` of records holding `pc.text_field`."""
    from datasets import load_dataset

    if not pc.source:
        raise ConfigError("data.prepare.source is not set: give a Hub dataset id or local files (jsonl/parquet/txt)")
    if not is_local(pc.source):
        try:
            return load_dataset(pc.source, name=pc.subset, split=pc.split, streaming=True)
        except (ConnectionError, FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"cannot open dataset {pc.source} (subset {pc.subset}, split {pc.split}): "
                              f"{str(exc).splitlines()[0]}") from exc
    files = resolve_files(pc.source, tuple(LOCAL_BUILDERS), "document files (.jsonl .json .parquet .txt .csv)")
    builders = {LOCAL_BUILDERS[f.suffix] for f in files}
    if len(builders) > 1:
        raise ConfigError(f"data.prepare.source={pc.source} mixes file kinds {sorted(builders)}: use one kind")
    (builder,) = builders
    kwargs = {"sample_by": "document"} if builder == "text" else {}  # a text file is one document
    return load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True, **kwargs)


def tokenize(text: str) -> np.ndarray:
    """EOT, then the document's tokens (runs in the worker processes)."""
    ids = get_gpt2_encoding().encode_ordinary(text)
    out = np.empty(len(ids) + 1, dtype=np.uint16)
    out[0] = EOT_TOKEN
    out[1:] = ids
    return out


def _texts(dataset, field: str):
    for row in dataset:
        if field not in row:
            raise ConfigError(f"documents have no field '{field}' (fields: {', '.join(row)}): set data.prepare.text_field")
        yield row[field]


class ShardState:
    """prepare_state.json: the settings that produced the shards and where each shard ends."""

    def __init__(self, folder: Path, settings: dict):
        self.path, self.folder, self.settings = folder / STATE_FILE, folder, settings
        self.shards: list[dict] = []
        self.complete = False
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("settings") != settings:
                raise ConfigError(
                    f"{folder} holds shards prepared with other settings ({saved.get('settings')}): "
                    "use another data.path or delete the folder"
                )
            self.shards, self.complete = saved["shards"], saved["complete"]
        elif any(folder.glob("*.bin")):
            raise ConfigError(f"{folder} already holds .bin files not written by minigpt.prepare: use an empty data.path")
        self._keep_intact_prefix()

    def _keep_intact_prefix(self) -> None:
        """Drop the first missing or torn shard and everything after it: those get redone."""
        for i, entry in enumerate(self.shards):
            f = self.folder / entry["file"]
            try:
                ok = f.exists() and read_header(f) == entry["tokens"]
            except ConfigError:
                ok = False
            if not ok:
                self.shards, self.complete = self.shards[:i], False
                return

    @property
    def resume_point(self) -> tuple[int, int]:
        """(document index, tokens of it already written) where the next shard starts."""
        if not self.shards:
            return 0, 0
        return self.shards[-1]["next_doc"], self.shards[-1]["doc_offset"]

    def add(self, tokens: np.ndarray, next_doc: int, doc_offset: int) -> Path:
        path = self.folder / shard_name(len(self.shards))
        write_shard(path, tokens)  # atomic: a crash leaves the old state pointing before this shard
        self.shards.append({"file": path.name, "tokens": int(tokens.size), "next_doc": next_doc, "doc_offset": doc_offset})
        self.save()
        return path

    def save(self) -> None:
        state = {"settings": self.settings, "shards": self.shards, "complete": self.complete}
        write_text_atomic(self.path, json.dumps(state, indent=1))


def prepare_shards(cfg: DataConfig, log=print, progress: bool = True) -> list[Path]:
    """Write (or finish writing) the shards for `cfg.prepare` into `cfg.path`; returns all shard files."""
    from tqdm import tqdm

    pc = cfg.prepare
    if not cfg.path:
        raise ConfigError("data.path is not set: the folder to write the shards into")
    if pc.shard_size < 2:
        raise ConfigError(f"data.prepare.shard_size={pc.shard_size} is too small: use e.g. 100000000 tokens")
    folder = Path(cfg.path)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"format": FORMAT, "tokenizer": "gpt2", "source": pc.source, "subset": pc.subset, "split": pc.split,
                "text_field": pc.text_field, "shard_size": pc.shard_size}
    state = ShardState(folder, settings)
    if not state.complete:
        state.save()  # before any shard, so a folder with shards always has its state
    files = lambda: [folder / s["file"] for s in state.shards]  # noqa: E731
    if state.complete or (pc.max_shards is not None and len(state.shards) >= pc.max_shards):
        log(f"{folder}: {len(state.shards)} shards already written ({'complete' if state.complete else 'max_shards reached'})")
        return files()

    doc, offset = state.resume_point
    if state.shards:
        log(f"resuming after {len(state.shards)} intact shards (document {doc:,}, token {offset:,})")
    dataset = open_documents(pc)
    if doc:
        dataset = dataset.skip(doc)  # consumed documents are read past, not tokenized
    buf, fill = np.empty(pc.shard_size, dtype=np.uint16), 0
    workers = pc.num_workers or os.cpu_count() or 1
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    bar = tqdm(unit="tok", unit_scale=True, disable=not progress, desc=f"shard {len(state.shards)}",
               total=pc.max_shards * pc.shard_size if pc.max_shards else None,
               initial=sum(s["tokens"] for s in state.shards))
    stopped = False
    with ctx.Pool(workers) as pool, bar:
        for tokens in pool.imap(tokenize, _texts(dataset, pc.text_field), chunksize=16):
            pos = offset  # the first document may be partly written already
            offset = 0
            while tokens.size - pos >= pc.shard_size - fill:  # this document completes a shard
                take = pc.shard_size - fill
                buf[fill:] = tokens[pos : pos + take]
                pos += take
                done = pos == tokens.size
                state.add(buf, doc + 1 if done else doc, 0 if done else pos)
                bar.update(take)
                bar.set_description(f"shard {len(state.shards)}")
                fill = 0
                if pc.max_shards is not None and len(state.shards) >= pc.max_shards:
                    stopped = True
                    break
            if stopped:
                break
            n = tokens.size - pos
            buf[fill : fill + n] = tokens[pos:]
            fill += n
            bar.update(n)
            doc += 1
    if not stopped:
        if fill:
            state.add(buf[:fill], doc, 0)
        state.complete = True
        state.save()
    total = sum(s["tokens"] for s in state.shards)
    log(f"{folder}: {len(state.shards)} shards, {total:,} tokens ({'complete' if state.complete else 'partial'})")
    return files()
