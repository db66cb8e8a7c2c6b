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


# These run as real processes: the shell sees exit status 2 and one stderr line, not only a return value.
IN_A_PROCESS = ("prepare", "eval")
# The module whose `main(argv)` each `python -m` runs (minigpt.compare's __main__ exits on import).
MAINS = {"minigpt.compare": "minigpt.compare.cli", "minigpt.plan": "minigpt.plan.__main__",
         "minigpt.bench": "minigpt.bench.__main__"}


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_is_one_error_line_and_exit_2(name):
    args, named = BAD_INPUT[name]
    done = run_cli(args, cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", [n for n in BAD_INPUT if n not in IN_A_PROCESS])
def test_bad_input_is_one_error_line_and_status_2_through_the_boundary(name, capsys, monkeypatch):
    """In this process, as `python -m` calls it: the module's `main(argv)`, through `@cli_errors` (which the
    entrypoints whose main returns results apply in their `__main__` block, as here)."""
    import importlib

    from minigpt.cli import cli_errors

    monkeypatch.chdir(ROOT)
    (module, *argv), named = BAD_INPUT[name]
    main = importlib.import_module(MAINS.get(module, module)).main
    status = (main if hasattr(main, "__wrapped__") else cli_errors(main))(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], err[-2000:]
