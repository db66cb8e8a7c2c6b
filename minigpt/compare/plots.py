"""Comparison plots (matplotlib, headless): one mean line and band per group, and a forest plot of verdicts.

- `val_loss.png` / `hellaswag.png`: per group, the mean over its finished runs at the steps they all
  logged, against tokens seen, with a band from the lowest to the highest run (labelled in the
  title). A group with no finished run shows its partial runs' mean, marked with their status.
- `forest.png`: each group's difference from its table's baseline with the 95% CI, one panel per
  metric (val loss, HellaSwag per protocol); green `better`, red `worse`, grey inconclusive.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from minigpt.compare.groups import Group, Table
from minigpt.compare.local_runs import Run

HELLASWAG_NORM = re.compile(r"^hellaswag/(?P<protocol>[^/]+)/acc_norm$")
_LINESTYLES = ["-", "--", ":", "-."]
_VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red"}


def hellaswag_protocols(runs: list[Run]) -> list[str]:
    found = {m["protocol"] for r in runs for row in r.rows for k in row if (m := HELLASWAG_NORM.match(k))}
    return sorted(found)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless nodes
    import matplotlib.pyplot as plt

    return plt


def group_curve(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(tokens, mean, min, max) over runs at the steps every run logged `key`."""
    series = [dict(r.series(key)) for r in runs]
    series = [s for s in series if s]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
        return None
    values = np.array([[s[step] for step in steps] for s in series])
    tokens = np.array([runs[0].tokens_at(step) for step in steps])
    return tokens, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def _plot_curves(groups: list[Group], keys: list[tuple[str, str]], ylabel: str, title: str, out: Path) -> Path | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for i, g in enumerate(groups):
        runs = g.runs or g.left_out
        status = "" if g.runs else " [" + "/".join(sorted({r.status for r in runs})) + "]"
        for j, (key, suffix) in enumerate(keys):
            curve = group_curve(runs, key)
            if curve is None:
                continue
            tokens, mean, lo, hi = curve
            color = colors[i % len(colors)]
            ax.plot(tokens, mean, _LINESTYLES[j % len(_LINESTYLES)], color=color, marker="o", markersize=3,
                    label=f"{g.label} (n={len(runs)}){suffix}{status}")
            if len(runs) > 1:
                ax.fill_between(tokens, lo, hi, color=color, alpha=0.15, linewidth=0)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nline: mean over seeds; band: min-max over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_val_loss(groups: list[Group], out_dir: Path) -> Path | None:
    return _plot_curves(groups, [("val/loss", "")], "validation loss", "Validation loss vs tokens",
                        out_dir / "val_loss.png")


def plot_hellaswag(groups: list[Group], protocols: list[str], out_dir: Path) -> Path | None:
    keys = [(f"hellaswag/{p}/acc_norm", f" ({p})" if len(protocols) > 1 else "") for p in protocols]
    title = "HellaSwag acc_norm vs tokens" + (f" ({protocols[0]})" if len(protocols) == 1 else "")
    return _plot_curves(groups, keys, "HellaSwag acc_norm", title, out_dir / "hellaswag.png")


def plot_forest(tables: list[Table], verdicts_by_table: list[list], metrics: list[str], out_dir: Path) -> Path | None:
    """One panel per metric: each group's difference from its baseline, 95% CI as a horizontal bar."""
    panels = []
    for metric in metrics:
        rows = []
        for table, verdicts in zip(tables, verdicts_by_table):
            prefix = f"{table.title}: " if len(tables) > 1 else ""
            rows += [(f"{prefix}{v.group.label}", v) for v in verdicts if v.metric == metric and v.diff is not None]
        if rows:
            panels.append((metric, rows))
    if not panels:
        return None
    plt = _pyplot()
    heights = [0.4 * len(rows) + 1.2 for _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, sum(heights) + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (metric, rows) in zip(axes[:, 0], panels):
        for y, (label, v) in enumerate(rows):
            color = _VERDICT_COLORS.get(v.verdict, "tab:gray")
            ax.errorbar(v.diff.delta, y, xerr=[[v.diff.delta - v.diff.lo], [v.diff.hi - v.diff.delta]], fmt="o",
                        color=color, capsize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first group on top
        better = "lower is better" if metric == "val loss" else "higher is better"
        ax.set_title(f"{metric}: difference from baseline (95% CI; {better})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_dir / "forest.png")


def save_figure(fig, out: Path) -> Path:
    """Written atomically (a full disk leaves no 0-byte png); no version stamp: reruns give the same file."""
    from minigpt.atomic import atomic_write

    plt = _pyplot()
    try:
        with atomic_write(out) as f:
            fig.savefig(f, format="png", dpi=120, metadata={"Software": None})
    finally:
        plt.close(fig)
    return out
