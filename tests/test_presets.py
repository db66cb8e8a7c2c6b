"""Every YAML under conf/ and sweeps/ composes against the typed schema, and the model presets build with
the shapes and costs derived here by hand (not from the production formulas)."""

from itertools import product

import pytest
import torch

from minigpt.config import to_config
from minigpt.model import GPT
from tests.conftest import CONF_DIR, ROOT, compose_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
GROUP_PRESETS = [(group, p.stem) for group in GROUPS for p in sorted((CONF_DIR / group).glob("*.yaml"))]
GPU_PRESETS = sorted(p.stem for p in (CONF_DIR / "cluster" / "gpu").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


def test_the_preset_lists_are_not_empty():
    """A moved conf/ dir must not make the parametrized checks below vanish silently."""
    assert {"arch", "model", "optim", "data", "train", "logger", "cluster", "eval", "experiment"} <= set(GROUPS)
    assert len(GROUP_PRESETS) >= 25 and len(GPU_PRESETS) >= 5 and len(SWEEPS) >= 6


@pytest.mark.parametrize("group,preset", GROUP_PRESETS, ids=[f"{g}={p}" for g, p in GROUP_PRESETS])
def test_every_group_preset_fits_the_schema(group, preset):
    """A key the schema does not know, or a value of the wrong type, fails composition or to_config here."""
    cfg = to_config(compose_config([f"{group}={preset}"]))
    if group in ("arch", "model", "optim", "data", "logger", "cluster", "eval"):
        assert getattr(cfg, group).name == preset


@pytest.mark.parametrize("gpu", GPU_PRESETS)
def test_every_gpu_preset_fits_the_schema(gpu):
    cfg = to_config(compose_config(["cluster=slurm", f"cluster/gpu={gpu}"]))
    assert cfg.cluster.gpu.name == gpu and cfg.cluster.gpu.memory_gb > 0
    assert set(cfg.cluster.gpu.peak_tflops) == {"bfloat16", "float16", "float32"}


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_against_the_schema(sweep):
    """Each job of the sweep, composed as `python -m minigpt.train -m --config-dir sweeps --config-name ...` does."""
    from minigpt.plan.compose import compose_command, task_config

    jobs = compose_command([], multirun=True, config_dir=str(ROOT / "sweeps"), config_name=sweep).jobs
    assert jobs
    for job in jobs:
        to_config(task_config(job))


ARCHS = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("arch,model", list(product(ARCHS, MODELS)))
def test_every_arch_and_model_combination_builds(arch, model):
    """On the meta device: shapes only, no memory, so even d24 costs nothing."""
    cfg = to_config(compose_config([f"arch={arch}", f"model={model}"]))
    with torch.device("meta"):
        gpt = GPT(cfg.arch, cfg.model)
    assert gpt.num_params() > 0 and all(p.is_meta for p in gpt.parameters())


def test_d12_gpt2_has_exactly_llmc_124m_parameters():
    """Derived from the shapes: per layer two LayerNorms (2 x 2h), qkv (h x 3h + 3h), attention out
    (h x h + h), MLP (h x 4h + 4h, 4h x h + h), i.e. 12h^2 + 13h; plus the padded token table (50304 x h,
    tied with the head), the position table (1024 x h) and the final LayerNorm (2h)."""
    cfg = to_config(compose_config(["model=d12", "arch=gpt2"]))
    with torch.device("meta"):
        gpt = GPT(cfg.arch, cfg.model)
    h, layers = 768, 12
    by_hand = layers * (12 * h * h + 13 * h) + 50304 * h + 1024 * h + 2 * h
    assert by_hand == 124_475_904  # llm.c's printout for GPT-2 124M with the padded vocabulary
    assert gpt.num_params() == by_hand


def test_d12_flops_per_token_match_nanogpts_estimate_mfu():
    """nanoGPT's `estimate_mfu`: 6N + 12 * L * H * Q * T with N the parameters without the position
    table: 6 * 123,689,472 + 12 * 12 * 12 * 64 * 1024 = 742,136,832 + 113,246,208."""
    cfg = to_config(compose_config(["model=d12", "arch=gpt2"]))
    with torch.device("meta"):
        gpt = GPT(cfg.arch, cfg.model)
    assert gpt.flops_per_token(1024) == 855_383_040
