"""Sweeps through Hydra multirun (basic launcher, CPU) and the comparison report on their output."""

import json
import os
import re
import time

import matplotlib.image

from minigpt.compare import main as compare_main
from minigpt.runs import find_run_dirs
from tests.conftest import ROOT, SHARED_DATA, TINY, read_metrics, run_cli
from tests.wandb_records import finished_run_records, run_record

ARCHS = ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"]


def table_lines(text: str) -> list[list[str]]:
    """Body rows of the first markdown table printed by compare (the runs; a forecast table may follow), as cell lists."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2:end]]


def test_arch_ablation_tiny_sweep_runs_and_compares(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    done = run_cli(
        ["minigpt.train", "-m", "--config-dir", "sweeps", "--config-name", "arch_ablation_tiny", *TINY,
         "train.num_iterations=4", "train.val_loss_every=2", "train.sample_every=0", f"hydra.sweep.dir={sweep_dir}",
         "eval.hellaswag.every=0", "eval.hellaswag.limit=8",  # HellaSwag once, at the end, on 8 examples
         f"eval.hellaswag.path={SHARED_DATA / 'hellaswag' / 'hellaswag_val_preprocessed.jsonl'}"],
        cwd=ROOT, env_extra={"WANDB_MODE": "offline"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = find_run_dirs([sweep_dir])  # in the report's order
    archs = [p.name.rsplit("_tiny-", 1)[0] for p in runs]  # job dirs: <arch>_<model>-<config hash>
    assert sorted(archs) == ARCHS and all(re.fullmatch(r"[a-z0-9_]+_tiny-[0-9a-f]{8}", p.name) for p in runs)
    for run_dir, arch in zip(runs, archs):
        assert [r["step"] for r in read_metrics(run_dir) if "val/loss" in r] == [2, 4]
        # the W&B run is grouped by the sweep's name, its job type is the arch
        wb = run_record(finished_run_records(run_dir))
        assert wb.run_group == "arch_ablation_tiny" and wb.job_type == arch

    out = tmp_path / "report"
    assert compare_main([str(sweep_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_lines(printed)
    assert "| HellaSwag harness acc_norm | HellaSwag llmc acc_norm |" in printed
    assert [r[1] for r in rows] == archs and all(r[-1] == "finished" for r in rows)
    for row, run_dir in zip(rows, runs):
        metrics = read_metrics(run_dir)
        final_val = [r["val/loss"] for r in metrics if "val/loss" in r][-1]
        assert row[5] == f"{final_val:.4f}" and row[4] == "1.02K"  # 4 steps x 4 x 64 tokens
        for col, protocol in ((6, "harness"), (7, "llmc")):
            (acc_norm,) = [r[f"hellaswag/{protocol}/acc_norm"] for r in metrics if f"hellaswag/{protocol}/acc_norm" in r]
            assert row[col] == f"{acc_norm:.4f}"
    assert table_lines((out / "report.md").read_text()) == rows
    for png in ("val_loss.png", "hellaswag.png"):
        image = matplotlib.image.imread(out / png)
        assert image.shape[0] > 300 and image.shape[1] > 500


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
    table = table_lines(capsys.readouterr().out)
    by_name = {r[0]: r for r in table}
    assert list(by_name) == ["a_finished", "b_crashed", "c_running", "d_killed", "e_never_started"]
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| run "))
    assert "| HellaSwag zero_shot acc_norm |" in header
    a = by_name["a_finished"]
    assert a[3:6] == ["124.00M", "100.00K", "3.0000"] and a[6] == "0.3600"
    assert a[7:] == ["2.00K", "40.0%", "2h00m", "16.00", "40.00 USD", "finished"]
    assert by_name["b_crashed"][-1] == "failed (RuntimeError: CUDA out of memory)"
    assert by_name["c_running"][-1] == "running"
    assert by_name["d_killed"][-1] == "failed (stopped at step 30)"
    assert by_name["e_never_started"][-1] == "failed (no metrics)" and by_name["e_never_started"][5] == "-"
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
