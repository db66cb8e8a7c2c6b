"""Read an offline W&B run back: `run-<id>.wandb` is a LevelDB-style log of wandb_internal_pb2.Record.

wandb 0.31 no longer ships a Python reader, so this is one. The format: a 7-byte header,
then 32 KiB blocks of chunks (crc32 4 bytes, length 2 bytes LE, type 1 byte: 1 full, 2 first,
3 middle, 4 last); a block tail shorter than a chunk header is padding.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, records = HEADER, b"", []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 2):
            pending = payload
        elif kind in (3, 4):
            pending += payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def offline_run_file(run_dir: str | Path) -> Path:
    """The .wandb file in a run dir, or in an offline-run-* folder itself."""
    run_dir = Path(run_dir)
    (path,) = run_dir.glob("run-*.wandb") if run_dir.name.startswith("offline-run-") else run_dir.glob(
        "wandb/offline-run-*/run-*.wandb")
    return path


def finished_run_records(run_dir: str | Path, timeout: float = 30.0) -> list:
    """Records of the offline run in `run_dir`, once W&B's writer (a separate process) has written the exit record."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = read_records(offline_run_file(run_dir))
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history(records) -> list[dict]:
    """One dict per `run.log` call: key -> decoded value."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def run_record(records):
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")


def config(records) -> dict:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            out.update({i.key: json.loads(i.value_json) for i in r.config.update})
    run = run_record(records)
    out.update({i.key: json.loads(i.value_json) for i in run.config.update})
    return out
