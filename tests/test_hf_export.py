"""HF export: every arch preset (and extra combinations) loads in transformers with minigpt's logits.

Models are tiny and randomly initialised, with weights scaled up so logits are O(1) and spread out:
a wrong mapping (transposed weight, wrong RoPE convention, missing bias) then shows as a large
difference, and greedy decoding is not decided by float noise.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from minigpt.checkpoint import load_model, save_checkpoint
from minigpt.config import to_container
from minigpt.data.tokenizer import EOT_TOKEN, get_gpt2_encoding
from minigpt.errors import ConfigError
from minigpt.export_hf import main as export_hf_main
from minigpt.hf import export_model
from minigpt.hf.importer import from_pretrained_gpt2
from minigpt.model import GPT
from tests.conftest import ROOT, run_cli, tiny_config

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "arch").glob("*.yaml"))
EXPECTED_CLASS = {
    "gpt2": "GPT2LMHeadModel",
    "rope": "Starcoder2ForCausalLM",
    "rope_gqa": "Starcoder2ForCausalLM",
    "swiglu_gqa_rope": "LlamaForCausalLM",
    "modern": "NanoChatForCausalLM",
}
# Extra combinations beyond the presets: (overrides, expected class).
COMBINATIONS = [
    (["arch=gpt2", "arch.q_per_kv=2"], "GPT2LMHeadModel"),  # GQA expanded to MHA
    (["arch=gpt2", "arch.bias=false", "arch.tie_embeddings=false"], "GPT2LMHeadModel"),
    (["arch=rope", "arch.bias=false", "arch.norm_eps=1e-6", "arch.rope_theta=500000"], "Starcoder2ForCausalLM"),
    (["arch=rope_gqa", "arch.norm=rmsnorm"], "ArceeForCausalLM"),
    (["arch=rope", "arch.norm=rmsnorm", "arch.bias=false"], "ArceeForCausalLM"),
    (["arch=rope_gqa", "arch.mlp=swiglu", "arch.bias=false"], "StableLmForCausalLM"),
    (["arch=swiglu_gqa_rope", "arch.bias=true", "arch.tie_embeddings=false"], "LlamaForCausalLM"),
    (["arch=swiglu_gqa_rope", "arch.q_per_kv=1"], "LlamaForCausalLM"),
    # the modern recipe's switches: ReLU^2, QK-norm, embedding norm, softcap; zero-init and untied ride along
    (["arch=gpt2", "arch.mlp=relu2", "arch.zero_init_proj=true", "arch.tie_embeddings=false"], "GPT2LMHeadModel"),
    (["arch=rope", "arch.mlp=relu2"], "Starcoder2ForCausalLM"),
    (["arch=rope_gqa", "arch.norm=rmsnorm", "arch.mlp=relu2", "arch.bias=false"], "ArceeForCausalLM"),
    (["arch=swiglu_gqa_rope", "arch.qk_norm=true", "arch.tie_embeddings=false"], "Qwen3ForCausalLM"),
    (["arch=modern", "arch.q_per_kv=2", "arch.tie_embeddings=true"], "NanoChatForCausalLM"),
    (["arch=modern", "arch.mlp=gelu", "arch.logit_softcap=null", "arch.norm_eps=1e-6"], "NanoChatForCausalLM"),
]
REFUSED = [
    (["arch=gpt2", "arch.norm=rmsnorm", "arch.mlp=swiglu"], "learned positions \\+ rmsnorm \\+ swiglu"),
    (["arch=gpt2", "arch.norm=rmsnorm"], "learned positions \\+ rmsnorm \\+ gelu"),
    (["arch=gpt2", "arch.mlp=swiglu"], "learned positions \\+ layernorm \\+ swiglu"),
    (["arch=rope", "arch.mlp=swiglu", "arch.bias=true"], "RoPE \\+ layernorm \\+ swiglu MLP \\+ biases"),
    # each modern switch that no native class combines with the rest: the message names the switch
    (["arch=gpt2", "arch.qk_norm=true"], "learned positions .* QK-norm exactly .*cannot express arch.qk_norm=true\\)"),
    (["arch=gpt2", "arch.logit_softcap=15"], "learned positions .* logit softcap 15.0 exactly .*cannot express arch.logit_softcap=15.0\\)"),
    (["arch=gpt2", "arch.embed_norm=true"], "learned positions .* embedding norm exactly .*cannot express arch.embed_norm=true\\)"),
    (["arch=modern", "arch.embed_norm=false"], "RoPE .* QK-norm .*NanoChatForCausalLM, cannot express arch.embed_norm=false\\)"),
    (["arch=modern", "arch.mlp=swiglu"], "RoPE .*NanoChatForCausalLM, cannot express arch.mlp=swiglu\\)"),
    (["arch=swiglu_gqa_rope", "arch.logit_softcap=30"], "RoPE .*cannot express arch.logit_softcap=30.0\\)"),
]


def random_model(overrides: list[str], seed: int = 0) -> GPT:
    """A tiny GPT whose weights make O(1) logits: fan-in scaled matrices, perturbed norms and biases."""
    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    model = GPT(cfg.arch, cfg.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("wte.weight") or name.endswith("wpe.weight"):
                p.normal_(0, 1.0)
            elif p.dim() == 2:
                p.normal_(0, 1.0 / math.sqrt(p.size(1)))
            elif "ln" in name:
                p.add_(torch.randn_like(p) * 0.2)  # norm weights around 1, biases around 0
            else:
                p.normal_(0, 0.2)  # linear biases
    model.checkpoint_config = to_container(cfg)
    return model.eval()


def check_parity(model: GPT, out_dir) -> dict:
    """Load the export with transformers; compare logits and a 20-token greedy continuation."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out_dir)  # no trust_remote_code
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, model.vocab_size, (2, 40), generator=g)
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert theirs.shape == ours.shape == (2, 40, 50257)
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-4, f"max abs logit diff {diff}"
    assert ours.std() > 0.5  # logits are spread out, so the comparison is meaningful

    prompt = idx[:1, :8]
    expected = model.generate(prompt, max_new_tokens=20, temperature=0)
    got = hf.generate(prompt, max_new_tokens=20, do_sample=False)
    n = got.size(1)  # shorter only if the model greedily emitted <|endoftext|> (generation stops there)
    assert n == 28 or got[0, -1].item() == EOT_TOKEN
    assert torch.equal(got, expected[:, :n])
    return {"class": type(hf).__name__, "diff": diff}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_arch_preset_exports_with_parity(preset, tmp_path):
    assert preset in EXPECTED_CLASS, f"new arch preset {preset}: add it to EXPECTED_CLASS"
    model = random_model([f"arch={preset}"])
    report = export_model(model, tmp_path)
    assert report["max_logit_diff"] < 1e-4
    assert check_parity(model, tmp_path)["class"] == EXPECTED_CLASS[preset]
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab_size"] == 50257 and config["bos_token_id"] == config["eos_token_id"] == EOT_TOKEN


@pytest.mark.parametrize("overrides,expected", COMBINATIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_component_combinations_export_with_parity(overrides, expected, tmp_path):
    model = random_model(overrides)
    export_model(model, tmp_path)
    assert check_parity(model, tmp_path)["class"] == expected


@pytest.mark.parametrize("overrides,message", REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_inexpressible_combinations_are_refused(overrides, message, tmp_path):
    model = random_model(overrides)
    with pytest.raises(ConfigError, match=f"no native transformers class expresses {message}"):
        export_model(model, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_vocabulary_smaller_than_gpt2_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="smaller than the GPT-2 tokenizer's 50257 tokens"):
        export_model(random_model(["arch=gpt2", "model.vocab_size=1000"]), tmp_path)


def test_tokenizer_and_pipeline(tmp_path):
    """The exported tokenizer is GPT-2's (ids equal to tiktoken's) and text-generation pipelines run."""
    from transformers import AutoTokenizer, pipeline

    model = random_model(["arch=swiglu_gqa_rope"])
    export_model(model, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = "ROMEO: But soft, what light through yonder window breaks?\n\n  It is the east.<|endoftext|>"
    assert tok.encode(text) == get_gpt2_encoding().encode(text, allowed_special="all")
    assert tok.eos_token_id == tok.bos_token_id == EOT_TOKEN and len(tok) == 50257
    generator = pipeline("text-generation", model=str(tmp_path), device="cpu")
    out = generator("ROMEO:", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("ROMEO:") and len(tok.encode(out)) > len(tok.encode("ROMEO:"))


def test_cli_exports_a_run_dir_in_bfloat16(tmp_path):
    """`python -m minigpt.export_hf <run dir> <out> --dtype bfloat16`, then transformers loads bf16 weights."""
    from transformers import AutoModelForCausalLM

    model = random_model(["arch=rope_gqa"])
    run_dir = tmp_path / "run"
    save_checkpoint({"model": model.state_dict(), "config": model.checkpoint_config, "step": 7}, run_dir / "ckpt_0000007.pt")
    out = tmp_path / "hf"
    proc = run_cli(["minigpt.export_hf", str(run_dir), str(out), "--dtype", "bfloat16"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "as Starcoder2ForCausalLM (bfloat16)" in proc.stdout and "step 7" in proc.stdout
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.dtype == torch.bfloat16
    idx = torch.randint(0, 50257, (1, 32))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits.float()
    assert (ours - theirs).abs().max() < 0.1 * ours.abs().max()  # bf16 rounding only



def test_cli_refuses_with_one_error_line(tmp_path, capsys):
    refused = random_model(["arch=gpt2", "arch.norm=rmsnorm"])
    save_checkpoint({"model": refused.state_dict(), "config": refused.checkpoint_config, "step": 1}, tmp_path / "bad.pt")
    assert export_hf_main([str(tmp_path / "bad.pt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no native transformers class expresses learned positions + rmsnorm")
    assert not (tmp_path / "out").exists()


def test_gpt2_import_round_trip(tmp_path):
    """export -> from_pretrained_gpt2 gives the same logits; load_model accepts the HF folder too."""
    model = random_model(["arch=gpt2"])
    export_model(model, tmp_path)
    imported = from_pretrained_gpt2(tmp_path)
    assert imported.model_config.n_layer == 2 and imported.model_config.block_size == 64
    idx = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        expected, _ = model(idx)
        got, _ = imported(idx)
    assert (expected - got).abs().max() < 1e-5
    loaded, ckpt = load_model(tmp_path)
    assert ckpt["config"]["arch"]["pos_encoding"] == "learned"
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], got)


def test_import_refuses_other_folders(tmp_path):
    with pytest.raises(ConfigError, match="not a Hugging Face GPT-2 folder"):
        from_pretrained_gpt2(tmp_path)
    model = random_model(["arch=swiglu_gqa_rope"])
    export_model(model, tmp_path)  # a Llama folder is not GPT-2
    with pytest.raises(ConfigError, match="not a Hugging Face GPT-2 folder"):
        from_pretrained_gpt2(tmp_path)


def test_training_can_start_from_hf_gpt2_weights(tmp_path):
    """train.init_from=<HF GPT-2 folder> fine-tunes from those weights; a mismatched config is refused."""
    from minigpt.trainer import Trainer

    model = random_model(["arch=gpt2"])
    export_model(model, tmp_path / "hf")
    trainer = Trainer(tiny_config("arch=gpt2", f"train.init_from={tmp_path / 'hf'}"), tmp_path / "run")
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        assert (trainer.model(idx)[0] - model(idx)[0]).abs().max() < 1e-5
    with pytest.raises(ConfigError, match="add the overrides arch.pos_encoding=learned model.n_layer=2"):
        Trainer(tiny_config("arch=rope", "model.n_layer=3", f"train.init_from={tmp_path / 'hf'}"), tmp_path / "run2")
