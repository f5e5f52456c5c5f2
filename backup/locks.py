"""Repository locks: backups share the repository, prune needs it alone (DESIGN.md §4).

A lock is an immutable object ``locks/<32 hex>`` holding who took it and when it was last
refreshed. Taking a lock is "write ours, then look": if two processes race, both see each other
and both back off, never both proceed. A holder refreshes by writing a new object and only then
deleting the old one, so there is always a live object while the lock is held. Locks whose
holder stopped refreshing, or whose holder process on this host is gone, are stale: ignored
when locking and removed by ``ops backup unlock``.

Lock objects are the only objects a writer ever deletes.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from backup.storage import ObjectMissing, Storage, StorageError
from portalops.errors import OpsError

log = logging.getLogger(__name__)

V = TypeVar("V")

PREFIX = "locks/"
VERSION = 1
STALE_AFTER = timedelta(minutes=30)
REFRESH_EVERY = timedelta(minutes=5)
# Waiting for a lock: first retry after RETRY_FIRST, doubling up to RETRY_MAX, with jitter so
# two racing lockers that both backed off do not collide again in lockstep.
RETRY_FIRST = 0.05
RETRY_MAX = 10.0


class RepositoryLocked(OpsError):
    """repository {} is locked by {} since {}; run 'ops backup unlock' if that process is gone"""

    def __init__(self, repository: str, holder: LockInfo) -> None:
        kind = "an exclusive" if holder.exclusive else "a shared"
        who = (
            f"{kind} lock of {holder.command!r} "
            f"(host {holder.host}, pid {holder.pid}, user {holder.user}, {holder.key})"
        )
        super().__init__(repository, who, _iso(holder.created) if holder.created else "?")
        self.holder = holder


class LockLost(OpsError):
    """repository {}: lock {} is no longer valid ({}); stopping, since a prune may now run"""


@dataclass(frozen=True)
class LockInfo:
    """One object under ``locks/`` as read; ``problem`` says why it could not be read.

    An unreadable lock is reported with ``stale=True``: it cannot protect anything, and
    ``ops backup unlock`` removes it.
    """

    key: str
    exclusive: bool = False
    host: str = ""
    pid: int = 0
    user: str = ""
    command: str = ""
    created: datetime | None = None
    refreshed: datetime | None = None
    stale: bool = True
    problem: str | None = None


class Lock:
    """A held shared or exclusive lock on one repository; a context manager that releases it.

    Take one with :meth:`Lock.acquire`. While held, a daemon thread refreshes it every
    ``refresh_every``; long jobs call :meth:`check` between steps so that a lock that could
    not be refreshed (or was removed by ``unlock --all``) stops the job.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        exclusive: bool,
        command: str,
        stale_after: timedelta = STALE_AFTER,
        refresh_every: timedelta = REFRESH_EVERY,
    ) -> None:
        if refresh_every >= stale_after:
            raise ValueError("a lock must be refreshed more often than it goes stale")
        self.storage = storage
        self.exclusive = exclusive
        self.command = command
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.user = _user()
        self.created = _now()
        self._key: str | None = None
        self._refreshed = self.created  # when the current object was written
        self._refresh_error: str | None = None
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(
        cls,
        storage: Storage,
        *,
        exclusive: bool,
        command: str,
        wait: float = 0,
        stale_after: timedelta = STALE_AFTER,
        refresh_every: timedelta = REFRESH_EVERY,
    ) -> Lock:
        """Lock ``storage``; retry for up to ``wait`` seconds, then raise RepositoryLocked.

        A shared lock conflicts with any other live exclusive lock; an exclusive lock with any
        other live lock. Stale and unreadable locks are ignored.
        """
        lock = cls(
            storage,
            exclusive=exclusive,
            command=command,
            stale_after=stale_after,
            refresh_every=refresh_every,
        )
        lock._take(wait)
        return lock

    @property
    def key(self) -> str | None:
        """The object currently holding the lock; None once released."""
        with self._mutex:
            return self._key

    def check(self) -> None:
        """Raise LockLost if the lock was removed or could not be refreshed for too long."""
        with self._mutex:
            key, lost, error, refreshed = (
                self._key,
                self._lost,
                self._refresh_error,
                self._refreshed,
            )
        name = self.storage.name
        if key is None:
            raise LockLost(name, "(released)", "it was released")
        if lost is not None:
            raise LockLost(name, key, lost)
        # Wall clock on purpose: other hosts judge staleness by the wall-clock time written in
        # the object, and a suspended host's monotonic clock would not have moved.
        age = _now() - refreshed
        if age > self.stale_after:
            why = f"last refreshed {_iso(refreshed)}, {age.total_seconds():.0f} s ago"
            if error:
                why += f"; last refresh failed: {error}"
            raise LockLost(name, key, why)

    def release(self) -> None:
        """Stop refreshing and delete the lock object; calling it again does nothing."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._mutex:
            key = self._key
        if key is None:
            return
        self.storage.delete(key)
        with self._mutex:
            self._key = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.release()
            return
        # The job's own error is the one to report; a lock we fail to delete is harmless
        # because it goes stale as soon as this process exits.
        try:
            self.release()
        except StorageError as error:
            log.warning("%s", error)

    # --- taking ------------------------------------------------------------------------------

    def _take(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        delay = RETRY_FIRST
        while True:
            # Look before writing, so a waiting locker does not keep bouncing others off ...
            holder = self._conflict(self._live_locks())
            if holder is None:
                key = self._write()
                try:
                    # ... and look again after writing: this is what makes a race safe.
                    holder = self._conflict(self._live_locks(), mine=key)
                except BaseException:
                    with contextlib.suppress(StorageError):
                        self.storage.delete(key)
                    raise
                if holder is None:
                    self._start_refreshing(key)
                    return
                self.storage.delete(key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RepositoryLocked(self.storage.name, holder)
            jitter = random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not a secret
            time.sleep(min(delay * jitter, remaining))
            delay = min(delay * 2, RETRY_MAX)

    def _live_locks(self) -> list[LockInfo]:
        return [info for info in list_locks(self.storage, self.stale_after) if not info.stale]

    def _conflict(self, live: list[LockInfo], mine: str | None = None) -> LockInfo | None:
        others = [info for info in live if info.key != mine]
        if not self.exclusive:
            others = [info for info in others if info.exclusive]
        # Name the longest-standing holder: the one an operator most likely has to look at.
        return min(others, key=lambda i: (i.created or _now(), i.key), default=None)

    def _write(self) -> str:
        key = PREFIX + secrets.token_hex(16)
        refreshed = _now()
        record = {
            "version": VERSION,
            "exclusive": self.exclusive,
            "host": self.host,
            "pid": self.pid,
            "user": self.user,
            "command": self.command,
            "created": _iso(self.created),
            "refreshed": _iso(refreshed),
        }
        self.storage.put(key, json.dumps(record, indent=1).encode())
        with self._mutex:
            self._refreshed = refreshed
        return key

    # --- refreshing --------------------------------------------------------------------------

    def _start_refreshing(self, key: str) -> None:
        with self._mutex:
            self._key = key
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, name=f"lock-refresh-{key[len(PREFIX) :][:8]}", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every.total_seconds()):
            if not self._refresh():
                return

    def _refresh(self) -> bool:
        """Replace our lock object with a fresh one; False once the lock is lost for good."""
        with self._mutex:
            old, refreshed = self._key, self._refreshed
        if old is None:
            return False
        gap = _now() - refreshed
        if gap > self.stale_after:
            # We were paused (SIGSTOP, a suspended VM) or cut off for longer than others wait
            # before calling a lock stale: a prune may have run meanwhile. A fresh lock now
            # would hide that; the holder must stop instead.
            with self._mutex:
                self._lost = (
                    f"not refreshed for {gap.total_seconds():.0f} s; it may have been taken"
                )
            return False
        try:
            if self.storage.size(old) is None:
                # Someone ran 'unlock --all' (or judged us stale): a prune may already be
                # running, so writing a new lock now would be a lie. Give up the lock.
                with self._mutex:
                    self._lost = f"{old} was removed by another process"
                log.error("repository %s: lock %s was removed", self.storage.name, old)
                return False
            new = self._write()
        except StorageError as error:
            with self._mutex:
                self._refresh_error = str(error)
            log.warning("could not refresh lock: %s", error)
            return True
        with self._mutex:
            self._key = new
            self._refresh_error = None
        try:
            self.storage.delete(old)
        except StorageError as error:
            # Our old object lingers until it goes stale; the new one already holds the lock.
            log.warning("could not delete old lock object: %s", error)
        return True


# --- reading and unlocking -------------------------------------------------------------------


def list_locks(storage: Storage, stale_after: timedelta = STALE_AFTER) -> list[LockInfo]:
    """Every lock object in the repository, oldest first, each marked stale or not."""
    found: list[LockInfo] = []
    now = _now()
    for obj in storage.list(PREFIX):
        try:
            data = storage.get(obj.key)
        except ObjectMissing:
            continue  # released or refreshed while we were listing
        found.append(_parse(obj.key, data, now, stale_after))
    return sorted(found, key=lambda i: (i.created is None, i.created or now, i.key))


def remove_stale(storage: Storage, stale_after: timedelta = STALE_AFTER) -> list[LockInfo]:
    """Delete stale and unreadable locks (what ``ops backup unlock`` does); return them."""
    removed = [info for info in list_locks(storage, stale_after) if info.stale]
    for info in removed:
        storage.delete(info.key)
    return removed


def remove_all(storage: Storage) -> list[LockInfo]:
    """Delete every lock, live ones too (``ops backup unlock --all``); return them.

    Only for when the operator knows no backup or prune is running: a live holder notices at
    its next refresh and stops (LockLost).
    """
    removed = list_locks(storage)
    for info in removed:
        storage.delete(info.key)
    return removed


def _parse(key: str, data: bytes, now: datetime, stale_after: timedelta) -> LockInfo:
    try:
        record: Any = json.loads(data)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if record.get("version") != VERSION:
            raise ValueError(f"unknown lock version {record.get('version')!r}")
        exclusive = _field(record, "exclusive", bool)
        host = _field(record, "host", str)
        pid = _field(record, "pid", int)
        if isinstance(pid, bool) or pid <= 0:
            raise ValueError(f"pid: expected a process id, got {pid!r}")
        user = _field(record, "user", str)
        command = _field(record, "command", str)
        created = _time(record, "created")
        refreshed = _time(record, "refreshed")
    except (ValueError, UnicodeDecodeError) as exc:
        return LockInfo(key, stale=True, problem=f"unreadable lock: {exc}")
    stale = now - refreshed > stale_after or (host == socket.gethostname() and not _alive(pid))
    return LockInfo(key, exclusive, host, pid, user, command, created, refreshed, stale)


def _field(record: dict[str, Any], name: str, kind: type[V]) -> V:
    value = record.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _time(record: dict[str, Any], name: str) -> datetime:
    when = datetime.fromisoformat(_field(record, name, str))
    if when.tzinfo is None:
        raise ValueError(f"{name}: {when.isoformat()} has no time zone")
    return when


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


__all__ = [
    "REFRESH_EVERY",
    "STALE_AFTER",
    "Lock",
    "LockInfo",
    "LockLost",
    "RepositoryLocked",
    "list_locks",
    "remove_all",
    "remove_stale",
]
