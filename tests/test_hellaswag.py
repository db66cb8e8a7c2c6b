"""HellaSwag: loading, both protocols on examples with known answers, batching parity, chance level, training, CLI."""

import hashlib
import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from minigpt.config import ArchConfig, HellaSwagConfig, ModelConfig
from minigpt.data.tokenizer import get_gpt2_encoding
from minigpt.errors import ConfigError
from minigpt.eval import hellaswag_data
from minigpt.eval.hellaswag import (
    encode_pair_harness,
    evaluate_hellaswag,
    harness_choices,
    harness_query,
    render_llmc,
    score_hellaswag,
)
from minigpt.eval.hellaswag_data import HellaSwagUnavailable, load_hellaswag, read_jsonl
from minigpt.eval.scoring import score_continuations
from minigpt.model import GPT
from minigpt.trainer import Trainer
from minigpt.validate import validate
from tests.conftest import (
    FIXTURES,
    HELLASWAG_200,
    HELLASWAG_200_OFFICIAL,
    ROOT,
    full_hellaswag,
    read_metrics,
    run_cli,
    tiny_config,
)

MALFORMED = FIXTURES / "hellaswag" / "malformed"
UNREACHABLE = "http://127.0.0.1:9/hellaswag_val.jsonl"  # the discard port: connection refused, i.e. offline

# Official-schema rows (WikiHow markers included) to check the harness rendering against lm-eval's own code.
OFFICIAL_ROWS = [
    {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow covering the "
     "window of a car, and a woman wearing winter clothes smiles.", "ctx_b": "then", "ctx": "Then, the man writes over "
     "the snow covering the window of a car, and a woman wearing winter clothes smiles. then",
     "endings": [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift, while two men "
     "supporting the head of the person wearing winter clothes snow as the we girls sled.", ", the man puts on a "
     "christmas coat, knitted with netting.", ", the man continues removing the snow on his car."], "label": 3},
    {"ind": 7, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a grill [title] Scrape the grates. "
     "[step] Use a wire brush.", "ctx_b": "rinse them [substeps] well", "ctx": "...",
     "endings": ["[title] Dry the  grates. [step] Wipe.", " Let them soak [title] overnight.", "Burn them.",
     "Paint [header] them."], "label": 0},
]


def _gpt(block_size=64, arch=None, n_embd=32, n_layer=2, seed=0):
    torch.manual_seed(seed)
    return GPT(arch or ArchConfig(), ModelConfig(n_layer=n_layer, n_embd=n_embd, n_head=4, block_size=block_size))


# ----------------------------------------------------------------------------- loading


def test_fixture_loads_in_the_common_shape():
    examples = read_jsonl(HELLASWAG_200)
    assert len(examples) == 200
    counts = [sum(ex["label"] == k for ex in examples) for k in range(4)]
    assert counts == [53, 47, 58, 42]  # the label counts in tests/fixtures/hellaswag/README.md
    first = examples[0]
    assert first["activity_label"] == "Roof shingle removal" and first["ctx"] == "A man is sitting on a roof. he"
    assert first["ctx_a"] is None and len(first["endings"]) == 4 and first["label"] == 3
    # without ctx_a/ctx_b the harness query falls back to ctx
    assert harness_query(first) == "Roof shingle removal: A man is sitting on a roof. he"


def test_official_layout_loads_the_same_examples_and_joins_ctx_a_ctx_b(tmp_path):
    official, ctx_only = read_jsonl(HELLASWAG_200_OFFICIAL), read_jsonl(HELLASWAG_200)
    keys = ("activity_label", "ctx", "endings", "label")
    assert [[ex[k] for k in keys] for ex in official] == [[ex[k] for k in keys] for ex in ctx_only]
    assert all(ex["ctx_a"] and ex["ctx_b"] is not None for ex in official)
    # the harness joins ctx_a and the capitalized ctx_b, as lm-eval does
    assert harness_query(official[0]) == "Roof shingle removal: A man is sitting on a roof. He"
    assert harness_query(official[1]) == "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady"
    # rows without ctx get it rebuilt from ctx_a + " " + ctx_b
    rows = [json.loads(line) for line in HELLASWAG_200_OFFICIAL.read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "no_ctx.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "ctx"}) + "\n" for r in rows))
    assert [ex["ctx"] for ex in read_jsonl(path)] == [ex["ctx"] for ex in ctx_only]


@pytest.mark.parametrize(
    "name,match",
    [("truncated_json", r"truncated_json.jsonl:2: not valid JSON"),
     ("no_endings", r"no_endings.jsonl:1: not a HellaSwag example"),
     ("no_context", r"no_context.jsonl:1: not a HellaSwag example .*'ctx'"),
     ("three_endings", r"three_endings.jsonl:1: a HellaSwag example needs 4 endings"),
     ("label_out_of_range", r"label_out_of_range.jsonl:1: a HellaSwag example needs 4 endings and a label in 0..3"),
     ("empty", r"empty.jsonl has no examples")],
)
def test_malformed_files_fail_in_one_line_naming_file_and_line(name, match):
    with pytest.raises(ConfigError, match=match) as info:
        read_jsonl(MALFORMED / f"{name}.jsonl")
    assert "\n" not in str(info.value)


def test_full_validation_set_loads_all_examples():
    """With MINIGPT_HELLASWAG set: the complete set, official or preprocessed, in the common shape."""
    examples = read_jsonl(full_hellaswag())
    assert len(examples) == hellaswag_data.NUM_VAL == 10042
    assert [sum(ex["label"] == k for ex in examples) for k in range(4)] == [2515, 2485, 2584, 2458]
    assert examples[0]["activity_label"] == "Roof shingle removal" and examples[0]["label"] == 3


def test_official_schema_and_harness_rendering_match_lm_eval(tmp_path):
    datasets = pytest.importorskip("datasets")
    lm_utils = pytest.importorskip("lm_eval.tasks.hellaswag.utils")
    path = tmp_path / "official.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in OFFICIAL_ROWS))
    examples = read_jsonl(path)
    assert [ex["label"] for ex in examples] == [3, 0] and examples[0]["ind"] == 4
    reference = lm_utils.process_docs(datasets.Dataset.from_list(OFFICIAL_ROWS))
    for ex, ref in zip(examples, reference):
        assert harness_query(ex) == ref["query"] and harness_choices(ex) == ref["choices"]
    # the WikiHow markers, by hand: " [title]" -> ". ", other [tags] dropped, double spaces collapsed
    assert harness_query(examples[1]) == "Home and Garden: How to clean a grill. Scrape the grates. Use a wire brush. Rinse them well"
    assert harness_choices(examples[1]) == [" Dry the grates. Wipe.", "Let them soak. overnight.", "Burn them.", "Paint them."]
    # ctx is rebuilt from ctx_a/ctx_b when a row lacks it
    (row,) = [dict(OFFICIAL_ROWS[0])]
    del row["ctx"]
    path.write_text(json.dumps(row) + "\n")
    assert read_jsonl(path)[0]["ctx"] == OFFICIAL_ROWS[0]["ctx"]


def test_harness_pair_encoding_moves_trailing_spaces_to_the_continuation():
    enc = get_gpt2_encoding().encode_ordinary
    ctx, cont = encode_pair_harness(enc, "Making a cake. ", " Add eggs.")
    assert ctx == enc("Making a cake.") and cont == enc("Making a cake.  Add eggs.")[len(ctx):]


def test_loader_order_sha_check_and_offline_message(tmp_path, monkeypatch):
    hc = HellaSwagConfig(cache_dir=str(tmp_path / "cache"), url=UNREACHABLE)
    with pytest.raises(HellaSwagUnavailable, match="eval.hellaswag.path=") as info:
        load_hellaswag(hc, log=lambda _: None)
    assert "\n" not in str(info.value) and "no network" in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_hellaswag(HellaSwagConfig(path=str(tmp_path / "nope.jsonl")))

    # a "download" (file:// URL) whose sha256 is wrong is rejected and nothing is cached
    fake = tmp_path / "served.jsonl"
    fake.write_text(json.dumps(OFFICIAL_ROWS[0]) + "\n")
    dest = tmp_path / "cache" / hellaswag_data.OFFICIAL_NAME
    with pytest.raises(ValueError, match="sha256"):
        hellaswag_data.download_official(dest, fake.as_uri())
    assert not dest.exists()
    # with the matching hash the file is cached, then served from the cache without any download
    monkeypatch.setattr(hellaswag_data, "OFFICIAL_SHA256", hashlib.sha256(fake.read_bytes()).hexdigest())
    assert len(load_hellaswag(HellaSwagConfig(cache_dir=str(tmp_path / "cache"), url=fake.as_uri()))) == 1
    assert dest.read_bytes() == fake.read_bytes()
    fake.unlink()
    assert load_hellaswag(hc)[0]["label"] == 3
    # an explicit path wins over the cache
    assert len(load_hellaswag(HellaSwagConfig(path=str(HELLASWAG_200), cache_dir=hc.cache_dir))) == 200


# ----------------------------------------------------------------------------- scoring


class UnigramModel(torch.nn.Module):
    """Ignores the context: every position predicts the same distribution softmax(weights)."""

    block_size = 64

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, idx):
        return self.weights.expand(*idx.shape, -1), None


def test_protocols_pick_the_endings_a_constructed_model_favours():
    enc = get_gpt2_encoding()
    words = {" good": 5.0, " nice": 4.0, " understanding": 2.5}
    weights = torch.zeros(50257)
    for w, v in words.items():
        (tok,) = enc.encode_ordinary(w)  # each is a single GPT-2 token
        weights[tok] = v
    lp = {w: F.log_softmax(weights, 0)[enc.encode_ordinary(w)[0]].item() for w in (*words, " bad")}
    endings = ["nice", "good good", "understanding", "bad"]
    # sum: nice -6.8 (best); per token: good good -5.8 (best); per character: understanding -8.3/13 (best)
    expected_ll = [lp[" nice"], 2 * lp[" good"], lp[" understanding"], lp[" bad"]]
    ex = {"activity_label": "Cooking", "ctx": "The cook tastes the soup. it", "ctx_a": None, "ctx_b": None,
          "endings": endings, "label": 0}
    model = UnigramModel(weights)
    llmc = score_hellaswag(model, [ex], "llmc", encode=enc.encode_ordinary)
    harness = score_hellaswag(model, [ex], "harness", encode=enc.encode_ordinary)
    for s in (llmc, harness):
        assert s.loglik[0].tolist() == pytest.approx(expected_ll, abs=1e-4)
        assert s.n_tokens[0].tolist() == [1, 2, 1, 1]
        assert s.pred.item() == 0  # highest summed log-likelihood = lowest summed loss
    assert llmc.pred_norm.item() == 1  # lowest mean loss per token
    assert harness.pred_norm.item() == 2  # highest log-likelihood per character of the choice
    assert harness.norm[0].tolist() == pytest.approx([ll / len(e) for ll, e in zip(expected_ll, endings)], abs=1e-5)

    for label, acc, acc_norm in [(0, 1.0, 0.0), (1, 0.0, 1.0)]:
        r = evaluate_hellaswag(model, [{**ex, "label": label}], "llmc", encode=enc.encode_ordinary)
        assert (r["acc"], r["acc_norm"], r["n"]) == (acc, acc_norm, 1)


def _reference_row_logprob(model, ctx, cont):
    """One row alone through the plain forward pass (full logits), the build-nanogpt way, left-truncated."""
    tokens = (ctx + cont)[-(model.block_size + 1):]
    n = min(len(cont), len(tokens) - 1)
    logits, _ = model(torch.tensor([tokens[:-1]]))
    logprobs = F.log_softmax(logits[0, -n:].double(), dim=-1)
    return logprobs.gather(1, torch.tensor(tokens[-n:])[:, None]).sum().item(), n


@pytest.mark.parametrize("arch", ["gpt2", "swiglu_gqa_rope"])
def test_batched_scores_equal_one_row_at_a_time(arch):
    from minigpt.eval.hellaswag import render_harness

    examples = read_jsonl(HELLASWAG_200)[:4]
    cfg = tiny_config(f"arch={arch}", "model.n_embd=32", "model.block_size=48")  # 48 < most rows: truncation
    model = _gpt(block_size=48, arch=cfg.arch)
    enc = get_gpt2_encoding().encode_ordinary
    rows = render_llmc(examples, enc).rows + render_harness(examples, enc).rows
    assert max(len(c) + len(e) for c, e in rows) > 49  # some rows are cut from the left
    batched, n_batched = score_continuations(model, rows, batch_size=7)
    alone = [score_continuations(model, [row], batch_size=1) for row in rows]
    reference = [_reference_row_logprob(model, list(c), list(e)) for c, e in rows]
    assert batched.tolist() == pytest.approx([a[0].item() for a in alone], abs=1e-5)
    assert batched.tolist() == pytest.approx([r[0] for r in reference], abs=1e-5)
    assert n_batched.tolist() == [r[1] for r in reference]


@pytest.mark.parametrize("protocol", ["harness", "llmc"])
def test_bf16_scores_close_to_fp32(protocol):
    """bf16 autocast changes no prediction, and each token's log-likelihood by at most 2e-3 nats (3.5e-4 measured
    on these examples; a log-softmax in bf16 instead of float32 moves it by ~1e-2)."""
    examples = read_jsonl(HELLASWAG_200)[:4]
    model = _gpt()
    fp32 = score_hellaswag(model, examples, protocol)
    bf16 = score_hellaswag(model, examples, protocol, dtype="bfloat16")
    assert torch.equal(bf16.n_tokens, fp32.n_tokens)
    assert torch.equal(bf16.pred, fp32.pred) and torch.equal(bf16.pred_norm, fp32.pred_norm)
    per_token = (bf16.loglik - fp32.loglik).abs() / fp32.n_tokens
    assert 0 < per_token.max() < 2e-3, per_token  # > 0: autocast really ran


def _random_model_accuracy(examples) -> dict:
    model = _gpt(block_size=32, n_embd=16, n_layer=1)
    return evaluate_hellaswag(model, examples, "llmc", batch_size=512)


def _assert_chance_from_real_choices(r: dict) -> None:
    """An untrained model scores at chance, and by choosing: a constant (or near-constant) scorer would score
    at chance too, so every ending must be its pick for at least 1 example in 8 (the seeded model here: 18%),
    and its accuracy must be a plausible draw of Binomial(n, 1/4) (two-sided p > 0.001)."""
    scores, n = r["scores"], r["n"]
    for pred, acc in ((scores.pred, r["acc"]), (scores.pred_norm, r["acc_norm"])):
        counts = torch.bincount(pred, minlength=4)
        assert counts.sum() == n and counts.min() >= n / 8, counts.tolist()
        correct = int((pred == scores.labels).sum())
        assert correct == round(acc * n)
        assert binomtest(correct, n, 0.25).pvalue > 0.001, (correct, n)


def test_tiny_random_model_scores_at_chance_on_200_examples():
    r = _random_model_accuracy(read_jsonl(HELLASWAG_200))
    assert r["n"] == 200
    _assert_chance_from_real_choices(r)


def test_tiny_random_model_scores_at_chance_on_1000_examples():
    """With MINIGPT_HELLASWAG set: the same on more examples (a tighter interval)."""
    r = _random_model_accuracy(read_jsonl(full_hellaswag())[:1000])
    assert r["n"] == 1000
    _assert_chance_from_real_choices(r)


# ----------------------------------------------------------------------------- training and CLI

FAST = ["train.num_iterations=2", "train.val_loss_every=0", "train.sample_every=0", "eval=hellaswag"]


def test_training_logs_hellaswag_and_the_cli_prints_both_protocols(tmp_path):
    cfg = tiny_config(*FAST, "eval.hellaswag.every=1", "eval.hellaswag.limit=8", f"eval.hellaswag.path={HELLASWAG_200}")
    Trainer(cfg, tmp_path).fit()
    rows = [r for r in read_metrics(tmp_path) if "hellaswag/llmc/acc" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("hellaswag/llmc/acc", "hellaswag/llmc/acc_norm", "hellaswag/harness/acc", "hellaswag/harness/acc_norm"):
        assert all(0.0 <= r[key] <= 1.0 and (r[key] * 8) % 1 == 0 for r in rows), key

    out = run_cli(["minigpt.eval", str(tmp_path), "eval.hellaswag.limit=8", f"eval.hellaswag.path={HELLASWAG_200}",
                   "eval.hellaswag.batch_size=16"], cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["protocol"])
    assert lines[header].split() == ["protocol", "acc", "acc_norm", "n", "examples/s"]
    assert lines[header + 3] == f"per-example records: {tmp_path / 'hellaswag' / 'step_000002.parquet'}"
    final = rows[-1]
    for line, name in zip(lines[header + 1:header + 3], ("llmc", "harness")):
        proto, acc, acc_norm, n, speed = line.split()
        assert proto == name and int(n) == 8 and float(speed) > 0
        assert float(acc) == pytest.approx(final[f"hellaswag/{name}/acc"], abs=1e-4)
        assert float(acc_norm) == pytest.approx(final[f"hellaswag/{name}/acc_norm"], abs=1e-4)



def test_cli_rejects_a_misspelt_override_in_one_line():
    from minigpt.eval.__main__ import compose_eval_config

    with pytest.raises(ConfigError, match="Could not override 'eval.hellaswag.limt'") as info:
        compose_eval_config(["eval.hellaswag.limt=8"])
    assert "\n" not in str(info.value)
    assert compose_eval_config(["eval.hellaswag.limit=8"]).eval.hellaswag.limit == 8


def test_missing_data_offline_warns_once_and_training_completes(tmp_path, caplog):
    cfg = tiny_config(*FAST, f"eval.hellaswag.cache_dir={tmp_path / 'empty'}", f"eval.hellaswag.url={UNREACHABLE}")
    with caplog.at_level(logging.INFO, logger="minigpt"):
        trainer = Trainer(cfg, tmp_path / "run")
        final = trainer.fit()
    # one line in all (no "downloading ..." line before it: that comes only once a server answers)
    lines = [r.getMessage() for r in caplog.records if "HellaSwag" in r.getMessage()]
    assert len(lines) == 1 and "eval.hellaswag.path=" in lines[0] and "training continues" in lines[0]
    assert math.isfinite(final["train/loss"]) and trainer.step == 2
    assert not any(k.startswith("hellaswag/") for r in read_metrics(tmp_path / "run") for k in r)


@pytest.mark.parametrize(
    "override,match",
    [("eval.hellaswag.protocols=[llmc,lmeval]", "unknown HellaSwag protocol"),
     ("eval.hellaswag.batch_size=0", "batch_size=0 must be positive"),
     ("eval.hellaswag.path=/no/such/file.jsonl", "does not exist")],
)
def test_bad_hellaswag_config_fails_before_training(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        validate(tiny_config(*FAST, override))
