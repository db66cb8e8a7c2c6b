"""The GPU suite: `python -m minigpt.bench --gpu-suite [overrides]` (not yet timed on a GPU).

For each of the four arch presets, `model=d12`, bf16 autocast, `torch.compile`, SDPA (flash kernels
where the shapes allow), fused AdamW, sequence 1024, at the largest micro-batch of `--batch-sizes`
whose step fits (probed eagerly first: an eager step needs at least the compiled step's memory):
tokens/s, MFU, peak memory, graph breaks (besides the loss's, by design) and compiled graphs. Then the
nanoGPT-style reference against our gpt2 row in the same process (alternating rounds, the largest batch
both fit), and HellaSwag examples/s of the batched evaluator with the same d12 model. Overrides go after the suite's
defaults, so the same code runs shrunk on CPU in the tests (tests/test_perf.py).

Throughput does not depend on what the tokens say, so the suite trains on random-token shards and
scores HellaSwag-shaped synthetic examples with a word-level tokenizer: it needs no dataset, no BPE
files and no network (`data=...` overrides still pick a real corpus).
"""

from __future__ import annotations

import gc
import json
import random
import tempfile
import time
from pathlib import Path

import torch

import numpy as np

from minigpt.bench.reference import train_step as reference_step
from minigpt.bench.throughput import build_reference, compare_reference, measure, time_steps
from minigpt.data.shards import write_shard

ARCHS = ("gpt2", "rope", "rope_gqa", "swiglu_gqa_rope")
DEFAULTS = ["model=d12", "train.sequence_length=1024", "train.dtype=bfloat16", "train.compile=true", "optim.fused=true",
            "train.val_loss_every=0", "train.sample_every=0", "train.total_batch_size=null"]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _fits(step, device: torch.device) -> bool:
    """Whether two steps (the second with the optimizer state allocated) run without running out of memory."""
    try:
        time_steps(step, 2, device)
        return True
    except torch.OutOfMemoryError:
        return False


def random_shards(folder: Path, tokens: int = 2**21, vocab: int = 50257) -> list[str]:
    """A train and a val llm.c shard of uniformly random tokens; the overrides that train on them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("val_000000.bin", "train_000001.bin"):
        if not (folder / name).exists():  # written once per suite run
            write_shard(folder / name, rng.integers(0, vocab, tokens, dtype=np.int64))
    return ["data=shards", f"data.path={folder}"]


def _trainer(overrides: list[str], run_dir: str):
    from minigpt.config import compose_typed
    from minigpt.trainer import Trainer
    from minigpt.validate import validate

    cfg = compose_typed([*DEFAULTS, *random_shards(Path(run_dir) / "shards"), *overrides])
    validate(cfg)
    return Trainer(cfg, run_dir).prepare_data()


def largest_batch(overrides: list[str], candidates: list[int], run_dir: str, reference: bool = False) -> int | None:
    """The largest candidate micro-batch whose eager step (ours, or the reference's) fits in memory."""
    for batch in sorted(candidates, reverse=True):
        trainer = _trainer([*overrides, f"train.batch_size={batch}", "train.compile=false"], run_dir)
        if reference:
            model, opt = build_reference(trainer)
            x, y = trainer.batches.next()
            autocast = trainer.autocast
            ok = _fits(lambda: reference_step(model, opt, [(x, y)], autocast), trainer.device)
            del model, opt, x, y
        else:
            ok = _fits(trainer.train_step, trainer.device)
        device = trainer.device
        del trainer
        _free(device)
        if ok:
            return batch
    return None


# The one graph break by design: the chunked loss's loop runs eagerly (minigpt/model/loss.py).
LOSS_BREAK = "linear_cross_entropy"


def _graph_counters() -> tuple[int, int, list[str]]:
    """(graph breaks other than the loss's, compiled graphs (the body's and the chunk loss's), their reasons)."""
    from torch._dynamo.utils import counters

    breaks = {reason: n for reason, n in counters["graph_break"].items() if LOSS_BREAK not in reason}
    return sum(breaks.values()), counters["stats"]["unique_graphs"], sorted(breaks)


def flash_ok(trainer) -> bool | None:
    """Whether SDPA's flash kernel accepts this model's attention shapes (None off CUDA)."""
    if trainer.device.type != "cuda":
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    attn = trainer.model.h[0].attn
    B, T = 1, trainer.seq_len
    q = torch.randn(B, attn.n_head, T, attn.head_dim, device=trainer.device, dtype=torch.bfloat16)
    kv = torch.randn(B, attn.n_kv_head, T, attn.head_dim, device=trainer.device, dtype=torch.bfloat16)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True,
                                                             enable_gqa=attn.n_kv_head != attn.n_head)
        return True
    except RuntimeError:
        return False


def bench_arch(arch: str, overrides: list[str], args, run_dir: str) -> tuple[dict, object]:
    """One row of the suite; also returns the compiled trainer (the reference comparison reuses gpt2's)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # fresh compile caches per arch
    counters.clear()
    base = [f"arch={arch}", *overrides]
    batch = largest_batch(base, args.batch_sizes, run_dir)
    if batch is None:
        return {"arch": arch, "error": f"no micro-batch of {args.batch_sizes} fits"}, None
    trainer = _trainer([*base, f"train.batch_size={batch}"], run_dir)
    t0 = time.perf_counter()
    r = measure(trainer, args.steps, args.warmup)  # warm-up steps include the compilation
    breaks, graphs, reasons = _graph_counters()
    from minigpt.memory import estimate_memory
    from minigpt.perf import peak_memory_gb

    row = {"arch": arch, "params_M": trainer.model.num_params() / 1e6, "batch_size": batch,
           "seq_len": trainer.seq_len, "tokens_per_s": r["tokens_per_s_per_device"], "mfu": r["mfu"],
           "ms_per_step": r["ms_per_step"], "peak_mem_gb": peak_memory_gb(trainer.device),
           "estimate_gb": estimate_memory(trainer.cfg).peak / 2**30,
           "graph_breaks": breaks, "graphs": graphs, "break_reasons": reasons, "flash": flash_ok(trainer),
           "wall_s": time.perf_counter() - t0}
    return row, trainer


WORDS = ("the a man woman dog ball water he she is are runs jumps holds then camera shows people "
         "slowly quickly into onto over under while after before kitchen field street table door").split()


def word_ids(text: str) -> list[int]:
    """A word-level tokenizer for the synthetic examples (one id per word, as GPT-2 BPE gives common words)."""
    return [1000 + WORDS.index(w) for w in text.split()]


def synthetic_hellaswag(n: int, seed: int = 0) -> list[dict]:
    """HellaSwag-shaped examples (a 20-40 word context, four 8-22 word endings) for throughput only."""
    words, rng = WORDS, random.Random(seed)

    def text(k):
        return " ".join(rng.choice(words) for _ in range(k))

    return [{"ctx": text(rng.randint(20, 40)), "endings": [text(rng.randint(8, 22)) for _ in range(4)],
             "label": rng.randrange(4), "activity_label": "", "ctx_a": None, "ctx_b": None, "ind": i} for i in range(n)]


def hellaswag_rate(trainer, examples: list[dict], batch_size: int, rounds: int = 2) -> float:
    """Examples/s of the batched HellaSwag evaluator (llmc protocol) with the trainer's model, best of rounds."""
    from minigpt.eval.hellaswag import score_hellaswag

    model, dtype = trainer.model.eval(), trainer.cfg.train.dtype.value
    score = lambda ex: score_hellaswag(model, ex, "llmc", batch_size=batch_size, device=trainer.device,  # noqa: E731
                                       dtype=dtype, encode=word_ids)
    score(examples[: min(8, len(examples))])  # warm-up (tokenizer, kernels)
    times = []
    for _ in range(rounds):
        times.append(time_steps(lambda: score(examples), 1, trainer.device))
    trainer.model.train()
    return len(examples) / min(times)


def _fmt(row: dict) -> str:
    if "error" in row:
        return f"| {row['arch']} | {row['error']} |"
    mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
    flash = {True: "yes", False: "no", None: "n/a"}[row["flash"]]
    return (f"| {row['arch']} | {row['batch_size']} x {row['seq_len']} | {row['tokens_per_s']:,.0f} | {mfu} | "
            f"{row['peak_mem_gb']:.1f} | {row['estimate_gb']:.1f} | {row['graph_breaks']} | {row['graphs']} | {flash} |")


def run_suite(args, overrides: list[str]) -> dict:
    """Rows are printed (and the JSON rewritten) as each is measured, so a run cut short keeps what it got."""
    from minigpt.perf import device_name

    results: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": None, "rows": []}

    def emit(row: dict, device: torch.device | None) -> None:
        if not results["rows"]:  # the first row brings the header
            results["device"] = device_name(device) if device is not None else "?"
            print(f"suite | {results['device']} | torch {results['torch']} (CUDA {results['cuda']}) | "
                  f"{args.steps} timed steps after {args.warmup} warm-up", flush=True)
            print("| arch | micro-batch | tokens/s | MFU | peak GiB | est. GiB (eager) | graph breaks | graphs | flash |")
            print("|---|---|---|---|---|---|---|---|---|")
        results["rows"].append(row)
        print(_fmt(row), flush=True)
        for reason in row.get("break_reasons", []):
            print(f"  graph break in {row['arch']}: {reason}", flush=True)
        save()

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as run_dir:
        gpt2_trainer = None
        for arch in args.archs:
            row, trainer = bench_arch(arch, overrides, args, run_dir)
            emit(row, trainer.device if trainer is not None else None)
            if trainer is None:
                continue
            device = trainer.device
            if arch == "gpt2":
                gpt2_trainer = trainer  # kept for the reference and HellaSwag
            del trainer
            _free(device)
        if gpt2_trainer is not None:
            results.update(_reference(gpt2_trainer, overrides, args, run_dir))
            save()
            n = args.hellaswag_examples
            results["hellaswag_examples_per_s"] = hellaswag_rate(gpt2_trainer, synthetic_hellaswag(n),
                                                                 args.hellaswag_batch_size)
            print(f"hellaswag | gpt2 {gpt2_trainer.cfg.model.name} {gpt2_trainer.cfg.train.dtype.value}, batched "
                  f"evaluator (llmc), {n} HellaSwag-shaped examples, {args.hellaswag_batch_size} rows per forward | "
                  f"{results['hellaswag_examples_per_s']:,.0f} examples/s", flush=True)
            save()
    return results


def _reference(trainer, overrides: list[str], args, run_dir: str) -> dict:
    """Ours vs the nanoGPT-style reference at the largest batch both fit (gpt2's row when the reference fits it)."""
    batch = trainer.cfg.train.batch_size
    ref_batch = largest_batch(["arch=gpt2", *overrides], [b for b in args.batch_sizes if b <= batch], run_dir,
                              reference=True)
    if ref_batch is None:
        print("reference | no candidate micro-batch fits the reference's step")
        return {}
    if ref_batch != batch:  # ours again, at the reference's batch
        torch._dynamo.reset()
        trainer = _trainer(["arch=gpt2", *overrides, f"train.batch_size={ref_batch}"], run_dir)
    c = compare_reference(trainer, args.steps, args.warmup, args.rounds)
    print(f"reference | gpt2 {trainer.cfg.model.name}, micro-batch {ref_batch} | ours {c['ours_tokens_per_s']:,.0f} "
          f"tok/s | nanoGPT-style {c['reference_tokens_per_s']:,.0f} tok/s | ratio {c['ratio']:.3f}x "
          f"(median of {args.rounds} rounds)", flush=True)
    return {"reference": {"batch_size": ref_batch, **c}}
