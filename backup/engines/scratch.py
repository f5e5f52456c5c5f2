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

import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
import pymysql
from psycopg.conninfo import make_conninfo

from portalops.core.errors import OpsError

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # seconds for initdb / install-db and for the server to accept clients
STOP_TIMEOUT = 30.0
PG_PORT = 5432  # names the socket file only: the throwaway cluster has no TCP listener
PG_SUPERUSER = "postgres"
MY_ADMIN = "portal_ops_drill"  # MariaDB account the drill works as (users.sql cannot touch it)
LOG_TAIL = 8
SOCKET_PATH_MAX = 107  # sun_path, minus the terminating NUL
STDERR_HEAD = 1 << 20  # bytes of a tool's stderr kept from its start …
STDERR_TAIL = 64 << 10  # … and from its end


class ScratchServerError(OpsError):
    """{}"""


# -- the unprivileged user -------------------------------------------------------------------


def ensure_user(name: str) -> None:
    """Create the system user ``name`` if we are root and it is missing (idempotent)."""
    if os.geteuid() != 0 or _user_exists(name):
        return
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    done = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", "portal-ops restore drills", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if not _user_exists(name):  # another drill may have won the race: that is fine too
        raise ScratchServerError(
            f"cannot create the system user {name!r} for throwaway database servers: "
            f"{done.stderr.strip() or f'useradd exited with code {done.returncode}'}"
        )
    log.info("created the system user %s: throwaway database servers run as it", name)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def as_user(argv: Sequence[str], user: str, *, bind_low_ports: bool = False) -> list[str]:
    """``argv`` run as ``user`` when we are root (setpriv execs in place: the pid we hold is
    the server's own); unchanged otherwise, since we are unprivileged already.
    ``bind_low_ports`` keeps one capability, binding ports below 1024, for ``nginx -t``."""
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    caps = (
        ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
        if bind_low_ports
        else []
    )
    return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", *caps, "--", *argv]


def hand_over(path: Path, user: str) -> None:
    """Give ``path`` to ``user`` (when we are root; else it is ours already)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


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


def _env(root: Path) -> dict[str, str]:
    # nothing of the caller's: no PG*/MYSQL* variables, locale or HOME surprises
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }


# -- processes -------------------------------------------------------------------------------


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> str:
    """Run a command to completion and return its stderr; if it fails (and ``check``), the
    stderr goes into the error."""
    code, stderr = run_bounded(argv, what=what, timeout=timeout, env=env, stdin=stdin, cwd=cwd)
    if check and code != 0:
        raise ScratchServerError(
            f"{what} failed (exit code {code}): {tail(stderr) or 'no message'}"
        )
    return stderr


def run_bounded(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """(exit code, stderr) of a command run to completion. Its stdout is discarded and its
    stderr kept to a bounded size: a tool fed a hostile dump can print without end (every
    failing statement echoed back), and none of it may fill this process's memory."""
    with tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                list(argv),
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=timeout,
                env=env,
                cwd=cwd,
                check=False,
            )
        except FileNotFoundError:
            raise ScratchServerError(f"{what}: {argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise ScratchServerError(f"{what}: did not finish within {timeout:.0f} s") from None
        return done.returncode, _read_bounded(err)


def _read_bounded(handle: IO[bytes]) -> str:
    """The head and the tail of what ``handle`` holds, the middle left out if it is long."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    if size <= STDERR_HEAD + STDERR_TAIL:
        return handle.read().decode("utf-8", "replace")
    head = handle.read(STDERR_HEAD)
    handle.seek(size - STDERR_TAIL)
    tail = handle.read()
    left_out = size - len(head) - len(tail)
    return (
        head.decode("utf-8", "replace").rpartition("\n")[0]
        + f"\n… ({left_out} bytes left out)\n"
        + tail.decode("utf-8", "replace").partition("\n")[2]
    )


def tail(text: str, lines: int = LOG_TAIL) -> str:
    kept = [" ".join(line.split()) for line in text.strip().splitlines()[-lines:]]
    return " | ".join(line for line in kept if line)


def _start(
    argv: list[str], log_path: Path, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """``sig`` (the server's "shut down now"), then SIGKILL for the whole process group."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # backends left behind keep the group id


def _wait_ready(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path, what: str
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with suppress(Exception):  # a starting server refuses a lot; its log says why
            if ready():
                return
        if proc.poll() is not None:
            raise ScratchServerError(
                f"{what} exited with code {proc.returncode} while starting: {_log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ScratchServerError(
                f"{what} did not accept connections within {START_TIMEOUT:.0f} s: "
                f"{_log_tail(log_path)}"
            )
        time.sleep(0.1)


def _log_tail(path: Path) -> str:
    try:
        return tail(path.read_text(encoding="utf-8", errors="replace")) or "(empty log)"
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def _check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ScratchServerError(
            f"the socket path {path} is longer than {SOCKET_PATH_MAX} bytes; "
            "set drill.scratch_dir to a shorter directory"
        )


# -- PostgreSQL ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresScratch:
    """A running throwaway cluster: reachable on its socket directory only, as ``postgres``."""

    bin_dir: Path
    socket_dir: Path
    env: dict[str, str]

    def conninfo(self, dbname: str) -> str:
        return make_conninfo(
            "", host=str(self.socket_dir), port=PG_PORT, user=PG_SUPERUSER, dbname=dbname
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
    with _server_dir("pg", base, user) as (root, sock):
        data = root / "data"
        _check_socket_path(sock / f".s.PGSQL.{PG_PORT}")
        env = _env(root)
        run_tool(
            as_user(
                [str(bin_dir / "initdb"), "--pgdata", str(data), "--username", PG_SUPERUSER,
                 "--encoding", "UTF8", "--locale", "C.UTF-8", "--auth", "trust", "--no-sync",
                 "--no-instructions"],
                user,
            ),
            what="initdb for the throwaway drill cluster", timeout=START_TIMEOUT, env=env,
            cwd=root,
        )  # fmt: skip
        log_path = root / "postgres.log"
        proc = _start(
            as_user(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(PG_PORT), "-k", str(sock),
                 "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"],
                user,
            ),
            log_path, env, root,
        )  # fmt: skip
        try:
            server = PostgresScratch(bin_dir, sock, env)
            _wait_ready(
                lambda: _pg_ready(server), proc, log_path, "the throwaway PostgreSQL cluster"
            )
            yield server
        finally:
            _stop(proc, signal.SIGINT)  # SIGINT: fast shutdown; SIGTERM waits for clients


def _pg_ready(server: PostgresScratch) -> bool:
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


@contextmanager
def throwaway_mariadb(base: Path | None, user: str) -> Iterator[MariadbScratch]:
    """A fresh MariaDB server in scratch space, stopped and deleted on exit."""
    install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    mariadbd = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
    if install_db is None or not os.path.exists(mariadbd):
        raise ScratchServerError(
            "MariaDB server programs (mariadb-install-db, mariadbd) not found for the "
            "throwaway drill server: install the Debian package mariadb-server "
            "(scripts/setup-system does)"
        )
    with _server_dir("my", base, user) as (root, run_dir):
        data, tmp = root / "data", root / "tmp"
        tmp.mkdir()
        hand_over(tmp, user)
        sock = run_dir / "mysqld.sock"
        _check_socket_path(sock)
        env = _env(root)
        # --no-defaults first on both, or they read /etc/mysql (and its /run/mysqld) anyway
        run_tool(
            as_user(
                [install_db, "--no-defaults", f"--datadir={data}",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 "--skip-name-resolve", "--skip-log-bin"],
                user,
            ),
            what="mariadb-install-db for the throwaway drill server", timeout=START_TIMEOUT,
            env=env, cwd=root,
        )  # fmt: skip
        log_path = root / "mariadbd.log"
        proc = _start(
            as_user(
                [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}",
                 "--skip-networking", f"--pid-file={run_dir / 'mysqld.pid'}", f"--tmpdir={tmp}",
                 f"--secure-file-priv={tmp}",
                 "--skip-name-resolve", "--skip-log-bin", "--character-set-server=utf8mb4",
                 "--collation-server=utf8mb4_unicode_ci", "--innodb-buffer-pool-size=128M"],
                user,
            ),
            log_path, env, root,
        )  # fmt: skip
        try:
            _wait_ready(lambda: _my_root_ready(sock), proc, log_path, "the throwaway MariaDB")
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
            yield MariadbScratch(sock, password, options, env)
        finally:
            _stop(proc, signal.SIGTERM)


def _my_root_ready(sock: Path) -> bool:
    _my_root_execute(sock, "SELECT 1")
    return True


def _my_root_execute(sock: Path, *statements: str) -> None:
    conn = pymysql.connect(unix_socket=str(sock), user="root", password="", connect_timeout=2)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()
