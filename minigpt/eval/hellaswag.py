"""HellaSwag scoring under two protocols, batched, on one device or split across data-parallel ranks.

`llmc` (llm.c / build-nanogpt): context = raw `ctx`, each ending prefixed with a space; acc picks the
lowest summed loss over the ending's tokens, acc_norm the lowest mean loss per ending token.

`harness` (lm-evaluation-harness `hellaswag`, 0-shot): query = preprocess(activity_label + ": " + ctx_a
+ " " + ctx_b.capitalize()), choices = preprocess(ending); each choice is scored as the continuation
" " + choice (the harness's target delimiter), tokenized the harness way (encode query + continuation
as one string and split at the query's token count, after moving the query's trailing spaces onto the
continuation); acc picks the highest summed log-likelihood, acc_norm the highest log-likelihood
divided by len(choice) in characters, the delimiter not counted (lm_eval/api/task.py:
`completion_len = [len(i) for i in choices]`, choices being doc_to_choice's strings).

`score_hellaswag` returns per-example, per-ending scores (for comparisons such as lm-eval parity);
`evaluate_hellaswag` reduces them to accuracies, gathering every rank's share of the examples when
torch.distributed is initialized (so the per-example records cover all examples).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from minigpt.eval.scoring import model_device, score_continuations, unwrap

# ----------------------------------------------------------------------------- rendering


def preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag text clean-up (lm_eval/tasks/hellaswag/utils.py), verbatim."""
    text = text.strip()
    # Brackets are artifacts of the WikiHow part of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def harness_query(ex: dict) -> str:
    """activity_label: ctx_a Ctx_b, preprocessed; `ctx` where ctx_a/ctx_b are missing (preprocessed files)."""
    if ex.get("ctx_a") is not None and ex.get("ctx_b") is not None:
        ctx = ex["ctx_a"] + " " + ex["ctx_b"].capitalize()
    else:
        ctx = ex["ctx"]
    return preprocess(ex["activity_label"] + ": " + ctx)


def harness_choices(ex: dict) -> list[str]:
    return [preprocess(e) for e in ex["endings"]]


def encode_pair_harness(encode: Callable[[str], list[int]], context: str, continuation: str):
    """lm-eval's `_encode_pair` for causal models: trailing context spaces move to the continuation, the
    whole string is encoded once and split at the context's token count."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx):]


@dataclass
class Rendered:
    """Token rows for N examples x 4 endings, plus what each protocol's acc_norm divides by."""

    rows: list[tuple[list[int], list[int]]]  # 4 * N (context, continuation) rows, example-major
    char_lens: torch.Tensor  # (N, 4) characters of each choice, without the delimiter (harness acc_norm)
    labels: torch.Tensor  # (N,)


def render_llmc(examples: Sequence[dict], encode: Callable[[str], list[int]]) -> Rendered:
    rows = []
    for ex in examples:
        ctx = encode(ex["ctx"])
        rows.extend((ctx, encode(" " + e)) for e in ex["endings"])
    lens = [[len(e) for e in ex["endings"]] for ex in examples]  # unused by llmc (its acc_norm divides by tokens)
    return Rendered(rows, torch.tensor(lens, dtype=torch.float64), torch.tensor([ex["label"] for ex in examples]))


def render_harness(examples: Sequence[dict], encode: Callable[[str], list[int]]) -> Rendered:
    rows, lens = [], []
    for ex in examples:
        query, choices = harness_query(ex), harness_choices(ex)
        rows.extend(encode_pair_harness(encode, query, " " + c) for c in choices)
        lens.append([len(c) for c in choices])
    return Rendered(rows, torch.tensor(lens, dtype=torch.float64), torch.tensor([ex["label"] for ex in examples]))


@dataclass
class Protocol:
    render: Callable[[Sequence[dict], Callable], Rendered]
    # (loglik, n_tokens, char_lens), each (N, 4) -> score to maximise for acc_norm
    norm_score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


PROTOCOLS: dict[str, Protocol] = {
    "llmc": Protocol(render_llmc, lambda ll, n, chars: ll / n),  # lowest mean token loss
    "harness": Protocol(render_harness, lambda ll, n, chars: ll / chars),  # log-likelihood per character
}

# ----------------------------------------------------------------------------- scoring


@dataclass
class HellaSwagScores:
    """Per-example results of one protocol; loglik[i, k] = sum log p(ending k | context i)."""

    protocol: str
    loglik: torch.Tensor  # (N, 4) float64
    n_tokens: torch.Tensor  # (N, 4) ending tokens scored
    norm: torch.Tensor  # (N, 4) the acc_norm score (higher is better)
    labels: torch.Tensor  # (N,)

    @property
    def pred(self) -> torch.Tensor:  # argmax takes the first of tied choices, like np.argmax
        return self.loglik.argmax(dim=1)

    @property
    def pred_norm(self) -> torch.Tensor:
        return self.norm.argmax(dim=1)


def get_protocol(name: str) -> Protocol:
    from minigpt.errors import ConfigError

    if name not in PROTOCOLS:
        raise ConfigError(f"unknown HellaSwag protocol {name!r}: choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def score_hellaswag(
    model: torch.nn.Module,
    examples: Sequence[dict],
    protocol: str = "harness",
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dtype: str = "float32",
    encode: Callable[[str], list[int]] | None = None,
    progress: bool = False,
) -> HellaSwagScores:
    """Score every ending of every example (no distributed split); `encode` defaults to GPT-2 BPE."""
    proto = get_protocol(protocol)
    if encode is None:
        from minigpt.data.tokenizer import get_gpt2_encoding

        encode = get_gpt2_encoding().encode_ordinary
    r = proto.render(examples, encode)
    ll, n = score_continuations(
        model, r.rows, batch_size=batch_size, device=device, dtype=dtype, progress=progress, desc=f"hellaswag {protocol}"
    )
    ll, n = ll.view(-1, 4), n.view(-1, 4)
    return HellaSwagScores(protocol, ll, n, proto.norm_score(ll, n.double(), r.char_lens), r.labels)


def _shard(examples: Sequence[dict]) -> tuple[Sequence[dict], bool]:
    """This rank's share of the examples (strided), and whether counts must be all-reduced."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return examples[dist.get_rank():: dist.get_world_size()], True
    return examples, False


def _gather_scores(scores: HellaSwagScores | None, protocol: str, n_total: int, labels: torch.Tensor,
                   device: torch.device) -> HellaSwagScores:
    """Every rank's strided share (examples r, r+W, ...) put back in example order, on every rank."""
    import torch.distributed as dist

    world = dist.get_world_size()
    per_rank = -(-n_total // world)  # ceil: all_gather needs equal shapes, so shares are padded
    mine = torch.zeros(per_rank, 3, 4, dtype=torch.float64)
    if scores is not None:
        n = scores.loglik.shape[0]
        mine[:n] = torch.stack([scores.loglik, scores.n_tokens.double(), scores.norm], dim=1)
    # the device the process group uses: NCCL needs CUDA tensors, gloo takes CPU ones
    parts = [torch.empty_like(mine, device=device) for _ in range(world)]
    dist.all_gather(parts, mine.to(device))
    full = torch.empty(n_total, 3, 4, dtype=torch.float64)
    for r, part in enumerate(parts):
        n_r = len(range(r, n_total, world))
        full[r::world] = part.cpu()[:n_r]
    return HellaSwagScores(protocol, full[:, 0], full[:, 1].long(), full[:, 2], labels)


def evaluate_hellaswag(
    model: torch.nn.Module,
    examples: Sequence[dict],
    protocol: str = "harness",
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dtype: str = "float32",
    encode: Callable[[str], list[int]] | None = None,
    progress: bool = False,
) -> dict:
    """{"acc", "acc_norm", "n", "seconds", "examples_per_s", "scores"} over all examples (all ranks together).

    "scores" is the HellaSwagScores of every example in order (gathered from all ranks), for the
    per-example records (minigpt/eval/records.py).
    """
    import torch.distributed as dist

    t0 = time.perf_counter()
    mine, distributed = _shard(examples)
    if distributed:
        progress = progress and dist.get_rank() == 0
    scores = score_hellaswag(
        model, mine, protocol, batch_size=batch_size, device=device, dtype=dtype, encode=encode, progress=progress
    ) if len(mine) else None
    if distributed:
        dev = torch.device(device) if device is not None else model_device(unwrap(model))
        labels = torch.tensor([ex["label"] for ex in examples])
        scores = _gather_scores(scores, protocol, len(examples), labels, dev)
    n = len(examples)
    correct = int((scores.pred == scores.labels).sum()) if n else 0
    correct_norm = int((scores.pred_norm == scores.labels).sum()) if n else 0
    seconds = time.perf_counter() - t0
    return {
        "acc": correct / max(n, 1),
        "acc_norm": correct_norm / max(n, 1),
        "n": n,
        "seconds": seconds,
        "examples_per_s": n / seconds if seconds > 0 else float("inf"),
        "scores": scores,
    }


def hellaswag_metrics(results: dict[str, dict]) -> dict:
    """{protocol: evaluate_hellaswag(...)} -> flat metric keys hellaswag/<protocol>/{acc,acc_norm}."""
    out = {}
    for name, r in results.items():
        out[f"hellaswag/{name}/acc"] = r["acc"]
        out[f"hellaswag/{name}/acc_norm"] = r["acc_norm"]
    return out
