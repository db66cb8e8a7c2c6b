"""HellaSwag throughput: the batched evaluator against one example per forward (build-nanogpt), side by side.

    python -m minigpt.bench.hellaswag [--examples 200] [--batch-size 256] [--n-layer 4 --n-embd 128] [--rounds 3]

Both score the same examples of minigpt's cached HellaSwag file (or --data) with the same random tiny
GPT on CPU under the `llmc` protocol, from example dicts to predictions (tokenization included), and
must agree on every prediction; the script prints examples/second for each and the ratio (wall-clock
and CPU time, best of interleaved rounds).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from minigpt.config import ArchConfig, ModelConfig
from minigpt.data.tokenizer import get_gpt2_encoding
from minigpt.eval.hellaswag import score_hellaswag
from minigpt.eval.hellaswag_data import data_file, read_jsonl
from minigpt.model import GPT

@torch.no_grad()
def one_example_per_forward(model: GPT, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """build-nanogpt's hellaswag loop: render 4 padded rows, full logits, cross-entropy over every position."""
    enc = get_gpt2_encoding()
    preds, preds_norm = [], []
    for ex in examples:
        ctx = enc.encode_ordinary(ex["ctx"])
        rows = [ctx + enc.encode_ordinary(" " + e) for e in ex["endings"]]
        max_len = max(len(r) for r in rows)
        tokens = torch.zeros(4, max_len, dtype=torch.long)
        mask = torch.zeros(4, max_len)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r)
            mask[i, len(ctx): len(r)] = 1
        logits, _ = model(tokens)
        losses = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1), reduction="none"
        ).view(4, -1) * mask[:, 1:]
        sum_loss = losses.sum(dim=1)
        preds.append(sum_loss.argmin().item())
        preds_norm.append((sum_loss / mask[:, 1:].sum(dim=1)).argmin().item())
    return torch.tensor(preds), torch.tensor(preds_norm)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a HellaSwag .jsonl (default: minigpt's cached hellaswag_val.jsonl)")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256, help="rows per forward for the batched evaluator")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best of each side counts")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256, help="long enough that no example is truncated")
    args = ap.parse_args(argv)

    examples = read_jsonl(data_file(args.data, "--data"))[: args.examples]
    torch.manual_seed(0)
    model_cfg = ModelConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, block_size=args.block_size)
    model = GPT(ArchConfig(), model_cfg).eval()
    get_gpt2_encoding()  # build the tokenizer outside the timings
    one_example_per_forward(model, examples[:4])  # warm up both paths
    score_hellaswag(model, examples[:4], "llmc")

    # Interleaved rounds, best of each: a busy machine slows both sides alike instead of one of them.
    walls, cpus = {"base": [], "batched": []}, {"base": [], "batched": []}
    for _ in range(args.rounds):
        for name, fn in (("base", lambda: one_example_per_forward(model, examples)),
                         ("batched", lambda: score_hellaswag(model, examples, "llmc", batch_size=args.batch_size))):
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
            if name == "base":
                base_pred, base_norm = result
            else:
                scores = result
        if not (torch.equal(scores.pred, base_pred) and torch.equal(scores.pred_norm, base_norm)):
            raise SystemExit("error: the batched evaluator and the per-example loop disagree on some predictions")
    t_base, t_batched = min(walls["base"]), min(walls["batched"])
    n = len(examples)
    out = {
        "baseline_ex_per_s": n / t_base,
        "batched_ex_per_s": n / t_batched,
        "ratio": t_base / t_batched,
        "cpu_ratio": min(cpus["base"]) / min(cpus["batched"]),
    }
    print(
        f"model: {args.n_layer} layers, width {args.n_embd}, {model.num_params() / 1e6:.1f}M params, CPU, "
        f"{torch.get_num_threads()} threads | {n} examples, llmc protocol, identical predictions | best of {args.rounds}"
    )
    print(f"one example per forward (build-nanogpt): {out['baseline_ex_per_s']:8.1f} examples/s ({t_base:.1f} s)")
    print(f"batched ({args.batch_size} rows per forward):      {out['batched_ex_per_s']:8.1f} examples/s ({t_batched:.1f} s)")
    print(f"speed-up: {out['ratio']:.2f}x wall-clock ({out['cpu_ratio']:.2f}x in CPU time)")
    return out


if __name__ == "__main__":
    from minigpt.cli import cli_errors

    sys.exit(cli_errors(main)())
