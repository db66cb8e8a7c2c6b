"""lm-evaluation-harness on an exported model gives minigpt's own HellaSwag numbers.

One tiny model is exported once and evaluated once by the README's `lm_eval run --model hf ...`
command (subprocess, offline) on the first N_EXAMPLES of the shared HellaSwag file, 0-shot, with the
task shipped in minigpt/hf/lm_eval_tasks. The same examples are scored by minigpt itself with the
harness protocol, and every per-choice log-likelihood, per-example prediction and the acc / acc_norm
counts must agree.
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
import torch.nn.functional as F

from minigpt.data.tokenizer import get_gpt2_encoding
from minigpt.hf import export_model
from minigpt.hf.lm_eval_task import write_task_dir
from tests.conftest import ROOT, SHARED_DATA
from tests.test_hf_export import random_model

N_EXAMPLES = 200
HELLASWAG = SHARED_DATA / "hellaswag" / "hellaswag_val_preprocessed.jsonl"
TASK_DIR = "minigpt/hf/lm_eval_tasks"  # relative to the repo root, as in the README


def harness_scores(model, examples: list[dict]) -> list[list[float]]:
    """Sum log-probabilities of each ending the way lm-eval's HFLM scores multiple choice.

    context = preprocess(activity_label + ": " + ctx), continuation = " " + preprocess(ending);
    continuation tokens are those of encode(context + continuation) after encode(context).
    """
    from lm_eval.tasks.hellaswag.utils import preprocess

    enc = get_gpt2_encoding()
    scores = []
    for ex in examples:
        context = preprocess(ex["activity_label"] + ": " + ex["ctx"])
        ctx_ids = enc.encode_ordinary(context)
        seqs = [enc.encode_ordinary(context + " " + preprocess(e)) for e in ex["endings"]]
        assert all(s[: len(ctx_ids)] == ctx_ids for s in seqs)
        T = max(len(s) for s in seqs) - 1
        assert T < model.block_size  # no truncation on either side
        x = torch.zeros(len(seqs), T, dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, : len(s) - 1] = torch.tensor(s[:-1])
        with torch.no_grad():
            logp = F.log_softmax(model(x)[0].float(), dim=-1)
        row = []
        for i, s in enumerate(seqs):
            pos = torch.arange(len(ctx_ids) - 1, len(s) - 1)
            row.append(logp[i, pos, torch.tensor(s[len(ctx_ids):])].sum().item())
        scores.append(row)
    return scores


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = random_model(["arch=rope_gqa", "model.block_size=128"], seed=3)
    out = tmp_path_factory.mktemp("hf_export")
    export_model(model, out)
    return model, out


@pytest.fixture(scope="module")
def lm_eval_run(exported, tmp_path_factory):
    """The README's lm_eval command, run from the repo root with the shipped task folder."""
    _, model_dir = exported
    results_dir = tmp_path_factory.mktemp("lm_eval")
    cmd = [
        str(Path(sys.executable).with_name("lm_eval")), "run",
        "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
        "--tasks", "hellaswag_local", "--include_path", TASK_DIR, "--device", "cpu",
        "--batch_size", "16", "--limit", str(N_EXAMPLES), "--output_path", str(results_dir), "--log_samples",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(results_dir / "datasets_cache")}  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(Path(glob.glob(f"{results_dir}/**/results_*.json", recursive=True)[0]).read_text())
    samples_file = glob.glob(f"{results_dir}/**/samples_hellaswag_local_*.jsonl", recursive=True)[0]
    samples = sorted((json.loads(line) for line in open(samples_file)), key=lambda s: s["doc_id"])
    return proc, results["results"]["hellaswag_local"], samples


def test_lm_eval_matches_minigpt_harness_protocol(exported, lm_eval_run):
    model, _ = exported
    proc, metrics, samples = lm_eval_run
    assert "hellaswag_local" in proc.stdout and "acc_norm" in proc.stdout  # the results table
    examples = [json.loads(line) for line, _ in zip(open(HELLASWAG, encoding="utf-8"), range(N_EXAMPLES))]
    assert [s["doc_id"] for s in samples] == list(range(N_EXAMPLES))
    ours = harness_scores(model, examples)
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    assert torch.allclose(torch.tensor(theirs), torch.tensor(ours), rtol=1e-5, atol=1e-3)

    gold = [ex["label"] for ex in examples]
    lengths = [[len(c) for c in s["doc"]["choices"]] for s in samples]  # acc_norm divides by characters
    pred = [max(range(4), key=row.__getitem__) for row in ours]
    pred_norm = [max(range(4), key=lambda j: row[j] / n[j]) for row, n in zip(ours, lengths)]
    acc = sum(p == g for p, g in zip(pred, gold))
    acc_norm = sum(p == g for p, g in zip(pred_norm, gold))
    assert [s["acc"] for s in samples] == [float(p == g) for p, g in zip(pred, gold)]
    assert [s["acc_norm"] for s in samples] == [float(p == g) for p, g in zip(pred_norm, gold)]
    assert round(metrics["acc,none"] * N_EXAMPLES) == acc
    assert round(metrics["acc_norm,none"] * N_EXAMPLES) == acc_norm
    print(f"lm-eval acc {metrics['acc,none']} acc_norm {metrics['acc_norm,none']}; minigpt {acc}/{N_EXAMPLES} {acc_norm}/{N_EXAMPLES}")


def test_task_writer_handles_both_hellaswag_layouts(tmp_path):
    """`python -m minigpt.hf.lm_eval_task` points the task at any file; its docs follow lm-eval's hellaswag."""
    import datasets

    out = write_task_dir(HELLASWAG, tmp_path / "tasks", name="hs_mine")
    yaml = (out / "hs_mine.yaml").read_text()
    assert "task: hs_mine" in yaml and json.dumps(str(HELLASWAG.resolve())) in yaml
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
