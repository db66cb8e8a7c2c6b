"""Runs -> groups (one per experiment: same config but the seeds) -> tables (groups that may be compared).

A group pools the runs whose resolved configs agree on every key but the seeds and where the run
executed (minigpt/experiment.py). A table holds the groups that differ only along the axis being
compared: `--baseline arch=gpt2` compares arch variants with everything else fixed, so a sweep over
arch x model gives one table per model, each with its own gpt2 baseline; without `--baseline` all
groups share one table whose baseline is the first group. Groups trained on different data never
share a table: their validation losses measure different things.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from minigpt.compare.local_runs import Run
from minigpt.errors import ConfigError
from minigpt.experiment import is_experiment_key

NEVER_ACROSS = ("data",)  # config prefixes whose groups are never compared with each other


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def experiment_config(run: Run) -> dict[str, str]:
    """The run's flat config without seeds and infrastructure keys, values as text (hashable, comparable)."""
    return {k: _text(v) for k, v in _flatten(run.config).items() if is_experiment_key(k)}


@dataclass
class Group:
    label: str
    config: dict[str, str]
    runs: list[Run] = field(default_factory=list)  # finished: what the statistics use
    left_out: list[Run] = field(default_factory=list)  # running, failed, diverged...: listed, not counted

    @property
    def all_runs(self) -> list[Run]:
        return self.runs + self.left_out


@dataclass
class Table:
    title: str
    groups: list[Group]
    baseline: Group | None
    note: str = ""  # e.g. why there is no baseline


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups in the order their first run appears (sweep launch order)."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        cfg = experiment_config(run)
        key = tuple(sorted(cfg.items())) if cfg else ("run", run.name)  # no config: a group of its own
        group = groups.setdefault(key, Group("", cfg))
        (group.runs if run.status == "finished" else group.left_out).append(run)
    found = list(groups.values())
    for group, label in zip(found, _labels(found)):
        group.label = label
    return found


def varying_keys(groups: list[Group]) -> list[str]:
    """Config keys whose value differs between groups, in config order."""
    keys = list(dict.fromkeys(k for g in groups for k in g.config))
    return [k for k in keys if len({g.config.get(k) for g in groups}) > 1]


def describe(config: dict[str, str], keys: list[str]) -> str:
    """`arch=rope model=tiny optim.lr=0.001`: a preset's name stands for the keys under it."""
    named = [k[: -len(".name")] for k in keys if k.endswith(".name")]
    parts = []
    for k in keys:
        if k.endswith(".name"):
            parts.append(f"{k[: -len('.name')]}={config.get(k, '-')}")
        elif not any(k.startswith(p + ".") for p in named):
            parts.append(f"{k}={config.get(k, '-')}")
    return " ".join(parts)


def _labels(groups: list[Group]) -> list[str]:
    keys = varying_keys(groups)
    labels = [describe(g.config, keys) for g in groups]
    if len(set(labels)) < len(labels):  # presets of the same name with different fields: show every key
        labels = [" ".join(f"{k}={g.config.get(k, '-')}" for k in keys) for g in groups]
    if not keys:  # one group (or runs without a config): the arch, else the run's name
        labels = [f"arch={g.config['arch.name']}" if "arch.name" in g.config else g.all_runs[0].name for g in groups]
    return labels


def parse_baseline(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--baseline {spec!r}: expected KEY=VALUE, e.g. --baseline arch=gpt2")
    key = key.strip()
    return (key[: -len(".name")] if key.endswith(".name") else key), value.strip()


def _same(a: str | None, b: str) -> bool:
    if a is None:
        return False
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def matches(group: Group, key: str, value: str) -> bool:
    """`arch=gpt2` matches the preset name (arch.name); `optim.learning_rate=1e-3` the value itself."""
    return _same(group.config.get(f"{key}.name", group.config.get(key)), value)


def build_tables(groups: list[Group], baseline: str | None) -> list[Table]:
    varying = varying_keys(groups)
    if baseline:
        key, value = parse_baseline(baseline)
        if not any(f"{key}.name" in g.config or key in g.config for g in groups):
            raise ConfigError(f"--baseline {baseline}: no run's config has {key}; pass a config key, e.g. arch=gpt2")
        if not any(matches(g, key, value) for g in groups):
            known = sorted({g.config.get(f"{key}.name", g.config.get(key, "-")) for g in groups})
            raise ConfigError(f"--baseline {baseline}: no group has {key}={value} (found: {', '.join(known)})")
        axis = {k for k in varying if k == key or k.startswith(key + ".")}
    else:
        axis = {k for k in varying if not any(k == p or k.startswith(p + ".") for p in NEVER_ACROSS)}
    fixed = [k for k in varying if k not in axis]
    tables: dict[tuple, list[Group]] = {}
    for g in groups:
        tables.setdefault(tuple(g.config.get(k) for k in fixed), []).append(g)
    out = []
    for members in tables.values():
        title = describe(members[0].config, fixed) or "all groups"
        if baseline:
            base = next((g for g in members if matches(g, key, value)), None)
            note = "" if base else f"no group here has {key}={value}: groups listed, no verdicts"
        else:  # the first group with a finished run: a baseline without one gives no verdict at all
            base = next((g for g in members if g.runs), members[0])
            skipped = members[:members.index(base)] if base.runs else []
            note = (f"baseline: {base.label}, the first group with a finished run (skipped "
                    f"{', '.join(g.label for g in skipped)}: no finished run)" if skipped else "")
        out.append(Table(title, members, base, note))
    return out
