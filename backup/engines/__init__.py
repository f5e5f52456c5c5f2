"""Database engines: one module per engine, ``backup/engines/<kind>.py``, for each database
source kind (:func:`portalops.backup.sources.database_kinds`, the one list of them).

An engine module owns everything portal-ops does with that database server: the dump a
source streams into a snapshot, loading dumps into a server (``ops backup restore
--to-database`` and drills), counting rows (recorded at backup, compared after a load),
quoting identifiers, and the throwaway server a drill loads into. The sources, the drills and
the restores call these; none of them speaks a database's language itself. What the engines'
drills share is in :mod:`.drills`, what their restores share in :mod:`.restores`.

:class:`Engine` is the contract each module meets (``tests/unit/test_engines.py`` checks
every listed one). The client libraries (psycopg, pymysql) load with the engine module, so
this registry imports no engine until one is asked for: a host backing up only files never
loads them. The client programs' sandboxing is in :mod:`.clients`, the throwaway servers in
:mod:`.scratch`.

To add an engine: write ``backup/engines/<name>.py`` meeting :class:`Engine` (its throwaway
server may live there too, built on :mod:`portalops.core.procs`), and its source kind
``backup/sources/<name>.py`` (whose model's ``category`` defaults to ``database``, and whose
``produce`` and ``drill`` hand over to ``engine(KIND)``), registered in the source registry:
restores and drills find the engine through it. ``tests/unit/test_engines.py`` checks the
contract by itself; add an integration test against a real server and the kind to
``docs/backup.md``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from portalops.backup.engines.drills import DumpDrill, SmokeQuery
    from portalops.backup.engines.restores import DatabaseRestore
    from portalops.backup.repo.snapshot import Snapshot


class DumpFailed(Exception):
    """A dump failed; the source that ran it turns this into its own failure, naming it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def time_left(deadline: float, timeout: float) -> float:
    """Seconds a dump has left before ``deadline`` (``time.monotonic``), its source's
    ``timeout`` seconds after it started; :class:`DumpFailed` once none are left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DumpFailed(f"did not finish within {timeout:.0f} s")
    return left


def some(names: list[str], limit: int = 20) -> str:
    """A list of names for a message, cut after ``limit``."""
    shown = ", ".join(names[:limit]) or "none"
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown


class StreamCommand(Protocol):
    def __call__(self, name: str, argv: list[str], *, timeout: float, what: str) -> int:
        """Run ``argv`` and store its stdout as file ``name``; return the size."""


@dataclass(frozen=True)
class DumpOutput:
    """Where a dump writes its files: the snapshot being made (a source's sink, whose own
    failures, such as a command that exits non-zero or a timeout, fail the source directly).
    The engines sit below the archive layer, so the source hands them these two."""

    add_stream: Callable[[str, IO[bytes]], int]  # store a stream as a file; its size
    stream_command: StreamCommand  # a command's stdout stored as a file; its size


class Engine(Protocol):
    """What an engine module provides (module-level names)."""

    NAME: str  # the source kind and the key here: "postgres"
    TITLE: str  # in reports: "PostgreSQL"
    SUFFIX: str  # a database's dump in a snapshot is <database><SUFFIX>
    SERVER_FILES: tuple[str, ...]  # the server's own files beside the dumps (accounts, roles)

    def errors(self) -> tuple[type[Exception], ...]:
        """What its client library raises when a server or a query fails."""

    def dump(self, source: Any, out: DumpOutput) -> dict[str, Any]:
        """Dump the databases ``source`` names into ``out``; return the snapshot's stats
        (``{"databases": {db: {"tables": {table: rows}, ...}}, ...}``). Raises
        :class:`DumpFailed`."""

    def count_rows(self, conn: Any, db: str) -> dict[str, int]:
        """Exact rows of every table of database ``db`` that the dump holds."""

    def verify(self, conn: Any, db: str, record: dict[str, Any]) -> list[str]:
        """Problems found comparing database ``db`` on ``conn`` with its backup record."""

    def quote(self, name: str) -> str:
        """``name`` as an SQL identifier of this engine."""

    def load(self, server: Any, dump: Path, name: str) -> None:
        """Load ``dump`` into the (existing) database ``name`` of ``server``."""

    def restore(
        self,
        restored: Path,
        snapshot: Snapshot,
        dsn: str,
        dumps: dict[str, Path],
        plan: dict[str, str],
        *,
        defaults_file: Path | None = None,
        bin_dir: Path | None = None,
    ) -> DatabaseRestore:
        """Load ``dumps`` (database in the backup -> its file in ``restored``) into the
        server ``dsn`` under the names ``plan`` gives, nothing existing overwritten, and
        count each against the snapshot's record (``ops backup restore --to-database``)."""

    def throwaway(
        self, scratch_dir: Path | None, run_as: str, bin_dir: Path | None = None
    ) -> AbstractContextManager[Any]:
        """A fresh server in scratch space, stopped and deleted on exit."""

    def drill(
        self,
        queries: list[SmokeQuery],
        *,
        scratch_dir: Path | None,
        run_as: str,
        bin_dir: Path | None = None,
        source_bin_dir: Path | None = None,
        dsn: str | None = None,
    ) -> DumpDrill:
        """The drill that loads this engine's dumps into its throwaway server (or, where the
        engine can, into the scratch server ``dsn``) and checks them."""


def engine(name: str) -> Engine:
    """The engine module ``name``, imported now (with its client library)."""
    if not name.isidentifier():
        raise LookupError(f"no database engine {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise  # the engine is there; something it imports is not
        raise LookupError(f"no database engine {name!r}") from None
    return cast(Engine, module)
