"""Atomic file writes: write a temp file in the same folder, then rename it over the target.

A crash (or SIGKILL) mid-write leaves the old file, or none, never a torn one. The temp name carries
the pid, so processes writing the same target (ranks filling one cache) cannot interleave bytes, and
starts with a dot, so globs for the real files never see it. On failure the temp file is removed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, durable: bool = False) -> Iterator[BinaryIO]:
    """Open a binary temp file for writing; on a clean exit rename it to `path`.

    durable=True also fsyncs before the rename, for files whose loss costs compute (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    with atomic_write(path, durable) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable)
