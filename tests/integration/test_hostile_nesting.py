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
from tests.integration.test_hostile_retention import (
    FILES,
    forger,
    genuine_backup,
    genuine_index_records,
    restored_files,
)

pytestmark = pytest.mark.integration

DEEP = b"[" * 5000 + b"]" * 5000


def no_internal_error(result: object) -> None:
    text = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert "internal error" not in text
    assert "Traceback" not in text


def test_a_deeply_nested_snapshot_is_named_not_a_crash(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    key = forger(env).snapshot_bytes(
        "webroot", datetime.now(UTC) - timedelta(hours=1), b'{"stats": ' + DEEP + b"}"
    )
    listing = env.ops("--json", "backup", "list")
    no_internal_error(listing)
    assert listing.returncode == 1
    assert key in listing.stdout + listing.stderr
    check = env.ops("backup", "check")
    no_internal_error(check)
    assert check.returncode == 1
    assert key in check.stdout
    prune = env.ops("backup", "forget", "--prune")
    no_internal_error(prune)
    assert restored_files(env, tmp_path / "r") == FILES


def test_a_deeply_nested_index_is_named_not_a_crash(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    key = forger(env).write_raw_index(b'{"version": 1, "packs": ' + DEEP + b"}")
    check = env.ops("backup", "check")
    no_internal_error(check)
    assert check.returncode == 1
    assert key in check.stdout
    prune = env.ops("backup", "forget", "--prune")
    no_internal_error(prune)
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
    no_internal_error(check)
    assert check.returncode == 1
    problems = json.loads(check.stdout)["repositories"][0]["problems"]
    assert any("too many places" in p["problem"] for p in problems)
    prune = env.ops("backup", "forget", "--prune", timeout=120)
    assert prune.returncode == 1
    assert "more than 16 places" in prune.stderr
    assert restored_files(env, tmp_path / "r") == FILES
