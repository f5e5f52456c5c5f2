"""PostgreSQL: how portal-ops dumps, loads, counts and quotes, and its throwaway server.

Dump (the ``postgres`` source): ``pg_dump -Fc -Z0`` of each database, streamed, plus the
cluster globals. Row counts and dump come from one snapshot. Per database, a REPEATABLE READ
transaction exports its snapshot (``pg_export_snapshot()``), counts every user table exactly
inside it, and stays open while ``pg_dump --snapshot=<id>`` imports that snapshot and streams
the dump. Rows inserted meanwhile are in neither, so a drill that restores the dump must find
exactly the counts recorded here. Counting comes before dumping rather than beside it:
simpler, and the ACCESS SHARE locks it takes keep the counted tables from being dropped before
pg_dump reaches them.

The dump is uncompressed (``-Z0``) on purpose: zstd per chunk compresses it as well, and
an uncompressed dump deduplicates day to day where a compressed one changes throughout.

Load (``ops backup restore --to-database`` and drills): ``globals.sql`` through psql in
restricted mode, each ``*.dump`` through ``pg_restore`` fed on its stdin
(:mod:`portalops.backup.engines.clients`).

Passwords come from libpq's environment (``PGPASSFILE``, ``~/.pgpass``, ``PGPASSWORD``) and
never appear in argv, messages or the snapshot; a DSN that holds one is refused.

psycopg is imported here only: a host backing up files never loads this module.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from portalops.backup.engines import DumpFailed, DumpOutput, some, time_left
from portalops.backup.engines.clients import load_sql, open_dump, psql_restricted
from portalops.backup.engines.drills import (
    LOAD_TIMEOUT,
    SMOKE_TIMEOUT_MS,
    DumpDrill,
    SmokeQuery,
    compare,
    db_name,
    file_name,
)
from portalops.backup.engines.restores import (
    DatabaseRestore,
    RestoreFailed,
    record_of,
    refuse_existing,
)
from portalops.backup.engines.scratch import (
    PG_SUPERUSER,
    PostgresScratch,
    ScratchServerError,
    as_user,
    find_postgres_bin,
    run_tool,
    throwaway_postgres,
)
from portalops.backup.repo.snapshot import Snapshot
from portalops.core.errors import BadInput

_IMPORT_ERROR: ImportError | None = None
try:
    import psycopg
    from psycopg import sql
    from psycopg.abc import Query
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # a host without the client library: said when a dump runs
    _IMPORT_ERROR = exc

NAME = "postgres"
TITLE = "PostgreSQL"
SUFFIX = ".dump"  # <database>.dump, plus globals.sql
GLOBALS = "globals.sql"  # the cluster's roles, beside the databases' dumps
SERVER_FILES: tuple[str, ...] = (
    GLOBALS,
)  # files beside the dumps that are not a database's (no SUFFIX)

CONNECT_TIMEOUT = 30  # seconds, unless the DSN sets connect_timeout
APPLICATION_NAME = "portal-ops backup"
MAINTENANCE_DB = "postgres"  # where the database list and the globals come from by default
_LIBPQ_PREFIX = re.compile(
    r'^(connection failed: )?(connection to server (at|on socket) "[^"]*"(, port \d+)? failed: )?'
)

# Tables that hold rows pg_dump writes: ordinary tables and leaf partitions (a partitioned
# parent would count its partitions twice), no system or temporary schemas, no tables that
# belong to an extension (CREATE EXTENSION recreates those, not the dump).
TABLES_QUERY = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""


def errors() -> tuple[type[Exception], ...]:
    """What a failing server or query raises through this engine's client library."""
    return (psycopg.Error,) if _IMPORT_ERROR is None else ()


def quote(name: str) -> str:
    """``name`` as an SQL identifier (what ``psycopg.sql.Identifier`` renders)."""
    return '"' + name.replace('"', '""') + '"'


# -- dump ------------------------------------------------------------------------------------


class DumpOptions(Protocol):
    """What a dump needs of its source (the ``postgres`` source model has it)."""

    @property
    def dsn(self) -> str: ...
    @property
    def databases(self) -> list[str] | Literal["all"]: ...
    @property
    def bin_dir(self) -> Path | None: ...
    @property
    def timeout(self) -> float: ...


def dump(source: DumpOptions, out: DumpOutput) -> dict[str, Any]:
    """Dump ``globals.sql`` and ``<db>.dump`` per database; return the server version and
    exact row counts (and large-object counts) per database, from the dump's own snapshot."""
    if _IMPORT_ERROR is not None:
        raise DumpFailed(
            f"the Python package psycopg is missing ({_IMPORT_ERROR}); "
            "install it with pip install 'psycopg[binary]'"
        )
    deadline = time.monotonic() + source.timeout
    params = _params(source)
    where = _where(params)
    maintenance = str(params.get("dbname") or MAINTENANCE_DB)
    conn = _connect(params, maintenance, where)
    try:
        version = str(_scalar(conn, "SHOW server_version"))
        superuser = bool(
            _scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
        databases = _databases(conn, source, where)
    except psycopg.Error as exc:
        raise DumpFailed(f"{where}: {_message(exc)}") from None
    finally:
        conn.close()
    _dump_globals(source, out, params, maintenance, superuser, deadline)
    stats: dict[str, Any] = {}
    for db in databases:
        stats[db] = _dump_database(source, out, params, db, where, deadline)
    return {
        "server_version": version,
        "globals": {"role_passwords": superuser},
        "databases": stats,
    }


def _params(source: DumpOptions) -> dict[str, Any]:
    try:
        params = conninfo_to_dict(source.dsn)
    except psycopg.ProgrammingError as exc:
        raise DumpFailed(f"dsn is not a libpq connection string: {exc}") from None
    if "password" in params:  # a URI (postgresql://user:secret@host) slips past the config check
        raise DumpFailed(
            "the dsn holds a password; put it in a 0600 PGPASSFILE (~/.pgpass) instead"
        )
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    return params


def _where(params: dict[str, Any]) -> str:
    host = params.get("host") or params.get("hostaddr") or "the local socket"
    port = params.get("port")
    return f"postgres {host}:{port}" if port else f"postgres {host}"


def _conninfo(params: dict[str, Any], dbname: str) -> str:
    """A conninfo string for ``dbname``: what pg_dump gets as ``-d``. It holds no password."""
    return make_conninfo("", **{**params, "dbname": dbname})


def _connect(params: dict[str, Any], dbname: str, where: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            _conninfo(params, dbname), autocommit=True, application_name=APPLICATION_NAME
        )
    except psycopg.Error as exc:
        # we say where already; libpq's own "connection to server at ... failed:" repeats it
        message = _LIBPQ_PREFIX.sub("", _message(exc))
        if "no password supplied" in message:
            message += " (set PGPASSFILE to a 0600 password file, or PGPASSWORD)"
        elif "password authentication failed" in message:
            message += " (check the password in PGPASSFILE or PGPASSWORD)"
        raise DumpFailed(f"cannot connect to database {dbname!r} on {where}: {message}") from None


def _databases(conn: psycopg.Connection[Any], source: DumpOptions, where: str) -> list[str]:
    rows = conn.execute(
        "SELECT datname, datallowconn FROM pg_database WHERE NOT datistemplate ORDER BY datname"
    ).fetchall()
    allowed = {str(name): bool(allow) for name, allow in rows}
    if source.databases == "all":
        return [name for name, allow in allowed.items() if allow]
    for db in source.databases:
        if db not in allowed:
            raise DumpFailed(
                f"database {db!r} does not exist on {where} (it has: {some(list(allowed))})"
            )
        if not allowed[db]:
            raise DumpFailed(f"database {db!r} on {where} allows no connections")
    return list(source.databases)


def _dump_globals(
    source: DumpOptions,
    out: DumpOutput,
    params: dict[str, Any],
    maintenance: str,
    superuser: bool,
    deadline: float,
) -> None:
    argv = [
        _binary(source, "pg_dumpall"),
        "--globals-only",
        "--no-password",
        "-l",
        maintenance,
        "-d",
        _conninfo(params, maintenance),
    ]
    if not superuser:
        # pg_authid (the password hashes) is superuser-only; roles and grants still come
        argv.append("--no-role-passwords")
    out.stream_command(
        GLOBALS,
        argv,
        timeout=time_left(deadline, source.timeout),
        what="pg_dumpall --globals-only",
    )


def _dump_database(
    source: DumpOptions,
    out: DumpOutput,
    params: dict[str, Any],
    db: str,
    where: str,
    deadline: float,
) -> dict[str, Any]:
    conn = _connect(params, db, where)
    try:
        try:
            # the counts must fail, not hang, and must not be cut short by server defaults
            # meant for applications; row_security off as in pg_dump: an error, never a
            # silently filtered count
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('idle_in_transaction_session_timeout', '0', false),"
                " set_config('row_security', 'off', false)",
                (f"{int(time_left(deadline, source.timeout) * 1000)}ms",),
            )
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()"))
            tables = count_rows(conn)
            large = large_objects(conn)
        except psycopg.Error as exc:
            raise DumpFailed(f"database {db!r}: counting rows: {_message(exc)}") from None
        # the exporting transaction stays open until pg_dump is done: it holds the snapshot
        out.stream_command(
            file_name(db, SUFFIX),
            [
                _binary(source, "pg_dump"),
                "-Fc",
                "-Z0",
                "--no-password",
                f"--snapshot={snapshot}",
                "-d",
                _conninfo(params, db),
            ],
            timeout=time_left(deadline, source.timeout),
            what=f"pg_dump of database {db!r}",
        )
    finally:
        # ends the read-only transaction (nothing to commit), on a dead server too, quietly
        conn.close()
    return {"tables": tables, "large_objects": large}


def _binary(source: DumpOptions, name: str) -> str:
    # Debian keeps the real programs in /usr/lib/postgresql/<v>/bin; /usr/bin has wrappers
    return str(Path(source.bin_dir) / name) if source.bin_dir else name


def _message(exc: BaseException) -> str:
    # libpq's messages span lines ("Connection refused\n\tIs the server running..."); one
    # line reads better in a report
    lines = (" ".join(line.split()) for line in str(exc).splitlines())
    return "; ".join(line for line in lines if line) or type(exc).__name__


# -- count -----------------------------------------------------------------------------------


def count_rows(conn: psycopg.Connection[Any], db: str | None = None) -> dict[str, int]:
    """Exact rows of every table pg_dump writes, as ``{"schema.table": rows}``, of the
    database ``conn`` is connected to (PostgreSQL counts one database per connection, so
    ``db`` is only for the engine contract)."""
    counts: dict[str, int] = {}
    for schema, table in conn.execute(TABLES_QUERY).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[f"{schema}.{table}"] = int(_scalar(conn, query))
    return counts


def large_objects(conn: psycopg.Connection[Any]) -> int:
    return int(_scalar(conn, "SELECT count(*) FROM pg_largeobject_metadata"))


def verify(conn: psycopg.Connection[Any], db: str, record: dict[str, Any]) -> list[str]:
    """Tables, row counts and large objects of the database on ``conn`` against ``record``
    (one database's entry in a postgres snapshot's stats)."""
    problems = compare(db, count_rows(conn), dict(record.get("tables", {})))
    large, want = large_objects(conn), int(record.get("large_objects", 0))
    if large != want:
        problems.append(f"database {db}: {large} large objects restored, {want} recorded at backup")
    return problems


def _scalar(conn: psycopg.Connection[Any], query: Query) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


# -- load ------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server to load dumps into: libpq keywords without a password (``dbname`` the
    maintenance database), the clients' environment, and who runs them."""

    params: dict[str, Any]
    env: dict[str, str]
    program: Callable[[str], str]  # "pg_restore" -> the program to run
    run_as: str | None = None  # a throwaway server's clients run as the drill user

    @property
    def maintenance(self) -> str:
        return str(self.params.get("dbname") or MAINTENANCE_DB)

    def conninfo(self, db: str) -> str:
        return make_conninfo("", **{**self.params, "dbname": db})

    def connect(self, db: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(db), autocommit=True)

    def client(self, argv: list[str]) -> list[str]:
        return argv if self.run_as is None else as_user(argv, self.run_as)


def parse_dsn(dsn: str, what: str) -> dict[str, Any]:
    """libpq keywords of a DSN given on the command line; :class:`BadInput` naming ``what``
    when it is not one or holds a password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"{what}: not a libpq connection string: {exc}") from None
    if "password" in params:
        raise BadInput(f"{what}: the DSN holds a password; put it in a 0600 PGPASSFILE")
    return params


def client_env(keep: tuple[str, ...]) -> dict[str, str]:
    """This process's environment without libpq's PG* variables but ``keep``: they would
    override nothing a DSN sets, but could add to it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG") or k in keep}


def program(name: str, bin_dir: Path | None) -> str:
    """A client program for loading: ``bin_dir``'s, else the newest installed."""
    if bin_dir is not None:
        return str(bin_dir / name)
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}") if p.parts[-3].isdigit()),
        key=lambda p: int(p.parts[-3]),
    )
    if versions:  # the newest reads every older dump; Debian's /usr/bin wrapper may not
        return str(versions[-1])
    found = shutil.which(name)
    if found is None:
        raise BadInput(f"{name} not found: install the Debian package postgresql-client-15")
    return found


def databases(conn: psycopg.Connection[Any]) -> set[str]:
    """Every database of the server, templates included: the names a load must not take."""
    return {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database").fetchall()}


def create_database(server: Server, name: str, *, utf8: bool = False) -> None:
    """An empty database ``name`` (from template0, so a dump restores into it cleanly)."""
    query = sql.SQL(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'"
        if utf8
        else "CREATE DATABASE {} TEMPLATE template0"
    )
    with server.connect(server.maintenance) as conn:
        conn.execute(query.format(sql.Identifier(name)))


def drop_database(server: Server, name: str) -> None:
    with server.connect(server.maintenance) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def load(
    server: Server, dump: Path, name: str, *, create: bool = False, shared: bool = False
) -> None:
    """``pg_restore`` of ``dump`` into database ``name``, the archive fed on its stdin (a
    file: seekable). ``create``: pg_restore creates the database itself, with its owner,
    encoding and locale. ``shared``: a server others use, so no owners and grants (whose
    roles it must not create). :class:`ScratchServerError` when it fails."""
    argv = [server.program("pg_restore")]
    if create:
        argv.append("--create")
    argv += ["--exit-on-error", "--no-password", "-d"]
    argv.append(server.conninfo(server.maintenance if create else name))
    if shared:
        argv += ["--no-owner", "--no-privileges"]
    with open_dump(dump) as handle:
        run_tool(server.client(argv), what=f"pg_restore of {dump.name}", timeout=LOAD_TIMEOUT,
                 env=server.env, stdin=handle)  # fmt: skip


def globals_client(server: Server) -> list[str]:
    """psql reading ``globals.sql`` into the maintenance database, client commands refused."""
    return server.client(
        psql_restricted(server.program("psql"), server.conninfo(server.maintenance))
    )


# -- restore (ops backup restore --to-database) -------------------------------------------


def restore(
    restored: Path,
    snapshot: Snapshot,
    dsn: str,
    dumps: dict[str, Path],
    plan: dict[str, str],
    *,
    defaults_file: Path | None = None,
    bin_dir: Path | None = None,
) -> DatabaseRestore:
    """Load ``dumps`` (database in the backup -> its dump) into the server ``dsn`` under the
    names ``plan`` gives: ``globals.sql`` first (roles, so ownership restores; roles that
    exist already are reported and left as they are), then ``pg_restore --create`` for each
    database, which keeps its owner, encoding and locale; a database restored under another
    name is created here and the dump restored into it. Each is counted against the record.
    ``defaults_file`` is MariaDB's; the password comes from ``PGPASSFILE``."""
    params = parse_dsn(dsn, "--to-database")
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    where = f"postgres {params.get('host') or 'local socket'}:{params.get('port') or 5432}"
    report = DatabaseRestore(TITLE, where)
    server = Server(
        params,
        client_env(("PGPASSFILE", "PGPASSWORD")),
        lambda name: program(name, bin_dir),
    )
    try:
        with server.connect(server.maintenance) as conn:
            existing = databases(conn)
    except errors() as exc:
        raise RestoreFailed(f"cannot connect to {where}: {' '.join(str(exc).split())}") from None
    refuse_existing(existing, plan, where)
    globals_sql = restored / GLOBALS
    if os.path.lexists(globals_sql):
        loaded = load_sql(globals_client(server), globals_sql, what="psql globals.sql",
                          timeout=LOAD_TIMEOUT, env=server.env, strict=False)  # fmt: skip
        report.problems += loaded.refused
        report.warnings += [
            f"globals.sql: {line.split('ERROR:', 1)[1].strip()} (left as it is)"
            for line in loaded.stderr.splitlines()
            if "ERROR:" in line
        ]
    server.program("pg_restore")  # found before the first database is created
    for db, dump in dumps.items():
        name = plan[db]
        create = name == db  # the database comes back with its owner, encoding, locale
        if not create:
            create_database(server, name)
        try:
            load(server, dump, name, create=create)
        except ScratchServerError as exc:
            raise RestoreFailed(f"{exc}; database {name} on {where} is incomplete") from None
        report.databases[db] = name
        record = record_of(snapshot, db, report)
        if record is not None:
            with server.connect(name) as conn:
                report.problems += verify(conn, name, record)
    return report


# -- throwaway server and drill --------------------------------------------------------------


def throwaway(
    scratch_dir: Path | None, run_as: str, bin_dir: Path | None = None
) -> AbstractContextManager[PostgresScratch]:
    """A fresh cluster in scratch space (:func:`~portalops.backup.engines.scratch.
    throwaway_postgres`), its programs from ``bin_dir`` or the newest installed."""
    return throwaway_postgres(find_postgres_bin(bin_dir), scratch_dir, run_as)


class Drill(DumpDrill):
    """Loads a postgres snapshot's dumps into a throwaway cluster, or into the configured
    scratch server ``dsn`` under names of its own (dropped afterwards)."""

    engine = TITLE

    def __init__(
        self,
        queries: list[SmokeQuery],
        *,
        scratch_dir: Path | None,
        run_as: str,
        bin_dir: Path | None,
        source_bin_dir: Path | None,
        dsn: str | None,
    ) -> None:
        super().__init__(queries, errors())
        self.scratch_dir, self.run_as, self.dsn = scratch_dir, run_as, dsn
        self.bin_dir, self.source_bin_dir = bin_dir, source_bin_dir
        self._server: Server | None = None

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        dumps = sorted(restored.glob(f"*{SUFFIX}"))
        if not dumps:
            raise ScratchServerError("the snapshot holds no .dump file to load")
        server = self._server = self._start(restored, stack)
        tag = secrets.token_hex(4)
        for dump in dumps:
            db = db_name(dump, SUFFIX)
            name = db if self.dsn is None else f"drill_{tag}_{db}"[:63]
            create_database(server, name, utf8=True)
            self.loaded[db] = name
            if self.dsn is not None:
                stack.callback(drop_database, server, name)
            load(server, dump, name, shared=self.dsn is not None)
        return f"{len(dumps)} database{'s' if len(dumps) != 1 else ''} loaded"

    def _start(self, restored: Path, stack: ExitStack) -> Server:
        if self.dsn is None:
            bin_dir = find_postgres_bin(self.bin_dir, self.source_bin_dir)
            scratch = stack.enter_context(
                throwaway_postgres(bin_dir, self.scratch_dir, self.run_as)
            )
            params = conninfo_to_dict(scratch.conninfo("postgres"))
            server = Server(params, scratch.env, scratch.bin, self.run_as)
            if os.path.lexists(restored / GLOBALS):  # roles first: the dumps name owners
                _apply_globals(server, restored / GLOBALS)
            return server
        params = {"connect_timeout": 30, **conninfo_to_dict(self.dsn)}
        params.setdefault("dbname", "postgres")
        programs = self.bin_dir
        # into a configured server pg_restore runs as ops: it needs the PGPASSFILE
        return Server(
            params,
            client_env(("PGPASSFILE",)),
            lambda name: str(programs / name) if programs else name,
        )

    def _verify_one(self, db: str, name: str, record: dict[str, Any]) -> list[str]:
        with self._connected().connect(name) as conn:
            return verify(conn, db, record)

    def _query(self, name: str, query: str) -> Any:
        with self._connected().connect(name) as conn:
            conn.execute(f"SET statement_timeout = {SMOKE_TIMEOUT_MS}")
            conn.execute("SET default_transaction_read_only = on")
            row = conn.execute(query.encode()).fetchone()
        return row[0] if row else None

    def _connected(self) -> Server:
        if self._server is None:
            raise ScratchServerError("the PostgreSQL drill server is not running")
        return self._server


def _apply_globals(server: Server, path: Path) -> None:
    loaded = load_sql(globals_client(server), path, what="psql globals.sql",
                      timeout=LOAD_TIMEOUT, env=server.env)  # fmt: skip
    # the cluster's own superuser exists already: the one error to expect
    errors = [
        line
        for line in loaded.stderr.splitlines()
        if "ERROR:" in line and f'role "{PG_SUPERUSER}" already exists' not in line
    ]
    if errors:
        raise ScratchServerError(f"globals.sql: {'; '.join(errors[:3])}")


def drill(
    queries: list[SmokeQuery],
    *,
    scratch_dir: Path | None,
    run_as: str,
    bin_dir: Path | None = None,
    source_bin_dir: Path | None = None,
    dsn: str | None = None,
) -> Drill:
    """The drill of a postgres snapshot: into a throwaway cluster unless ``dsn`` names a
    scratch server; ``bin_dir`` (else ``source_bin_dir``, else the newest installed) has
    the server programs."""
    return Drill(queries, scratch_dir=scratch_dir, run_as=run_as, bin_dir=bin_dir,
                 source_bin_dir=source_bin_dir, dsn=dsn)  # fmt: skip
