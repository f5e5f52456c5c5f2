"""``kind: postgres``: ``pg_dump -Fc -Z0`` of each database, streamed, plus the cluster globals.

Row counts and dump come from one snapshot. Per database, a REPEATABLE READ transaction
exports its snapshot (``pg_export_snapshot()``), counts every user table exactly inside it,
and stays open while ``pg_dump --snapshot=<id>`` imports that snapshot and streams the dump.
Rows inserted meanwhile are in neither, so a drill that restores the dump must find exactly
the counts recorded here. Counting comes before dumping rather than beside it: simpler, and
the ACCESS SHARE locks it takes keep the counted tables from being dropped before pg_dump
reaches them.

The dump is uncompressed (``-Z0``) on purpose: zstd per chunk compresses it as well, and
an uncompressed dump deduplicates day to day where a compressed one changes throughout.

Passwords come from libpq's environment (``PGPASSFILE``, ``~/.pgpass``, ``PGPASSWORD``) and
never appear in argv, messages or the snapshot; the DSN is refused if it holds one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from portalops.backup.archive.streams import Sink, SourceFailed, stream_command
from portalops.backup.config import PostgresSource

_LIBPQ_PREFIX = re.compile(
    r'^(connection failed: )?(connection to server (at|on socket) "[^"]*"(, port \d+)? failed: )?'
)

_IMPORT_ERROR: ImportError | None = None
try:
    import psycopg
    from psycopg import sql
    from psycopg.abc import Query
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # a host without the client library: said when the source runs
    _IMPORT_ERROR = exc

CONNECT_TIMEOUT = 30  # seconds, unless the DSN sets connect_timeout
APPLICATION_NAME = "portal-ops backup"
MAINTENANCE_DB = "postgres"  # where the database list and the globals come from by default

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


def produce(source: PostgresSource, sink: Sink) -> dict[str, Any]:
    """Dump ``globals.sql`` and ``<db>.dump`` per database; return the server version and
    exact row counts (and large-object counts) per database, from the dump's own snapshot."""
    if _IMPORT_ERROR is not None:
        raise SourceFailed(
            source.name,
            f"the Python package psycopg is missing ({_IMPORT_ERROR}); "
            "install it with pip install 'psycopg[binary]'",
        )
    deadline = time.monotonic() + source.timeout
    params = _params(source)
    where = _where(params)
    maintenance = str(params.get("dbname") or MAINTENANCE_DB)
    conn = _connect(source, params, maintenance, where)
    try:
        version = str(_scalar(conn, "SHOW server_version"))
        superuser = bool(
            _scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
        databases = _databases(conn, source, where)
    except psycopg.Error as exc:
        raise SourceFailed(source.name, f"{where}: {_message(exc)}") from None
    finally:
        conn.close()
    _dump_globals(source, sink, params, maintenance, superuser, deadline)
    stats: dict[str, Any] = {}
    for db in databases:
        stats[db] = _dump_database(source, sink, params, db, where, deadline)
    return {
        "server_version": version,
        "globals": {"role_passwords": superuser},
        "databases": stats,
    }


def _params(source: PostgresSource) -> dict[str, Any]:
    try:
        params = conninfo_to_dict(source.dsn)
    except psycopg.ProgrammingError as exc:
        raise SourceFailed(source.name, f"dsn is not a libpq connection string: {exc}") from None
    if "password" in params:  # a URI (postgresql://user:secret@host) slips past the config check
        raise SourceFailed(
            source.name,
            "the dsn holds a password; put it in a 0600 PGPASSFILE (~/.pgpass) instead",
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


def _connect(
    source: PostgresSource, params: dict[str, Any], dbname: str, where: str
) -> psycopg.Connection[Any]:
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
        raise SourceFailed(
            source.name, f"cannot connect to database {dbname!r} on {where}: {message}"
        ) from None


def _databases(conn: psycopg.Connection[Any], source: PostgresSource, where: str) -> list[str]:
    rows = conn.execute(
        "SELECT datname, datallowconn FROM pg_database WHERE NOT datistemplate ORDER BY datname"
    ).fetchall()
    allowed = {str(name): bool(allow) for name, allow in rows}
    if source.databases == "all":
        return [name for name, allow in allowed.items() if allow]
    for db in source.databases:
        if db not in allowed:
            raise SourceFailed(
                source.name,
                f"database {db!r} does not exist on {where} (it has: {_some(list(allowed))})",
            )
        if not allowed[db]:
            raise SourceFailed(source.name, f"database {db!r} on {where} allows no connections")
    return list(source.databases)


def _dump_globals(
    source: PostgresSource,
    sink: Sink,
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
    stream_command(
        sink,
        "globals.sql",
        argv,
        timeout=_remaining(source, deadline),
        what="pg_dumpall --globals-only",
    )


def _dump_database(
    source: PostgresSource,
    sink: Sink,
    params: dict[str, Any],
    db: str,
    where: str,
    deadline: float,
) -> dict[str, Any]:
    conn = _connect(source, params, db, where)
    try:
        try:
            # the counts must fail, not hang, and must not be cut short by server defaults
            # meant for applications; row_security off as in pg_dump: an error, never a
            # silently filtered count
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('idle_in_transaction_session_timeout', '0', false),"
                " set_config('row_security', 'off', false)",
                (f"{int(_remaining(source, deadline) * 1000)}ms",),
            )
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()"))
            tables = count_tables(conn)
            large_objects = int(_scalar(conn, "SELECT count(*) FROM pg_largeobject_metadata"))
        except psycopg.Error as exc:
            raise SourceFailed(
                source.name, f"database {db!r}: counting rows: {_message(exc)}"
            ) from None
        # the exporting transaction stays open until pg_dump is done: it holds the snapshot
        stream_command(
            sink,
            _file_name(db, ".dump"),
            [
                _binary(source, "pg_dump"),
                "-Fc",
                "-Z0",
                "--no-password",
                f"--snapshot={snapshot}",
                "-d",
                _conninfo(params, db),
            ],
            timeout=_remaining(source, deadline),
            what=f"pg_dump of database {db!r}",
        )
    finally:
        # ends the read-only transaction (nothing to commit), on a dead server too, quietly
        conn.close()
    return {"tables": tables, "large_objects": large_objects}


def count_tables(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in conn.execute(TABLES_QUERY).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[f"{schema}.{table}"] = int(_scalar(conn, query))
    return counts


def _scalar(conn: psycopg.Connection[Any], query: Query) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def _binary(source: PostgresSource, name: str) -> str:
    # Debian keeps the real programs in /usr/lib/postgresql/<v>/bin; /usr/bin has wrappers
    return str(Path(source.bin_dir) / name) if source.bin_dir else name


def _file_name(db: str, suffix: str) -> str:
    """The snapshot file for database ``db``: '/' cannot be in a file name, '%' escapes it."""
    return db.replace("%", "%25").replace("/", "%2F") + suffix


def _remaining(source: PostgresSource, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise SourceFailed(source.name, f"did not finish within {source.timeout:.0f} s")
    return left


def _message(exc: BaseException) -> str:
    # libpq's messages span lines ("Connection refused\n\tIs the server running..."); one
    # line reads better in a report
    lines = (" ".join(line.split()) for line in str(exc).splitlines())
    return "; ".join(line for line in lines if line) or type(exc).__name__


def _some(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown
