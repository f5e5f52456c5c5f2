"""Child processes: run a tool to completion, or start a server, wait until it is ready, stop it.

Written once for the drills' throwaway servers, the demo, the benches and the test fixtures,
which all start real servers and must never leave one behind:

- a server starts in a session of its own, writing into a log file; stopping it signals the
  server, then SIGKILLs its whole process group, so no worker or backend outlives it;
- a tool run to completion keeps a bounded amount of its stderr: a tool fed hostile input can
  print without end, and none of it may fill this process's memory;
- when we are root, servers and tools run as an unprivileged system user (created on first
  use): PostgreSQL refuses root, and what a restored dump makes a server do should not run as
  root either.

Failures raise :class:`ProcessFailed` (an :class:`~portalops.core.errors.OpsError`, exit code
3); a caller with other conventions (pytest's ``fail``, a bench's "cannot run") catches it and
says it its own way. :class:`NotReady` carries what the caller needs to word it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, TypedDict, Unpack

from portalops.core.errors import OpsError

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0  # seconds a server gets to shut down before its group is killed
LOG_TAIL = 8  # lines of a log or of stderr quoted in an error
STDERR_HEAD = 1 << 20  # bytes of a tool's stderr kept from its start …
STDERR_TAIL = 64 << 10  # … and from its end


class ProcessFailed(OpsError):
    """{}"""


class NotReady(ProcessFailed):
    """{}"""

    def __init__(
        self,
        what: str,
        *,
        returncode: int | None,
        timeout: float,
        last_error: BaseException | None,
        log: Path | None,
    ) -> None:
        if returncode is not None:
            message = f"{what} exited with code {returncode} while starting"
        else:
            message = f"{what} did not accept connections within {timeout:.0f} s"
        if log is not None:
            message += f": {log_tail(log)}"
        super().__init__(message)
        self.what = what
        self.returncode = returncode  # None: it still runs, but did not get ready in time
        self.timeout = timeout
        self.last_error = last_error  # what the readiness check raised last, if anything
        self.log = log


# -- the unprivileged user -------------------------------------------------------------------


def ensure_user(name: str, *, comment: str, purpose: str) -> None:
    """Create the system user ``name`` if we are root and it is missing (idempotent, and safe
    when two processes race to create it). ``purpose`` says in messages what runs as it."""
    if os.geteuid() != 0 or user_exists(name):
        return
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    done = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", comment, name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if not user_exists(name):  # another process may have won the race: that is fine too
        raise ProcessFailed(
            f"cannot create the system user {name!r} for {purpose}: "
            f"{done.stderr.strip() or f'useradd exited with code {done.returncode}'}"
        )
    log.info("created the system user %s: %s run as it", name, purpose)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def as_user(argv: Sequence[str], user: str, *, bind_low_ports: bool = False) -> list[str]:
    """``argv`` run as ``user`` when we are root (setpriv execs in place, where runuser forks
    and waits: the pid we hold is the server's own, and signals reach it); unchanged otherwise,
    since we are unprivileged already. ``bind_low_ports`` keeps one capability, binding ports
    below 1024, for ``nginx -t``."""
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


def clean_env(home: Path) -> dict[str, str]:
    """The environment a server or tool runs in: nothing of the caller's (no PG*/MYSQL*
    variables, locale or HOME surprises)."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }


# -- tools run to completion -----------------------------------------------------------------


class RunOptions(TypedDict, total=False):
    """How a tool runs, beyond its argv: environment (default: ours), stdin (default: none),
    working directory."""

    env: dict[str, str] | None
    stdin: IO[bytes] | None
    cwd: Path | None


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float,
    check: bool = True,
    **options: Unpack[RunOptions],
) -> str:
    """Run a command to completion and return its stderr; if it fails (and ``check``), the
    stderr goes into the error."""
    code, stderr = run_bounded(argv, what=what, timeout=timeout, **options)
    if check and code != 0:
        raise ProcessFailed(f"{what} failed (exit code {code}): {tail(stderr) or 'no message'}")
    return stderr


def run_bounded(
    argv: Sequence[str], *, what: str, timeout: float, **options: Unpack[RunOptions]
) -> tuple[int, str]:
    """(exit code, stderr) of a command run to completion. Its stdout is discarded and its
    stderr kept to a bounded size (:func:`read_bounded`)."""
    stdin = options.get("stdin")
    with tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                list(argv),
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=timeout,
                env=options.get("env"),
                cwd=options.get("cwd"),
                check=False,
            )
        except FileNotFoundError:
            raise ProcessFailed(f"{what}: {argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise ProcessFailed(f"{what}: did not finish within {timeout:.0f} s") from None
        return done.returncode, read_bounded(err)


def read_bounded(handle: IO[bytes]) -> str:
    """The head and the tail of what ``handle`` holds, the middle left out if it is long."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    if size <= STDERR_HEAD + STDERR_TAIL:
        return handle.read().decode("utf-8", "replace")
    head = handle.read(STDERR_HEAD)
    handle.seek(size - STDERR_TAIL)
    end = handle.read()
    left_out = size - len(head) - len(end)
    return (
        head.decode("utf-8", "replace").rpartition("\n")[0]
        + f"\n… ({left_out} bytes left out)\n"
        + end.decode("utf-8", "replace").partition("\n")[2]
    )


def tail(text: str, lines: int = LOG_TAIL, sep: str = " | ") -> str:
    """The last ``lines`` non-empty lines of ``text``, white space folded, joined by ``sep``
    (one line by default: it goes into an error message)."""
    kept = [" ".join(line.split()) for line in text.strip().splitlines()[-lines:]]
    return sep.join(line for line in kept if line)


def log_tail(path: Path, lines: int = LOG_TAIL, sep: str = " | ") -> str:
    """:func:`tail` of a server's log file, or why there is none to quote."""
    try:
        return tail(path.read_text(encoding="utf-8", errors="replace"), lines, sep) or (
            "(empty log)"
        )
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


# -- servers ---------------------------------------------------------------------------------


def start(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server with its stdout and stderr appended to ``log_path``, in a new session:
    the server leads its own process group, so :func:`stop` can sweep up whatever it forks
    (backends, workers, session children)."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def stop(
    proc: subprocess.Popen[bytes],
    sig: signal.Signals = signal.SIGTERM,
    *,
    timeout: float = STOP_TIMEOUT,
) -> None:
    """``sig`` (the server's own "shut down now": SIGINT for postgres, whose SIGTERM waits for
    clients), then SIGKILL for the whole process group, whatever is left of it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers keep the leader's group id


def wait_ready(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until it returns true, at most ``timeout`` seconds; :class:`NotReady`
    at once if ``proc`` exits meanwhile, or when the time is up. A starting server refuses a
    lot, so what ``ready`` raises counts as "not yet" (and is kept for the error)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if ready():
                return
        except Exception as exc:
            last_error = exc
        if proc is not None and proc.poll() is not None:
            raise NotReady(
                what, returncode=proc.returncode, timeout=timeout, last_error=last_error, log=log
            )
        if time.monotonic() >= deadline:
            raise NotReady(what, returncode=None, timeout=timeout, last_error=last_error, log=log)
        time.sleep(interval)
