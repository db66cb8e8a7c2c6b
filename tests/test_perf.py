"""Performance paths run correctly: torch.compile keeps eval and sampling working, the bench CLI's figures agree."""

import re

import pytest

from minigpt.trainer import Trainer
from tests.conftest import ROOT, TINY, read_metrics, run_cli, tiny_config

SMALL = ["model.n_layer=1", "train.batch_size=2", "train.sequence_length=32", "train.val_max_steps=2",
         "optim.warmup_iters=2", "train.num_iterations=2", "train.val_loss_every=1", "train.sample_every=2"]


def test_compiled_training_then_validation_and_sampling(tmp_path):
    """Training runs compiled; validation (eval mode) and generation (varying lengths, raw model) still work."""
    eager = Trainer(tiny_config(*SMALL), tmp_path / "eager").fit()
    compiled = Trainer(tiny_config(*SMALL, "train.compile=true"), tmp_path / "compiled").fit()
    assert compiled["train/loss"] == pytest.approx(eager["train/loss"], abs=1e-4)
    assert compiled["val/loss"] == pytest.approx(eager["val/loss"], abs=1e-4)
    assert isinstance(compiled["sample/text"], str) and compiled["sample/text"]


def number(pattern: str, line: str) -> float:
    return float(re.search(pattern, line).group(1).replace(",", ""))


def test_bench_cli_prints_throughput_and_reference_ratio():
    """The printed figures agree with each other: ms/step and tokens/s with the micro-batch, MFU with the
    tokens/s, the FLOPs per token counted here by hand and the given peak, the ratio with the two tokens/s."""
    out = run_cli(["minigpt.bench", "--reference", "--steps", "1", "--warmup", "1", "--rounds", "1", *TINY,
                   "train.peak_flops=1e9"], cwd=ROOT)  # a tiny peak: the MFU prints with many digits
    assert out.returncode == 0, out.stderr[-2000:]
    bench, ref = [line for line in out.stdout.splitlines() if line.startswith(("bench |", "reference |"))]
    tok_s = number(r"\| ([\d,]+) tok/s \|", bench)
    assert number(r"\| ([\d,]+) tok/s/device \|", bench) == tok_s  # one process
    B, T, L, d, V = 4, 64, 2, 64, 50304  # TINY; the vocabulary padded to a multiple of 128
    assert number(r"\| ([\d.]+) ms/step", bench) == pytest.approx(1000 * B * T / tok_s, rel=0.01, abs=0.06)
    params = V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d  # embeddings, blocks (weights, biases, norms), ln_f
    flops_per_token = 6 * (params - T * d) + 12 * L * d * T  # 6N without the position table, plus attention
    assert number(r"MFU ([\d.]+)%", bench) == pytest.approx(100 * tok_s * flops_per_token / 1e9,
                                                             rel=0.5 / tok_s + 1e-4)  # tokens/s printed whole
    ours, reference = number(r"ours ([\d,]+) tok/s", ref), number(r"nanoGPT-style ([\d,]+) tok/s", ref)
    assert ours > 0 and reference > 0
    rounding = 0.0005 + ours / reference * (0.5 / ours + 0.5 / reference)  # 3 decimals; whole tokens/s
    assert number(r"ratio ([\d.]+)x", ref) == pytest.approx(ours / reference, abs=rounding)

    bad = run_cli(["minigpt.bench", "--reference", *TINY, "arch=rope"], cwd=ROOT)
    assert bad.returncode == 2 and "arch=gpt2" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_gpu_suite_runs_shrunk_on_cpu_and_every_arch_compiles_without_graph_breaks(tmp_path):
    """The GPU suite's code path end to end at a tiny size on CPU: four arch presets compiled in bf16 autocast
    (the suite's defaults), the largest candidate micro-batch, the reference ratio and HellaSwag examples/s."""
    out = run_cli(["minigpt.bench", "--gpu-suite", "--steps", "1", "--warmup", "1", "--rounds", "1",
                   "--batch-sizes", "2,4", "--hellaswag-examples", "8", "--hellaswag-batch-size", "16",
                   "--json", str(tmp_path / "suite.json"), "train.device=cpu", "model.n_layer=1", "model.n_embd=32",
                   "model.n_head=4", "train.sequence_length=32"], cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads((tmp_path / "suite.json").read_text())
    rows = {r["arch"]: r for r in result["rows"]}
    assert list(rows) == ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"]
    for arch, r in rows.items():
        assert r["batch_size"] == 4 and r["seq_len"] == 32  # nothing runs out of memory on CPU: the largest
        # no break but the chunked loss's deliberate one; graphs: the body's and one chunk loss's (4 x 32 tokens:
        # one chunk), however many chunks a larger micro-batch has
        assert r["graph_breaks"] == 0 and r["graphs"] == 2, (arch, r["break_reasons"])
        assert r["tokens_per_s"] > 0 and r["peak_mem_gb"] > 0 and r["estimate_gb"] > 0
        assert r["mfu"] is None  # no peak FLOP/s for a CPU
        assert f"| {arch} | 4 x 32 |" in out.stdout
    assert result["reference"]["batch_size"] == 4 and result["reference"]["ratio"] > 0
    assert result["hellaswag_examples_per_s"] > 0 and "examples/s" in out.stdout


def test_console_line_shows_progress_and_an_eta_from_the_recent_step_times(tmp_path, caplog):
    """A run whose steps take at least 0.25 s each (a sleep inside the step): at step N of M the line says
    `step N/M (x%)` and an ETA of (M - N) steps at the measured step time (train/ms_per_step)."""
    import logging
    import time
    from datetime import timedelta

    trainer = Trainer(tiny_config("train.num_iterations=8", "train.log_every=1", "train.val_loss_every=0",
                                  "train.sample_every=0", "train.checkpoint_every=0", "logger=none"), tmp_path / "run")
    step = trainer.train_step

    def slow_step():  # the step time is known: at least 0.25 s
        time.sleep(0.25)
        return step()

    trainer.train_step = slow_step
    with caplog.at_level(logging.INFO, logger="minigpt"):
        trainer.fit()
    lines = [r.getMessage() for r in caplog.records if re.match(r"step +\d+/8 ", r.getMessage())]
    assert len(lines) == 8
    ms = {r["step"]: r["train/ms_per_step"] for r in read_metrics(tmp_path / "run") if "train/ms_per_step" in r}
    for line in lines:
        n, pct, h, m, s = re.match(r"step +(\d+)/8 \((\d+)%\).* \| ETA (\d+):(\d\d):(\d\d)$", line).groups()
        n, eta = int(n), timedelta(hours=int(h), minutes=int(m), seconds=int(s)).total_seconds()
        assert int(pct) == round(100 * n / 8)
        assert eta >= round(0.25 * (8 - n)) - 0.5  # never less than the sleeps still to come
        # the mean of the recent step times, so between the fastest and the slowest measured step
        low, high = min(ms[k] for k in range(1, n + 1)), max(ms[k] for k in range(1, n + 1))
        assert round(low / 1000 * (8 - n)) - 0.5 <= eta <= round(high / 1000 * (8 - n)) + 0.5, (line, ms)
