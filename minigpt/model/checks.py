"""Shapes a GPT cannot build: one `ConfigError` line each, saying how to fix it.

Here, in the model layer, so that `GPT.__init__` runs them (HF import, forecasts on the meta device)
without importing the training config checks above it; minigpt/validate.py re-exports `check_model`
and runs it first among a run's checks.
"""

from __future__ import annotations

from minigpt.config import ArchConfig, ModelConfig, PosEncoding, resolve_kv_heads
from minigpt.errors import ConfigError


def check_model(arch: ArchConfig, model: ModelConfig) -> None:
    """Shapes that cannot build."""
    for key in ("n_layer", "n_embd", "n_head", "block_size", "vocab_size"):
        if getattr(model, key) <= 0:
            raise ConfigError(f"model.{key}={getattr(model, key)} must be positive")
    if model.n_embd % model.n_head:
        raise ConfigError(
            f"model.n_head={model.n_head} does not divide model.n_embd={model.n_embd}: "
            f"pick a head count that divides the width (e.g. model.n_head={_divisor_near(model.n_embd, model.n_head)})"
        )
    if arch.n_kv_head is None and (arch.q_per_kv <= 0 or model.n_head % arch.q_per_kv):
        raise ConfigError(
            f"arch.q_per_kv={arch.q_per_kv} does not divide model.n_head={model.n_head}: "
            "set arch.q_per_kv to a divisor of the head count, or set arch.n_kv_head"
        )
    n_kv = resolve_kv_heads(arch, model)
    if n_kv <= 0 or model.n_head % n_kv:
        raise ConfigError(
            f"arch.n_kv_head={n_kv} does not divide model.n_head={model.n_head}: "
            "use a key/value head count that divides the head count"
        )
    if arch.logit_softcap is not None and not arch.logit_softcap > 0:
        raise ConfigError(f"arch.logit_softcap={arch.logit_softcap} must be positive (e.g. 15), or null to switch it off")
    if arch.pos_encoding == PosEncoding.rope and (model.n_embd // model.n_head) % 2:
        raise ConfigError(f"RoPE needs an even head dimension, got {model.n_embd // model.n_head}: change model.n_head")


def _divisor_near(n: int, k: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - k))
