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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portalops.backup.engines import mariadb, postgres
from portalops.backup.engines.clients import load_sql
from portalops.backup.engines.drills import LOAD_TIMEOUT, db_name, recorded_databases
from portalops.backup.engines.scratch import ScratchServerError
from portalops.backup.repo.snapshot import Snapshot
from portalops.core.errors import BadInput, ExitCode, OpsError


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
    if any(restored.glob(f"*{postgres.SUFFIX}")):
        return postgres.NAME
    if any(p.name != mariadb.USERS for p in restored.glob(f"*{mariadb.SUFFIX}")):
        return mariadb.NAME
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
    suffix = postgres.SUFFIX if engine == postgres.NAME else mariadb.SUFFIX
    dumps = {
        db_name(p, suffix): p
        for p in sorted(restored.glob(f"*{suffix}"))
        if p.name != mariadb.USERS
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
    if engine == postgres.NAME:
        return _postgres(restored, snapshot, dsn, chosen, plan, pg_bin_dir)
    return _mariadb(restored, snapshot, dsn, chosen, plan, defaults_file)


# -- PostgreSQL ------------------------------------------------------------------------------


def _postgres(
    restored: Path,
    snapshot: Snapshot,
    dsn: str,
    dumps: dict[str, Path],
    plan: dict[str, str],
    bin_dir: Path | None,
) -> DatabaseRestore:
    params = postgres.parse_dsn(dsn, "--to-database")
    params.setdefault("connect_timeout", postgres.CONNECT_TIMEOUT)
    where = f"postgres {params.get('host') or 'local socket'}:{params.get('port') or 5432}"
    report = DatabaseRestore(postgres.TITLE, where)
    server = postgres.Server(
        params,
        postgres.client_env(("PGPASSFILE", "PGPASSWORD")),
        lambda name: postgres.program(name, bin_dir),
    )
    try:
        with server.connect(server.maintenance) as conn:
            existing = postgres.databases(conn)
    except postgres.errors() as exc:
        raise RestoreFailed(f"cannot connect to {where}: {' '.join(str(exc).split())}") from None
    _refuse_existing(existing, plan, where)
    globals_sql = restored / "globals.sql"
    if os.path.lexists(globals_sql):
        loaded = load_sql(postgres.globals_client(server), globals_sql, what="psql globals.sql",
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
            postgres.create_database(server, name)
        try:
            postgres.load(server, dump, name, create=create)
        except ScratchServerError as exc:
            raise RestoreFailed(f"{exc}; database {name} on {where} is incomplete") from None
        report.databases[db] = name
        record = _record(snapshot, db, report)
        if record is not None:
            with server.connect(name) as conn:
                report.problems += postgres.verify(conn, name, record)
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


def _mariadb(
    restored: Path,
    snapshot: Snapshot,
    dsn: str,
    dumps: dict[str, Path],
    plan: dict[str, str],
    defaults_file: Path | None,
) -> DatabaseRestore:
    server = mariadb.parse_dsn(dsn, defaults_file)
    report = DatabaseRestore(mariadb.TITLE, server.where)
    try:
        conn = server.connect()
    except mariadb.errors() as exc:
        raise RestoreFailed(f"cannot connect to {server.where}: {exc.args[-1]}") from None
    try:
        _refuse_existing(mariadb.databases(conn), plan, server.where)
        for db, dump in dumps.items():
            name = plan[db]
            mariadb.create_database(conn, name)
            try:
                mariadb.load(server, dump, name)
            except ScratchServerError as exc:
                raise RestoreFailed(
                    f"{exc}; database {name} on {server.where} is incomplete"
                ) from None
            report.databases[db] = name
            record = _record(snapshot, db, report)
            if record is not None:
                report.problems += mariadb.verify(conn, name, record)
        users = restored / mariadb.USERS
        if os.path.lexists(users):
            # an account that exists already is reported, the rest still load
            loaded = mariadb.load_users(server, users, keep_going=True)
            report.problems += loaded.refused
            report.warnings += [
                f"users.sql: {line.strip()} (left as it is)"
                for line in loaded.stderr.splitlines()
                if line.startswith("ERROR") and not line.startswith("ERROR at line")
            ]
    except (*postgres.errors(), *mariadb.errors()) as exc:
        raise RestoreFailed(f"{server.where}: {' '.join(str(exc).split())}") from None
    finally:
        conn.close()
    return report
