"""The training loop: gradient accumulation, mixed precision, clipping, step hooks, checkpoints.

A run goes validate -> set up -> build -> prepare -> fit, each step its own call (minigpt/train.py makes them):
`validate(cfg, world_size)` (minigpt/validate.py) checks every value before any side effect;
`distributed.setup()` joins the process group; `Trainer(cfg, run_dir)` builds the model, optimizer and
hooks and writes, reads and downloads nothing, so benches and tests can build one cheaply;
`prepare_data()` tokenizes the corpus into the cache and opens the loaders; `load_eval_data()` reads
(or downloads) HellaSwag; `fit()` trains (running first any set-up step not yet run, as Lightning's
`fit` calls `prepare_data`). Everything optional (validation, samples, HellaSwag, extra loggers) runs
as a `StepHook` or a logger chosen by config from an explicit table, so the loop never branches on
features. The loop itself is nanoGPT's (llm.c's train_gpt2.py): accumulate, clip, step, log.

The host never waits for the device between log steps: a step's loss and gradient norm stay device
tensors, and the loop reads them (one all-reduce, one device-to-host copy) only at a step that logs,
runs a hook or saves a checkpoint. Everything else (step time, tokens/s, MFU) is derived there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minigpt import distributed, run_lock
from minigpt.checkpoint import init_weights_from
from minigpt.config import Config, to_container, uses_gqa
from minigpt.data.corpus import prepare_splits
from minigpt.data.loader import DataLoader
from minigpt.data.prefetch import DevicePrefetcher
from minigpt.data.tokenizer import EOT_TOKEN, get_gpt2_encoding
from minigpt.divergence import DivergenceGuard
from minigpt.eval.training import EVALS
from minigpt.hooks import StepHook
from minigpt.loggers import NullLogger, build_loggers, last_logged
from minigpt.memory import estimate_memory
from minigpt.model import GPT
from minigpt.optim import Schedule, build_optimizer, warmup_warning
from minigpt.plan.forecast import start_forecast
from minigpt.perf import (GarbageCollection, StepClock, device_name, format_eta, mfu, peak_flops, peak_flops_hint,
                          peak_memory_gb)
from minigpt.resume import Checkpoint, Checkpointer, TrainState
from minigpt.rng import RNGState
from minigpt.run_record import RunRecord
from minigpt.runtime import (autocast_context, configure_backends, math_attention_warning, pick_device, resolve_dtype,
                             seed_everything, slow_dtype_warning)
from minigpt.validate import grad_accum_steps

log = logging.getLogger("minigpt")


@dataclass
class StepResult:
    """One optimizer step's outcome, still on the device (reading it would make the host wait)."""

    loss: torch.Tensor  # mean training loss of this rank's micro-batches
    grad_norm: torch.Tensor  # before clipping
    lr: float


class Trainer:
    """Builds a run's parts from a validated config (`minigpt.validate.validate`); joins, writes, reads and
    downloads nothing. Model handles, one job each: `model` is the GPT itself (weights, checkpoints,
    generation, evaluation), `forward_model` runs its forward passes (compiled with train.compile), and
    `train_model` adds DDP's gradient all-reduce on top, for training steps only."""

    def __init__(self, cfg: Config, run_dir: str | Path, extra_hooks: list[StepHook] | None = None,
                 dist: distributed.DistEnv | None = None, device: torch.device | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.created_at = time.time()  # run_summary.json's wall time includes data and model set-up
        tc = cfg.train
        self.dist = dist or distributed.joined()  # the ranks of a process group distributed.setup() joined
        self.device = device or distributed.rank_device(self.dist, pick_device(tc.device))
        self.grad_accum = grad_accum_steps(cfg, self.dist.world_size)
        self.seq_len = tc.sequence_length or cfg.model.block_size
        self.dtype = resolve_dtype(tc.dtype, self.device)  # train.dtype=auto: bfloat16 on a CUDA GPU that has it
        configure_backends(self.device)
        seed_everything(tc.effective_init_seed)

        self.model = GPT(cfg.arch, cfg.model)
        if tc.init_from:  # fine-tuning; a resumed run's checkpoint still wins (loaded later, in fit)
            init_weights_from(self.model, tc.init_from)
        self.model.to(self.device)
        self.forward_model = self.model.compiled() if tc.compile else self.model
        self.train_model = distributed.wrap_model(self.forward_model, self.dist, self.device)
        optimizer = build_optimizer(self.model, cfg.optim, self.device.type)
        self.optimizer = distributed.shard_optimizer(optimizer, self.dist, tc.zero_stage)
        self.schedule = Schedule(self.optimizer, cfg.optim, tc.num_iterations)  # every group's lr, Muon's momentum
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "float16")
        self.autocast = lambda: autocast_context(self.device, self.dtype)
        # float16: the GradScaler skips inf/nan-gradient steps itself, so the guard only watches the loss
        self.guard = DivergenceGuard(tc.skip_nonfinite, self.device, self.run_dir,
                                     grads_checked=not self.scaler.is_enabled())
        self.state = TrainState()  # step, tokens_seen
        self.tokens_per_step = self.grad_accum * tc.batch_size * self.seq_len * self.dist.world_size
        self.flops_per_token = self.model.flops_per_token(self.seq_len)
        self.peak_flops = peak_flops(device_name(self.device), self.dtype, tc.peak_flops)
        self.clock = StepClock()
        self.eval = EVALS[cfg.eval.name](cfg)  # its data comes in load_eval_data()
        self.extra_hooks = list(extra_hooks or [])
        self.train_loader = self.val_loader = self.batches = None  # opened by prepare_data()
        self.eval_loaded = False
        self.logger = None  # opened in fit()

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def tokens_seen(self) -> int:
        return self.state.tokens_seen

    @property
    def hooks(self) -> list[StepHook]:
        """What runs between steps: validation, samples, the eval's hooks (once loaded), the caller's."""
        tc = self.cfg.train
        return [
            StepHook("val", tc.val_loss_every, Trainer.val_loss, metrics=("val/loss",), at_start=True),
            *([StepHook("sample", tc.sample_every, Trainer.sample)] if tc.sample_every > 0 else []),  # 0: none at all
            *self.eval.hooks(),
            *self.extra_hooks,
        ]

    # ------------------------------------------------------------------ set-up steps (side effects)

    def prepare_data(self) -> "Trainer":
        """Tokenize the corpus into the cache (each node's local rank 0 first, the others then read it) and open
        the loaders."""
        tc = self.cfg.train
        with distributed.node_first(self.dist):
            train_files, val_files = prepare_splits(self.cfg.data, log=log.info)
        # each rank reads its own slice; every token id is checked against the vocabulary once, at open
        ranks = {"rank": self.dist.rank, "world_size": self.dist.world_size, "vocab_size": self.cfg.model.vocab_size}
        self.train_loader = DataLoader(train_files, tc.batch_size, self.seq_len, seed=tc.effective_data_seed,
                                       split="train", **ranks)
        self.val_loader = DataLoader(val_files, tc.batch_size, self.seq_len, shuffle=False, split="val", **ranks)
        fixed_batch = self.train_loader.next_batch() if tc.overfit_single_batch else None
        self.batches = DevicePrefetcher(self.train_loader, self.device, fixed_batch)
        return self

    def load_eval_data(self) -> "Trainer":
        """Read (or download into the cache) what the `eval=` choice scores on; unavailable: one warning."""
        self.eval.load()
        self.eval_loaded = True
        return self

    def checkpoint(self) -> Checkpoint:
        """This run's checkpoint state objects (torchtitan-style Statefuls): what resume and save see."""
        parts = {"model": self.model, "optimizer": distributed.OptimizerState(self.optimizer),
                 "scaler": self.scaler, "train_loader": self.batches,  # the position after the batches trained on
                 "rng": RNGState()}  # last: loading the others draws no random numbers after it
        info = lambda: {"config": to_container(self.cfg),  # noqa: E731
                        "logger_run_id": getattr(self.logger, "run_id", None)}  # a resumed run continues it
        return Checkpoint(self.run_dir, self.dist, self.state, parts, info=info, before_save=self.guard.check)

    # ------------------------------------------------------------------ steps

    def train_step(self) -> StepResult:
        """One optimizer step, queued on the device without waiting for it (no `.item()`, no synchronize)."""
        lr = self.schedule.apply(self.step)  # every group's lr (a host float), Muon's momentum
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.grad_accum):
            x, y = self.batches.next()
            with distributed.grad_sync(self.train_model, last_micro_step=micro == self.grad_accum - 1):
                with self.autocast():
                    _, loss = self.train_model(x, y)
                self.batches.prefetch()  # host work for the next batch while the device runs this forward
                loss = loss / self.grad_accum  # mean over this rank's share; DDP averages over ranks
                loss_sum += loss.detach()
                self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.guard.allow_update(loss_sum, grad_norm, self.step + 1):  # no host sync unless train.skip_nonfinite
            self.scaler.step(self.optimizer)  # fp16: fused AdamW (the default) takes the inf check as a tensor
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.tokens_seen += self.tokens_per_step
        self.clock.tick()
        return StepResult(loss_sum, grad_norm, lr)

    def read_metrics(self, result: StepResult, flags: list[float]) -> tuple[dict, list[float]]:
        """The loop's one wait for the device: metrics of `result`, and `flags` summed over ranks.

        The loss and the per-rank flags (stop signals) share one all-reduce, and one device-to-host
        copy brings them back with the gradient norm; that copy waits for all queued work, so the
        clock read after it measures the steps since the last read.
        """
        shared = torch.cat([result.loss.detach().float().view(1), torch.tensor(flags, device=self.device)])
        shared = distributed.all_reduce_sum(shared)
        loss, *flags_sum, grad_norm = torch.cat([shared, result.grad_norm.detach().float().view(1)]).tolist()
        seconds = self.clock.read()
        metrics = {
            "train/loss": loss / self.dist.world_size,
            "train/lr": result.lr,
            "train/grad_norm": grad_norm,
            "train/tokens": self.tokens_seen,
            "train/ms_per_step": seconds * 1000,
            "train/tokens_per_s": self.tokens_per_step / seconds,
            "train/peak_mem_gb": peak_memory_gb(self.device),
        }
        utilisation = mfu(self.flops_per_token, metrics["train/tokens_per_s"] / self.dist.world_size, self.peak_flops)
        if utilisation is not None:
            metrics["train/mfu"] = utilisation
        return metrics, flags_sum

    # ------------------------------------------------------------------ the trainer's own step hooks

    @torch.no_grad()
    def val_loss(self) -> dict:
        self.model.eval()
        self.val_loader.reset()
        # The first `steps` val batches, rank r taking batches r, r+W, ...: the same set for any world size.
        W = self.dist.world_size
        steps = min(self.cfg.train.val_max_steps, self.val_loader.num_batches())
        total = torch.zeros(2, device=self.device)  # (loss sum, batches)
        for _ in range(self.dist.rank, steps, W):
            x, y = self.val_loader.next_batch()
            with self.autocast():
                _, loss = self.forward_model(x.to(self.device), y.to(self.device))
            total += torch.stack([loss.float(), torch.ones((), device=self.device)])
        self.model.train()
        total = distributed.all_reduce_sum(total)
        val_loss = (total[0] / total[1]).item()
        log.info(f"step {self.step:6d} | val loss {val_loss:.4f}")
        return {"val/loss": val_loss}

    @torch.no_grad()
    def sample(self) -> dict:
        """A short continuation of an EOT token; its own RNG, so sampling never shifts training randomness."""
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed + self.step)
        self.model.eval()
        start = torch.tensor([[EOT_TOKEN]], device=self.device)
        with self.autocast():
            out = self.model.generate(start, self.cfg.train.sample_tokens, temperature=1.0, top_k=50, generator=gen)
        self.model.train()
        text = get_gpt2_encoding().decode(out[0, 1:].tolist())
        log.info(f"step {self.step:6d} | sample: {text!r}")
        return {"sample/text": text}

    # ------------------------------------------------------------------ loop

    def describe(self) -> str:
        m = self.model
        return (
            f"arch={self.cfg.arch.name} model={self.cfg.model.name} | params {m.num_params() / 1e6:.2f}M "
            f"= {m.describe_params()} (non-embedding {m.num_params(non_embedding=True) / 1e6:.2f}M) | "
            f"optim {self.cfg.optim.kind.value} {self.cfg.optim.schedule.value} | "
            f"FLOPs/token {self.flops_per_token / 1e6:.1f}M | device {self.device} "
            f"| dtype {self.dtype_label()} | tokens/step {self.tokens_per_step:,} (grad accum {self.grad_accum}"
            f" x {self.dist.world_size} ranks, zero_stage {self.cfg.train.zero_stage}) | "
            f"est. peak memory {estimate_memory(self.cfg, self.dist.world_size, self.device).peak / 2**30:.2f} GiB"
        )

    def dtype_label(self) -> str:
        """`bfloat16 (auto)` when train.dtype=auto chose it, else the dtype asked for."""
        return f"{self.dtype} (auto)" if self.cfg.train.dtype.value == "auto" else self.dtype

    @property
    def end_step(self) -> int:
        """Where this segment stops: train.num_iterations, or the earlier train.stop_at (a halving trunk's pause:
        not part of the run's identity, so the run goes on later in the same directory with the same schedule)."""
        tc = self.cfg.train
        return tc.num_iterations if tc.stop_at is None else min(tc.stop_at, tc.num_iterations)

    def fit(self) -> dict:
        # One process per run dir (rank 0 locks, the other ranks wait to hear): before anything is written.
        lock = run_lock.acquire_for_ranks(self.run_dir, self.dist)
        try:
            if self.batches is None:  # set-up steps the caller did not run (the train entrypoint runs them)
                self.prepare_data()
            if not self.eval_loaded:
                self.load_eval_data()
            return self._fit()
        finally:
            run_lock.release(lock)

    def run_hooks(self, hooks: list[StepHook]) -> dict:
        """Run these step hooks at this step, logging each one's metrics; returns them all."""
        results: dict = {}
        for hook in hooks:
            out = hook.run(self)
            self.logger.log(out, self.step)
            results.update(out)
        return results

    def _fit(self) -> dict:
        tc = self.cfg.train
        checkpoint = self.checkpoint()
        resumed = checkpoint.resume(tc.resume, tc.num_iterations)  # before the loggers open: they continue its run
        if resumed.finished:  # already at train.num_iterations: it said so in one line; write nothing
            return last_logged(self.run_dir / "metrics.jsonl")
        if self.step > 0:  # a resumed segment under DDP: its steps as the uninterrupted run's, bit for bit
            distributed.settle_buckets(self.train_model, (tc.batch_size, self.seq_len), self.device, self.autocast)
        self.logger = (build_loggers(self.cfg, self.run_dir, warn=log.warning, run_id=resumed.logger_run_id,
                                     forked_from=resumed.forked_from, is_main=self.dist.is_main)
                       if self.dist.is_main else NullLogger())
        record = RunRecord(self, forecast=start_forecast)  # run_summary.json: status, wall time, GPU-hours, cost
        if resumed.forked_from:
            record.forked(resumed.forked_from)
        self.logger.add(record)
        log.info(self.describe())
        for warning in (slow_dtype_warning(self.device, self.dtype),
                        math_attention_warning(self.device, self.dtype, uses_gqa(self.cfg.arch, self.cfg.model))):
            if warning:
                log.warning(warning)
        if (warning := warmup_warning(self.cfg.optim, tc.num_iterations)) and self.dist.is_main:
            log.warning(warning)
        if self.peak_flops is None and self.device.type == "cuda":  # a GPU missing from the table (CPUs have no MFU)
            log.info(peak_flops_hint(device_name(self.device), self.dtype))
        final: dict = {}
        hooks = self.hooks
        checkpoints = Checkpointer(tc.checkpoint_every, tc.keep_checkpoints,
                                   on_save=lambda: record.checkpointed(self.step), distributed=self.dist.enabled).install()
        collector = GarbageCollection(tc.gc_every)
        try:
            with collector:
                if self.step == 0:  # a fresh run (a resumed one logged its step 0 already): the curves' start
                    with self.clock.paused():
                        final.update(self.run_hooks([hook for hook in hooks if hook.due(0, last=False)]))
                while self.step < self.end_step:
                    final.update(self._loop_step(hooks, checkpoint, checkpoints, collector))
                    # set-up and the first (compiling) step are done: a rank lost from here ends the job in minutes
                    distributed.shorten_timeout(self.cfg.cluster.collective_timeout_s)
        except BaseException as exc:
            lost = distributed.lost_peer(exc)  # a collective failed as a peer went: one line naming the rank
            record.fail(lost or exc)
            if lost:
                raise lost from None
            raise
        finally:
            self.logger.log(record.close(self.step, self.tokens_seen), self.step)
            self.logger.finish()
            checkpoints.uninstall()  # last: may hand a signal on to submitit, which requeues the job
        return final

    def _loop_step(self, hooks: list[StepHook], checkpoint: Checkpoint, checkpoints: Checkpointer,
                   collector: GarbageCollection) -> dict:
        """One step and whatever is due after it; reads the device only when something needs a value."""
        tc = self.cfg.train
        result = self.train_step()
        last = self.step == tc.num_iterations
        pause = self.step == self.end_step and not last  # train.stop_at: checkpoint here, then stop
        log_now = last or self.step % tc.log_every == 0
        due = [hook for hook in hooks if hook.due(self.step, last)]
        metrics = {}
        if log_now or due or checkpoints.wants_sync(self.step, last or pause):
            metrics, flags = self.read_metrics(result, checkpoints.signal_flags())
            checkpoints.agree(flags)  # under DDP: the signals that reached any rank, the same on all ranks
            # A non-finite step since the last sync stops the run here, naming the first bad step, before
            # anything is logged, evaluated or saved (save() checks again, for a signal at another step).
            self.guard.check()
        if log_now:
            self.logger.log(metrics, self.step)
            log.info(
                f"step {self.step:6d}/{tc.num_iterations} ({100 * self.step / tc.num_iterations:.0f}%) | "
                f"loss {metrics['train/loss']:.4f} | lr {metrics['train/lr']:.2e} | norm {metrics['train/grad_norm']:.3f} | "
                f"{metrics['train/ms_per_step']:.1f} ms | {metrics['train/tokens_per_s']:,.0f} tok/s | "
                f"{metrics['train/peak_mem_gb']:.2f} GiB | ETA {format_eta(self.clock.eta(tc.num_iterations - self.step))}"
            )
        with self.clock.paused():  # evaluation and checkpoint time is not step time
            metrics.update(self.run_hooks(due))
            checkpoints.after_step(checkpoint, last or pause)  # periodic, final, a pause, or asked for by a signal
        collector.step(self.step)
        return metrics
