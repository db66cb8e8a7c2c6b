"""lm-evaluation-harness on an exported model gives minigpt's own HellaSwag numbers.

One tiny model is exported once and evaluated by the README's `lm_eval run --model hf ...` command
(subprocess, offline) on the 200 committed HellaSwag examples, 0-shot, in both file layouts (the
ctx-only copy and the official ctx_a/ctx_b layout: one task each, in one lm_eval run), with the tasks
that `python -m minigpt.hf.lm_eval_task` writes. The same examples are scored by minigpt itself with
its `harness` protocol (minigpt.eval.score_hellaswag), and every per-choice log-likelihood,
per-example prediction and the acc / acc_norm counts must agree.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt.eval import evaluate_hellaswag, score_hellaswag
from minigpt.eval.hellaswag_data import OFFICIAL_NAME, read_jsonl
from minigpt.hf import export_model
from minigpt.hf.lm_eval_task import write_task_dir
from tests.conftest import HELLASWAG_200, HELLASWAG_200_OFFICIAL, ROOT, run_cli
from tests.test_hf_export import random_model

N_EXAMPLES = 200
LAYOUTS = {"hellaswag_local": HELLASWAG_200, "hellaswag_official_layout": HELLASWAG_200_OFFICIAL}  # task -> file


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = random_model(["arch=rope_gqa", "model.block_size=128"], seed=3)
    out = tmp_path_factory.mktemp("hf_export")
    export_model(model, out)
    return model, out


@pytest.fixture(scope="module")
def lm_eval_run(exported, tmp_path_factory):
    """The README's two commands: write the task (one per file layout, in one folder), then one lm_eval run."""
    _, model_dir = exported
    results_dir = tmp_path_factory.mktemp("lm_eval")
    task_dir = results_dir / "task"
    for name, path in LAYOUTS.items():
        out = run_cli(["minigpt.hf.lm_eval_task", str(task_dir), "--data", str(path), "--name", name], cwd=ROOT)
        assert out.returncode == 0 and f"--include_path {task_dir}" in out.stdout, out.stderr[-2000:]
    cmd = [
        str(Path(sys.executable).with_name("lm_eval")), "run",
        "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
        "--tasks", ",".join(LAYOUTS), "--include_path", str(task_dir), "--device", "cpu",
        "--batch_size", "16", "--limit", str(N_EXAMPLES), "--output_path", str(results_dir), "--log_samples",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(results_dir / "datasets_cache")}  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(Path(glob.glob(f"{results_dir}/**/results_*.json", recursive=True)[0]).read_text())
    samples = {}
    for name in LAYOUTS:
        samples_file = glob.glob(f"{results_dir}/**/samples_{name}_*.jsonl", recursive=True)[0]
        samples[name] = sorted((json.loads(line) for line in open(samples_file)), key=lambda s: s["doc_id"])
    return proc, results["results"], samples


@pytest.mark.parametrize("task", list(LAYOUTS))
def test_lm_eval_matches_minigpt_harness_protocol(exported, lm_eval_run, task):
    model, _ = exported
    proc, results, all_samples = lm_eval_run
    metrics, samples, examples = results[task], all_samples[task], read_jsonl(LAYOUTS[task])
    assert task in proc.stdout and "acc_norm" in proc.stdout  # the results table
    assert len(examples) == N_EXAMPLES
    assert [s["doc_id"] for s in samples] == list(range(N_EXAMPLES))
    ours = score_hellaswag(model, examples, "harness")
    theirs = torch.tensor([[float(r[0]) for r in s["filtered_resps"]] for s in samples], dtype=torch.float64)
    assert torch.allclose(theirs, ours.loglik, rtol=1e-5, atol=1e-3)

    gold = ours.labels.tolist()
    assert gold == [s["doc"]["gold"] for s in samples]
    assert [s["acc"] for s in samples] == (ours.pred == ours.labels).double().tolist()
    assert [s["acc_norm"] for s in samples] == (ours.pred_norm == ours.labels).double().tolist()
    acc, acc_norm = int((ours.pred == ours.labels).sum()), int((ours.pred_norm == ours.labels).sum())
    assert round(metrics["acc,none"] * N_EXAMPLES) == acc
    assert round(metrics["acc_norm,none"] * N_EXAMPLES) == acc_norm
    reported = evaluate_hellaswag(model, examples, "harness")  # the numbers minigpt's eval prints
    assert (reported["n"], reported["acc"], reported["acc_norm"]) == (N_EXAMPLES, metrics["acc,none"], metrics["acc_norm,none"])
    diff = (theirs - ours.loglik).abs().max().item()
    print(f"max |loglik diff| {diff:.2e}; lm-eval acc {metrics['acc,none']} acc_norm {metrics['acc_norm,none']}; "
          f"minigpt harness {acc}/{N_EXAMPLES} {acc_norm}/{N_EXAMPLES}")  # fmt: skip


def test_task_writer_handles_both_hellaswag_layouts(tmp_path):
    """The task points at any file; its docs follow lm-eval's hellaswag for both layouts."""
    import datasets

    out = write_task_dir(tmp_path / "tasks", HELLASWAG_200, name="hs_mine")
    yaml = (out / "hs_mine.yaml").read_text()
    assert "task: hs_mine" in yaml and json.dumps(str(HELLASWAG_200.resolve())) in yaml
    spec = importlib.util.spec_from_file_location("task_utils", out / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    official = {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
                "ctx": "unused", "endings": ["a [title] b", "c", "d", "e"], "label": "3"}  # fmt: skip
    preprocessed = {"activity_label": "Roof shingle removal", "ctx": "A man is sitting on a roof. he",
                    "endings": ["a", "c", "d", "e"], "label": 3}  # fmt: skip
    docs = utils.process_docs(datasets.Dataset.from_list([official]))
    docs2 = utils.process_docs(datasets.Dataset.from_list([preprocessed]))
    assert docs[0]["query"] == "Roof shingle removal: A man is sitting on a roof. He"  # lm-eval capitalizes ctx_b
    assert docs[0]["choices"][0] == "a. b" and docs[0]["gold"] == 3
    assert docs2[0]["query"] == "Roof shingle removal: A man is sitting on a roof. he" and docs2[0]["gold"] == 3


def test_task_writer_defaults_to_the_cached_official_file(tmp_path, monkeypatch):
    from minigpt.hf.lm_eval_task import main

    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    # nothing cached: one line that says how to get the file, exit 2, nothing written
    out = run_cli(["minigpt.hf.lm_eval_task", str(tmp_path / "t1")], cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: no HellaSwag file given and none cached in ") and "--data <file>" in line
    assert str(tmp_path / "cache" / "hellaswag" / OFFICIAL_NAME) in line and not (tmp_path / "t1").exists()
    # a missing --data file is named
    assert main([str(tmp_path / "t2"), "--data", str(tmp_path / "nope.jsonl")]) == 2
    # the cached official file (as minigpt's verified download leaves it) is the default
    cached = tmp_path / "cache" / "hellaswag" / OFFICIAL_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(HELLASWAG_200_OFFICIAL.read_bytes())
    assert main([str(tmp_path / "t3")]) == 0
    assert json.dumps(str(cached.resolve())) in (tmp_path / "t3" / "hellaswag_local.yaml").read_text()
