"""Comparison plots (matplotlib, headless): validation loss and HellaSwag acc_norm against tokens seen."""

from __future__ import annotations

import re
from pathlib import Path

from minigpt.runs import Run

HELLASWAG_NORM = re.compile(r"^hellaswag/(?P<protocol>[^/]+)/acc_norm$")
_LINESTYLES = ["-", "--", ":", "-."]


def run_labels(runs: list[Run]) -> list[str]:
    """Label each run by its arch; where labels collide, add what the sweep varied (e.g. the lr), then the name."""
    labels = [str(r.cfg("arch.name", r.name)) for r in runs]
    if len(set(labels)) < len(labels):
        shared = set.intersection(*(set(r.overrides) for r in runs))
        varied = [[o for o in r.overrides if o not in shared and not o.startswith("arch=")] for r in runs]
        labels = [" ".join([lab, *v]) for lab, v in zip(labels, varied)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({r.name})" for lab, r in zip(labels, runs)]
    return [lab + ("" if r.status == "finished" else f" [{r.status}]") for lab, r in zip(labels, runs)]


def hellaswag_protocols(runs: list[Run]) -> list[str]:
    found = {m["protocol"] for r in runs for row in r.rows for k in row if (m := HELLASWAG_NORM.match(k))}
    return sorted(found)


def _plot(runs: list[Run], keys_by_style: list[tuple[str, str]], ylabel: str, title: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless nodes
    import matplotlib.pyplot as plt

    runs = [r for r in runs if any(r.series(key) for key, _ in keys_by_style)]  # label only what is drawn
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label) in enumerate(zip(runs, run_labels(runs))):
        for j, (key, suffix) in enumerate(keys_by_style):
            points = run.series(key)
            if points:
                xs = [run.tokens_at(step) for step, _ in points]
                ax.plot(xs, [v for _, v in points], _LINESTYLES[j % len(_LINESTYLES)], color=colors[i % len(colors)],
                        marker="o", markersize=3, label=f"{label}{suffix}")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_val_loss(runs: list[Run], out_dir: Path) -> Path | None:
    return _plot(runs, [("val/loss", "")], "validation loss", "Validation loss vs tokens", out_dir / "val_loss.png")


def plot_hellaswag(runs: list[Run], out_dir: Path) -> Path | None:
    protocols = hellaswag_protocols(runs)
    keys = [(f"hellaswag/{p}/acc_norm", f" ({p})" if len(protocols) > 1 else "") for p in protocols]
    title = "HellaSwag acc_norm vs tokens" + (f" ({protocols[0]})" if len(protocols) == 1 else "")
    return _plot(runs, keys, "HellaSwag acc_norm", title, out_dir / "hellaswag.png")
