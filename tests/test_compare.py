"""Sweeps through Hydra multirun (basic launcher, CPU) and the comparison report on their output."""

import json
import os
import re
import time

import matplotlib.image
import pytest

from minigpt.compare import main as compare_main
from tests.conftest import ROOT, TINY, read_metrics, run_cli
from tests.synthetic_hellaswag import make_examples, write_jsonl
from tests.wandb_records import finished_run_records, run_record


def _cells(line: str) -> list[str]:
    """Cells of a markdown table row; an escaped pipe (`\\|`, as in `|Δ|`) belongs to its cell."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def markdown_tables(text: str) -> list[list[dict]]:
    """Every markdown table in compare's output, as rows of {header: cell}."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and (i == 0 or not lines[i - 1].startswith("|")):
            header, body = _cells(line), []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                body.append(dict(zip(header, _cells(row))))
            tables.append(body)
    return tables


@pytest.mark.slow
def test_tiny_ablation_with_seeds_ends_in_verdicts(tmp_path, capsys):
    """A real multirun of 2 archs x 2 seeds: per-example records, W&B grouping by configuration, and a
    report with the grouped table, verdict rows and the three plots; compare twice gives the same report."""
    sweep_dir = tmp_path / "sweep"
    data = write_jsonl(tmp_path / "hellaswag.jsonl", make_examples(8))
    done = run_cli(
        ["minigpt.train", "-m", "--config-dir", "sweeps", "--config-name", "arch_ablation_tiny", *TINY,
         "arch=gpt2,rope", "train.seed=1,2", "train.num_iterations=4", "train.val_loss_every=2",
         "train.sample_every=0", f"hydra.sweep.dir={sweep_dir}",
         "eval.hellaswag.every=0", "eval.hellaswag.limit=8", f"eval.hellaswag.path={data}"],  # HellaSwag once, at the end
        cwd=ROOT, env_extra={"WANDB_MODE": "offline"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    # job dirs: <arch>_<model>_s<seed>-<config hash>, so a rerun of the sweep finds (and skips) them
    assert [p.name.split("-")[0] for p in runs] == ["gpt2_tiny_s1", "gpt2_tiny_s2", "rope_tiny_s1", "rope_tiny_s2"]
    assert all(re.fullmatch(r"[a-z0-9_]+_tiny_s[12]-[0-9a-f]{8}", p.name) for p in runs)
    job_types = []
    for run_dir in runs:
        assert [r["step"] for r in read_metrics(run_dir) if "val/loss" in r] == [0, 2, 4]  # step 0: before training
        assert (run_dir / "hellaswag" / "step_000004.parquet").is_file()
        # W&B: group = the sweep, job_type = the configuration without seeds, the records as an artifact
        records = finished_run_records(run_dir)
        wb = run_record(records)
        assert wb.run_group == "arch_ablation_tiny" and "seed" not in wb.job_type
        job_types.append(wb.job_type)
        assert [r.artifact.type for r in records if r.WhichOneof("record_type") == "artifact"].count(
            "hellaswag-records") == 1
    assert job_types[0] == job_types[1] != job_types[2] == job_types[3]
    assert job_types[0].startswith("arch=gpt2") and job_types[2].startswith("arch=rope")

    out = tmp_path / "report"
    assert compare_main([str(sweep_dir), "--baseline", "arch=gpt2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    first = (out / "report.md").read_text()
    tables = markdown_tables(printed)
    run_rows, forecast_rows, group_rows, verdict_rows = tables
    # every run recorded the forecast made at its start; compare sets it against what the run measured
    assert [r["run"] for r in forecast_rows] == [p.name for p in runs]
    assert all(r["device"] == "cpu" and float(r["peak mem GiB forecast"]) > 0 for r in forecast_rows)
    assert [r["run"] for r in run_rows] == [p.name for p in runs] and [r["seed"] for r in run_rows] == ["1", "2"] * 2
    assert all(r["status"] == "finished" for r in run_rows)
    assert [(r["group"], r["n"]) for r in group_rows] == [("arch=gpt2 (baseline)", "2"), ("arch=rope", "2")]
    for row, arch_runs in zip(group_rows, (runs[:2], runs[2:])):
        finals = [[r["val/loss"] for r in read_metrics(d) if "val/loss" in r][-1] for d in arch_runs]
        assert row["val loss (mean ± 95% CI)"].startswith(f"{sum(finals) / 2:.4f} ± ")
    assert [(r["group"], r["metric"]) for r in verdict_rows] == [
        ("arch=rope", "val loss"), ("arch=rope", "HellaSwag harness acc_norm"), ("arch=rope", "HellaSwag llmc acc_norm")]
    val = verdict_rows[0]
    assert val["test"] == "paired t, 2 seeds"
    assert val["verdict"] in ("better", "worse") or (
        val["verdict"].startswith("no detectable difference (|Δ| < ") and val["seeds needed"] != "-")
    assert all(r["verdict"] for r in verdict_rows)
    for png in ("val_loss.png", "hellaswag.png", "forest.png"):
        image = matplotlib.image.imread(out / png)
        assert image.shape[0] > 200 and image.shape[1] > 500
        assert f"![{png[:-4]}]({png})" in first

    assert compare_main([str(sweep_dir), "--baseline", "arch=gpt2", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == first


def _write_run(path, rows, num_iterations=100, summary=None, arch="gpt2", age_s=0.0, tail=""):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(
        f"arch:\n  name: {arch}\nmodel:\n  name: d12\ntrain:\n  num_iterations: {num_iterations}\n"
        "cluster:\n  name: aces\n  gpu_hour_cost: 2.5\n  cost_unit: USD\n"
    )
    metrics = path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    if summary is not None:
        (path / "run_summary.json").write_text(json.dumps(summary))
    if age_s:
        os.utime(metrics, (time.time() - age_s, time.time() - age_s))


def test_report_shows_failed_and_unfinished_runs(tmp_path, capsys):
    """Hand-written run folders in every state; HellaSwag keys as the eval task logs them."""
    def rows(steps, hs=True):
        out = []
        for s in steps:
            out.append({"step": s, "train/loss": 5.0 - s / 100, "train/tokens": s * 1000, "train/tokens_per_s": 2000.0,
                        "train/mfu": 0.4})
            if s % 50 == 0:
                out.append({"step": s, "val/loss": 4.0 - s / 100})
                if hs:
                    out.append({"step": s, "hellaswag/zero_shot/acc": 0.25 + s / 1000,
                                "hellaswag/zero_shot/acc_norm": 0.26 + s / 1000})
        return out

    _write_run(tmp_path / "a_finished", rows(range(1, 101)), arch="gpt2",
               summary={"status": "finished", "wall_s": 7200, "gpu_hours": 16.0, "cost": 40.0, "cost_unit": "USD",
                        "params": 124_000_000, "tokens_per_step": 1000})
    _write_run(tmp_path / "b_crashed", rows(range(1, 61)), arch="rope",
               summary={"status": "failed", "error": "RuntimeError: CUDA out of memory", "wall_s": 60})
    _write_run(tmp_path / "c_running", rows(range(1, 51)), arch="rope_gqa")  # no summary, fresh metrics
    _write_run(tmp_path / "d_killed", rows(range(1, 31)), arch="swiglu_gqa_rope", age_s=3600,  # stale,
               tail='{"step": 31, "train/lo')  # and its last line torn by the kill
    _write_run(tmp_path / "e_never_started", [], arch="gpt2")

    out = tmp_path / "report"
    assert compare_main([str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    run_rows, group_rows, verdict_rows = markdown_tables(printed)
    by_name = {r["run"]: r for r in run_rows}
    assert list(by_name) == ["a_finished", "b_crashed", "c_running", "d_killed", "e_never_started"]
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| run "))
    assert "| HellaSwag zero_shot acc_norm |" in header
    a = by_name["a_finished"]
    assert [a[k] for k in ("params", "tokens", "val loss", "HellaSwag zero_shot acc_norm")] == [
        "124.00M", "100.00K", "3.0000", "0.3600"]
    assert [a[k] for k in ("tokens/s", "MFU", "wall", "GPU-h", "cost", "status")] == [
        "2.00K", "40.0%", "2h00m", "16.00", "40.00 USD", "finished"]
    assert by_name["b_crashed"]["status"] == "failed (RuntimeError: CUDA out of memory)"
    assert by_name["c_running"]["status"] == "running"
    # the torn last line is said, not hidden (issue 28)
    assert by_name["d_killed"]["status"] == ("failed (stopped at step 30; 1 unreadable metrics.jsonl line skipped: "
                                             "line 31 (torn last line))")
    assert by_name["e_never_started"]["status"] == "failed (no metrics)" and by_name["e_never_started"]["val loss"] == "-"
    # only finished runs count: one per arch group at most, and the report says how many were left out
    assert "4 of 5 runs left out of the statistics (not finished): b_crashed (failed), c_running (running), " \
           "d_killed (failed), e_never_started (failed)." in printed
    assert [(r["group"], r["n"]) for r in group_rows] == [
        ("arch=gpt2 (baseline)", "1 (+1 left out)"), ("arch=rope", "0 (+1 left out)"),
        ("arch=rope_gqa", "0 (+1 left out)"), ("arch=swiglu_gqa_rope", "0 (+1 left out)")]
    assert {r["verdict"] for r in verdict_rows} == {"no verdict"}
    assert {r["test"] for r in verdict_rows} == {"no finished runs in this group"}
    for png in ("val_loss.png", "hellaswag.png"):
        assert matplotlib.image.imread(out / png).ndim == 3


def test_compare_bad_input_is_one_line(tmp_path, capsys):
    assert compare_main([str(tmp_path / "missing")]) == 2
    assert compare_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "does not exist" in err[0] and "no runs" in err[1]


def test_compare_from_wandb_fails_in_one_line_without_key_or_network(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert compare_main(["--wandb", "team/minigpt/arch_ablation"]) == 2
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert compare_main(["--wandb", "team/minigpt"]) == 2
    assert compare_main(["--wandb", "just-a-project"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "API key" in err[0] and "127.0.0.1:9 is not reachable" in err[1] and "ENTITY/PROJECT" in err[2]


@pytest.mark.slow
def test_optuna_sweep_minimises_the_final_val_loss(tmp_path):
    """lr_optuna_tiny through hydra-optuna-sweeper: each job returns train.objective; the study keeps the best."""
    from omegaconf import OmegaConf

    sweep_dir = tmp_path / "optuna"
    done = run_cli(
        ["minigpt.train", "-m", "--config-dir", "sweeps", "--config-name", "lr_optuna_tiny", *TINY,
         "train.num_iterations=2", "train.val_loss_every=0", "train.sample_every=0", "logger=none",
         "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    finals = {}
    for run_dir in (p for p in sweep_dir.iterdir() if p.is_dir()):
        overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        lr = next(float(o.split("=")[1]) for o in overrides if o.startswith("optim.learning_rate="))
        finals[lr] = [r["val/loss"] for r in read_metrics(run_dir) if "val/loss" in r][-1]
    assert len(finals) == 2
    result = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert result.best_value == min(finals.values())
    assert finals[result.best_params["optim.learning_rate"]] == result.best_value


def _arm_run(path, arch, seed, val_loss, correct, model="tiny", examples=None):
    """A finished run directory as training leaves it: config, metrics, summary and per-example records."""
    import torch

    from minigpt.eval.hellaswag import HellaSwagScores
    from minigpt.eval.records import records_path, write_records

    n = len(correct)
    examples = examples or make_examples(n, seed=99)
    labels = torch.tensor([ex["label"] for ex in examples])
    pred = torch.where(torch.as_tensor(correct), labels, (labels + 1) % 4)  # right where `correct` says so
    loglik = torch.full((n, 4), -10.0, dtype=torch.float64)
    loglik[torch.arange(n), pred] = -1.0
    scores = HellaSwagScores("harness", loglik, torch.ones(n, 4, dtype=torch.long), loglik, labels)
    acc = float(torch.as_tensor(correct).double().mean())
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(
        f"arch:\n  name: {arch}\nmodel:\n  name: {model}\ndata:\n  name: shakespeare\n"
        f"train:\n  num_iterations: 10\n  seed: {seed}\n  init_seed: null\n  data_seed: null\n")
    rows = [{"step": 10, "train/loss": val_loss, "train/tokens": 10240, "train/tokens_per_s": 1000.0},
            {"step": 10, "val/loss": val_loss}, {"step": 10, "hellaswag/harness/acc": acc, "hellaswag/harness/acc_norm": acc}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "run_summary.json").write_text(json.dumps({"status": "finished", "tokens_per_step": 1024}))
    write_records(records_path(path, 10), examples, {"harness": scores}, step=10)


def _simulated_ablation(root, n_examples=2000, seeds=(1, 2, 3, 4, 5), shift=0.16):
    """gpt2 vs rope on shared examples of varying difficulty; rope is +3 points better on HellaSwag and
    0.05 nats better on val loss (seed noise 0.01)."""
    import numpy as np
    from scipy.special import expit, logit

    rng = np.random.default_rng(0)
    difficulty = rng.normal(logit(0.3), 1.0, n_examples)
    examples = make_examples(n_examples, seed=99)
    for i, seed in enumerate(seeds):
        for j, (arch, gain, loss) in enumerate((("gpt2", 0.0, 6.60), ("rope", shift, 6.55))):
            correct = rng.random(n_examples) < expit(difficulty + gain + rng.normal(0, 0.02))
            _arm_run(root / f"{2 * i + j}_{arch}_s{seed}", arch, seed, loss + rng.normal(0, 0.01), correct,
                     examples=examples)


def test_planted_effects_are_called_better(tmp_path, capsys):
    _simulated_ablation(tmp_path / "sweep")
    assert compare_main([str(tmp_path / "sweep"), "--baseline", "arch=gpt2", "--out", str(tmp_path / "r")]) == 0
    _, groups, verdicts = markdown_tables(capsys.readouterr().out)
    assert [(g["group"], g["n"]) for g in groups] == [("arch=gpt2 (baseline)", "5"), ("arch=rope", "5")]
    by_metric = {v["metric"]: v for v in verdicts}
    assert by_metric["val loss"]["verdict"] == "better" and by_metric["val loss"]["test"] == "paired t, 5 seeds"
    hs = by_metric["HellaSwag harness acc_norm"]
    assert hs["verdict"] == "better" and hs["test"].startswith("paired seeds x examples t, 5 seeds x 2000 examples")
    delta, lo, hi = map(float, re.findall(r"[+-]\d\.\d+", hs["Δ vs baseline [95% CI]"]))
    assert 0.02 < delta < 0.05 and 0 < lo < delta < hi


def test_no_difference_gives_a_bound_and_seeds_needed(tmp_path, capsys):
    _simulated_ablation(tmp_path / "sweep", n_examples=300, seeds=(1, 2, 3), shift=0.0)
    assert compare_main([str(tmp_path / "sweep"), "--effect", "0.01", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    hs = {v["metric"]: v for v in markdown_tables(printed)[2]}["HellaSwag harness acc_norm"]
    assert hs["verdict"].startswith("no detectable difference (|Δ| < ") and hs["verdict"].endswith(" at 95%)")
    assert hs["seeds needed"] == "> 1000"  # 1 point is below what 300 shared examples can resolve
    assert "to detect a difference of 0.01 at alpha 0.05/m (m: the tested comparisons of the metric" in printed


def test_mismatched_example_sets_are_refused_in_one_line(tmp_path, capsys):
    _simulated_ablation(tmp_path / "sweep", n_examples=200, seeds=(1, 2))
    other = make_examples(200, seed=99)
    other[7]["endings"][0] = "a different ending."  # same position, other text: another example
    for d in (tmp_path / "sweep").glob("3_rope_s2"):
        import shutil

        shutil.rmtree(d)
        _arm_run(d, "rope", 2, 6.55, [True] * 100 + [False] * 100, examples=other)
    assert compare_main([str(tmp_path / "sweep"), "--baseline", "arch=gpt2", "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    (warning,) = captured.err.strip().splitlines()
    assert warning == ("warning: runs 0_gpt2_s1 (200 examples) and 3_rope_s2 (200 examples) scored different "
                       "HellaSwag examples: not paired; evaluate both on the same set (eval.hellaswag.path / "
                       "limit, or python -m minigpt.eval)")
    hs = {v["metric"]: v for v in markdown_tables(captured.out)[2]}["HellaSwag harness acc_norm"]
    assert hs["verdict"] == "no verdict" and "scored different HellaSwag examples" in hs["test"]
    assert "Refused: runs 0_gpt2_s1" in (tmp_path / "r" / "report.md").read_text()


def test_groups_that_cannot_be_compared_get_separate_tables(tmp_path, capsys):
    """--baseline arch=gpt2 over arch x model: one table per model, each with its own gpt2 baseline;
    seeds that differ between groups fall back to Welch's test."""
    correct = [True, False] * 50
    for i, (arch, model, seed, loss) in enumerate([("gpt2", "tiny", 1, 6.6), ("gpt2", "tiny", 2, 6.61),
                                                    ("rope", "tiny", 3, 6.5), ("rope", "tiny", 4, 6.52),
                                                    ("gpt2", "big", 1, 6.0), ("rope", "big", 1, 5.9)]):
        _arm_run(tmp_path / "s" / f"{i}_{arch}_{model}_s{seed}", arch, seed, loss, correct, model=model)
    assert compare_main([str(tmp_path / "s"), "--baseline", "arch=gpt2", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "## Table 1: model=tiny (baseline: arch=gpt2 model=tiny)" in printed
    assert "## Table 2: model=big (baseline: arch=gpt2 model=big)" in printed
    _, tiny_groups, tiny_verdicts, big_groups, big_verdicts = markdown_tables(printed)
    assert [g["group"] for g in tiny_groups] == ["arch=gpt2 model=tiny (baseline)", "arch=rope model=tiny"]
    assert tiny_verdicts[0]["test"] == "Welch t, 2 vs 2 seeds"
    assert big_verdicts[0]["verdict"] == "no verdict" and big_verdicts[0]["test"].startswith("single seed (n=1 vs 1)")
    assert big_verdicts[0]["seeds needed"] == "? (need >= 2 seeds per group)"
    big_hs = big_verdicts[1]  # HellaSwag with one seed per group: refused like val loss, seed noise unmeasured
    assert big_hs["metric"] == "HellaSwag harness acc_norm" and big_hs["verdict"] == "no verdict"
    assert big_hs["test"].startswith("single seed (n=1 vs 1): no verdict on HellaSwag")
    assert big_hs["seeds needed"] == "? (need >= 2 seeds per group)"


def test_bad_baseline_is_one_line(tmp_path, capsys):
    _arm_run(tmp_path / "s" / "0_gpt2", "gpt2", 1, 6.6, [True, False])
    assert compare_main([str(tmp_path / "s"), "--baseline", "arch=gpt3"]) == 2
    assert compare_main([str(tmp_path / "s"), "--baseline", "colour=red"]) == 2
    assert compare_main([str(tmp_path / "s"), "--baseline", "arch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --baseline arch=gpt3: no group has arch=gpt3 (found: gpt2)",
                   "error: --baseline colour=red: no run's config has colour; pass a config key, e.g. arch=gpt2",
                   "error: --baseline 'arch': expected KEY=VALUE, e.g. --baseline arch=gpt2"]


def test_seeds_needed_is_sized_at_the_alpha_of_the_holm_family(tmp_path, capsys):
    """Three arms against one baseline: Holm's strictest step is 0.05 / 3, and "seeds needed" is the count
    for 80% power at that alpha (larger than at 0.05), the issue-27 paired values as the baseline."""
    from minigpt.compare import stats

    base = {1: 6.67, 2: 6.7388, 3: 6.6377, 4: 6.6847}
    cand = {1: 6.5481, 2: 6.7121, 3: 6.6214, 4: 6.61}
    correct = [True, False] * 20
    for i, seed in enumerate(base):
        _arm_run(tmp_path / "s" / f"{i}_gpt2_s{seed}", "gpt2", seed, base[seed], correct)
        for j, arch in enumerate(("rope", "rope_gqa", "swiglu")):
            _arm_run(tmp_path / "s" / f"{4 + 3 * i + j}_{arch}_s{seed}", arch, seed, cand[seed] + 0.001 * j, correct)
    assert compare_main([str(tmp_path / "s"), "--baseline", "arch=gpt2", "--out", str(tmp_path / "r")]) == 0
    rows = [v for v in markdown_tables(capsys.readouterr().out)[2] if v["metric"] == "val loss"]
    assert len(rows) == 3 and all(v["verdict"].startswith("no detectable difference") for v in rows)
    d = stats.val_loss_difference(cand, base)
    at_holm = stats.seeds_needed(d.delta, d, stats.ALPHA / 3)
    assert rows[0]["seeds needed"] == str(at_holm) and at_holm > stats.seeds_needed(d.delta, d) == 8


def _damaged_sweep(root):
    """3 seeds of gpt2 vs rope, led by a group whose only run diverged; one unreadable HellaSwag records
    file and one torn metrics line (a crash mid-write)."""
    _simulated_ablation(root, n_examples=300, seeds=(1, 2, 3))
    _arm_run(root / "0_alibi_s1", "alibi", 1, 9.0, [True] * 300, examples=make_examples(300, seed=99))
    (root / "0_alibi_s1" / "run_summary.json").write_text(json.dumps({"status": "diverged", "error": "loss nan"}))
    from minigpt.eval.records import records_path

    records_path(root / "2_gpt2_s2", 10).write_bytes(b"PAR1 not a parquet file")
    with open(root / "3_rope_s2" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "train/lo')


def test_compare_warns_about_what_it_could_not_read_and_skips_a_baseline_without_finished_runs(tmp_path, capsys):
    _damaged_sweep(tmp_path / "sweep")
    assert compare_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    (records,) = [w for w in warnings if "2_gpt2_s2" in w]
    assert "hellaswag/step_000010.parquet unreadable (" in records and "left out of the paired test" in records
    (torn,) = [w for w in warnings if "3_rope_s2" in w]
    assert torn == "warning: 3_rope_s2: 1 unreadable metrics.jsonl line skipped: line 4 (torn last line)"
    runs, groups, verdicts = markdown_tables(out)[:3]
    status = {r["run"]: r["status"] for r in runs}
    assert status["2_gpt2_s2"].startswith("finished (hellaswag/step_000010.parquet unreadable")
    assert status["3_rope_s2"] == "finished (1 unreadable metrics.jsonl line skipped: line 4 (torn last line))"
    assert "arch=gpt2 (baseline)" in [g["group"] for g in groups]
    assert "baseline: arch=gpt2, the first group with a finished run (skipped arch=alibi: no finished run)" in out
    assert {v["metric"]: v["verdict"] for v in verdicts}["val loss"] == "better"


def test_compare_on_a_full_disk_prints_its_tables_then_one_error_line(tmp_path):
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare"):
        pytest.skip("full-disk check skipped: no unshare command")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mnt}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"full-disk check skipped: cannot mount a tmpfs ({probe.stderr.strip()[:80]})")
    _damaged_sweep(tmp_path / "sweep")
    compare = [sys.executable, "-m", "minigpt.compare", str(tmp_path / "sweep"), "--out", str(mnt / "r")]
    script = f"mount -t tmpfs -o size=16k tmpfs {mnt} && {' '.join(compare)}; rc=$?; ls -la {mnt}/r; exit $rc"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    (line,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: could not write {mnt / 'r'}/") and "No space left on device" in line
    assert "## Groups" in res.stdout and "### Verdicts vs arch=gpt2" in res.stdout  # the tables came first
    listing = res.stdout[res.stdout.rindex("total"):]
    assert ".png" not in listing and ".tmp-" not in listing, listing  # no 0-byte or half-written file left
