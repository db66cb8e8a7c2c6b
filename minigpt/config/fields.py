"""Field helpers shared by the group modules."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Optional


def path_field(default: Optional[str] = None) -> Any:
    """A field that holds a filesystem path: `to_config` expands a leading `~` in it (see expand_user_paths)."""
    return field(default=default, metadata={"path": True})
