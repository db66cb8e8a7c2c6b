"""Every conf/**.yaml states only what differs from the typed schema (minigpt/config/), so the two cannot drift.

Read statically, file by file: each key must name a schema field, and its value must differ from what the key
would be without it: the dataclass default, or, for a preset built on other presets of its group (cluster=
aces_h100 -> grace_a100 -> slurm), what those set. One exception: a group preset's `name` may equal the
default; it is the preset's identity (run directory names, W&B tags, compare's tables), so every preset
says it, and it must be the file's name (checked here, and composed in tests/test_presets.py). And the keys
in STATED_FOR_HYDRA, which Hydra needs in the file itself.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from minigpt.config import Config
from tests.conftest import CONF_DIR

FILES = sorted(p.relative_to(CONF_DIR) for p in CONF_DIR.rglob("*.yaml"))
NOT_SCHEMA = {"defaults", "hydra"}  # Hydra's own keys: the defaults list and Hydra's settings
# The submitit launcher's `setup: ${cluster.setup}` is list-typed, so Hydra resolves it while composing the
# file, before the schema's default is merged in: without the key composition fails (InterpolationKeyError).
STATED_FOR_HYDRA = {("cluster/slurm.yaml", "cluster.setup")}


def package(path: Path) -> list[str]:
    """Where a file's keys land: `# @package _global_` at the root, else its group (cluster/gpu -> cluster.gpu)."""
    first = (CONF_DIR / path).read_text().splitlines()[0:1]
    if first and first[0].replace(" ", "") == "#@package_global_":
        return []
    return list(path.parent.parts)


def schema_field(dotted: list[str]) -> tuple[bool, object]:
    """(is a nested dataclass, default) of the schema field at this path; KeyError for a key the schema lacks."""
    cls, default = Config, None
    for i, part in enumerate(dotted):
        if not dataclasses.is_dataclass(cls):
            raise KeyError(".".join(dotted[:i + 1]))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise KeyError(".".join(dotted[:i + 1]))
        f = fields[part]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        hint = typing.get_type_hints(cls)[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        cls = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return dataclasses.is_dataclass(cls), default


def leaves(node: dict, prefix: list[str], top: bool = False) -> dict[tuple, object]:
    """The file's values by schema path, descending only into the schema's nested dataclasses."""
    out = {}
    for key, value in node.items():
        path = [*prefix, str(key)]
        if top and key in NOT_SCHEMA:
            continue
        nested, _ = schema_field(path)
        if nested and isinstance(value, dict):
            out.update(leaves(value, path))
        else:
            out[tuple(path)] = value
    return out


def file_leaves(path: Path) -> dict[tuple, object]:
    return leaves(yaml.safe_load((CONF_DIR / path).read_text()) or {}, package(path), top=True)


def inherited(path: Path) -> dict[tuple, object]:
    """What the presets of the same group that this one composes over (its defaults list) set."""
    out: dict[tuple, object] = {}
    for entry in (yaml.safe_load((CONF_DIR / path).read_text()) or {}).get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":  # a sibling preset, e.g. `- grace_a100`
            parent = path.parent / f"{entry}.yaml"
            if not (CONF_DIR / parent).exists():  # base_config: the schema itself (ConfigStore)
                continue
            out.update(inherited(parent))
            out.update(file_leaves(parent))
    return out


def test_the_file_list_is_not_empty():
    assert len(FILES) >= 30 and Path("arch/gpt2.yaml") in FILES


@pytest.mark.parametrize("path", FILES, ids=[str(p) for p in FILES])
def test_every_key_is_in_the_schema_and_differs_from_what_it_would_be_without_it(path):
    try:
        values = file_leaves(path)
    except KeyError as exc:
        pytest.fail(f"conf/{path}: {exc.args[0]} is not a field of minigpt/config/'s schema")
    parents = inherited(path)
    restated = []
    for key, value in values.items():
        if key[-1] == "name" and len(key) >= 2:
            assert value == path.stem, f"conf/{path}: name {value} is not the file's name"
            continue
        if (str(path), ".".join(key)) in STATED_FOR_HYDRA:
            continue
        before = parents[key] if key in parents else schema_field(list(key))[1]
        if value == before:
            restated.append(f"{'.'.join(key)}={value}")
    assert not restated, f"conf/{path} restates {'without it' if parents else 'the default'}: {', '.join(restated)}"
