"""The LM head and loss, side by side: which rows to multiply, and the lean loss against the plain one.

    python -m minigpt.bench.head [--device cpu|cuda] [--dtype float32|bfloat16] [--tokens 4096] [--n-embd 768]

Times the head and loss on the same random hidden states, in interleaved rounds (best of each), for:
the plain loss (whole logits, fp32 copy) and the lean chunked loss (minigpt/model/loss.py), forward +
backward, each multiplying the real vocabulary's rows or all padded rows (then slicing / masking the
padding); and evaluation's use of the head (forward only: logits, log-softmax, the targets' log-probs,
as minigpt/eval/scoring.py does) both ways. On CUDA it also prints each variant's peak memory.
`PADDED_HEAD_DEVICES` in minigpt/model/loss.py records the choice.
"""

from __future__ import annotations

import argparse
import time

import torch

from minigpt.model.loss import head_weight, linear_cross_entropy, logits_from, plain_cross_entropy
from minigpt.runtime import autocast_context


def variants(vocab: int):
    def loss(fn, padded):
        return lambda x, w, y: fn(x, head_weight(w, vocab, padded), y, vocab)

    def scored(padded):
        @torch.no_grad()
        def run(x, w, y):
            logprobs = torch.log_softmax(logits_from(x, head_weight(w, vocab, padded), vocab).float(), dim=-1)
            return logprobs.gather(-1, y[:, None])
        return run

    return {
        "plain loss, real rows": loss(plain_cross_entropy, False),
        "plain loss, padded rows": loss(plain_cross_entropy, True),
        "lean loss, real rows": loss(linear_cross_entropy, False),
        "lean loss, padded rows": loss(linear_cross_entropy, True),
        "eval log-probs, real rows": scored(False),
        "eval log-probs, padded rows": scored(True),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    ap.add_argument("--tokens", type=int, default=None, help="rows (B*T); default 16384 on CUDA, 1024 on CPU")
    ap.add_argument("--n-embd", type=int, default=None, help="default 768 on CUDA, 128 on CPU")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--padded-vocab", type=int, default=50304)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    tokens = args.tokens or (16384 if cuda else 1024)
    n_embd = args.n_embd or (768 if cuda else 128)

    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, n_embd, device=device, generator=g, requires_grad=True)
    w = (0.02 * torch.randn(args.padded_vocab, n_embd, device=device, generator=g)).requires_grad_()
    y = torch.randint(0, args.vocab, (tokens,), device=device, generator=g)
    fns = variants(args.vocab)

    def run(fn):
        x.grad = w.grad = None
        with autocast_context(device, args.dtype):
            out = fn(x, w, y)
        if out.requires_grad:
            out.backward()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for fn in fns.values():  # warm-up, and the peak memory of each variant
        run(fn)
    best = {name: float("inf") for name in fns}
    peaks = {}
    for _ in range(args.rounds):  # interleaved: machine load hits every variant alike
        for name, fn in fns.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t0 = time.perf_counter()
            run(fn)
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
            if cuda:
                peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"head | {device} {torch.cuda.get_device_name(device) if cuda else ''} | {args.dtype} | {tokens} tokens x "
          f"{n_embd} -> {args.vocab} (padded {args.padded_vocab}) | forward + backward, best of {args.rounds}")
    for name, seconds in best.items():
        mem = f" | peak {peaks[name]:.2f} GiB" if cuda else ""
        print(f"{name:26s} {1000 * seconds:9.1f} ms{mem}")
    return {"ms": {k: 1000 * v for k, v in best.items()}, "peak_gb": peaks}


if __name__ == "__main__":
    main()
