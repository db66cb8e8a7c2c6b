"""Validate once, before any side effect (minigpt/validate.py), and a Trainer that only builds.

The entrypoint's order is validate -> process group -> build -> token cache -> eval data -> fit: a bad
config must leave the disk as it found it (no run dir, no cache file), and building a Trainer must
write and read nothing, so benches and tests can build one cheaply.
"""

import os

import pytest

from minigpt.errors import ConfigError
from minigpt.trainer import Trainer
from minigpt.validate import validate
from tests.conftest import HELLASWAG_200, ROOT, TINY, run_cli, tiny_config


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.n_head=5", "model.n_head=5 does not divide model.n_embd=64"),  # the model's shape
        ("train.total_batch_size=1000", "train.total_batch_size=1000 is not a multiple"),  # the batch
        ("train.zero_stage=2", "train.zero_stage=2 is not supported"),  # data parallelism
        ("train.device=gpu", "train.device=gpu is not a device: use auto, cpu, cuda, cuda:<index> or mps"),
        ("train.device=cuda:0", "train.device=cuda:0 but CUDA is not available"),  # this machine has none
        ("train.resume=", "train.resume is empty"),
        ("eval.name=hellaswg", "unknown eval='hellaswg': choose one of ['hellaswag', 'none']"),
        ("logger.name=tensorboard", "unknown logger='tensorboard': choose one of ['none', 'wandb']"),
        ("logger.mode=onlin", "W&B mode 'onlin' (logger.mode or WANDB_MODE) is not one of online|offline|disabled"),
        ("train.objective=val/los", "train.objective=val/los is not a metric this run logs"),
        ("cluster.nodes=2", "cluster.nodes=2 needs a SLURM preset (cluster=slurm or an HPRC one)"),  # local: one machine
        ("cluster.gpus_per_node=2", "cluster.tasks_per_node=1 does not match cluster.gpus_per_node=2"),
    ],
)
def test_validate_names_the_value_and_the_fix_in_one_line(override, message):
    cfg = tiny_config("logger=wandb", override)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_hellaswag_values_are_checked_only_when_it_runs():
    bad = ["eval.hellaswag.protocols=[llmc,lmeval]", "eval.hellaswag.path=/no/such/file.jsonl"]
    validate(tiny_config(*bad))  # eval=none: HellaSwag's settings are never used
    with pytest.raises(ConfigError, match="unknown HellaSwag protocol 'lmeval'"):
        validate(tiny_config("eval=hellaswag", *bad))


def test_data_kind_is_typed():
    from hydra.errors import ConfigCompositionException

    assert tiny_config("data=text", "data.path=x").data.kind == "text"
    with pytest.raises(ConfigCompositionException, match="data.kind=txt") as info:
        tiny_config("data.kind=txt")
    assert "expected one of [shakespeare, text, shards]" in str(info.value.__cause__)


def test_a_trainer_builds_without_touching_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config("eval=hellaswag", f"eval.hellaswag.path={HELLASWAG_200}")
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.batches is None and trainer.eval.examples is None  # nothing read yet
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
    trainer.prepare_data()  # the set-up step that tokenizes into the cache
    assert any((tmp_path / "cache" / "data").rglob("*.bin")) and trainer.batches is not None
    trainer.load_eval_data()
    assert len(trainer.eval.examples) == 200 and [h.name for h in trainer.hooks] == ["val", "sample", "hellaswag"]
    assert not (tmp_path / "run").exists()  # nothing written into the run dir before fit()


@pytest.mark.parametrize("override", ["model.n_head=5", "train.zero_stage=2", "cluster.nodes=2"])
def test_the_entrypoint_fails_on_a_bad_config_before_touching_the_disk(tmp_path, override):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    cache.mkdir()
    done = run_cli(["minigpt.train", *TINY, override, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                   env_extra={"MINIGPT_CACHE": str(cache)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {override}"), done.stderr[-2000:]
    assert os.listdir(cache) == []  # no token cache, no HellaSwag download
    assert not run_dir.exists()  # no run dir: not even Hydra's .hydra/ and train.log


def test_muon_on_a_torch_without_it_is_refused_naming_the_version(monkeypatch):
    import torch

    validate(tiny_config("optim=muon"))  # this torch has it
    monkeypatch.delattr(torch.optim, "Muon")
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    with pytest.raises(ConfigError) as info:
        validate(tiny_config("optim=muon"))
    assert str(info.value) == ("optim=muon needs torch.optim.Muon (PyTorch 2.9 or later), this torch is 2.5.1+cu121: "
                               "upgrade torch or use optim=adamw")
    validate(tiny_config("optim=adamw"))  # AdamW runs on the older torch
