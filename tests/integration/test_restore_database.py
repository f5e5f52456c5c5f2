"""``ops backup restore … --to-database``: a database snapshot straight back into a server.

The day it is needed for real: the portal's database is gone, and the latest snapshot must
bring it back, roles and owner included, with every table counted against the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.databases import (
    ARTICLES,
    my_query,
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


def restore_db(env: BackupEnv, source: str, *args: str) -> tuple[int, dict[str, Any], str]:
    done = env.ops("--json", "backup", "restore", "latest", "--source", source, *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


def test_a_dropped_postgres_database_comes_back_with_its_owner(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env = local_backup_env
    db = pg_database(postgres_server.password_user)
    seed_postgres(postgres_server, db)
    env.sources.append(pg_source(postgres_server, "portal-db", [db]))
    env.write_config()
    env.ops("backup", "run", check=True)
    with pg_connect(postgres_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))

    dsn = f"host={postgres_server.host} port={postgres_server.port} user=postgres"
    code, doc, stderr = restore_db(env, "portal-db", "--to-database", dsn)
    assert code == 0, stderr
    assert doc["databases"] == {db: db}
    assert doc["problems"] == []
    # the cluster's roles exist already: reported, left alone, not fatal
    assert any("already exists (left as it is)" in w for w in doc["warnings"])
    with pg_connect(postgres_server, db) as conn:
        row = conn.execute("SELECT count(*) FROM articles").fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert row == (ARTICLES,)
    assert owner == (postgres_server.password_user,)


def test_restore_refuses_to_overwrite_and_can_rename(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env = local_backup_env
    db = pg_database()
    seed_postgres(postgres_server, db)
    env.sources.append(pg_source(postgres_server, "portal-db", [db]))
    env.write_config()
    env.ops("backup", "run", check=True)
    dsn = f"host={postgres_server.host} port={postgres_server.port} user=postgres"

    code, _, stderr = restore_db(env, "portal-db", "--to-database", dsn)
    assert code == 2
    assert f"database {db} already exists on postgres 127.0.0.1:{postgres_server.port}" in stderr
    assert "nothing was restored" in stderr

    copy = pg_database()  # made to be dropped at the end; dropped now to be restored into
    with pg_connect(postgres_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(copy)))
    code, doc, stderr = restore_db(env, "portal-db", "--to-database", dsn, "--as", copy)
    assert code == 0, stderr
    assert doc["databases"] == {db: copy}
    with pg_connect(postgres_server, copy) as conn:
        assert conn.execute("SELECT count(*) FROM units").fetchone() == (2,)


def test_a_mariadb_database_restores_under_a_new_name(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    env = local_backup_env
    db = my_database()
    seed_mariadb(mariadb_server, db)
    options = option_file(tmp_path / "my.cnf", mariadb_server.user, mariadb_server.password)
    env.sources.append(my_source(mariadb_server, "portal-my", [db], options))
    env.write_config()
    env.ops("backup", "run", check=True)
    copy = my_database()
    my_query(mariadb_server, f"DROP DATABASE `{copy}`")
    dsn = f"mariadb://{mariadb_server.host}:{mariadb_server.port}"

    code, doc, stderr = restore_db(
        env, "portal-my", "--to-database", dsn, "--as", copy, "--defaults-file", str(options)
    )
    assert code == 0, stderr
    assert doc["databases"] == {db: copy}
    assert doc["problems"] == []
    assert my_query(mariadb_server, "SELECT COUNT(*) FROM tin_bai", db=copy) == [(60,)]

    options.chmod(0o644)
    code, _, stderr = restore_db(
        env, "portal-my", "--to-database", dsn, "--as", "x", "--defaults-file", str(options)
    )
    assert code == 2
    assert "is open to other users (mode 0644); run chmod 600" in stderr


def test_restore_needs_one_destination(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    env.add_source("webroot", env.root / "keys")
    env.ops("backup", "run", check=True)
    code, _, stderr = restore_db(env, "webroot")
    assert code == 2
    assert "--target DIR or --to-database DSN" in stderr
    code, _, stderr = restore_db(env, "webroot", "--to-database", "host=127.0.0.1")
    assert code == 2
    assert "the snapshot holds no database dump" in stderr
