"""The modern recipe's arch switches each change what they should, and nothing when off.

ReLU^2 (shapes, activation), QK-norm (q/k scale no longer matters), embedding norm, logit softcap
(bounds), zero-init projections (a block starts as the identity), untied head (its parameter cost),
and the per-component parameter counts the trainer prints.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt.config import ArchConfig, MLPKind, ModelConfig
from minigpt.errors import ConfigError
from minigpt.model import GPT
from minigpt.model.components import CausalSelfAttention, PlainMLP
from tests.conftest import tiny_config

SMALL = ModelConfig(n_layer=2, n_embd=64, n_head=4, block_size=32)
SWITCHES = {  # each switch alone on the gpt2 arch
    "relu2": ["arch.mlp=relu2"],
    "qk_norm": ["arch.qk_norm=true"],
    "softcap": ["arch.logit_softcap=15"],
    "zero_init": ["arch.zero_init_proj=true"],
    "untied": ["arch.tie_embeddings=false"],
    "embed_norm": ["arch.embed_norm=true"],
}


def build(*overrides: str, seed: int = 0) -> GPT:
    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    return GPT(cfg.arch, cfg.model)


def test_param_counts_add_up_and_show_what_a_switch_costs():
    base = build("arch=gpt2")
    counts = base.param_counts()
    assert sum(counts.values()) == base.num_params()
    assert counts["head"] == 0 and "head tied" in base.describe_params()
    untied = build("arch=gpt2", *SWITCHES["untied"])
    assert untied.param_counts()["head"] == untied.padded_vocab_size * 64  # a second vocab x width table
    assert untied.num_params() - base.num_params() == untied.padded_vocab_size * 64
    assert "head 3.22M" in untied.describe_params()
    for name in ("relu2", "qk_norm", "softcap", "zero_init", "embed_norm"):  # free in parameters
        assert build("arch=gpt2", *SWITCHES[name]).param_counts() == counts, name
    modern = build("arch=modern")
    assert modern.param_counts()["positions"] == 0 and "positions" not in modern.describe_params()
    assert modern.param_counts()["norms"] == 5 * 64  # RMSNorm gains only: no biases, no parameters in QK/embedding norms


def test_relu2_mlp_is_relu_squared_with_gelus_shapes():
    torch.manual_seed(0)
    gelu, relu2 = PlainMLP(ArchConfig(), SMALL), PlainMLP(ArchConfig(mlp=MLPKind.relu2), SMALL)
    assert [p.shape for p in gelu.parameters()] == [p.shape for p in relu2.parameters()]
    relu2.load_state_dict(gelu.state_dict())
    x = torch.randn(2, 5, 64)
    h = relu2.c_fc(x)
    torch.testing.assert_close(relu2(x), relu2.c_proj(F.relu(h) ** 2))
    assert not torch.allclose(relu2(x), gelu(x))


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_qk_norm_normalises_each_query_and_key_head(pos):
    """With QK-norm, scaling the query and key weights (per head, by anything) leaves attention unchanged,
    because every head's q and k are normalised to RMS 1 before the scores; without it, it changes."""
    torch.manual_seed(0)
    x = torch.randn(2, 10, 64)
    for qk_norm in (True, False):
        attn = CausalSelfAttention(ArchConfig(pos_encoding=pos, qk_norm=qk_norm, bias=False), SMALL)
        before = attn(x)
        with torch.no_grad():
            scale = torch.rand(2 * 4, 1, 1) * 5 + 0.2  # a different factor for each q and k head (MHA: 4 + 4)
            qk = attn.c_attn.weight[: 2 * 64].view(8, 16, 64)
            attn.c_attn.weight[: 2 * 64] = (qk * scale).view(128, 64)
        after = attn(x)
        if qk_norm:
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
        else:
            assert (after - before).abs().max() > 1e-2
    norm = CausalSelfAttention(ArchConfig(qk_norm=True), SMALL).qk_norm
    assert not list(norm.parameters())  # no gain: nothing to train, nothing to export
    q = torch.randn(2, 4, 10, 16) * 7  # (batch, heads, time, head_dim)
    torch.testing.assert_close(norm(q).pow(2).mean(-1), torch.ones(2, 4, 10), atol=1e-4, rtol=0)


def test_embed_norm_makes_the_embedding_scale_irrelevant():
    model = build("arch=modern").eval()
    idx = torch.randint(0, 50257, (2, 12))
    before, _ = model(idx)
    with torch.no_grad():
        model.wte.weight.mul_(13.0)  # untied head: only the input side changes
    torch.testing.assert_close(model(idx)[0], before, atol=1e-4, rtol=1e-4)


def test_logit_softcap_bounds_logits_and_is_tanh():
    capped, plain = build("arch=gpt2", "arch.logit_softcap=5"), build("arch=gpt2")
    plain.load_state_dict(capped.state_dict())
    with torch.no_grad():
        for m in (capped, plain):
            m.lm_head.weight.mul_(500.0)  # raw logits far beyond the cap
    idx = torch.randint(0, 50257, (2, 12))
    raw, out = plain(idx)[0], capped(idx)[0]
    assert raw.abs().max() > 50
    assert out.abs().max() <= 5.0
    torch.testing.assert_close(out, 5.0 * torch.tanh(raw / 5.0))
    x = plain.body(idx)  # the HellaSwag scorers' path (body -> head) is capped too
    torch.testing.assert_close(capped.head(x), out)
    targets = torch.randint(0, 50257, (2, 12))  # and the training loss (the chunked lean loss) sees capped logits
    expected = torch.nn.functional.cross_entropy(out.reshape(-1, out.size(-1)), targets.reshape(-1))
    torch.testing.assert_close(capped(idx, targets)[1], expected)
    assert not torch.allclose(plain(idx, targets)[1], expected)


def test_logit_softcap_must_be_positive():
    with pytest.raises(ConfigError, match="arch.logit_softcap=0.0 must be positive"):
        build("arch=gpt2", "arch.logit_softcap=0")


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_zero_init_makes_each_block_an_identity_on_the_residual(arch):
    model = build(f"arch={arch}", "arch.zero_init_proj=true")
    x = torch.randn(2, 10, 64)
    for block in model.h:
        torch.testing.assert_close(block(x), x, atol=0, rtol=0)
        assert block.attn.c_proj.weight.abs().sum() == 0
    # the rest is initialised as without the switch (same RNG draws), and it learns: projections get gradients
    ref = build(f"arch={arch}", "arch.zero_init_proj=false")
    assert torch.equal(model.h[0].attn.c_attn.weight, ref.h[0].attn.c_attn.weight)
    assert torch.equal(model.h[1].mlp.c_fc.weight, ref.h[1].mlp.c_fc.weight)
    idx = torch.randint(0, 50257, (2, 12))
    model(idx, idx.roll(-1, 1))[1].backward()
    assert model.h[0].attn.c_proj.weight.grad.abs().sum() > 0 and model.h[0].mlp.c_proj.weight.grad.abs().sum() > 0


def test_switches_default_off_in_the_seed_presets():
    for arch in ("gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"):
        a = tiny_config(f"arch={arch}").arch
        assert (a.qk_norm, a.logit_softcap, a.zero_init_proj, a.embed_norm, a.tie_embeddings) == (
            False, None, False, False, True), arch
        assert a.mlp != MLPKind.relu2
    modern = tiny_config("arch=modern").arch
    assert (modern.pos_encoding.value, modern.norm.value, modern.mlp.value, modern.qk_norm, modern.logit_softcap,
            modern.zero_init_proj, modern.tie_embeddings, modern.bias, modern.embed_norm) == (
        "rope", "rmsnorm", "relu2", True, 15.0, True, False, False, True)


def test_untied_flops_count_the_head_not_the_lookup():
    tied, untied = build("arch=gpt2"), build("arch=gpt2", *SWITCHES["untied"])
    assert untied.flops_per_token(32) == pytest.approx(tied.flops_per_token(32))
    assert math.isfinite(untied.flops_per_token())
