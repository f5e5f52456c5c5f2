"""Database drills: load a restored dump into a scratch server and compare it with the record.

At backup time the ``postgres`` and ``mariadb`` sources count every table's rows in the
dump's own snapshot and keep the counts in the snapshot's ``stats``. A drill loads the dumps
into a scratch server and counts again: the table list and every count must match. A table
that lost rows, a dump that stops half-way through a table, or a record that does not
describe its dump each fail the drill, named ("database portal: table public.articles: 1204
rows restored, 1210 recorded at backup"). The configured smoke queries then run on the loaded
data (``drill.smoke``).

The scratch server is a throwaway one (:mod:`portalops.backup.engines.scratch`) unless
``drill.postgres.dsn`` names a scratch PostgreSQL server; there each drill creates databases
under names of its own and drops them afterwards, and restores without owners and grants, whose
roles it must not create on a shared server.

The dumps come from a backup host, which may be hostile. A throwaway server and every client
that reads a dump into it (psql, pg_restore, mariadb) run as the drill user, the dump fed on
their stdin from here; psql and mariadb besides refuse every client-side command in it
(:mod:`portalops.backup.engines.clients`). Into a configured scratch server pg_restore runs as
``ops`` (it needs the ``PGPASSFILE``): it has no client-side commands, and the archive's SQL
runs there with the rights of the DSN's user."""

from __future__ import annotations

import os
import secrets
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pymysql
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from portalops.backup.config import Drill, MariadbSource, PostgresSource, SmokeQuery
from portalops.backup.engines.clients import (
    MARIADB_LOAD_OPTIONS,
    load_sql,
    open_dump,
    psql_restricted,
)
from portalops.backup.engines.scratch import (
    MY_ADMIN,
    PG_SUPERUSER,
    MariadbScratch,
    PostgresScratch,
    ScratchServerError,
    as_user,
    find_postgres_bin,
    run_tool,
    throwaway_mariadb,
    throwaway_postgres,
)
from portalops.backup.repo.snapshot import Snapshot
from portalops.backup.sources.mariadb import list_tables
from portalops.backup.sources.postgres import count_tables

LOAD_TIMEOUT = 6 * 3600.0  # seconds for one dump to load
SMOKE_TIMEOUT_MS = 60_000
DB_ERRORS = (psycopg.Error, pymysql.MySQLError)  # a drill step that meets these fails
SHOWN = 5  # problems listed per database before "... and N more"


class DatabaseDrill(Protocol):
    """What :func:`backup.drill.drill_one` does with a database source's restored files."""

    engine: str

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        """Load the dumps into a scratch server whose teardown goes on ``stack``; say what
        was loaded. Raises an :class:`OpsError` if any dump does not load."""

    def verify(self, snapshot: Snapshot) -> list[str]:
        """Problems found comparing the loaded databases with ``snapshot.stats``."""

    def smoke(self) -> list[str]:
        """Problems found running the smoke queries (none configured: no problems)."""


def database_drill(
    source: PostgresSource | MariadbSource, drill: Drill
) -> PostgresDrill | MariadbDrill:
    queries = [q for q in drill.smoke if q.source == source.name]
    if isinstance(source, PostgresSource):
        return PostgresDrill(source, drill, queries)
    return MariadbDrill(drill, queries)


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


def verify_postgres(conn: psycopg.Connection[Any], db: str, record: dict[str, Any]) -> list[str]:
    """Tables, row counts and large objects of the database on ``conn`` against ``record``
    (one database's entry in a postgres snapshot's stats)."""
    problems = compare(db, count_tables(conn), dict(record.get("tables", {})))
    row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    large, want = int(row[0]) if row else 0, int(record.get("large_objects", 0))
    if large != want:
        problems.append(f"database {db}: {large} large objects restored, {want} recorded at backup")
    return problems


def verify_mariadb(
    conn: pymysql.connections.Connection[Any], db: str, record: dict[str, Any]
) -> list[str]:
    """Tables and row counts of database ``db`` against ``record`` (its stats entry)."""
    counts = {}
    for table in list_tables(conn, db):
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {_quote(db)}.{_quote(table)}")  # noqa: S608
            row = cur.fetchone()
        counts[table] = int(row[0]) if row else 0
    return compare(db, counts, dict(record.get("tables", {})))


def recorded_databases(snapshot: Snapshot) -> dict[str, Any]:
    databases = snapshot.stats.get("databases")
    if not isinstance(databases, dict):
        raise ScratchServerError(
            "the snapshot records no databases in its stats: it was not made by a "
            "postgres or mariadb source, or its record is damaged"
        )
    return databases


def db_name(file: Path, suffix: str) -> str:
    """The database a dump file belongs to (the sources escape '/' and '%' in file names)."""
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


class _DumpDrill:
    """What both engines share once the dumps are loaded: the comparison with the record and
    the smoke queries. Subclasses load, count one database and run one query."""

    def __init__(self, queries: list[SmokeQuery]) -> None:
        self.queries = queries
        self.loaded: dict[str, str] = {}  # database in the backup -> name on the server

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
            except DB_ERRORS as exc:
                message = " ".join(str(exc).split()) or type(exc).__name__
                problems.append(f"smoke query {query.sql!r} on {db} failed: {message}")
                continue
            problems += _smoke_result(query, db, value)
        return problems


class PostgresDrill(_DumpDrill):
    engine = "PostgreSQL"

    def __init__(self, source: PostgresSource, drill: Drill, queries: list[SmokeQuery]) -> None:
        super().__init__(queries)
        self.source, self.drill = source, drill
        self._params: dict[str, Any] = {}

    def _connect(self, name: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            make_conninfo("", **{**self._params, "dbname": name}), autocommit=True
        )

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        dumps = sorted(restored.glob("*.dump"))
        if not dumps:
            raise ScratchServerError("the snapshot holds no .dump file to load")
        configured = self.drill.postgres.dsn
        bin_dir: Path | None
        env: dict[str, str]
        if configured is None:
            bin_dir = find_postgres_bin(self.drill.postgres.bin_dir, self.source.bin_dir)
            server = stack.enter_context(
                throwaway_postgres(bin_dir, self.drill.scratch_dir, self.drill.run_as)
            )
            self._params = conninfo_to_dict(server.conninfo("postgres"))
            env = server.env
            if os.path.lexists(restored / "globals.sql"):  # roles first: the dumps name owners
                self._apply_globals(server, restored / "globals.sql")
        else:
            bin_dir = self.drill.postgres.bin_dir
            self._params = {"connect_timeout": 30, **conninfo_to_dict(configured)}
            self._params.setdefault("dbname", "postgres")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
            if "PGPASSFILE" in os.environ:
                env["PGPASSFILE"] = os.environ["PGPASSFILE"]
        tag = secrets.token_hex(4)
        maintenance = str(self._params.get("dbname") or "postgres")
        for dump in dumps:
            db = db_name(dump, ".dump")
            name = db if configured is None else f"drill_{tag}_{db}"[:63]
            with self._connect(maintenance) as conn:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                        sql.Identifier(name)
                    )
                )
            self.loaded[db] = name
            if configured is not None:
                stack.callback(self._drop, maintenance, name)
            argv = [
                str(bin_dir / "pg_restore") if bin_dir else "pg_restore",
                "--exit-on-error",
                "--no-password",
                "-d",
                make_conninfo("", **{**self._params, "dbname": name}),
            ]
            if configured is not None:
                argv += ["--no-owner", "--no-privileges"]
            else:
                argv = as_user(argv, self.drill.run_as)
            with open_dump(dump) as handle:  # the archive on stdin: a file, so seekable
                run_tool(argv, what=f"pg_restore of {dump.name}", timeout=LOAD_TIMEOUT,
                         env=env, stdin=handle)  # fmt: skip
        return f"{len(dumps)} database{'s' if len(dumps) != 1 else ''} loaded"

    def _apply_globals(self, server: PostgresScratch, path: Path) -> None:
        argv = as_user(psql_restricted(server.bin("psql"), server.conninfo("postgres")),
                       self.drill.run_as)  # fmt: skip
        loaded = load_sql(argv, path, what="psql globals.sql", timeout=LOAD_TIMEOUT,
                          env=server.env)  # fmt: skip
        # the cluster's own superuser exists already: the one error to expect
        errors = [
            line
            for line in loaded.stderr.splitlines()
            if "ERROR:" in line and f'role "{PG_SUPERUSER}" already exists' not in line
        ]
        if errors:
            raise ScratchServerError(f"globals.sql: {'; '.join(errors[:3])}")

    def _drop(self, maintenance: str, name: str) -> None:
        with self._connect(maintenance) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _verify_one(self, db: str, name: str, record: dict[str, Any]) -> list[str]:
        with self._connect(name) as conn:
            return verify_postgres(conn, db, record)

    def _query(self, name: str, query: str) -> Any:
        with self._connect(name) as conn:
            conn.execute(f"SET statement_timeout = {SMOKE_TIMEOUT_MS}")
            conn.execute("SET default_transaction_read_only = on")
            row = conn.execute(query.encode()).fetchone()
        return row[0] if row else None


class MariadbDrill(_DumpDrill):
    engine = "MariaDB"

    def __init__(self, drill: Drill, queries: list[SmokeQuery]) -> None:
        super().__init__(queries)
        self.drill = drill
        self._server: MariadbScratch | None = None

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        dumps = sorted(p for p in restored.glob("*.sql") if p.name != "users.sql")
        if not dumps:
            raise ScratchServerError("the snapshot holds no database .sql file to load")
        server = stack.enter_context(throwaway_mariadb(self.drill.scratch_dir, self.drill.run_as))
        self._server = server
        client = ["mariadb", f"--defaults-file={server.options}", *MARIADB_LOAD_OPTIONS]
        for dump in dumps:
            db = db_name(dump, ".sql")
            with self._connect() as conn, conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE {_quote(db)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            self.loaded[db] = db
            load_sql(as_user([*client, "--database", db], self.drill.run_as), dump,
                     what=f"loading {dump.name}", timeout=LOAD_TIMEOUT, env=server.env)  # fmt: skip
        users = restored / "users.sql"
        if os.path.lexists(users):
            # the accounts come last, into a server that has none but the drill's own:
            # users.sql creates them all (root and mariadb.sys included) and cannot clash
            self._drop_accounts()
            load_sql(as_user(client, self.drill.run_as), users, what="loading users.sql",
                     timeout=LOAD_TIMEOUT, env=server.env)  # fmt: skip
        return f"{len(dumps)} database{'s' if len(dumps) != 1 else ''} loaded"

    def _drop_accounts(self) -> None:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT User, Host FROM mysql.global_priv WHERE NOT (User = %s AND Host = %s)",
                (MY_ADMIN, "localhost"),
            )
            for user, host in cur.fetchall():
                cur.execute("DROP USER %s@%s", (user, host))

    def _connect(self, db: str | None = None) -> pymysql.connections.Connection[Any]:
        if self._server is None:
            raise ScratchServerError("the MariaDB drill server is not running")
        args: dict[str, Any] = self._server.connect_args()
        if db is not None:
            args["database"] = db
        return pymysql.connect(**args)

    def _verify_one(self, db: str, name: str, record: dict[str, Any]) -> list[str]:
        with self._connect() as conn:
            return verify_mariadb(conn, name, record)

    def _query(self, name: str, query: str) -> Any:
        with self._connect(name) as conn, conn.cursor() as cur:
            cur.execute(f"SET SESSION max_statement_time = {SMOKE_TIMEOUT_MS / 1000:g}")
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.execute(query)
            row = cur.fetchone()
        return row[0] if row else None


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
