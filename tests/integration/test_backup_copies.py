"""Copies of a backup in several repositories. One read of each source for every repository:
a database dumped once feeds the local and the offsite (S3) copy; a repository that fails
during the run leaves the other whole, and is filled in by the next run although the files
cache says nothing changed.

All through the real ``ops`` CLI, a real PostgreSQL (its own statement log counts the dumps)
and the moto S3 server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.fixtures.backup_env import BackupEnv, s3_env
from tests.fixtures.databases import pg_connect, pg_source
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.procs import run
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration


def add_offsite(env: BackupEnv, s3: S3Server) -> str:
    """An S3 repository named offsite beside the env's own, initialised with the same keys."""
    bucket = s3.new_bucket_name()
    s3.client().create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": s3.region}
    )
    env.env.update(s3_env(s3))
    env.more_repositories.append(
        {"name": "offsite", "url": f"s3://{bucket}/portal", "endpoint": s3.endpoint_url}
    )
    env.write_config()
    env.ops("backup", "init", "--repository", "offsite", check=True)
    return bucket


def add_second_local(env: BackupEnv) -> Path:
    path = env.root / "second"
    env.more_repositories.append({"name": "second", "url": str(path)})
    env.write_config()
    env.ops("backup", "init", "--repository", "second", check=True)
    return path


def backup_run(env: BackupEnv) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    result = env.ops("--json", "backup", "run")
    assert "Traceback" not in result.stderr, result.stderr
    doc = json.loads(result.stdout)
    return result.code, {(r["source"], r["repository"]): r for r in doc["results"]}


def listed(env: BackupEnv) -> dict[str, list[dict[str, Any]]]:
    """``backup list --json`` by repository, oldest first."""
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for doc in env.ops_json("backup", "list"):
        by_repository.setdefault(doc["repository"], []).append(doc)
    return by_repository


def digest(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_database_is_dumped_once_for_local_and_offsite(
    local_backup_env: BackupEnv,
    s3_server: S3Server,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env, server = local_backup_env, postgres_server
    add_offsite(env, s3_server)
    db = pg_database()
    marker = f"once_{secrets.token_hex(4)}"  # a table only this test's dumps copy
    with pg_connect(server, db) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int, unit text)").format(sql.Identifier(marker)))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT i, 'Xã Đạo Trù ' || i FROM generate_series(1, 5000) i"
            ).format(sql.Identifier(marker))
        )
        # The server logs every statement run in this database: each pg_dump's COPY of it.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(sql.Identifier(db))
        )
    env.sources.append(pg_source(server, "portal-db", [db]))
    env.write_config()
    copies_before = server.log.read_text(errors="replace").count(f"COPY public.{marker} ")

    code, results = backup_run(env)

    assert code == 0, results
    assert server.log.read_text(errors="replace").count(f"COPY public.{marker} ") == (
        copies_before + 1
    )
    local, offsite = results[("portal-db", "main")], results[("portal-db", "offsite")]
    assert local["status"] == offsite["status"] == "ok"
    assert local["bytes"] == offsite["bytes"] > 0
    # Each copy stores everything once: neither repository had any of it.
    assert local["bytes_added"] == offsite["bytes_added"] > 0
    snapshots = listed(env)
    [in_local], [in_offsite] = snapshots["main"], snapshots["offsite"]
    assert in_local["tree"] == in_offsite["tree"]  # the same dump's bytes, to the last one
    assert in_local["run"] == in_offsite["run"]
    assert len(in_local["run"]) == 32
    assert in_local["id"] != in_offsite["id"]  # two objects, each its repository's own

    # The offsite copy restores on its own into a database with the dumped rows.
    target = env.root / "from-offsite"
    env.ops(
        "backup", "restore", "latest", "--repository", "offsite", "--source", "portal-db",
        "--target", str(target), check=True,
    )  # fmt: skip
    copy = pg_database()
    run(
        [server.bin("pg_restore"), "--exit-on-error", "--no-password", "-d",
         server.dsn_for(server.superuser, dbname=copy), str(target / f"{db}.dump")],
        what="pg_restore of the offsite copy",
        timeout=300,
    )  # fmt: skip
    with pg_connect(server, copy) as conn:
        query = sql.SQL("SELECT count(*), max(unit) FROM {}").format(sql.Identifier(marker))
        assert conn.execute(query).fetchone() == (5000, "Xã Đạo Trù 999")

    # A second run: one more dump, and each repository adds only what changed.
    code, again = backup_run(env)
    assert code == 0, again
    assert server.log.read_text(errors="replace").count(f"COPY public.{marker} ") == (
        copies_before + 2
    )
    snapshots = listed(env)
    assert snapshots["main"][-1]["run"] == snapshots["offsite"][-1]["run"] != in_local["run"]


def test_a_repository_failing_mid_run_leaves_the_other_whole_and_the_next_run_fills_it(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    second = add_second_local(env)
    src = tmp_path / "www"
    (src / "media").mkdir(parents=True)
    for i in range(12):
        (src / "media" / f"anh-{i}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "index.html").write_text("<h1>Cổng thông tin</h1>\n", encoding="utf-8")
    env.add_source("webroot", src)
    # The second repository's disk goes bad: no pack can be written there.
    shutil.rmtree(second / "packs", ignore_errors=True)
    (second / "packs").write_bytes(b"")

    code, results = backup_run(env)

    assert code == 3, results  # a repository failed: operational, not the source
    good, bad = results[("webroot", "main")], results[("webroot", "second")]
    assert good["status"] == "ok", good
    assert bad["status"] == "failed"
    assert "packs/" in bad["error"]
    assert listed(env).get("second", []) == []  # no snapshot of data it does not hold
    entries = json.loads((env.state_dir / "backup-status.json").read_text())["entries"]
    runs = {e["repository"]: e["last_run"] for e in entries if e["source"] == "webroot"}
    assert (runs["main"]["ok"], runs["second"]["ok"]) == (True, False)
    assert runs["second"]["error"] == bad["error"]

    target = tmp_path / "from-main"
    env.ops("backup", "restore", "latest", "--repository", "main", "--source", "webroot",
            "--target", str(target), check=True)  # fmt: skip
    assert digest(target / src.relative_to("/")) == digest(src)

    # The disk is replaced; nothing changed in the webroot, and the files cache (kept for
    # both) says so: the files must still be read for the repository that lacks them.
    (second / "packs").unlink()
    code, results = backup_run(env)
    assert code == 0, results
    assert results[("webroot", "main")]["bytes_added"] < 64 * 1024  # a tree or two
    assert results[("webroot", "second")]["bytes_added"] > 30 * 1024 * 1024
    target = tmp_path / "from-second"
    env.ops("backup", "restore", "latest", "--repository", "second", "--source", "webroot",
            "--target", str(target), check=True)  # fmt: skip
    assert digest(target / src.relative_to("/")) == digest(src)
    checked = env.ops("--json", "backup", "check", "--read-data")
    assert checked.code == 0, checked.stdout + checked.stderr

