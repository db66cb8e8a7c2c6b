"""Seeds as a sweep axis: train.init_seed / train.data_seed split train.seed; a configuration without its seeds."""

import torch

from minigpt.experiment import experiment_overrides, is_experiment_key, job_type
from minigpt.trainer import Trainer
from tests.conftest import tiny_config

FAST = ["train.num_iterations=1", "train.val_loss_every=0", "train.sample_every=0"]


def _start(tmp_path, name, *overrides):
    trainer = Trainer(tiny_config(*FAST, *overrides), tmp_path / name).prepare_data()
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    x, _ = trainer.train_loader.next_batch()
    return weights, x


def test_init_and_data_seeds_vary_one_source_of_noise_each(tmp_path):
    base_w, base_x = _start(tmp_path, "a", "train.seed=1")
    both_w, both_x = _start(tmp_path, "b", "train.seed=7", "train.init_seed=1", "train.data_seed=1")
    data_w, data_x = _start(tmp_path, "c", "train.seed=1", "train.data_seed=2")
    init_w, init_x = _start(tmp_path, "d", "train.seed=1", "train.init_seed=2")
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a, b))  # noqa: E731
    assert same(base_w, both_w) and torch.equal(base_x, both_x)  # train.seed sets both unless they are given
    assert same(base_w, data_w) and not torch.equal(base_x, data_x)  # data order only
    assert not same(base_w, init_w) and torch.equal(base_x, init_x)  # initialisation only


def test_job_type_is_the_configuration_without_seeds():
    overrides = ["arch=rope", "train.seed=3", "train.data_seed=2", "cluster=slurm", "logger.project=x",
                 "hydra.sweep.dir=/tmp/s", "model.n_layer=2"]
    assert experiment_overrides(overrides) == ["arch=rope", "model.n_layer=2"]
    assert job_type(overrides, fallback="gpt2") == "arch=rope model.n_layer=2"
    assert job_type(["train.seed=3"], fallback="gpt2") == "gpt2"
    assert not is_experiment_key("train.init_seed") and is_experiment_key("train.seed_everything_else")
    long = [f"model.n_layer={i}" for i in range(20)]
    name = job_type(long, "gpt2")
    assert len(name) <= 64 and name != job_type(long[:-1] + ["model.n_layer=99"], "gpt2")  # still unique
