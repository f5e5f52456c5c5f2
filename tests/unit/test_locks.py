"""Repository locks on a local directory: sharing, exclusion, staleness, refresh, unlock.

Time is the test's own: a :class:`Timeline` that moves only when a locker sleeps or a test
advances it. The repository stamps every object it stores with the timeline's time (as S3
stamps ``LastModified``), and each host reads the timeline through its own clock, whose wall
time may be hours off. No test waits on the real clock, except the one that watches the
background refresh thread.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portalops.backup.repo import locks
from portalops.backup.repo.locks import (
    Lock,
    LockLost,
    LockWatch,
    RepositoryLocked,
    list_locks,
    remove_all,
    remove_stale,
)
from portalops.backup.repo.storage import LocalStorage, ObjectInfo, StorageError
from portalops.core.errors import ExitCode

STALE = timedelta(minutes=30)
REFRESH = timedelta(minutes=5)
STALE_S = STALE.total_seconds()
REMOTE = "web7.example.gov.vn"


class Timeline:
    """True time in a test; callbacks in ``on_advance`` play the other hosts."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(microsecond=0)
        self.elapsed = 0.0
        self.on_advance: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds
        for act in list(self.on_advance):
            act()


class HostClock:
    """One host's clocks (a ``locks.Clock``): wall time ``skew`` off the truth, a monotonic
    clock with its own origin, and sleeping that moves the timeline at once."""

    def __init__(self, timeline: Timeline, skew: timedelta = timedelta(0)) -> None:
        self.timeline = timeline
        self.skew = skew
        self.slept: list[float] = []

    def wall(self) -> datetime:
        return self.timeline.now() + self.skew

    def monotonic(self) -> float:
        return 86_400.0 + self.timeline.elapsed

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.timeline.advance(seconds)


class StampedStorage(LocalStorage):
    """A local repository whose clock is the timeline: each put sets the file's mtime."""

    def __init__(self, root: Path, timeline: Timeline) -> None:
        super().__init__("offsite", root)
        self.timeline = timeline
        self.puts: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        self.puts.append(key)
        stamp = self.timeline.now().timestamp()
        os.utime(self.root / key, (stamp, stamp))


class TimelessStorage(StampedStorage):
    """A storage whose listings tell no write time: staleness by observation only."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for info in super().list(prefix):
            yield ObjectInfo(info.key, info.size, None)


class FlakyStorage(StampedStorage):
    """Fails every put once ``broken`` is set, like an unreachable S3 endpoint."""

    broken = False

    def put(self, key: str, data: bytes) -> None:
        if self.broken:
            raise StorageError(self.name, f"cannot write {key}: connection refused")
        super().put(key, data)


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()


@pytest.fixture
def clock(timeline: Timeline) -> HostClock:
    return HostClock(timeline)


@pytest.fixture
def storage(tmp_path: Path, timeline: Timeline) -> StampedStorage:
    return StampedStorage(tmp_path / "repo", timeline)


def take(storage: LocalStorage, clock: HostClock, *, exclusive: bool, **kwargs: object) -> Lock:
    """A lock refreshed by hand (``lock.refresh()``) on the test's clock."""
    return Lock.acquire(
        storage,
        exclusive=exclusive,
        command="backup forget --prune" if exclusive else "backup run",
        clock=clock,
        refresh_in_background=False,
        **kwargs,  # type: ignore[arg-type]
    )


def lock_keys(storage: LocalStorage) -> set[str]:
    return {obj.key for obj in storage.list("locks/")}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_lock(
    storage: LocalStorage,
    name: str,
    *,
    exclusive: bool = True,
    host: str = REMOTE,
    pid: int = 4242,
    command: str = "backup forget --prune",
    refreshed: datetime | None = None,
    stored: datetime | None = None,
) -> str:
    """Write a lock object as another host would have: it says it was ``refreshed`` then
    (its own clock), and the storage stored it at ``stored`` (default: now)."""
    when = refreshed or datetime.now(UTC)
    key = f"locks/{name}"
    record = {
        "version": 1,
        "exclusive": exclusive,
        "host": host,
        "pid": pid,
        "user": "backup",
        "command": command,
        "created": iso(when - timedelta(minutes=1)),
        "refreshed": iso(when),
    }
    storage.put(key, json.dumps(record).encode())
    if stored is not None:
        os.utime(storage.root / key, (stored.timestamp(), stored.timestamp()))
    return key


class RemoteHolder:
    """A lock holder on another host, refreshing every ``every`` seconds of true time (while
    ``alive``), writing the times its own, possibly skewed, clock tells."""

    def __init__(
        self, storage: StampedStorage, clock: HostClock, *, every: float, exclusive: bool = True
    ) -> None:
        self.storage, self.clock, self.every, self.exclusive = storage, clock, every, exclusive
        self.alive = True
        self.count = 0
        self.key = self._write()
        self.last = clock.timeline.elapsed
        clock.timeline.on_advance.append(self._tick)

    def _write(self) -> str:
        self.count += 1
        return write_lock(
            self.storage,
            f"{self.count:032x}",
            exclusive=self.exclusive,
            refreshed=self.clock.wall(),
        )

    def _tick(self) -> None:
        if self.alive and self.clock.timeline.elapsed - self.last >= self.every:
            old, self.key = self.key, self._write()
            self.storage.delete(old)
            self.last = self.clock.timeline.elapsed


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- sharing and exclusion ----------------------------------------------------------------------


def test_lock_object_format(storage: StampedStorage, clock: HostClock) -> None:
    with take(storage, clock, exclusive=False) as lock:
        assert lock.key is not None
        name = lock.key.removeprefix("locks/")
        assert len(name) == 32
        assert int(name, 16) >= 0
        record = json.loads(storage.get(lock.key))
        assert record["version"] == 1
        assert record["exclusive"] is False
        assert record["host"] == socket.gethostname()
        assert record["pid"] == os.getpid()
        assert record["command"] == "backup run"
        assert isinstance(record["user"], str)
        assert record["created"] == record["refreshed"] == iso(clock.wall())
        for field in ("created", "refreshed"):
            assert datetime.fromisoformat(record[field]).utcoffset() == timedelta(0)


def test_shared_locks_coexist(storage: StampedStorage, clock: HostClock) -> None:
    with (
        take(storage, clock, exclusive=False) as a,
        take(storage, clock, exclusive=False) as b,
    ):
        assert lock_keys(storage) == {a.key, b.key}
        assert [i.stale for i in list_locks(storage)] == [False, False]
    assert lock_keys(storage) == set()


def test_exclusive_blocks_shared_with_a_clear_message(
    storage: StampedStorage, clock: HostClock
) -> None:
    with take(storage, clock, exclusive=True) as held:
        with pytest.raises(RepositoryLocked) as caught:
            take(storage, clock, exclusive=False)
        message = str(caught.value)
        assert "repository offsite is locked by an exclusive lock of 'backup forget --prune'" in (
            message
        )
        assert f"host {socket.gethostname()}" in message
        assert f"pid {os.getpid()}" in message
        assert f"since {iso(clock.wall())[:19]}" in message
        assert "run 'ops backup unlock' if that process is gone" in message
        assert caught.value.exit_code == ExitCode.OPERATIONAL
        assert caught.value.holder.key == held.key
        # The refused locker left nothing behind.
        assert lock_keys(storage) == {held.key}


def test_shared_blocks_exclusive(storage: StampedStorage, clock: HostClock) -> None:
    write_lock(storage, "a" * 32, exclusive=False, command="backup run --source portal")
    with pytest.raises(RepositoryLocked) as caught:
        take(storage, clock, exclusive=True)
    message = str(caught.value)
    assert "a shared lock of 'backup run --source portal'" in message
    assert f"host {REMOTE}" in message
    assert "pid 4242" in message
    assert lock_keys(storage) == {"locks/" + "a" * 32}


def test_exclusive_blocks_exclusive(storage: StampedStorage, clock: HostClock) -> None:
    with take(storage, clock, exclusive=True), pytest.raises(RepositoryLocked):
        take(storage, clock, exclusive=True)


class RacingStorage(StampedStorage):
    """Another exclusive locker writes its object right after ours: the race both-check stops."""

    raced = False

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if key.startswith("locks/") and not self.raced:
            self.raced = True
            write_lock(self, "f" * 32, host="web2", pid=77)


def test_racing_exclusive_lockers_back_off(
    tmp_path: Path, timeline: Timeline, clock: HostClock
) -> None:
    storage = RacingStorage(tmp_path / "repo", timeline)
    with pytest.raises(RepositoryLocked, match="host web2, pid 77"):
        take(storage, clock, exclusive=True)
    # We deleted our own object after seeing the other one; theirs is untouched.
    assert lock_keys(storage) == {"locks/" + "f" * 32}


def test_wait_succeeds_once_the_other_lock_is_released(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    holder = take(storage, clock, exclusive=True)
    timeline.on_advance.append(lambda: holder.release() if timeline.elapsed >= 3 else None)
    with take(storage, clock, exclusive=False, wait=60) as lock:
        assert lock_keys(storage) == {lock.key}
    assert 3 <= timeline.elapsed < 3 + 2 * 3  # retries back off, doubling from 0.05 s
    assert holder.key is None


def test_waiting_backs_off_and_gives_up_after_the_wait(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    with take(storage, clock, exclusive=True):
        puts = len(storage.puts)
        with pytest.raises(RepositoryLocked):
            take(storage, clock, exclusive=True, wait=120)
        assert timeline.elapsed == pytest.approx(120)
        assert max(clock.slept) <= locks.RETRY_MAX
        assert clock.slept[0] <= locks.RETRY_FIRST
        # It wrote its own object once, then only looked until the holder was gone.
        assert len(storage.puts) == puts + 1


# --- staleness ----------------------------------------------------------------------------------


def test_unlock_judges_by_storage_time_not_by_the_time_written_inside(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    now = timeline.now()
    # Written 31 minutes ago by a host whose clock runs years ahead: stale.
    ahead = write_lock(
        storage, "a" * 32, refreshed=now + timedelta(days=900), stored=now - timedelta(minutes=31)
    )
    # Written just now by a host whose clock is years behind: live.
    behind = write_lock(
        storage, "b" * 32, exclusive=False, refreshed=now - timedelta(days=900), stored=now
    )
    # Written 29 minutes ago, by a correct clock: live.
    recent = write_lock(
        storage, "c" * 32, exclusive=False, refreshed=now, stored=now - timedelta(minutes=29)
    )
    # One look, without the storage's clock, cannot tell storage-time staleness.
    assert {i.key: i.stale for i in list_locks(storage, clock=clock)} == {
        ahead: False,
        behind: False,
        recent: False,
    }
    # The stale exclusive lock does not block a backup; the live shared ones block a prune.
    with take(storage, clock, exclusive=False) as lock:
        with pytest.raises(RepositoryLocked, match="a shared lock"):
            take(storage, clock, exclusive=True)
        removed = remove_stale(storage, clock=clock)
        assert [i.key for i in removed] == [ahead]
        assert removed[0].host == REMOTE
        assert removed[0].stale_reason == (
            "stored 1860 s ago by the storage's clock, not refreshed since"
        )
        assert lock_keys(storage) == {behind, recent, lock.key}  # and the probe is gone


@pytest.mark.parametrize("skew_hours", [-7, 7])
@pytest.mark.parametrize("storage_kind", [StampedStorage, TimelessStorage])
def test_a_live_lock_on_a_host_with_a_wrong_clock_is_never_stale(
    tmp_path: Path,
    timeline: Timeline,
    clock: HostClock,
    skew_hours: int,
    storage_kind: type[StampedStorage],
) -> None:
    """Another host holds a shared lock for hours, refreshing every 5 minutes; its clock is
    7 hours off. A prune waiting two hours never takes the lock, whether the storage tells
    write times or the prune can only watch."""
    storage = storage_kind(tmp_path / "repo", timeline)
    remote = RemoteHolder(
        storage,
        HostClock(timeline, timedelta(hours=skew_hours)),
        every=REFRESH.total_seconds(),
        exclusive=False,
    )
    with pytest.raises(RepositoryLocked, match=f"host {REMOTE}"):
        take(storage, clock, exclusive=True, wait=2 * 3600)
    assert timeline.elapsed == pytest.approx(2 * 3600)
    assert remote.count > 20  # it kept refreshing all along
    assert remove_stale(storage, clock=clock) == []
    assert lock_keys(storage) == {remote.key}


@pytest.mark.parametrize("skew_hours", [-7, 7])
@pytest.mark.parametrize("storage_kind", [StampedStorage, TimelessStorage])
def test_a_remote_lock_that_stops_being_refreshed_goes_stale(
    tmp_path: Path,
    timeline: Timeline,
    clock: HostClock,
    skew_hours: int,
    storage_kind: type[StampedStorage],
) -> None:
    """The other host dies 10 minutes in (its last object says it was refreshed hours in the
    future or past). A waiting prune takes the lock about 30 minutes after that last refresh:
    by the storage's clock, or by watching the key go unreplaced."""
    storage = storage_kind(tmp_path / "repo", timeline)
    remote = RemoteHolder(
        storage, HostClock(timeline, timedelta(hours=skew_hours)), every=REFRESH.total_seconds()
    )
    timeline.on_advance.append(
        lambda: setattr(remote, "alive", False) if timeline.elapsed >= 600 else None
    )
    with take(storage, clock, exclusive=True, wait=3600) as lock:
        taken_at = timeline.elapsed
        assert lock_keys(storage) == {remote.key, lock.key}
        [seen] = [i for i in list_locks(storage, clock=clock) if i.key == remote.key]
        assert not seen.stale  # a single look cannot tell; the waiting locker watched
    last = remote.last
    assert 300 <= last <= 600 + locks.RETRY_MAX
    assert last + STALE_S < taken_at <= last + STALE_S + 3 * locks.RETRY_MAX


def test_a_watch_remembers_keys_across_looks(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    key = write_lock(storage, "a" * 32)
    watch = LockWatch(STALE, clock)
    assert [i.stale for i in list_locks(storage, watch=watch)] == [False]
    timeline.advance(STALE_S)
    assert [i.stale for i in list_locks(storage, watch=watch)] == [False]
    timeline.advance(1)
    [info] = list_locks(storage, watch=watch)
    assert info.key == key
    assert info.stale
    assert info.stale_reason == "not replaced by a refresh in 1801 s of watching"
    assert watch.storage_now() is None  # it never wrote anything


def test_stale_by_dead_pid_on_this_host(storage: StampedStorage, clock: HostClock) -> None:
    pid = dead_pid()
    dead = write_lock(storage, "d" * 32, host=socket.gethostname(), pid=pid)
    # The same pid on another host cannot be checked from here: that lock stays live.
    remote = write_lock(storage, "e" * 32, exclusive=False, pid=pid)
    infos = {i.key: i for i in list_locks(storage, clock=clock)}
    assert {k: i.stale for k, i in infos.items()} == {dead: True, remote: False}
    assert infos[dead].stale_reason == f"process {pid} on this host is gone"
    with take(storage, clock, exclusive=False) as lock:
        assert [i.key for i in remove_stale(storage, clock=clock)] == [dead]
        assert lock_keys(storage) == {remote, lock.key}


def test_garbage_in_locks_is_unreadable_and_stale(
    storage: StampedStorage, clock: HostClock
) -> None:
    storage.put("locks/binary", b"\xff\xfe\x00 not json")
    storage.put("locks/list", b"[1, 2, 3]")
    storage.put("locks/v2", json.dumps({"version": 2, "exclusive": True}).encode())
    storage.put("locks/types", json.dumps({"version": 1, "exclusive": "yes" * 100}).encode())
    storage.put("locks/deep", b"[" * 100_000)
    storage.put("locks/huge", b" " * (locks.MAX_LOCK_SIZE + 1))
    storage.put("locks/probe", json.dumps({"probe": "storage clock"}).encode())
    write_lock(storage, "zero-pid", pid=0)
    write_lock(storage, "huge-pid", pid=10**40, host=socket.gethostname())
    good = write_lock(storage, "naive", exclusive=False)
    record = json.loads(storage.get(good))
    record["refreshed"] = "2026-11-28T10:00:00"  # no time zone
    storage.put("locks/naive-time", json.dumps(record).encode())

    infos = {i.key: i for i in list_locks(storage, clock=clock)}
    unreadable = {k for k, i in infos.items() if i.problem}
    assert unreadable == {
        "locks/binary",
        "locks/list",
        "locks/v2",
        "locks/types",
        "locks/deep",
        "locks/huge",
        "locks/probe",
        "locks/zero-pid",
        "locks/naive-time",
    }
    assert all(infos[k].stale for k in unreadable)
    assert "unknown lock version 2" in (infos["locks/v2"].problem or "")
    assert len(infos["locks/types"].problem or "") < 140
    assert "more than a lock can hold" in (infos["locks/huge"].problem or "")
    assert "probe" in (infos["locks/probe"].problem or "")
    assert infos["locks/huge-pid"].stale  # no such process here
    assert not infos[good].stale

    with take(storage, clock, exclusive=False):
        pass  # no unreadable one blocks (the exclusive huge-pid one is stale too)
    assert {i.key for i in remove_stale(storage, clock=clock)} == unreadable | {"locks/huge-pid"}
    assert lock_keys(storage) == {good}


def test_remove_all_removes_live_locks_and_the_holder_notices_at_once(
    storage: StampedStorage, clock: HostClock
) -> None:
    lock = take(storage, clock, exclusive=False)
    other = write_lock(storage, "a" * 32)
    try:
        assert {i.key for i in remove_all(storage)} == {lock.key, other}
        assert lock_keys(storage) == set()
        # The holder's next check looks in storage: it stops rather than run unprotected.
        with pytest.raises(LockLost, match="removed by another process") as caught:
            lock.check()
        assert caught.value.exit_code == ExitCode.OPERATIONAL
        assert lock.refresh() is False  # and it does not write itself a new lock
        assert lock_keys(storage) == set()
    finally:
        lock.release()


def test_no_locks_directory(storage: StampedStorage, clock: HostClock) -> None:
    assert list_locks(storage, clock=clock) == []
    assert remove_stale(storage, clock=clock) == []
    assert remove_all(storage) == []
    assert lock_keys(storage) == set()


# --- refresh ------------------------------------------------------------------------------------


def test_refresh_replaces_the_object(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    with take(storage, clock, exclusive=False) as lock:
        first = lock.key
        assert first is not None
        first_record = json.loads(storage.get(first))
        timeline.advance(REFRESH.total_seconds())
        assert lock.refresh() is True
        assert lock.key != first
        assert lock_keys(storage) == {lock.key}
        assert lock.key is not None
        record = json.loads(storage.get(lock.key))
        assert record["created"] == first_record["created"]
        assert record["refreshed"] == iso(clock.wall())
        lock.check()
    assert lock_keys(storage) == set()


def test_background_refresh_replaces_the_object(tmp_path: Path) -> None:
    """The one test on real time: the daemon thread refreshes on its own."""
    storage = LocalStorage("offsite", tmp_path / "repo")
    fast = {"stale_after": timedelta(seconds=2), "refresh_every": timedelta(seconds=0.02)}
    with Lock.acquire(storage, exclusive=False, command="backup run", **fast) as lock:  # type: ignore[arg-type]
        first = lock.key
        thread = "lock-refresh-" + (first or "")[len("locks/") :][:8]
        assert thread in {t.name for t in threading.enumerate()}
        deadline = time.monotonic() + 5
        while lock.key == first or lock_keys(storage) != {lock.key}:
            assert time.monotonic() < deadline, "the lock was not refreshed"
            time.sleep(0.01)
        lock.check()
    assert lock_keys(storage) == set()
    assert thread not in {t.name for t in threading.enumerate()}


def test_check_fails_once_refresh_has_failed_for_too_long(
    tmp_path: Path, timeline: Timeline, clock: HostClock
) -> None:
    storage = FlakyStorage(tmp_path / "repo", timeline)
    with take(storage, clock, exclusive=False) as lock:
        key = lock.key
        storage.broken = True
        timeline.advance(REFRESH.total_seconds())
        assert lock.refresh() is True  # failed, will try again
        timeline.advance(REFRESH.total_seconds() * 2)
        assert lock.refresh() is True
        lock.check()  # 15 minutes without a refresh: still ours
        timeline.advance(REFRESH.total_seconds() * 0.5 + 1)  # past 17.5 minutes
        with pytest.raises(LockLost, match="connection refused") as caught:
            lock.check()
        message = str(caught.value)
        assert "repository offsite: lock" in message
        assert "not refreshed for 1051 s; others may call it stale after 1800 s" in message
        assert caught.value.exit_code == ExitCode.OPERATIONAL
        assert lock.key == key  # nothing was replaced
        storage.broken = False
        assert lock.refresh() is False  # too late to take it back
    assert lock_keys(storage) == set()


def test_refresh_recovers_after_a_transient_failure(
    tmp_path: Path, timeline: Timeline, clock: HostClock
) -> None:
    storage = FlakyStorage(tmp_path / "repo", timeline)
    with take(storage, clock, exclusive=False) as lock:
        first = lock.key
        storage.broken = True
        timeline.advance(REFRESH.total_seconds())
        assert lock.refresh() is True
        assert lock.key == first
        storage.broken = False
        timeline.advance(REFRESH.total_seconds())
        assert lock.refresh() is True
        assert lock.key != first
        timeline.advance(REFRESH.total_seconds() * 3)  # 15 min since the last good refresh
        lock.check()


def test_the_holder_measures_its_age_by_the_monotonic_clock(
    storage: StampedStorage, clock: HostClock
) -> None:
    with take(storage, clock, exclusive=True) as lock:
        clock.skew += timedelta(hours=5)  # the wall clock jumps (NTP step, wrong zone)
        lock.check()
        clock.skew -= timedelta(hours=10)
        lock.check()
        assert lock.refresh() is True


class RefreshingDuringCheck(StampedStorage):
    """A refresh that happens between the check reading its key and asking the storage."""

    lock: Lock | None = None

    def size(self, key: str) -> int | None:
        lock, self.lock = self.lock, None
        if lock is not None:
            assert lock.refresh() is True  # replaces ``key`` and deletes it
        return super().size(key)


def test_a_check_within_the_confirmation_interval_does_not_ask_the_storage(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    """Before each pack a backup checks with ``confirmed_within``: the storage is asked at
    most that often; a full check (before the snapshot) always asks."""
    lock = take(storage, clock, exclusive=False)
    try:
        lock.check(confirmed_within=10)  # asks: never confirmed yet
        remove_all(storage)
        timeline.advance(9)
        lock.check(confirmed_within=10)  # within 10 s of the answer: not asked again
        timeline.advance(2)
        with pytest.raises(LockLost, match="removed by another process"):
            lock.check(confirmed_within=10)  # 11 s: asked
    finally:
        lock.release()
    again = take(storage, clock, exclusive=False)
    try:
        again.check(confirmed_within=10)
        remove_all(storage)
        with pytest.raises(LockLost, match="removed by another process"):
            again.check()  # the full check always asks
    finally:
        again.release()


def test_check_follows_a_concurrent_refresh(
    tmp_path: Path, timeline: Timeline, clock: HostClock
) -> None:
    storage = RefreshingDuringCheck(tmp_path / "repo", timeline)
    with take(storage, clock, exclusive=False) as lock:
        first = lock.key
        storage.lock = lock
        lock.check()
        assert lock.key != first
        lock.check()


def test_intervals_must_make_sense(storage: StampedStorage) -> None:
    with pytest.raises(ValueError, match="refreshed more often"):
        Lock(
            storage,
            exclusive=False,
            command="backup run",
            stale_after=timedelta(minutes=5),
            refresh_every=timedelta(minutes=5),
        )
    assert timedelta(minutes=30) == locks.STALE_AFTER
    assert timedelta(minutes=5) == locks.REFRESH_EVERY
    lock = Lock(storage, exclusive=False, command="backup run")
    assert lock.lose_after == timedelta(minutes=17, seconds=30)


def test_a_paused_holder_loses_its_lock_instead_of_renewing_it(
    storage: StampedStorage, timeline: Timeline, clock: HostClock
) -> None:
    """A process frozen past ``lose_after`` (SIGSTOP, a suspended VM) must not quietly take
    its lock back on waking: others may have called it stale, and a prune may have run."""
    with take(storage, clock, exclusive=False) as lock:
        key = lock.key
        timeline.advance(STALE_S)
        puts = len(storage.puts)
        assert lock.refresh() is False
        assert len(storage.puts) == puts
        with pytest.raises(LockLost, match="not refreshed for 1800 s; it may have been taken"):
            lock.check()
        assert lock_keys(storage) == {key}
    assert lock_keys(storage) == set()


def test_the_system_clock_counts_suspended_time() -> None:
    clock = locks.SYSTEM_CLOCK
    assert isinstance(clock.wall(), datetime)
    assert clock.wall().tzinfo is not None
    before = clock.monotonic()
    clock.sleep(0.01)
    assert clock.monotonic() - before >= 0.01
    if hasattr(time, "CLOCK_BOOTTIME"):
        assert abs(clock.monotonic() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1


# --- release ------------------------------------------------------------------------------------


def test_release_is_idempotent(storage: StampedStorage, clock: HostClock) -> None:
    lock = take(storage, clock, exclusive=True)
    lock.release()
    lock.release()
    with lock:
        pass
    assert lock.key is None
    assert lock_keys(storage) == set()
    with pytest.raises(LockLost, match="released"):
        lock.check()
    assert lock.refresh() is False


def test_exit_on_error_releases_and_keeps_the_original_error(
    storage: StampedStorage, clock: HostClock
) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), take(storage, clock, exclusive=True):
        raise Boom
    assert lock_keys(storage) == set()
