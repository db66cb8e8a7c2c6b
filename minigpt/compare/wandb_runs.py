"""The same runs from the W&B API: `python -m minigpt.compare --wandb ENTITY/PROJECT[/GROUP]`.

Each W&B run becomes a `Run` like a run directory would: the flattened config unflattened (so the
grouping by everything but seeds works the same), the history as metrics rows, the `run/*` summary,
and its `hellaswag-records` artifact (the final per-example records, uploaded when the run finished)
downloaded under `$MINIGPT_CACHE/wandb/<run id>/`, so the HellaSwag verdicts are the same too.
"""

from __future__ import annotations

import os
from pathlib import Path

from minigpt.compare.local_runs import Run
from minigpt.errors import ConfigError

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


def _cache_dir() -> Path:
    return Path(os.environ.get("MINIGPT_CACHE") or Path.home() / ".cache" / "minigpt") / "wandb"


def _download_records(api_run) -> Path | None:
    """The run's newest per-example records artifact, downloaded once (None if it has none)."""
    from minigpt.eval.records import RECORDS_ARTIFACT

    found = [a for a in api_run.logged_artifacts() if a.type == RECORDS_ARTIFACT]
    if not found:
        return None
    artifact = found[-1]
    folder = Path(artifact.download(root=str(_cache_dir() / api_run.id)))
    files = sorted(folder.glob("*.parquet"))
    return files[-1] if files else None


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
            run.records = _download_records(r)
            runs.append(run)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown project: one line, not a traceback
        raise ConfigError(f"could not read {spec} from W&B ({type(exc).__name__}: {exc}); "
                          "without network, pass the run directories instead") from exc
    if not runs:
        raise ConfigError(f"no W&B runs in {spec}")
    return runs
