"""Each group against its table's baseline: difference, CI, Holm-corrected p-value, verdict, seeds needed.

Val loss is compared on the final `val/loss` of each finished run (lower is better); HellaSwag on the
per-example acc_norm correctness of each run's last records file (higher is better), per protocol.
HellaSwag examples are paired by their stable id (position + hash of the text): runs that scored
different example sets are never paired; the comparison is refused with one line naming two runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from minigpt.compare import stats
from minigpt.compare.groups import Group, Table
from minigpt.compare.local_runs import Run

VAL_LOSS = "val loss"


def hellaswag_metric(protocol: str) -> str:
    return f"HellaSwag {protocol} acc_norm"


@dataclass
class Verdict:
    group: Group
    metric: str
    diff: stats.Difference | None  # None: no test (reason says why)
    reason: str = ""
    p_holm: float | None = None
    verdict: str = ""
    seeds: str = ""  # seeds per group needed to detect the effect (inconclusive rows only)


@lru_cache(maxsize=512)
def correctness(path: Path, protocol: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, acc_norm correctness) sorted by id; id = position << 32 | text hash. None if unreadable."""
    import pyarrow.compute as pc

    from minigpt.eval.records import read_records

    try:
        table = read_records(path)
        table = table.filter(pc.equal(table["protocol"].cast("string"), protocol))
    except Exception:  # noqa: BLE001 - a torn or foreign file: the run just has no usable records
        return None
    if table.num_rows == 0:
        return None
    ids = (table["example"].to_numpy().astype(np.int64) << 32) | table["example_hash"].to_numpy().astype(np.int64)
    order = np.argsort(ids)
    return ids[order], table["correct_norm"].to_numpy(zero_copy_only=False)[order]


def _seed_key(run: Run):
    return run.seed if run.seed is not None else run.name


def seeds_match(a: list[Run], b: list[Run]) -> bool:
    """Same seeds on both sides (each once): the difference can be taken seed by seed."""
    sa, sb = [_seed_key(r) for r in a], [_seed_key(r) for r in b]
    return len(set(sa)) == len(sa) and len(set(sb)) == len(sb) and set(sa) == set(sb)


def by_seed(runs: list[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: str(_seed_key(r)))


def val_loss_values(runs: list[Run]) -> dict:
    """{seed: final val loss}; runs sharing a seed are kept apart (and then cannot be paired)."""
    out = {}
    for r in runs:
        v = r.last("val/loss")
        if v is not None:
            key = _seed_key(r)
            out[key if key not in out else (key, r.name)] = v
    return out


def _correctness(runs: list[Run], protocol: str) -> tuple[np.ndarray, np.ndarray] | str:
    """(ids, (runs, examples) correctness) for runs in the given order, or why they cannot be paired."""
    first, rows = None, []
    for r in runs:
        rec = correctness(r.records, protocol) if r.records else None
        if rec is None:
            return f"{r.name} has no per-example {protocol} records"
        if first is None:
            first = (r, rec[0])
        elif not np.array_equal(first[1], rec[0]):
            return (f"runs {first[0].name} ({len(first[1])} examples) and {r.name} ({len(rec[0])} examples) scored "
                    "different HellaSwag examples: not paired; evaluate both on the same set "
                    "(eval.hellaswag.path / limit, or python -m minigpt.eval)")
        rows.append(rec[1])
    return first[1], np.array(rows)


def _hellaswag_vs(group: Group, base: Group, protocol: str) -> stats.Difference | str:
    paired = seeds_match(group.runs, base.runs)
    runs_g = by_seed(group.runs) if paired else group.runs
    runs_b = by_seed(base.runs) if paired else base.runs
    if not runs_g or not runs_b:
        return "no finished runs"
    both = _correctness(runs_b + runs_g, protocol)
    if isinstance(both, str):
        return both
    _, correct = both
    return stats.hellaswag_difference(correct[len(runs_b):], correct[: len(runs_b)], paired)


def _verdict_text(metric: str, diff: stats.Difference, p_holm: float) -> str:
    if p_holm < stats.ALPHA:
        lower_is_better = metric == VAL_LOSS
        return "better" if (diff.delta < 0) == lower_is_better else "worse"
    bound = max(abs(diff.lo), abs(diff.hi))
    return f"no detectable difference (|Δ| < {bound:.4f} at 95%)"


def seeds_alpha(n_tested: int) -> float:
    """The alpha "seeds needed" is sized at: Holm's first (strictest) step over the family's tested
    comparisons, so that power holds whatever the other rows' p-values turn out to be."""
    return stats.ALPHA / max(n_tested, 1)


def _seeds_text(effect: float, diff: stats.Difference, alpha: float) -> str:
    n = stats.seeds_needed(effect, diff, alpha)
    if n is None:
        return "-"
    return f"> {stats.MAX_SEEDS}" if n > stats.MAX_SEEDS else str(n)


def table_verdicts(table: Table, protocols: list[str], effect: float | None = None) -> tuple[list[Verdict], list[str]]:
    """Verdict rows (group-major) for every non-baseline group, and one-line warnings (refused pairings)."""
    if table.baseline is None:
        return [], []
    base = table.baseline
    others = [g for g in table.groups if g is not base]
    rows: list[Verdict] = []
    warnings: list[str] = []
    metrics = [(VAL_LOSS, None), *((hellaswag_metric(p), p) for p in protocols)]
    for metric, protocol in metrics:
        found = []
        for g in others:
            if not g.runs or not base.runs:
                found.append(Verdict(g, metric, None, "no finished runs in " + ("this group" if not g.runs else "the baseline")))
                continue
            if protocol is None:
                out = stats.val_loss_difference(val_loss_values(g.runs), val_loss_values(base.runs))
            else:
                out = _hellaswag_vs(g, base, protocol)
                if isinstance(out, str) and "different HellaSwag examples" in out and out not in warnings:
                    warnings.append(out)
            found.append(Verdict(g, metric, None, out) if isinstance(out, str) else Verdict(g, metric, out))
        tested = [v for v in found if v.diff is not None]
        for v, p in zip(tested, stats.holm([v.diff.p for v in tested])):
            v.p_holm = p
            v.verdict = _verdict_text(metric, v.diff, p)
            if p >= stats.ALPHA:
                v.seeds = _seeds_text(effect if effect else v.diff.delta, v.diff, seeds_alpha(len(tested)))
        for v in found:
            if v.diff is None:
                v.verdict = "no verdict"
                v.seeds = "? (need >= 2 seeds per group)" if v.reason.startswith("single seed") else "-"
        rows.extend(found)
    order = {id(g): i for i, g in enumerate(others)}
    rows.sort(key=lambda v: order[id(v.group)])  # stable: metrics stay in order within a group
    return rows, warnings


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"
