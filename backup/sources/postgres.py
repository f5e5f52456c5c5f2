"""``kind: postgres``: ``pg_dump -Fc -Z0`` of each database, streamed, plus the cluster globals
(``globals.sql``), with exact row counts from the dump's own snapshot.

The dump itself, the counting and the drill's loading are PostgreSQL's business:
:mod:`portalops.backup.engines.postgres`, imported when a source runs or a drill starts, so a
host backing up only files never loads psycopg.

Passwords come from libpq's environment (``PGPASSFILE``, ``~/.pgpass``, ``PGPASSWORD``) and
never appear in argv, messages or the snapshot; the DSN is refused if it holds one.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator

from portalops.backup.sources.base import Category, DatabaseDrill, Name
from portalops.core.validate import Strict

if TYPE_CHECKING:
    from portalops.backup.archive.streams import Sink
    from portalops.backup.config import Drill

KIND = "postgres"


class PostgresSource(Strict):
    """pg_dump -Fc -Z0 of each database, streamed, plus pg_dumpall --globals-only.
    Passwords come from PGPASSFILE / ~/.pgpass or the environment, never from here."""

    name: Name
    """The source's name in snapshots, commands and metrics (``ops backup run --source``)."""
    kind: Literal["postgres"]
    """``postgres``: a PostgreSQL server's databases and globals."""
    category: Category = Category.DATABASE
    """What the data is under Art. 11.2 (a database)."""
    dsn: str = ""
    """libpq keywords, e.g. ``host=127.0.0.1 port=5432 user=backup``, without a password
    (empty: the local socket as the current user)."""
    databases: list[str] | Literal["all"] = "all"
    """The databases to dump, or ``all`` (every database but the templates)."""
    bin_dir: Path | None = None
    """Where pg_dump and pg_dumpall live (unset: found on PATH)."""
    timeout: Annotated[float, Field(gt=0)] = 6 * 3600
    """Seconds each dump may run before the source fails."""

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, dsn: str) -> str:
        return no_password_in_dsn(dsn)


PASSWORD_ADVICE = (
    "use a 0600 PGPASSFILE (~/.pgpass) or the PGPASSWORD environment variable of the cron job"  # noqa: S105
)


def no_password_in_dsn(dsn: str, advice: str = PASSWORD_ADVICE) -> str:
    """The config check of every PostgreSQL DSN in ops.yaml (sources and the drill's scratch
    server): passwords never live there. Light on purpose: config loading imports it."""
    if "password" in dsn.lower():
        raise ValueError(f"passwords do not belong in ops.yaml; {advice}")
    return dsn


def describe(source: PostgresSource) -> str:
    databases = source.databases
    names = ",".join(databases) if isinstance(databases, list) else "all"
    return f"postgres:{source.dsn or 'local'} {names}"


def produce(source: PostgresSource, sink: Sink) -> dict[str, Any]:
    """Dump ``globals.sql`` and ``<db>.dump`` per database; return the server version and
    exact row counts (and large-object counts) per database, from the dump's own snapshot."""
    from portalops.backup.archive.streams import SourceFailed, stream_command  # noqa: PLC0415 - loaded when used
    from portalops.backup.engines import DumpFailed, DumpOutput, engine  # noqa: PLC0415 - loaded when used

    try:
        return engine(KIND).dump(source, DumpOutput(sink.add_stream, partial(stream_command, sink)))
    except DumpFailed as exc:
        raise SourceFailed(source.name, exc.message) from None


def drill(source: PostgresSource, drill_config: Drill) -> DatabaseDrill:
    """Load the dumps into a throwaway cluster (or ``drill.postgres.dsn``), compare the row
    counts with the record, run the source's smoke queries."""
    from portalops.backup.engines import engine  # noqa: PLC0415 - loaded when used

    return engine(KIND).drill(
        [q for q in drill_config.smoke if q.source == source.name],
        scratch_dir=drill_config.scratch_dir,
        run_as=drill_config.run_as,
        bin_dir=drill_config.postgres.bin_dir,
        source_bin_dir=source.bin_dir,
        dsn=drill_config.postgres.dsn,
    )
