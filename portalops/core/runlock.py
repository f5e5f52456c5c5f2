"""One ``ops backup run`` at a time on a host: an exclusive ``flock`` on a file in the state dir.

The kernel drops a flock when its holder dies, however it dies, so a run killed by the OOM
killer or ``kill -9`` never blocks the next night's run: no stale-lock cleanup is needed (unlike
the repository locks of backup/repo/locks.py, which live in storage that other hosts share). The
file names the holder (pid, start time) so that a second run can say who is in the way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from portalops.core.errors import OpsError
from portalops.core.timefmt import utc_now_z

LOCK_NAME = "backup-run.lock"


class RunLocked(OpsError):
    """another '{}' (pid {}, started {}) is still running; it holds {}. Wait for it to finish
    or stop that process: a run that dies releases the lock by itself"""


class RunLockError(OpsError):
    """cannot take the run lock {}: {}; check state_dir in the config and its permissions"""


@contextlib.contextmanager
def run_lock(path: Path, command: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking flock on ``path`` for the ``with`` block.

    Raises RunLocked (exit 3) naming the holder when another process has it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: the commands a run starts (pg_dump, ssh) must not inherit the lock and
        # keep it alive after the run itself has died.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RunLockError(path, exc.strerror or str(exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, started = _holder(fd)
            raise RunLocked(command, pid, started, path) from None
        with contextlib.suppress(PermissionError):  # a file another user created: keep its mode
            os.fchmod(fd, 0o644)  # it holds no secret; umask 077 must not hide the holder
        info = {
            "pid": os.getpid(),
            "started": utc_now_z(),
            "host": socket.gethostname(),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        try:
            yield
        finally:
            # Never unlink the file: a process that opened it just before would then lock a
            # ghost inode while a third one creates and locks a new file.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> tuple[str, str]:
    """(pid, start time) of the holder, as written in the file; '?' while it is still writing."""
    for _ in range(20):  # the holder writes its name right after it gets the lock
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict) and "pid" in info:
            return str(info["pid"]), str(info.get("started", "?"))
        time.sleep(0.05)
    return "?", "?"
