"""Database drills (Art. 11.3): dumps load into a throwaway server and match their record.

The sources dump databases of the session's real PostgreSQL and MariaDB servers; the drill
loads them into throwaway servers of its own (or a configured scratch server) and compares
every table's row count with the snapshot's ``stats``. The failing cases craft snapshots the
way damage or a bug would leave them: a dump missing rows its record counts, a record that
disagrees with its dump. Throwaway servers and scratch space must be gone afterwards, always.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from portalops.backup.repo.snapshot import Snapshot
from tests.fixtures.backup_env import BackupEnv, repository
from tests.fixtures.databases import (
    ARTICLES,
    my_source,
    option_file,
    pg_connect,
    pg_source,
    seed_mariadb,
    seed_postgres,
)
from tests.fixtures.mariadb import MariaDBServer
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

DRILL_USER = "portal-ops-drill"


def drill(env: BackupEnv, *args: str) -> tuple[int, dict[str, Any], str]:
    done = env.ops("--json", "drill", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def steps(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result["steps"]}


def drill_servers_running() -> list[str]:
    """Processes of the drill's user: a throwaway server left behind shows up here."""
    done = subprocess.run(
        ["pgrep", "-a", "-u", DRILL_USER], capture_output=True, text=True, check=False
    )
    return done.stdout.splitlines()


def assert_cleaned_up(scratch: Path) -> None:
    assert drill_servers_running() == []
    assert list(scratch.iterdir()) == [], "scratch space left behind"


def craft(env: BackupEnv, source: str, change: Callable[[Snapshot], Snapshot]) -> None:
    """Write a new latest snapshot of ``source``: ``change`` applied to the current latest."""
    with repository(env) as repo:
        latest = repo.read_snapshot(repo.snapshots(source)[-1])
        crafted = change(latest)
        repo.write_snapshot(dataclasses.replace(crafted, time=latest.time + timedelta(seconds=1)))


@pytest.fixture
def db_env(
    backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    scratch: Path,
    tmp_path: Path,
) -> tuple[BackupEnv, str, str, Path]:
    """A PostgreSQL and a MariaDB source with a few tables each, backed up once."""
    pg_db, my_db = pg_database(), my_database()
    seed_postgres(postgres_server, pg_db)
    seed_mariadb(mariadb_server, my_db)
    options = option_file(tmp_path / "my.cnf", mariadb_server.user, mariadb_server.password)
    backup_env.sources += [
        pg_source(postgres_server, "portal-db", [pg_db]),
        my_source(mariadb_server, "portal-my", [my_db], options),
    ]
    backup_env.write_config(
        drill={
            "scratch_dir": str(scratch),
            "smoke": [
                {"source": "portal-db", "sql": "select count(*) from articles", "min": 1},
                {"source": "portal-my", "sql": "select count(*) from tin_bai", "min": 60},
            ],
        }
    )
    backup_env.ops("backup", "run", check=True)
    return backup_env, pg_db, my_db, scratch


def test_database_drills_load_the_dumps_and_match_the_record(
    db_env: tuple[BackupEnv, str, str, Path],
) -> None:
    env, _, _, scratch = db_env
    code, doc, _ = drill(env)
    assert code == 0, [r["reasons"] for r in doc["results"]]
    results = {r["source"]: r for r in doc["results"]}
    pg, my = steps(results["portal-db"]), steps(results["portal-my"])
    assert pg["load into PostgreSQL"]["detail"] == "1 database loaded"
    assert my["load into MariaDB"]["detail"] == "1 database loaded"
    for done in (pg, my):
        assert done["row counts"] == {**done["row counts"], "ok": True, "detail": "as recorded"}
        assert done["smoke queries"]["ok"] is True
    # loading the dump is part of getting the service back: it counts toward the restore time
    pg_restore_seconds = results["portal-db"]["restore_seconds"]
    assert pg_restore_seconds >= pg["restore"]["seconds"] + pg["load into PostgreSQL"]["seconds"]
    assert_cleaned_up(scratch)


def test_a_dump_missing_rows_fails_naming_the_table(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    scratch: Path,
) -> None:
    """Day one is recorded with 240 articles; the crafted snapshot pairs that record with a
    dump taken after 6 rows went: the dump restores cleanly, with rows missing."""
    env = local_backup_env
    db = pg_database()
    seed_postgres(postgres_server, db)
    env.sources.append(pg_source(postgres_server, "portal-db", [db]))
    env.write_config(drill={"scratch_dir": str(scratch)})
    env.ops("backup", "run", check=True)
    with repository(env) as repo:
        day_one = repo.read_snapshot(repo.snapshots("portal-db")[-1])
    with pg_connect(postgres_server, db) as conn:
        conn.execute("DELETE FROM articles WHERE id > %s", (ARTICLES - 6,))
    env.ops("backup", "run", check=True)
    craft(env, "portal-db", lambda day_two: dataclasses.replace(day_two, stats=day_one.stats))

    code, doc, _ = drill(env)
    assert code == 1
    [result] = doc["results"]
    assert result["source"] == "portal-db"
    assert (
        f"row counts: database {db}: table public.articles: {ARTICLES - 6} rows restored, "
        f"{ARTICLES} recorded at backup"
    ) in result["reasons"]
    assert len(result["reasons"]) == 1, result["reasons"]  # units is as recorded
    assert_cleaned_up(scratch)


def test_stats_that_disagree_with_the_data_fail_the_drill(
    db_env: tuple[BackupEnv, str, str, Path],
) -> None:
    env, _, my_db, scratch = db_env

    def more_rows(snapshot: Snapshot) -> Snapshot:
        stats = json.loads(json.dumps(snapshot.stats))
        stats["databases"][my_db]["tables"]["tin_bai"] += 6
        stats["databases"][my_db]["tables"]["old_table"] = 3
        return dataclasses.replace(snapshot, stats=stats)

    craft(env, "portal-my", more_rows)
    code, doc, _ = drill(env, "--source", "portal-my")
    assert code == 1
    [result] = doc["results"]
    assert result["reasons"] == [
        f"row counts: database {my_db}: table old_table: missing after restore "
        "(3 rows recorded); "
        f"database {my_db}: table tin_bai: 60 rows restored, 66 recorded at backup"
    ]
    assert_cleaned_up(scratch)


def test_a_failing_smoke_query_fails_the_drill(
    db_env: tuple[BackupEnv, str, str, Path],
) -> None:
    env, pg_db, _, scratch = db_env
    env.write_config(
        drill={
            "scratch_dir": str(scratch),
            "smoke": [
                {"source": "portal-db", "sql": "select count(*) from articles", "min": 1000},
                {"source": "portal-db", "sql": "select count(*) from no_such_table"},
                # read-only: a smoke query cannot change the restored data
                {"source": "portal-db", "sql": "insert into units values (9, 'x') returning 1"},
            ],
        }
    )
    code, doc, _ = drill(env, "--source", "portal-db")
    assert code == 1
    [result] = doc["results"]
    detail = steps(result)["smoke queries"]["detail"]
    assert (
        "smoke query 'select count(*) from articles' on "  # noqa: S608 (a message)
        f"{pg_db} returned {ARTICLES}, expected at least 1000"
    ) in detail
    assert 'relation "no_such_table" does not exist' in detail
    assert "read-only transaction" in detail
    assert steps(result)["row counts"]["ok"] is True
    assert_cleaned_up(scratch)


def test_drill_into_a_configured_scratch_server_drops_its_databases(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    scratch: Path,
) -> None:
    env = local_backup_env
    db = pg_database()
    seed_postgres(postgres_server, db)
    env.sources.append(pg_source(postgres_server, "portal-db", [db]))
    env.write_config(
        drill={
            "scratch_dir": str(scratch),
            "postgres": {
                "dsn": f"host={postgres_server.host} port={postgres_server.port} user=postgres",
                "bin_dir": str(postgres_server.bin_dir),
            },
        }
    )
    env.ops("backup", "run", check=True)
    code, doc, stderr = drill(env)
    assert code == 0, (doc, stderr)
    with pg_connect(postgres_server) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'drill\\_%'")
        assert left.fetchall() == []
    assert_cleaned_up(scratch)


def test_an_unreachable_scratch_dir_is_named(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    tmp_path: Path,
) -> None:
    env = local_backup_env
    db = pg_database()
    env.sources.append(pg_source(postgres_server, "portal-db", [db]))
    env.write_config(drill={"scratch_dir": str(tmp_path / "scratch")})
    env.ops("backup", "run", check=True)
    code, doc, _ = drill(env)
    assert code == 1
    [reason] = doc["results"][0]["reasons"]
    assert reason.startswith(f"load into PostgreSQL: drill.scratch_dir {tmp_path / 'scratch'}: ")
    assert "the throwaway database servers run as portal-ops-drill, who cannot enter" in reason
    assert_cleaned_up(tmp_path / "scratch")


def test_smoke_queries_must_name_database_sources(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    env.add_source("webroot", env.root)
    config = env.write_config(drill={"smoke": [{"source": "webroot", "sql": "select 1"}]})
    done = env.ops("drill")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{config}:" in done.stderr
    assert "source 'webroot' is a files source; smoke queries run on postgres and mariadb" in (
        done.stderr
    )
