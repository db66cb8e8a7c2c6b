"""Batched log-likelihood of continuations given contexts: the engine behind multiple-choice evals.

Each row is (context tokens, continuation tokens). Rows are sorted by length, packed many per forward
pass (right-padded: with causal attention, padding after a row's last token cannot change its
logits), and truncated from the left to fit the model's context window, keeping the continuation
(lm-evaluation-harness does the same: `(context + continuation)[-(max_length + 1):][:-1]`).

Models with `body(idx)` and `head(h)` (minigpt's GPT) get the vocabulary-sized head applied only at the
scored positions, which is most of the work for small models; any other model is called as
`model(idx)` and its logits are gathered at the same positions.
"""

from __future__ import annotations

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


def _fit_row(context: Sequence[int], continuation: Sequence[int], block_size: int, prefix_token: int):
    """(input ids, number of scored positions at the end of the input, their target ids)."""
    if not continuation:
        raise ValueError("cannot score an empty continuation")
    tokens = list(context or [prefix_token]) + list(continuation)  # an empty context conditions on EOT
    tokens = tokens[-(block_size + 1):]
    n = min(len(continuation), len(tokens) - 1)
    return tokens[:-1], n, tokens[-n:]


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[target] as logit[target] - logsumexp(logits): no second vocab-sized tensor."""
    logits = logits.float()
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def _scored_logprobs(model, idx: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target at the masked positions (flattened in row-major order), fp32."""
    if callable(getattr(model, "body", None)) and callable(getattr(model, "head", None)):
        hidden = model.body(idx)[mask]
        step = HEAD_CHUNK.get(idx.device.type, HEAD_CHUNK_DEFAULT)
        return torch.cat([
            _target_logprobs(model.head(hidden[i:i + step]), targets[i:i + step]) for i in range(0, len(hidden), step)
        ])
    out = model(idx)
    return _target_logprobs((out[0] if isinstance(out, (tuple, list)) else out)[mask], targets)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(continuation | context) per row (float64, CPU) and the number of tokens scored (int64).

    batch_size is rows per forward pass; dtype (float32/bfloat16/float16) sets autocast; block_size
    defaults to the model's `block_size`. Results come back in the order of `rows`.
    """
    model = unwrap(model)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    block_size = block_size or model.block_size
    device = torch.device(device) if device is not None else model_device(model)
    fitted = [_fit_row(ctx, cont, block_size, prefix_token) for ctx, cont in rows]
    # Longest first: similar lengths share a batch (little padding) and memory peaks on the first batch.
    order = sorted(range(len(fitted)), key=lambda i: -len(fitted[i][0]))
    sums = torch.zeros(len(fitted), dtype=torch.float64)
    counts = torch.tensor([n for _, n, _ in fitted], dtype=torch.int64)

    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(order), desc=desc, unit="row", disable=None if progress else True, leave=False)  # None: only on a terminal
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            T = len(fitted[chunk[0]][0])
            idx = torch.zeros(len(chunk), T, dtype=torch.long)
            mask = torch.zeros(len(chunk), T, dtype=torch.bool)
            targets = []
            for b, i in enumerate(chunk):
                inp, n, tgt = fitted[i]
                idx[b, : len(inp)] = torch.tensor(inp)
                mask[b, len(inp) - n: len(inp)] = True
                targets.extend(tgt)
            idx, mask = idx.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            targets = torch.tensor(targets, dtype=torch.long, device=device)
            with autocast_context(device, dtype):
                lp = _scored_logprobs(model, idx, mask, targets)
            # Masked positions come out row by row, so each row's scores are one contiguous slice.
            per_row = torch.split(lp.double().cpu(), [fitted[i][1] for i in chunk])
            sums[chunk] = torch.stack([s.sum() for s in per_row])
            bar.update(len(chunk))
        bar.close()
    finally:
        model.train(was_training)
    return sums, counts
