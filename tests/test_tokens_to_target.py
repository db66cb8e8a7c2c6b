"""Tokens to reach a target val loss (interpolated on the curve) and the efficiency ratio with its CI."""

import math

import pytest

from minigpt.compare.tokens_to_target import Ratio, efficiency_ratio, final_loss, mean_curve, target_loss, tokens_to_reach

CURVE = [(1000, 8.0), (2000, 7.0), (3000, 6.5), (4000, 6.0)]


def test_tokens_to_reach_interpolates_between_the_evaluations_around_the_crossing():
    assert tokens_to_reach(CURVE, 6.75) == pytest.approx(2500)
    assert tokens_to_reach(CURVE, 6.1) == pytest.approx(3800)
    assert tokens_to_reach(CURVE, 6.0) == 4000  # the curve's own final loss: its last evaluation
    assert tokens_to_reach(list(reversed(CURVE)), 6.75) == pytest.approx(2500)  # order does not matter
    assert tokens_to_reach(CURVE, 5.9) is None  # never reached
    assert tokens_to_reach(CURVE, 9.0) == 1000  # reached before the first evaluation: an upper bound
    assert tokens_to_reach([], 6.0) is None


def test_first_crossing_counts_even_if_the_loss_rises_again():
    bumpy = [(100, 7.0), (200, 5.0), (300, 6.0), (400, 5.5)]
    assert tokens_to_reach(bumpy, 5.5) == pytest.approx(175)
    assert final_loss(bumpy) == 5.5


def test_mean_curve_and_target():
    other = [(1000, 7.0), (2000, 6.0), (4000, 5.0)]
    assert mean_curve([CURVE, other]) == [(1000, 7.5), (2000, 6.5), (4000, 5.5)]  # shared evaluations only
    assert target_loss([CURVE, other]) == pytest.approx(5.5)
    assert target_loss([[]]) is None and mean_curve([]) == []


def test_efficiency_ratio_and_its_interval():
    base = [[(1000, 8.0), (2000, 7.0), (4000, 6.0)]] * 3
    arm = [[(1000, 7.0), (2000, 6.0), (4000, 5.0)]] * 3
    r = efficiency_ratio(base, arm)  # the arm reaches 6.0 at 2000 tokens, the baseline at 4000
    assert r.ratio == pytest.approx(2.0) and r.low == pytest.approx(2.0) and r.high == pytest.approx(2.0)
    noisy_base = [[(1000, 8.0), (2000, 7.0), (4000, f)] for f in (5.8, 6.0, 6.2)]
    noisy_arm = [[(1000, a), (2000, b), (4000, 5.0)] for a, b in ((7.0, 6.0), (7.2, 6.1), (6.8, 5.9))]
    r = efficiency_ratio(noisy_base, noisy_arm)
    assert r.low < r.ratio < r.high and r.low > 1.0  # clearly faster: the interval excludes 1
    assert r.ratio == pytest.approx(4000 / 2000)  # mean curves: baseline ends at 6.0, the arm passes 6.0 at 2000
    slow = efficiency_ratio(noisy_base, [[(1000, 9.0), (4000, 7.0)]] * 2)
    assert slow.ratio == 0.0  # never reaches the baseline's loss
    same = efficiency_ratio(noisy_base, noisy_base)
    assert same.low <= 1.0 <= same.high
    assert math.isnan(efficiency_ratio(noisy_base, arm[:1]).low)  # one seed: no interval
    assert str(Ratio(1.5, 1.2, 1.9)) == "1.50x [1.20, 1.90]" and str(Ratio(1.5, math.nan, math.nan)) == "1.50x"
    # "never reached" (coded 0) is shown as such, never as a ratio of 0.00
    assert str(Ratio(1.2, 0.0, 1.43)) == "1.20x [not reached, 1.43]"
    assert str(Ratio(0.0, 0.0, 0.0)) == "not reached [not reached, not reached]"
    assert str(Ratio(0.0, math.nan, math.nan)) == "not reached"
    assert efficiency_ratio(base, [[]]) is None


def _seeded_curves(rng, n_seeds, gain):
    """Val curves of two arms over the same seeds: a seed moves both arms' losses the same way (shared init
    and data order), far more than the arms differ, so only pairing sees the arm's gain clearly."""
    base, arm = [], []
    for _ in range(n_seeds):
        shift = rng.normal(0, 0.3)
        base.append([(t, 8.0 - t / 1000 + shift) for t in (1000, 2000, 3000, 4000)])
        arm.append([(t, 8.0 - t / 1000 * gain + shift + rng.normal(0, 0.01)) for t in (1000, 2000, 3000, 4000)])
    return base, arm


def test_paired_seeds_are_resampled_together():
    import numpy as np

    base, arm = _seeded_curves(np.random.default_rng(0), 6, gain=1.25)
    together = efficiency_ratio(base, arm, paired=True, n_resamples=1000)
    apart = efficiency_ratio(base, arm, n_resamples=1000)
    assert together.ratio == apart.ratio  # the point estimate is the mean curves' either way
    assert together.low > 1.0  # the shared seed noise cancels: the gain is resolved
    assert together.high - together.low < (apart.high - apart.low) / 2
    with pytest.raises(ValueError, match="paired curves"):
        efficiency_ratio(base, arm[:-1], paired=True)
    # a seed with no curve on one side drops out on both, keeping the pairs aligned
    assert efficiency_ratio(base, arm[:-1] + [[]], paired=True, n_resamples=200).ratio == pytest.approx(
        efficiency_ratio(base[:-1], arm[:-1], paired=True, n_resamples=200).ratio)


@pytest.mark.parametrize("n_seeds", [2, 50])
@pytest.mark.parametrize("noise", [0.0, 1e-9, 10.0])
def test_efficiency_ratio_never_gives_nan_at_the_extremes(n_seeds, noise):
    import numpy as np

    rng = np.random.default_rng(n_seeds)
    base = [[(t, 8.0 - t / 1000 + noise * rng.normal()) for t in (1000, 2000, 4000)] for _ in range(n_seeds)]
    arm = [[(t, 8.0 - t / 500 + noise * rng.normal()) for t in (1000, 2000, 4000)] for _ in range(n_seeds)]
    for paired in (False, True):
        r = efficiency_ratio(base, arm, paired=paired, n_resamples=200)
        assert all(math.isfinite(x) and x >= 0 for x in (r.ratio, r.low, r.high)) and r.low <= r.high
        assert "nan" not in str(r)


def _run_dir(path, arm: str, seed: int, val: list[tuple[int, float]], tokens_per_step: int = 1000):
    """A finished sweep job: its overrides (the arm and the seed) and val losses at some steps."""
    import json

    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(f"arch:\n  name: {arm}\ntrain:\n  num_iterations: 100\n  seed: {seed}\n")
    (path / ".hydra" / "overrides.yaml").write_text(f"- recipe={arm}\n- train.seed={seed}\n")
    rows = [{"step": s, "train/loss": 5.0, "train/tokens": s * tokens_per_step} for s in range(1, 101)]
    rows += [{"step": s, "val/loss": v} for s, v in val]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "run_summary.json").write_text(json.dumps({"status": "finished", "tokens_per_step": tokens_per_step}))


def test_compare_reports_tokens_to_the_baselines_loss_per_run_and_per_group(tmp_path, capsys):
    from minigpt.compare import main as compare_main
    from tests.test_compare import markdown_tables

    # baseline finals 3.0, 3.2, 3.1 (target: their mean, 3.1); the fast arm crosses 3.1 at 50K, 60K, 40K tokens
    for seed, final in ((1, 3.0), (2, 3.2), (3, 3.1)):
        _run_dir(tmp_path / f"{seed - 1}_base_s{seed}", "base", seed, [(50, 4.0), (100, final)])
    for seed, cross in ((1, 50), (2, 60), (3, 40)):
        _run_dir(tmp_path / f"{seed + 2}_fast_s{seed}", "fast", seed, [(30, 3.3), (cross, 3.1), (100, 2.5)])
    _run_dir(tmp_path / "6_slow_s1", "slow", 1, [(50, 5.0), (100, 4.0)])
    assert compare_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    run_rows, group_rows = markdown_tables(out)[:2]
    runs = {r["run"]: r["tokens to target"] for r in run_rows}
    assert [runs[f"{i}_fast_s{i - 2}"] for i in (3, 4, 5)] == ["50.00K", "60.00K", "40.00K"]
    # per run: 4.0 -> 3.0 crosses 3.1 at 9/10 of the way; a seed that ends above the mean never gets there
    assert runs["0_base_s1"] == "95.00K" and runs["1_base_s2"] == "not reached"
    assert runs["2_base_s3"] == "100.00K" and runs["6_slow_s1"] == "not reached"
    assert "baseline group 'arch=base', 3.1000" in out
    groups = {r["group"]: r for r in group_rows}
    base = groups["arch=base (baseline)"]
    assert (base["n"], base["tokens to target"]) == ("3", "100.00K")
    assert base["val loss (mean ± 95% CI)"].startswith("3.1000 ± ")
    base_curves = [[(50e3, 4.0), (100e3, f)] for f in (3.0, 3.2, 3.1)]
    fast_curves = [[(30e3, 3.3), (c * 1e3, 3.1), (100e3, 2.5)] for c in (50, 60, 40)]
    expected = efficiency_ratio(base_curves, fast_curves, paired=True)  # both ran seeds 1-3: resampled together
    assert groups["arch=fast"]["tokens ratio vs baseline [95% CI]"] == str(expected) and expected.ratio > 1.5
    # the seeds' mean curve has the evaluations all seeds share, (30K, 3.3) and (100K, 2.5): it crosses 3.1 at 47.5K
    assert groups["arch=fast"]["tokens to target"] == "47.50K" and expected.ratio == pytest.approx(100 / 47.5)
    assert base["tokens ratio vs baseline [95% CI]"] == "1.00x"
    slow = groups["arch=slow"]
    assert (slow["tokens to target"], slow["tokens ratio vs baseline [95% CI]"]) == ("not reached", "not reached")
    assert str(expected) in (tmp_path / "report" / "report.md").read_text()
    # another baseline: the target moves to that group's final loss
    assert compare_main([str(tmp_path), "--out", str(tmp_path / "r2"), "--baseline", "arch=slow"]) == 0
    assert "baseline group 'arch=slow', 4.0000" in capsys.readouterr().out
