"""Reading finished, running and failed runs back from local run directories (the W&B API: wandb_runs.py).

A run directory holds `metrics.jsonl` (the source of truth), `.hydra/config.yaml` (the resolved
config), `run_summary.json` (status, wall time, cost: written by minigpt/run_record.py, read back here) and the per-example
HellaSwag records `hellaswag/step_<step>.parquet` (minigpt/eval/records.py). Anything may be missing
or truncated (a crashed or half-written run): loading never raises for that, the run just shows what
it has and its status says why.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from minigpt.errors import ConfigError
from minigpt.eval.records import read_records, records_files
from minigpt.run_record import SUMMARY_FILE, pid_alive, read_summary

STALE_S = 600  # a run without run_summary.json whose metrics stopped moving this long ago is not running


@dataclass
class Run:
    name: str
    config: dict = field(default_factory=dict)  # nested resolved config (may be empty)
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl rows
    summary: dict = field(default_factory=dict)  # run_summary.json (may be empty)
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml: a sweep job's axes
    status: str = "failed"
    note: str = ""  # why a run is failed/unknown, shown in the report
    records: Path | None = None  # the last per-example HellaSwag records file
    damage: list[str] = field(default_factory=list)  # what could not be read (compare warns; the status cell says)

    def cfg(self, dotted: str, default=None):
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) for every row holding a finite number under `key`."""
        out = []
        for r in self.rows:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                out.append((int(r.get("step", 0)), float(v)))
        return out

    def last(self, key: str) -> float | None:
        points = self.series(key)
        return points[-1][1] if points else None

    def best(self, key: str, higher: bool = True) -> float | None:
        values = [v for _, v in self.series(key)]
        return (max(values) if higher else min(values)) if values else None

    @property
    def seed(self) -> tuple | None:
        """(init seed, data seed) as the trainer used them; None without a config."""
        seed = self.cfg("train.seed")
        if seed is None:
            return None
        init, data = self.cfg("train.init_seed"), self.cfg("train.data_seed")
        return (seed if init is None else init, seed if data is None else data)

    @property
    def seed_label(self) -> str:
        if self.seed is None:
            return "-"
        init, data = self.seed
        return str(init) if init == data else f"{init}/{data}"

    def tokens_at(self, step: int) -> float:
        """Tokens seen after `step` (from train/tokens rows; logging may skip steps, so scale the rate)."""
        pairs = self.series("train/tokens")
        per_step = self.summary.get("tokens_per_step")
        if not per_step and pairs:
            s, t = pairs[-1]
            per_step = t / max(s, 1)
        return step * (per_step or 0)


def _natural_key(path: Path) -> list:
    """0_gpt2, 1_rope, ..., 10_x: numbered multirun jobs in launch order."""
    return [[int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)] for part in path.parts]


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / ".hydra" / "config.yaml").is_file() or (
        path / SUMMARY_FILE
    ).is_file()


def find_run_dirs(paths: list[str | os.PathLike]) -> list[Path]:
    """Each path is a run directory or a folder holding them (a multirun/sweep dir), searched recursively."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"{p} does not exist: pass run directories or a multirun directory")
        if is_run_dir(p):
            found.append(p)
            continue
        below = sorted(
            {d.parent for d in p.rglob("metrics.jsonl")} | {d.parent.parent for d in p.rglob(".hydra/config.yaml")},
            key=lambda d: _natural_key(d.relative_to(p)),
        )
        found.extend(d for d in below if not any(part == "wandb" or part.startswith("replaced_")  # train.rerun's old files
                                                 for part in d.relative_to(p).parts))
    if not found:
        raise ConfigError(f"no runs (metrics.jsonl or .hydra/config.yaml) under {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


def _read_rows(path: Path) -> tuple[list[dict], str]:
    """The rows, and what was skipped ("" if nothing): a line cut by a crash, or bytes that do not decode."""
    rows, bad = [], []
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return rows, ""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError too
            bad.append(number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    if not bad:
        return rows, ""
    where = f"line {bad[0]}" if len(bad) == 1 else f"lines {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}"
    torn = " (torn last line)" if bad == [len(lines)] else ""
    return rows, f"{len(bad)} unreadable metrics.jsonl {'line' if len(bad) == 1 else 'lines'} skipped: {where}{torn}"


def _unreadable_records(path: Path | None) -> str:
    """"" if the HellaSwag records file reads, else what the report says about it (it leaves the paired test)."""
    if path is None:
        return ""
    try:
        read_records(path)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: said once, the run keeps its logged value
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        return (f"{path.parent.name}/{path.name} unreadable ({first}): its logged HellaSwag value is shown, and it "
                "is left out of the paired test")
    return ""


def _read_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a missing or broken config just leaves columns empty
        return {}


def _read_overrides(run_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001
        return []


def infer_status(run: Run, metrics_mtime: float | None) -> tuple[str, str]:
    s = run.summary
    last_step = max((int(r.get("step", 0)) for r in run.rows), default=0)
    if s:
        status = s.get("status", "failed")
        if status == "running" and s.get("host") == socket.gethostname() and s.get("pid") and not pid_alive(s["pid"]):
            return "failed", "process gone"
        if status in ("failed", "diverged"):  # diverged: a non-finite loss or grad norm stopped it
            return status, s.get("error") or ""
        return status, ""
    if not run.rows:
        return "failed", "no metrics"
    target = run.cfg("train.num_iterations")
    if target and last_step >= int(target):
        return "finished", ""
    if metrics_mtime and time.time() - metrics_mtime < STALE_S:
        return "running", ""
    return "failed", f"stopped at step {last_step}"


def load_run(run_dir: str | os.PathLike) -> Run:
    d = Path(run_dir)
    rows, torn = _read_rows(d / "metrics.jsonl")
    run = Run(name=d.name, config=_read_config(d), rows=rows, summary=read_summary(d) or {}, overrides=_read_overrides(d))
    run.records = next(reversed(records_files(d).values()), None)
    run.damage = [why for why in (torn, _unreadable_records(run.records)) if why]
    metrics = d / "metrics.jsonl"
    run.status, run.note = infer_status(run, metrics.stat().st_mtime if metrics.exists() else None)
    return run


def load_runs(paths: list[str | os.PathLike]) -> list[Run]:
    return [load_run(d) for d in find_run_dirs(paths)]
