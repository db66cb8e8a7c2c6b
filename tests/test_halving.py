"""The halving sweep end to end on a CPU: a tiny 3-arm x 2-seed lr sweep where one arm has a 30x too small
lr stops that arm at the first rung and runs the others to the budget; killing the driver in the middle of a
rung and rerunning the same command finishes the sweep without training a finished segment again; the audit
mode's agreement table on a constructed case; every bad input is one `error:` line before anything runs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minigpt.halving.config import HalvingConfig, run_steps
from minigpt.halving.decide import agreement, decide_rung
from tests.conftest import ROOT, run_cli

PRESET = ["-m", "--config-dir", str(ROOT / "sweeps"), "--config-name", "lr_sweep_halving_tiny"]
SMALL = ["model.n_layer=1", "train.batch_size=4", "train.val_max_steps=2", "train.val_loss_every=10",
         "train.log_every=10", "halving.budget=30", "halving.rungs=[10,30]", "train.seed=1,2",
         "optim.learning_rate=3e-3,1e-4,2.5e-3", "optim.warmup_iters=2",
         # 2.5e-3 is consistently a little worse than 3e-3 over both seeds, so MCB rightly stops it too unless
         # it is the kept baseline: then both good arms run to the budget and the 30x-too-small lr alone stops
         "halving.baseline=2.5e-3"]


def halving(args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "minigpt.halving", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def snapshot(sweep: Path) -> dict[str, tuple]:
    """Per finished segment (a run dir with a run_summary.json), what retraining would rewrite."""
    out = {}
    for summary in sweep.glob("*/*/run_summary.json"):
        data = json.loads(summary.read_text())
        out[str(summary.parent)] = (data.get("segments"), data.get("step"), (summary.parent / "metrics.jsonl").read_text(),
                                    data.get("status"))
    return out


def test_a_clearly_worse_arm_stops_at_the_first_rung_and_a_killed_driver_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*PRESET, *SMALL, f"hydra.sweep.dir={sweep}"]
    first = halving(args, tmp_path)
    deadline = time.time() + 600
    while not list((sweep / "rung_10").glob("*/run_summary.json")) and time.time() < deadline:  # mid-rung
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the multirun it launched
    first.wait()
    before = snapshot(sweep)
    trunks = [d for d in before if "/trunks/" in d]
    assert len(trunks) == 6 and all(before[d][1] == 8 for d in trunks)  # paused at 10 - round(0.2 * 10)

    second = halving(args, tmp_path)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out
    after = snapshot(sweep)
    for run_dir, (segments, step, metrics, status) in before.items():
        # a branch that had finished (status, not only its last step: the kill may land between the last step's
        # summary and the finished one, and then the rerun rightly resumes it): untouched
        if "/rung_10/" in run_dir and status == "finished":
            assert after[run_dir] == (segments, step, metrics, status)
    state = json.loads((sweep / "halving_state.json").read_text())
    rung1 = {r["arm"]: r for r in state["decisions"][0]["results"]}
    assert rung1["0.0001"]["stopped"] and "worse than the rung's best" in rung1["0.0001"]["reason"]
    assert not rung1["0.003"]["stopped"] and not rung1["0.0025"]["stopped"]
    finals = {r["arm"] for r in state["decisions"][1]["results"]}
    assert finals == {"0.003", "0.0025"}
    for run_dir in trunks:  # the two good arms' trunks reached the budget, the stopped arm's stayed at its pause
        summary = json.loads((Path(run_dir) / "run_summary.json").read_text())
        lr = json.loads(json.dumps(summary)).get("step")
        assert lr in (8, 30)
    assert sum(json.loads((Path(d) / "run_summary.json").read_text())["step"] == 30 for d in trunks) == 4
    report = (sweep / "halving_report.md").read_text()
    assert "Stopped: 0.0001" in report and "horizon-dependent" in report and (sweep / "halving.png").exists()
    h = HalvingConfig(budget=30, rungs=[10, 30])
    assert f"{2 * 2 * run_steps(h, 1) + 2 * run_steps(h, 0):,} steps of 180" in report  # 2 arms to the end, 1 stopped


def test_audit_agreement_on_a_constructed_case():
    h = HalvingConfig(budget=30, rungs=[10, 30], keep_baseline=True)
    noisy = lambda base, d: {"1": base + d[0], "2": base + d[1], "3": base + d[2]}  # noqa: E731
    rung1 = decide_rung(h, 10, {"a": noisy(3.0, (0, .05, -.02)), "b": noisy(3.01, (.03, -.02, .01)),
                                "c": noisy(4.0, (.01, .02, 0))}, {}, "a", last=False)
    assert rung1.stopped == ["c"]  # b is within the noise of a: kept
    at_budget = {"a": noisy(2.5, (0, .01, -.01)), "b": noisy(2.4, (.01, -.01, 0))}
    last = decide_rung(h, 30, at_budget, {}, "a", last=True)
    # The full budget: c caught up (not worse after all: a contradicted early stop), b is the winner.
    full = decide_rung(h, 30, {**at_budget, "c": noisy(2.405, (-.01, 0, .012))}, {}, "a", last=True)
    rows, halving_winner, full_winner = agreement([rung1, last], full)
    calls = {r.arm: (r.early, r.full, r.agrees) for r in rows}
    assert calls["a"] == ("worse @30", "worse", True)
    assert calls["c"] == ("worse @10", "not worse", False)
    assert calls["b"][2] and halving_winner == "b" and full_winner in ("b", "c")


@pytest.mark.parametrize("override, message", [
    ("halving.rungs=[100,33,300]", "must be positive and increasing"),
    ("halving.rungs=[33,100,400]", "must end at halving.budget=300 (past it)"),
    ("halving.cooldown=1.5", "must be a fraction of each rung"),
    ("halving.rungs=[2,100,300]", "does not fit"),
    ("optim.schedule=cosine", "must be a WSD run"),
    ("train.seed=1", "needs >= 2 seeds"),
    ("model.n_head=4,2", "sweeps one key besides train.seed"),
    ("halving.baseline=7", "is not one of the arms"),
    ("cluster.wait=false", "a halving sweep decides each rung from its runs' results, so it waits for every stage"),
])
def test_bad_input_is_one_error_line_before_anything_runs(tmp_path, override, message):
    result = run_cli(["minigpt.halving", *PRESET, f"hydra.sweep.dir={tmp_path / 's'}", override], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


def test_a_sweep_dir_of_another_sweep_is_refused(tmp_path):
    sweep = tmp_path / "s"
    (sweep / "some_run").mkdir(parents=True)
    result = run_cli(["minigpt.halving", *PRESET, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 2 and "not this halving sweep's" in result.stderr, result.stderr
    (sweep / "halving_state.json").write_text(json.dumps({"fingerprint": "another"}))
    result = run_cli(["minigpt.halving", *PRESET, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 2 and "holds another halving sweep" in result.stderr, result.stderr

