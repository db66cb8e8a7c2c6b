"""Defaults that make sense: the composed lr schedule of each preset, the warmup warning, the bench's data."""

import logging

import pytest

from minigpt.config import to_config
from minigpt.optim import lr_at, warmup_warning
from minigpt.trainer import Trainer
from tests.conftest import CONF_DIR, HELLASWAG_200, compose_config, tiny_config

ARCHS = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))


def _schedule(cfg) -> list[float]:
    return [lr_at(step, cfg.optim, cfg.train.num_iterations) for step in range(cfg.train.num_iterations)]


@pytest.mark.parametrize("arch", ARCHS)
def test_default_run_reaches_its_peak_lr_well_before_the_last_step(arch):
    """`python -m minigpt.train arch=<preset>`: the tiny model's recipe warms up, peaks, then decays."""
    cfg = to_config(compose_config([f"arch={arch}"]))
    assert cfg.model.name == "tiny" and cfg.optim.name == "tiny"
    lrs = _schedule(cfg)
    peak_step = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(cfg.optim.learning_rate)
    assert peak_step < len(lrs) // 4  # then most of the run anneals
    assert lrs[-1] < 0.2 * cfg.optim.learning_rate  # cosine down to learning_rate_decay_frac (0.1)
    assert warmup_warning(cfg.optim, cfg.train.num_iterations) is None


def test_d12_keeps_llmc_124m_recipe_exactly():
    cfg = to_config(compose_config(["model=d12"]))
    o = cfg.optim
    assert (o.name, o.learning_rate, o.warmup_iters, o.learning_rate_decay_frac) == ("adamw", 6e-4, 700, 0.0)
    assert (o.weight_decay, o.beta1, o.beta2, o.grad_clip) == (0.1, 0.9, 0.95, 1.0)
    run = to_config(compose_config(["model=d12", "train.num_iterations=19073"]))  # llm.c's 10B-token run
    lrs = _schedule(run)
    assert lrs[699] == 6e-4 and lrs[698] < 6e-4 and lrs[-1] == pytest.approx(0.0, abs=1e-9)  # cosine to 0
    # an explicit optim preset wins over the tiny model's recipe, and experiments keep theirs
    assert to_config(compose_config(["optim=adamw"])).optim.warmup_iters == 700
    assert to_config(compose_config(["experiment=seed_standard"])).optim.name == "seed_standard"


def test_warmup_as_long_as_the_run_warns_in_one_line_naming_both(tmp_path, caplog):
    cfg = to_config(compose_config(["model=d12"]))  # 700 warmup steps, 200-step default run
    message = warmup_warning(cfg.optim, cfg.train.num_iterations)
    assert "optim.warmup_iters=700 >= train.num_iterations=200" in message and "\n" not in message
    assert warmup_warning(cfg.optim, 700) is not None and warmup_warning(cfg.optim, 701) is None
    with caplog.at_level(logging.WARNING, logger="minigpt"):  # the tiny recipe warms up for 20 steps
        Trainer(tiny_config("train.num_iterations=2", "train.val_loss_every=0", "train.sample_every=0"), tmp_path).fit()
    (line,) = [r.getMessage() for r in caplog.records if "warmup" in r.getMessage()]
    assert line.startswith("warning: optim.warmup_iters=20 >= train.num_iterations=2: the whole run is warmup")


def test_hellaswag_bench_reads_the_cache_or_says_how_to_get_the_data(tmp_path, monkeypatch, capsys):
    from minigpt.bench.hellaswag import main
    from minigpt.cli import cli_errors

    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "empty"))
    assert cli_errors(main)(["--examples", "4"]) == 2  # as `python -m minigpt.bench.hellaswag` runs it
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no HellaSwag file given and none cached in ") and "--data <file>" in line
    cache = tmp_path / "cache" / "hellaswag"
    cache.mkdir(parents=True)
    (cache / "hellaswag_val.jsonl").write_bytes(HELLASWAG_200.read_bytes())
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    out = main(["--examples", "8", "--rounds", "1", "--n-layer", "1", "--n-embd", "32", "--batch-size", "16"])
    assert out["ratio"] > 0 and "8 examples, llmc protocol, identical predictions" in capsys.readouterr().out
