"""`python -m minigpt.plan` on a halving sweep: the worst/best/full cases against hand-computed step
counts, and `--effect`'s seeds from the seed noise of constructed finished runs (or the stated default)."""

import json
import math
from dataclasses import replace

import pytest

from minigpt.compare import stats
from minigpt.halving.config import HalvingConfig, StopRule
from minigpt.plan import halving as ph
from minigpt.plan.__main__ import main as plan_main

H = HalvingConfig(budget=300, rungs=[33, 100, 300])  # cooldowns round(0.2 x rung): 7, 20, 60
# one run's steps: stopped after rung 1: 33 - 7 + 7 = 33; after rung 2: 100 - 20 + 7 + 20 = 107;
# to the end: 300 + 7 + 20 = 327
RATE = ph.Spend(1.0, 0.01, 0.5, 36.0)  # one step of one run: 0.01 GPU-h, 0.5 cost units, 36 s


def steps(cases):
    return [c.spend.steps for c in cases]


def test_verdict_rule_cases_by_hand():
    arms = {f"lr{i}": RATE for i in range(5)}
    full, worst, best = ph.halving_cases(H, arms, n_seeds=3, baseline="lr0")
    assert steps([full, worst, best]) == [15 * 300, 15 * 327, 2 * 3 * 327 + 3 * 3 * 33]  # 4500, 4905, 2259
    assert (worst.spend.gpu_hours, worst.spend.cost) == (pytest.approx(49.05), pytest.approx(2452.5))
    assert best.spend.share_of(full.spend) == pytest.approx(2259 / 4500)
    assert best.name == "best case: all but lr0, lr1 stop at rung 1 (33)"  # the best arm and the kept baseline
    alone = HalvingConfig(budget=300, rungs=[33, 100, 300], keep_baseline=False)
    assert steps(ph.halving_cases(alone, arms, 3, "lr0"))[2] == 3 * 327 + 4 * 3 * 33  # the best arm only: 1377


def test_top_k_keeps_a_third_per_rung_by_hand():
    top = HalvingConfig(budget=300, rungs=[33, 100, 300], rule=StopRule.top_k, eta=3)
    assert ph.survivors(top, 9) == [3, 1]
    full, worst, best = ph.halving_cases(top, {f"a{i}": RATE for i in range(9)}, n_seeds=1, baseline="a0")
    assert steps([full, worst, best]) == [2700, 9 * 327, 6 * 33 + 2 * 107 + 327]  # 2700, 2943, 739


def test_the_best_case_lets_the_cheapest_arms_survive_but_keeps_the_baseline():
    arms = {"slow": RATE * 3, "mid": RATE * 2, "fast": RATE}
    best = ph.halving_cases(H, arms, n_seeds=2, baseline="slow")[2]
    # slow (the baseline) and fast run to the end, mid stops at rung 1: wall per step 108, 72, 36 s
    assert best.spend.wall_s == pytest.approx(2 * (327 * 108 + 327 * 36 + 33 * 72))
    assert best.name.startswith("best case: all but slow, fast stop")


def test_plan_of_the_tiny_lr_halving_preset_prints_the_three_cases(capsys, tmp_path):
    # --history: an empty folder, not the checkout's outputs/, where a finished run of the preset's model would
    # calibrate a time forecast (the "-" columns below)
    args = ["-m", "--config-dir", "sweeps", "--config-name", "lr_sweep_halving_tiny",
            "optim.learning_rate=3e-3,1e-2", "train.seed=1,2", "--history", str(tmp_path)]
    assert plan_main(args) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith(("full", "worst", "best"))}
    assert rows["full sweep (4 runs x 300 steps)"][-5] == "1,200"
    assert rows["worst case: no arm stopped"][-5:] == ["1,308", "-", "-", "-", "109%"]  # 4 x 327
    # verdict rule, baseline kept: both arms may survive, so the best case is the worst case here
    best = next(k for k in rows if k.startswith("best case"))
    assert rows[best][-1] == "109%"
    assert "baseline optim.learning_rate=0.003 kept to the end" in out


def test_a_bad_halving_block_is_one_error_line(capsys):
    args = ["-m", "--config-dir", "sweeps", "--config-name", "lr_sweep_halving_tiny",
            "optim.learning_rate=3e-3,1e-2", "train.seed=1,2", "halving.rungs=[33,400]"]
    assert plan_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: halving.rungs=[33, 400] must end at halving.budget=300")


def _finished(path, arch, seed, final, shape="L2 d64 h4 T64", status="finished"):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(f"arch:\n  name: {arch}\ntrain:\n  seed: {seed}\n  num_iterations: 10\n")
    rows = [{"step": 10, "train/loss": 4.0}, {"step": 10, "val/loss": final}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "run_summary.json").write_text(json.dumps({"status": status, "model_shape": shape}))


def test_effect_uses_the_seed_noise_of_finished_groups_of_the_same_shape(tmp_path):
    for seed, (a, b) in enumerate(((3.00, 3.10), (3.02, 3.13), (3.04, 3.16)), start=1):
        _finished(tmp_path / "paired" / f"a_s{seed}", "gpt2", seed, a)
        _finished(tmp_path / "unpaired" / f"b_s{seed + 10}", "rope", seed + 10, b)  # other seeds: no pairs
    _finished(tmp_path / "big_s1", "gpt2", 1, 9.0, shape="L12 d768 h12 T1024")  # another shape: not counted
    _finished(tmp_path / "big_s2", "gpt2", 2, 2.0, shape="L12 d768 h12 T1024")
    _finished(tmp_path / "odd_s4", "gpt2", 4, 5.0, status="failed")  # not finished: not counted
    noise = ph.seed_noise([str(tmp_path)], "L2 d64 h4 T64")
    # variances over seeds: gpt2 4e-4, rope 9e-4; pooled (2 x 4e-4 + 2 x 9e-4) / 4 = 6.5e-4
    assert noise.std == pytest.approx(math.sqrt(6.5e-4))
    assert noise.source.endswith("pooled over 2 finished group(s) (6 runs) of L2 d64 h4 T64 under " + str(tmp_path))
    assert noise.per_seed_var == pytest.approx(2 * 6.5e-4)  # no shared seeds: pairing gets no credit
    n, level = ph.seeds_for_effect(0.1, noise, n_arms=5)
    assert level == pytest.approx(0.05 / 4)  # Holm's strictest step over 4 comparisons with the baseline
    planned = stats.Difference(0.0, 0.0, 0.0, 1.0, "", True, per_seed_var=noise.per_seed_var)
    assert n == stats.seeds_needed(0.1, planned, alpha=0.05 / 4) and n >= 2
    n_cases = ph.effect_cases(0.1, noise, H, {f"lr{i}": RATE for i in range(5)}, "lr0", 300)
    assert steps(n_cases[2]) == [5 * n * 300, 5 * n * 327, 2 * n * 327 + 3 * n * 33]
    # the same seeds for rope: b - a = 0.10, 0.11, 0.12 per seed, variance 1e-4, measured and used
    for seed, b in enumerate((3.10, 3.13, 3.16), start=1):
        _finished(tmp_path / "paired" / f"b_s{seed}", "rope", seed, b)
    paired = ph.seed_noise([str(tmp_path / "paired")], "L2 d64 h4 T64")
    assert paired.per_seed_var == pytest.approx(1e-4) and "(1 pair(s) of groups)" in paired.source
    m, _ = ph.seeds_for_effect(0.1, paired, n_arms=5)
    assert m == stats.seeds_needed(0.1, replace(planned, per_seed_var=paired.per_seed_var), alpha=0.05 / 4)


def test_effect_without_finished_runs_says_it_assumes_the_default(tmp_path, capsys):
    args = ["-m", "--config-dir", "sweeps", "--config-name", "lr_sweep_halving_tiny",
            "optim.learning_rate=3e-3,1e-2", "train.seed=1,2", "--effect", "0.05", "--history", str(tmp_path)]
    assert plan_main(args) == 0
    out = capsys.readouterr().out
    noise = ph.SeedNoise(ph.DEFAULT_SEED_STD, "")
    n, _ = ph.seeds_for_effect(0.05, noise, n_arms=2)
    assert f"needs {n} seeds per arm; seed std {ph.DEFAULT_SEED_STD} nats assumed" in out
    assert f"full sweep ({2 * n} runs x 300 steps)" in out


def test_a_non_positive_effect_is_one_error_line(capsys):
    assert plan_main(["--effect", "0", "model=tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --effect 0.0: give the effect to detect as a positive number of nats, e.g. --effect 0.02"]
