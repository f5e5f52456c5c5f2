"""``ops backup restore … --to-database DSN``: a database snapshot straight into a server.

For the day it is needed for real: a new server after a loss, the dumps of one snapshot loaded
into it, then every table counted against the record the backup kept. Nothing is overwritten:
a database that already exists on the server stops the restore before anything is loaded
(restore under another name with ``--as``, or drop it first).

PostgreSQL (``*.dump`` files): ``globals.sql`` first (roles, so ownership restores; roles that
exist already are reported and left as they are), then ``pg_restore --create`` for each
database, which keeps its owner, encoding and locale; with ``--as`` the database is created
here and the dump restored into it. The DSN is libpq's (keywords or a URI), its password in
``PGPASSFILE``.

MariaDB (``*.sql`` files): ``mariadb://[user@]host[:port]`` or ``mariadb://[user@]localhost
?socket=/run/mysqld/mysqld.sock``, the password in a 0600 option file (``--defaults-file``).
Each database is created (utf8mb4) and its dump loaded; ``users.sql`` last, where accounts that
exist already are reported and left as they are.

The dumps come from a backup host, which may be hostile. The clients run as ``ops`` (they need
its credentials) but refuse every client-side command a dump holds
(:mod:`portalops.backup.engines.clients`: psql in restricted mode, mariadb in binary and sandbox
mode, no local files); each refusal is a problem of the restore (exit 1). Loading a dump still
runs its SQL on the server with the rights of the account restoring it: as a superuser, a forged
dump can do what a superuser can (``COPY … TO PROGRAM`` runs commands as the database server's
user)."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import pymysql
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from portalops.backup.engines.clients import (
    MARIADB_LOAD_OPTIONS,
    load_sql,
    open_dump,
    psql_restricted,
)
from portalops.backup.engines.scratch import ScratchServerError, run_tool
from portalops.backup.jobs.drill_db import (
    DB_ERRORS,
    LOAD_TIMEOUT,
    db_name,
    recorded_databases,
    verify_mariadb,
    verify_postgres,
)
from portalops.backup.repo.snapshot import Snapshot
from portalops.core.errors import BadInput, ExitCode, OpsError

CONNECT_TIMEOUT = 30


class RestoreFailed(OpsError):
    """{}"""


class NotADump(OpsError):
    """snapshot {}: not regular files: {} (a database snapshot holds only dumps); nothing loaded"""

    exit_code = ExitCode.PROBLEM_FOUND


@dataclass
class DatabaseRestore:
    engine: str
    server: str  # where, without credentials
    databases: dict[str, str] = field(default_factory=dict)  # in the backup -> restored as
    warnings: list[str] = field(default_factory=list)
    # counts that differ from the record; client commands a dump held, refused
    problems: list[str] = field(default_factory=list)


def engine_of(restored: Path) -> str:
    """``postgres`` or ``mariadb``, from the files a database snapshot holds."""
    if any(restored.glob("*.dump")):
        return "postgres"
    if any(p.name != "users.sql" for p in restored.glob("*.sql")):
        return "mariadb"
    raise BadInput(
        "the snapshot holds no database dump (*.dump or *.sql): it is not a database source's"
    )


def restore_to_database(
    restored: Path,
    snapshot: Snapshot,
    dsn: str,
    *,
    only: list[str] | None = None,
    rename: str | None = None,
    defaults_file: Path | None = None,
    pg_bin_dir: Path | None = None,
) -> DatabaseRestore:
    """Load the dumps in ``restored`` (the snapshot's files) into the server ``dsn``."""
    engine = engine_of(restored)  # first: a files snapshot is told it is not a database's
    # The restore put every entry inside ``restored``; a symlink among them could still send
    # a tool reading a dump to a file of this host. A database snapshot holds regular files.
    links = sorted(p.name for p in restored.iterdir() if not stat.S_ISREG(p.lstat().st_mode))
    if links:
        raise NotADump(snapshot.source, ", ".join(links))
    suffix = ".dump" if engine == "postgres" else ".sql"
    dumps = {
        db_name(p, suffix): p for p in sorted(restored.glob(f"*{suffix}")) if p.name != "users.sql"
    }
    selected = list(only) if only else sorted(dumps)
    unknown = [db for db in selected if db not in dumps]
    if unknown:
        raise BadInput(
            f"database {', '.join(map(repr, unknown))} is not in snapshot {snapshot.source}; "
            f"it has {', '.join(sorted(dumps))}"
        )
    if rename is not None and len(selected) != 1:
        raise BadInput("--as renames one database: choose it with --database")
    plan = {db: rename or db for db in selected}
    chosen = {db: dumps[db] for db in selected}
    if engine == "postgres":
        return _postgres(restored, snapshot, dsn, chosen, plan, pg_bin_dir)
    return _mariadb(restored, snapshot, dsn, chosen, plan, defaults_file)


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_program(name: str, bin_dir: Path | None) -> str:
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


def _postgres(
    restored: Path,
    snapshot: Snapshot,
    dsn: str,
    dumps: dict[str, Path],
    plan: dict[str, str],
    bin_dir: Path | None,
) -> DatabaseRestore:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"--to-database: not a libpq connection string: {exc}") from None
    if "password" in params:
        raise BadInput("--to-database: the DSN holds a password; put it in a 0600 PGPASSFILE")
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    maintenance = str(params.get("dbname") or "postgres")
    where = f"postgres {params.get('host') or 'local socket'}:{params.get('port') or 5432}"
    report = DatabaseRestore("PostgreSQL", where)

    def conninfo(db: str) -> str:
        return make_conninfo("", **{**params, "dbname": db})

    # libpq's PG* variables would override nothing the DSN sets, but could add to it
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PG") or k in ("PGPASSFILE", "PGPASSWORD")
    }
    try:
        with psycopg.connect(conninfo(maintenance), autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    except psycopg.Error as exc:
        raise RestoreFailed(f"cannot connect to {where}: {' '.join(str(exc).split())}") from None
    _refuse_existing({str(r[0]) for r in rows}, plan, where)
    globals_sql = restored / "globals.sql"
    if os.path.lexists(globals_sql):
        loaded = load_sql(
            psql_restricted(_pg_program("psql", bin_dir), conninfo(maintenance)), globals_sql,
            what="psql globals.sql", timeout=LOAD_TIMEOUT, env=env, strict=False,
        )  # fmt: skip
        report.problems += loaded.refused
        report.warnings += [
            f"globals.sql: {line.split('ERROR:', 1)[1].strip()} (left as it is)"
            for line in loaded.stderr.splitlines()
            if "ERROR:" in line
        ]
    restore_program = _pg_program("pg_restore", bin_dir)
    for db, dump in dumps.items():
        name = plan[db]
        if name == db:  # --create: the database comes back with its owner, encoding, locale
            argv = [restore_program, "--create", "--exit-on-error", "--no-password",
                    "-d", conninfo(maintenance)]  # fmt: skip
        else:
            with psycopg.connect(conninfo(maintenance), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
                )
            argv = [restore_program, "--exit-on-error", "--no-password", "-d", conninfo(name)]
        try:
            with open_dump(dump) as handle:  # the archive on stdin: a file, so seekable
                run_tool(argv, what=f"pg_restore of {dump.name}", timeout=LOAD_TIMEOUT,
                         env=env, stdin=handle)  # fmt: skip
        except ScratchServerError as exc:
            raise RestoreFailed(f"{exc}; database {name} on {where} is incomplete") from None
        report.databases[db] = name
        record = _record(snapshot, db, report)
        if record is not None:
            with psycopg.connect(conninfo(name), autocommit=True) as conn:
                report.problems += verify_postgres(conn, name, record)
    return report


def _record(snapshot: Snapshot, db: str, report: DatabaseRestore) -> dict[str, Any] | None:
    record = recorded_databases(snapshot).get(db)
    if not isinstance(record, dict):
        report.warnings.append(f"the snapshot has no record of database {db}: rows not counted")
        return None
    return record


def _refuse_existing(existing: set[str], plan: dict[str, str], where: str) -> None:
    clash = sorted(name for name in plan.values() if name in existing)
    if clash:
        raise BadInput(
            f"database {', '.join(clash)} already exists on {where}; nothing was restored. "
            "Drop it first, or restore under another name with --as NAME"
        )


# -- MariaDB ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MariadbTarget:
    host: str | None
    port: int | None
    socket: str | None
    user: str | None

    @property
    def where(self) -> str:
        return (
            f"mariadb {self.socket}" if self.socket else f"mariadb {self.host}:{self.port or 3306}"
        )


def _parse_mariadb(dsn: str) -> _MariadbTarget:
    parts = urlsplit(dsn)
    if parts.scheme not in ("mariadb", "mysql"):
        raise BadInput(
            f"--to-database {dsn!r}: a MariaDB snapshot needs mariadb://[user@]host[:port] "
            "or mariadb://[user@]localhost?socket=/run/mysqld/mysqld.sock"
        )
    if parts.password:
        raise BadInput("--to-database: the DSN holds a password; use a 0600 --defaults-file")
    socket = parse_qs(parts.query).get("socket", [None])[0]
    try:
        port = parts.port
    except ValueError:
        raise BadInput(f"--to-database {dsn!r}: the port is not a number") from None
    return _MariadbTarget(
        parts.hostname or "localhost",
        port,
        socket,
        unquote(parts.username) if parts.username else None,
    )


def _mariadb_client(
    target: _MariadbTarget, defaults_file: Path | None
) -> tuple[list[str], dict[str, Any]]:
    """The mariadb client's argv and pymysql's connect arguments for ``target``."""
    client = ["mariadb"]
    connect: dict[str, Any] = {"charset": "utf8mb4", "connect_timeout": CONNECT_TIMEOUT,
                               "autocommit": True}  # fmt: skip
    if defaults_file is not None:
        st = defaults_file.stat() if defaults_file.exists() else None
        if st is None:
            raise BadInput(f"--defaults-file {defaults_file} does not exist")
        if st.st_mode & 0o077:
            raise BadInput(
                f"--defaults-file {defaults_file} holds a password but is open to other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {defaults_file}"
            )
        client.append(f"--defaults-file={defaults_file}")  # must come first
        connect["read_default_file"] = str(defaults_file)
    if target.socket:
        client.append(f"--socket={target.socket}")
        connect["unix_socket"] = target.socket
    else:
        client += [f"--host={target.host}", "--protocol=tcp", f"--port={target.port or 3306}"]
        connect.update(host=target.host, port=target.port or 3306)
    if target.user:
        client.append(f"--user={target.user}")
        connect["user"] = target.user
    client += MARIADB_LOAD_OPTIONS
    return client, connect


def _mariadb(
    restored: Path,
    snapshot: Snapshot,
    dsn: str,
    dumps: dict[str, Path],
    plan: dict[str, str],
    defaults_file: Path | None,
) -> DatabaseRestore:
    target = _parse_mariadb(dsn)
    report = DatabaseRestore("MariaDB", target.where)
    client, connect = _mariadb_client(target, defaults_file)
    try:
        conn = pymysql.connect(**connect)
    except pymysql.MySQLError as exc:
        raise RestoreFailed(f"cannot connect to {target.where}: {exc.args[-1]}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            _refuse_existing({str(r[0]) for r in cur.fetchall()}, plan, target.where)
        for db, dump in dumps.items():
            name = plan[db]
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE {_quote(name)}"
                    " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            try:
                load_sql([*client, "--database", name], dump, what=f"loading {dump.name}",
                         timeout=LOAD_TIMEOUT)  # fmt: skip
            except ScratchServerError as exc:
                raise RestoreFailed(
                    f"{exc}; database {name} on {target.where} is incomplete"
                ) from None
            report.databases[db] = name
            record = _record(snapshot, db, report)
            if record is not None:
                report.problems += verify_mariadb(conn, name, record)
        users = restored / "users.sql"
        if os.path.lexists(users):
            # --force: an account that exists already is reported, the rest still load
            loaded = load_sql([*client, "--force"], users, what="loading users.sql",
                              timeout=LOAD_TIMEOUT, check=False, strict=False)  # fmt: skip
            report.problems += loaded.refused
            report.warnings += [
                f"users.sql: {line.strip()} (left as it is)"
                for line in loaded.stderr.splitlines()
                if line.startswith("ERROR") and not line.startswith("ERROR at line")
            ]
    except DB_ERRORS as exc:
        raise RestoreFailed(f"{target.where}: {' '.join(str(exc).split())}") from None
    finally:
        conn.close()
    return report


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
