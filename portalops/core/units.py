"""Human-readable sizes and ages for tables (JSON keeps bytes and seconds)."""

from __future__ import annotations

from datetime import UTC, datetime

BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB")


def size(n: int | None, largest: str = "TiB") -> str:
    """``512 B``, ``3.2 MiB``: bytes in the largest binary unit (up to ``largest``) that keeps
    the number at 1024 or more of the next smaller one; empty for None."""
    if n is None:
        return ""
    value, unit = float(n), "B"
    for bigger in BINARY_UNITS[: BINARY_UNITS.index(largest) + 1]:
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


def age(when: datetime, now: datetime | None = None) -> str:
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
