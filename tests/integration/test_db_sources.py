"""``kind: postgres`` and ``kind: mariadb`` sources through the real ``ops`` CLI (Art. 11.2:
databases), against the real servers of the fixtures.

Every dump is restored the way an operator would (``pg_restore``, ``mariadb < file``) into a
fresh database and compared with the source and with the row counts recorded at backup time,
also while a writer keeps inserting: the counts must be those of the dump's own snapshot.
Databases are uniquely named and dropped at the end; the session's servers stay clean.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from portalops.backup.engines import mariadb, postgres
from tests.fixtures.backup_env import BackupEnv, latest_stats, restore, snapshot_sources
from tests.fixtures.databases import (
    my_connect,
    my_query,
    my_source,
    option_file,
    pg_connect,
    pg_source,
)
from tests.fixtures.mariadb import MariaDBServer
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.procs import free_port, run

pytestmark = pytest.mark.integration

UNITS = [  # NFC, as the portals store them
    "Ủy ban nhân dân tỉnh Quảng Nam",
    "Xã Đạo Trù",
    "Phường Hòa Cường Bắc",
    "Thị trấn Phước Sơn — bộ phận một cửa",
]
BLOB = bytes(range(256)) * 40  # every byte value, not valid UTF-8


# -- the CLI ----------------------------------------------------------------------------------


def run_backup(env: BackupEnv, *args: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    result = env.ops("--json", "backup", "run", *args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout, (result.returncode, result.stderr)
    doc = json.loads(result.stdout)
    return (
        result.returncode,
        {r["source"]: r for r in doc["results"]},
        result.stdout + result.stderr,
    )


def add_sources(env: BackupEnv, *sources: dict[str, Any]) -> None:
    env.sources.extend(sources)
    env.write_config()


def files_source(env: BackupEnv) -> None:
    webroot = env.root / "www"
    webroot.mkdir()
    (webroot / "index.html").write_text("<h1>Cổng thông tin điện tử</h1>\n", encoding="utf-8")
    env.add_source("webroot", webroot)


# -- PostgreSQL -------------------------------------------------------------------------------


def pgbench_init(server: PostgresServer, db: str, scale: int) -> None:
    run(
        [server.bin("pgbench"), "-i", "-q", "-s", str(scale), "-h", server.host,
         "-p", str(server.port), "-U", server.superuser, db],
        what=f"pgbench -i -s {scale} {db}",
        timeout=120,
    )  # fmt: skip


def pg_restore(server: PostgresServer, dump: Path, db: str) -> None:
    run(
        [server.bin("pg_restore"), "--exit-on-error", "--no-password", "-d",
         server.dsn_for(server.superuser, dbname=db), str(dump)],
        what=f"pg_restore {dump.name} into {db}",
        timeout=300,
    )  # fmt: skip


def pg_counts(server: PostgresServer, db: str, tables: list[str]) -> dict[str, int]:
    counts = {}
    with pg_connect(server, db) as conn:
        for table in tables:
            schema, _, name = table.partition(".")
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
            row = conn.execute(query).fetchone()
            assert row is not None
            counts[table] = row[0]
    return counts


class Writer(threading.Thread):
    """Inserts rows one commit at a time until stopped, as fast as it can."""

    def __init__(self, insert: Callable[[], Callable[[], None]]) -> None:
        super().__init__(daemon=True)
        self.connect = insert
        self.inserted = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            insert = self.connect()
            while not self.stop.is_set():
                insert()
                self.inserted += 1
        except BaseException as exc:
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        self.join(timeout=30)
        assert self.error is None, self.error
        return self.inserted


def test_postgres_dump_restores_tables_vietnamese_text_and_large_objects(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env, server = local_backup_env, postgres_server
    db = pg_database()
    pgbench_init(server, db, scale=2)
    assert all(unicodedata.is_normalized("NFC", u) for u in UNITS)
    with pg_connect(server, db) as conn:
        # names that need quoting: non-ASCII, a space, capitals
        conn.execute('CREATE SCHEMA "hành_chính"')
        conn.execute(
            'CREATE TABLE "hành_chính"."Đơn vị" (id serial PRIMARY KEY, name text NOT NULL)'
        )
        for unit in UNITS:
            conn.execute('INSERT INTO "hành_chính"."Đơn vị" (name) VALUES (%s)', (unit,))
        row = conn.execute("SELECT lo_from_bytea(0, %s)", (BLOB,)).fetchone()
        assert row is not None
        lo_oid = row[0]
    add_sources(env, pg_source(server, "portal-db", [db]))

    code, results, _ = run_backup(env)
    assert code == 0, results
    assert results["portal-db"]["status"] == "ok"
    assert results["portal-db"]["files"] == 2

    stats = latest_stats(env, "portal-db")
    assert stats["server_version"].startswith("15.")
    assert stats["globals"] == {"role_passwords": True}
    assert stats["databases"] == {
        db: {
            "tables": {
                "hành_chính.Đơn vị": len(UNITS),
                "public.pgbench_accounts": 200_000,
                "public.pgbench_branches": 2,
                "public.pgbench_history": 0,
                "public.pgbench_tellers": 20,
            },
            "large_objects": 1,
        }
    }

    target = restore(env, "portal-db", env.root / "restored")
    assert sorted(p.name for p in target.iterdir()) == sorted([f"{db}.dump", "globals.sql"])
    assert "CREATE ROLE portalops_app" in (target / "globals.sql").read_text(encoding="utf-8")
    copy = pg_database()
    pg_restore(server, target / f"{db}.dump", copy)

    tables = list(stats["databases"][db]["tables"])
    assert pg_counts(server, copy, tables) == stats["databases"][db]["tables"]
    assert pg_counts(server, copy, tables) == pg_counts(server, db, tables)
    query = 'SELECT id, name FROM "hành_chính"."Đơn vị" ORDER BY id'
    with pg_connect(server, db) as original, pg_connect(server, copy) as restored:
        assert restored.execute(query).fetchall() == original.execute(query).fetchall()
        names = [r[0] for r in restored.execute('SELECT name FROM "hành_chính"."Đơn vị"')]
        assert names == UNITS
        assert restored.execute("SELECT lo_get(%s)", (lo_oid,)).fetchone() == (BLOB,)


def test_postgres_counts_are_those_of_the_dump_while_a_writer_inserts(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env, server = local_backup_env, postgres_server
    db = pg_database()
    pgbench_init(server, db, scale=3)  # a dump of a few seconds' work: the inserts overlap
    with pg_connect(server, db) as conn:
        conn.execute("CREATE TABLE visits (id bigserial PRIMARY KEY, unit text NOT NULL)")

    def connect() -> Callable[[], None]:
        conn = pg_connect(server, db)

        def insert() -> None:
            conn.execute("INSERT INTO visits (unit) VALUES (%s)", (UNITS[1],))

        return insert

    add_sources(env, pg_source(server, "portal-db", [db]))
    writer = Writer(connect)
    writer.start()
    while writer.inserted < 200:
        time.sleep(0.01)
    before = writer.inserted
    code, results, _ = run_backup(env)
    during = writer.inserted - before
    time.sleep(0.2)
    writer.finish()
    assert code == 0, results
    assert during > 100, "the writer must really insert while the backup runs"

    recorded = latest_stats(env, "portal-db")["databases"][db]["tables"]["public.visits"]
    copy = pg_database()
    pg_restore(server, restore(env, "portal-db", env.root / "r") / f"{db}.dump", copy)
    (restored,) = pg_counts(server, copy, ["public.visits"]).values()
    (live,) = pg_counts(server, db, ["public.visits"]).values()
    assert before <= recorded == restored < live


def test_postgres_password_comes_from_pgpassfile(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    tmp_path: Path,
) -> None:
    """A non-superuser that must pass SCRAM: the password only in a 0600 PGPASSFILE."""
    env, server = local_backup_env, postgres_server
    db = pg_database(owner=server.password_user)
    with psycopg.connect(server.dsn_for(server.password_user, server.password, db)) as conn:
        conn.execute("CREATE TABLE notices (id int PRIMARY KEY, title text)")
        conn.execute("INSERT INTO notices VALUES (1, %s), (2, %s)", UNITS[:2])
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{server.host}:{server.port}:*:{server.password_user}:{server.password}\n")
    passfile.chmod(0o600)
    env.env["PGPASSFILE"] = str(passfile)
    source = pg_source(server, "app-db", [db])
    source["dsn"] = f"host={server.host} port={server.port} user={server.password_user}"
    add_sources(env, source)

    code, results, output = run_backup(env)
    assert code == 0, results
    assert server.password not in output
    stats = latest_stats(env, "app-db")
    assert stats["databases"][db]["tables"] == {"public.notices": 2}
    # pg_authid is superuser-only: roles and grants without their password hashes
    assert stats["globals"] == {"role_passwords": False}
    target = restore(env, "app-db", env.root / "r")
    assert server.password not in (target / "globals.sql").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def big_pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    """pgbench -s 13: a database of about 200 MB, a dump of about 130 MB."""
    name = f"dbsrc_big_{secrets.token_hex(4)}"
    with pg_connect(postgres_server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        pgbench_init(postgres_server, name, scale=13)
        yield name
    finally:
        with pg_connect(postgres_server) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.mark.slow
def test_postgres_day_two_stores_only_the_changed_part_of_the_dump(
    local_backup_env: BackupEnv, postgres_server: PostgresServer, big_pg_database: str
) -> None:
    """0.5% of the rows change between two daily backups, the way portal data changes: the
    recent rows (the latest notices, today's records), plus appended rows.

    Scattered changes (``WHERE aid % 200 = 0``) would cost the whole dump again: pg_dump
    writes rows in their physical order, an updated row moves, and with ~1 MiB chunks a change
    every ~20 KB touches every chunk. Measured: 100% of the dump added, against ~6% here.
    """
    env, server, db = local_backup_env, postgres_server, big_pg_database
    with pg_connect(server, db) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        assert 150e6 < row[0] < 300e6
    add_sources(env, pg_source(server, "portal-db", [db]))

    code, first, _ = run_backup(env)
    assert code == 0, first
    with pg_connect(server, db) as conn:
        changed = conn.execute(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 6500"
        ).rowcount
        conn.execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
            " SELECT 1 + g % 130, 1 + g % 13, g, 5, now() FROM generate_series(1, 1000) g"
        )
    assert changed == 6500  # 0.5% of 1 300 000
    code, second, _ = run_backup(env)
    assert code == 0, second

    added_first = first["portal-db"]["raw_bytes_added"]
    added_second = second["portal-db"]["raw_bytes_added"]
    assert added_first > 100e6
    assert added_second < 0.2 * added_first, (added_first, added_second)
    stats = latest_stats(env, "portal-db")["databases"][db]["tables"]
    assert stats["public.pgbench_history"] == 1000


def test_postgres_failures_fail_their_source_only(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    env, server = local_backup_env, postgres_server
    files_source(env)
    db = pg_database()
    wrong = "not-the-password-" + secrets.token_hex(4)
    env.env["PGPASSWORD"] = wrong
    bad_password = pg_source(server, "pg-password", [db])
    bad_password["dsn"] = f"host={server.host} port={server.port} user={server.password_user}"
    add_sources(
        env,
        bad_password,
        pg_source(server, "pg-missing-db", [db, "dbsrc_does_not_exist"]),
        {**pg_source(server, "pg-down", [db]), "dsn": f"host={server.host} port={free_port()}"},
    )

    code, results, output = run_backup(env)
    assert code == 1
    assert results["webroot"]["status"] == "ok"
    for name in ("pg-password", "pg-missing-db", "pg-down"):
        assert results[name]["status"] == "failed", results[name]
    assert "password authentication failed" in results["pg-password"]["error"]
    assert "pg-password" in results["pg-password"]["error"]
    assert "'dbsrc_does_not_exist' does not exist" in results["pg-missing-db"]["error"]
    assert "cannot connect" in results["pg-down"]["error"]
    assert wrong not in output
    assert server.password not in output
    assert snapshot_sources(env) == {"webroot"}


def test_postgres_dump_cut_off_mid_stream_fails_the_source(
    local_backup_env: BackupEnv, postgres_server: PostgresServer, big_pg_database: str
) -> None:
    """The server ends pg_dump's session while it streams (as a server shutdown would)."""
    env, server, db = local_backup_env, postgres_server, big_pg_database
    files_source(env)
    add_sources(env, pg_source(server, "portal-db", [db]))
    proc = env.popen("--json", "backup", "run")
    killed: list[tuple[Any, ...]] = []
    try:
        with pg_connect(server) as conn:
            deadline = time.monotonic() + 60
            while not killed and proc.poll() is None and time.monotonic() < deadline:
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = 'pg_dump'"
                    " AND query LIKE 'COPY%%'",
                    (db,),
                ).fetchall()
                time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "pg_dump finished before it could be cut off"
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    results = {r["source"]: r for r in json.loads(stdout)["results"]}
    assert results["webroot"]["status"] == "ok"
    error = results["portal-db"]["error"]
    assert f"pg_dump of database '{db}' exited with status 1" in error
    assert "terminating connection" in error
    assert snapshot_sources(env) == {"webroot"}


# -- MariaDB ----------------------------------------------------------------------------------


def my_load(server: MariaDBServer, options: Path, dump: Path, db: str) -> None:
    with dump.open("rb") as stdin:
        done = subprocess.run(
            ["mariadb", f"--defaults-extra-file={options}", f"--host={server.host}",
             f"--port={server.port}", "--protocol=tcp", db],
            stdin=stdin, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()


def my_counts(server: MariaDBServer, db: str, tables: list[str]) -> dict[str, int]:
    # identifiers cannot be parameters; these names are the tests' own
    return {t: my_query(server, f"SELECT COUNT(*) FROM `{t}`", db=db)[0][0] for t in tables}  # noqa: S608


def make_portal_schema(server: MariaDBServer, db: str) -> None:
    conn = my_connect(server, database=db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE `đơn_vị` (id INT AUTO_INCREMENT PRIMARY KEY,"
                " name VARCHAR(200) NOT NULL, seal LONGBLOB) CHARACTER SET utf8mb4"
            )
            cur.execute(
                "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY,"
                " unit_id INT NOT NULL, note VARCHAR(200)) CHARACTER SET utf8mb4"
            )
            cur.execute(
                "CREATE TRIGGER `đơn_vị_audit` AFTER INSERT ON `đơn_vị` FOR EACH ROW"
                " INSERT INTO audit (unit_id, note) VALUES (NEW.id, CONCAT('thêm: ', NEW.name))"
            )
            for unit in UNITS:
                cur.execute("INSERT INTO `đơn_vị` (name, seal) VALUES (%s, %s)", (unit, BLOB))
    finally:
        conn.close()


def test_mariadb_dump_restores_vietnamese_text_blobs_and_triggers(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    env, server = local_backup_env, mariadb_server
    options = option_file(tmp_path / "backup.cnf", server.user, server.password)
    db = my_database()
    make_portal_schema(server, db)
    add_sources(env, my_source(server, "portal-my", [db], options))

    code, results, output = run_backup(env)
    assert code == 0, results
    assert server.password not in output
    stats = latest_stats(env, "portal-my")
    assert stats["server_version"].startswith("10.11")
    assert stats["databases"] == {
        db: {"tables": {"audit": len(UNITS), "đơn_vị": len(UNITS)}, "consistent_with_dump": True}
    }

    target = restore(env, "portal-my", env.root / "restored")
    assert sorted(p.name for p in target.iterdir()) == sorted([f"{db}.sql", "users.sql"])
    assert "CREATE USER `root`@`127.0.0.1`" in (target / "users.sql").read_text(encoding="utf-8")
    copy = my_database()
    my_load(server, options, target / f"{db}.sql", copy)

    tables = list(stats["databases"][db]["tables"])
    assert my_counts(server, copy, tables) == stats["databases"][db]["tables"]
    query = "SELECT id, name, seal FROM `đơn_vị` ORDER BY id"
    restored = my_query(server, query, db=copy)
    assert restored == my_query(server, query, db=db)
    assert [r[1] for r in restored] == UNITS
    assert all(r[2] == BLOB for r in restored)
    triggers = my_query(
        server,
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS"
        " WHERE TRIGGER_SCHEMA = %s",
        (copy,),
    )
    assert triggers == [("đơn_vị_audit", "đơn_vị")]
    my_query(server, "INSERT INTO `đơn_vị` (name) VALUES ('Xã mới')", db=copy)
    last_note = "SELECT note FROM audit ORDER BY id DESC LIMIT 1"
    assert my_query(server, last_note, db=copy) == [("thêm: Xã mới",)]


def test_mariadb_counts_are_those_of_the_dump_while_a_writer_inserts(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """mariadb-dump's snapshot is not ours; commits wait while both are taken (BACKUP STAGE
    BLOCK_COMMIT), so the counts still match the dump exactly."""
    env, server = local_backup_env, mariadb_server
    options = option_file(tmp_path / "backup.cnf", server.user, server.password)
    db = my_database()
    my_query(server, "CREATE TABLE visits (id INT AUTO_INCREMENT PRIMARY KEY, unit TEXT)", db=db)
    my_query(
        server,
        "CREATE TABLE filler (id INT PRIMARY KEY, pad VARCHAR(200))"
        " SELECT seq AS id, REPEAT('x', 200) AS pad FROM seq_1_to_200000",
        db=db,
    )

    def connect() -> Callable[[], None]:
        cur = my_connect(server, database=db).cursor()

        def insert() -> None:
            cur.execute("INSERT INTO visits (unit) VALUES (%s)", (UNITS[1],))

        return insert

    add_sources(env, my_source(server, "portal-my", [db], options, users=False))
    writer = Writer(connect)
    writer.start()
    while writer.inserted < 200:
        time.sleep(0.01)
    before = writer.inserted
    code, results, _ = run_backup(env)
    during = writer.inserted - before
    time.sleep(0.2)
    writer.finish()
    assert code == 0, results
    assert during > 100, "the writer must really insert while the backup runs"

    stats = latest_stats(env, "portal-my")["databases"][db]
    assert stats["consistent_with_dump"] is True
    copy = my_database()
    my_load(server, options, restore(env, "portal-my", env.root / "r") / f"{db}.sql", copy)
    (restored,) = my_counts(server, copy, ["visits"]).values()
    (live,) = my_counts(server, db, ["visits"]).values()
    assert before <= stats["tables"]["visits"] == restored < live
    assert stats["tables"]["filler"] == 200_000


def test_mariadb_account_without_reload_still_backs_up(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """A least-privilege account cannot hold commits: the counts come from their own
    snapshot, and the stats say so."""
    env, server = local_backup_env, mariadb_server
    db = my_database()
    make_portal_schema(server, db)
    user, password = f"bk_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    my_query(server, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
    try:
        my_query(
            server,
            f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{db}`.* "
            f"TO '{user}'@'127.0.0.1'",
        )
        options = option_file(tmp_path / "limited.cnf", user, password)
        add_sources(env, my_source(server, "portal-my", [db], options, users=False))
        code, results, _ = run_backup(env)
        assert code == 0, results
        stats = latest_stats(env, "portal-my")["databases"][db]
        assert stats == {
            "tables": {"audit": len(UNITS), "đơn_vị": len(UNITS)},
            "consistent_with_dump": False,
        }
    finally:
        my_query(server, f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


def test_mariadb_failures_fail_their_source_only(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    env, server = local_backup_env, mariadb_server
    files_source(env)
    db = my_database()
    good = option_file(tmp_path / "good.cnf", server.user, server.password)
    wrong = "not-the-password-" + secrets.token_hex(4)
    bad = option_file(tmp_path / "bad.cnf", server.user, wrong)
    shared = option_file(tmp_path / "shared.cnf", server.user, server.password)
    shared.chmod(0o644)
    add_sources(
        env,
        my_source(server, "my-password", [db], bad),
        my_source(server, "my-missing-db", [db, "dbsrc_does_not_exist"], good),
        my_source(server, "my-readable", [db], shared),
        my_source(server, "my-no-file", [db], tmp_path / "absent.cnf"),
    )

    code, results, output = run_backup(env)
    assert code == 1
    assert results["webroot"]["status"] == "ok"
    errors = {name: r["error"] for name, r in results.items() if name != "webroot"}
    assert all(r["status"] == "failed" for n, r in results.items() if n != "webroot")
    assert "Access denied for user 'root'" in errors["my-password"]
    assert "'dbsrc_does_not_exist' does not exist" in errors["my-missing-db"]
    assert "open to other users (mode 0644)" in errors["my-readable"]
    assert f"chmod 600 {shared}" in errors["my-readable"]
    assert "does not exist" in errors["my-no-file"]
    assert wrong not in output
    assert server.password not in output
    assert snapshot_sources(env) == {"webroot"}


def test_mariadb_dump_cut_off_mid_stream_fails_the_source(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """The server ends mariadb-dump's session while it streams (as a server shutdown would)."""
    env, server = local_backup_env, mariadb_server
    options = option_file(tmp_path / "backup.cnf", server.user, server.password)
    db = my_database()
    my_query(
        server,
        "CREATE TABLE filler (id INT PRIMARY KEY, pad VARCHAR(200))"
        " SELECT seq AS id, REPEAT('x', 200) AS pad FROM seq_1_to_400000",
        db=db,
    )
    files_source(env)
    add_sources(env, my_source(server, "portal-my", [db], options, users=False))
    proc = env.popen("--json", "backup", "run")
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            dumping = my_query(
                server,
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s"
                " AND INFO LIKE %s AND INFO NOT LIKE %s AND ID <> CONNECTION_ID()",
                (db, "SELECT %FROM `filler`%", "SELECT COUNT(*)%"),
            )
            for (thread,) in dumping:
                my_query(server, f"KILL {int(thread)}")
                killed.append(thread)
            time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "mariadb-dump finished before it could be cut off"
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    results = {r["source"]: r for r in json.loads(stdout)["results"]}
    assert results["webroot"]["status"] == "ok"
    error = results["portal-my"]["error"]
    assert f"mariadb-dump of database '{db}' exited with status" in error
    assert "Lost connection to server during query when dumping table `filler`" in error
    assert snapshot_sources(env) == {"webroot"}


# -- the engines' quoting, through the servers themselves --------------------------------------

HOSTILE_NAMES = ['we"ird', "back`tick", "dấu cách; --", "dot.ted", "back\\slash", "'; DROP"]


def test_postgres_engine_counts_tables_with_hostile_names(
    postgres_server: PostgresServer, pg_database: Callable[..., str]
) -> None:
    db = pg_database()
    schema = 'sch"ema `x`'
    with pg_connect(postgres_server, db) as conn:
        conn.execute(f"CREATE SCHEMA {postgres.quote(schema)}")
        for rows, table in enumerate(HOSTILE_NAMES, start=1):
            target = f"{postgres.quote(schema)}.{postgres.quote(table)}"
            conn.execute(f"CREATE TABLE {target} (id int)")
            conn.execute(f"INSERT INTO {target} SELECT generate_series(1, {rows})")
        counted = postgres.count_rows(conn)
    assert counted == {f"{schema}.{t}": n for n, t in enumerate(HOSTILE_NAMES, start=1)}


def test_mariadb_engine_counts_tables_with_hostile_names(
    mariadb_server: MariaDBServer, my_database: Callable[[], str]
) -> None:
    db = my_database()
    conn = my_connect(mariadb_server)
    try:
        with conn.cursor() as cur:
            for rows, table in enumerate(HOSTILE_NAMES, start=1):
                target = f"{mariadb.quote(db)}.{mariadb.quote(table)}"
                cur.execute(f"CREATE TABLE {target} (id int)")
                insert = f"INSERT INTO {target} VALUES (%s)"  # noqa: S608 - quoted by the engine
                cur.executemany(insert, [(i,) for i in range(rows)])
        counted = mariadb.count_rows(conn, db)
    finally:
        conn.close()
    assert counted == {t: n for n, t in enumerate(HOSTILE_NAMES, start=1)}
