"""MariaDB: how portal-ops dumps, loads, counts and quotes, and its throwaway server.

Dump (the ``mariadb`` source): ``mariadb-dump --single-transaction`` of each database,
streamed, with exact row counts of every table.

``databases: all`` leaves out the server's own databases (:data:`SYSTEM_DATABASES`; the
``mariadb`` source kind says why); the accounts and grants come as ``users.sql``
(``mariadb-dump --system=users``, portable CREATE USER / GRANT statements).

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

Load (``ops backup restore --to-database`` and drills): each database created (utf8mb4) and
its ``*.sql`` fed to the mariadb client in binary and sandbox mode
(:mod:`portalops.backup.engines.clients`); ``users.sql`` last.

PyMySQL is imported here only: a host backing up files never loads this module.
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
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from portalops.backup.engines import DumpFailed, DumpOutput, some, time_left
from portalops.backup.engines.clients import MARIADB_LOAD_OPTIONS, Loaded, load_sql
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
    MY_ADMIN,
    MariadbScratch,
    ScratchServerError,
    as_user,
    throwaway_mariadb,
)
from portalops.backup.repo.snapshot import Snapshot
from portalops.core.errors import BadInput

_IMPORT_ERROR: ImportError | None = None
try:
    import pymysql
    from pymysql.connections import Connection
    from pymysql.cursors import Cursor
except ImportError as exc:  # a host without the client library: said when the source runs
    _IMPORT_ERROR = exc

NAME = "mariadb"
TITLE = "MariaDB"
SUFFIX = ".sql"  # <database>.sql, plus users.sql
USERS = "users.sql"  # the accounts and grants, beside the databases' dumps
SERVER_FILES: tuple[str, ...] = (USERS,)  # files with SUFFIX that are not a database's dump
STDERR_TAIL_LINES = 12  # of mariadb-dump's stderr, in a failure (as of any streamed command)

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


def errors() -> tuple[type[Exception], ...]:
    """What a failing server or query raises through this engine's client library."""
    return (pymysql.MySQLError,) if _IMPORT_ERROR is None else ()


def quote(name: str) -> str:
    """``name`` as an SQL identifier: backquoted, a backquote doubled."""
    return "`" + name.replace("`", "``") + "`"


# -- dump ------------------------------------------------------------------------------------


class DumpOptions(Protocol):
    """What a dump needs of its source (the ``mariadb`` source model has it)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def socket(self) -> Path | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def defaults_file(self) -> Path | None: ...
    @property
    def databases(self) -> list[str] | Literal["all"]: ...
    @property
    def timeout(self) -> float: ...
    @property
    def consistent_counts(self) -> bool: ...
    @property
    def users(self) -> bool: ...


def dump(source: DumpOptions, out: DumpOutput) -> dict[str, Any]:
    """Dump ``<db>.sql`` per database and ``users.sql``; return the server version and exact
    row counts per database and table, from the dump's snapshot where possible."""
    if _IMPORT_ERROR is not None:
        raise DumpFailed(
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
            raise DumpFailed(f"{_where(source)}: {_message(exc)}") from None
        stats = {
            db: _dump_database(source, out, conn, [dump, *client], db, deadline) for db in databases
        }
    finally:
        _close(conn)
    if source.users:
        out.stream_command(
            "users.sql",
            [dump, *client, "--system=users", "--skip-dump-date"],
            timeout=time_left(deadline, source.timeout),
            what="mariadb-dump --system=users",
        )
    return {"server_version": version, "databases": stats}


def _check_option_file(source: DumpOptions) -> None:
    path = source.defaults_file
    if path is None:
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DumpFailed(f"option file {path} does not exist") from None
    except OSError as exc:
        raise DumpFailed(f"cannot read option file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DumpFailed(f"option file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise DumpFailed(
            f"option file {path} holds a password but is open to other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}",
        )
    if not os.access(path, os.R_OK):
        raise DumpFailed(f"cannot read option file {path}: permission denied")


def _client_options(source: DumpOptions) -> list[str]:
    """Options both mariadb-dump runs get. The option file must come first."""
    options = [f"--defaults-extra-file={source.defaults_file}"] if source.defaults_file else []
    if source.socket:
        options += [f"--socket={source.socket}", "--protocol=socket"]
    else:
        options += [f"--host={source.host}", f"--port={source.port}", "--protocol=tcp"]
    if source.user:
        options.append(f"--user={source.user}")
    return options


def _where(source: DumpOptions) -> str:
    return f"mariadb {source.socket}" if source.socket else f"mariadb {source.host}:{source.port}"


def _connect(source: DumpOptions, read_timeout: float | None = None) -> Connection[Any]:
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
        raise DumpFailed(
            f"cannot parse option file {source.defaults_file}: expected a [client] section "
            "of key=value lines",
        ) from None
    except pymysql.MySQLError as exc:
        raise DumpFailed(f"cannot connect to {_where(source)}: {_message(exc)}") from None


def _databases(conn: Connection[Any], source: DumpOptions) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        visible = [str(row[0]) for row in cur.fetchall()]
    if source.databases == "all":
        return [db for db in visible if db.lower() not in SYSTEM_DATABASES]
    for db in source.databases:
        if db not in visible:
            raise DumpFailed(
                f"database {db!r} does not exist on {_where(source)}, or this account may not "
                f"see it (it sees: {some(visible)})",
            )
    return list(source.databases)


def _dump_database(
    source: DumpOptions,
    out: DumpOutput,
    conn: Connection[Any],
    dump: list[str],
    db: str,
    deadline: float,
) -> dict[str, Any]:
    budget = time_left(deadline, source.timeout)
    snap = _connect(source, read_timeout=budget)
    try:
        try:
            _prepare_snapshot_session(snap, budget)
            counter = _Counter(snap, db, deadline)
            proc, counter.tables, consistent = _start_dump(source, conn, snap, dump, db)
        except pymysql.MySQLError as exc:
            raise DumpFailed(f"database {db!r}: {_message(exc)}") from None
        counter.start()
        try:
            proc.stream(out, file_name(db, SUFFIX), time_left(deadline, source.timeout))
            counts = counter.result(source, time_left(deadline, source.timeout))
        finally:
            proc.kill()  # a no-op unless something above failed
            if counter.is_alive():
                counter.cancel(conn)
    finally:
        _close(snap)
    return {"tables": counts, "consistent_with_dump": consistent}


def _start_dump(
    source: DumpOptions,
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
        proc = _DumpProcess([*dump, *DUMP_OPTIONS, "--verbose", "--", db], db)
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


def count_table(cur: Cursor, db: str, table: str) -> int:
    # identifiers cannot be parameters; quote makes them safe
    cur.execute(f"SELECT COUNT(*) FROM {quote(db)}.{quote(table)}")  # noqa: S608
    row = cur.fetchone()
    return int(row[0]) if row else 0


def count_rows(conn: Connection[Any], db: str) -> dict[str, int]:
    """Exact rows of every table of ``db`` that mariadb-dump writes, as ``{table: rows}``."""
    with conn.cursor() as cur:
        return {table: count_table(cur, db, table) for table in list_tables(conn, db)}


def verify(conn: Connection[Any], db: str, record: dict[str, Any]) -> list[str]:
    """Tables and row counts of database ``db`` against ``record`` (its stats entry)."""
    return compare(db, count_rows(conn, db), dict(record.get("tables", {})))


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
                    self.counts[table] = count_table(cur, self.db, table)
            _execute(self.snap, "COMMIT")
        except BaseException as exc:  # handed to the main thread by result()
            self.error = exc

    def result(self, source: DumpOptions, timeout: float) -> dict[str, int]:
        self.join(timeout)
        if self.is_alive() or isinstance(self.error, TimeoutError):
            raise DumpFailed(
                f"database {self.db!r}: counting rows did not finish within {source.timeout:.0f} s",
            )
        if isinstance(self.error, pymysql.MySQLError):
            raise DumpFailed(f"database {self.db!r}: counting rows: {_message(self.error)}")
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

    def __init__(self, argv: list[str], db: str) -> None:
        self.db = db
        self.what = f"mariadb-dump of database {db!r}"
        self.snapshot_taken = threading.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise DumpFailed(f"{argv[0]} not found; install the mariadb-client package") from None
        except OSError as exc:
            raise DumpFailed(f"cannot start {argv[0]}: {exc.strerror}") from None
        if self.proc.stdout is None or self.proc.stderr is None:  # pragma: no cover
            raise DumpFailed(f"cannot read the output of {argv[0]}")
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

    def stream(self, out: DumpOutput, name: str, timeout: float) -> int:
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            self.proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            size = out.add_stream(name, self.stdout)
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
            raise DumpFailed(f"{self.what} did not finish within {timeout:.0f} s: {stderr}")
        if code < 0:
            raise DumpFailed(f"{self.what} was killed by signal {-code}: {stderr}")
        if code != 0:
            raise DumpFailed(f"{self.what} exited with status {code}: {stderr}")
        if size == 0:
            raise DumpFailed(f"{self.what} printed nothing: {stderr}")
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


def _message(exc: BaseException) -> str:
    # PyMySQL errors are (code, message); the message never holds the password
    if len(exc.args) == 2 and isinstance(exc.args[0], int):
        return f"{' '.join(str(exc.args[1]).split())} (error {exc.args[0]})"
    return " ".join(str(exc).split()) or type(exc).__name__


# -- load ------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server to load dumps into: the mariadb client's argv (connection options first, the
    sandboxing options last), PyMySQL's connect arguments, and who runs the client."""

    client: list[str]
    connect_args: dict[str, Any]
    env: dict[str, str] | None = None
    run_as: str | None = None  # a throwaway server's client runs as the drill user
    where: str = "mariadb"

    def connect(self, db: str | None = None) -> Connection[Any]:
        args = dict(self.connect_args)
        if db is not None:
            args["database"] = db
        return pymysql.connect(**args)

    def command(self, *extra: str) -> list[str]:
        argv = [*self.client, *extra]
        return argv if self.run_as is None else as_user(argv, self.run_as)


def parse_dsn(dsn: str, defaults_file: Path | None) -> Server:
    """The server ``mariadb://[user@]host[:port]`` or ``mariadb://[user@]localhost
    ?socket=PATH`` names, its password in the 0600 option file ``defaults_file``."""
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
    host = parts.hostname or "localhost"
    user = unquote(parts.username) if parts.username else None
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
    if socket:
        client.append(f"--socket={socket}")
        connect["unix_socket"] = socket
    else:
        client += [f"--host={host}", "--protocol=tcp", f"--port={port or 3306}"]
        connect.update(host=host, port=port or 3306)
    if user:
        client.append(f"--user={user}")
        connect["user"] = user
    client += MARIADB_LOAD_OPTIONS
    where = f"mariadb {socket}" if socket else f"mariadb {host}:{port or 3306}"
    return Server(client, connect, where=where)


def databases(conn: Connection[Any]) -> set[str]:
    """Every database the account sees: the names a load must not take."""
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        return {str(r[0]) for r in cur.fetchall()}


def create_database(conn: Connection[Any], name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE DATABASE {quote(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )


def load(server: Server, dump: Path, name: str) -> None:
    """``dump`` fed to the mariadb client into database ``name`` (which exists), every client
    command in it refused; :class:`ScratchServerError` when it fails."""
    load_sql(server.command("--database", name), dump, what=f"loading {dump.name}",
             timeout=LOAD_TIMEOUT, env=server.env)  # fmt: skip


def load_users(server: Server, path: Path, *, keep_going: bool = False) -> Loaded:
    """``users.sql``: with ``keep_going`` an account that exists already is an error the
    caller reports, and the rest still load."""
    if keep_going:
        argv = server.command("--force")
        return load_sql(argv, path, what="loading users.sql", timeout=LOAD_TIMEOUT,
                        env=server.env, check=False, strict=False)  # fmt: skip
    return load_sql(server.command(), path, what="loading users.sql", timeout=LOAD_TIMEOUT,
                    env=server.env)  # fmt: skip


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
    """Load ``dumps`` into the server ``dsn`` (``mariadb://[user@]host[:port]`` or
    ``mariadb://[user@]localhost?socket=PATH``, the password in the 0600 option file
    ``defaults_file``) under the names ``plan`` gives: each database created (utf8mb4), its
    dump loaded and counted against the record; ``users.sql`` last, where accounts that exist
    already are reported and left as they are. ``bin_dir`` is PostgreSQL's."""
    server = parse_dsn(dsn, defaults_file)
    report = DatabaseRestore(TITLE, server.where)
    try:
        conn = server.connect()
    except errors() as exc:
        raise RestoreFailed(f"cannot connect to {server.where}: {exc.args[-1]}") from None
    try:
        refuse_existing(databases(conn), plan, server.where)
        for db, dump in dumps.items():
            name = plan[db]
            create_database(conn, name)
            try:
                load(server, dump, name)
            except ScratchServerError as exc:
                raise RestoreFailed(
                    f"{exc}; database {name} on {server.where} is incomplete"
                ) from None
            report.databases[db] = name
            record = record_of(snapshot, db, report)
            if record is not None:
                report.problems += verify(conn, name, record)
        users = restored / USERS
        if os.path.lexists(users):
            # an account that exists already is reported, the rest still load
            loaded = load_users(server, users, keep_going=True)
            report.problems += loaded.refused
            report.warnings += [
                f"users.sql: {line.strip()} (left as it is)"
                for line in loaded.stderr.splitlines()
                if line.startswith("ERROR") and not line.startswith("ERROR at line")
            ]
    except errors() as exc:
        raise RestoreFailed(f"{server.where}: {' '.join(str(exc).split())}") from None
    finally:
        conn.close()
    return report


# -- throwaway server and drill --------------------------------------------------------------


def throwaway(
    scratch_dir: Path | None, run_as: str, bin_dir: Path | None = None
) -> AbstractContextManager[MariadbScratch]:
    """A fresh server in scratch space (:func:`~portalops.backup.engines.scratch.
    throwaway_mariadb`); ``bin_dir`` is for the engine contract (the programs come from
    PATH)."""
    return throwaway_mariadb(scratch_dir, run_as)


class Drill(DumpDrill):
    """Loads a mariadb snapshot's dumps, then its accounts, into a throwaway server."""

    engine = TITLE

    def __init__(self, queries: list[SmokeQuery], *, scratch_dir: Path | None, run_as: str):
        super().__init__(queries, errors())
        self.scratch_dir, self.run_as = scratch_dir, run_as
        self._server: Server | None = None

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        dumps = sorted(p for p in restored.glob(f"*{SUFFIX}") if p.name != USERS)
        if not dumps:
            raise ScratchServerError("the snapshot holds no database .sql file to load")
        scratch = stack.enter_context(throwaway_mariadb(self.scratch_dir, self.run_as))
        client = ["mariadb", f"--defaults-file={scratch.options}", *MARIADB_LOAD_OPTIONS]
        server = self._server = Server(client, scratch.connect_args(), scratch.env, self.run_as)
        for dump in dumps:
            db = db_name(dump, SUFFIX)
            with server.connect() as conn:
                create_database(conn, db)
            self.loaded[db] = db
            load(server, dump, db)
        users = restored / USERS
        if os.path.lexists(users):
            # the accounts come last, into a server that has none but the drill's own:
            # users.sql creates them all (root and mariadb.sys included) and cannot clash
            self._drop_accounts()
            load_users(server, users)
        return f"{len(dumps)} database{'s' if len(dumps) != 1 else ''} loaded"

    def _drop_accounts(self) -> None:
        with self._connected().connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT User, Host FROM mysql.global_priv WHERE NOT (User = %s AND Host = %s)",
                (MY_ADMIN, "localhost"),
            )
            for user, host in cur.fetchall():
                cur.execute("DROP USER %s@%s", (user, host))

    def _connected(self) -> Server:
        if self._server is None:
            raise ScratchServerError("the MariaDB drill server is not running")
        return self._server

    def _verify_one(self, db: str, name: str, record: dict[str, Any]) -> list[str]:
        with self._connected().connect() as conn:
            return verify(conn, name, record)

    def _query(self, name: str, query: str) -> Any:
        with self._connected().connect(name) as conn, conn.cursor() as cur:
            cur.execute(f"SET SESSION max_statement_time = {SMOKE_TIMEOUT_MS / 1000:g}")
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.execute(query)
            row = cur.fetchone()
        return row[0] if row else None


def drill(
    queries: list[SmokeQuery],
    *,
    scratch_dir: Path | None,
    run_as: str,
    bin_dir: Path | None = None,
    source_bin_dir: Path | None = None,
    dsn: str | None = None,
) -> Drill:
    """The drill of a mariadb snapshot, into a throwaway server (``bin_dir``,
    ``source_bin_dir`` and ``dsn`` are PostgreSQL's; MariaDB's drill has no options)."""
    return Drill(queries, scratch_dir=scratch_dir, run_as=run_as)
