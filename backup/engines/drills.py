"""What every engine's drill shares once its dumps are loaded: the comparison with the
record kept at backup time, and the smoke queries.

At backup time a database source counts every table's rows in the dump's own snapshot and
keeps the counts in the snapshot's ``stats``. A drill loads the dumps into a scratch server
and counts again: the table list and every count must match. A table that lost rows, a dump
that stops half-way through a table, or a record that does not describe its dump each fail
the drill, named ("database portal: table public.articles: 1204 rows restored, 1210 recorded
at backup"). The configured smoke queries then run on the loaded data (``drill.smoke``).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

from portalops.backup.engines.scratch import ScratchServerError
from portalops.backup.repo.snapshot import Snapshot

LOAD_TIMEOUT = 6 * 3600.0  # seconds for one dump to load
SMOKE_TIMEOUT_MS = 60_000
SHOWN = 5  # problems listed per database before "... and N more"


class SmokeQuery(Protocol):
    """A ``drill.smoke`` entry: its first column must be at least ``min``."""

    @property
    def sql(self) -> str: ...
    @property
    def min(self) -> int: ...
    @property
    def database(self) -> str | None: ...


def compare(db: str, restored: dict[str, int], recorded: dict[str, int]) -> list[str]:
    """The differences between restored and recorded row counts, in plain words."""
    problems = []
    for table in sorted(set(restored) | set(recorded)):
        have, want = restored.get(table), recorded.get(table)
        if have is None:
            problems.append(f"table {table}: missing after restore ({want} rows recorded)")
        elif want is None:
            problems.append(f"table {table}: restored ({have} rows) but not recorded at backup")
        elif have != want:
            problems.append(f"table {table}: {have} rows restored, {want} recorded at backup")
    if len(problems) > SHOWN:
        problems[SHOWN:] = [f"… and {len(problems) - SHOWN} more tables differ"]
    return [f"database {db}: {p}" for p in problems]


def recorded_databases(snapshot: Snapshot) -> dict[str, Any]:
    databases = snapshot.stats.get("databases")
    if not isinstance(databases, dict):
        raise ScratchServerError(
            "the snapshot records no databases in its stats: it was not made by a "
            "postgres or mariadb source, or its record is damaged"
        )
    return databases


def file_name(db: str, suffix: str) -> str:
    """The snapshot file for database ``db``: '/' cannot be in a file name, '%' escapes it."""
    return db.replace("%", "%25").replace("/", "%2F") + suffix


def db_name(file: Path, suffix: str) -> str:
    """The database a dump file belongs to: :func:`file_name` undone."""
    return file.name.removesuffix(suffix).replace("%2F", "/").replace("%25", "%")


def _pick_database(query: SmokeQuery, loaded: dict[str, str]) -> tuple[str, str] | str:
    """(name in the backup, name on the scratch server), or a problem."""
    if query.database is not None:
        if query.database not in loaded:
            return f"smoke query on {query.database}: no such database in the snapshot"
        return query.database, loaded[query.database]
    if len(loaded) != 1:
        return (
            f"smoke query {query.sql!r}: set its database; the snapshot has "
            f"{', '.join(sorted(loaded)) or 'none'}"
        )
    [(db, name)] = loaded.items()
    return db, name


def _smoke_result(query: SmokeQuery, db: str, value: Any) -> list[str]:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return [f"smoke query {query.sql!r} on {db} returned {value!r}, not a number"]
    if number < query.min:
        return [
            f"smoke query {query.sql!r} on {db} returned {number}, expected at least {query.min}"
        ]
    return []


class DumpDrill:
    """What both engines' drills share once the dumps are loaded: the comparison with the
    record and the smoke queries. Subclasses load (``load(restored, snapshot, stack) ->
    str``, the teardown on ``stack``), count one database and run one query; the result is
    what a source kind's ``drill`` returns (``portalops.backup.sources.base.DatabaseDrill``)."""

    engine = ""

    def __init__(self, queries: list[SmokeQuery], errors: tuple[type[Exception], ...]) -> None:
        self.queries = queries
        self.errors = errors  # a smoke query that meets these is a problem, not a crash
        self.loaded: dict[str, str] = {}  # database in the backup -> name on the server

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        """Load the dumps into a scratch server whose teardown goes on ``stack``; say what
        was loaded. Raises an :class:`OpsError` if any dump does not load."""
        raise NotImplementedError

    def _verify_one(self, db: str, name: str, record: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def _query(self, name: str, query: str) -> Any:
        raise NotImplementedError

    def verify(self, snapshot: Snapshot) -> list[str]:
        recorded = recorded_databases(snapshot)
        problems = [
            f"database {db}: recorded at backup but no dump of it was restored"
            for db in sorted(set(recorded) - set(self.loaded))
        ]
        for db, name in sorted(self.loaded.items()):
            record = recorded.get(db)
            if not isinstance(record, dict):
                problems.append(f"database {db}: restored but not recorded at backup")
                continue
            problems += self._verify_one(db, name, record)
        return problems

    def smoke(self) -> list[str]:
        problems: list[str] = []
        for query in self.queries:
            picked = _pick_database(query, self.loaded)
            if isinstance(picked, str):
                problems.append(picked)
                continue
            db, name = picked
            try:
                value = self._query(name, query.sql)
            except self.errors as exc:
                message = " ".join(str(exc).split()) or type(exc).__name__
                problems.append(f"smoke query {query.sql!r} on {db} failed: {message}")
                continue
            problems += _smoke_result(query, db, value)
        return problems
