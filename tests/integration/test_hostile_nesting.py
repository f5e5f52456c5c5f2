"""A hostile writer's small objects that cost a reader dearly: JSON nested thousands deep, and
one blob said to be in tens of thousands of places (found by an attacker's review).

Forged from FORMAT.md and the writer key alone (tests/hostile/forge.py); every command ends
with a named finding or refusal, never "internal error", and the genuine snapshot restores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.backup_env import BackupEnv
from tests.hostile.forge import Forger
from tests.hostile.genuine import (
    FILES,
    assert_no_internal_error,
    forged_id,
    forger,
    genuine_backup,
    genuine_index_records,
    restored_files,
)

pytestmark = pytest.mark.integration

DEEP = b"[" * 5000 + b"]" * 5000


def test_a_deeply_nested_snapshot_is_named_not_a_crash(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    key = forger(env).snapshot_bytes(
        "webroot", datetime.now(UTC) - timedelta(hours=1), b'{"stats": ' + DEEP + b"}"
    )
    listing = env.ops("--json", "backup", "list")
    assert_no_internal_error(listing.stdout + listing.stderr)
    assert listing.returncode == 1
    assert key in listing.stdout + listing.stderr
    check = env.ops("backup", "check")
    assert_no_internal_error(check.stdout + check.stderr)
    assert check.returncode == 1
    assert key in check.stdout
    prune = env.ops("backup", "forget", "--prune")
    assert_no_internal_error(prune.stdout + prune.stderr)
    assert restored_files(env, tmp_path / "r") == FILES


def test_a_deeply_nested_index_is_named_not_a_crash(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    key = forger(env).write_raw_index(b'{"version": 1, "packs": ' + DEEP + b"}")
    check = env.ops("backup", "check")
    assert_no_internal_error(check.stdout + check.stderr)
    assert check.returncode == 1
    assert key in check.stdout
    prune = env.ops("backup", "forget", "--prune")
    assert_no_internal_error(prune.stdout + prune.stderr)
    assert prune.returncode == 1  # an index that fails to read stops prune
    assert restored_files(env, tmp_path / "r1") == FILES
    env.ops("backup", "repair-index", check=True)
    env.ops("backup", "forget", "--prune", check=True)
    assert restored_files(env, tmp_path / "r2") == FILES


def test_one_blob_in_forty_thousand_places_costs_linear_time(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Reading this 34 KB index took 426 s when each new location was compared with every
    earlier one; now the extra places are counted and the blob named as crowded."""
    env = local_backup_env
    genuine_backup(env, tmp_path)
    [record, *_] = genuine_index_records(env)
    row = record["blobs"][0]  # type: ignore[index]
    crowd = [{**record, "blobs": [[row[0], row[1], i, *row[3:]] for i in range(40_000)]}]
    Forger.write_index(forger(env), crowd)
    check = env.ops("--json", "backup", "check", timeout=120)
    assert_no_internal_error(check.stdout + check.stderr)
    assert check.returncode == 1
    problems = json.loads(check.stdout)["repositories"][0]["problems"]
    assert any("too many places" in p["problem"] for p in problems)
    prune = env.ops("backup", "forget", "--prune", timeout=120)
    assert prune.returncode == 1
    assert "more than 16 places" in prune.stderr
    assert restored_files(env, tmp_path / "r") == FILES


def test_one_blob_named_a_million_times_is_refused_before_planning(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A few kilobytes of trees whose files list one blob 900,000 times, reused over eight
    levels: 230 million references that once planned into an out-of-memory."""
    env = local_backup_env
    genuine_backup(env, tmp_path)
    attacker = forger(env)
    node = attacker.file_node("f", b"x")
    node["content"] = node["content"] * 900_000
    node["size"] = 900_000
    subtree = attacker.tree([node])
    for _ in range(8):
        subtree = attacker.tree(
            [attacker.subtree_node("a", subtree), attacker.subtree_node("b", subtree)]
        )
    key = attacker.commit(
        "webroot", datetime.now(UTC) - timedelta(hours=1), [attacker.subtree_node("x", subtree)]
    )
    snapshot_id = forged_id(key)
    target = tmp_path / "t"
    result = env.ops("backup", "restore", snapshot_id, "--target", str(target), timeout=300)
    assert_no_internal_error(result.stdout + result.stderr)
    assert result.returncode == 1
    assert "refused before anything was written" in result.stderr
    assert not target.exists()
    assert restored_files(env, tmp_path / "r") == FILES


def test_terabytes_named_in_a_small_tree_are_refused_for_want_of_space(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    attacker = forger(env)
    node = attacker.file_node("huge", bytes(4 << 20))
    node["content"] = node["content"] * 100_000  # 400 GiB from one 4 MiB blob
    node["size"] = 100_000 << 22
    key = attacker.commit("webroot", datetime.now(UTC) - timedelta(hours=1), [node])
    target = tmp_path / "t"
    result = env.ops("backup", "restore", forged_id(key), "--target", str(target))
    assert_no_internal_error(result.stdout + result.stderr)
    assert result.returncode == 3
    assert "bytes free" in result.stderr
    assert "nothing was written" in result.stderr
    assert not target.exists()


def test_set_id_bits_a_backup_host_wrote_are_dropped(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    attacker = forger(env)
    program = attacker.file_node("suid", b"#!/bin/sh\nid\n")
    program["mode"] = 0o6755
    key = attacker.commit("webroot", datetime.now(UTC) - timedelta(hours=1), [program])
    snapshot_id = forged_id(key)
    plain = env.ops("backup", "restore", snapshot_id, "--target", str(tmp_path / "a"), check=True)
    assert "set-user/group-id" in plain.stdout
    assert (tmp_path / "a" / "suid").stat().st_mode & 0o7777 == 0o755
    env.ops(
        "backup", "restore", snapshot_id, "--target", str(tmp_path / "b"), "--keep-setid",
        check=True,
    )  # fmt: skip
    assert (tmp_path / "b" / "suid").stat().st_mode & 0o7777 == 0o6755
