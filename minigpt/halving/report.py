"""The halving sweep's report, beside minigpt.compare's and in its style: <sweep dir>/halving_report.md.

Per rung: the verdict table (each arm against the baseline, paired over seeds, Holm; and against the
rung's best by Hsu's MCB), who stopped and why, and the compute spent so far against the full sweep
(steps; time and GPU-hours measured from the runs' run_summary.json, the full sweep's extrapolated at
the measured time per step). Then the final table (the rung at which each arm got its verdict), the
audit's agreement table (halving.audit=true), the horizon-bias note for horizon-dependent swept keys,
and halving.png: each arm's trunk and branch val-loss curves against tokens.
"""

from __future__ import annotations

from pathlib import Path

from minigpt.compare.report import markdown_table
from minigpt.compare.verdicts import fmt_p
from minigpt.halving.config import cooldown_steps, pause_step, run_steps
from minigpt.halving.decide import RungDecision, agreement, is_finite
from minigpt.halving.driver import State
from minigpt.halving.sweep import Sweep

# Swept keys whose best value depends on the run's length (Bjorck et al., ICLR 2025: the optimal lr falls with
# the horizon), so a short rung's winner is biased toward what suits short runs.
HORIZON_KEYS = ("optim.learning_rate", "optim.weight_decay", "train.total_batch_size", "train.batch_size",
                "optim.warmup_iters", "optim")


def _f(x: float | None, digits: int = 4, sign: bool = False) -> str:
    if not is_finite(x):
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def rung_table(d: RungDecision) -> str:
    rows = []
    for r in d.results:
        seeds = len(d.values.get(r.arm, {}))
        mcb = f"{_f(r.delta, sign=True)} [{_f(r.low, sign=True)}, {_f(r.high, sign=True)}]" if r.delta is not None else "-"
        base = (f"{_f(r.base_delta, sign=True)} [{_f(r.base_low, sign=True)}, {_f(r.base_high, sign=True)}]"
                if r.base_delta is not None else "-")
        call = "diverged" if r.arm in d.diverged else ("worse" if r.worse else "not worse")
        rows.append([r.arm, str(seeds), _f(r.mean), mcb, call, base, fmt_p(r.p_holm), r.vs_baseline,
                     "stopped" if r.stopped else "goes on", r.reason or "-"])
    return markdown_table(["arm", "seeds", "val loss", "Δ vs best of others [CI] (MCB)", "vs best", "Δ vs baseline [95% CI]",
                           "p (Holm)", "vs baseline", "decision", "why"], rows)


def compute(sweep: Sweep, state: State) -> tuple[int, int, float, float]:
    """(steps spent, steps of the full sweep, hours measured, hours the full sweep would take at that rate)."""
    from minigpt.compare.local_runs import load_run

    h, n_seeds = sweep.halving, len(sweep.seeds)
    last_rung: dict[str, int] = {arm: 0 for arm in sweep.arms}
    for i, d in enumerate(state.decisions):
        for arm in RungDecision.from_dict(d).survivors:
            last_rung[arm] = min(i + 1, len(h.rungs) - 1)
    spent = sum(run_steps(h, r) for r in last_rung.values()) * n_seeds
    full = len(sweep.arms) * n_seeds * h.budget
    seen, hours, steps_timed = set(), 0.0, 0
    for runs in state.runs.values():
        for r in runs:
            if r["run_dir"] in seen:
                continue
            seen.add(r["run_dir"])
            summary = load_run(r["run_dir"]).summary
            gpu = float(summary.get("gpu_hours") or 0.0)
            hours += gpu if gpu > 0 else float(summary.get("wall_s") or 0.0) / 3600
            steps_timed += int(summary.get("step") or 0) - int((summary.get("forked_from") or {}).get("step") or 0)
    per_step = hours / steps_timed if steps_timed else 0.0
    return spent, full, hours, per_step * full


def _plot(sweep: Sweep, state: State, out: Path) -> Path | None:
    """Each arm's mean trunk curve (solid) and its branches' (dashed) against tokens."""
    from minigpt.compare.local_runs import load_run
    from minigpt.compare.plots import _pyplot, group_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for stage, runs in state.runs.items():
        for i, arm in enumerate(sweep.arms):
            mine = [load_run(r["run_dir"]) for r in runs if r["arm"] == arm]
            curve = group_curve(mine, "val/loss") if mine else None
            if curve is None:
                continue
            tokens, mean, _, _ = curve
            trunk = stage.startswith("trunk")
            ax.plot(tokens, mean, "-" if trunk else "--", color=colors[i % len(colors)], marker="o", markersize=3,
                    label=f"{sweep.arm_key}={arm}" if stage == "trunk@%d" % sweep.halving.budget or (
                        trunk and stage == next(iter(state.runs))) else None)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss")
    ax.set_title("Halving sweep: trunks (solid) and cooldown branches (dashed)\nmean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return out


def build_report(sweep: Sweep, state: State) -> str:
    h = sweep.halving
    decisions = [RungDecision.from_dict(d) for d in state.decisions]
    lines = [f"# Halving sweep: {sweep.config_name}", "",
             f"Arms: {sweep.arm_key} = {', '.join(sweep.arms)} (baseline {sweep.baseline}); seeds {', '.join(sweep.seeds)}. "
             f"Budget {h.budget} steps, rungs {', '.join(map(str, h.rungs))}, cooldown {h.cooldown:.0%} of each rung "
             f"({h.cooldown_shape}), rule `{h.rule.value if hasattr(h.rule, 'value') else h.rule}`"
             f"{'' if not h.keep_baseline else ', the baseline kept to the end'}; alpha {h.alpha}."]
    spent, full, hours, full_hours = compute(sweep, state)
    lines += ["", f"Compute: {spent:,} steps of {full:,} for the full sweep ({spent / full:.0%}; saved {1 - spent / full:.0%})"
              + (f"; measured {hours:.3f} h (GPU-hours on GPUs, wall hours on CPUs) vs {full_hours:.3f} h for the full "
                 "sweep at the measured time per step" if hours else "") + "."]
    if h.audit:
        lines += ["(audit mode: the stopped arms' trunks also ran to the budget; those steps are not counted above.)"]
    done_steps = 0
    for i, d in enumerate(decisions):
        c = cooldown_steps(h, d.rung) if d.rung != h.budget else cooldown_steps(h, h.budget)
        done_steps = d.rung
        where = (f"branches of {d.rung} steps forked at step {pause_step(h, d.rung)} of the trunk, {c}-step cooldown"
                 if d.rung != h.budget else "the trunks' own decay at the budget")
        lines += ["", f"## Rung {i + 1}: step {d.rung} ({where})", "", rung_table(d)]
        if d.stopped:
            lines += ["", "Stopped: " + "; ".join(f"{r.arm} ({r.reason})" for r in d.results if r.stopped) + "."]
    del done_steps
    if decisions and decisions[-1].rung == h.budget:
        final_rows, got = [], {}
        for d in decisions:
            for r in d.results:
                if r.arm not in got and (r.stopped or d.rung == h.budget):
                    got[r.arm] = (d.rung, "diverged" if r.arm in d.diverged else ("worse" if r.worse else "not worse"),
                                  r.vs_baseline)
        for arm in sweep.arms:
            rung, call, base = got.get(arm, ("-", "-", "-"))
            final_rows.append([arm, str(rung), call, base])
        lines += ["", "## Final", "", markdown_table(["arm", "verdict at step", "vs the best (MCB)", "vs baseline"],
                                                      final_rows)]
        finalists = [r for r in decisions[-1].results if r.mean is not None]
        if finalists:
            lines += ["", f"Winner: {sweep.arm_key}={min(finalists, key=lambda r: r.mean).arm} (lowest mean val loss at the budget)."]
    if state.full is not None:
        full_decision = RungDecision.from_dict(state.full)
        rows, hw, fw = agreement(decisions, full_decision)
        lines += ["", "## Audit: early calls against the full-budget verdicts", "",
                  markdown_table(["arm", "halving", "full budget (MCB over all arms)", "agrees"],
                                 [[a.arm, a.early, a.full, "yes" if a.agrees else "NO"] for a in rows]),
                  "", f"Winner: halving {hw}, full budget {fw} ({'same' if hw == fw else 'DIFFERENT'}); "
                      f"{sum(a.agrees for a in rows)}/{len(rows)} calls agree.",
                  "", "Full-budget table:", "", rung_table(full_decision)]
    if any(sweep.arm_key == k or sweep.arm_key.startswith(k + ".") for k in HORIZON_KEYS):
        lines += ["", f"Note: {sweep.arm_key} is horizon-dependent: winners at short rungs are biased toward what suits "
                      "short runs (Bjorck et al., ICLR 2025: the optimal learning rate falls as the horizon grows). "
                      "Trust an early stop of a large value less than one of a small value; halving.audit=true "
                      "measures it on your setup."]
    lines += ["", "![val loss](halving.png)"]
    return "\n".join(lines) + "\n"


def write_report(sweep: Sweep, state: State) -> tuple[Path, str]:
    from minigpt.atomic import write_text_atomic

    text = build_report(sweep, state)
    _plot(sweep, state, sweep.sweep_dir / "halving.png")
    path = sweep.sweep_dir / "halving_report.md"
    write_text_atomic(path, text)
    return path, text
