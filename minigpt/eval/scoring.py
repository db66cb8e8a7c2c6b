"""Batched log-likelihood of continuations given contexts: the engine behind multiple-choice evals.

Each row is (context tokens, continuation tokens). Rows are truncated from the left to fit the
model's context window, keeping the continuation (lm-evaluation-harness does the same:
`(context + continuation)[-(max_length + 1):][:-1]`), sorted by length and packed many per forward
pass (right-padded: with causal attention, padding after a row's last token cannot change its logits).

Three savings for models with `body(idx, positions, attn_mask)` and `head(h)` (minigpt's GPT):
- **Shared contexts run once.** Rows with the same context (HellaSwag's four endings) become one
  sequence, context then every continuation, where each continuation attends to the context and to
  itself only and restarts its positions where the context ends; so every token sees exactly what it
  would see in its own row. A continuation's last token predicts nothing and is left out.
- **The head runs only where a prediction is scored**, once per distinct position: the context's last
  position predicts the first token of every continuation. For small models the vocabulary-sized head
  is most of the work.
- Rows that would need truncation keep their own sequence, so results never depend on the packing.
Other models are called as `model(idx)` on one row per sequence and their logits gathered at the
scored positions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from minigpt.data.tokenizer import EOT_TOKEN
from minigpt.runtime import autocast_context

Row = tuple[Sequence[int], Sequence[int]]
# Scored positions per head call, bounding the (positions x vocab) logits held at once. On CPU, 128
# positions (26 MB of fp32 logits at GPT-2's vocab) stay under glibc's mmap threshold, so the buffer
# is reused instead of page-faulted in afresh for every call (measured: ~40% of CPU time was system time).
HEAD_CHUNK = {"cpu": 128}
HEAD_CHUNK_DEFAULT = 2048


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights (or buffers) live; CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def can_pack(model: torch.nn.Module) -> bool:
    """Whether the model takes per-token positions and an attention mask (minigpt's GPT.body does)."""
    body = getattr(model, "body", None)
    if not (callable(body) and callable(getattr(model, "head", None))):
        return False
    params = inspect.signature(body).parameters
    return "positions" in params and "attn_mask" in params


@dataclass
class ScoringInput:
    """One model input: tokens, their positions and attention segments, and what to score in it."""

    tokens: list[int]
    rows: int  # rows of the caller it serves (its share of a batch)
    scored: list[tuple[int, int, int]]  # (row index, position whose output predicts, target token)
    positions: list[int] | None = None  # None: 0, 1, 2, ...
    segments: list[int] | None = None  # None: plain causal; else 0 = shared context, k = continuation k


def _own_row(i: int, context: Sequence[int], continuation: Sequence[int], block_size: int) -> ScoringInput:
    tokens = (list(context) + list(continuation))[-(block_size + 1):]
    n = min(len(continuation), len(tokens) - 1)
    start = len(tokens) - 1 - n  # input position predicting the first scored target
    return ScoringInput(tokens[:-1], 1, [(i, start + j, tokens[start + j + 1]) for j in range(n)])


def _shared_context(members: list[tuple[int, Sequence[int]]], context: Sequence[int]) -> ScoringInput:
    """Context once, then each continuation without its last token, positions restarting after the context."""
    m = len(context)
    seq = ScoringInput(list(context), len(members), [], list(range(m)), [0] * m)
    for k, (i, cont) in enumerate(members, start=1):
        start = len(seq.tokens)
        seq.scored.append((i, m - 1, cont[0]))  # the context's last position predicts the first token
        seq.scored.extend((i, start + j - 1, cont[j]) for j in range(1, len(cont)))
        seq.tokens.extend(cont[:-1])
        seq.positions.extend(range(m, m + len(cont) - 1))
        seq.segments.extend([k] * (len(cont) - 1))
    return seq


def plan_sequences(rows: Sequence[Row], block_size: int, prefix_token: int, share_contexts: bool) -> list[ScoringInput]:
    """Turn rows into model inputs, longest first (similar lengths share a batch; memory peaks first)."""
    by_context: dict[tuple, list[tuple[int, Sequence[int]]]] = {}
    for i, (ctx, cont) in enumerate(rows):
        if not cont:
            raise ValueError("cannot score an empty continuation")
        by_context.setdefault(tuple(ctx or [prefix_token]), []).append((i, cont))  # empty context: EOT
    seqs = []
    for ctx, members in by_context.items():
        fits = all(len(ctx) + len(cont) - 1 <= block_size for _, cont in members)
        if share_contexts and len(members) > 1 and fits:
            seqs.append(_shared_context(members, ctx))
        else:
            seqs.extend(_own_row(i, ctx, cont, block_size) for i, cont in members)
    return sorted(seqs, key=lambda s: -len(s.tokens))


def _batches(seqs: list[ScoringInput], rows_per_batch: int):
    batch, rows = [], 0
    for s in seqs:
        if batch and rows + s.rows > rows_per_batch:
            yield batch
            batch, rows = [], 0
        batch.append(s)
        rows += s.rows
    if batch:
        yield batch


def _inputs(batch: list[ScoringInput], device: torch.device):
    """(idx, positions or None, attn_mask or None) for a batch, right-padded."""
    T = len(batch[0].tokens)
    idx = torch.zeros(len(batch), T, dtype=torch.long)
    for b, s in enumerate(batch):
        idx[b, : len(s.tokens)] = torch.tensor(s.tokens)
    if all(s.segments is None for s in batch):
        return idx.to(device, non_blocking=True), None, None
    pos = torch.zeros(len(batch), T, dtype=torch.long)
    seg = torch.full((len(batch), T), -1, dtype=torch.long)  # padding: its own segment
    for b, s in enumerate(batch):
        n = len(s.tokens)
        pos[b, :n] = torch.tensor(s.positions) if s.positions is not None else torch.arange(n)
        seg[b, :n] = torch.tensor(s.segments) if s.segments is not None else 0
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    # a token sees earlier tokens of the shared context (segment 0) and of its own segment
    mask = causal & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
    return idx.to(device, non_blocking=True), pos.to(device), mask[:, None].to(device)


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[target] as logit[target] - logsumexp(logits): no second vocab-sized tensor."""
    logits = logits.float()
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def _batch_logprobs(model, batch: list[ScoringInput], device: torch.device, packable: bool) -> torch.Tensor:
    """Log-probability of every scored target of the batch, in the order of the sequences' `scored` lists."""
    idx, pos, mask = _inputs(batch, device)
    T = idx.shape[1]
    flat = [b * T + p for b, s in enumerate(batch) for _, p, _ in s.scored]
    targets = torch.tensor([t for s in batch for _, _, t in s.scored], dtype=torch.long, device=device)
    if not packable:
        out = model(idx)
        logits = (out[0] if isinstance(out, (tuple, list)) else out).flatten(0, 1)
        return _target_logprobs(logits[torch.tensor(flat, device=device)], targets)
    hidden = model.body(idx, positions=pos, attn_mask=mask).flatten(0, 1)
    # The head once per distinct predicting position (a shared context's last one serves every continuation).
    unique, where = torch.unique(torch.tensor(flat), return_inverse=True)
    hidden, where = hidden[unique.to(device)], where.to(device)
    step = HEAD_CHUNK.get(device.type, HEAD_CHUNK_DEFAULT)
    picked = torch.empty(len(targets), device=device)
    for a in range(0, len(unique), step):
        # log_softmax is one fused pass per row; logsumexp makes three over the chunk (measured ~25% slower)
        logprobs = torch.log_softmax(model.head(hidden[a:a + step]).float(), dim=-1)
        sel = ((where >= a) & (where < a + step)).nonzero().squeeze(1)
        picked[sel] = logprobs[where[sel] - a, targets[sel]]
    return picked


@torch.no_grad()
def score_continuations(
    model: torch.nn.Module,
    rows: Sequence[Row],
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dtype: str = "float32",
    block_size: int | None = None,
    prefix_token: int = EOT_TOKEN,
    progress: bool = False,
    desc: str = "scoring",
    share_contexts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(continuation | context) per row (float64, CPU) and the number of tokens scored (int64).

    batch_size is rows per forward pass (a shared-context sequence counts its rows); dtype
    (float32/bfloat16/float16) sets autocast; block_size defaults to the model's `block_size`.
    Results come back in the order of `rows`.
    """
    model = unwrap(model)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    block_size = block_size or model.block_size
    device = torch.device(device) if device is not None else model_device(model)
    packable = can_pack(model)
    seqs = plan_sequences(rows, block_size, prefix_token, share_contexts and packable)
    sums = torch.zeros(len(rows), dtype=torch.float64)
    counts = torch.zeros(len(rows), dtype=torch.int64)

    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(rows), desc=desc, unit="row", disable=None if progress else True, leave=False)  # None: only on a terminal
        for batch in _batches(seqs, batch_size):
            with autocast_context(device, dtype):
                lp = _batch_logprobs(model, batch, device, packable)
            row_of = torch.tensor([i for s in batch for i, _, _ in s.scored])
            sums.index_add_(0, row_of, lp.double().cpu())
            counts.index_add_(0, row_of, torch.ones_like(row_of))
            bar.update(sum(s.rows for s in batch))
        bar.close()
    finally:
        model.train(was_training)
    return sums, counts
