"""Checkpoint files: written atomically, read with weights_only=True (never arbitrary unpickling).

A checkpoint is a dict of tensors and plain Python values: model and optimizer state, the resolved
config as a plain dict, the step, and whatever else the trainer adds (loader position, RNG states).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from minigpt.atomic import atomic_write
from minigpt.errors import ConfigError

CKPT_GLOB = "ckpt_*.pt"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{step:07d}.pt"


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename: a crash never leaves a torn file."""
    with atomic_write(path, durable=True) as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in a run dir, oldest first (names sort by step)."""
    return sorted(Path(run_dir).glob(CKPT_GLOB))


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the newest checkpoint inside a run directory."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        found = list_checkpoints(p)
        if found:
            return found[-1]
        raise ConfigError(f"no checkpoint (ckpt_*.pt) in {p}: pass a run directory that finished at least one checkpoint")
    raise ConfigError(f"checkpoint path {p} does not exist")


def load_model(path: str | os.PathLike, map_location="cpu"):
    """Rebuild the GPT from a checkpoint (file or run dir). Returns (model, checkpoint dict).

    A Hugging Face GPT-2 folder (config.json with model_type gpt2) is imported too, so everything that
    loads checkpoints (evaluation, export) also runs on e.g. OpenAI's GPT-2 weights saved locally.
    """
    from omegaconf import OmegaConf

    from minigpt.config import ArchConfig, ModelConfig
    from minigpt.hf.importer import checkpoint_state, from_pretrained_gpt2, is_hf_gpt2_dir
    from minigpt.model import GPT

    if is_hf_gpt2_dir(path):
        model = from_pretrained_gpt2(path).to(map_location)
        return model, checkpoint_state(model)
    ckpt = load_checkpoint(find_checkpoint(path), map_location=map_location)
    cfg = ckpt["config"]
    arch = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ArchConfig), cfg["arch"]))
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg["model"]))
    model = GPT(arch, model_cfg)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def init_weights_from(model, path: str | os.PathLike) -> None:
    """Copy the weights (only: no optimizer, step or data position) of a checkpoint or HF GPT-2 folder into
    `model`, for fine-tuning (`train.init_from`). The source's arch and model config must match `model`'s."""
    from dataclasses import asdict

    src, _ = load_model(path)
    want = {f"arch.{k}": v for k, v in asdict(src.arch).items() if k != "name"}
    want.update({f"model.{k}": v for k, v in asdict(src.model_config).items() if k != "name"})
    have = {f"arch.{k}": v for k, v in asdict(model.arch).items() if k != "name"}
    have.update({f"model.{k}": v for k, v in asdict(model.model_config).items() if k != "name"})
    diff = [f"{k}={getattr(v, 'value', v)}" for k, v in want.items() if have.get(k) != v]
    if diff:
        raise ConfigError(f"train.init_from={path} is a different model: add the overrides {' '.join(diff)}")
    with torch.no_grad():
        model.load_state_dict(src.state_dict())
