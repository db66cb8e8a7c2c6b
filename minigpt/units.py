"""Numbers as the tables print them (compare's report, plan's forecast), so both read alike."""

from __future__ import annotations


def si(n: float | None) -> str:
    """124475904 -> "124.48M", 40960 -> "40.96K"; None -> "-"."""
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"
