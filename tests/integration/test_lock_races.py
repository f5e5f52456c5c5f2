"""A prune beside a backup, at the exact moments that used to lose data; unlock by storage time.

The backup runs in this process through ``run_backup`` (what ``ops backup run`` calls), with a
step hook that runs the real ``ops backup forget --prune`` (or ``unlock --all``) as a separate
process at the chosen moment: between "repository opened" and "lock taken", and between "data
stored" and "snapshot written". No sleeps: the hook is called synchronously between steps.
Afterwards ``ops backup check --read-data`` must pass and the latest snapshot restore byte for
byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest

from portalops.backup.jobs.access import load_keys
from portalops.backup.jobs.run import SourceResult, Step, run_backup
from portalops.core.errors import ExitCode
from portalops.settings import load_settings
from tests.fixtures.backup_env import BackupEnv

pytestmark = pytest.mark.integration

KEEP_LAST_ONLY = {"last": 1, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}
MiB = 1024 * 1024


def write_corpus(src: Path, seed: int) -> None:
    """Replace ``src`` with content that depends on ``seed`` only (same seed, same bytes)."""
    shutil.rmtree(src, ignore_errors=True)
    rng = random.Random(seed)
    (src / "www").mkdir(parents=True)
    for i in range(20):
        (src / "www" / f"page-{i}.html").write_text(
            "".join(f"<p>tin {rng.random()}</p>\n" for _ in range(300))
        )
    (src / "media.bin").write_bytes(rng.randbytes(3 * MiB))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def backup_in_process(
    env: BackupEnv, hook: Callable[[Step, str], None], only: list[str] | None = None
) -> list[SourceResult]:
    """``ops backup run`` as the CLI does it, in this process, with a step hook."""
    with patch.dict(os.environ, env.env), patch("portalops.backup.jobs.run.LOCK_WAIT", 1.0):
        settings = load_settings(env.config)
        backup = settings.backup
        sources = [s for s in backup.sources if only is None or s.name in only]
        keys = load_keys(backup)
        return run_backup(
            sources, list(backup.repositories), keys, settings.state_dir, on_step=hook
        )


def at(moment: Step, source: str, action: Callable[[], None]) -> Callable[[Step, str], None]:
    """A hook that runs ``action`` once, when the backup of ``source`` reaches ``moment``."""
    done: list[bool] = []

    def hook(step: Step, name: str) -> None:
        if (step, name) == (moment, source) and not done:
            done.append(True)
            action()

    return hook


def assert_repository_whole(env: BackupEnv, sources: dict[str, Path], tmp_path: Path) -> None:
    checked = env.ops("--json", "backup", "check", "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
    for name, src in sources.items():
        target = tmp_path / f"restore-{name}"
        env.ops(
            "backup", "restore", "latest", "--source", name, "--target", str(target), check=True
        )
        assert tree_digest(target / src.relative_to("/")) == tree_digest(src)


@contextmanager
def pruned_history(env: BackupEnv, tmp_path: Path, names: list[str]) -> Iterator[dict[str, Path]]:
    """Sources backed up twice (old content, then new), then put back to their old content:
    a prune that keeps only the last snapshot deletes exactly the blobs the next backup of
    the old content will want to reuse."""
    sources = {name: tmp_path / name for name in names}
    for i, (name, src) in enumerate(sources.items()):
        write_corpus(src, seed=100 + i)
        env.add_source(name, src)
    env.ops("backup", "run", check=True)
    for i, src in enumerate(sources.values()):
        write_corpus(src, seed=200 + i)
    env.ops("backup", "run", check=True)
    for i, src in enumerate(sources.values()):
        write_corpus(src, seed=100 + i)  # back to the content the prune is about to drop
    env.retention = KEEP_LAST_ONLY
    env.write_config()
    yield sources


def prune(env: BackupEnv) -> dict[str, object]:
    doc: dict[str, object] = env.ops_json("backup", "forget", "--prune")[0]
    return doc


@pytest.mark.parametrize("before", ["one", "two"])
def test_a_prune_before_the_lock_is_taken_cannot_lose_the_backup(
    backup_env: BackupEnv, tmp_path: Path, before: str
) -> None:
    """The prune runs after the repository is opened and before the backup of ``before``
    takes its lock (for "two": after "one" was backed up in the same run). The backup must
    not deduplicate against blobs the prune deleted."""
    env = backup_env
    with pruned_history(env, tmp_path, ["one", "two"]) as sources:
        pruned: list[dict[str, object]] = []
        results = backup_in_process(env, at("lock", before, lambda: pruned.append(prune(env))))
    assert [(r.source, r.ok, r.error) for r in results] == [
        ("one", True, None),
        ("two", True, None),
    ]
    # The prune did what makes the race dangerous: it forgot old snapshots and deleted packs.
    [done] = pruned
    assert done["remove"]
    assert isinstance(done["prune"], dict)
    assert done["prune"]["packs_deleted"] > 0
    # The backup wrote (again) what the prune had removed.
    assert {r.source: r for r in results}[before].blobs_added > 0
    assert_repository_whole(env, sources, tmp_path)


def test_a_lock_removed_before_the_snapshot_stops_the_backup(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """All data is stored and indexed; then someone runs 'unlock --all' and a prune deletes
    what no snapshot uses yet. The backup must notice its lock is gone and write no
    snapshot (exit 3), rather than one whose data was just deleted."""
    env = local_backup_env
    with pruned_history(env, tmp_path, ["web"]) as sources:
        write_corpus(sources["web"], seed=300)  # new content: new packs, no snapshot yet
        before = env.ops_json("backup", "list")

        def unlock_and_prune() -> None:
            unlocked = env.ops_json("backup", "unlock", "--all")[0]
            assert len(unlocked["removed"]) == 1  # the backup's own lock
            prune(env)

        results = backup_in_process(env, at("snapshot", "web", unlock_and_prune))
    [result] = results
    assert not result.ok
    assert result.exit_code == ExitCode.OPERATIONAL
    assert "removed by another process" in (result.error or "")
    assert "stopping, since a prune may now run" in (result.error or "")
    after = env.ops_json("backup", "list")
    assert [s["id"] for s in after] == [s["id"] for s in before][-1:]  # only the prune's work
    assert env.object_keys("locks/") == []
    write_corpus(sources["web"], seed=200)  # the content of the snapshot that was kept
    assert_repository_whole(env, sources, tmp_path)


# --- unlock judges by the storage's clock ------------------------------------------------------


def forged_lock(env: BackupEnv, name: str, *, refreshed: datetime, stored: datetime) -> str:
    """A lock of another host whose stated times are ``refreshed``, stored at ``stored``."""
    key = f"locks/{name * 32}"
    record = {
        "version": 1,
        "exclusive": True,
        "host": "web7.example.gov.vn",
        "pid": 4242,
        "user": "backup",
        "command": "backup forget --prune",
        "created": refreshed.isoformat().replace("+00:00", "Z"),
        "refreshed": refreshed.isoformat().replace("+00:00", "Z"),
    }
    env.write_object(key, json.dumps(record).encode())
    ts = stored.timestamp()
    os.utime(Path(env.repo_url) / key, (ts, ts))
    return key


def test_unlock_judges_by_storage_time_not_by_the_time_a_host_wrote(
    local_backup_env: BackupEnv,
) -> None:
    """A host with its clock years ahead wrote a lock two hours ago: stale, removed. A host
    with its clock hours behind wrote one just now: live, kept."""
    env = local_backup_env
    now = datetime.now(UTC)
    two_hours_ago = now - timedelta(hours=2)
    future = forged_lock(env, "a", refreshed=now + timedelta(days=900), stored=two_hours_ago)
    behind = forged_lock(env, "b", refreshed=now - timedelta(hours=7), stored=now)
    done = env.ops_json("backup", "unlock")[0]
    assert done["removed"] == [future]
    assert done["remaining"] == [behind]
    assert env.object_keys("locks/") == [behind]  # the probe unlock wrote is gone too


def _second_repository_with_a_prune_lock(env: BackupEnv, tmp_path: Path, stated: str) -> Path:
    """A source, a second repository, both initialised, and in the second an exclusive lock
    of another host's prune stating ``stated`` as its times; returns the second's locks/."""
    src = tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("hello\n")
    env.more_repositories.append({"name": "second", "url": str(tmp_path / "second")})
    env.add_source("web", src)
    env.ops("backup", "init", check=True)
    lock = {
        "version": 1,
        "exclusive": True,
        "host": "admin.example",
        "pid": 4242,
        "user": "root",
        "command": "backup forget --prune",
        "created": stated,
        "refreshed": stated,
    }
    locks = tmp_path / "second" / "locks"
    locks.mkdir(exist_ok=True)
    (locks / ("a" * 32)).write_text(json.dumps(lock))
    return locks


def test_sigint_while_waiting_for_a_lock_releases_the_others(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """SIGINT (what `ops schedule` sends on stop) while `ops backup run` waits for one
    repository's lock: it stops at once, and the lock it holds on the other is released."""
    env = local_backup_env
    # A live prune of another host holds "second" (fresh by the storage's clock).
    _second_repository_with_a_prune_lock(env, tmp_path, "2030-01-01T00:00:00Z")
    main_locks = Path(env.repo_url) / "locks"
    proc = env.popen("backup", "run")
    deadline = time.monotonic() + 30
    while not (main_locks.is_dir() and any(main_locks.iterdir())):
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # the backup is now waiting for "second"
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=20)
    except Exception:
        proc.kill()  # what `ops schedule` does after STOP_GRACE
        proc.wait()
        left = sorted(p.name for p in main_locks.iterdir())
        pytest.fail(f"still running 20 s after SIGINT; killed; locks left in main: {left}")
    assert code == 130
    assert list(main_locks.iterdir()) == []  # the shared lock on "main" was released


def test_a_lock_object_with_a_time_out_of_range_is_unreadable_not_a_crash(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A writer's lock object whose times have no UTC year ("0001-01-01T00:00:00+05:00")
    is an unreadable lock, which blocks nothing (as any unreadable lock): the run does not
    crash on it, backs up into both repositories and leaves no lock of its own behind."""
    env = local_backup_env
    env_second = _second_repository_with_a_prune_lock(env, tmp_path, "0001-01-01T00:00:00+05:00")
    with patch.dict(os.environ, env.env), patch("portalops.backup.jobs.run.LOCK_WAIT", 1.0):
        settings = load_settings(env.config)
        backup = settings.backup
        results = run_backup(
            list(backup.sources), list(backup.repositories), load_keys(backup), settings.state_dir
        )
    assert [(r.repository, r.ok) for r in results] == [("main", True), ("second", True)]
    assert [p.name for p in env_second.iterdir()] == ["a" * 32]
    assert list((Path(env.repo_url) / "locks").iterdir()) == []  # "main"'s lock released
