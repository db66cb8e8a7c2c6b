"""The comparison report: runs table, per-group statistics and verdicts, as markdown (report.md) and plots.

To add a per-group column, append a `GroupColumn` to `EXTRA_GROUP_COLUMNS`: its `value(group, table)`
gets the group and its table (so `table.baseline` is at hand) and returns the cell's text; its optional
`note(table)` is printed under the table. Tokens to reach the baseline's final val loss (and the
tokens ratio with its CI) come in this way, from tokens_to_target.py.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minigpt.compare import stats, tokens_to_target
from minigpt.compare.groups import Group, Table, build_tables, group_runs
from minigpt.compare.plots import hellaswag_protocols, plot_forest, plot_hellaswag, plot_val_loss
from minigpt.compare.local_runs import Run
from minigpt.errors import ConfigError
from minigpt.units import si
from minigpt.plan.calibration import forecast_rows
from minigpt.compare.verdicts import VAL_LOSS, Verdict, correctness, fmt_p, hellaswag_metric, table_verdicts


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


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    rows = [[c.replace("|", "\\|") for c in r] for r in rows]  # a pipe inside a cell (|Δ|) must not end it
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


# ---------------------------------------------------------------------------------------------- runs


def final_hellaswag(run: Run, protocol: str) -> float | None:
    """acc_norm of the last per-example records (what the paired test uses), else the last logged value."""
    rec = correctness(run.records, protocol) if run.records else None
    return float(rec[1].mean()) if rec is not None else run.last(f"hellaswag/{protocol}/acc_norm")


def run_table(runs: list[Run], protocols: list[str],
              to_target: dict[int, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per run; `to_target` (id(run) -> cell, tokens_to_target.run_tokens) adds "tokens to target"."""
    header = ["run", "arch", "model", "seed", "params", "tokens", "val loss",
              *[f"HellaSwag {p} acc_norm" for p in protocols], *(["tokens to target"] if to_target else []),
              "tokens/s", "MFU", "wall", "GPU-h", "cost", "status"]
    rows = []
    for run in runs:
        s = run.summary
        tokens = run.last("train/tokens") or s.get("tokens")
        val = run.last("val/loss")
        best = [run.best(f"hellaswag/{p}/acc_norm") for p in protocols]
        mfu = _median(run, "train/mfu")
        gpu_h, cost = s.get("gpu_hours"), s.get("cost")
        unit = s.get("cost_unit") or run.cfg("cluster.cost_unit") or ""
        notes = [run.note] if run.note else []
        status = run.status + (f" ({'; '.join(notes + run.damage)})" if notes or run.damage else "")
        rows.append([
            run.name, str(run.cfg("arch.name", "-")), str(run.cfg("model.name", "-")), run.seed_label,
            si(s.get("params")), si(tokens), f"{val:.4f}" if val is not None else "-",
            *[f"{b:.4f}" if b is not None else "-" for b in best],
            *([to_target.get(id(run), "-")] if to_target else []),
            si(_median(run, "train/tokens_per_s")), f"{100 * mfu:.1f}%" if mfu is not None else "-",
            _duration(s.get("wall_s")), f"{gpu_h:.2f}" if gpu_h is not None else "-",
            f"{cost:.2f} {unit}".strip() if cost is not None else "-", status,
        ])
    return header, rows


# ---------------------------------------------------------------------------------------------- groups


@dataclass
class GroupColumn:
    header: str
    value: Callable[[Group, Table], str]
    note: Callable[[Table], str | None] | None = None  # a line under the table explaining the column


def mean_ci(values, digits: int = 4) -> str:
    """`mean ± half-width of the 95% CI` (just the mean for one value)."""
    s = stats.summarize(values)
    if s is None:
        return "-"
    if s.n < 2:
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} ± {s.half_width:.{digits}f}"


def _std(values, digits: int = 4) -> str:
    s = stats.summarize(values)
    return f"{s.std:.{digits}f}" if s is not None and not math.isnan(s.std) else "-"


def _cost(group: Group, table: Table) -> str:
    costs = [r.summary.get("cost") for r in group.runs if r.summary.get("cost") is not None]
    if not costs:
        return "-"
    unit = group.runs[0].summary.get("cost_unit") or group.runs[0].cfg("cluster.cost_unit") or ""
    return f"{sum(costs):.2f} {unit}".strip()


def group_columns(protocols: list[str]) -> list[GroupColumn]:
    cols = [
        GroupColumn("n", lambda g, t: str(len(g.runs)) + (f" (+{len(g.left_out)} left out)" if g.left_out else "")),
        GroupColumn("val loss (mean ± 95% CI)", lambda g, t: mean_ci([r.last("val/loss") for r in g.runs])),
        GroupColumn("val loss std", lambda g, t: _std([r.last("val/loss") for r in g.runs])),
    ]
    for p in protocols:
        key = f"hellaswag/{p}/acc_norm"
        cols += [
            GroupColumn(f"HellaSwag {p} final", lambda g, t, p=p: mean_ci([final_hellaswag(r, p) for r in g.runs])),
            GroupColumn(f"HellaSwag {p} std", lambda g, t, p=p: _std([final_hellaswag(r, p) for r in g.runs])),
            GroupColumn(f"HellaSwag {p} best", lambda g, t, k=key: mean_ci([r.best(k) for r in g.runs])),
        ]
    cols += [
        GroupColumn("tokens/s", lambda g, t: mean_ci([_median(r, "train/tokens_per_s") for r in g.runs], 0)),
        GroupColumn("cost (all runs)", _cost),
    ]
    return cols + EXTRA_GROUP_COLUMNS


EXTRA_GROUP_COLUMNS: list[GroupColumn] = [  # other modules append here (see the module docstring)
    GroupColumn("tokens to target", tokens_to_target.group_tokens, tokens_to_target.note),
    GroupColumn("tokens ratio vs baseline [95% CI]", tokens_to_target.group_ratio),
]


def group_table(table: Table, protocols: list[str]) -> str:
    """The table's groups, one row each, followed by the notes of columns that have one."""
    cols = group_columns(protocols)
    rows = [[g.label + (" (baseline)" if g is table.baseline else ""), *(c.value(g, table) for c in cols)]
            for g in table.groups]
    notes = [n for c in cols if c.note and (n := c.note(table))]
    return "\n\n".join([markdown_table(["group", *(c.header for c in cols)], rows), *notes])


def verdict_table(verdicts: list[Verdict]) -> str:
    rows = []
    for v in verdicts:
        if v.diff is None:
            rows.append([v.group.label, v.metric, "-", "-", "-", v.reason, v.verdict, v.seeds])
            continue
        d = v.diff
        rows.append([v.group.label, v.metric, f"{d.delta:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]", fmt_p(d.p),
                     fmt_p(v.p_holm), d.test, v.verdict, v.seeds])
    return markdown_table(["group", "metric", "Δ vs baseline [95% CI]", "p", "p (Holm)", "test", "verdict",
                           "seeds needed"], rows)


# ---------------------------------------------------------------------------------------------- report


def build_report(runs: list[Run], source: str, baseline: str | None = None,
                 effect: float | None = None) -> tuple[str, list[Table], list[list[Verdict]], list[str], list[str]]:
    """(markdown text, tables, verdicts per table, protocols, warnings); no files written."""
    protocols = hellaswag_protocols(runs)
    groups = group_runs(runs)
    tables = build_tables(groups, baseline)
    left_out = [r for r in runs if r.status != "finished"]
    lines = [f"# Ablation report: {len(runs)} runs, {len(groups)} groups", "", f"Source: `{source}`", "",
             "## Runs", "", markdown_table(*run_table(runs, protocols, tokens_to_target.run_tokens(tables))), ""]
    if left_out:
        listed = ", ".join(f"{r.name} ({r.status})" for r in left_out)
        lines += [f"{len(left_out)} of {len(runs)} runs left out of the statistics (not finished): {listed}.", ""]
    lines += ["tokens to target: tokens each run needed to reach its table's baseline final val loss, interpolated "
              "on its val-loss curve; tokens/s and MFU are medians over logged steps; GPU-hours = wall time x GPUs; "
              "cost = wall time x (nodes x the node rate + GPUs x the GPU rate).", ""]
    forecast_header, forecast = forecast_rows(runs)
    if forecast:  # runs that recorded `python -m minigpt.plan`'s forecast at their start
        lines += ["## Forecast vs measured", "", markdown_table(forecast_header, forecast), ""]
    all_verdicts = []
    warnings = [f"{run.name}: {'; '.join(run.damage)}" for run in runs if run.damage]  # one line per run
    for i, table in enumerate(tables, 1):
        verdicts, table_warnings = table_verdicts(table, protocols, effect)
        all_verdicts.append(verdicts)
        warnings += table_warnings
        head = f"## Table {i}: {table.title}" if len(tables) > 1 else "## Groups"
        base = f" (baseline: {table.baseline.label})" if table.baseline else ""
        lines += [head + base, "", group_table(table, protocols), ""]
        if table.note:
            lines += [table.note, ""]
        if verdicts:
            n_tests = len(table.groups) - 1
            lines += [f"### Verdicts vs {table.baseline.label}", "", verdict_table(verdicts), "",
                      f"p (Holm): p-values Holm-corrected over the tested comparisons of each metric in this table "
                      f"(up to {n_tests}); `better`/`worse` when below {stats.ALPHA}. The 95% CI is per comparison. "
                      f"Seeds needed: seeds per group for {stats.POWER:.0%} power to detect "
                      + (f"a difference of {effect}" if effect else "the observed difference")
                      + f" at alpha {stats.ALPHA}/m (m: the tested comparisons of the metric, Holm's strictest step), "
                      "taking the observed variance as the true one.", ""]
            lines += [f"Refused: {w}" for w in table_warnings] + ([""] if table_warnings else [])
    return "\n".join(lines), tables, all_verdicts, protocols, warnings


def write_files(text: str, tables: list[Table], verdicts: list[list[Verdict]], protocols: list[str],
                out_dir: Path) -> list[Path]:
    """report.md and its plots, each written atomically; a write that fails is one ConfigError naming the path."""
    from minigpt.atomic import write_text_atomic

    groups = [g for t in tables for g in t.groups]
    metrics = [VAL_LOSS, *(hellaswag_metric(p) for p in protocols)]
    target = out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = []
        for target, draw in ((out_dir / "val_loss.png", lambda: plot_val_loss(groups, out_dir)),
                             (out_dir / "hellaswag.png", lambda: plot_hellaswag(groups, protocols, out_dir)),
                             (out_dir / "forest.png", lambda: plot_forest(tables, verdicts, metrics, out_dir))):
            plots += [p for p in [draw()] if p]
        target = out_dir / "report.md"
        write_text_atomic(target, text + "\n## Plots\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots))
    except OSError as exc:
        raise ConfigError(f"could not write {target}: {exc.strerror or exc}; free space there, or pass --out "
                          "<another folder> (the tables above are complete)") from None
    return [target, *plots]

