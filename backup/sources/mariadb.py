"""``kind: mariadb``: ``mariadb-dump --single-transaction`` of each database, streamed, with
exact row counts of every table, and the accounts as ``users.sql``.

``databases: all`` means every database the account can see except the server's own:
``information_schema``, ``performance_schema`` and ``sys`` are views of the running server,
and ``mysql`` holds accounts and server state that do not restore into another server as
tables; the accounts and grants come as ``users.sql`` instead (``mariadb-dump
--system=users``, portable CREATE USER / GRANT statements). Name ``mysql`` explicitly to get
the raw tables too.

The dump itself (and how its row counts come from the dump's own snapshot), the counting and
the drill's loading are MariaDB's business: :mod:`portalops.backup.engines.mariadb`, imported
when a source runs or a drill starts, so a host backing up only files never loads PyMySQL.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from portalops.backup.sources.base import Category, DatabaseDrill, Name
from portalops.core.validate import Strict

if TYPE_CHECKING:
    from portalops.backup.archive.streams import Sink
    from portalops.backup.config import Drill

KIND = "mariadb"


class MariadbSource(Strict):
    """mariadb-dump --single-transaction of each database, streamed, with table statistics.
    Credentials come from a 0600 option file (defaults_file), never from here."""

    name: Name
    """The source's name in snapshots, commands and metrics (``ops backup run --source``)."""
    kind: Literal["mariadb"]
    """``mariadb``: a MariaDB (or MySQL) server's databases and accounts."""
    category: Category = Category.DATABASE
    """What the data is under Art. 11.2 (a database)."""
    host: str = "127.0.0.1"
    """The server's address (ignored when ``socket`` is set)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 3306
    """The server's TCP port."""
    socket: Path | None = None
    """A Unix socket to connect through instead of host and port."""
    user: str | None = None
    """The account to dump as (unset: the option file's or the client's default)."""
    defaults_file: Path | None = None
    """A 0600 option file with ``[client] user=... password=...``: where the password lives."""
    databases: list[str] | Literal["all"] = "all"
    """The databases to dump, or ``all`` (every database but the server's own schemas)."""
    timeout: Annotated[float, Field(gt=0)] = 6 * 3600
    """Seconds each dump may run before the source fails."""
    consistent_counts: bool = True
    """Take row counts from the dump's own snapshot: commits wait while mariadb-dump starts
    (BACKUP STAGE BLOCK_COMMIT, needs RELOAD; at most seconds, usually milliseconds)."""
    users: bool = True
    """Also dump accounts, roles and grants as ``users.sql`` (mariadb-dump --system=users)."""


def describe(source: MariadbSource) -> str:
    return f"mariadb:{source.socket or f'{source.host}:{source.port}'}"


def produce(source: MariadbSource, sink: Sink) -> dict[str, Any]:
    """Dump ``<db>.sql`` per database and ``users.sql``; return the server version and exact
    row counts per database and table, from the dump's snapshot where possible."""
    from portalops.backup.archive.streams import SourceFailed, stream_command  # noqa: PLC0415 - loaded when used
    from portalops.backup.engines import DumpFailed, DumpOutput, engine  # noqa: PLC0415 - loaded when used

    try:
        return engine(KIND).dump(source, DumpOutput(sink.add_stream, partial(stream_command, sink)))
    except DumpFailed as exc:
        raise SourceFailed(source.name, exc.message) from None


def drill(source: MariadbSource, drill_config: Drill) -> DatabaseDrill:
    """Load the dumps and then the accounts into a throwaway server, compare the row counts
    with the record, run the source's smoke queries."""
    from portalops.backup.engines import engine  # noqa: PLC0415 - loaded when used

    return engine(KIND).drill(
        [q for q in drill_config.smoke if q.source == source.name],
        scratch_dir=drill_config.scratch_dir,
        run_as=drill_config.run_as,
    )
