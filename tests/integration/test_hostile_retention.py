"""A compromised backup host against retention, prune and 'latest' (docs/backup.md threat model).

Every forged object comes from ``tests/hostile/forge.py``: written from FORMAT.md and the
writer key alone, as an attacker with root on a portal server would. Each case then runs the
admin's real commands (list, check, restore, drill, forget --prune, repair-index) and shows
that no genuine snapshot is lost and the genuine data still restores byte for byte.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.backup_env import BackupEnv
from tests.hostile.forge import Blob
from tests.hostile.genuine import (
    FILES,
    forger,
    genuine_backup,
    genuine_index_records,
    restored_files,
)

pytestmark = pytest.mark.integration


def test_forty_future_dated_snapshots_are_never_latest_counted_or_drilled(
    backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = backup_env
    genuine_backup(env, tmp_path)
    [genuine] = env.ops_json("backup", "list")
    attacker = forger(env)
    for i in range(40):
        when = datetime(2097 + i % 3, 1 + i % 12, 1 + i % 28, tzinfo=UTC)
        page = attacker.file_node("index.html", f"<h1>HACKED {i}</h1>".encode())
        attacker.commit(
            "webroot", when, [attacker.dir_node("srv", [attacker.dir_node("www", [page])])]
        )
    env.retention = {"last": 3, "daily": 7}
    env.write_config(drill={"scratch_dir": str(tmp_path / "scratch")})

    listed = env.ops_json("backup", "list")
    assert len(listed) == 41
    assert [s["id"] for s in listed if not s["future_dated"]] == [genuine["id"]]
    assert "!" in env.ops("backup", "list", check=True).stdout

    check = env.ops("--json", "backup", "check")
    assert check.returncode == 1, check.stderr
    named = {p["object"] for p in json.loads(check.stdout)["repositories"][0]["problems"]}
    assert len([k for k in named if k.startswith("snapshots/webroot/209")]) == 40

    # 'latest' and the drill pick the genuine snapshot; retention does not count the forged.
    assert restored_files(env, tmp_path / "r1") == FILES
    drill = json.loads(env.ops("--json", "drill").stdout)
    [result] = drill["results"]
    assert result["snapshot"] == genuine["id"], result
    assert result["ok"], result

    pruned = env.ops_json("backup", "forget", "--prune")[0]
    assert pruned["remove"] == []
    assert genuine["id"] in pruned["keep"]
    assert len(pruned["future_dated"]) == 40
    assert restored_files(env, tmp_path / "r2") == FILES
    assert env.ops("backup", "check", "--read-data").returncode == 1  # still names the forged


def test_a_shadowing_index_stops_prune_until_repaired(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """The first index read used to win: one naming every known blob in a pack that does not
    exist made restore fail and prune delete the real pack."""
    env = local_backup_env
    genuine_backup(env, tmp_path)
    packs = env.object_keys("packs/")
    ghost = "packs/00/" + "0" * 64
    shadow = [{**record, "key": ghost} for record in genuine_index_records(env)]
    forger(env).write_index(shadow, sort_first=True)

    assert restored_files(env, tmp_path / "r1") == FILES  # the next location is tried
    env.write_config(drill={"scratch_dir": str(tmp_path / "scratch")})
    drill = env.ops("--json", "drill")
    assert drill.returncode == 0, drill.stdout + drill.stderr  # its structure step too
    check = env.ops("backup", "check")
    assert check.returncode == 1
    assert ghost in check.stdout + check.stderr

    prune = env.ops("backup", "forget", "--prune")
    assert prune.returncode == 1
    assert ghost in prune.stderr
    assert "repair-index" in prune.stderr
    assert env.object_keys("packs/") == packs  # nothing deleted

    repaired = env.ops_json("backup", "repair-index")[0]
    assert repaired["packs_read"] == len(packs)
    assert not repaired["unreadable"]
    env.ops("backup", "forget", "--prune", check=True)
    assert env.object_keys("packs/") == packs
    assert env.ops_json("backup", "check", "--read-data")["ok"] is True
    assert restored_files(env, tmp_path / "r2") == FILES


def test_a_pack_described_two_ways_stops_prune(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    genuine_backup(env, tmp_path)
    packs = env.object_keys("packs/")
    # The genuine pack, said to hold only its first blob: the rest would look unused.
    lying = [{**r, "blobs": r["blobs"][:1]} for r in genuine_index_records(env)]  # type: ignore[index]
    forger(env).write_index(lying, sort_first=True)

    check = env.ops("backup", "check")
    assert check.returncode == 1
    assert "described differently" in check.stdout
    prune = env.ops("backup", "forget", "--prune")
    assert prune.returncode == 1
    assert "described differently" in prune.stderr
    assert env.object_keys("packs/") == packs

    env.ops("backup", "repair-index", check=True)
    env.ops("backup", "forget", "--prune", check=True)
    assert env.ops_json("backup", "check", "--read-data")["ok"] is True
    assert restored_files(env, tmp_path / "r") == FILES


def test_forged_copies_of_known_blobs_never_cost_the_genuine_pack(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A forged pack claiming every known blob id, with garbage in it, indexed first: its own
    header agrees with its index record, so prune goes on, but it keeps every pack that
    holds a used blob, and the genuine copies still restore."""
    env = local_backup_env
    genuine_backup(env, tmp_path)
    genuine_packs = env.object_keys("packs/")
    attacker = forger(env)
    for record in genuine_index_records(env):
        for row in record["blobs"]:  # type: ignore[attr-defined]
            attacker.add_raw_blob(Blob(bytes.fromhex(row[0]), row[1], b"evil", 4))
    forged = attacker.seal_pack()
    attacker.write_index([forged], sort_first=True)

    assert restored_files(env, tmp_path / "r1") == FILES
    env.ops("backup", "forget", "--prune", check=True)
    assert set(genuine_packs) <= set(env.object_keys("packs/"))
    read = env.ops("--json", "backup", "check", "--read-data")
    assert read.returncode == 1
    assert {p["object"] for p in json.loads(read.stdout)["repositories"][0]["problems"]} == {
        forged["key"]
    }
    assert restored_files(env, tmp_path / "r2") == FILES
