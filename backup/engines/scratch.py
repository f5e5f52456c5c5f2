"""Throwaway database servers for restore drills, started in scratch space and removed after.

A drill proves a dump restores by restoring it. The servers here are the drill's own:

- they listen on a unix socket in their own 0700 directory and on no TCP port at all, so
  nothing else on the host can reach the restored data;
- they run as an unprivileged system user (``drill.run_as``) when ``ops`` runs as root:
  PostgreSQL refuses to run as root, and the SQL they run comes from a backup host, which may
  be hostile (``COPY … TO PROGRAM`` runs as the server's user). The user is created on first
  use. The clients that feed them dumps run as that user too
  (:mod:`portalops.backup.engines.clients`);
- MariaDB reads and writes server-side files only in its own temp dir (``secure_file_priv``);
- everything they write (data, socket, log) lives in one temp directory, removed with the
  server on every exit path: the context managers stop the server (its process group, so no
  backend outlives it) before they delete the directory.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from portalops.core import procs
from portalops.core.procs import (
    LOG_TAIL,
    STOP_TIMEOUT,
    ProcessFailed,
    as_user,
    hand_over,
    run_bounded,
    run_tool,
    tail,
)

__all__ = [
    "LOG_TAIL",
    "MY_ADMIN",
    "PG_PORT",
    "PG_SUPERUSER",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "MariadbScratch",
    "PostgresScratch",
    "ScratchServerError",
    "as_user",
    "check_reachable",
    "ensure_user",
    "find_mariadb_bin",
    "find_postgres_bin",
    "hand_over",
    "mariadb_running",
    "postgres_running",
    "run_bounded",
    "run_tool",
    "tail",
    "throwaway_mariadb",
    "throwaway_postgres",
]

START_TIMEOUT = 120.0  # seconds for initdb / install-db and for the server to accept clients
PG_PORT = 5432  # names the socket file only: the throwaway cluster has no TCP listener
PG_SUPERUSER = "postgres"
MY_ADMIN = "portal_ops_drill"  # MariaDB account the drill works as (users.sql cannot touch it)
SOCKET_PATH_MAX = 107  # sun_path, minus the terminating NUL

#: What a throwaway server, or a tool run for it, raises when it fails: the process helpers'
#: own error, so that one ``except`` catches a failed tool and a failed server alike.
ScratchServerError = ProcessFailed


# -- the unprivileged user -------------------------------------------------------------------


def ensure_user(name: str) -> None:
    """Create the drill's system user ``name`` if we are root and it is missing (idempotent)."""
    procs.ensure_user(
        name, comment="portal-ops restore drills", purpose="throwaway database servers"
    )


@contextmanager
def _server_dir(kind: str, base: Path | None, user: str) -> Iterator[tuple[Path, Path]]:
    """(root, socket dir): the root in scratch space for the data, the socket directory in
    the system temp dir, whose short path keeps the socket under the 107-byte limit."""
    ensure_user(user)
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
        check_reachable(base, user)
    with ExitStack() as stack:
        made = []
        for where in (base, None):
            path = Path(tempfile.mkdtemp(prefix=f"portal-ops-drill-{kind}-", dir=where))
            stack.callback(shutil.rmtree, path, ignore_errors=True)
            hand_over(path, user)
            made.append(path)
        yield made[0], made[1]


def check_reachable(base: Path, user: str, who: str = "the throwaway database servers run") -> None:
    """``user`` (``who`` runs as it) must be able to enter ``base`` (when we are root)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for path in (base.resolve(), *base.resolve().parents):
        st = path.stat()
        if st.st_uid == entry.pw_uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            raise ScratchServerError(
                f"drill.scratch_dir {base}: {who} as {user}, "
                f"who cannot enter {path} (mode {stat.S_IMODE(st.st_mode):04o}); allow it "
                f"(chmod o+x {path}) or choose another scratch_dir"
            )


def _check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ScratchServerError(
            f"the socket path {path} is longer than {SOCKET_PATH_MAX} bytes; "
            "set drill.scratch_dir to a shorter directory"
        )


def _initialise(argv: list[str], user: str, root: Path, what: str) -> None:
    """Run a server's data directory maker (initdb, install-db) as ``user`` in ``root``."""
    run_tool(
        as_user(argv, user), what=what, timeout=START_TIMEOUT, env=procs.clean_env(root), cwd=root
    )


@contextmanager
def _server(
    argv: list[str],
    user: str,
    root: Path,
    log_name: str,
    ready: Callable[[], bool],
    *,
    what: str,
    stop_signal: signal.Signals,
) -> Iterator[None]:
    """``argv`` started as ``user`` in ``root`` (logging to ``root/log_name``), waited for
    until ``ready``, and stopped with ``stop_signal`` (then its process group killed) on exit."""
    log_path = root / log_name
    proc = procs.start(as_user(argv, user), log_path, env=procs.clean_env(root), cwd=root)
    try:
        procs.wait_ready(ready, what=what, timeout=START_TIMEOUT, proc=proc, log=log_path)
        yield
    finally:
        procs.stop(proc, stop_signal)


# -- PostgreSQL ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresScratch:
    """A running throwaway cluster: reachable on its socket directory only, as ``postgres``."""

    bin_dir: Path
    socket_dir: Path
    env: dict[str, str]
    port: int = PG_PORT  # names the socket file (and the TCP port, where one listens)

    def conninfo(self, dbname: str) -> str:
        from psycopg.conninfo import make_conninfo  # noqa: PLC0415 - loaded when used

        return make_conninfo(
            "", host=str(self.socket_dir), port=self.port, user=PG_SUPERUSER, dbname=dbname
        )

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)


def find_postgres_bin(configured: Path | None, *hints: Path | None) -> Path:
    """Where initdb and postgres live: the configured directory, a hint that has them (a
    source's ``bin_dir``), else the newest Debian ``/usr/lib/postgresql/<v>/bin``."""
    if configured is not None:
        if not (configured / "initdb").exists():
            raise ScratchServerError(
                f"drill.postgres.bin_dir {configured} has no initdb: it must be the directory "
                "of the PostgreSQL server programs, e.g. /usr/lib/postgresql/15/bin"
            )
        return configured
    candidates = [h for h in hints if h is not None]
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise ScratchServerError(
        "PostgreSQL server programs (initdb, postgres) not found for the throwaway drill "
        "cluster: install the Debian package postgresql-15 (scripts/setup-system does), or set "
        "drill.postgres.bin_dir, or drill.postgres.dsn to restore into a scratch server"
    )


@contextmanager
def throwaway_postgres(bin_dir: Path, base: Path | None, user: str) -> Iterator[PostgresScratch]:
    """A fresh PostgreSQL cluster in scratch space, stopped and deleted on exit."""
    with (
        _server_dir("pg", base, user) as (root, sock),
        postgres_running(
            bin_dir, root, sock, user,
            settings={"listen_addresses": "", "unix_socket_permissions": "0700"},
            what="the throwaway PostgreSQL cluster",
            initdb_what="initdb for the throwaway drill cluster",
        ) as server,
    ):  # fmt: skip
        yield server


@contextmanager
def postgres_running(
    bin_dir: Path,
    root: Path,
    sock: Path,
    user: str,
    *,
    settings: Mapping[str, str],
    what: str,
    initdb_what: str,
    port: int = PG_PORT,
    hba: str | None = None,
) -> Iterator[PostgresScratch]:
    """A cluster made by initdb in ``root/data`` (superuser ``postgres``, UTF-8, trust unless
    ``hba`` replaces pg_hba.conf), run as ``user`` with its socket in ``sock``, its log in
    ``root/postgres.log`` and the ``settings`` given (``-c``); stopped on exit. The caller
    owns both directories, and decides where the server listens: :func:`throwaway_postgres`
    on its socket only."""
    data = root / "data"
    _check_socket_path(sock / f".s.PGSQL.{port}")
    _initialise(
        [str(bin_dir / "initdb"), "--pgdata", str(data), "--username", PG_SUPERUSER,
         "--encoding", "UTF8", "--locale", "C.UTF-8", "--auth", "trust", "--no-sync",
         "--no-instructions"],
        user, root, initdb_what,
    )  # fmt: skip
    if hba is not None:
        (data / "pg_hba.conf").write_text(hba, encoding="utf-8")
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock)]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    server = PostgresScratch(bin_dir, sock, procs.clean_env(root), port)
    # SIGINT: fast shutdown; SIGTERM waits for clients
    with _server(
        argv, user, root, "postgres.log", lambda: _pg_ready(server),
        what=what, stop_signal=signal.SIGINT,
    ):  # fmt: skip
        yield server


def _pg_ready(server: PostgresScratch) -> bool:
    import psycopg  # noqa: PLC0415 - the client libraries load only when a server runs

    with psycopg.connect(server.conninfo("postgres"), connect_timeout=2):
        return True


# -- MariaDB ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MariadbScratch:
    """A running throwaway MariaDB: its socket, and an option file for the drill's account."""

    socket: Path
    password: str
    options: Path  # [client] file (0600, the drill user's) for the mariadb command-line client
    env: dict[str, str]

    def connect_args(self) -> dict[str, object]:
        return {
            "unix_socket": str(self.socket),
            "user": MY_ADMIN,
            "password": self.password,
            "charset": "utf8mb4",
            "connect_timeout": 10,
            "autocommit": True,
        }


def find_mariadb_bin() -> tuple[str, str]:
    """(mariadb-install-db, mariadbd) as found on PATH (or mariadbd's Debian place)."""
    install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    mariadbd = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
    if install_db is None or not os.path.exists(mariadbd):
        raise ScratchServerError(
            "MariaDB server programs (mariadb-install-db, mariadbd) not found for the "
            "throwaway drill server: install the Debian package mariadb-server "
            "(scripts/setup-system does)"
        )
    return install_db, mariadbd


@contextmanager
def throwaway_mariadb(base: Path | None, user: str) -> Iterator[MariadbScratch]:
    """A fresh MariaDB server in scratch space, stopped and deleted on exit."""
    programs = find_mariadb_bin()
    with (
        _server_dir("my", base, user) as (root, run_dir),
        mariadb_running(
            programs, root, run_dir, user,
            options=["--skip-networking", f"--secure-file-priv={root / 'tmp'}",
                     "--innodb-buffer-pool-size=128M"],
            what="the throwaway MariaDB",
            install_what="mariadb-install-db for the throwaway drill server",
        ) as sock,
    ):  # fmt: skip
        password = secrets.token_urlsafe(18)  # [A-Za-z0-9_-]: nothing to escape below
        _my_root_execute(
            sock,
            f"CREATE USER '{MY_ADMIN}'@'localhost' IDENTIFIED BY '{password}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{MY_ADMIN}'@'localhost' WITH GRANT OPTION",
            # users.sql grants PROXY (root's own), which takes PROXY WITH GRANT OPTION
            f"GRANT PROXY ON ''@'%' TO '{MY_ADMIN}'@'localhost' WITH GRANT OPTION",
        )
        options = root / "client.cnf"
        fd = os.open(options, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"[client]\nuser={MY_ADMIN}\npassword={password}\nsocket={sock}\n")
        hand_over(options, user)  # the mariadb client runs as the user too
        yield MariadbScratch(sock, password, options, procs.clean_env(root))


@contextmanager
def mariadb_running(
    programs: tuple[str, str],
    root: Path,
    run_dir: Path,
    user: str,
    *,
    options: Sequence[str],
    what: str,
    install_what: str,
) -> Iterator[Path]:
    """A server made by ``programs`` (mariadb-install-db, mariadbd) in ``root/data`` with a
    passwordless root, run as ``user`` with the ``options`` given, its socket and pid file in
    ``run_dir``, its temp dir ``root/tmp``, its log ``root/mariadbd.log``; yields the socket
    path once root gets in through it, and stops the server on exit. Neither program reads an
    option file (``--no-defaults``); the caller decides where the server listens."""
    install_db, mariadbd = programs
    data, tmp = root / "data", root / "tmp"
    tmp.mkdir()
    hand_over(tmp, user)
    sock = run_dir / "mysqld.sock"
    _check_socket_path(sock)
    # --no-defaults first on both, or they read /etc/mysql (and its /run/mysqld) anyway
    _initialise(
        [install_db, "--no-defaults", f"--datadir={data}",
         "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
         "--skip-log-bin"],
        user, root, install_what,
    )  # fmt: skip
    argv = [
        mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}",
        f"--pid-file={run_dir / 'mysqld.pid'}", f"--tmpdir={tmp}", "--skip-name-resolve",
        "--skip-log-bin", "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci", *options,
    ]  # fmt: skip
    with _server(
        argv, user, root, "mariadbd.log", lambda: _my_root_ready(sock),
        what=what, stop_signal=signal.SIGTERM,
    ):  # fmt: skip
        yield sock


def _my_root_ready(sock: Path) -> bool:
    _my_root_execute(sock, "SELECT 1")
    return True


def _my_root_execute(sock: Path, *statements: str) -> None:
    import pymysql  # noqa: PLC0415 - the client libraries load only when a server runs

    conn = pymysql.connect(unix_socket=str(sock), user="root", password="", connect_timeout=2)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()
