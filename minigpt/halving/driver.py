"""The halving sweep's loop: launch a stage, read its runs, decide, write the state, go on.

A stage is one multirun of the train entrypoint (`python -m minigpt.train -m <the sweep's command>
<the stage's overrides>`): locally Hydra's basic launcher runs its jobs, with `cluster=<preset>` the
submitit launcher submits them as one SLURM job array and waits for it, exactly as for any sweep.
Its runs are ordinary minigpt runs in hash-named run dirs, so a stage that is launched again skips
its finished runs, resumes the interrupted ones, and leaves paused trunks where they are.

`halving_state.json` in the sweep dir (written atomically after every stage) holds the sweep's
fingerprint, the stages done and each rung's decision: killing the driver and running the same
command again continues at the stage it had reached, and no finished segment trains again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from minigpt.atomic import write_text_atomic
from minigpt.errors import ConfigError, RunFailure
from minigpt.halving.decide import RungDecision, decide_rung
from minigpt.halving.sweep import Stage, Sweep

log = logging.getLogger("minigpt")
STATE_FILE = "halving_state.json"


@dataclass
class State:
    fingerprint: str
    done: list[str] = field(default_factory=list)  # stage names
    decisions: list[dict] = field(default_factory=list)  # RungDecision.to_dict(), the halving sweep's, in order
    full: dict | None = None  # audit mode: the decision over every arm at the budget
    runs: dict[str, list[dict]] = field(default_factory=dict)  # stage -> [{arm, seed, run_dir}]
    # arm -> why, for arms whose trunk diverged before a pause: no checkpoint to branch from, so the rung's
    # decision counts them diverged (worse) without a branch, and no later stage (the audit's included) runs them
    diverged_trunks: dict[str, str] = field(default_factory=dict)

    @property
    def survivors(self) -> list[str] | None:
        return RungDecision.from_dict(self.decisions[-1]).survivors if self.decisions else None


def load_state(sweep: Sweep) -> State:
    """The sweep dir's state, or a new one; refuses a sweep dir of another sweep (one line, before anything runs)."""
    path = sweep.sweep_dir / STATE_FILE
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("fingerprint") != sweep.fingerprint():
            raise ConfigError(f"{sweep.sweep_dir} holds another halving sweep (its {STATE_FILE} was written for "
                              "other arms, seeds, rungs or settings): use another hydra.sweep.dir, or move it away")
        return State(**data)
    if sweep.sweep_dir.is_dir() and any(sweep.sweep_dir.iterdir()):
        raise ConfigError(f"{sweep.sweep_dir} already holds runs that are not this halving sweep's (no {STATE_FILE}): "
                          "use another hydra.sweep.dir, or move it away")
    return State(sweep.fingerprint())


def save_state(sweep: Sweep, state: State) -> None:
    sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep.sweep_dir / STATE_FILE, json.dumps(state.__dict__, indent=1))


def launch(sweep: Sweep, stage: Stage, arms: list[str]) -> None:
    """One multirun of the train entrypoint for this stage (local or SLURM, as the command says)."""
    args = [sys.executable, "-m", "minigpt.train", *sweep.command(), *sweep.stage_overrides(stage, arms)]
    log.info(f"halving: {stage.name}: {len(arms)} arms x {len(sweep.seeds)} seeds")
    status = subprocess.run(args, env={**os.environ}).returncode
    if status not in (0, 1):  # 1: some job failed (listed above by the sweep summary); the runs say which
        raise RunFailure(f"the {stage.name} multirun exited with status {status}; rerun the same command to resume")


def stage_runs(sweep: Sweep, stage: Stage, arms: list[str]) -> list[dict]:
    """Each job's arm, seed and run dir, composed as the launcher composes them."""
    from minigpt.plan.compose import compose_command

    plan = compose_command(sweep.stage_overrides(stage, arms), multirun=True, config_name=sweep.config_name,
                           config_dir=sweep.config_dir)
    out = []
    for job in plan.jobs:
        values = dict(o.partition("=")[::2] for o in job.overrides)
        out.append({"arm": values[sweep.arm_key], "seed": values["train.seed"], "run_dir": str(job.run_dir)})
    return out


def read_results(runs: list[dict], step: int) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Final val loss per arm and seed at `step`, and the arms with a diverged run; a run that failed
    otherwise (or never got there) stops the driver, to be rerun."""
    from minigpt.compare.local_runs import load_run

    values: dict[str, dict[str, float]] = {}
    diverged: dict[str, str] = {}
    for r in runs:
        run = load_run(r["run_dir"])
        if run.status == "diverged":
            diverged.setdefault(r["arm"], diverged_reason(r, run.note))
            continue
        at = [v for s, v in run.series("val/loss") if s == step]
        if not at:
            raise RunFailure(f"{r['run_dir']} has no val loss at step {step} ({run.status}"
                             f"{': ' + run.note if run.note else ''}): fix it and rerun the same command to resume")
        values.setdefault(r["arm"], {})[r["seed"]] = at[-1]
    for arm in diverged:
        values.pop(arm, None)
    return values, diverged


def run_sweep(sweep: Sweep) -> State:
    state = load_state(sweep)
    save_state(sweep, state)
    h = sweep.halving
    for stage in sweep.stages():
        alive = state.survivors if state.survivors is not None else list(sweep.arms)
        final_trunk = stage.kind == "trunk" and stage.rung == h.budget
        arms = [a for a in (sweep.arms if (final_trunk and h.audit) else alive) if a not in state.diverged_trunks]
        if stage.name not in state.done:
            if arms:  # every arm diverged: nothing left to run
                launch(sweep, stage, arms)
            state.runs[stage.name] = stage_runs(sweep, stage, arms) if arms else []
            if stage.kind == "branch" or final_trunk:
                values, diverged = read_results(state.runs[stage.name], stage.rung)
                diverged = {**state.diverged_trunks, **diverged}
                mine = {a: values[a] for a in alive if a in values}
                gone = {a: diverged[a] for a in alive if a in diverged}
                state.decisions.append(decide_rung(h, stage.rung, mine, gone, sweep.baseline, final_trunk).to_dict())
                if final_trunk and h.audit:
                    state.full = decide_rung(h, stage.rung, values, diverged, sweep.baseline, True).to_dict()
            else:
                state.diverged_trunks.update(check_paused(state.runs[stage.name], stage.step))
            state.done.append(stage.name)
            save_state(sweep, state)
        log.info(f"halving: {stage.name} done")
    return state


def diverged_reason(r: dict, note: str) -> str:
    """The run's own error up to its advice (`training diverged at step N: loss .., grad norm ..`; its
    train.log has the rest)."""
    return f"seed {r['seed']}: {(note or 'non-finite loss').split(';')[0]}"[:200]


def check_paused(runs: list[dict], step: int) -> dict[str, str]:
    """Every trunk of the stage paused at `step`, or diverged before it: {arm: why} for those that diverged
    (their arm is out, counted worse); any other trunk without its checkpoint stops the driver, to be rerun."""
    from minigpt.checkpoint import checkpoint_path
    from minigpt.compare.local_runs import load_run

    diverged: dict[str, str] = {}
    for r in runs:
        if Path(checkpoint_path(r["run_dir"], step)).exists():
            continue
        run = load_run(r["run_dir"])
        if run.status == "diverged":
            diverged.setdefault(r["arm"], "trunk " + diverged_reason(r, run.note))
        else:
            raise RunFailure(f"trunk {r['run_dir']} has no checkpoint at step {step} (its run_summary.json and "
                             "train.log say why): fix it and rerun the same command to resume")
    return diverged
