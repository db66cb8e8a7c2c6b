"""Weights & Biases logger (`logger=wandb`, the default): metrics.jsonl stays the source of truth.

The mode follows `logger.mode`, else `WANDB_MODE` (online | offline | disabled, default online). An online
run without an API key or without a reachable server is recorded offline instead, with one line saying
how to `wandb sync` it later, so a laptop, a compute node without internet and a CI box all just work.
The W&B run gets the flattened resolved config, `group` = the sweep's name (or `experiment`),
`job_type` = the run's configuration without seeds (its overrides minus seed and infrastructure keys,
so every seed of one arm shares it) and tags naming the arch and model presets, so the W&B UI groups
an ablation by itself. Files offered with `log_file` (the per-example HellaSwag records) are uploaded
as artifacts when the run finishes, the last one of each kind.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from minigpt.config import to_container
from minigpt.errors import ConfigError

log = logging.getLogger("minigpt")

MODES = ("online", "offline", "disabled")
_ALIASES = {"dryrun": "offline", "run": "online"}  # spellings wandb itself accepts


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"arch": {"name": "gpt2"}} -> {"arch.name": "gpt2"}: one column per setting in W&B's run table."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _base_url() -> str:
    """WANDB_BASE_URL, else the installed wandb's default server (it moved between wandb versions)."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    try:
        import wandb

        return wandb.Settings().base_url
    except Exception:  # noqa: BLE001 - no wandb: the classic default
        return "https://api.wandb.ai"


def has_api_key() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(_base_url()).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(_base_url())
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def requested_mode(requested: str | None) -> str:
    """logger.mode, else WANDB_MODE, else online; ConfigError unless it is one of MODES (or a wandb alias).

    Checked by minigpt.validate before any side effect; `resolve_mode` then decides offline fallbacks."""
    mode = (requested or os.environ.get("WANDB_MODE") or "online").strip().lower()
    mode = _ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ConfigError(f"W&B mode {mode!r} (logger.mode or WANDB_MODE) is not one of {'|'.join(MODES)}")
    return mode


def resolve_mode(requested: str | None) -> tuple[str, str | None]:
    """(mode, why it fell back to offline or None)."""
    mode = requested_mode(requested)
    if mode == "online":
        if not has_api_key():
            return "offline", "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
        if not server_reachable():
            return "offline", f"{_base_url()} is not reachable"
    return mode, None


def _hydra_config():
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 - no Hydra context (tests, notebooks)
        return None


def run_job_type(cfg) -> str:
    """logger.job_type, else the job's overrides without seeds (e.g. `arch=rope`), else the arch preset."""
    if cfg.logger.job_type:
        return cfg.logger.job_type
    from minigpt.experiment import job_type

    hc = _hydra_config()
    overrides = list(hc.overrides.task) if hc is not None else []
    return job_type(overrides, fallback=cfg.arch.name)


def run_group(cfg) -> str | None:
    """W&B group: logger.group, else the sweep file's name (sweeps/arch_ablation.yaml -> arch_ablation), else
    `experiment`, else the multirun folder (a plain `-m a=1,2` or a SLURM submission); None for a single local run."""
    if cfg.logger.group:
        return cfg.logger.group
    from hydra.types import RunMode

    hc = _hydra_config()
    multirun = hc is not None and hc.mode == RunMode.MULTIRUN
    if multirun and hc.job.config_name and hc.job.config_name != "config":
        return hc.job.config_name
    if cfg.experiment:
        return cfg.experiment
    return "_".join(Path(hc.sweep.dir).parts[-2:]) if multirun else None


class WandbLogger:
    """Numbers go to W&B's history; text (samples) goes to a table that grows with each sample."""

    def __init__(self, run):
        self.run = run
        self.run_id = run.id
        self._text_rows: list[list] = []
        self._files: dict[str, Path] = {}  # kind -> the newest file of that kind, uploaded at finish

    def log(self, metrics: dict, step: int) -> None:
        numbers, got_text = {}, False
        for key, value in metrics.items():
            if isinstance(value, str):
                self._text_rows.append([step, key, value])
                got_text = True
            else:
                numbers[key] = value.item() if hasattr(value, "item") else value
        if got_text:  # W&B tables are immutable once logged: log the grown table under the same key
            import wandb

            numbers["samples"] = wandb.Table(columns=["step", "key", "text"], data=[list(r) for r in self._text_rows])
        if numbers:
            self.run.log(numbers, step=step)

    def log_file(self, path: Path, kind: str) -> None:
        self._files[kind] = Path(path)

    def _upload_files(self) -> None:
        import wandb

        for kind, path in self._files.items():
            try:
                artifact = wandb.Artifact(f"{kind}-{self.run.id}", type=kind, metadata={"file": path.name})
                artifact.add_file(str(path))
                self.run.log_artifact(artifact)
            except Exception as exc:  # noqa: BLE001 - the file is still in the run directory
                log.warning(f"W&B: could not upload {path} ({type(exc).__name__}: {exc})")

    def finish(self) -> None:
        # Called from the trainer's `finally`: an exception on its way up marks the W&B run as failed.
        self._upload_files()
        exc = sys.exc_info()[1]
        code = 0 if exc is None else (exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1)
        self.run.finish(exit_code=code)


def create_wandb_logger(cfg, run_dir, run_id: str | None = None, warn: Callable[[str], None] = print,
                        forked_from: dict | None = None, is_main: bool = True):
    """A WandbLogger, or None when W&B is disabled, not installed, or this is not the rank-0 process (`is_main`).

    `run_id` continues that W&B run (a resume of this run's own checkpoint); `forked_from` (a start
    from another run's checkpoint) gets a new run whose config (`forked_from.*`) and notes name the
    source checkpoint, its step and its W&B run."""
    mode, why_offline = resolve_mode(cfg.logger.mode)
    if mode == "disabled" or not is_main:
        return None
    try:
        import wandb
    except ImportError:
        warn("logger=wandb but the wandb package is not installed: metrics go to metrics.jsonl only "
             "(pip install wandb, or logger=none to silence this)")
        return None

    lc = cfg.logger
    arch, model = cfg.arch.name, cfg.model.name
    tags = [f"arch={arch}", f"model={model}", *([f"experiment={cfg.experiment}"] if cfg.experiment else []), *lc.tags]
    wandb_dir = Path(lc.dir or run_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    config = flatten(to_container(cfg))
    notes = None
    if forked_from:
        config.update(flatten({"forked_from": forked_from}))
        notes = (f"forked from {forked_from['checkpoint']} at step {forked_from['step']}"
                 + (f" (W&B run {forked_from['logger_run_id']})" if forked_from.get("logger_run_id") else ""))
    run = wandb.init(
        project=lc.project,
        entity=lc.entity,
        group=run_group(cfg),
        job_type=run_job_type(cfg),
        tags=tags,
        name=Path(run_dir).name,
        config=config,
        notes=notes,
        dir=str(wandb_dir),
        mode=mode,
        id=run_id,
        resume="allow" if run_id else None,
        settings=wandb.Settings(silent=True),  # our own single line below instead of W&B's banner
    )
    if mode == "offline":
        local = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the run folder
        reason = why_offline or "WANDB_MODE=offline"
        (warn if why_offline else log.info)(f"W&B run recorded offline: {reason}. Upload it later with: wandb sync {local}")
    else:
        log.info(f"W&B run: {run.url}")
    return WandbLogger(run)
