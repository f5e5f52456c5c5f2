"""The ``backup`` and ``drill`` sections of ops.yaml: repositories, retention, sources, schedule,
and how restore drills run. Every field has a safe default.

The source models live with their kinds (``portalops.backup.sources.<kind>``); ``Source`` is
the registry's union of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from portalops.backup.sources import Source
from portalops.backup.sources.base import Name
from portalops.backup.sources.postgres import no_password_in_dsn
from portalops.core.timefmt import HHMM, parse_hhmm, sexagesimal_clock
from portalops.core.validate import Strict, ZoneName


class Repository(Strict):
    name: Name
    url: str  # a local directory, or s3://bucket/prefix
    endpoint: str | None = None  # S3-compatible stores
    region: str | None = None
    # S3: the least default retention (COMPLIANCE, days) the bucket must have; checked before
    # the first write, never sent with uploads (docs/s3-bucket-policy.md)
    object_lock_days: Annotated[int, Field(ge=0)] = 0
    attempts: Annotated[int, Field(ge=1, le=20)] = 8  # S3: tries per request before giving up
    # S3: accept a store that cannot refuse to overwrite (no If-None-Match): loses create-only
    allow_overwriting_writes: bool = False


class Retention(Strict):
    last: Annotated[int, Field(ge=0)] = 3
    daily: Annotated[int, Field(ge=0)] = 14
    weekly: Annotated[int, Field(ge=0)] = 8
    monthly: Annotated[int, Field(ge=0)] = 12
    yearly: Annotated[int, Field(ge=0)] = 3


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_NAMES = {n.lower(): d for d, full in zip(WEEKDAYS, _FULL_DAYS, strict=True) for n in (d, full)}


def _schedule_time(value: object) -> str:
    """'HH:MM' (every day) or 'Day HH:MM' (every week), normalised: '02:30', 'Sun 06:00'."""
    base60 = sexagesimal_clock(value)  # YAML 1.1 reads an unquoted 12:30 as 750
    if base60 is not None:
        hours, minutes = base60
        raise ValueError(
            f"got the number {value}: YAML reads an unquoted {hours}:{minutes:02d} as a number "
            f'in base 60; quote the time: "{hours:02d}:{minutes:02d}"'
        )
    wanted = "expected 'HH:MM' (24-hour, e.g. \"02:30\") or 'Day HH:MM' (e.g. \"Sun 06:00\")"
    if not isinstance(value, str):
        raise ValueError(f"{wanted}, got {value!r}")
    parts = value.split()
    day = None
    if len(parts) == 2 and HHMM.fullmatch(parts[1]):
        day = _DAY_NAMES.get(parts[0].lower())
        if day is None:
            raise ValueError(f"{wanted}; {parts[0]!r} is not a day (Mon, Tue, ... Sun)")
    elif len(parts) != 1:
        raise ValueError(f"{wanted}, got {value!r}")
    parsed = parse_hhmm(parts[-1])
    if parsed is None:
        raise ValueError(f"{wanted}, got {value!r}")
    clock = f"{parsed:%H:%M}"
    return f"{day} {clock}" if day else clock


class Schedule(Strict):
    """When the scheduled jobs run ('ops cron', 'ops schedule'), in local time of ``timezone``."""

    timezone: ZoneName = "Asia/Ho_Chi_Minh"
    backup: str = "02:30"  # writer hosts: ops backup run (Art. 11.2: daily)
    check: str = "05:00"  # admin host: ops backup check (Art. 11.3: checked regularly)
    read_data: str = "Sun 06:00"  # admin host: ops backup check --read-data 10
    prune: str = "04:00"  # admin host: ops backup forget --prune
    drill: str = "06:30"  # admin host: ops drill (restore verification)

    @field_validator("backup", "check", "read_data", "prune", "drill", mode="before")
    @classmethod
    def _time(cls, value: object) -> str:
        return _schedule_time(value)


class Backup(Strict):
    writer_key: Path | None = None
    identity: Path | None = None
    repositories: list[Repository] = []
    retention: Retention = Retention()
    sources: list[Source] = []
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _unique_names(self) -> Backup:
        for what, names in (
            ("repositories", [r.name for r in self.repositories]),
            ("sources", [s.name for s in self.sources]),
        ):
            seen = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"two {what} are named '{name}'; names must be unique")
                seen.add(name)
        return self


class SmokeQuery(Strict):
    """A query run on a database the drill restored; its first column must be >= min."""

    source: Name
    sql: Annotated[str, Field(min_length=1)]
    min: int = 1
    database: str | None = None  # default: the source's only database


class DrillPostgres(Strict):
    # initdb, postgres, pg_restore, psql; default: the newest /usr/lib/postgresql/*/bin
    bin_dir: Path | None = None
    # a scratch server to restore into instead of a throwaway cluster (libpq keywords, no
    # password: PGPASSFILE); each drill creates its databases there and drops them afterwards
    dsn: str | None = None

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, dsn: str | None) -> str | None:
        return None if dsn is None else no_password_in_dsn(dsn, "use a 0600 PGPASSFILE")


class Drill(Strict):
    rto_seconds: Annotated[float, Field(gt=0)] = 4 * 3600  # restore-time objective (Art. 19.3)
    scratch_dir: Path | None = None  # where restores go (default: the system temp dir)
    # the unprivileged system user throwaway database servers run as when ops runs as root
    # (PostgreSQL refuses root); created on first use if missing
    run_as: Name = "portal-ops-drill"
    postgres: DrillPostgres = DrillPostgres()
    smoke: list[SmokeQuery] = []
