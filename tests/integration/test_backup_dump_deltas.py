"""Daily database dumps deduplicate: a day of scattered updates adds about what changed.

A real PostgreSQL table whose rows hold incompressible text; a backup, then 0.5 % of the rows
updated uniformly through the table (each moves to the end of the COPY data, as in a real
day), then another backup into local and S3 (moto) at once. Day 2's stored bytes must be a
small share of day 1's; the day-2 dump must restore from each repository into a database with
exactly the rows of the table; ``check --read-data`` must pass; and after a prune that keeps
only day 2 (day 1's snapshot gone), day 2 must still restore, since its deltas need day 1's
blobs. All through the ``ops`` CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.databases import pg_connect, pg_source
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.procs import run
from tests.fixtures.s3 import S3Server
from tests.hostile.genuine import emergency
from tests.integration.test_backup_copies import add_offsite, backup_run, listed

pytestmark = pytest.mark.integration

ROWS = 150_000
KEEP_LAST_ONLY = {"last": 1, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}
TABLE = "accounts"


def fill(server: PostgresServer, db: str) -> None:
    """``accounts``: ROWS rows of ~110 bytes, 64 of them random hex (compresses ~2:1)."""
    with pg_connect(server, db) as conn:
        conn.execute(
            "CREATE TABLE accounts (aid int PRIMARY KEY, abalance int, filler text)"
            " WITH (fillfactor = 100)"
        )
        conn.execute(
            "INSERT INTO accounts SELECT i, 0, md5(random()::text) || md5(random()::text)"
            " FROM generate_series(1, %s) i",
            (ROWS,),
        )


def dumped_database(env: BackupEnv, server: PostgresServer, pg_database: Callable[..., str]) -> str:
    """A new database with ``accounts`` filled, backed up as source ``portal-db``."""
    db = pg_database()
    fill(server, db)
    env.sources.append(pg_source(server, "portal-db", [db]))
    env.write_config()
    return db


def table_digest(server: PostgresServer, db: str) -> tuple[int, str]:
    with pg_connect(server, db) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(aid || ':' || abalance || ':' || filler, ','"
            " ORDER BY aid)) FROM accounts"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def restore_dump(
    env: BackupEnv, server: PostgresServer, pg_database: Callable[..., str], db: str, repo: str
) -> tuple[int, str]:
    """``ops backup dump latest DB.dump`` from ``repo`` into pg_restore; the table's digest."""
    dump = env.root / f"{repo}.dump"
    env.ops(
        "backup", "dump", "latest", f"{db}.dump", "--source", "portal-db",
        "--repository", repo, "--output", str(dump), check=True,
    )  # fmt: skip
    copy = pg_database()
    run(
        [server.bin("pg_restore"), "--exit-on-error", "--no-password", "-d",
         server.dsn_for(server.superuser, dbname=copy), str(dump)],
        what=f"pg_restore from {repo}",
        timeout=300,
    )  # fmt: skip
    dump.unlink()
    return table_digest(server, copy)


def ops_dump(env: BackupEnv, db: str) -> bytes:
    out = env.root / "ops.dump"
    env.ops(
        "backup", "dump", "latest", f"{db}.dump", "--source", "portal-db",
        "--repository", "main", "--output", str(out), check=True,
    )  # fmt: skip
    return out.read_bytes()


def emergency_dump(env: BackupEnv, db: str) -> bytes:
    """The latest ``portal-db`` snapshot of the local repository, restored by
    ``backup/emergency_restore.py``: the dump file's bytes."""
    key = max(env.object_keys("snapshots/portal-db/"))
    target = env.root / "emergency"
    done = emergency(env, key, target)
    assert done.returncode == 0, done.stderr
    [dump] = list(target.rglob(f"{db}.dump"))
    return dump.read_bytes()


def added(results: dict[tuple[str, str], dict[str, Any]], repo: str) -> int:
    result = results[("portal-db", repo)]
    assert result["status"] == "ok", result
    return int(result["bytes_added"])


def test_a_day_of_scattered_updates_adds_a_small_share_and_restores_everywhere(
    local_backup_env: BackupEnv,
    s3_server: S3Server,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env, server = local_backup_env, postgres_server
    add_offsite(env, s3_server)
    db = dumped_database(env, server, pg_database)

    code, day1 = backup_run(env)
    assert code == 0, day1
    first = {repo: added(day1, repo) for repo in ("main", "offsite")}
    assert first["main"] == first["offsite"] > 5_000_000

    with pg_connect(server, db) as conn:  # 0.5 % of the rows, spread through the table
        conn.execute("UPDATE accounts SET abalance = abalance + 7 WHERE aid % 200 = 123")
    expected = table_digest(server, db)
    assert expected[0] == ROWS

    code, day2 = backup_run(env)
    assert code == 0, day2
    for repo in ("main", "offsite"):
        # Whole, day 2 would store about as much as day 1 (every 1 MiB chunk holds an update).
        assert added(day2, repo) < first[repo] * 0.10, (repo, added(day2, repo), first[repo])
        assert restore_dump(env, server, pg_database, db, repo) == expected

    for repo in ("main", "offsite"):
        check = env.ops("--json", "backup", "check", "--read-data", "--repository", repo)
        assert check.code == 0, check.stdout + check.stderr
    # The stand-alone script (age, zstd, b3sum; FORMAT.md alone) restores the deltas too.
    dumped = ops_dump(env, db)
    assert emergency_dump(env, db) == dumped
    # So does a restore, in this process and in worker processes (which hold no index: each
    # job carries its deltas' base locations).
    for workers in ("never", "always"):
        target = env.root / f"restore-{workers}"
        env.env["PORTALOPS_PACK_WORKERS"] = workers
        env.ops(
            "backup", "restore", "latest", "--source", "portal-db", "--target", str(target),
            check=True,
        )  # fmt: skip
        assert (target / f"{db}.dump").read_bytes() == dumped
    del env.env["PORTALOPS_PACK_WORKERS"]
    # The index lost: rebuilt from the packs' headers, deltas checked through their bases.
    for key in env.object_keys("index/"):
        (Path(env.repo_url) / key).unlink()
    repair = env.ops("--json", "backup", "repair-index", "--repository", "main")
    assert repair.code == 0, repair.stdout + repair.stderr
    [repaired] = json.loads(repair.stdout)
    assert repaired["dropped"] == []
    assert repaired["blobs_indexed"] > 10
    assert restore_dump(env, server, pg_database, db, "main") == expected

    # Day 1's snapshot goes; its blobs that day 2's deltas are made against must stay.
    env.retention = KEEP_LAST_ONLY
    env.write_config()
    pruned = env.ops("--json", "backup", "forget", "--prune", "--repository", "main")
    assert pruned.code == 0, pruned.stdout + pruned.stderr
    assert [s["run"] for s in listed(env)["main"]] == [listed(env)["offsite"][-1]["run"]]
    assert restore_dump(env, server, pg_database, db, "main") == expected
    check = env.ops("--json", "backup", "check", "--read-data", "--repository", "main")
    assert check.code == 0, check.stdout + check.stderr

    # A third day against the same bases: still small, still restores.
    with pg_connect(server, db) as conn:
        conn.execute("UPDATE accounts SET abalance = abalance - 3 WHERE aid % 200 = 45")
    expected = table_digest(server, db)
    code, day3 = backup_run(env)
    assert code == 0, day3
    assert added(day3, "main") < first["main"] * 0.10
    assert restore_dump(env, server, pg_database, db, "main") == expected


def test_a_lost_or_damaged_bases_cache_only_costs_a_whole_dump(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    """The cache of yesterday's chunks is local state: damaged, foreign or gone, the next
    dump is stored whole (and restores), never a failed backup."""
    env, server = local_backup_env, postgres_server
    db = dumped_database(env, server, pg_database)
    code, day1 = backup_run(env)
    assert code == 0, day1
    [bases] = list(env.state_dir.glob("cache/*/portal-db.bases"))
    assert (bases / "manifest.json").stat().st_mode & 0o077 == 0
    frames = sorted(bases.glob("*.zst"))
    assert frames
    assert all(f.stat().st_mode & 0o077 == 0 for f in frames)

    # A base file replaced by other bytes, the manifest turned into junk: no delta, no error.
    frames[0].write_bytes(frames[-1].read_bytes())
    with pg_connect(server, db) as conn:
        conn.execute("UPDATE accounts SET abalance = 1 WHERE aid % 200 = 9")
    code, day2 = backup_run(env)
    assert code == 0, day2
    # That chunk goes whole (a sixteenth of the dump), the others still as deltas.
    assert 0 < added(day2, "main") < added(day1, "main") * 0.25
    (bases / "manifest.json").write_text('{"version": 1, "streams": {"x": 1}}')
    with pg_connect(server, db) as conn:
        conn.execute("UPDATE accounts SET abalance = 2 WHERE aid % 200 = 19")
    expected = table_digest(server, db)
    result = env.ops("--json", "backup", "run")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    [day3] = json.loads(result.stdout)["results"]
    assert day3["bytes_added"] > added(day1, "main") * 0.5  # whole again
    assert restore_dump(env, server, pg_database, db, "main") == expected


def test_a_chunk_starting_like_a_zstd_dictionary_is_stored_whole(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """`zstd -D` takes a file starting with the trained-dictionary magic (37 A4 30 EC) for a
    trained dictionary: a delta made against such a base would not restore by hand
    (FORMAT.md), so the writer stores such a chunk whole."""
    env = local_backup_env
    data = tmp_path / "output.bin"
    body = bytearray(b"\x37\xa4\x30\xec" + os.urandom(200_000).hex().encode())
    data.write_bytes(body)
    env.sources.append(
        {"name": "dev", "kind": "command", "category": "config", "command": ["cat", str(data)]}
    )
    env.write_config()
    code, day1 = backup_run(env)
    assert code == 0, day1
    body[1000:1004] = b"EDIT"
    data.write_bytes(body)
    code, day2 = backup_run(env)
    assert code == 0, day2
    first, second = day1[("dev", "main")], day2[("dev", "main")]
    assert second["bytes_added"] > first["bytes_added"] * 0.5  # whole, not a delta
    key = max(env.object_keys("snapshots/dev/"))
    target = tmp_path / "emergency"
    done = emergency(env, key, target)
    assert done.returncode == 0, done.stderr
    [restored] = [p for p in target.rglob("*") if p.is_file()]
    assert restored.read_bytes() == bytes(body)
