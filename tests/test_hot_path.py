"""The training hot path: no host syncs between log steps, signals still checkpoint, GC on schedule, MFU peaks."""

import gc
import itertools
import os
import signal

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from minigpt.checkpoint import list_checkpoints, load_checkpoint
from minigpt.eval.records import records_path
from minigpt.perf import peak_flops, peak_flops_hint
from minigpt.trainer import Trainer
from tests.conftest import HELLASWAG_200, read_metrics, tiny_config

# Ops that make the host wait for the device on a GPU: a scalar read (.item(), float(), bool(), if t:)
# and ops whose output size depends on the data.
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "equal", "allclose"}


class HostSyncCounter(TorchDispatchMode):
    """Counts host syncs: the ops above, seen at dispatch (so also inside torch), plus the Python
    entry points that copy to the host without one (tolist, numpy, cuda synchronize)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self._patched = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for owner, name in ((torch.Tensor, "tolist"), (torch.Tensor, "numpy"), (torch.cuda, "synchronize")):
            original = getattr(owner, name)
            self._patched[(owner, name)] = original

            def counted(*a, _original=original, **k):
                self.count += 1
                return _original(*a, **k)

            setattr(owner, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for (owner, name), original in self._patched.items():
            setattr(owner, name, original)
        return super().__exit__(*exc)


def test_counter_sees_the_syncs_it_must():
    t = torch.ones(3)
    with HostSyncCounter() as c:
        t.sum().item()
        float(t.max())
        if t.sum() > 0:
            t.tolist()
        t.nonzero()
    assert c.count == 5


def test_no_host_sync_between_log_steps_and_signals_still_checkpoint(tmp_path):
    """7 steps, log every 3, 2 micro-batches per step, GC every 2: steps 1, 2 and 4 never wait for the
    device; 3, 6 and 7 log (and evaluate HellaSwag, writing its per-example records); SIGUSR1 arriving
    during step 5 (not a log step) is still checkpointed at step 5."""
    cfg = tiny_config("train.num_iterations=7", "train.log_every=3", "train.val_loss_every=0", "train.sample_every=0",
                      "train.batch_size=2", "train.total_batch_size=256", "train.gc_every=2", "optim.warmup_iters=2",
                      "eval=hellaswag", "eval.hellaswag.every=3", "eval.hellaswag.limit=4",
                      f"eval.hellaswag.path={HELLASWAG_200}")
    trainer = Trainer(cfg, tmp_path).prepare_data().load_eval_data()  # the set-up steps, before the counters
    assert trainer.grad_accum == 2
    counter, per_step, gc_steps = HostSyncCounter(), {}, []
    step = trainer.train_step

    def counted_step():
        per_step[trainer.step] = counter.count  # syncs so far, before step trainer.step + 1
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGUSR1)  # lands while step 5 runs
        return step()

    def on_gc(phase, info):
        if phase == "start":
            gc_steps.append((trainer.step, gc.isenabled(), gc.get_freeze_count() > 0))

    trainer.train_step = counted_step
    gc.callbacks.append(on_gc)
    try:
        with counter:
            trainer.fit()
    finally:
        gc.callbacks.remove(on_gc)
    per_step[7] = counter.count
    syncs = {s: per_step[s] - per_step[s - 1] for s in range(1, 8)}  # syncs of step s and the loop after it
    assert {s: syncs[s] for s in (1, 2, 4)} == {1: 0, 2: 0, 4: 0}
    assert all(syncs[s] >= 1 for s in (3, 5, 6, 7)), syncs  # log steps / the signal step read the device
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [5, 7]
    assert sorted(r["step"] for r in read_metrics(tmp_path) if "train/loss" in r) == [3, 6, 7]
    assert sorted(r["step"] for r in read_metrics(tmp_path) if "hellaswag/llmc/acc" in r) == [3, 6, 7]
    assert all(records_path(tmp_path, s).is_file() for s in (3, 6, 7))

    # automatic GC off; one collection at start-up (then the survivors are frozen), then every 2 steps.
    # Python's own collections before the schedule starts (fit's start-up: the memory estimate builds a
    # model on the meta device) are not the loop's, so they are dropped.
    gc_steps = list(itertools.dropwhile(lambda g: g[0] == 0 and g[1], gc_steps))
    assert gc_steps[:4] == [(0, False, False), (2, False, True), (4, False, True), (6, False, True)]
    assert all(enabled for _, enabled, _ in gc_steps[4:])  # later ones: Python's own, after the loop
    assert gc.isenabled() and gc.get_freeze_count() == 0  # restored after the run


def test_a_nonfinite_step_between_log_steps_is_named_and_never_checkpointed(tmp_path):
    """log_every=4: the loss goes NaN at step 2 (no sync there), a SIGUSR1 arrives during step 3. The signal
    makes step 3 read the device, the divergence guard stops the run naming step 2, and nothing is saved."""
    from minigpt.divergence import Diverged
    from tests.test_run_safety import poison

    cfg = tiny_config("train.num_iterations=8", "train.log_every=4", "train.val_loss_every=0", "train.sample_every=0",
                      "train.checkpoint_every=4")
    trainer = Trainer(cfg, tmp_path)
    poison(trainer, {2})
    counter, per_step = HostSyncCounter(), {}
    step = trainer.train_step

    def counted_step():
        per_step[trainer.step] = counter.count
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # lands while step 3 runs
        return step()

    trainer.train_step = counted_step
    with counter, pytest.raises(Diverged, match="training diverged at step 2: loss nan"):
        trainer.fit()
    assert per_step == {0: 0, 1: 0, 2: 0}  # steps 1 and 2 (the bad one) never waited for the device
    assert trainer.step == 3 and list_checkpoints(tmp_path) == []
    assert not [r for r in read_metrics(tmp_path) if "train/loss" in r]


def test_logged_rows_carry_mean_step_time_and_peak_memory(tmp_path):
    cfg = tiny_config("train.num_iterations=4", "train.log_every=2", "train.val_loss_every=0", "train.sample_every=0",
                      "train.peak_flops=1e12")
    trainer = Trainer(cfg, tmp_path)
    trainer.fit()
    rows = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    assert [r["step"] for r in rows] == [2, 4]
    import resource

    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # CPU: the process's peak RSS
    for r in rows:
        assert 0.05 < r["train/peak_mem_gb"] <= rss_gib
        assert r["train/tokens_per_s"] == pytest.approx(trainer.tokens_per_step / (r["train/ms_per_step"] / 1000))
        assert r["train/mfu"] == pytest.approx(trainer.flops_per_token * r["train/tokens_per_s"] / 1e12)


# torch.cuda.get_device_name() strings as GPUs report them, and the vendor data sheet's dense peak
# (bf16 / TF32, TFLOP/s; "with sparsity" figures halved, rounded down).
DEVICES = {
    "NVIDIA A100-SXM4-40GB": (312, 156),
    "NVIDIA A100-SXM4-80GB": (312, 156),
    "NVIDIA A100-PCIE-40GB": (312, 156),
    "NVIDIA A100 80GB PCIe": (312, 156),
    "NVIDIA H100 80GB HBM3": (989, 494),  # SXM5
    "NVIDIA H100 PCIe": (756, 378),  # contains "H100": the longest match must win, not the SXM's peak
    "NVIDIA H100 NVL": (835, 417),
    "NVIDIA H200": (989, 494),
    "NVIDIA H200 NVL": (835, 417),
}


@pytest.mark.parametrize("name", DEVICES)
def test_peak_flops_by_device_name(name):
    bf16, tf32 = DEVICES[name]
    assert peak_flops(name, "bfloat16") == bf16 * 1e12 and peak_flops(name, "float16") == bf16 * 1e12
    assert peak_flops(name, "float32") == tf32 * 1e12


def test_unknown_devices_have_no_peak_and_a_hint():
    for name in ("cpu", "NVIDIA A10G", "Tesla V100-SXM2-16GB", "NVIDIA L4"):
        assert peak_flops(name, "bfloat16") is None
    assert peak_flops("cpu", "float32", override=2e12) == 2e12
    hint = peak_flops_hint("NVIDIA A10G", "bfloat16")
    assert "\n" not in hint and "train.peak_flops=" in hint and "NVIDIA A10G" in hint


def syncs_per_step(trainer) -> list[int]:
    """Host syncs of each step of `trainer.fit()` and the loop's work after it (validation, logging)."""
    counter, per_step = HostSyncCounter(), {}
    step = trainer.train_step

    def counted_step():
        per_step[trainer.step] = counter.count
        return step()

    trainer.train_step = counted_step
    with counter:
        trainer.fit()
    per_step[trainer.step] = counter.count
    return [per_step[s] - per_step[s - 1] for s in range(1, trainer.step + 1)]


@pytest.fixture
def one_rank_group(tmp_path):
    """A joined gloo process group of one rank: ZeRO-1's ZeroRedundancyOptimizer in this process."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("zero_stage", [0, 1])
@pytest.mark.parametrize("optim", ["adamw", "muon"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_no_host_sync_between_log_steps_for_every_dtype_optimizer_and_zero_stage(tmp_path, request, dtype, optim,
                                                                                   zero_stage):
    """float16's GradScaler reads its inf flag on the host unless the optimizer takes it as a tensor: the
    combined optimizer (Muon) and ZeRO-1's optimizer take it, so steps 1-3 of 4 (log every 4) never wait."""
    if zero_stage:
        request.getfixturevalue("one_rank_group")
    cfg = tiny_config("train.num_iterations=4", "train.log_every=4", "train.val_loss_every=0", "train.sample_every=0",
                      "train.batch_size=2", "model.n_layer=1", f"train.dtype={dtype}", f"optim={optim}",
                      f"train.zero_stage={zero_stage}", "optim.warmup_iters=1")
    trainer = Trainer(cfg, tmp_path / "run").prepare_data()
    from minigpt.optim.amp import ScaledZeroRedundancyOptimizer

    parts = getattr(trainer.optimizer, "parts", {"": trainer.optimizer})
    assert all(isinstance(p, ScaledZeroRedundancyOptimizer) == bool(zero_stage) for p in parts.values())
    assert trainer.scaler.is_enabled() == (dtype == "float16")
    syncs = syncs_per_step(trainer)
    assert syncs[:3] == [0, 0, 0], syncs
    assert trainer.step == 4 and [r["step"] for r in read_metrics(tmp_path / "run") if "train/loss" in r] == [4]
