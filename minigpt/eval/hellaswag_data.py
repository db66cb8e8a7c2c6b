"""The HellaSwag validation set: an explicit file, else the local cache, else a verified download.

Accepted schemas (one JSON object per line):
- official rowanz/hellaswag `hellaswag_val.jsonl`: ind, activity_label, ctx_a, ctx_b, ctx, endings, label, ...
- preprocessed copies with only activity_label, ctx, endings, label (e.g. klosax/hellaswag_text_data):
  `ctx_a`/`ctx_b` are then None and the protocols fall back to `ctx`.
The download is the official file, checked against its published sha256 before it is cached; if that
server answers but fails, the HF dataset `Rowan/hellaswag` is tried. Offline with nothing cached,
`HellaSwagUnavailable` carries one line saying how to provide the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from minigpt.atomic import write_bytes_atomic
from minigpt.errors import ConfigError

OFFICIAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
OFFICIAL_SHA256 = "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"
OFFICIAL_NAME = "hellaswag_val.jsonl"
HF_DATASET = "Rowan/hellaswag"
HF_NAME = "hellaswag_val.hf.jsonl"  # the HF copy is cached under its own name: it has no pinned hash
NUM_VAL = 10042


class HellaSwagUnavailable(RuntimeError):
    """No file, no cache and no download: the message says how to provide the data."""


def normalize_example(row: dict, where: str = "") -> dict:
    """One example in a common shape: activity_label, ctx, ctx_a, ctx_b (None if absent), endings, label (int)."""
    try:
        endings = [str(e) for e in row["endings"]]
        label = int(row["label"])
        ctx_a, ctx_b = row.get("ctx_a"), row.get("ctx_b")
        ctx = row.get("ctx")
        if ctx is None:  # official rows define ctx as ctx_a + " " + ctx_b (ctx_b may be empty)
            ctx = f"{ctx_a} {ctx_b}".strip() if ctx_b else ctx_a
        if ctx is None:
            raise KeyError("ctx")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a HellaSwag example (needs ctx or ctx_a/ctx_b, endings, label): {exc}") from None
    if len(endings) != 4 or not 0 <= label < 4:
        raise ConfigError(f"{where}: a HellaSwag example needs 4 endings and a label in 0..3")
    return {
        "ind": row.get("ind"),
        "activity_label": str(row.get("activity_label") or ""),
        "ctx": ctx,
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "endings": endings,
        "label": label,
    }


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg}): pass a HellaSwag .jsonl file") from None
            examples.append(normalize_example(row, f"{path}:{n}"))
    if not examples:
        raise ConfigError(f"{path} has no examples: pass a HellaSwag .jsonl file")
    return examples


def download_official(dest: Path, url: str = OFFICIAL_URL, timeout: float = 30.0,
                      log: Callable[[str], None] = print) -> Path:
    """Fetch the official file, check its sha256, then write it to `dest` (never a partial or wrong file)."""
    chunks = []
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        log(f"downloading HellaSwag validation set from {url}")  # once connected: offline stays one line
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="hellaswag_val.jsonl", leave=False) as bar:
            while chunk := resp.read(1 << 20):
                chunks.append(chunk)
                bar.update(len(chunk))
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    if digest != OFFICIAL_SHA256:
        raise ValueError(f"{url} has sha256 {digest[:12]}..., expected {OFFICIAL_SHA256[:12]}...")
    write_bytes_atomic(dest, data)
    return dest


def download_hf(dest: Path) -> Path:
    """The HF copy through `datasets`, cached as jsonl (labels become ints)."""
    import datasets

    rows = datasets.load_dataset(HF_DATASET, split="validation")
    lines = [json.dumps(normalize_example(dict(r), HF_DATASET)) for r in rows]
    write_bytes_atomic(dest, ("\n".join(lines) + "\n").encode("utf-8"))
    return dest


def _offline(exc: Exception) -> bool:
    """No route to any server (DNS, refused, unreachable), as opposed to a server that answered badly."""
    return isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)


def default_cache_dir() -> Path:
    """eval.hellaswag.cache_dir as the config resolves it: $MINIGPT_CACHE/hellaswag, default ~/.cache/minigpt/hellaswag."""
    from omegaconf import OmegaConf

    from minigpt.config import HellaSwagConfig, expand_user_paths

    return Path(expand_user_paths(OmegaConf.to_object(OmegaConf.structured(HellaSwagConfig))).cache_dir)


def cached_file(cache_dir: str | os.PathLike) -> Path | None:
    """The official file minigpt downloaded and verified into cache_dir (else its HF copy), if any."""
    for name in (OFFICIAL_NAME, HF_NAME):
        if (Path(cache_dir) / name).is_file():
            return Path(cache_dir) / name
    return None


def how_to_get(cache_dir: str | os.PathLike, option: str = "eval.hellaswag.path=<file>") -> str:
    return (
        f"download {OFFICIAL_URL} (sha256 {OFFICIAL_SHA256[:12]}...) and pass {option} "
        f"or save it as {Path(cache_dir) / OFFICIAL_NAME}"
    )


def data_file(path: str | None, flag: str = "--data") -> Path:
    """For tools outside training (lm-eval task, bench): `path` if given, else the cached official file.

    Raises ConfigError (one line, naming the command-line `flag`) when the file is missing or nothing is cached.
    """
    if path:
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"{flag} {path}: no such file: pass the path of a hellaswag_val.jsonl")
        return Path(path).expanduser()
    cache = default_cache_dir()
    found = cached_file(cache)
    if found is None:
        raise ConfigError(f"no HellaSwag file given and none cached in {cache}: {how_to_get(cache, f'{flag} <file>')}")
    return found


def load_hellaswag(hc, log: Callable[[str], None] = print) -> list[dict]:
    """Examples from `hc` (a HellaSwagConfig): hc.path, else the cache in hc.cache_dir, else a download
    from hc.url (the official file or a mirror of it: the sha256 is checked either way).

    Raises ConfigError for a given path that is missing or malformed, HellaSwagUnavailable when no
    source works.
    """
    if hc.path:
        path = Path(hc.path)
        if not path.is_file():
            raise ConfigError(f"eval.hellaswag.path={hc.path} does not exist: point it at hellaswag_val.jsonl")
        return read_jsonl(path)
    cache = Path(hc.cache_dir)
    if (found := cached_file(cache)) is not None:
        return read_jsonl(found)
    url = hc.url or OFFICIAL_URL
    how = how_to_get(cache)
    if not hc.download:
        raise HellaSwagUnavailable(f"HellaSwag data not found and eval.hellaswag.download=false: {how}")
    try:
        return read_jsonl(download_official(cache / OFFICIAL_NAME, url, log=log))
    except Exception as exc:  # noqa: BLE001 - every failure leads to the fallback or the one-line message
        reason = f"{url}: {getattr(exc, 'reason', exc)}"
        if _offline(exc):
            raise HellaSwagUnavailable(f"HellaSwag data not found and no network ({reason}): {how}") from None
    try:
        log(f"{reason}; trying the HF dataset {HF_DATASET}")
        return read_jsonl(download_hf(cache / HF_NAME))
    except Exception as exc:  # noqa: BLE001
        raise HellaSwagUnavailable(f"HellaSwag data not found ({reason}; {HF_DATASET}: {exc}): {how}") from None
