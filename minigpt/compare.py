"""Compare runs at a glance: `python -m minigpt.compare <multirun dir | run dirs...> [--out DIR]`.

Prints a markdown table (one row per run: arch, model, params, tokens, final val loss, best HellaSwag
acc_norm per protocol, tokens to reach the baseline's final val loss, tokens/s, MFU, wall time,
GPU-hours, cost, status), a per-group sample-efficiency table (groups: runs that differ only in their
seed), and writes them to `<out>/report.md` with two plots, `val_loss.png` and `hellaswag.png` (one
line per run, labelled by arch). The baseline is the first run's group unless `--baseline` names one.
Works offline from metrics.jsonl; `--wandb ENTITY/PROJECT[/GROUP]` reads the same from the W&B API.
Failed or unfinished runs are listed with their status and never stop the report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime
from pathlib import Path

from minigpt.errors import ConfigError
from minigpt.plots import hellaswag_protocols, plot_hellaswag, plot_val_loss
from minigpt.runs import Run, load_runs, load_wandb_runs
from minigpt.tokens_to_target import efficiency_ratio, final_loss, mean_curve, target_loss, tokens_to_reach

SEED_OVERRIDES = ("train.seed=", "train.init_seed=", "train.data_seed=")  # replicates, not arms


def _si(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _median(run: Run, key: str) -> float | None:
    values = [v for _, v in run.series(key)]
    return statistics.median(values) if values else None


def _last(run: Run, key: str) -> float | None:
    points = run.series(key)
    return points[-1][1] if points else None


def val_curve(run: Run) -> list[tuple[float, float]]:
    return [(run.tokens_at(step), loss) for step, loss in run.series("val/loss")]


def group_label(run: Run) -> str:
    """What sets a run apart from the others: its sweep overrides minus the seed, else its arch."""
    axes = [o for o in run.overrides if not o.startswith(SEED_OVERRIDES)]
    return " ".join(axes) or str(run.cfg("arch.name", run.name))


def groups(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for run in runs:
        out.setdefault(group_label(run), []).append(run)
    return out


def baseline_group(runs: list[Run], baseline: str | None) -> str:
    """The group whose label is `baseline`, or that holds a run with that override or arch name."""
    grouped = groups(runs)
    if baseline is None:
        return next(iter(grouped))
    for label, members in grouped.items():
        if baseline == label or any(baseline in r.overrides or baseline == r.cfg("arch.name") for r in members):
            return label
    raise ConfigError(f"--baseline {baseline!r} matches no run group; groups: {', '.join(grouped)}")


def tokens_to_target(runs: list[Run], baseline: str | None) -> tuple[float | None, str, dict[str, float | None]]:
    """(target val loss: the baseline group's mean final val loss, its label, tokens each run needed to reach it)."""
    label = baseline_group(runs, baseline)
    target = target_loss([val_curve(r) for r in groups(runs)[label]])
    per_run = {r.name: tokens_to_reach(val_curve(r), target) if target is not None else None for r in runs}
    return target, label, per_run


def efficiency_table(runs: list[Run], baseline: str | None) -> tuple[list[str], list[list[str]]]:
    """One row per group: runs, final val loss and tokens to the target of the seeds' mean curve, and the
    tokens ratio to the baseline with its 95% CI."""
    target, base_label, _ = tokens_to_target(runs, baseline)
    grouped = groups(runs)
    base_curves = [val_curve(r) for r in grouped[base_label]]
    header = ["group", "runs", "final val loss", "tokens to target", "tokens ratio vs baseline [95% CI]"]
    rows = []
    for label, members in grouped.items():
        curves = [val_curve(r) for r in members]
        mean = mean_curve(curves)
        tokens = tokens_to_reach(mean, target) if mean and target is not None else None
        ratio = efficiency_ratio(base_curves, curves)
        rows.append([
            label + (" (baseline)" if label == base_label else ""),
            str(len(members)),
            f"{final_loss(mean):.4f}" if mean else "-",
            _si(tokens) if tokens is not None else ("not reached" if mean else "-"),
            str(ratio) if ratio is not None else "-",
        ])
    return header, rows


def table_rows(runs: list[Run], baseline: str | None = None) -> tuple[list[str], list[list[str]]]:
    protocols = hellaswag_protocols(runs)
    header = ["run", "arch", "model", "params", "tokens", "val loss", *[f"HellaSwag {p} acc_norm" for p in protocols],
              "tokens to target", "tokens/s", "MFU", "wall", "GPU-h", "cost", "status"]
    _, _, to_target = tokens_to_target(runs, baseline)
    rows = []
    for run in runs:
        s = run.summary
        tokens = _last(run, "train/tokens") or s.get("tokens")
        val = _last(run, "val/loss")
        best = []
        for p in protocols:
            values = [v for _, v in run.series(f"hellaswag/{p}/acc_norm")]
            best.append(f"{max(values):.4f}" if values else "-")
        mfu = _median(run, "train/mfu")
        gpu_h, cost = s.get("gpu_hours"), s.get("cost")
        unit = s.get("cost_unit") or run.cfg("cluster.cost_unit") or ""
        status = run.status + (f" ({run.note})" if run.note else "")
        rows.append([
            run.name,
            str(run.cfg("arch.name", "-")),
            str(run.cfg("model.name", "-")),
            _si(s.get("params")),
            _si(tokens),
            f"{val:.4f}" if val is not None else "-",
            *best,
            _si(to_target[run.name]) if to_target[run.name] is not None else ("not reached" if val is not None else "-"),
            _si(_median(run, "train/tokens_per_s")),
            f"{100 * mfu:.1f}%" if mfu is not None else "-",
            _duration(s.get("wall_s")),
            f"{gpu_h:.2f}" if gpu_h is not None else "-",
            f"{cost:.2f} {unit}".strip() if cost is not None else "-",
            status.replace("|", "/"),
        ])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def write_report(runs: list[Run], out_dir: Path, source: str, baseline: str | None = None) -> tuple[str, list[Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    target, base_label, _ = tokens_to_target(runs, baseline)  # a bad --baseline fails before anything is written
    table = markdown_table(*table_rows(runs, baseline))
    if target is not None:
        table += (f"\n\ntokens to target: tokens each run needed to reach the final val loss of the baseline group "
                  f"{base_label!r}, {target:.4f} (mean over its runs), interpolated on its val-loss curve")
    seeded = any(o.startswith(SEED_OVERRIDES) for r in runs for o in r.overrides)
    if target is not None and seeded:  # replicates over seeds: compare groups, with intervals
        table += ("\n\n" + markdown_table(*efficiency_table(runs, baseline))
                  + "\n\ngroups: runs that differ only in their seed, as the mean of their val-loss curves; tokens ratio: "
                  "baseline tokens / group tokens to the target (>1: fewer tokens than the baseline, 0: never), "
                  "95% CI: percentile bootstrap over the seeds of both groups")
    plots = [p for p in (plot_val_loss(runs, out_dir), plot_hellaswag(runs, out_dir)) if p]
    total_cost = sum(r.summary.get("cost") or 0 for r in runs)
    units = {r.summary.get("cost_unit") for r in runs if r.summary.get("cost")}
    lines = [
        f"# Run comparison ({len(runs)} runs)",
        "",
        f"Source: `{source}` — generated {datetime.now().isoformat(timespec='seconds')}.",
        "",
        table,
        "",
        "tokens/s and MFU are medians over logged steps; GPU-hours = wall time x GPUs; cost = GPU-hours x the cluster's rate.",
    ]
    if total_cost:
        lines.append(f"Total cost: {total_cost:.2f} {'/'.join(sorted(u for u in units if u))}.")
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return table, [report, *plots]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="run directories, or a multirun/sweep directory holding them")
    parser.add_argument("--out", help="report folder (default: <the one path>/compare, else outputs/compare/<time>)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT[/GROUP]", help="read the runs from the W&B API instead")
    parser.add_argument("--baseline", metavar="GROUP", help="the group whose final val loss is the target for "
                        "'tokens to target' (a group label, an override such as recipe=gpt2_adamw, or an arch "
                        "name); default: the first run's group")
    args = parser.parse_args(argv)
    try:
        if bool(args.paths) == bool(args.wandb):
            raise ConfigError("pass run directories (or a multirun directory) or --wandb ENTITY/PROJECT[/GROUP], not both")
        runs = load_wandb_runs(args.wandb) if args.wandb else load_runs(args.paths)
        baseline_group(runs, args.baseline)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif len(args.paths) == 1:
        out = Path(args.paths[0]) / "compare"
    else:
        out = Path("outputs/compare") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    table, files = write_report(runs, out, args.wandb or " ".join(args.paths), args.baseline)
    print(table)
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
