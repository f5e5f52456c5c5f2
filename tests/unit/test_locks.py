"""Repository locks on a local directory: sharing, exclusion, staleness, refresh, unlock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

import pytest

from backup import locks
from backup.locks import Lock, LockLost, RepositoryLocked, list_locks, remove_all, remove_stale
from backup.storage import LocalStorage, StorageError
from portalops.errors import ExitCode


class Timing(TypedDict):
    stale_after: timedelta
    refresh_every: timedelta


FAST: Timing = {"stale_after": timedelta(seconds=2), "refresh_every": timedelta(seconds=0.05)}


@pytest.fixture
def storage(tmp_path):
    return LocalStorage("offsite", tmp_path / "repo")


def lock_keys(storage) -> set[str]:
    return {obj.key for obj in storage.list("locks/")}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def write_lock(
    storage,
    name: str,
    *,
    exclusive: bool = True,
    host: str = "db1.example.gov.vn",
    pid: int = 4242,
    command: str = "backup forget --prune",
    age: timedelta = timedelta(0),
) -> str:
    """Write a lock object as another process would have."""
    when = datetime.now(UTC) - age
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
    return key


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def wait_until(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# --- sharing and exclusion ----------------------------------------------------------------------


def test_lock_object_format(storage):
    with Lock.acquire(storage, exclusive=False, command="backup run", **FAST) as lock:
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
        assert record["created"].endswith("Z")
        for field in ("created", "refreshed"):
            assert datetime.fromisoformat(record[field]).utcoffset() == timedelta(0)


def test_shared_locks_coexist(storage):
    with (
        Lock.acquire(storage, exclusive=False, command="backup run --source web", **FAST) as a,
        Lock.acquire(storage, exclusive=False, command="backup run --source db", **FAST) as b,
    ):
        assert lock_keys(storage) == {a.key, b.key}
        infos = list_locks(storage)
        assert [i.stale for i in infos] == [False, False]
    assert lock_keys(storage) == set()


def test_exclusive_blocks_shared_with_a_clear_message(storage):
    with Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST) as held:
        with pytest.raises(RepositoryLocked) as caught:
            Lock.acquire(storage, exclusive=False, command="backup run", **FAST)
        message = str(caught.value)
        assert "repository offsite is locked by an exclusive lock of 'backup forget --prune'" in (
            message
        )
        assert f"host {socket.gethostname()}" in message
        assert f"pid {os.getpid()}" in message
        assert "since 20" in message
        assert "run 'ops backup unlock' if that process is gone" in message
        assert caught.value.exit_code == ExitCode.OPERATIONAL
        assert int(caught.value.exit_code) == 3
        assert caught.value.holder.key == held.key
        # The refused locker left nothing behind.
        assert lock_keys(storage) == {held.key}


def test_shared_blocks_exclusive(storage):
    write_lock(storage, "a" * 32, exclusive=False, command="backup run --source portal")
    with pytest.raises(RepositoryLocked) as caught:
        Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST)
    message = str(caught.value)
    assert "a shared lock of 'backup run --source portal'" in message
    assert "host db1.example.gov.vn" in message
    assert "pid 4242" in message
    assert lock_keys(storage) == {"locks/" + "a" * 32}


def test_exclusive_blocks_exclusive(storage):
    with (
        Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST),
        pytest.raises(RepositoryLocked),
    ):
        Lock.acquire(storage, exclusive=True, command="backup check", **FAST)


class RacingStorage(LocalStorage):
    """Another exclusive locker writes its object right after ours: the race both-check stops."""

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if key.startswith("locks/") and not self.raced:
            self.raced = True
            write_lock(self, "f" * 32, exclusive=True, host="web2", pid=77)

    raced = False


def test_racing_exclusive_lockers_back_off(tmp_path):
    storage = RacingStorage("offsite", tmp_path / "repo")
    with pytest.raises(RepositoryLocked, match="host web2, pid 77"):
        Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST)
    # We deleted our own object after seeing the other one; theirs is untouched.
    assert lock_keys(storage) == {"locks/" + "f" * 32}


def test_wait_succeeds_once_the_other_lock_is_released(storage):
    holder = Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST)
    timer = threading.Timer(0.3, holder.release)
    timer.start()
    started = time.monotonic()
    try:
        with Lock.acquire(storage, exclusive=False, command="backup run", wait=5, **FAST) as lock:
            waited = time.monotonic() - started
            assert lock_keys(storage) == {lock.key}
    finally:
        timer.join()
    assert 0.25 <= waited < 3


def test_wait_gives_up_after_the_wait(storage):
    with Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST):
        started = time.monotonic()
        with pytest.raises(RepositoryLocked):
            Lock.acquire(storage, exclusive=True, command="backup check", wait=0.3, **FAST)
        assert 0.25 <= time.monotonic() - started < 1.5


# --- staleness ----------------------------------------------------------------------------------


def test_stale_by_time_is_ignored_and_removed(storage):
    old = write_lock(storage, "b" * 32, age=timedelta(minutes=31))
    fresh = write_lock(storage, "c" * 32, exclusive=False, age=timedelta(minutes=29))
    assert {i.key: i.stale for i in list_locks(storage)} == {old: True, fresh: False}
    # The stale exclusive lock does not block a backup.
    with Lock.acquire(storage, exclusive=False, command="backup run", **FAST) as lock:
        removed = remove_stale(storage)
        assert [i.key for i in removed] == [old]
        assert removed[0].host == "db1.example.gov.vn"
        assert lock_keys(storage) == {fresh, lock.key}


def test_stale_by_time_with_a_short_stale_interval(storage):
    # Staleness is judged by the reader's interval: to these lockers, a holder that has not
    # refreshed for 0.2 s is stale even though its pid lives.
    short: Timing = {"stale_after": timedelta(seconds=0.2), "refresh_every": timedelta(seconds=0.1)}
    slow: Timing = {"stale_after": timedelta(seconds=120), "refresh_every": timedelta(seconds=60)}
    holder = Lock.acquire(storage, exclusive=True, command="backup forget --prune", **slow)
    try:
        with pytest.raises(RepositoryLocked):
            Lock.acquire(storage, exclusive=False, command="backup run", **short)
        time.sleep(0.3)
        with Lock.acquire(storage, exclusive=False, command="backup run", **short) as lock:
            assert {i.key for i in remove_stale(storage, timedelta(seconds=0.2))} == {holder.key}
            assert lock_keys(storage) == {lock.key}
    finally:
        holder.release()


def test_stale_by_dead_pid_on_this_host(storage):
    pid = dead_pid()
    dead = write_lock(storage, "d" * 32, host=socket.gethostname(), pid=pid)
    # The same pid on another host cannot be checked from here: that lock stays live.
    remote = write_lock(storage, "e" * 32, exclusive=False, host="elsewhere", pid=pid)
    assert {i.key: i.stale for i in list_locks(storage)} == {dead: True, remote: False}
    with Lock.acquire(storage, exclusive=False, command="backup run", **FAST) as lock:
        assert [i.key for i in remove_stale(storage)] == [dead]
        assert lock_keys(storage) == {remote, lock.key}


def test_garbage_in_locks_is_unreadable_and_stale(storage):
    storage.put("locks/binary", b"\xff\xfe\x00 not json")
    storage.put("locks/list", b"[1, 2, 3]")
    storage.put("locks/v2", json.dumps({"version": 2, "exclusive": True}).encode())
    storage.put("locks/types", json.dumps({"version": 1, "exclusive": "yes"}).encode())
    write_lock(storage, "zero-pid", pid=0)
    good = write_lock(storage, "naive", exclusive=False)
    record = json.loads(storage.get(good))
    record["refreshed"] = "2026-11-28T10:00:00"  # no time zone
    storage.put("locks/naive-time", json.dumps(record).encode())

    infos = {i.key: i for i in list_locks(storage)}
    unreadable = {k for k, i in infos.items() if i.problem}
    assert unreadable == {
        "locks/binary",
        "locks/list",
        "locks/v2",
        "locks/types",
        "locks/zero-pid",
        "locks/naive-time",
    }
    assert all(infos[k].stale for k in unreadable)
    assert "unknown lock version 2" in (infos["locks/v2"].problem or "")
    assert not infos[good].stale

    with Lock.acquire(storage, exclusive=False, command="backup run", **FAST):
        pass
    assert {i.key for i in remove_stale(storage)} == unreadable
    assert lock_keys(storage) == {good}


def test_remove_all_removes_live_locks_too(storage):
    lock = Lock.acquire(storage, exclusive=False, command="backup run", **FAST)
    other = write_lock(storage, "a" * 32, age=timedelta(hours=2))
    try:
        assert {i.key for i in remove_all(storage)} == {lock.key, other}
        assert lock_keys(storage) == set()
        # The holder notices at its next refresh and stops rather than run unprotected.
        wait_until(lambda: _raises(lock.check))
        with pytest.raises(LockLost, match="was removed by another process"):
            lock.check()
        assert lock_keys(storage) == set()
    finally:
        lock.release()


def _raises(check) -> bool:
    try:
        check()
    except LockLost:
        return True
    return False


# --- refresh ------------------------------------------------------------------------------------


def test_refresh_replaces_the_object(storage):
    with Lock.acquire(storage, exclusive=False, command="backup run", **FAST) as lock:
        first = lock.key
        first_record = json.loads(storage.get(first))
        wait_until(lambda: lock.key != first and lock_keys(storage) == {lock.key})
        assert first not in lock_keys(storage)
        current = lock.key
        record = json.loads(storage.get(current))
        assert record["created"] == first_record["created"]
        assert record["refreshed"] > first_record["refreshed"]
        lock.check()
    assert lock_keys(storage) == set()


class FlakyStorage(LocalStorage):
    """Fails every put once ``broken`` is set, like an unreachable S3 endpoint."""

    broken = False

    def put(self, key: str, data: bytes) -> None:
        if self.broken:
            raise StorageError(self.name, f"cannot write {key}: connection refused")
        super().put(key, data)


def test_check_fails_when_refresh_has_failed_for_longer_than_the_stale_time(tmp_path):
    storage = FlakyStorage("offsite", tmp_path / "repo")
    timing: Timing = {
        "stale_after": timedelta(seconds=0.3),
        "refresh_every": timedelta(seconds=0.02),
    }
    with Lock.acquire(storage, exclusive=False, command="backup run", **timing) as lock:
        key = lock.key
        storage.broken = True
        time.sleep(0.1)
        lock.check()  # failing, but not yet for longer than the stale time
        wait_until(lambda: _raises(lock.check))
        with pytest.raises(LockLost, match="connection refused") as caught:
            lock.check()
        assert caught.value.exit_code == ExitCode.OPERATIONAL
        assert "repository offsite" in str(caught.value)
        assert lock.key == key  # nothing was replaced
        storage.broken = False
    assert lock_keys(storage) == set()


def test_refresh_recovers_after_a_transient_failure(tmp_path):
    storage = FlakyStorage("offsite", tmp_path / "repo")
    with Lock.acquire(storage, exclusive=False, command="backup run", **FAST) as lock:
        first = lock.key
        storage.broken = True
        time.sleep(0.15)
        assert lock.key == first
        storage.broken = False
        wait_until(lambda: lock.key != first)
        lock.check()


def test_intervals_must_make_sense(storage):
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


# --- release ------------------------------------------------------------------------------------


def test_release_is_idempotent(storage):
    lock = Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST)
    thread_name = "lock-refresh-" + (lock.key or "")[len("locks/") :][:8]
    assert thread_name in {t.name for t in threading.enumerate()}
    lock.release()
    lock.release()
    with lock:
        pass
    assert lock.key is None
    assert lock_keys(storage) == set()
    with pytest.raises(LockLost, match="released"):
        lock.check()
    assert thread_name not in {t.name for t in threading.enumerate()}


def test_exit_on_error_releases_and_keeps_the_original_error(storage):
    class Boom(Exception):
        pass

    with (
        pytest.raises(Boom),
        Lock.acquire(storage, exclusive=True, command="backup forget --prune", **FAST),
    ):
        raise Boom
    assert lock_keys(storage) == set()


def test_no_locks_directory(storage):
    assert list_locks(storage) == []
    assert remove_stale(storage) == []
    assert remove_all(storage) == []


def test_a_paused_holder_loses_its_lock_instead_of_renewing_it(tmp_path: Path) -> None:
    """A process frozen past the stale time (SIGSTOP, suspended VM) must not quietly take
    its lock back on waking: a prune may have run while it slept."""
    storage = LocalStorage("local", tmp_path)
    lock = Lock.acquire(
        storage,
        exclusive=False,
        command="backup run",
        stale_after=timedelta(seconds=0.3),
        refresh_every=timedelta(seconds=0.1),
    )
    try:
        lock._stop.set()  # stop the refresher, as a pause would
        assert lock._thread is not None
        lock._thread.join(timeout=5)
        time.sleep(0.4)
        assert lock._refresh() is False
        with pytest.raises(LockLost, match="not refreshed"):
            lock.check()
    finally:
        lock.release()
