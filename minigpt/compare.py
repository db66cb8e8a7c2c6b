"""Compare runs at a glance: `python -m minigpt.compare <multirun dir | run dirs...> [--out DIR]`.

Prints a markdown table (one row per run: arch, model, params, tokens, final val loss, best HellaSwag
acc_norm per protocol, tokens/s, MFU, wall time, GPU-hours, cost, status) and writes it to
`<out>/report.md` with two plots, `val_loss.png` and `hellaswag.png` (one line per run, labelled by arch).
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


def table_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    protocols = hellaswag_protocols(runs)
    header = ["run", "arch", "model", "params", "tokens", "val loss", *[f"HellaSwag {p} acc_norm" for p in protocols],
              "tokens/s", "MFU", "wall", "GPU-h", "cost", "status"]
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


def forecast_table(runs: list[Run]) -> str:
    """The forecast each run recorded at its start against what it measured (minigpt/plan/calibration.py)."""
    from minigpt.plan.calibration import forecast_rows

    header, rows = forecast_rows(runs)
    return markdown_table(header, rows) if rows else ""


def write_report(runs: list[Run], out_dir: Path, source: str) -> tuple[str, list[Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(*table_rows(runs))
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
        "tokens/s and MFU are medians over logged steps; GPU-hours = wall time x GPUs; cost = wall time x (nodes x the node rate + GPUs x the GPU rate).",
    ]
    if total_cost:
        lines.append(f"Total cost: {total_cost:.2f} {'/'.join(sorted(u for u in units if u))}.")
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    calibration = forecast_table(runs)
    if calibration:
        lines += ["", "## Forecast vs measured", "", calibration]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return table, [report, *plots]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="run directories, or a multirun/sweep directory holding them")
    parser.add_argument("--out", help="report folder (default: <the one path>/compare, else outputs/compare/<time>)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT[/GROUP]", help="read the runs from the W&B API instead")
    args = parser.parse_args(argv)
    try:
        if bool(args.paths) == bool(args.wandb):
            raise ConfigError("pass run directories (or a multirun directory) or --wandb ENTITY/PROJECT[/GROUP], not both")
        runs = load_wandb_runs(args.wandb) if args.wandb else load_runs(args.paths)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif len(args.paths) == 1:
        out = Path(args.paths[0]) / "compare"
    else:
        out = Path("outputs/compare") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    table, files = write_report(runs, out, args.wandb or " ".join(args.paths))
    print(table)
    calibration = forecast_table(runs)
    if calibration:
        print("\nForecast vs measured (python -m minigpt.plan):\n" + calibration)
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
