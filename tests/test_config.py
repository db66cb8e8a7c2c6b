"""Every preset composes through Hydra; typos and wrong types fail before any work."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from minigpt.config import Config, to_config
from tests.conftest import CONF_DIR, compose_config

ARCHS = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONF_DIR / "optim").glob("*.yaml"))


def test_seed_presets_exist():
    assert {"gpt2", "rope", "rope_gqa", "swiglu_gqa_rope"} <= set(ARCHS)
    assert {"tiny", "d12", "d12_ctx2048_emb1024", "d24"} <= set(MODELS)
    assert {"adamw", "seed_standard"} <= set(OPTIMS)


def test_arch_components():
    cfg = to_config(compose_config(["arch=swiglu_gqa_rope"]))
    assert (cfg.arch.pos_encoding.value, cfg.arch.norm.value, cfg.arch.mlp.value) == ("rope", "rmsnorm", "swiglu")
    assert cfg.arch.q_per_kv > 1
    base = to_config(compose_config(["arch=gpt2"]))
    assert (base.arch.pos_encoding.value, base.arch.norm.value, base.arch.mlp.value) == ("learned", "layernorm", "gelu")
    mixed = to_config(compose_config(["arch=gpt2", "arch.norm=rmsnorm", "arch.mlp=swiglu"]))
    assert (mixed.arch.norm.value, mixed.arch.mlp.value, mixed.arch.pos_encoding.value) == ("rmsnorm", "swiglu", "learned")


def test_llmc_defaults_and_seed_standard_experiment():
    cfg = to_config(compose_config(["model=d12"]))  # the tiny default model brings its own CPU recipe
    assert (cfg.optim.learning_rate, cfg.optim.warmup_iters, cfg.optim.weight_decay) == (6e-4, 700, 0.1)
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.grad_clip) == (0.9, 0.95, 1.0)
    seed = to_config(compose_config(["experiment=seed_standard"]))
    assert seed.train.batch_size == 16 and seed.train.dtype.value == "float16" and seed.train.zero_stage == 1
    assert (seed.optim.learning_rate, seed.optim.warmup_iters, seed.optim.learning_rate_decay_frac) == (0.004, 1500, 0.85)
    assert seed.train.overfit_single_batch is False and seed.optim.weight_decay == 0.1


def test_d12_is_gpt2_124m_shape():
    cfg = to_config(compose_config(["model=d12"]))
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.block_size) == (12, 768, 12, 1024)
    # its exact parameter count and FLOPs per token, derived by hand: tests/test_presets.py


def test_misspelt_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["train.batchsize=3"])
    assert "batchsize" in str(err.value) + str(err.value.__cause__)


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["train.num_iterations=abc"])
    assert isinstance(err.value.__cause__, ValidationError)


def test_bad_component_value_lists_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["arch.norm=rmsnrom"])
    assert "layernorm" in str(err.value.__cause__) and "rmsnorm" in str(err.value.__cause__)


def test_unknown_preset_fails():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="arch/foo"):
        compose_config(["arch=foo"])


def test_preset_with_typo_key_fails(tmp_path):
    """A yaml preset is checked against the schema too: unknown keys in a group file are errors."""
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "arch" / "typo.yaml").write_text("name: typo\nnrom: rmsnorm\n")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError)):
            compose(config_name="config", overrides=["arch=typo"])


def _path_keys(node, prefix="") -> list[str]:
    """Dotted keys of every field declared with `path_field` in the typed config."""
    import dataclasses

    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            keys += _path_keys(value, f"{prefix}{f.name}.")
        elif f.metadata.get("path"):
            keys.append(f"{prefix}{f.name}")
    return keys


def test_a_leading_tilde_is_the_home_folder_in_every_path_field(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    keys = _path_keys(Config())
    assert {"data.path", "data.cache_dir", "data.prepare.source", "train.resume", "train.init_from", "logger.dir",
            "eval.hellaswag.path", "eval.hellaswag.cache_dir"} <= set(keys)
    # the quoting the README shows: Hydra's lexer refuses an unquoted ~, a quoted one reaches the config as is
    cfg = to_config(compose_config([f'{key}="~/{key}/*.jsonl"' for key in keys]))
    for key in keys:
        section, *rest = key.split(".")
        value = getattr(cfg, section)
        for name in rest:
            value = getattr(value, name)
        assert value == f"{home}/{key}/*.jsonl", key
    # values that are not paths, or do not start with ~, are left alone
    cfg = to_config(compose_config(["data.prepare.source=HuggingFaceFW/fineweb-edu", 'data.path="a/~b"']))
    assert cfg.train.resume == "auto" and cfg.data.prepare.source == "HuggingFaceFW/fineweb-edu"
    assert cfg.data.path == "a/~b"
    with pytest.raises(Exception, match="LexerNoViableAltException"):
        compose_config(["data.path=~/corpus"])


@pytest.mark.slow
def test_cli_expands_tilde_in_data_path_and_hydra_dirs(tmp_path):
    """`'data.path="~/corpus"'` and `'hydra.run.dir="~/..."'` / `'hydra.sweep.dir="~/..."'` use $HOME, and
    no folder named `~` appears in the working directory."""
    from tests.conftest import ROOT, TINY, read_metrics, run_cli

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / "corpus").mkdir(parents=True)
    cwd.mkdir()
    (home / "corpus" / "plays.txt").write_text("To be, or not to be, that is the question.\n" * 400)
    quick = [*TINY, "data=text", 'data.path="~/corpus"', "train.num_iterations=1", "train.val_max_steps=1",
             "train.sample_every=0", "logger=none"]
    env = {"HOME": str(home)}
    single = run_cli(["minigpt.train", *quick, 'hydra.run.dir="~/runs/one"'], cwd=cwd, env_extra=env)
    assert single.returncode == 0, single.stderr[-2000:]
    assert [r["step"] for r in read_metrics(home / "runs" / "one") if "train/loss" in r] == [1]
    sweep = run_cli(["minigpt.train", "-m", *quick, 'hydra.sweep.dir="~/sweep"', "train.seed=7"], cwd=cwd, env_extra=env)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert len(list((home / "sweep").glob("*/metrics.jsonl"))) == 1
    assert list(cwd.iterdir()) == []


# Override lists that exercise each way tests/conftest.py's cached compose_config splits them: presets,
# nested presets, value overrides on preset and schema keys, `+` additions, `~` deletions and experiments.
CACHE_CASES = [
    [],
    ["arch=swiglu_gqa_rope", "model.n_layer=3", "train.batch_size=5"],
    ["model=d12", "optim=muon", "optim.learning_rate=0.01", "arch.norm=rmsnorm"],
    ["cluster=slurm", "cluster/gpu=h100", "cluster.account=abc"],
    ["experiment=quickstart", "train.num_iterations=7", "++train.batch_size=3"],
    ["experiment=seed_standard", "eval=hellaswag", "eval.hellaswag.limit=8", "logger=none"],
    ["data=text", 'data.path="a/b"', "train.total_batch_size=null"],
]


@pytest.mark.parametrize("overrides", CACHE_CASES, ids=lambda o: " ".join(o) or "defaults")
def test_the_cached_compose_equals_hydras_compose(overrides):
    """tests/conftest.py composes each set of presets once and applies `key=value` overrides to a copy:
    the result must be Hydra's own composition of the same overrides, value for value and type for type."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose(config_name="config", overrides=overrides)
    cached = compose_config(overrides)
    assert OmegaConf.to_yaml(cached) == OmegaConf.to_yaml(hydra_cfg)
    assert to_config(cached) == to_config(hydra_cfg)
    assert OmegaConf.is_struct(cached) and OmegaConf.get_type(cached) is OmegaConf.get_type(hydra_cfg)
    cached.train.batch_size = 99  # each call gets its own copy
    assert compose_config(overrides).train.batch_size != 99


@pytest.mark.parametrize("overrides", [["train.batchsize=3"], ["train.num_iterations=abc"], ["arch.norm=rmsnrom"],
                                       ["+train.batch_size=3"], ["~train.nothing"], ["arch=foo"]])
def test_the_cached_compose_fails_as_hydras_compose_does(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        with pytest.raises(Exception) as hydra_err:
            compose(config_name="config", overrides=overrides)
    with pytest.raises(type(hydra_err.value)) as cached_err:
        compose_config(overrides)
    assert str(cached_err.value) == str(hydra_err.value)
    assert type(cached_err.value.__cause__) is type(hydra_err.value.__cause__)
