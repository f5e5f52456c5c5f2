"""``kind: mariadb``: ``mariadb-dump --single-transaction`` of each database, streamed, with
exact row counts of every table.

``databases: all`` means every database the account can see except the server's own:
``information_schema``, ``performance_schema`` and ``sys`` are views of the running server,
and ``mysql`` holds accounts and server state that do not restore into another server as
tables; the accounts and grants come as ``users.sql`` instead (``mariadb-dump
--system=users``, portable CREATE USER / GRANT statements). Name ``mysql`` explicitly to get
the raw tables too.

Row counts and dump from one snapshot
-------------------------------------
mariadb-dump takes its own snapshot and MariaDB cannot share one between sessions. Counts
taken in a snapshot of our own (``START TRANSACTION WITH CONSISTENT SNAPSHOT``) are exact and
consistent with each other, but on a busy table they differ from the dump by whatever was
committed between the two snapshots, and a drill comparing them could not tell a lost row
from a late insert. So, per database, the two snapshots are taken with no commit between them:

1. ``BACKUP STAGE START`` + ``BACKUP STAGE BLOCK_COMMIT``: commits wait, nothing else does;
2. our ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and the list of tables;
3. mariadb-dump starts; its ``--verbose`` stderr says "-- Starting transaction..." and the
   next line comes once its snapshot exists;
4. ``BACKUP STAGE END``, then the dump streams while the counts run in our snapshot.

Both snapshots then hold the same commits. The price: the portal's commits wait for as long
as mariadb-dump takes to start and connect, milliseconds locally, never more than
``COMMIT_BLOCK_LIMIT``. FLUSH TABLES WITH READ LOCK would do the same job worse: it waits for
every running query, long reports included, while all writers queue behind it. Without the
RELOAD privilege, on a server before 10.4, when another backup holds the backup lock, past
the limit, or with ``consistent_counts: false``, the counts come from their own snapshot,
taken just before the dump's, and ``consistent_with_dump`` in the stats says false.
Non-transactional tables (MyISAM, Aria) are in no snapshot at all: quiet ones only.
"""

from __future__ import annotations

import collections
import configparser
import contextlib
import os
import shutil
import stat
import subprocess
import threading
import time
from typing import IO, Any

from portalops.backup.archive.streams import STDERR_TAIL_LINES, Sink, SourceFailed, stream_command
from portalops.backup.config import MariadbSource

_IMPORT_ERROR: ImportError | None = None
try:
    import pymysql
    from pymysql.connections import Connection
except ImportError as exc:  # a host without the client library: said when the source runs
    _IMPORT_ERROR = exc

SYSTEM_DATABASES = frozenset({"information_schema", "performance_schema", "sys", "mysql"})
# Engines whose rows mariadb-dump leaves out (MED_ENGINES and S3 in mysqldump.c) or keeps
# elsewhere: counting them would be meaningless, and on FEDERATED/SPIDER a remote scan.
NO_DATA_ENGINES = (
    "MRG_MyISAM",
    "MRG_ISAM",
    "CONNECT",
    "OQGRAPH",
    "SPIDER",
    "VP",
    "FEDERATED",
    "S3",
)
COMMIT_BLOCK_LIMIT = 5.0  # seconds the portal's commits may wait for mariadb-dump to start
LOCK_WAIT = 5  # seconds to wait for the backup lock (another backup holding it)
CONNECT_TIMEOUT = 30
DUMP_OPTIONS = (
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--skip-dump-date",  # an unchanged database gives an identical dump: nothing to store
)
_SERVER_ERROR_MAX = 1999  # PyMySQL error codes above are client-side (connection lost, ...)


def produce(source: MariadbSource, sink: Sink) -> dict[str, Any]:
    """Dump ``<db>.sql`` per database and ``users.sql``; return the server version and exact
    row counts per database and table, from the dump's snapshot where possible."""
    if _IMPORT_ERROR is not None:
        raise SourceFailed(
            source.name,
            f"the Python package PyMySQL is missing ({_IMPORT_ERROR}); "
            "install it with pip install PyMySQL",
        )
    deadline = time.monotonic() + source.timeout
    _check_option_file(source)
    client = _client_options(source)
    dump = shutil.which("mariadb-dump") or "mysqldump"
    conn = _connect(source)
    try:
        try:
            version = str(_scalar(conn, "SELECT VERSION()"))
            databases = _databases(conn, source)
            # the backup lock must not be waited for long: another backup may hold it
            _execute(conn, f"SET SESSION lock_wait_timeout = {LOCK_WAIT}")
        except pymysql.MySQLError as exc:
            raise SourceFailed(source.name, f"{_where(source)}: {_message(exc)}") from None
        stats = {
            db: _dump_database(source, sink, conn, [dump, *client], db, deadline)
            for db in databases
        }
    finally:
        _close(conn)
    if source.users:
        stream_command(
            sink,
            "users.sql",
            [dump, *client, "--system=users", "--skip-dump-date"],
            timeout=_remaining(source, deadline),
            what="mariadb-dump --system=users",
        )
    return {"server_version": version, "databases": stats}


def _check_option_file(source: MariadbSource) -> None:
    path = source.defaults_file
    if path is None:
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceFailed(source.name, f"option file {path} does not exist") from None
    except OSError as exc:
        raise SourceFailed(source.name, f"cannot read option file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceFailed(source.name, f"option file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise SourceFailed(
            source.name,
            f"option file {path} holds a password but is open to other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}",
        )
    if not os.access(path, os.R_OK):
        raise SourceFailed(source.name, f"cannot read option file {path}: permission denied")


def _client_options(source: MariadbSource) -> list[str]:
    """Options both mariadb-dump runs get. The option file must come first."""
    options = [f"--defaults-extra-file={source.defaults_file}"] if source.defaults_file else []
    if source.socket:
        options += [f"--socket={source.socket}", "--protocol=socket"]
    else:
        options += [f"--host={source.host}", f"--port={source.port}", "--protocol=tcp"]
    if source.user:
        options.append(f"--user={source.user}")
    return options


def _where(source: MariadbSource) -> str:
    return f"mariadb {source.socket}" if source.socket else f"mariadb {source.host}:{source.port}"


def _connect(source: MariadbSource, read_timeout: float | None = None) -> Connection[Any]:
    args: dict[str, Any] = {
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": read_timeout,
    }
    if source.socket:
        args["unix_socket"] = str(source.socket)
    else:
        args["host"], args["port"] = source.host, source.port
    if source.user:
        args["user"] = source.user
    if source.defaults_file:
        args["read_default_file"] = str(source.defaults_file)
    try:
        return pymysql.connect(**args)
    except configparser.Error:
        # the parser's own message quotes the offending line, which may be the password
        raise SourceFailed(
            source.name,
            f"cannot parse option file {source.defaults_file}: expected a [client] section "
            "of key=value lines",
        ) from None
    except pymysql.MySQLError as exc:
        raise SourceFailed(
            source.name, f"cannot connect to {_where(source)}: {_message(exc)}"
        ) from None


def _databases(conn: Connection[Any], source: MariadbSource) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        visible = [str(row[0]) for row in cur.fetchall()]
    if source.databases == "all":
        return [db for db in visible if db.lower() not in SYSTEM_DATABASES]
    for db in source.databases:
        if db not in visible:
            raise SourceFailed(
                source.name,
                f"database {db!r} does not exist on {_where(source)}, or this account may not "
                f"see it (it sees: {_some(visible)})",
            )
    return list(source.databases)


def _dump_database(
    source: MariadbSource,
    sink: Sink,
    conn: Connection[Any],
    dump: list[str],
    db: str,
    deadline: float,
) -> dict[str, Any]:
    budget = _remaining(source, deadline)
    snap = _connect(source, read_timeout=budget)
    try:
        try:
            _prepare_snapshot_session(snap, budget)
            counter = _Counter(snap, db, deadline)
            proc, counter.tables, consistent = _start_dump(source, conn, snap, dump, db)
        except pymysql.MySQLError as exc:
            raise SourceFailed(source.name, f"database {db!r}: {_message(exc)}") from None
        counter.start()
        try:
            proc.stream(sink, _file_name(db, ".sql"), _remaining(source, deadline))
            counts = counter.result(source, _remaining(source, deadline))
        finally:
            proc.kill()  # a no-op unless something above failed
            if counter.is_alive():
                counter.cancel(conn)
    finally:
        _close(snap)
    return {"tables": counts, "consistent_with_dump": consistent}


def _start_dump(
    source: MariadbSource,
    conn: Connection[Any],
    snap: Connection[Any],
    dump: list[str],
    db: str,
) -> tuple[_DumpProcess, list[str], bool]:
    """Our snapshot, then mariadb-dump's, with no commit between them if we may."""
    blocked = source.consistent_counts and _block_commits(conn)
    try:
        _execute(snap, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        tables = list_tables(snap, db)
        proc = _DumpProcess(source.name, [*dump, *DUMP_OPTIONS, "--verbose", "--", db], db)
        consistent = blocked and proc.snapshot_taken.wait(COMMIT_BLOCK_LIMIT)
    finally:
        if blocked:
            _unblock_commits(conn)
    return proc, tables, consistent


def _prepare_snapshot_session(snap: Connection[Any], budget: float) -> None:
    # Idle while the dump streams, then busy counting: neither the server's idle limits
    # (meant for applications) nor its statement limit may end the snapshot early, but
    # nothing may run past the source's timeout either.
    seconds = int(budget) + 1
    _execute(snap, f"SET SESSION wait_timeout = {min(seconds + 60, 31536000)}")
    _execute(snap, f"SET SESSION max_statement_time = {seconds}")
    _execute(snap, "SET SESSION idle_transaction_timeout = 0")
    _execute(snap, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def _block_commits(conn: Connection[Any]) -> bool:
    """Hold the portal's commits; False when this server or account cannot."""
    try:
        _execute(conn, "BACKUP STAGE START")
        _execute(conn, "BACKUP STAGE BLOCK_COMMIT")
    except pymysql.MySQLError as exc:
        if not _server_said_no(exc):
            raise
        try:
            _execute(conn, "BACKUP STAGE END")
        except pymysql.MySQLError as end_exc:
            if not _server_said_no(end_exc):
                raise
        return False
    return True


def _unblock_commits(conn: Connection[Any]) -> None:
    # if this fails the connection is gone, and the server ended the stage with it
    try:
        _execute(conn, "BACKUP STAGE END")
    except pymysql.MySQLError:
        _close(conn)


def _server_said_no(exc: pymysql.MySQLError) -> bool:
    """No RELOAD privilege, a server before 10.4, the backup lock taken: not a lost link."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    return 0 < code <= _SERVER_ERROR_MAX


def list_tables(snap: Connection[Any], db: str) -> list[str]:
    with snap.cursor() as cur:
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')"
            " AND (ENGINE IS NULL OR ENGINE NOT IN %s) ORDER BY TABLE_NAME",
            (db, NO_DATA_ENGINES),
        )
        return [str(row[0]) for row in cur.fetchall()]


class _Counter(threading.Thread):
    """Counts rows in our snapshot while the dump streams: a dump left waiting on its pipe
    would hit the server's net_write_timeout."""

    def __init__(self, snap: Connection[Any], db: str, deadline: float):
        super().__init__(daemon=True, name=f"count {db}")
        self.snap, self.db, self.deadline = snap, db, deadline
        self.tables: list[str] = []
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        self.connection_id = int(_scalar(snap, "SELECT CONNECTION_ID()"))

    def run(self) -> None:
        try:
            with self.snap.cursor() as cur:
                for table in self.tables:
                    if self._cancelled.is_set():
                        return
                    if time.monotonic() > self.deadline:
                        raise TimeoutError
                    # identifiers cannot be parameters; _quote makes them safe
                    query = f"SELECT COUNT(*) FROM {_quote(self.db)}.{_quote(table)}"  # noqa: S608
                    cur.execute(query)
                    row = cur.fetchone()
                    self.counts[table] = int(row[0]) if row else 0
            _execute(self.snap, "COMMIT")
        except BaseException as exc:  # handed to the main thread by result()
            self.error = exc

    def result(self, source: MariadbSource, timeout: float) -> dict[str, int]:
        self.join(timeout)
        if self.is_alive() or isinstance(self.error, TimeoutError):
            raise SourceFailed(
                source.name,
                f"database {self.db!r}: counting rows did not finish within {source.timeout:.0f} s",
            )
        if isinstance(self.error, pymysql.MySQLError):
            raise SourceFailed(
                source.name, f"database {self.db!r}: counting rows: {_message(self.error)}"
            )
        if self.error is not None:
            raise self.error
        return self.counts

    def cancel(self, conn: Connection[Any]) -> None:
        """Stop counting: the dump failed, the source fails anyway."""
        self._cancelled.set()
        # fails when the server is gone or the count just ended: either way it stops
        with contextlib.suppress(pymysql.MySQLError):
            _execute(conn, f"KILL QUERY {self.connection_id}")
        self.join(timeout=10)


class _DumpProcess:
    """mariadb-dump with its stdout streamed into the sink and its stderr watched: the line
    after "-- Starting transaction..." means its snapshot exists."""

    def __init__(self, source: str, argv: list[str], db: str) -> None:
        self.source, self.db = source, db
        self.what = f"mariadb-dump of database {db!r}"
        self.snapshot_taken = threading.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise SourceFailed(
                source, f"{argv[0]} not found; install the mariadb-client package"
            ) from None
        except OSError as exc:
            raise SourceFailed(source, f"cannot start {argv[0]}: {exc.strerror}") from None
        if self.proc.stdout is None or self.proc.stderr is None:  # pragma: no cover
            raise SourceFailed(source, f"cannot read the output of {argv[0]}")
        self.stdout: IO[bytes] = self.proc.stdout
        self._stderr = threading.Thread(
            target=self._watch, args=(self.proc.stderr,), daemon=True, name="stderr"
        )
        self._stderr.start()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _watch(self, pipe: IO[bytes]) -> None:
        starting = False
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").strip()
                if starting:
                    self.snapshot_taken.set()
                starting = starting or line.startswith("-- Starting transaction")
                verbose = line.startswith("-- ") and not line.startswith(("-- Warning", "-- Error"))
                if line and not verbose:
                    self.tail.append(line)
        # it exited: everything it read, it read before this point
        self.snapshot_taken.set()

    def stream(self, sink: Sink, name: str, timeout: float) -> int:
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            self.proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            size = sink.add_stream(name, self.stdout)
        except BaseException:
            self.proc.kill()
            raise
        finally:
            timer.cancel()
            self.stdout.close()
        code = self.proc.wait()
        self._stderr.join(timeout=10)
        stderr = " | ".join(self.tail) or "(nothing on stderr)"
        if timed_out.is_set():
            raise SourceFailed(
                self.source, f"{self.what} did not finish within {timeout:.0f} s: {stderr}"
            )
        if code < 0:
            raise SourceFailed(self.source, f"{self.what} was killed by signal {-code}: {stderr}")
        if code != 0:
            raise SourceFailed(self.source, f"{self.what} exited with status {code}: {stderr}")
        if size == 0:
            raise SourceFailed(self.source, f"{self.what} printed nothing: {stderr}")
        return size


def _close(conn: Connection[Any]) -> None:
    # PyMySQL raises on closing a closed connection; a lost one is closed all the same
    with contextlib.suppress(pymysql.MySQLError):
        conn.close()


def _execute(conn: Connection[Any], query: str) -> None:
    with conn.cursor() as cur:
        cur.execute(query)


def _scalar(conn: Connection[Any], query: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    return None if row is None else row[0]


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _file_name(db: str, suffix: str) -> str:
    """The snapshot file for database ``db``: '/' cannot be in a file name, '%' escapes it."""
    return db.replace("%", "%25").replace("/", "%2F") + suffix


def _remaining(source: MariadbSource, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise SourceFailed(source.name, f"did not finish within {source.timeout:.0f} s")
    return left


def _some(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown


def _message(exc: BaseException) -> str:
    # PyMySQL errors are (code, message); the message never holds the password
    if len(exc.args) == 2 and isinstance(exc.args[0], int):
        return f"{' '.join(str(exc.args[1]).split())} (error {exc.args[0]})"
    return " ".join(str(exc).split()) or type(exc).__name__
