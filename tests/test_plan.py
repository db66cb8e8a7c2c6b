"""The forecast (`python -m minigpt.plan`): arithmetic against hand-computed GPT-2 124M numbers, memory from the
one memory model (measured in tests/test_memory.py), refusals with their fixes, the sbatch script, and the
calibration loop (a finished run's throughput feeds the next run's forecast, and compare shows forecast vs measured)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from minigpt.compare import main as compare_main
from minigpt.config import to_config
from minigpt.memory import estimate_memory, zero1_largest_shard
from minigpt.model import GPT
from minigpt.plan.__main__ import main as plan_main
from minigpt.plan.compose import compose_command
from minigpt.plan.forecast import DEFAULT_MFU, forecast_job
from minigpt.plan.sbatch import render_sbatch
from tests.conftest import ROOT, TINY, compose_config, run_cli, tiny_config

GPT2 = ["model=d12", "arch=gpt2", "train.batch_size=16", "train.total_batch_size=524288",
        "train.num_iterations=10000", "train.dtype=bfloat16"]


def test_gpt2_124m_numbers_match_a_hand_count():
    f = forecast_job(to_config(compose_config([*GPT2, "cluster=grace_a100"])))
    V, d, L, T = 50304, 768, 12, 1024  # vocabulary padded to a multiple of 128
    layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    params = V * d + T * d + L * layer + 2 * d
    assert f.params == params == 124_475_904  # GPT-2 124M (llm.c's count with the padded vocabulary)
    assert f.params_non_embedding == params - V * d - T * d == 85_056_000
    assert f.flops_per_token == 6 * (params - T * d) + 12 * L * d * T == 855_383_040  # 6N (head incl.) + attention
    assert f.tokens == 524_288 * 10_000 and f.flops == f.tokens * f.flops_per_token
    m = f.memory
    assert m.weights == m.grads == 4 * params and m.optimizer == 2 * 4 * params  # fp32 AdamW: exp_avg, exp_avg_sq
    # Throughput and cost: the default MFU times the A100's bf16 peak; Grace bills whole nodes (48 SU per hour).
    assert f.tokens_per_s == pytest.approx(DEFAULT_MFU * 312e12 / 855_383_040)
    assert f.wall_s >= f.tokens / f.tokens_per_s and f.chunks == 1
    assert f.cost == pytest.approx(f.wall_s / 3600 * 48) and f.gpu_hours == pytest.approx(f.wall_s / 3600)


def test_zero1_shards_the_optimizer_state_as_zero_redundancy_optimizer_does():
    cfg = to_config(compose_config([*GPT2, "train.zero_stage=1", "cluster=grace_a100", "cluster.gpus_per_node=2",
                                    "cluster.nodes=4"]))
    f = forecast_job(cfg)
    assert f.ranks == 8 and f.gpus == 8
    # Largest parameter first, each to the emptiest rank: the tied embedding (50304 x 768) is a shard by itself,
    # larger than the other 85.8M parameters spread over the remaining 7 ranks.
    assert f.memory.optimizer == 2 * 4 * 50304 * 768
    assert zero1_largest_shard([[10, 6, 5, 4], [1, 1]], 2) == 14  # ranks: 10+4 | 6+5, then both 1s to the smaller
    assert f.memory.ddp_buckets == 4 * f.params  # DDP keeps a second copy of the gradients in its buckets
    assert f.cost == pytest.approx(f.wall_s / 3600 * 4 * 48)  # 4 whole nodes


def test_muon_keeps_one_state_for_the_block_matrices_and_adamw_two_for_the_rest():
    f = forecast_job(to_config(compose_config([*GPT2, "arch=modern", "optim=muon", "cluster=grace_a100"])))
    cfg = to_config(compose_config([*GPT2, "arch=modern"]))
    with torch.device("meta"):  # shapes only
        model = GPT(cfg.arch, cfg.model)
    matrices = sum(p.numel() for p in model.h.parameters() if p.dim() == 2)
    assert f.memory.optimizer == 4 * (1 * matrices + 2 * (f.params - matrices))  # momentum | exp_avg, exp_avg_sq
    adamw = forecast_job(to_config(compose_config([*GPT2, "arch=modern", "cluster=grace_a100"])))
    assert adamw.memory.optimizer == 2 * 4 * adamw.params == f.memory.optimizer + 4 * matrices


@pytest.mark.parametrize("overrides", [
    [],  # logits and cross-entropy dominate (vocabulary 50257, width 64)
    ["arch=swiglu_gqa_rope", "train.dtype=bfloat16", "train.total_batch_size=512"],  # autocast, GQA, 2 micro-steps
    ["model.n_embd=256", "model.n_layer=4", "model.block_size=128", "train.batch_size=4"],  # activations ~15%
    ["model.n_embd=512", "model.n_layer=4", "model.n_head=8", "model.block_size=16", "train.batch_size=1"],  # gradients
    ["arch=modern", "optim=muon"],  # softcap (tanh keeps B*T*V), untied head, QK- and embedding norm, Muon's state
    ["arch=modern", "optim=muon", "train.dtype=bfloat16", "train.total_batch_size=512",
     "model.n_embd=256", "model.n_layer=4", "model.block_size=128", "train.batch_size=2"],  # the same, autocast
], ids=["logits", "autocast_gqa_accum", "activations", "end_of_backward", "modern_muon", "modern_muon_autocast"])
def test_the_forecast_uses_the_one_memory_model(overrides):
    """The forecast's memory is the start-up line's (minigpt/memory.py, checked against measured peaks in
    tests/test_memory.py), in every regime: the same numbers, not a second count."""
    cfg = tiny_config("logger=none", *overrides)
    assert forecast_job(cfg).memory == estimate_memory(cfg)


def test_a_config_that_cannot_fit_an_a100_40gb_is_refused_with_the_micro_batch_that_fits(capsys):
    args = [*GPT2, "train.batch_size=128", "cluster=grace_a100"]
    assert plan_main(args) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "out of memory" in errors[0] and "a100_40gb" in errors[0]
    assert "use train.batch_size=64 " in errors[0]
    assert " NO " in out  # the table marks the job
    too_big = forecast_job(to_config(compose_config(args)))
    suggested = forecast_job(to_config(compose_config([*args, "train.batch_size=64"])))
    double = forecast_job(to_config(compose_config([*args, "cluster/gpu=a100_80gb"])))
    assert too_big.fits is False and suggested.fits is True and double.fits is True
    assert too_big.memory.peak > suggested.memory.peak and too_big.max_batch_size == suggested.max_batch_size == 64


def test_a_model_no_gpu_can_hold_is_refused_in_one_line_without_building_it():
    """model.n_layer=100000 used to walk the whole model once per batch-size candidate (killed after 654 s):
    it is now counted from a one- and a two-layer model and refused (the timeout only guards against a hang)."""
    res = run_cli(["minigpt.plan", "model.n_layer=100000"], cwd=ROOT, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "the model has 19.8B parameters" in line and "more than any GPU minigpt knows holds (the largest: h200" in line
    from minigpt.memory import params_without_building

    for overrides in ([], ["arch=modern", "model.n_layer=5"], ["arch=swiglu_gqa_rope", "model.n_layer=3"]):
        cfg = tiny_config(*overrides)
        with torch.device("meta"):
            built = GPT(cfg.arch, cfg.model).num_params()
        assert params_without_building(cfg.arch, cfg.model) == built


def test_time_limit_gpu_count_and_partition_limit_are_checked_with_their_fixes():
    def problems(*extra: str) -> list[str]:
        return forecast_job(to_config(compose_config([*GPT2, "cluster=grace_a100", *extra]))).problems

    assert problems() == []
    short = forecast_job(to_config(compose_config([*GPT2, "cluster=grace_a100", "cluster.time_min=60"])))
    needed = math.ceil(short.run_s / (60 * 60 - 120 - 60))  # chunk: time limit - signal delay - start-up
    assert short.chunks == needed > 4
    (problem,) = short.problems
    assert f"cluster.max_requeues={needed - 1}" in problem and "cluster.time_min=5760" in problem
    assert forecast_job(to_config(compose_config(
        [*GPT2, "cluster=grace_a100", "cluster.time_min=60", f"cluster.max_requeues={needed - 1}"]))).problems == []
    (gpus,) = problems("cluster.gpus_per_node=4")
    assert "cluster.gpus_per_node=2 cluster.nodes=2" in gpus
    (limit,) = problems("cluster.time_min=6000")
    assert "cluster.max_time_min=5760" in limit


def test_plan_of_the_arch_ablation_on_grace_prints_every_job_and_writes_the_sbatch_it_would_submit(tmp_path, capsys):
    os.chdir(tmp_path)  # the plan writes outputs/plan/ here; nothing else
    try:
        rc = plan_main(["-m", "--config-dir", str(ROOT / "sweeps"), "--config-name", "arch_ablation", "cluster=grace_a100"])
    finally:
        os.chdir(ROOT)
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.endswith(" 1") and "_d12_s1337-" in line]
    assert sorted(r[0].split("_d12_s1337-")[0] for r in rows[:4]) == ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"]
    assert all(r[1] == "new" and r[5] == "yes" for r in rows[:4])
    total = next(line for line in out.splitlines() if line.startswith("total (4 jobs)"))
    assert "20.97B" in total  # 4 x 524,288 x 10,000 tokens
    assert "MFU 35% assumed" in out and "cluster.account=<account>" in out
    sbatch = (tmp_path / "outputs" / "plan" / "arch_ablation.sbatch").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gres=gpu:a100:1", "#SBATCH --time=1440",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120", "#SBATCH --array=0-3%4",
                 "module load WebProxy", "module load GCCcore/12.3.0 Python/3.11.3", "-m submitit.core._submit"):
        assert line in sbatch, line
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["arch_ablation.sbatch"]  # nothing else written


def test_two_gpus_per_node_on_grace_render_two_tasks_and_the_account():
    plan = compose_command(["cluster=grace_a100", "cluster.account=abc", "cluster.gpus_per_node=2", "model=d12"])
    assert len(plan.jobs) == 1 and plan.sweep_config is not None  # SLURM presets always submit (an array of one)
    sbatch = render_sbatch(plan.sweep_config, 1)
    assert "#SBATCH --gres=gpu:a100:2" in sbatch and "#SBATCH --ntasks-per-node=2" in sbatch
    assert "#SBATCH --account=abc" in sbatch and "--array" not in sbatch


@pytest.mark.parametrize("args,message", [
    (["cluster=grace_a100", "cluster/gpu=a200"], "Could not find 'cluster/gpu/a200'"),
    (["-m", "train.seed=range(0,2000)"], "expands to 2,000 jobs (more than 1,000): narrow the sweep's lists, or pass --max-jobs 2000"),
    (["model.n_head=5"], "model.n_head=5 does not divide model.n_embd=128"),
])
def test_bad_input_gives_one_error_line(args, message, capsys):
    rc = plan_main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("error:") and message in errors[0], err


def test_a_finished_cpu_run_calibrates_the_next_forecast_and_compare_shows_forecast_vs_measured(tmp_path, capsys):
    base = ["minigpt.train", *TINY, "train.num_iterations=10", "train.val_loss_every=0", "train.sample_every=0", "logger=none"]
    first = run_cli([*base, "train.seed=1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (first_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    before = json.loads((first_dir / "run_summary.json").read_text())
    assert before["forecast"]["tokens_per_s"] is None  # no history yet: a CPU has no peak to assume an MFU of
    assert before["forecast"]["peak_mem_gb"] > 0 and before["tokens_per_s"] > 0 and before["peak_mem_gb"] > 0

    second = run_cli([*base, "train.seed=2", "arch=rope"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    (second_dir,) = [d for d in (tmp_path / "outputs" / "runs").iterdir() if d != first_dir]
    after = json.loads((second_dir / "run_summary.json").read_text())
    forecast, measured = after["forecast"]["tokens_per_s"], after["tokens_per_s"]
    assert "from 1 finished run(s) of L2 d64 h4 T64 on cpu" in after["forecast"]["throughput_source"]
    # Same model shape, dtype and device: the forecast is the first run's achieved FLOP/s over the same
    # FLOPs per token, i.e. its measured tokens/s (how close the second run then comes depends on the
    # machine's load, a benchmark's business, not a unit test's).
    assert forecast == pytest.approx(before["tokens_per_s"], rel=1e-3), (forecast, before["tokens_per_s"])
    assert measured > 0

    assert compare_main([str(tmp_path / "outputs" / "runs"), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "Forecast vs measured" in printed
    (row,) = [line for line in printed.splitlines() if line.startswith(f"| {second_dir.name}") and "GFLOP/s" in line]
    assert f"{forecast:,.0f}" in row and f"{measured:,.0f}" in row and "(RSS)" in row
    assert "## Forecast vs measured" in (tmp_path / "report" / "report.md").read_text()


def test_several_jobs_that_cannot_fit_are_still_one_error_line(capsys):
    """Through @cli_errors: the first job's problem and how many more, after the table that marks each job."""
    assert plan_main(["-m", *GPT2, "train.batch_size=128,256", "cluster=grace_a100"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and "out of memory" in line and "(and 1 more problem(s): see the table)" in line
    assert out.count(" NO ") == 2
