"""Restore and ``check --read-data`` through worker processes, on a small repository.

No test repository reaches the size at which workers pay for themselves (worth_workers in
backup/restore/parallel.py), so PORTALOPS_PACK_WORKERS=always forces the worker path: the
Workers pool and its starter thread, jobs and results pickled to and from workers, the
workers' own repository handles, and shutting them down when a pack is damaged. The commands
run in this process, so the test sees which processes wrote the packs and that no worker
outlives a failed restore (workers are children of the forkserver, a child of this process).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portalops.backup.restore.files import restore
from portalops.backup.restore.parallel import (
    RestoreTarget,
    Workers,
    restore_pack,
    setup_for,
)
from tests.fixtures.backup_env import BackupEnv, repository
from tests.fixtures.paths import OPS_PY
from tests.integration.test_backup_repository import describe, make_tree, restored_root

pytestmark = pytest.mark.integration

VARIABLE = "PORTALOPS_PACK_WORKERS"


def pool_workers() -> set[int]:
    """Live children of this process's forkserver (a child of this process): pool workers.
    Other fixtures' servers and their children (database servers) are not counted."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    servers = {pid for pid, parent in parents.items() if parent == os.getpid() and forkserver(pid)}
    return {pid for pid, parent in parents.items() if parent in servers}


def forkserver(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"multiprocessing.forkserver" in handle.read()
    except OSError:
        return False


def wait_no_workers(deadline_s: float = 10.0) -> set[int]:
    """The pool workers still alive once they all ended or the deadline passed."""
    deadline = time.monotonic() + deadline_s
    left = pool_workers()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = pool_workers()
    return left


def largest_pack(env: BackupEnv) -> str:
    sizes = {key: len(env.read_object(key)) for key in env.object_keys("packs/")}
    return max(sizes, key=lambda key: sizes[key])


def tree_pack(env: BackupEnv) -> str:
    """A pack holding tree blobs (read with the test's own keys)."""
    from portalops.backup.repo.keys import load_identity
    from portalops.backup.repo.pack import BlobType, read_header

    identity = load_identity(env.identity)
    for key in env.object_keys("packs/"):
        if any(
            e.type is BlobType.TREE for e in read_header(identity.decrypt(env.read_object(key)))
        ):
            return key
    raise AssertionError("no pack holds trees")


def flip_byte(env: BackupEnv, key: str) -> None:
    data = bytearray(env.read_object(key))
    data[len(data) // 2] ^= 0x01
    env.write_object(key, bytes(data))


def test_restore_and_check_through_workers(
    local_backup_env: BackupEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = local_backup_env
    src = make_tree(tmp_path, big_mib=24)  # several data packs, the big file across them
    env.add_source("portal", src)
    env.ops("backup", "run", check=True)
    assert len(env.object_keys("packs/")) >= 3
    monkeypatch.setenv(VARIABLE, "always")

    # A whole restore: packs written by workers, not this process; exact content and metadata.
    target = tmp_path / "restore"
    with repository(env) as repo:
        repo.load_index()
        snapshot = repo.read_snapshot(repo.snapshots("portal")[-1])
        result = restore(repo, snapshot, target)
    assert result.writers
    assert os.getpid() not in result.writers
    assert len(result.writers) <= (os.cpu_count() or 1)
    assert describe(restored_root(target, src)) == describe(src)
    assert wait_no_workers() == set()

    # A worker refuses a target directory that is not the one the main process opened.
    with repository(env) as repo:
        setup = setup_for(repo)
        assert setup is not None
        st = os.stat(target)
        elsewhere = RestoreTarget(os.fsencode(target), st.st_dev, st.st_ino + 1)
        with Workers(setup, 1) as workers:
            with pytest.raises(FileNotFoundError, match="replaced"):
                list(workers.map(restore_pack, [(elsewhere, largest_pack(env), [], [], None, {})]))
            assert pool_workers()  # a live worker is seen (the checks below can fail)

    # A damaged data pack (the error comes while workers write), then a damaged tree pack (it
    # comes while planning, workers starting): the same clean error and exit code as without
    # workers, and no worker left.
    data, trees = largest_pack(env), tree_pack(env)
    assert data != trees
    flip_byte(env, data)
    assert_same_failure(env, tmp_path / "damaged-data", monkeypatch)
    flip_byte(env, trees)
    assert_same_failure(env, tmp_path / "damaged-trees", monkeypatch)
    flip_byte(env, trees)  # back as it was

    # check --read-data through workers names the flipped pack.
    done = env.ops("--json", "backup", "check", "--read-data", process=False)
    assert done.code == 1, done.stderr
    [report] = json.loads(done.stdout)["repositories"]
    assert report["packs_read"] == report["packs"]
    assert [p["object"] for p in report["problems"]] == [data]
    assert wait_no_workers() == set()


def assert_same_failure(env: BackupEnv, target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: dict[str, int] = {}
    for mode in ("never", "always"):
        monkeypatch.setenv(VARIABLE, mode)
        done = env.ops("backup", "restore", "latest", "--target", f"{target}-{mode}", process=False)
        assert "Traceback" not in done.stderr, done.stderr
        assert "Exception in thread" not in done.stderr, done.stderr
        assert done.stderr.strip()
        outcomes[mode] = done.code
    assert outcomes["always"] == outcomes["never"] != 0
    assert wait_no_workers() == set()
    monkeypatch.setenv(VARIABLE, "always")


def test_a_wrong_setting_is_a_clean_error(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    local_backup_env.env[VARIABLE] = "sometimes"
    done = local_backup_env.ops("backup", "check", "--read-data", process=False)
    assert done.code == 2
    assert VARIABLE in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["never", "always"])
def test_a_restore_that_cannot_write_a_whole_file_fails(
    local_backup_env: BackupEnv, tmp_path: Path, workers: str
) -> None:
    """A full disk or a file-size limit makes a write short: the restore must fail, not
    report "every byte verified" over a file missing its tail (it did, exit 0)."""
    env = local_backup_env
    source = tmp_path / "src"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(300_000))
    env.add_source("limited", source)
    env.ops("backup", "run", "--source", "limited", check=True)
    target = tmp_path / f"out-{workers}"
    limit = 100 * 1024  # bytes a process may write to one file

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, str(OPS_PY), "--config", str(env.config), "backup", "restore",
         "latest", "--source", "limited", "--target", str(target)],
        capture_output=True, text=True, timeout=120, preexec_fn=limited,
        env={**os.environ, **env.env, VARIABLE: workers}, check=False,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "every byte verified" not in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
