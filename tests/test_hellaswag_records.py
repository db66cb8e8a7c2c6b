"""Per-example HellaSwag records (minigpt/eval/records.py) and the shared-context scoring that feeds them."""

import pyarrow.compute as pc
import pytest
import torch

from minigpt.data.tokenizer import get_gpt2_encoding
from minigpt.eval.hellaswag import HellaSwagScores, render_harness, render_llmc, score_hellaswag
from minigpt.eval.records import example_hash, read_records, records_files, write_records
from minigpt.eval.scoring import score_continuations
from minigpt.model import GPT
from tests.conftest import ROOT, read_metrics, run_cli, tiny_config
from tests.synthetic_hellaswag import make_examples, write_jsonl

ARCHS = ["gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"]


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_context_scoring_equals_one_row_per_sequence(arch):
    """Each context runs once for its four endings; scores match scoring every (context, ending) on its own,
    including rows cut to the context window (they keep their own sequence) and an empty context."""
    cfg = tiny_config(f"arch={arch}", "model.block_size=16")  # short: some rows must be truncated
    torch.manual_seed(0)
    model = GPT(cfg.arch, cfg.model).eval()
    enc = get_gpt2_encoding().encode_ordinary
    examples = make_examples(12)
    for render in (render_llmc, render_harness):
        rows = render(examples, enc).rows + [([], enc(" alone")), ([], enc(" again"))]
        assert any(len(c) + len(e) - 1 > 16 for c, e in rows) and any(len(c) + len(e) - 1 <= 16 for c, e in rows)
        shared, n_shared = score_continuations(model, rows, batch_size=7)
        alone = [score_continuations(model, [row], batch_size=1, share_contexts=False) for row in rows]
        assert torch.equal(n_shared, torch.cat([n for _, n in alone]))
        assert torch.allclose(shared, torch.cat([s for s, _ in alone]), atol=1e-4, rtol=0)


def _scores(protocol: str, n: int, seed: int) -> HellaSwagScores:
    g = torch.Generator().manual_seed(seed)
    loglik = -torch.rand(n, 4, generator=g, dtype=torch.float64) * 80
    n_tokens = torch.randint(3, 40, (n, 4), generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    return HellaSwagScores(protocol, loglik, n_tokens, loglik / n_tokens, labels)


def test_records_of_the_full_validation_set_stay_small_and_keep_every_answer(tmp_path):
    examples = make_examples(10042)
    scores = {p: _scores(p, 10042, i) for i, p in enumerate(["llmc", "harness"])}
    scores["harness"].labels = scores["llmc"].labels  # one data set: one label per example
    for ex, label in zip(examples, scores["llmc"].labels.tolist()):
        ex["label"] = label
    path = write_records(tmp_path / "hellaswag" / "step_000040.parquet", examples, scores, step=40)
    assert path.stat().st_size < 1_000_000
    table = read_records(path)
    assert table.num_rows == 2 * 10042 and table.schema.metadata[b"minigpt.step"] == b"40"
    for protocol, s in scores.items():
        rows = table.filter(pc.equal(table["protocol"].cast("string"), protocol)).to_pydict()
        assert rows["example"] == list(range(10042))
        assert rows["example_hash"] == [example_hash(ex) for ex in examples]
        assert rows["pred"] == s.pred.tolist() and rows["pred_norm"] == s.pred_norm.tolist()
        assert rows["correct_norm"] == (s.pred_norm == s.labels).tolist()
        assert rows["loglik_2"] == pytest.approx(s.loglik[:, 2].tolist(), rel=1e-6)
        assert rows["norm_len_1"] == s.n_tokens[:, 1].tolist()
    assert records_files(tmp_path) == {40: path}


def test_example_ids_are_stable_and_name_the_text():
    ex = make_examples(1)[0]
    assert example_hash(ex) == example_hash(dict(ex)) == example_hash({**ex, "label": 3, "activity_label": "x"})
    assert example_hash({**ex, "endings": [*ex["endings"][:3], "another ending."]}) != example_hash(ex)
    assert example_hash({**ex, "ctx": ex["ctx"] + "!"}) != example_hash(ex)


def test_training_and_the_eval_cli_write_records(tmp_path):
    data = write_jsonl(tmp_path / "hs.jsonl", make_examples(10, seed=3))
    run_dir = tmp_path / "run"
    hs = ["eval=hellaswag", "eval.hellaswag.every=2", "eval.hellaswag.limit=8", f"eval.hellaswag.path={data}"]
    from minigpt.trainer import Trainer

    Trainer(tiny_config("train.num_iterations=4", "train.val_loss_every=0", "train.sample_every=0", *hs),
            run_dir).fit()
    files = records_files(run_dir)
    assert list(files) == [2, 4]
    metrics = {(r["step"], k): v for r in read_metrics(run_dir) for k, v in r.items() if k.startswith("hellaswag/")}
    for step, path in files.items():
        table = read_records(path)
        for protocol in ("llmc", "harness"):
            rows = table.filter(pc.equal(table["protocol"].cast("string"), protocol)).to_pydict()
            assert len(rows["example"]) == 8
            assert sum(rows["correct_norm"]) / 8 == metrics[(step, f"hellaswag/{protocol}/acc_norm")]
            assert sum(rows["correct"]) / 8 == metrics[(step, f"hellaswag/{protocol}/acc")]

    # the standalone evaluation of the final checkpoint, on all 10 examples, replaces the step-4 file
    done = run_cli(["minigpt.eval", str(run_dir), f"eval.hellaswag.path={data}", "train.device=cpu"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"per-example records: {files[4]}" in done.stdout
    assert read_records(files[4]).num_rows == 2 * 10


def test_score_hellaswag_agrees_with_and_without_shared_contexts():
    cfg = tiny_config()
    torch.manual_seed(1)
    model = GPT(cfg.arch, cfg.model).eval()
    examples = make_examples(16, seed=5)
    shared = score_hellaswag(model, examples, "llmc", batch_size=16)
    assert shared.loglik.shape == (16, 4)
    rows = render_llmc(examples, get_gpt2_encoding().encode_ordinary).rows
    plain, _ = score_continuations(model, rows, batch_size=16, share_contexts=False)
    assert torch.allclose(shared.loglik.flatten(), plain, atol=1e-4, rtol=0)
