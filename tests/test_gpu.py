"""The GPU tier: what only a CUDA GPU shows (docs/benchmarks.md says how to run it). Every test but the last
two skips with its reason without CUDA; the last two run the golden run's code shrunk on CPU.

  python -m pytest -m gpu -rs tests/test_gpu.py      # on a GPU node; -s also prints the compile time

- d12 bf16 compiled, 20 steps from a fixed seed: each loss within `TOLERANCE` of the committed golden file
  (written by `python -m minigpt.bench.golden --write tests/assets/losses/d12_bf16.txt`), the compile time
  and peak memory printed and written to $MINIGPT_GPU_REPORT (default: the test's tmp dir);
- an eager d12 bf16 step's `torch.cuda.max_memory_allocated` within 15% of `estimate_memory`, and the
  compiled run's at most 15% above it (a compiled step needs less than the eager estimate);
- no host sync between log steps on CUDA (tests/test_hot_path.py's dispatch-level counter).
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from minigpt.bench.golden import STEPS, TOLERANCE, format_golden, golden_run, main, read_golden
from tests.conftest import ROOT, read_metrics, tiny_config

GOLDEN = ROOT / "tests" / "assets" / "losses" / "d12_bf16.txt"
WRITE = f"python -m minigpt.bench.golden --write {GOLDEN.relative_to(ROOT)}"
MEMORY_TOLERANCE = 0.15

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="GPU tier: needs a CUDA GPU (docs/benchmarks.md, 'GPU test tier')")
golden_file = pytest.mark.skipif(not GOLDEN.exists(),
                                 reason=f"{GOLDEN.relative_to(ROOT)} is missing: write it on a CUDA GPU with `{WRITE}`")


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    """The golden run, once for the tests that read it; its figures printed and written to a report file."""
    run = golden_run(tmp_path_factory.mktemp("golden"))
    report = Path(os.environ.get("MINIGPT_GPU_REPORT", tmp_path_factory.getbasetemp() / "gpu_tier.json"))
    report.write_text(json.dumps(run, indent=1))
    print(f"\nGPU tier | {run['device']} | compile {run['compile_s']:.1f} s (first step {run['first_step_s']:.1f} s, "
          f"then {1000 * run['steady_step_s']:.0f} ms/step) | peak {run['peak_bytes'] / 2**30:.2f} GiB, estimate "
          f"{run['estimate_bytes'] / 2**30:.2f} GiB | report {report}")
    return run


@pytest.mark.gpu
@requires_cuda
@golden_file  # nearest the function: its reason (the missing file, the command that writes it) is the one shown
def test_d12_bf16_compiled_losses_match_the_golden_file(compiled_run):
    golden = read_golden(GOLDEN)
    assert sorted(golden) == list(range(1, STEPS + 1)), f"{GOLDEN} has steps {sorted(golden)}; rewrite it: {WRITE}"
    header = GOLDEN.read_text().splitlines()[1]  # where the file was made: a different GPU or torch can explain a miss
    off = {step: round(compiled_run["losses"][step - 1] - want, 4) for step, want in golden.items()
           if abs(compiled_run["losses"][step - 1] - want) > TOLERANCE}
    assert not off, f"losses off the golden file by more than {TOLERANCE} at {off} (file: {header}; this run: " \
                    f"{compiled_run['device']}, torch {compiled_run['torch']})"


@pytest.mark.gpu
@requires_cuda
def test_compiled_d12_trains_records_its_compile_time_and_fits_the_estimate(compiled_run):
    losses = compiled_run["losses"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 1.0, losses  # it learns
    assert compiled_run["compile_s"] > 0
    assert compiled_run["peak_bytes"] <= (1 + MEMORY_TOLERANCE) * compiled_run["estimate_bytes"]


@pytest.mark.gpu
@requires_cuda
def test_eager_d12_peak_memory_is_within_15_percent_of_the_estimate(tmp_path):
    from minigpt.config import compose_typed
    from minigpt.bench.golden import OVERRIDES
    from minigpt.memory import estimate_memory
    from minigpt.trainer import Trainer

    cfg = compose_typed([*OVERRIDES, "train.compile=false"])
    trainer = Trainer(cfg, tmp_path).prepare_data()
    torch.cuda.reset_peak_memory_stats(trainer.device)
    for _ in range(2):  # the second step with the optimizer state allocated
        trainer.train_step()
    torch.cuda.synchronize(trainer.device)
    peak, estimate = torch.cuda.max_memory_allocated(trainer.device), estimate_memory(cfg, device=trainer.device).peak
    print(f"\nGPU tier | eager d12 bf16 16 x 1024 | peak {peak / 2**30:.2f} GiB, estimate {estimate / 2**30:.2f} GiB")
    assert abs(peak - estimate) <= MEMORY_TOLERANCE * estimate, (peak / 2**30, estimate / 2**30)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype, optim", [("bfloat16", "adamw"), ("float16", "adamw"), ("float16", "muon")])
def test_no_host_sync_between_log_steps_on_cuda(tmp_path, dtype, optim):
    from minigpt.trainer import Trainer
    from tests.test_hot_path import syncs_per_step

    if optim == "muon" and not hasattr(torch.optim, "Muon"):
        pytest.skip(f"optim=muon needs torch.optim.Muon (PyTorch 2.9+); this is torch {torch.__version__}")
    cfg = tiny_config("train.device=cuda", "train.num_iterations=4", "train.log_every=4", "train.val_loss_every=0",
                      "train.sample_every=0", "model.n_layer=1", f"train.dtype={dtype}", f"optim={optim}",
                      "optim.warmup_iters=1")
    syncs = syncs_per_step(Trainer(cfg, tmp_path / "run").prepare_data())
    assert syncs[:3] == [0, 0, 0] and syncs[3] >= 1, syncs  # step 4 logs: its one read of the device
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "train/loss" in r] == [4]


# ---------------------------------------------------------------- the golden run's code, shrunk, on CPU

def test_golden_run_shrunk_on_cpu_round_trips_through_the_file_format(tmp_path):
    run = golden_run(tmp_path / "run", ["train.device=cpu", "train.dtype=float32", "train.compile=false",
                                        "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "train.batch_size=2",
                                        "train.sequence_length=32", "train.num_iterations=3"])
    assert len(run["losses"]) == 3 and all(math.isfinite(v) for v in run["losses"])
    assert run["peak_bytes"] is None and run["estimate_bytes"] > 0 and run["device"] == "cpu"
    path = tmp_path / "golden.txt"
    path.write_text(format_golden(run))
    assert read_golden(path) == {i: pytest.approx(v, abs=1e-6) for i, v in enumerate(run["losses"], 1)}
    assert path.read_text().startswith("# minigpt golden losses: python -m minigpt.bench.golden --write PATH")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_writing_the_golden_file_without_cuda_is_refused_in_one_line(tmp_path, capsys):
    assert main(["--write", str(tmp_path / "golden.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the golden losses are a GPU run") and err.count("\n") == 1
    assert not (tmp_path / "golden.txt").exists()
