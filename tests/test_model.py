"""Model components: every arch builds and trains; GQA, RoPE and sizes behave as specified."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt.config import ArchConfig, ModelConfig
from minigpt.errors import ConfigError
from minigpt.model import GPT
from minigpt.model.components import CausalSelfAttention, RotaryEmbedding, swiglu_hidden_size
from tests.conftest import CONF_DIR, tiny_config

ARCHS = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))
SMALL = ModelConfig(n_layer=2, n_embd=64, n_head=4, block_size=32)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_forward_backward(arch):
    cfg = tiny_config(f"arch={arch}")
    torch.manual_seed(0)
    model = GPT(cfg.arch, cfg.model)
    idx = torch.randint(0, cfg.model.vocab_size, (2, 16))
    logits, _ = model(idx)
    assert logits.shape == (2, 16, cfg.model.vocab_size)
    _, loss = model(idx, idx.roll(-1, dims=1))
    assert abs(loss.item() - math.log(cfg.model.vocab_size)) < 1.0  # near-uniform at init
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _reference_mha(x, attn: CausalSelfAttention):
    """Textbook causal multi-head attention with explicit softmax, from the module's own weights."""
    B, T, C = x.shape
    H, D = attn.n_head, attn.head_dim
    q, k, v = attn.c_attn(x).split([H * D, H * D, H * D], dim=-1)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    y = F.softmax(scores, dim=-1) @ v
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


def test_gqa_with_all_kv_heads_is_multi_head_attention():
    torch.manual_seed(0)
    attn = CausalSelfAttention(ArchConfig(n_kv_head=4), SMALL)
    x = torch.randn(2, 10, 64)
    torch.testing.assert_close(attn(x), _reference_mha(x, attn), atol=1e-5, rtol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = CausalSelfAttention(ArchConfig(n_kv_head=2), SMALL)
    mha = CausalSelfAttention(ArchConfig(n_kv_head=4), SMALL)
    D = gqa.head_dim
    wq, wk, wv = gqa.c_attn.weight.split([4 * D, 2 * D, 2 * D])
    bq, bk, bv = gqa.c_attn.bias.split([4 * D, 2 * D, 2 * D])
    rep = lambda t: t.view(2, D, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(4 * D, *t.shape[1:])  # noqa: E731
    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.c_attn.bias.copy_(torch.cat([bq, rep(bk), rep(bv)]))
        mha.c_proj.load_state_dict(gqa.c_proj.state_dict())
    x = torch.randn(2, 10, 64)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=1e-5)
    assert gqa.c_attn.weight.numel() < mha.c_attn.weight.numel()


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=16, max_seq_len=64, theta=10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        qm = rope(q.view(1, 1, 1, 16).expand(1, 1, 64, 16).contiguous())[0, 0, m]
        kn = rope(k.view(1, 1, 1, 16).expand(1, 1, 64, 16).contiguous())[0, 0, n]
        return (qm @ kn).item()

    for m, n, shift in [(5, 2, 7), (10, 10, 30), (3, 0, 50), (20, 4, 11)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)  # but it does depend on the offset


def test_swiglu_keeps_mlp_parameter_count():
    assert swiglu_hidden_size(768) == 2048
    for d in (64, 128, 768, 1024):
        gelu, swiglu = 8 * d * d, 3 * d * swiglu_hidden_size(d)
        assert abs(swiglu - gelu) / gelu < 0.1


def test_gpt2_init_and_tied_embeddings():
    torch.manual_seed(0)
    model = GPT(ArchConfig(), ModelConfig(n_layer=4, n_embd=256, n_head=4, block_size=32))
    assert model.lm_head.weight is model.wte.weight
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.h[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert model.padded_vocab_size % 128 == 0 and model.padded_vocab_size >= 50257


@pytest.mark.parametrize(
    "arch,model,match",
    [
        (ArchConfig(), ModelConfig(n_embd=64, n_head=5), "does not divide model.n_embd"),
        (ArchConfig(n_kv_head=3), ModelConfig(n_embd=64, n_head=4), "n_kv_head=3 does not divide"),
        (ArchConfig(q_per_kv=3), ModelConfig(n_embd=64, n_head=4), "q_per_kv=3 does not divide"),
    ],
)
def test_bad_shapes_raise_clear_errors(arch, model, match):
    with pytest.raises(ConfigError, match=match):
        GPT(arch, model)


def test_peak_flops_table_and_mfu():
    from minigpt.perf import mfu, peak_flops

    assert peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12  # every name: tests/test_hot_path.py
    assert mfu(1e9, 100_000, 312e12) == pytest.approx(0.3205, abs=1e-4)  # 1e14 FLOP/s of 312e12: 32.05%
    assert mfu(1e9, 100_000, None) is None


def test_generate_runs_the_head_on_the_last_position_only():
    """Sampling needs the next token's logits: the vocab-sized head multiplies one row per sequence."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = GPT(cfg.arch, cfg.model).eval()
    rows, head = [], model.head
    model.head = lambda x: (rows.append(tuple(x.shape)), head(x))[1]
    out = model.generate(torch.tensor([[1, 2, 3, 4, 5]]), 3, temperature=0)
    assert rows == [(1, cfg.model.n_embd)] * 3  # (B, C): the last position of each step
    del model.head
    logits, _ = model(out[:, :-1])
    assert out[0, -1] == logits[0, -1].argmax()  # the same greedy choice as the full forward
