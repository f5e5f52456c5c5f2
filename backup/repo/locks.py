"""Repository locks: backups share the repository, prune needs it alone.

A lock is an immutable object ``locks/<32 hex>`` saying who took it. Taking a lock is "write
ours, then look": if two processes race, both see each other and both back off, never both
proceed. A holder refreshes by writing a new object (a new key) and only then deleting the old
one, so there is always a live object while the lock is held, and a live holder's key never
stays the same for much longer than its refresh interval.

Which locks are stale is judged only from what the judging process witnesses itself, never by
comparing its clock with a time another host wrote (clocks drift, and a compromised writer
can write any time it likes):

- **by the storage's clock**: the storage stamps every object when it stores it (S3
  ``LastModified``, a local file's mtime). A lock object stored more than ``stale_after``
  before the storage's time now is stale. "Now" on the storage is read from an object this
  process has just written itself (its own lock object, or a probe that ``ops backup unlock``
  writes and removes), carried forward by the local monotonic clock;
- **by observation**: a key that a waiting locker has seen, unchanged, for ``stale_after`` of
  its own monotonic clock is stale (a live holder would have replaced it);
- **on this host**: a lock whose process is gone is stale at once.

The ``created`` and ``refreshed`` times inside a lock object are shown to people, never
trusted. Unreadable lock objects are stale. Lock objects are the only objects a writer ever
deletes. Clocks are injectable (:class:`Clock`) so that tests need not wait.
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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from portalops.backup.repo.storage import ObjectInfo, ObjectMissing, Storage, StorageError
from portalops.core.errors import OpsError
from portalops.core.timefmt import iso_z

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
MAX_LOCK_SIZE = 64 * 1024  # a lock object is a few hundred bytes


class Clock(Protocol):
    """The clocks a lock reads and how it waits; tests pass one whose time they move."""

    def wall(self) -> datetime:
        """Now, for the times written into lock objects (shown to people, never compared)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for every duration a lock measures."""

    def sleep(self, seconds: float) -> None:
        """Wait before trying a held lock again."""


class SystemClock:
    """The machine's clocks. Durations count time spent suspended (``CLOCK_BOOTTIME``): a
    holder frozen in a suspended VM must see that time pass, since others saw it too."""

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.clock_gettime(_ELAPSED)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_ELAPSED = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
SYSTEM_CLOCK: Clock = SystemClock()


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
    ``ops backup unlock`` removes it. ``stale_reason`` says why a readable one is stale;
    ``stored`` is when the storage says it stored the object.
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
    stale_reason: str | None = None
    stored: datetime | None = None


class LockWatch:
    """What one process has witnessed of a repository's lock objects: when it first saw each
    key (by its own monotonic clock) and the storage's clock, read from an object it wrote.

    A waiting locker keeps one across its attempts, so that a key it has watched for
    ``stale_after`` without a refresh replacing it counts as stale.
    """

    def __init__(self, stale_after: timedelta, clock: Clock = SYSTEM_CLOCK) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self._first_seen: dict[str, float] = {}
        # (a time on the storage's clock, the local monotonic time by which it had passed)
        self._storage_time: tuple[datetime, float] | None = None

    def storage_now(self) -> datetime | None:
        """The storage's time now, as last read and carried forward; None if never read.

        Never ahead of the storage's real time, so it can only make locks look younger."""
        if self._storage_time is None:
            return None
        at, by = self._storage_time
        return at + timedelta(seconds=self.clock.monotonic() - by)

    def scan(
        self, storage: Storage, *, mine: str | None = None, written_by: float = 0.0
    ) -> list[LockInfo]:
        """List and read every lock object, oldest first, each judged stale or not.

        ``mine`` is an object this process finished writing by local monotonic time
        ``written_by``: its storage time sets the storage clock; it is left out of the result.
        """
        listing = list(storage.list(PREFIX))
        now = self.clock.monotonic()
        self._first_seen = {o.key: self._first_seen.get(o.key, now) for o in listing}
        for obj in listing:
            if obj.key == mine and obj.modified is not None:
                self._storage_time = (obj.modified, written_by)
        found: list[LockInfo] = []
        this_host = socket.gethostname()
        for obj in listing:
            if obj.key == mine:
                continue
            if obj.size > MAX_LOCK_SIZE:
                # Anyone with the writer key can write here: read no more than a lock needs.
                problem = f"unreadable lock: {obj.size} bytes, more than a lock can hold"
                found.append(LockInfo(obj.key, problem=problem, stored=obj.modified))
                continue
            try:
                data = storage.get(obj.key)
            except ObjectMissing:
                continue  # released or refreshed while we were listing
            info = _parse(obj.key, data, obj.modified)
            if not info.stale:
                reason = self._why_stale(obj, info, this_host)
                if reason is not None:
                    info = _with(info, stale=True, stale_reason=reason)
            found.append(info)
        wall = self.clock.wall()
        return sorted(found, key=lambda i: (i.created is None, i.created or wall, i.key))

    def _why_stale(self, obj: ObjectInfo, info: LockInfo, this_host: str) -> str | None:
        if info.host == this_host and not _alive(info.pid):
            return f"process {info.pid} on this host is gone"
        storage_now = self.storage_now()
        if storage_now is not None and obj.modified is not None:
            age = storage_now - obj.modified
            if age > self.stale_after:
                return f"stored {_seconds(age)} ago by the storage's clock, not refreshed since"
        first = self._first_seen.get(obj.key)
        if first is not None:
            watched = self.clock.monotonic() - first
            if watched > self.stale_after.total_seconds():
                return f"not replaced by a refresh in {watched:.0f} s of watching"
        return None


class Lock:
    """A held shared or exclusive lock on one repository; a context manager that releases it.

    Take one with :meth:`Lock.acquire`. While held, a daemon thread refreshes it every
    ``refresh_every`` (or the owner calls :meth:`refresh`); long jobs call :meth:`check`
    between steps, and right before any step a prune must not overlap (writing a snapshot,
    deleting data), so that a lock that was removed or could not be refreshed stops the job.

    The holder gives the lock up once its current object is older than halfway between the
    refresh interval and the stale time (``lose_after``): a step begun just before that must
    still end before anyone may call the lock stale.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        exclusive: bool,
        command: str,
        stale_after: timedelta = STALE_AFTER,
        refresh_every: timedelta = REFRESH_EVERY,
        clock: Clock = SYSTEM_CLOCK,
        refresh_in_background: bool = True,
    ) -> None:
        if refresh_every >= stale_after:
            raise ValueError("a lock must be refreshed more often than it goes stale")
        self.storage = storage
        self.exclusive = exclusive
        self.command = command
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.lose_after = (stale_after + refresh_every) / 2
        self.clock = clock
        self.refresh_in_background = refresh_in_background
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.user = _user()
        self.created = clock.wall()
        self._watch = LockWatch(stale_after, clock)
        self._key: str | None = None
        self._written_at = clock.monotonic()  # when the current object's put began
        self._confirmed_at = -1e18  # when the storage last said the object is there
        self._refresh_error: str | None = None
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._refreshing = threading.Lock()  # one refresh at a time: no orphaned objects
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
        clock: Clock = SYSTEM_CLOCK,
        refresh_in_background: bool = True,
    ) -> Lock:
        """Lock ``storage``; retry for up to ``wait`` seconds, then raise RepositoryLocked.

        A shared lock conflicts with any other live exclusive lock; an exclusive lock with any
        other live lock. Stale and unreadable locks are ignored (not removed).
        """
        lock = cls(
            storage,
            exclusive=exclusive,
            command=command,
            stale_after=stale_after,
            refresh_every=refresh_every,
            clock=clock,
            refresh_in_background=refresh_in_background,
        )
        lock._take(wait)
        return lock

    @property
    def key(self) -> str | None:
        """The object currently holding the lock; None once released."""
        with self._mutex:
            return self._key

    def check(self, *, confirmed_within: float = 0.0) -> None:
        """Raise LockLost unless the lock is still ours: not released, refreshed recently
        enough, and its object still in storage (an 'unlock' elsewhere may have removed it).

        ``confirmed_within``: skip asking the storage if it answered for the object that
        many seconds ago or less (the local checks above still run). A backup checks before
        every pack it seals, and on S3 the question is a round trip on the writer's path
        (some 40 for a 0.7 GB first backup). What keeps a backup safe from a prune that
        started after an unlock is the full check before its snapshot is written, which
        always asks: without a snapshot, packs sealed in the seconds after an unlock are
        only wasted work (a prune may delete them; nothing names them)."""
        with self._mutex:
            key, lost, error, written_at = (
                self._key,
                self._lost,
                self._refresh_error,
                self._written_at,
            )
        name = self.storage.name
        if key is None:
            raise LockLost(name, "(released)", "it was released")
        if lost is not None:
            raise LockLost(name, key, lost)
        age = self.clock.monotonic() - written_at
        if age > self.lose_after.total_seconds():
            why = (
                f"not refreshed for {age:.0f} s; others may call it stale after "
                f"{self.stale_after.total_seconds():.0f} s"
            )
            if error:
                why += f"; last refresh failed: {error}"
            raise LockLost(name, key, why)
        if confirmed_within and self.clock.monotonic() - self._confirmed_at <= confirmed_within:
            return
        self._confirm(key)
        self._confirmed_at = self.clock.monotonic()

    def refresh(self) -> bool:
        """Replace the lock object with a fresh one now; False once the lock is lost for good.

        The background thread calls this every ``refresh_every``. A failed write is retried
        at the next call; the lock is lost once it has gone ``lose_after`` unrefreshed.
        """
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> bool:
        with self._mutex:
            old, written_at, lost = self._key, self._written_at, self._lost
        if old is None or lost is not None:
            return False
        gap = self.clock.monotonic() - written_at
        if gap > self.lose_after.total_seconds():
            # We were paused (SIGSTOP, a suspended VM) or cut off for so long that others may
            # soon call this lock stale, or already have: a prune may have run meanwhile. A
            # fresh lock now would hide that; the holder must stop instead.
            self._lose(f"not refreshed for {gap:.0f} s; it may have been taken")
            return False
        try:
            if self.storage.size(old) is None:
                # Someone ran 'unlock' (or 'unlock --all'): a prune may already be running, so
                # writing a new lock now would be a lie. Give up the lock.
                self._lose(f"{old} was removed by another process")
                log.error("repository %s: lock %s was removed", self.storage.name, old)
                return False
            new, started, _ = self._write()
        except StorageError as error:
            with self._mutex:
                self._refresh_error = str(error)
            log.warning("could not refresh lock: %s", error)
            return True
        with self._mutex:
            self._key, self._written_at, self._refresh_error = new, started, None
        try:
            self.storage.delete(old)
        except StorageError as error:
            # Our old object lingers until it goes stale; the new one already holds the lock.
            log.warning("could not delete old lock object: %s", error)
        return True

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
        # because it goes stale once it is no longer refreshed.
        try:
            self.release()
        except StorageError as error:
            log.warning("%s", error)

    # --- taking ------------------------------------------------------------------------------

    def _take(self, wait: float) -> None:
        clock = self.clock
        deadline = clock.monotonic() + wait
        delay = RETRY_FIRST
        attempt = 0
        while True:
            holder = None
            if attempt:
                # Look before writing again, so a waiting locker does not keep bouncing
                # others off. (Not on the first try: only writing tells the storage's time.)
                holder = self._conflict(self._watch.scan(self.storage))
            if holder is None:
                key, _, written_by = self._write()
                try:
                    # ... and look after writing: this is what makes a race safe.
                    seen = self._watch.scan(self.storage, mine=key, written_by=written_by)
                    holder = self._conflict(seen)
                except BaseException:
                    with contextlib.suppress(StorageError):
                        self.storage.delete(key)
                    raise
                if holder is None:
                    self._start_refreshing(key)
                    return
                self.storage.delete(key)
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                raise RepositoryLocked(self.storage.name, holder)
            jitter = random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not a secret
            clock.sleep(min(delay * jitter, remaining))
            delay = min(delay * 2, RETRY_MAX)
            attempt += 1

    def _conflict(self, seen: Iterable[LockInfo]) -> LockInfo | None:
        others = [info for info in seen if not info.stale]
        if not self.exclusive:
            others = [info for info in others if info.exclusive]
        # Name the longest-standing holder: the one an operator most likely has to look at.
        wall = self.clock.wall()
        return min(others, key=lambda i: (i.created or wall, i.key), default=None)

    def _write(self) -> tuple[str, float, float]:
        """Store a new lock object; return its key and the monotonic times around the put."""
        key = PREFIX + secrets.token_hex(16)
        record = {
            "version": VERSION,
            "exclusive": self.exclusive,
            "host": self.host,
            "pid": self.pid,
            "user": self.user,
            "command": self.command,
            "created": _iso(self.created),
            "refreshed": _iso(self.clock.wall()),
        }
        started = self.clock.monotonic()
        self.storage.put(key, json.dumps(record, indent=1).encode())
        return key, started, self.clock.monotonic()

    def _confirm(self, key: str) -> None:
        """Raise LockLost if our object is gone from storage (not merely replaced by a
        refresh that ran while we looked)."""
        while self.storage.size(key) is None:
            with self._mutex:
                current = self._key
            if current is None:
                raise LockLost(self.storage.name, key, "it was released")
            if current == key:
                self._lose(f"{key} was removed by another process")
                raise LockLost(self.storage.name, key, "it was removed by another process")
            key = current

    def _lose(self, why: str) -> None:
        with self._mutex:
            if self._lost is None:
                self._lost = why

    # --- refreshing --------------------------------------------------------------------------

    def _start_refreshing(self, key: str) -> None:
        with self._mutex:
            self._key = key
        if not self.refresh_in_background:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, name=f"lock-refresh-{key[len(PREFIX) :][:8]}", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every.total_seconds()):
            if not self.refresh():
                return


# --- reading and unlocking -------------------------------------------------------------------


def list_locks(
    storage: Storage,
    stale_after: timedelta = STALE_AFTER,
    *,
    clock: Clock = SYSTEM_CLOCK,
    watch: LockWatch | None = None,
) -> list[LockInfo]:
    """Every lock object in the repository, oldest first, each marked stale or not.

    One look without a ``watch`` that has read the storage's clock can only tell unreadable
    locks and locks of gone processes on this host: :func:`remove_stale` reads the storage's
    clock first.
    """
    return (watch or LockWatch(stale_after, clock)).scan(storage)


def remove_stale(
    storage: Storage, stale_after: timedelta = STALE_AFTER, *, clock: Clock = SYSTEM_CLOCK
) -> list[LockInfo]:
    """Delete stale and unreadable locks (what ``ops backup unlock`` does); return them.

    To judge locks by the storage's clock, a probe object is written under ``locks/`` (other
    lockers read it as unreadable, so ignore it) and removed again.
    """
    watch = LockWatch(stale_after, clock)
    probe = PREFIX + secrets.token_hex(16)
    record = {"probe": "storage clock", "host": socket.gethostname(), "pid": os.getpid()}
    storage.put(probe, json.dumps(record).encode())
    try:
        seen = watch.scan(storage, mine=probe, written_by=clock.monotonic())
        if watch.storage_now() is None:
            log.warning(
                "repository %s: the storage did not tell when it stored the probe %s; "
                "only locks of gone processes on this host count as stale",
                storage.name,
                probe,
            )
        removed = [info for info in seen if info.stale]
        for info in removed:
            storage.delete(info.key)
    finally:
        storage.delete(probe)
    return removed


def remove_all(storage: Storage) -> list[LockInfo]:
    """Delete every lock, live ones too (``ops backup unlock --all``); return them.

    Only for when the operator knows no backup or prune is running: a live holder notices at
    its next check or refresh and stops (LockLost).
    """
    removed = list_locks(storage)
    for info in removed:
        storage.delete(info.key)
    return removed


def _parse(key: str, data: bytes, stored: datetime | None) -> LockInfo:
    """A lock object's content; live unless unreadable (the caller judges staleness)."""
    try:
        record: Any = json.loads(data)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if "probe" in record:
            raise ValueError("a storage clock probe of 'ops backup unlock'")
        if record.get("version") != VERSION:
            raise ValueError(f"unknown lock version {_short(record.get('version'))}")
        exclusive = _field(record, "exclusive", bool)
        host = _field(record, "host", str)
        pid = _field(record, "pid", int)
        if isinstance(pid, bool) or pid <= 0:
            raise ValueError(f"pid: expected a process id, got {_short(pid)}")
        user = _field(record, "user", str)
        command = _field(record, "command", str)
        created = _time(record, "created")
        refreshed = _time(record, "refreshed")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        problem = f"unreadable lock: {str(exc)[:200]}"  # a writer wrote it: keep it short
        return LockInfo(key, stale=True, problem=problem, stored=stored)
    return LockInfo(
        key, exclusive, host, pid, user, command, created, refreshed, False, stored=stored
    )


def _with(info: LockInfo, *, stale: bool, stale_reason: str) -> LockInfo:
    return LockInfo(
        info.key,
        info.exclusive,
        info.host,
        info.pid,
        info.user,
        info.command,
        info.created,
        info.refreshed,
        stale,
        info.problem,
        stale_reason,
        info.stored,
    )


def _field(record: dict[str, Any], name: str, kind: type[V]) -> V:
    value = record.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{name}: expected {kind.__name__}, got {_short(value)}")
    return value


def _time(record: dict[str, Any], name: str) -> datetime:
    when = datetime.fromisoformat(_field(record, name, str))
    if when.tzinfo is None:
        raise ValueError(f"{name}: {when.isoformat()} has no time zone")
    try:
        return when.astimezone(UTC)  # shown in UTC later: a time with no UTC year fails here
    except OverflowError:
        raise ValueError(f"{name}: {when.isoformat()} is out of range") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    except OverflowError:
        return False  # no such pid can exist here
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _seconds(age: timedelta) -> str:
    return f"{age.total_seconds():.0f} s"


def _iso(when: datetime) -> str:
    return iso_z(when, "microseconds")


__all__ = [
    "REFRESH_EVERY",
    "STALE_AFTER",
    "SYSTEM_CLOCK",
    "Clock",
    "Lock",
    "LockInfo",
    "LockLost",
    "LockWatch",
    "RepositoryLocked",
    "SystemClock",
    "list_locks",
    "remove_all",
    "remove_stale",
]
