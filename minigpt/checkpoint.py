"""Checkpoint files: written atomically, read with weights_only=True (never arbitrary unpickling).

A checkpoint is a dict of tensors and plain Python values: model and optimizer state, the resolved
config as a plain dict, the step, and whatever else the trainer adds (loader position, RNG states).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from minigpt.atomic import atomic_write
from minigpt.errors import ConfigError, refusal_reason, write_failure

CKPT_GLOB = "ckpt_*.pt"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{step:07d}.pt"


class CheckpointUnreadable(ConfigError):
    """A file that is not a checkpoint, or a torn / damaged one: `<path> is <reason>`."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path} is {reason}")
        self.reason = reason


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename: a crash never leaves a torn file.

    A failed write (full disk, quota) raises RunFailure `could not write checkpoint <path>: <cause>`:
    torch itself reports it as `unexpected pos ...`, with the real cause only in the chained exception.
    """
    try:
        with atomic_write(path, durable=True) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as exc:
        raise (write_failure("checkpoint", path, exc) or exc) from exc
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """torch.load(weights_only=True), with one clear line when the file is not a (whole) checkpoint."""
    if not Path(path).is_file():
        raise CheckpointUnreadable(path, "missing (no such file)")
    if not zipfile.is_zipfile(path):  # every torch.save since 1.6 writes a zip archive, directory at the end
        with open(path, "rb") as f:
            torn = f.read(4) == b"PK\x03\x04"  # starts like one: cut short by a crash or a full disk
        raise CheckpointUnreadable(path, "a truncated checkpoint (the end of the archive is missing)" if torn else
                                   "not a checkpoint (not a PyTorch zip archive: corrupt, or another kind of file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # a whole archive holding objects weights_only refuses to build
        raise CheckpointUnreadable(path, f"not a minigpt checkpoint ({refusal_reason(exc)})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise CheckpointUnreadable(path, f"a damaged checkpoint ({first})") from exc


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Cheap: the archive's central directory (at its end) reads and lists a pickle; no tensor is loaded."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("data.pkl") for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


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
