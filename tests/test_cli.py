"""Every entrypoint but train (a Hydra app: tests/test_train.py) turns bad input into one `error:` line on stderr and exit status 2 (minigpt/cli.py)."""

import pytest

from tests.conftest import ROOT, run_cli

BAD_INPUT = {
    "prepare": (["minigpt.prepare", "data=fineweb_edu_10b", "data.prepare.sorce=x"], "data.prepare.sorce"),
    "eval": (["minigpt.eval", "/no/such/run"], "/no/such/run"),
    "compare": (["minigpt.compare", "/no/such/sweep"], "/no/such/sweep"),
    "plan": (["minigpt.plan", "model.n_head=5"], "model.n_head=5"),
    "export_hf": (["minigpt.export_hf", "/no/such/ckpt.pt", "/tmp/never-written"], "/no/such/ckpt.pt"),
    "lm_eval_task": (["minigpt.hf.lm_eval_task", "/tmp/never-written", "--data", "/no/such.jsonl"], "/no/such.jsonl"),
    "bench": (["minigpt.bench", "train.batch_sze=4"], "train.batch_sze"),
    "bench.hellaswag": (["minigpt.bench.hellaswag", "--data", "/no/such.jsonl"], "/no/such.jsonl"),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_is_one_error_line_and_exit_2(name):
    args, named = BAD_INPUT[name]
    done = run_cli(args, cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
