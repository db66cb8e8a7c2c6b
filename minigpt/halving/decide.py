"""What a rung decides: who goes on, who stops and why, from the rung's final val losses.

Every arm at a rung is measured at the same step, on the same seeds and the same val batches (the
branches are fresh WSD runs of the rung's length). Two tables come out of a rung:
- the verdict table of minigpt.compare (each arm against the baseline, paired over seeds, Holm);
- the comparison with the rung's best arm (Hsu's MCB, minigpt/compare/best.py), which the `verdict`
  rule stops on: an arm stops only when its simultaneous interval says it is worse than the best.
`top_k` keeps the best ceil(n / eta) by mean, whatever the noise. A diverged branch stops its arm,
counted as worse, with the reason. `keep_baseline` keeps the baseline arm in whatever it scored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from minigpt.compare import stats
from minigpt.compare.best import compare_with_best
from minigpt.halving.config import HalvingConfig, StopRule, top_k_keep


@dataclass
class ArmResult:
    arm: str
    mean: float | None
    delta: float | None = None  # MCB: mean - best of the others (lower is better)
    low: float | None = None
    high: float | None = None
    worse: bool = False  # MCB: not the best
    vs_baseline: str = ""  # the compare verdict against the baseline
    base_delta: float | None = None
    base_low: float | None = None
    base_high: float | None = None
    p_holm: float | None = None
    stopped: bool = False
    reason: str = ""


@dataclass
class RungDecision:
    rung: int
    values: dict[str, dict[str, float]]  # arm -> seed -> final val loss
    diverged: dict[str, str] = field(default_factory=dict)  # arm -> why
    results: list[ArmResult] = field(default_factory=list)

    @property
    def stopped(self) -> list[str]:
        return [r.arm for r in self.results if r.stopped]

    @property
    def survivors(self) -> list[str]:
        return [r.arm for r in self.results if not r.stopped]

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "RungDecision":
        return RungDecision(d["rung"], d["values"], d.get("diverged", {}), [ArmResult(**r) for r in d["results"]])


def _mean(values: dict[str, float]) -> float:
    return float(sum(values.values()) / len(values))


def baseline_verdicts(values: dict[str, dict[str, float]], baseline: str) -> dict[str, tuple[stats.Difference | None, float | None, str]]:
    """minigpt.compare's verdict of every arm against the baseline: (difference, Holm p, verdict text)."""
    from minigpt.compare.verdicts import VAL_LOSS, _verdict_text

    out: dict = {}
    if baseline not in values:
        return out
    tested = []
    for arm, per_seed in values.items():
        if arm == baseline:
            continue
        diff = stats.val_loss_difference(per_seed, values[baseline])
        if isinstance(diff, str):
            out[arm] = (None, None, f"no verdict: {diff}")
        else:
            tested.append((arm, diff))
    for (arm, diff), p in zip(tested, stats.holm([d.p for _, d in tested])):
        out[arm] = (diff, p, _verdict_text(VAL_LOSS, diff, p))
    return out


def decide_rung(cfg: HalvingConfig, rung: int, values: dict[str, dict[str, float]], diverged: dict[str, str],
                baseline: str, last: bool) -> RungDecision:
    """The rung's tables and who stops (nobody at the last rung: there the verdicts are final)."""
    decision = RungDecision(rung, values, diverged)
    seeds = set.intersection(*(set(v) for v in values.values())) if values else set()
    common = {arm: {s: v[s] for s in seeds} for arm, v in values.items()}
    best = compare_with_best(common, alpha=cfg.alpha) if len(common) >= 2 and len(seeds) >= 2 else {}
    versus = baseline_verdicts(common, baseline)
    ranked = sorted(common, key=lambda a: _mean(common[a]))
    keep_top = set(ranked[: top_k_keep(cfg, len(common) + len(diverged))])
    for arm in [*values, *diverged]:
        mean = _mean(values[arm]) if arm in values else None
        result = ArmResult(arm, mean)
        if arm in best:
            b = best[arm]
            result.delta, result.low, result.high, result.worse = b.delta, b.low, b.high, b.worse
        if arm in versus:
            diff, p, text = versus[arm]
            result.vs_baseline, result.p_holm = text, p
            if diff is not None:
                result.base_delta, result.base_low, result.base_high = diff.delta, diff.lo, diff.hi
        elif arm == baseline:
            result.vs_baseline = "baseline"
        if arm in diverged:
            result.worse, result.stopped, result.reason = True, True, f"diverged: {diverged[arm]}"
        elif StopRule(cfg.rule) == StopRule.verdict and result.worse:
            result.stopped = True
            result.reason = (f"worse than the rung's best by MCB: Δ {result.delta:+.4f} "
                             f"[{result.low:+.4f}, {result.high:+.4f}] at {1 - cfg.alpha:.0%}")
        elif StopRule(cfg.rule) == StopRule.top_k and arm not in keep_top:
            result.stopped = True
            result.reason = f"not in the top {len(keep_top)} by mean (top_k, eta={cfg.eta})"
        if result.stopped and arm == baseline and cfg.keep_baseline and arm not in diverged:
            result.stopped, result.reason = False, f"kept as the baseline ({result.reason})"
        if last and result.stopped and arm not in diverged:
            result.stopped = False  # the last rung stops nobody: its verdicts are the sweep's
        decision.results.append(result)
    return decision


@dataclass
class Agreement:
    arm: str
    early: str  # the halving sweep's call: "worse @<rung>" or "not worse"
    full: str  # the full-budget MCB call
    agrees: bool


def agreement(decisions: list[RungDecision], full: RungDecision) -> tuple[list[Agreement], str, str]:
    """Audit mode: each arm's halving call against the full-budget call (MCB at the budget over all arms),
    and the two winners (the lowest mean among the arms each way leaves in)."""
    early_call: dict[str, str] = {}
    for d in decisions:
        for r in d.results:
            if r.stopped and r.arm not in early_call:
                early_call[r.arm] = f"worse @{d.rung}"
    last = decisions[-1] if decisions else full
    for r in last.results:
        early_call.setdefault(r.arm, f"worse @{last.rung}" if r.worse else "not worse")
    rows = []
    for r in full.results:
        full_call = "worse" if r.worse else "not worse"
        early = early_call.get(r.arm, "not worse")
        rows.append(Agreement(r.arm, early, full_call, early.startswith("worse") == r.worse))
    finalists = [r for r in last.results if not r.stopped and r.mean is not None]
    halving_winner = min(finalists, key=lambda r: r.mean).arm if finalists else "-"
    everyone = [r for r in full.results if r.mean is not None]
    full_winner = min(everyone, key=lambda r: r.mean).arm if everyone else "-"
    return rows, halving_winner, full_winner


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
