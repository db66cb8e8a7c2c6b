"""sweeps/recipe_ablation(_tiny): every arm composes to what its name says, and the tiny sweep runs
(arms x seeds through Hydra's multirun) and compares with tokens to the baseline's final val loss."""

import functools

import pytest
from hydra import compose, initialize_config_dir

from minigpt.compare import main as compare_main
from minigpt.config import to_config
from tests.conftest import ROOT, TINY, compose_config, run_cli
from tests.test_compare import markdown_tables

ARMS = sorted(p.stem for p in (ROOT / "sweeps" / "recipe").glob("*.yaml"))


@functools.lru_cache(maxsize=None)  # composing is slow-ish; tests only read the result
def arm_config(sweep: str, arm: str):
    """The config one job of the sweep trains (`-m --config-dir sweeps --config-name <sweep> recipe=<arm>`)."""
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        overrides = [f"recipe={arm}", f"hydra.searchpath=[file://{ROOT / 'conf'}]"]  # as --config-dir adds sweeps/
        return to_config(compose(config_name=sweep, overrides=overrides))


def test_the_sweeps_list_every_arm():
    from omegaconf import OmegaConf

    for sweep in ("recipe_ablation", "recipe_ablation_tiny"):
        params = OmegaConf.load(ROOT / "sweeps" / f"{sweep}.yaml").hydra.sweeper.params
        assert sorted(params.recipe.split(",")) == ARMS and params["train.seed"] == "1,2,3"
        assert params.recipe.split(",")[0] == "gpt2_adamw"  # first to run and first by dir name: compare's default baseline


@pytest.mark.parametrize("sweep", ["recipe_ablation", "recipe_ablation_tiny"])
@pytest.mark.parametrize("arm", ARMS)
def test_each_arm_is_what_its_name_says(sweep, arm):
    cfg = arm_config(sweep, arm)
    base = arm_config(sweep, "gpt2_adamw")
    arch_name, optim = arm.rsplit("_", 1) if arm.endswith(("_adamw", "_muon")) else (arm, "adamw")
    assert cfg.optim.kind.value == optim
    if optim == "muon":  # Muon keeps its own schedule whatever the sweep sets for AdamW
        assert (cfg.optim.learning_rate, cfg.optim.warmup_iters, cfg.optim.schedule.value) == (0.02, 0, "wsd")
    else:
        assert cfg.optim == base.optim
    switched = {k for k, v in vars(cfg.arch).items() if v != getattr(base.arch, k) and k != "name"}
    expected = {
        "gpt2": set(), "modern": {"pos_encoding", "norm", "mlp", "bias", "tie_embeddings", "qk_norm", "logit_softcap",
                                  "zero_init_proj", "embed_norm"},
        "gpt2_relu2": {"mlp"}, "gpt2_qk_norm": {"qk_norm"}, "gpt2_softcap": {"logit_softcap"},
        "gpt2_zero_init": {"zero_init_proj"}, "gpt2_untied": {"tie_embeddings"}, "gpt2_embed_norm": {"embed_norm"},
    }[arch_name]
    assert switched == expected  # one switch alone on the baseline, or the whole modern arch
    assert cfg.model.name == ("tiny" if sweep.endswith("_tiny") else "d12") and cfg.train == base.train


def test_modern_tiny_trains_with_muon_when_asked_and_the_tiny_recipe_otherwise():
    """The tiny model brings optim=tiny; `optim=muon` on the command line wins over it."""
    muon = to_config(compose_config(["arch=modern", "optim=muon", "experiment=modern_tiny"]))
    assert (muon.optim.kind.value, muon.optim.learning_rate, muon.optim.schedule.value) == ("muon", 0.02, "wsd")
    assert (muon.model.name, muon.model.n_embd, muon.train.num_iterations, muon.arch.name) == ("tiny", 128, 200, "modern")
    plain = to_config(compose_config(["arch=modern", "experiment=modern_tiny"]))
    assert (plain.optim.name, plain.optim.kind.value, plain.optim.learning_rate) == ("tiny", "adamw", 3e-3)


@pytest.mark.slow
def test_tiny_sweep_runs_and_compares_with_tokens_to_target(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    done = run_cli(["minigpt.train", "-m", "--config-dir", "sweeps", "--config-name", "recipe_ablation_tiny", *TINY,
                    "recipe=gpt2_adamw,modern_muon", "train.seed=1,2", "train.num_iterations=4",
                    "train.val_loss_every=2", "logger=none", f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.name.rsplit("-", 1)[0] for p in sweep_dir.iterdir() if p.is_dir())  # <recipe>_s<seed>-<hash>
    assert runs == ["gpt2_adamw_s1", "gpt2_adamw_s2", "modern_muon_s1", "modern_muon_s2"]
    assert compare_main([str(sweep_dir)]) == 0  # the first group (gpt2 + AdamW) is the baseline
    out = capsys.readouterr().out
    tables = markdown_tables(out)  # runs, forecast vs measured, groups, verdicts
    run_rows, group_rows = tables[0], next(t for t in tables if t and "n" in t[0])
    assert all(r["tokens to target"] not in ("", "-") for r in run_rows)
    assert [(g["group"], g["n"]) for g in group_rows] == [  # two seeds per group
        ("arch=gpt2 optim=adamw (baseline)", "2"), ("arch=modern_muon optim=muon", "2")]
    assert "baseline group 'arch=gpt2 optim=adamw'" in out
    assert "x" in group_rows[1]["tokens ratio vs baseline [95% CI]"]  # a ratio (with its interval) for the modern recipe
