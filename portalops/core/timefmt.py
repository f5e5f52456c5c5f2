"""Times as text, written and read one way everywhere: ISO 8601 in UTC with a ``Z`` (status
files, JSON output, lock records, key headers) and the ``HH:MM`` of a time of day (schedules,
on-call handovers)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Literal

TimeSpec = Literal["auto", "seconds", "microseconds"]

# One or two digits, a colon, two digits; the ranges are checked after the match.
HHMM = re.compile(r"(\d{1,2}):(\d{2})")


def iso_z(moment: datetime, timespec: TimeSpec = "auto") -> str:
    """``2026-12-06T18:07:22Z`` (``auto`` adds ``.123456`` when there are microseconds). An
    aware time is converted to UTC; a naive one is taken as the machine's local time, as
    ``datetime.astimezone`` does."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_z_epoch(stamp: float) -> str:
    """A Unix time as ``2026-12-06T18:07:22Z``, whole seconds (the fraction is dropped)."""
    return iso_z(datetime.fromtimestamp(stamp, UTC), "seconds")


def utc_now_z() -> str:
    """Now, as ``2026-12-06T18:07:22Z``: when a record was made."""
    return iso_z(datetime.now(UTC), "seconds")


def parse_iso_z(text: str) -> datetime:
    """Read what :func:`iso_z` wrote (``Z`` or an offset); raises ValueError. A time without
    an offset stays naive: the caller decides what it means."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_hhmm(text: str) -> time | None:
    """``"8:05"`` or ``"08:05"`` (24-hour) as a time of day; None when it is not one."""
    match = HHMM.fullmatch(text)
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        return None
    return time(int(match[1]), int(match[2]))


def sexagesimal_clock(value: object) -> tuple[int, int] | None:
    """The (hours, minutes) an unquoted ``12:30`` was before YAML 1.1 read it as the base-60
    integer 750; None for anything else. Config loaders use it to ask for quotes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        hours, minutes = divmod(value, 60)
        return hours, minutes
    return None
