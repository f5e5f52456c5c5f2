"""``ops backup restore … --to-database DSN``: a database snapshot straight into a server.

For the day it is needed for real: a new server after a loss, the dumps of one snapshot loaded
into it, then every table counted against the record the backup kept. Nothing is overwritten:
a database that already exists on the server stops the restore before anything is loaded
(restore under another name with ``--as``, or drop it first).

Which engine, from the files: the first database kind
(:func:`portalops.backup.sources.database_kinds`) whose dump suffix they have (``*.dump``
PostgreSQL, ``*.sql`` MariaDB). This module picks the databases (``--database``, ``--as``); the
engine's ``restore`` loads them (the DSN each takes, roles and accounts, what is reported:
:func:`portalops.backup.engines.postgres.restore`,
:func:`portalops.backup.engines.mariadb.restore`).

The dumps come from a backup host, which may be hostile. The clients run as ``ops`` (they need
its credentials) but refuse every client-side command a dump holds
(:mod:`portalops.backup.engines.clients`: psql in restricted mode, mariadb in binary and sandbox
mode, no local files); each refusal is a problem of the restore (exit 1). Loading a dump still
runs its SQL on the server with the rights of the account restoring it: as a superuser, a forged
dump can do what a superuser can (``COPY … TO PROGRAM`` runs commands as the database server's
user)."""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from portalops.backup.engines import Engine, engine
from portalops.backup.engines.drills import db_name
from portalops.backup.engines.restores import DatabaseRestore, RestoreFailed
from portalops.backup.repo.repository import Repository
from portalops.backup.repo.snapshot import Snapshot
from portalops.backup.restore.files import RestoreResult, restore
from portalops.backup.sources import database_kinds
from portalops.core.errors import BadInput, ExitCode, OpsError

__all__ = ["DatabaseRestore", "NotADump", "RestoreFailed", "engine_of", "restore_to_database"]


class NotADump(OpsError):
    """snapshot {}: not regular files: {} (a database snapshot holds only dumps); nothing loaded"""

    exit_code = ExitCode.PROBLEM_FOUND


def engine_of(restored: Path) -> Engine:
    """The engine whose dumps a database snapshot's files are, from their names."""
    for name in database_kinds():
        candidate = engine(name)
        if any(p.name not in candidate.SERVER_FILES for p in dumps_of(candidate, restored)):
            return candidate
    kinds = " or ".join(f"*{engine(name).SUFFIX}" for name in database_kinds())
    raise BadInput(f"the snapshot holds no database dump ({kinds}): it is not a database source's")


def dumps_of(candidate: Engine, restored: Path) -> list[Path]:
    return sorted(restored.glob(f"*{candidate.SUFFIX}"))


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
    dumps_engine = engine_of(restored)  # first: a files snapshot is told it is not a database's
    # The restore put every entry inside ``restored``; a symlink among them could still send
    # a tool reading a dump to a file of this host. A database snapshot holds regular files.
    links = sorted(p.name for p in restored.iterdir() if not stat.S_ISREG(p.lstat().st_mode))
    if links:
        raise NotADump(snapshot.source, ", ".join(links))
    dumps = {
        db_name(p, dumps_engine.SUFFIX): p
        for p in dumps_of(dumps_engine, restored)
        if p.name not in dumps_engine.SERVER_FILES
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
    return dumps_engine.restore(
        restored, snapshot, dsn, chosen, plan, defaults_file=defaults_file, bin_dir=pg_bin_dir
    )


def restore_snapshot_to_database(
    repo: Repository,
    snapshot: Snapshot,
    dsn: str,
    *,
    scratch: Path | None,
    includes: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    name: str | None = None,
    only: list[str] | None = None,
    rename: str | None = None,
    defaults_file: Path | None = None,
    pg_bin_dir: Path | None = None,
) -> tuple[RestoreResult, DatabaseRestore]:
    """Restore ``snapshot``'s files into a temporary directory under ``scratch`` (the system's
    temp dir if None), load its dumps into ``dsn``, and remove the files again."""
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="portal-ops-restore-", dir=scratch) as tmp:
        files = restore(repo, snapshot, Path(tmp), includes, progress, name=name)
        report = restore_to_database(
            Path(tmp), snapshot, dsn, only=only, rename=rename, defaults_file=defaults_file,
            pg_bin_dir=pg_bin_dir,
        )  # fmt: skip
    return files, report
