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
    """A backup repository every source is written to: a local directory or an S3 bucket."""

    name: Name
    """What commands and metrics call the repository (``ops backup list --repo NAME``)."""
    url: str
    """A local directory (``/var/backups/portal-ops``) or ``s3://bucket/prefix``."""
    endpoint: str | None = None
    """S3: the endpoint URL of an S3-compatible store (unset: AWS)."""
    region: str | None = None
    """S3: the region to sign requests for (unset: the client's default)."""
    object_lock_days: Annotated[int, Field(ge=0)] = 0
    """S3: the least default retention (COMPLIANCE mode, days) the bucket must have; checked
    before the first write, never sent with uploads (docs/s3-bucket-policy.md). 0: no check."""
    attempts: Annotated[int, Field(ge=1, le=20)] = 8
    """S3: tries per request before giving up."""
    allow_overwriting_writes: bool = False
    """S3: accept a store that cannot refuse to overwrite an object (no ``If-None-Match``);
    writes are then no longer create-only."""


class Retention(Strict):
    """How many snapshots of each source ``ops backup forget`` keeps, by period."""

    last: Annotated[int, Field(ge=0)] = 3
    """The most recent snapshots, whatever their age."""
    daily: Annotated[int, Field(ge=0)] = 14
    """The last snapshot of each of this many days."""
    weekly: Annotated[int, Field(ge=0)] = 8
    """The last snapshot of each of this many weeks."""
    monthly: Annotated[int, Field(ge=0)] = 12
    """The last snapshot of each of this many months."""
    yearly: Annotated[int, Field(ge=0)] = 3
    """The last snapshot of each of this many years."""


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
    """When the scheduled jobs run ('ops systemd', 'ops cron', 'ops schedule'), in local time
    of ``timezone``."""

    timezone: ZoneName = "Asia/Ho_Chi_Minh"
    """The IANA time zone the times below are in."""
    backup: str = "02:30"
    """Writer hosts: ``ops backup run`` (Art. 11.2: daily). ``"HH:MM"`` every day or
    ``"Day HH:MM"`` every week, quoted."""
    check: str = "05:00"
    """Admin host: ``ops backup check`` (Art. 11.3: checked regularly)."""
    read_data: str = "Sun 06:00"
    """Admin host: ``ops backup check --read-data 10`` (decrypts and verifies a rotating
    10 % of the packs)."""
    prune: str = "04:00"
    """Admin host: ``ops backup forget --prune`` (the retention policy)."""
    drill: str = "06:30"
    """Admin host: ``ops drill`` (restore verification)."""

    @field_validator("backup", "check", "read_data", "prune", "drill", mode="before")
    @classmethod
    def _time(cls, value: object) -> str:
        return _schedule_time(value)


class Backup(Strict):
    """What is backed up, where to, for how long, and when."""

    writer_key: Path | None = None
    """The writer key file backup hosts hold (mode 0600): it adds snapshots but cannot read,
    change or delete them."""
    identity: Path | None = None
    """The age identity that decrypts the repositories: only where restores, drills,
    pruning and ``check --read-data`` run, never on backup hosts."""
    recipients: list[str] = []
    """What a host without ``writer_key`` encrypts to when it writes (prune's repacks, ``ops
    backup copy``): the repository's recipient on a host that reads through a wrap (``ops
    backup key add``), the new one after ``ops backup key rotate``. Empty: the repository
    config's recipients, only if they are this host's identity (a backup host can rewrite
    that config, so its recipients are not taken on trust)."""
    repositories: list[Repository] = []
    """Where backups go; each source is written to every repository."""
    retention: Retention = Retention()
    """Snapshots kept per source by ``ops backup forget``."""
    sources: list[Source] = []
    """What is backed up (Art. 11.2), one entry per source; ``kind`` selects the fields."""
    schedule: Schedule = Schedule()
    """When the jobs run: the timers of ``ops systemd`` (Debian 12, systemd), the crontab of
    ``ops cron`` (hosts without systemd) or ``ops schedule``."""

    @field_validator("recipients")
    @classmethod
    def _age_keys(cls, recipients: list[str]) -> list[str]:
        # here, not at the top: every command reads this model, few need the cryptography
        from portalops.backup.repo.keys import recipient_error  # noqa: PLC0415

        for recipient in recipients:
            error = recipient_error(recipient)
            if error is not None:
                raise ValueError(error)
        return recipients

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
    """The database source (a name in ``backup.sources``) whose restore it runs on."""
    sql: Annotated[str, Field(min_length=1)]
    """A read-only query; its first column of the first row is compared with ``min``."""
    min: int = 1
    """The least value the query's result may have."""
    database: str | None = None
    """The restored database to query (unset: the source's only database)."""


class DrillPostgres(Strict):
    """How drills run PostgreSQL: a throwaway cluster, or a scratch server of yours."""

    bin_dir: Path | None = None
    """Where initdb, postgres, pg_restore and psql live (unset: the newest
    ``/usr/lib/postgresql/*/bin``)."""
    dsn: str | None = None
    """A scratch server to restore into instead of a throwaway cluster (libpq keywords, no
    password: use a 0600 PGPASSFILE); each drill creates its databases there and drops them
    afterwards."""

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, dsn: str | None) -> str | None:
        return None if dsn is None else no_password_in_dsn(dsn, "use a 0600 PGPASSFILE")


class Drill(Strict):
    """Restore drills: restore the latest snapshots, check them, and time the restore."""

    rto_seconds: Annotated[float, Field(gt=0)] = 4 * 3600
    """The restore-time objective in seconds (Art. 19.3 contingency plan): a drill slower than
    this fails."""
    scratch_dir: Path | None = None
    """Where drills restore to (unset: the system temp directory); the drill user must be able
    to enter it (o+x)."""
    run_as: Name = "portal-ops-drill"
    """The unprivileged system user throwaway database servers run as when ops runs as root
    (PostgreSQL refuses root). Created if missing by ``ops systemd --install --role admin``
    (a drill under its systemd unit cannot: /etc is read-only there) and, outside a unit, by
    the first drill run as root."""
    postgres: DrillPostgres = DrillPostgres()
    """PostgreSQL binaries or a scratch server for drills of postgres sources."""
    smoke: list[SmokeQuery] = []
    """Read-only queries run on the restored databases."""
