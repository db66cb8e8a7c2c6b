"""A halving sweep read from the train command that names it, checked before anything runs.

`python -m minigpt.halving -m --config-dir sweeps --config-name <preset> <overrides>` composes the
sweep exactly as `python -m minigpt.train` would (minigpt/plan/compose.py): its jobs give the arms
(the values of the one swept key besides `train.seed`) and the seeds; the preset's `halving:` block
gives the budget and the rungs. Every stage of the sweep is then that same train command with a few
overrides more (`stage_overrides`): the arms still in, the trunk's length and pause, or a branch's
length, cooldown and the trunk checkpoint it forks from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from minigpt.errors import ConfigError
from minigpt.halving.config import DECAY_SHAPES, HalvingConfig, StopRule, cooldown_steps, pause_step

SEED_KEY = "train.seed"
# Settings a halving sweep sets itself in every stage; the arms may not differ in them either.
STAGE_KEYS = ("train.num_iterations", "optim.decay_frac", "optim.decay_shape", "train.stop_at", "train.resume",
              "train.keep_checkpoints", "hydra.sweep.dir", "hydra.sweep.subdir")


@dataclass
class Sweep:
    config_dir: str | None
    config_name: str
    overrides: list[str]  # the command's overrides, the swept ones excepted
    arm_key: str
    arms: list[str]  # the arm key's values, as the sweep lists them
    seeds: list[str]
    halving: HalvingConfig
    sweep_dir: Path
    tokens_per_step: int = 0
    arm_configs: dict[str, dict] = field(default_factory=dict)  # arm -> its first run's identity (the report's labels)

    @property
    def baseline(self) -> str:
        if self.halving.baseline is None:
            return self.arms[0]
        return next(arm for arm in self.arms if same_value(arm, str(self.halving.baseline)))

    def fingerprint(self) -> str:
        """What makes this sweep this sweep: a sweep dir holding another's state is refused."""
        h = self.halving
        blob = json.dumps({"config": self.config_name, "overrides": sorted(self.overrides), "arm_key": self.arm_key,
                           "arms": self.arms, "seeds": self.seeds, "budget": h.budget, "rungs": list(h.rungs),
                           "cooldown": h.cooldown, "shape": h.cooldown_shape, "rule": str(h.rule), "eta": h.eta,
                           "keep_baseline": h.keep_baseline, "baseline": self.baseline, "alpha": h.alpha},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def command(self) -> list[str]:
        """The train command's arguments before the overrides: -m and the preset."""
        head = ["-m"]
        if self.config_dir is not None:
            head += ["--config-dir", self.config_dir]
        return head + ["--config-name", self.config_name]

    def stage_overrides(self, stage: "Stage", arms: list[str]) -> list[str]:
        """The overrides of one stage's multirun: the train command's, the arms still in, the stage's shape."""
        h = self.halving
        common = [*self.overrides, f"{self.arm_key}={','.join(arms)}", f"{SEED_KEY}={','.join(self.seeds)}",
                  "optim.schedule=wsd", f"optim.decay_shape={h.cooldown_shape}",
                  f"hydra.sweep.dir={(self.sweep_dir / stage.folder).as_posix()}", "hydra.sweep.subdir=${minigpt.run_name:}"]
        if stage.kind == "trunk":
            pause = [] if stage.step == h.budget else [f"train.stop_at={stage.step}"]
            # keep every pause checkpoint: the branches fork from them
            return [*common, f"train.num_iterations={h.budget}", f"optim.decay_frac={h.cooldown!r}",
                    *pause, "train.keep_checkpoints=0"]
        c = cooldown_steps(h, stage.rung)
        trunk = (self.sweep_dir / "trunks").resolve().as_posix()
        fork = f"{trunk}/${{minigpt.trunk_name:{h.budget},{h.cooldown!r}}}/ckpt_{stage.step:07d}.pt"
        return [*common, f"train.num_iterations={stage.rung}", f"optim.decay_frac={c / stage.rung!r}",
                f"train.resume={fork}"]

    def stages(self) -> list["Stage"]:
        """In order: the trunks to the first pause, the first rung's branches, the trunks to the next pause, ..."""
        out = []
        for r, rung in enumerate(self.halving.rungs):
            out.append(Stage("trunk", r, rung, pause_step(self.halving, rung)))
            if rung != self.halving.budget:
                out.append(Stage("branch", r, rung, pause_step(self.halving, rung)))
        return out


@dataclass(frozen=True)
class Stage:
    kind: str  # trunk | branch
    index: int  # the rung's index
    rung: int  # s_r
    step: int  # trunk: where it pauses (the budget at the last rung); branch: the trunk step it forks from

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.step}" if self.kind == "trunk" else f"branch@{self.rung}"

    @property
    def folder(self) -> str:
        return "trunks" if self.kind == "trunk" else f"rung_{self.rung}"


def same_value(a: str, b: str) -> bool:
    """`3e-3` and `0.003` name the same arm (Hydra's sweeper writes numbers its own way)."""
    try:
        return a == b or float(a) == float(b)
    except ValueError:
        return False


def check_halving(h: HalvingConfig, n_seeds: int, schedule: str) -> None:
    """The `halving:` block's own rules (one ConfigError naming the fix)."""
    if h.budget <= 0:
        raise ConfigError("this sweep has no halving block: set halving.budget and halving.rungs (e.g. "
                          "halving.budget=300 'halving.rungs=[33,100,300]'), see docs/halving.md")
    rungs = list(h.rungs)
    if not rungs or any(b <= a for a, b in zip(rungs, rungs[1:])) or rungs[0] <= 0:
        raise ConfigError(f"halving.rungs={rungs} must be positive and increasing, e.g. [33,100,{h.budget}]")
    if rungs[-1] != h.budget:
        raise ConfigError(f"halving.rungs={rungs} must end at halving.budget={h.budget} "
                          f"({'past' if rungs[-1] > h.budget else 'short of'} it): the last rung is the full run")
    if not 0 < h.cooldown < 1:
        raise ConfigError(f"halving.cooldown={h.cooldown} must be a fraction of each rung in (0, 1), e.g. 0.2")
    trunk_decay_start = h.budget - cooldown_steps(h, h.budget)
    pauses = [pause_step(h, s) for s in rungs[:-1]]
    for s, p, prev in zip(rungs, pauses, [0, *pauses]):
        if cooldown_steps(h, s) < 1 or p <= prev or p > trunk_decay_start:
            raise ConfigError(
                f"halving.cooldown={h.cooldown}: rung {s}'s cooldown of {cooldown_steps(h, s)} steps does not fit "
                f"(it must be >= 1 step and start after the previous rung's, at {prev}, within the trunk's stable "
                f"phase, before step {trunk_decay_start}): use a shorter cooldown or rungs further apart")
    if h.cooldown_shape not in DECAY_SHAPES:
        raise ConfigError(f"halving.cooldown_shape={h.cooldown_shape!r}: choose one of {', '.join(DECAY_SHAPES)}")
    if schedule != "wsd":
        raise ConfigError(f"optim.schedule={schedule}: a halving trunk must be a WSD run (its lr constant until the "
                          "decay, so its checkpoints are stable-phase ones): set optim.schedule=wsd")
    if StopRule(h.rule) == StopRule.verdict and n_seeds < 2:
        raise ConfigError(f"halving.rule=verdict needs >= 2 seeds per arm (got {n_seeds}): sweep train.seed=1,2,3, "
                          "or use halving.rule=top_k (noise-blind)")
    if h.eta < 2:
        raise ConfigError(f"halving.eta={h.eta} must be >= 2")
    if not 0 < h.alpha < 1:
        raise ConfigError(f"halving.alpha={h.alpha} must be in (0, 1)")


def _flat(tree, prefix="") -> dict:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def check_arms(identities: dict[str, dict], arm_key: str) -> None:
    """Arms may differ only in the swept key (a group choice such as `arch` covers its whole node)."""
    flats = {arm: _flat(tree) for arm, tree in identities.items()}
    keys = set().union(*flats.values())
    first = next(iter(flats.values()))
    for key in sorted(keys):
        if key == arm_key or key.startswith(arm_key + "."):
            continue
        values = {arm: flat.get(key) for arm, flat in flats.items()}
        if len({json.dumps(v, default=str) for v in values.values()}) > 1:
            shown = ", ".join(f"{arm}: {v}" for arm, v in values.items())
            raise ConfigError(f"the arms differ in {key} as well as in the swept {arm_key} ({shown}): a halving "
                              f"sweep compares arms that differ only in {arm_key}; set {key} on the command line")
    del first


def read_sweep(argv: list[str]) -> Sweep:
    """The sweep a train command names (composed, not run), checked."""
    from minigpt.config import to_config
    from minigpt.plan.compose import compose_command, task_config
    from minigpt.run_identity import identity
    from minigpt.validate import validate

    config_dir, config_name, overrides = None, "config", []
    it = iter(argv)
    for arg in it:
        if arg in ("-m", "--multirun"):
            continue
        if arg in ("--config-dir", "-cd", "--config-name", "-cn"):
            value = next(it, None)
            if value is None:
                raise ConfigError(f"{arg} needs a value")
            config_dir, config_name = (value, config_name) if arg in ("--config-dir", "-cd") else (config_dir, value)
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg}: pass the train command's arguments (-m --config-dir D "
                              "--config-name N overrides...)")
        else:
            overrides.append(arg)
    plan = compose_command(overrides, multirun=True, config_name=config_name, config_dir=config_dir)
    axes: dict[str, list[str]] = {}
    for job in plan.jobs:
        for o in job.overrides:
            key, _, value = o.partition("=")
            values = axes.setdefault(key.lstrip("+~"), [])
            if value not in values:
                values.append(value)
    swept = [k for k, v in axes.items() if len(v) > 1]
    seeds = axes.get(SEED_KEY, [str(plan.jobs[0].config.train.seed)])
    arm_keys = [k for k in swept if k != SEED_KEY]
    if len(arm_keys) != 1:
        raise ConfigError(f"a halving sweep sweeps one key besides {SEED_KEY} (the arms); this one sweeps "
                          f"{', '.join(arm_keys) or 'none'}: sweep e.g. arch=gpt2,rope or 'optim.learning_rate=1e-3,3e-3'")
    arm_key = arm_keys[0]
    if arm_key in STAGE_KEYS:
        raise ConfigError(f"{arm_key} is set by the halving sweep in every stage: it cannot be the swept key")
    first = to_config(task_config(plan.jobs[0]))
    check_halving(first.halving, len(seeds), first.optim.schedule.value)
    if not first.cluster.wait:
        raise ConfigError("cluster.wait=false: a halving sweep decides each rung from its runs' results, so it waits "
                          "for every stage; drop cluster.wait=false (and run the driver inside tmux)")
    identities = {}
    for job in plan.jobs:
        validate(to_config(task_config(job)))  # every job's own checks, before anything runs
        value = next(o.partition("=")[2] for o in job.overrides if o.partition("=")[0].lstrip("+~") == arm_key)
        identities.setdefault(value, identity(task_config(job)))
    check_arms(identities, arm_key)
    arms = axes[arm_key]
    h = first.halving
    if h.baseline is not None and not any(same_value(arm, str(h.baseline)) for arm in arms):
        raise ConfigError(f"halving.baseline={h.baseline} is not one of the arms {arm_key}={','.join(arms)}")
    fixed = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in (arm_key, SEED_KEY)]
    sweep_dir = Path(str(plan.sweep_config.hydra.sweep.dir))
    tokens = first.train.total_batch_size or first.train.batch_size * (first.train.sequence_length or first.model.block_size)
    return Sweep(config_dir, config_name, fixed, arm_key, arms, seeds, h, sweep_dir, arm_configs=identities,
                 tokens_per_step=tokens)
