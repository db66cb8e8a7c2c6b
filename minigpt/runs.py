"""Reading finished, running and failed runs back: from run directories or from the W&B API.

A run directory holds `metrics.jsonl` (the source of truth), `.hydra/config.yaml` (the resolved
config) and `run_summary.json` (status, wall time, cost: minigpt/run_record.py). Anything may be
missing or truncated (a crashed or half-written run): loading never raises for that, the run just
shows what it has and its status says why.
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
from minigpt.run_record import SUMMARY_FILE, read_summary

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


def _read_rows(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(row, dict):
            rows.append(row)
    return rows


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def infer_status(run: Run, metrics_mtime: float | None) -> tuple[str, str]:
    s = run.summary
    last_step = max((int(r.get("step", 0)) for r in run.rows), default=0)
    if s:
        status = s.get("status", "failed")
        if status == "running" and s.get("host") == socket.gethostname() and s.get("pid") and not _pid_alive(s["pid"]):
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
    run = Run(name=d.name, config=_read_config(d), rows=_read_rows(d / "metrics.jsonl"), summary=read_summary(d) or {},
              overrides=_read_overrides(d))
    metrics = d / "metrics.jsonl"
    run.status, run.note = infer_status(run, metrics.stat().st_mtime if metrics.exists() else None)
    return run


def load_runs(paths: list[str | os.PathLike]) -> list[Run]:
    return [load_run(d) for d in find_run_dirs(paths)]


# ---------------------------------------------------------------------------------------------- W&B

_WANDB_STATES = {"finished": "finished", "running": "running", "crashed": "failed", "failed": "failed", "killed": "failed"}


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[last] = value
    return tree


def load_wandb_runs(spec: str) -> list[Run]:
    """Runs of ENTITY/PROJECT[/GROUP] from the W&B API (needs network and an API key)."""
    parts = spec.strip("/").split("/")
    if len(parts) not in (2, 3):
        raise ConfigError(f"--wandb {spec!r}: expected ENTITY/PROJECT or ENTITY/PROJECT/GROUP")
    import wandb

    from minigpt.wandb_logger import _base_url, has_api_key, server_reachable

    if not has_api_key():
        raise ConfigError("--wandb needs a W&B API key (WANDB_API_KEY or `wandb login`); or pass run directories")
    if not server_reachable():
        raise ConfigError(f"--wandb: {_base_url()} is not reachable; without network, pass the run directories instead")
    try:
        api = wandb.Api(timeout=30)
        found = api.runs("/".join(parts[:2]), filters={"group": parts[2]} if len(parts) == 3 else None)
        runs = []
        for r in found:
            summary = {k: v for k, v in r.summary.items() if not k.startswith("_")}
            rows = [
                {"step": row.get("_step", 0), **{k: v for k, v in row.items() if not k.startswith("_")}}
                for row in r.scan_history()
            ]
            run = Run(name=r.name, config=_unflatten(dict(r.config)), rows=rows, summary={})
            run.summary = {
                "wall_s": (summary.get("run/wall_hours") or 0) * 3600 or None,
                "gpu_hours": summary.get("run/gpu_hours"),
                "cost": summary.get("run/cost"),
                "cost_unit": run.cfg("cluster.cost_unit"),
                "params": summary.get("run/params"),
            }
            run.status = _WANDB_STATES.get(r.state, r.state)
            runs.append(run)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown project: one line, not a traceback
        raise ConfigError(f"could not read {spec} from W&B ({type(exc).__name__}: {exc}); "
                          "without network, pass the run directories instead") from exc
    if not runs:
        raise ConfigError(f"no W&B runs in {spec}")
    return runs
