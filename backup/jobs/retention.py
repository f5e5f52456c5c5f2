"""Which snapshots a retention policy keeps: restic's ``forget --keep-*`` rules, as a pure function.

The caller groups snapshots by source and deletes what this module marks as not kept; nothing
here touches a repository. Bucket boundaries (day, ISO week, month, year) are local calendar
boundaries in the operator's time zone, so "one backup per day" means per Vietnamese day even
though snapshot times are stored in UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

T = TypeVar("T")

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

EMPTY_POLICY_REASON = "empty policy keeps everything"


@dataclass(frozen=True)
class Policy:
    """How many snapshots each rule keeps; 0 means the rule keeps nothing.

    A policy whose counts are all 0 keeps every snapshot (see :func:`apply_policy`).
    """

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for name, count in self._counts():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"retention {name}: expected a whole number >= 0, got {count!r}")

    def _counts(self) -> tuple[tuple[str, int], ...]:
        return (
            ("last", self.last),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        )

    @property
    def empty(self) -> bool:
        """True when no rule keeps anything, which apply_policy treats as "keep everything"."""
        return all(count == 0 for _, count in self._counts())

    @property
    def total(self) -> int:
        """The most snapshots this policy can keep (unless it is empty)."""
        return sum(count for _, count in self._counts())


@dataclass(frozen=True)
class Decision(Generic[T]):
    """One snapshot's fate and the rules that kept it (empty when it is to be removed)."""

    snapshot: T
    keep: bool
    reasons: tuple[str, ...]


def _day(local: datetime) -> str:
    return local.date().isoformat()


def _week(local: datetime) -> str:
    # ISO weeks: 2027-01-01 is a Friday, so it belongs to 2026-W53, not to 2027-W01.
    iso = local.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _month(local: datetime) -> str:
    return f"{local.year}-{local.month:02d}"


def _year(local: datetime) -> str:
    return f"{local.year}"


_BUCKETS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
    ("yearly", _year),
)


def apply_policy(
    snapshots: Sequence[T],
    time_of: Callable[[T], datetime],
    policy: Policy,
    tz: tzinfo = LOCAL_TZ,
    *,
    tiebreak: Callable[[T], str] = repr,
) -> list[Decision[T]]:
    """Decide for each of one source's snapshots whether ``policy`` keeps it; newest first.

    The rules are restic's ``forget``: snapshots are ordered newest first; ``last`` keeps the
    N newest; each bucket rule (``daily``: calendar day, ``weekly``: ISO year-week, ``monthly``,
    ``yearly``) keeps the newest snapshot of each of the N most recent buckets that hold a
    snapshot. Buckets are computed in ``tz`` (Asia/Ho_Chi_Minh by default). A snapshot kept by
    several rules lists every one of them, e.g. ``("last", "daily 2026-11-29", "weekly 2026-W48")``.

    Deliberate choices:

    * An empty policy (all counts 0) keeps **every** snapshot, with the single reason
      ``"empty policy keeps everything"``, as restic does when no ``--keep-*`` is given: a
      missing or mistyped retention setting must never delete a source's whole history.
      Config validation is the place to reject such a policy if that is wanted.
    * restic >= 0.17 additionally keeps the oldest snapshot when a rule finds fewer buckets
      than its count; this function does not: each rule keeps at most its count, so at most
      ``policy.total`` snapshots are kept.
    * Snapshots with the same time are ordered by ``tiebreak`` (larger counts as newer), so
      the result depends only on the set of snapshots, never on the order they were listed
      in. The default, ``repr``, suits dataclasses and strings; pass the snapshot id.

    Times must be timezone-aware; a naive time raises ValueError (its instant is unknown).
    """
    timed: list[tuple[datetime, str, T]] = []
    for snapshot in snapshots:
        when = time_of(snapshot)
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"snapshot {snapshot!r}: time {when.isoformat()} has no time zone")
        timed.append((when, tiebreak(snapshot), snapshot))
    timed.sort(key=lambda item: (item[0], item[1]), reverse=True)

    if policy.empty:
        return [Decision(snapshot, True, (EMPTY_POLICY_REASON,)) for _, _, snapshot in timed]

    counts = {
        "daily": policy.daily,
        "weekly": policy.weekly,
        "monthly": policy.monthly,
        "yearly": policy.yearly,
    }
    # A set of seen buckets rather than restic's "differs from the previous one": the same
    # thing for monotonic local calendars, and still right where a DST fall-back moves the
    # local date backwards across midnight.
    seen: dict[str, set[str]] = {rule: set() for rule in counts}
    decisions: list[Decision[T]] = []
    for position, (when, _, snapshot) in enumerate(timed):
        local = when.astimezone(tz)
        reasons: list[str] = []
        if position < policy.last:
            reasons.append("last")
        for rule, bucket_of in _BUCKETS:
            bucket = bucket_of(local)
            if bucket in seen[rule] or len(seen[rule]) >= counts[rule]:
                continue
            seen[rule].add(bucket)
            reasons.append(f"{rule} {bucket}")
        decisions.append(Decision(snapshot, bool(reasons), tuple(reasons)))
    return decisions
