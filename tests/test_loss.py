"""The memory-lean loss equals the textbook one (loss and gradients), and holds far less memory."""

import pytest
import torch
import torch.nn.functional as F

from minigpt.config import ArchConfig, ModelConfig
from minigpt.model import GPT
from minigpt.model.loss import chunk_rows, head_weight, linear_cross_entropy, plain_cross_entropy

V, VP, C, N = 1000, 1024, 32, 300


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, generator=g, requires_grad=True)
    w = (torch.randn(VP, C, generator=g) * 0.5).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)
    y[::7] = -1  # ignored positions
    return x, w, y


def _loss_and_grads(fn, x, w, y, **kw):
    x.grad = w.grad = None
    loss = fn(x, w, y, V, **kw)
    (2.5 * loss).backward()  # a non-unit upstream gradient, as gradient accumulation gives
    return loss.detach(), x.grad.clone(), w.grad.clone()


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_lean_loss_matches_plain_cross_entropy_fp32(padded, softcap):
    x, w, y = _inputs()
    weight = lambda w: head_weight(w, V, padded=padded)  # noqa: E731
    plain = _loss_and_grads(lambda x, w, y, v, **k: plain_cross_entropy(x, weight(w), y, v, **k), x, w, y, softcap=softcap)
    # chunks of 64 rows: five chunks, the last one partial
    lean = _loss_and_grads(lambda x, w, y, v, **k: linear_cross_entropy(x, weight(w), y, v, chunk_elements=64 * VP, **k),
                           x, w, y, softcap=softcap)
    assert chunk_rows(N, VP, 64 * VP) == 64
    for a, b in zip(plain, lean):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert lean[2][V:].abs().max() == 0  # padded rows never get a gradient from the loss
    # the reference itself: F.cross_entropy over the real vocabulary's logits
    ref = F.cross_entropy(x @ w[:V].t() if softcap is None else softcap * torch.tanh(x @ w[:V].t() / softcap), y,
                          ignore_index=-1)
    torch.testing.assert_close(lean[0], ref.detach(), rtol=1e-5, atol=1e-6)


def test_lean_loss_matches_plain_under_bf16_autocast():
    x, w, y = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _loss_and_grads(plain_cross_entropy, x, w, y)
        lean = _loss_and_grads(lambda *a: linear_cross_entropy(*a, chunk_elements=64 * VP), x, w, y)
    assert lean[1].dtype == x.dtype and lean[2].dtype == w.dtype
    torch.testing.assert_close(lean[0], plain[0], rtol=1e-3, atol=1e-3)  # the same bf16 logits
    for a, b in zip(plain[1:], lean[1:]):  # bf16 gradients: within bf16 rounding of each other
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-2 * a.abs().max().item())


def test_lean_loss_without_grad_and_the_model_gradients_match_plain():
    x, w, y = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(x, w, y, V, chunk_elements=64 * VP),
                                   plain_cross_entropy(x, w, y, V), rtol=1e-5, atol=1e-6)

    # Through the whole tied-embedding GPT: every parameter's gradient matches the plain loss's.
    torch.manual_seed(0)
    model = GPT(ArchConfig(), ModelConfig(n_layer=1, n_embd=32, n_head=2, block_size=16, vocab_size=V,
                                          vocab_pad_multiple=128))
    idx = torch.randint(0, V, (3, 16))
    _, loss = model(idx, idx.roll(-1, 1))
    loss.backward()
    lean = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    plain = plain_cross_entropy(model.body(idx), model.lm_head.weight[:V], idx.roll(-1, 1), V)
    plain.backward()
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(lean[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


# ---------------------------------------------------------------- under torch.compile: the graph does not grow with B x T

ROWS = 64  # rows per chunk in the compiled tests (chunk_elements = 64 x the padded vocabulary)


def _tiny_gpt(**arch):
    torch.manual_seed(0)
    model = GPT(ArchConfig(**arch), ModelConfig(n_layer=1, n_embd=16, n_head=2, block_size=16, vocab_size=V,
                                                vocab_pad_multiple=128))
    model.chunk_elements = ROWS * VP
    return model


def _counting_backend(graphs: list[int]):
    """aot_eager (AOTAutograd, no codegen) that records each FX graph's node count as Dynamo hands it over."""
    from torch._dynamo.backends.registry import lookup_backend

    def backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return lookup_backend("aot_eager")(gm, example_inputs)

    return backend


def _step(model, idx):
    """Training loss and every parameter's gradient, then the no-grad (validation) loss."""
    model.zero_grad()
    _, loss = model(idx, idx.roll(-1, 1))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in getattr(model, "_orig_mod", model).named_parameters()}
    with torch.no_grad():
        _, val = model(idx, idx.roll(-1, 1))
    return loss.detach(), val, grads


@pytest.mark.parametrize("batch, softcap", [(12, None), (13, 3.0)])  # 3 chunks; 3 and a 16-row one, softcapped
def test_compiled_chunked_loss_equals_eager(batch, softcap):
    torch._dynamo.reset()
    eager = _tiny_gpt(logit_softcap=softcap)
    idx = torch.randint(0, V, (batch, 16), generator=torch.Generator().manual_seed(1))
    assert batch * 16 // chunk_rows(batch * 16, VP, eager.chunk_elements) == 3
    want = _step(eager, idx)
    got = _step(eager.compiled(backend="aot_eager"), idx)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
    for n, g in want[2].items():
        torch.testing.assert_close(got[2][n], g, rtol=1e-5, atol=1e-7, msg=n)


def test_compiled_graphs_are_the_same_at_3_and_100_chunks():
    """Node counts of every graph compiled for a training and a validation forward: the body's and the one
    chunk loss's, each twice (with and without gradients), the same for 3 chunks' worth of tokens as for 100."""
    counts = {}
    for chunks in (3, 100):
        torch._dynamo.reset()
        graphs: list[int] = []
        model = _tiny_gpt().compiled(backend=_counting_backend(graphs))
        _step(model, torch.randint(0, V, (chunks * ROWS // 16, 16)))
        counts[chunks] = graphs
    assert len(counts[3]) == 4, counts  # body + chunk, with and without gradients
    assert counts[3] == counts[100], counts
