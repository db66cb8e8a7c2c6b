"""`python -m minigpt.plan <the train command's arguments>`: what a run or sweep will cost, before it runs.

    python -m minigpt.plan -m --config-dir sweeps --config-name arch_ablation cluster=grace_a100

Composes every job exactly as `python -m minigpt.train` would (plan/compose.py), runs and submits
nothing, and prints one row per job plus the total: parameters, tokens, memory per GPU against the
GPU's, the largest micro-batch that fits, tokens/s, wall time, GPU-hours, cost and SLURM time-limit
chunks, and what a rerun would do with each job's directory (new, resume, skip). For a SLURM preset
it writes the sbatch script submitit would submit. A job that cannot fit or cannot finish within
`cluster.max_requeues` gets one `error:` line with the fix, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minigpt.cli import cli_errors
from minigpt.errors import ConfigError
from minigpt.units import si

GIB = 2**30


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.0f}m"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def plan_rows(forecasts: list, states: list, names: list[str], unit: str) -> tuple[list[str], list[list[str]]]:
    header = ["job", "rerun does", "params", "tokens", "mem/GPU GiB", "fits", "max batch", "tokens/s",
              "wall", "GPU-h", f"cost {unit}", "chunks"]
    rows = []
    for name, f, state in zip(names, forecasts, states):
        mem = f"{f.memory.peak / GIB:.1f}/{f.memory_limit_gb:.1f}" if f.memory else "-"
        fits = {True: "yes", False: "NO", None: "-"}[f.fits]
        rows.append([name, state.describe(), si(f.params), si(f.tokens), mem, fits, _num(f.max_batch_size, "{}"),
                     si(f.tokens_per_s), _hours(f.wall_s), _num(f.gpu_hours), _num(f.cost, "{:.0f}"),
                     _num(f.chunks, "{}")])
    known = [f for f in forecasts if f.wall_s is not None]
    total = lambda key: sum(getattr(f, key) for f in known) if known else None  # noqa: E731
    rows.append([f"total ({len(forecasts)} jobs)", "", "", si(sum(f.tokens for f in forecasts)), "", "", "", "",
                 _hours(total("wall_s")), _num(total("gpu_hours")), _num(total("cost"), "{:.0f}"),
                 _num(sum(f.chunks or 0 for f in known) if known else None, "{}")])
    return header, rows


def detail_rows(forecasts: list, names: list[str]) -> tuple[list[str], list[list[str]]]:
    """Per job: the model's size and FLOPs, and what makes up the memory peak per device (GiB)."""
    header = ["job", "non-emb params", "FLOPs/token", "run FLOPs", "weights", "grads", "optim", "DDP",
              "activations", "logits+CE", "peak GiB"]
    rows = []
    for name, f in zip(names, forecasts):
        m = f.memory
        parts = [m.weights, m.grads, m.optimizer, m.ddp_buckets, m.activations, m.loss, m.peak] if m else []
        rows.append([name, si(f.params_non_embedding), si(f.flops_per_token), f"{f.flops:.2e}",
                     *([f"{b / GIB:.2f}" for b in parts] if parts else ["-"] * 7)])
    return header, rows


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="the train command's overrides (key=value, sweeps as a,b,c)")
    parser.add_argument("-m", "--multirun", action="store_true", help="plan a sweep, as train's -m")
    parser.add_argument("-cd", "--config-dir", help="extra config folder, as train's (e.g. sweeps)")
    parser.add_argument("-cn", "--config-name", help="primary config, as train's (e.g. arch_ablation)")
    parser.add_argument("--history", action="append", default=None, metavar="DIR",
                        help="folders of earlier runs to calibrate MFU from (default: outputs)")
    parser.add_argument("--mfu", type=float, default=None, help="MFU to assume when no earlier run matches")
    parser.add_argument("--sbatch", metavar="FILE", help="where to write the sbatch script (SLURM presets; "
                        "default outputs/plan/<config name>.sbatch)")
    parser.add_argument("--max-jobs", type=int, default=None, help="plan sweeps of more jobs than 1000")
    parser.add_argument("--effect", type=float, default=None, metavar="NATS",
                        help="seeds and GPU-hours a verdict on an effect of this many nats of val loss needs")
    args = parser.parse_args(argv)
    if args.effect is not None and not args.effect > 0:
        raise ConfigError(f"--effect {args.effect}: give the effect to detect as a positive number of nats, e.g. --effect 0.02")
    return _plan(args)


def _plan(args: argparse.Namespace) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from minigpt.config import to_config
    from minigpt.plan.compose import MAX_JOBS, compose_command, task_config
    from minigpt.plan.forecast import DEFAULT_MFU, forecast_job
    from minigpt.plan.history import load_history
    from minigpt.rundir import run_state

    try:
        plan = compose_command(args.overrides, multirun=args.multirun, config_name=args.config_name,
                               config_dir=args.config_dir, max_jobs=args.max_jobs or MAX_JOBS)
        configs = [to_config(task_config(job)) for job in plan.jobs]
    except (HydraException, OmegaConfBaseException) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(f"{first} (the train command would fail the same way)") from exc
    history = load_history(args.history or ["outputs"])
    mfu = args.mfu if args.mfu is not None else DEFAULT_MFU
    forecasts, states = [], []
    for job, cfg in zip(plan.jobs, configs):
        state = run_state(job.run_dir, cfg.train.num_iterations, rerun=cfg.train.rerun)
        forecasts.append(forecast_job(cfg, history, remaining=state.remaining(cfg.train.num_iterations), default_mfu=mfu))
        states.append(state)

    cluster = configs[0].cluster
    print(f"plan: {len(plan.jobs)} job(s) on {cluster.name} "
          f"({forecasts[0].ranks} rank(s) each on {forecasts[0].device}); nothing is run or submitted")
    names = [str(job.run_dir) if len(plan.jobs) == 1 else job.run_dir.name for job in plan.jobs]
    if len(plan.jobs) > 1:
        print(f"run dirs under {plan.jobs[0].run_dir.parent}/")
    print(_table(*plan_rows(forecasts, states, names, cluster.cost_unit)))
    print()
    print(_table(*detail_rows(forecasts, names)))
    print()
    for line in dict.fromkeys(f.throughput_source for f in forecasts if f.throughput_source):
        print(f"throughput: {line}")
    if plan.note:
        print(f"note: {plan.note}")
    for line in dict.fromkeys(w for f in forecasts for w in f.warnings):
        print(f"warning: {line}")
    if cluster.account_required and not cluster.account:
        print(f"warning: submitting needs cluster.account=<account> (cluster={cluster.name})")
    from minigpt.plan.sbatch import render_sbatch, submits_with_submitit

    if plan.sweep_config is not None and submits_with_submitit(plan.sweep_config):

        path = Path(args.sbatch or Path("outputs") / "plan" / f"{args.config_name or 'config'}.sbatch")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_sbatch(plan.sweep_config, len(plan.jobs)))
        print(f"sbatch script (not submitted): {path}")
    if configs[0].halving.budget or args.effect is not None:
        print()
        print(halving_text(plan.jobs, configs, forecasts, args.effect, args.history or ["outputs"], cluster.cost_unit))
    problems = [(name, p) for name, f in zip(names, forecasts) for p in f.problems]
    if problems:  # one `error:` line through @cli_errors, after the table that marks every job
        (name, problem), more = problems[0], len(problems) - 1
        raise ConfigError(f"{name}: {problem}" + (f" (and {more} more problem(s): see the table)" if more else ""))
    return 0


def _case_rows(cases: list, unit: str) -> tuple[list[str], list[list[str]]]:
    full = cases[0].spend
    rows = [[c.name, f"{c.spend.steps:,.0f}", _hours(c.spend.wall_s), _num(c.spend.gpu_hours),
             _num(c.spend.cost, "{:.0f}"), f"{100 * c.spend.share_of(full):.0f}%"] for c in cases]
    return ["case", "run-steps", "wall", "GPU-h", f"cost {unit}", "% of full"], rows


def halving_text(jobs: list, configs: list, forecasts: list, effect: float | None, roots: list[str], unit: str) -> str:
    """The halving sweep's cost cases (with a `halving:` block) and, with --effect, the seeds a verdict needs."""
    from minigpt.plan.halving import arm_rates, arms_of, baseline_arm, checked, effect_cases, halving_cases, seed_noise
    from minigpt.run_record import model_shape

    arms, seeds = arms_of(jobs)
    h = checked(configs, len(seeds))
    rates = arm_rates(arms, forecasts, configs)
    baseline = baseline_arm(h, list(arms)) if h else next(iter(arms))
    out = []
    if h:
        rungs = "/".join(map(str, h.rungs))
        out += [f"halving: {len(arms)} arms x {len(seeds)} seed(s), budget {h.budget} steps, rungs {rungs}, cooldown "
                f"{h.cooldown:g} {h.cooldown_shape}, rule {h.rule.value}"
                + (f" (eta {h.eta})" if h.rule.value == "top_k" else "")
                + (f", baseline {baseline} kept to the end" if h.keep_baseline else ""),
                _table(*_case_rows(halving_cases(h, rates, len(seeds), baseline), unit))]
    if effect is not None:
        noise = seed_noise(roots, model_shape(configs[0]))
        n, level, cases = effect_cases(effect, noise, h, rates, baseline, configs[0].train.num_iterations)
        what = f"a verdict on {effect:g} nats of val loss between {len(arms)} arms (80% power, paired t at {level:.3g})"
        if not cases:
            out.append(f"effect: {what} is out of reach (more than 1000 seeds per arm); {noise.source}")
        else:
            out += ["" if out else None, f"effect: {what} needs {n} seeds per arm; {noise.source}",
                    _table(*_case_rows(cases, unit))]
    return "\n".join(line for line in out if line is not None)


if __name__ == "__main__":
    sys.exit(main())
