"""Copies of a backup in several repositories. One read of each source for every repository:
a database dumped once feeds the local and the offsite (S3) copy; a repository that fails
during the run leaves the other whole, and is filled in by the next run although the files
cache says nothing changed. ``ops backup copy``: snapshots copied between repositories,
only what is missing, verified by a restore from the target; forged ones left out.

All through the real ``ops`` CLI, a real PostgreSQL (its own statement log counts the dumps)
and the moto S3 server.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import yaml
from psycopg import sql

from portalops.backup.jobs.access import load_keys, open_repository
from portalops.backup.jobs.copy import copy_snapshots
from portalops.backup.repo.repository import Repository
from portalops.backup.repo.storage import LocalStorage
from portalops.settings import load_settings
from tests.fixtures.backup_env import BackupEnv, s3_env
from tests.fixtures.databases import pg_connect, pg_source
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.procs import run
from tests.fixtures.s3 import S3Server
from tests.hostile.forge import Forger
from tests.hostile.genuine import (
    an_hour_ago,
    assert_no_internal_error,
    forger,
    genuine_index_records,
)

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


def backup_run(env: BackupEnv, *args: str) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    result = env.ops("--json", "backup", "run", *args)
    assert "Traceback" not in result.stderr, result.stderr
    doc = json.loads(result.stdout)
    return result.code, {(r["source"], r["repository"]): r for r in doc["results"]}


def listed(env: BackupEnv) -> dict[str, list[dict[str, Any]]]:
    """``backup list --json`` by repository, oldest first."""
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for doc in env.ops_json("backup", "list"):
        by_repository.setdefault(doc["repository"], []).append(doc)
    return by_repository


def one_page(env: BackupEnv, tmp_path: Path) -> Path:
    """A source ``webroot`` holding one page (not backed up yet)."""
    src = tmp_path / "www"
    src.mkdir()
    (src / "index.html").write_text("<h1>Cổng</h1>\n", encoding="utf-8")
    env.add_source("webroot", src)
    return src


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


def test_what_both_repositories_want_is_packed_and_encrypted_once_and_stored_in_each(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """The same pack objects (name = SHA-256 of the ciphertext) in both repositories: built,
    encrypted and named once. Each indexes them and restores on its own."""
    env = local_backup_env
    second = add_second_local(env)
    src = tmp_path / "www"
    (src / "media").mkdir(parents=True)
    for i in range(6):
        (src / "media" / f"anh-{i}.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    (src / "index.html").write_text("<h1>Cổng thông tin</h1>\n", encoding="utf-8")
    env.add_source("webroot", src)
    main = Path(env.repo_url)

    def packs(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("packs/*/*")}

    for day in (1, 2):
        code, results = backup_run(env)
        assert code == 0, results
        assert packs(main) == packs(second)
        assert len(packs(main)) >= 2 * day  # data and trees, each day
        if day == 1:
            (src / "media" / "anh-0.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    assert listed(env)["main"][-1]["tree"] == listed(env)["second"][-1]["tree"]
    shutil.rmtree(main / "index")  # each names the packs in its own index
    (main / "index").mkdir()
    target = tmp_path / "from-second"
    env.ops("backup", "restore", "latest", "--repository", "second", "--source", "webroot",
            "--target", str(target), check=True)  # fmt: skip
    assert digest(target / src.relative_to("/")) == digest(src)


# -- ops backup copy ----------------------------------------------------------------------------


def copy(env: BackupEnv, *args: str) -> tuple[int, dict[str, Any]]:
    result = env.ops("--json", "backup", "copy", *args)
    assert_no_internal_error(result.stdout + result.stderr)
    return result.code, json.loads(result.stdout)


def test_copy_seeds_a_new_offsite_that_restores_and_copies_only_what_is_missing(
    local_backup_env: BackupEnv, s3_server: S3Server, tmp_path: Path
) -> None:
    env = local_backup_env
    www, etc = tmp_path / "www", tmp_path / "etc"
    (www / "media").mkdir(parents=True)
    etc.mkdir()
    (www / "media" / "video.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    (www / "index.html").write_text("<h1>Xã Đạo Trù</h1>\n", encoding="utf-8")
    (etc / "nginx.conf").write_text("server_tokens off;\n")
    env.add_source("webroot", www)
    env.add_source("nginx", etc, category="config")
    env.ops("backup", "run", check=True)
    (www / "news.html").write_text("<p>tin mới</p>\n", encoding="utf-8")
    env.ops("backup", "run", "--source", "webroot", check=True)
    add_offsite(env, s3_server)  # the new bucket, empty

    code, planned = copy(env, "--from", "main", "--to", "offsite", "--dry-run")
    assert code == 0, planned
    assert [s["status"] for s in planned["snapshots"]] == ["would copy"] * 3
    assert listed(env).get("offsite", []) == []  # a dry run writes nothing
    first_webroot = next(s for s in planned["snapshots"] if s["source"] == "webroot")
    assert first_webroot["bytes"] >= 6 * 1024 * 1024

    code, done = copy(env, "--from", "main", "--to", "offsite")
    assert code == 0, done
    assert [s["status"] for s in done["snapshots"]] == ["copied"] * 3
    webroot = [s for s in done["snapshots"] if s["source"] == "webroot"]
    assert webroot[1]["bytes"] < 64 * 1024  # the second shares the video with the first
    snapshots = listed(env)
    assert sorted((s["source"], s["time"], s["tree"], s["run"]) for s in snapshots["main"]) == (
        sorted((s["source"], s["time"], s["tree"], s["run"]) for s in snapshots["offsite"])
    )
    target = tmp_path / "restored"
    env.ops("backup", "restore", "latest", "--repository", "offsite", "--source", "webroot",
            "--target", str(target), check=True)  # fmt: skip
    assert digest(target / www.relative_to("/")) == digest(www)
    checked = env.ops("--json", "backup", "check", "--read-data", "--repository", "offsite")
    assert checked.code == 0, checked.stdout + checked.stderr

    # Again: everything is there. Then back from S3 into a new local repository, one source.
    code, again = copy(env, "--from", "main", "--to", "offsite")
    assert code == 0, again
    assert [(s["status"], s["blobs"]) for s in again["snapshots"]] == [("present", 0)] * 3
    add_second_local(env)
    code, back = copy(env, "--from", "offsite", "--to", "second", "--source", "nginx")
    assert code == 0, back
    assert [(s["source"], s["status"]) for s in back["snapshots"]] == [("nginx", "copied")]
    target = tmp_path / "from-second"
    env.ops("backup", "restore", "latest", "--repository", "second", "--source", "nginx",
            "--target", str(target), check=True)  # fmt: skip
    assert digest(target / etc.relative_to("/")) == digest(etc)


def test_copy_refuses_what_it_cannot_do_and_names_why(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    one_page(env, tmp_path)
    env.ops("backup", "run", check=True)
    add_second_local(env)

    same = env.ops("backup", "copy", "--from", "main", "--to", "main")
    assert same.code == 2
    assert "--from and --to both name 'main'" in same.stderr
    unknown = env.ops("backup", "copy", "--from", "main", "--to", "nowhere")
    assert unknown.code == 2
    assert "unknown repository 'nowhere'" in unknown.stderr
    env.write_config(identity=False)
    blind = env.ops("backup", "copy", "--from", "main", "--to", "second")
    assert blind.code == 3
    assert "backup.identity" in blind.stderr
    env.write_config(identity=True)

    # The writer key of this host does not open a repository made with another one.
    other = BackupEnv(tmp_path / "other", str(tmp_path / "other-repo"))
    (tmp_path / "other").mkdir()
    other.init()
    env.more_repositories.append({"name": "foreign", "url": other.repo_url})
    env.write_config()
    foreign = env.ops("backup", "copy", "--from", "main", "--to", "foreign")
    assert foreign.code == 3, foreign.stdout + foreign.stderr
    assert "the writer key does not belong to this repository" in foreign.stderr


def add_renewed(env: BackupEnv, name: str) -> tuple[Path, Path]:
    """The way docs/backup.md gives to close an old identity out: new keys (``keygen``), a
    new repository made with the new writer key, and, for the copy, an identity file with the
    new identity first and the old one after it; the config then holds that file alone, as an
    admin host's does. Returns the repository's directory and the new identity file."""
    keys = env.root / "keys"
    new_identity, new_writer = keys / "identity-2027.txt", keys / "writer-2027.key"
    env.ops("backup", "keygen", "--identity", str(new_identity), "--writer-key",
            str(new_writer), check=True)  # fmt: skip
    path = env.root / f"{name}-repo"
    env.more_repositories.append({"name": name, "url": str(path)})
    env.write_config()
    config = yaml.safe_load(env.config.read_text())
    config["backup"]["writer_key"] = str(new_writer)
    env.config.write_text(yaml.safe_dump(config))
    env.ops("backup", "init", "--repository", name, check=True)
    both = keys / "identities-2027.txt"
    both.write_text(new_identity.read_text() + env.identity.read_text())
    both.chmod(0o600)
    del config["backup"]["writer_key"]
    config["backup"]["identity"] = str(both)
    env.config.write_text(yaml.safe_dump(config))
    return path, new_identity


def use_identity(env: BackupEnv, identity: Path) -> None:
    config = yaml.safe_load(env.config.read_text())
    config["backup"]["identity"] = str(identity)
    env.config.write_text(yaml.safe_dump(config))


def test_copy_renames_blobs_into_a_repository_made_with_another_writer_key(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Moving backups into a repository made with a new writer key (closing the old
    identity out of what the old key wrote, or a new offsite set up by another host): every
    blob is named with the target's id-key and every tree written again, so the snapshot has
    another root there; it restores the same files, and a second copy finds it present."""
    env = local_backup_env
    www = tmp_path / "www"
    deep = www / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (www / "media").mkdir()
    video = os.urandom(3 * 1024 * 1024)
    (www / "media" / "video.bin").write_bytes(video)
    (deep / "same-video.bin").write_bytes(video)  # one blob list, two trees
    (deep / "trang.html").write_text("<p>Xã Đạo Trù</p>\n", encoding="utf-8")
    (www / "empty").mkdir()
    (www / "index.html").write_text("<h1>Cổng</h1>\n", encoding="utf-8")
    env.add_source("webroot", www)
    env.ops("backup", "run", check=True)
    (deep / "tin-moi.html").write_text("<p>tin mới</p>\n", encoding="utf-8")
    env.ops("backup", "run", check=True)
    renewed, new_identity = add_renewed(env, "renewed")

    code, planned = copy(env, "--from", "main", "--to", "renewed", "--dry-run")
    assert code == 0, planned
    assert [(s["status"], s["renamed"]) for s in planned["snapshots"]] == [("would copy", True)] * 2
    assert planned["snapshots"][0]["bytes"] >= len(video)
    assert listed(env).get("renewed", []) == []

    code, done = copy(env, "--from", "main", "--to", "renewed")
    assert code == 0, done
    assert [(s["status"], s["renamed"]) for s in done["snapshots"]] == [("copied", True)] * 2
    assert done["snapshots"][1]["bytes"] < 64 * 1024  # the video was renamed once
    ours, theirs = listed(env)["main"], listed(env)["renewed"]
    assert [(s["time"], s["run"]) for s in ours] == [(s["time"], s["run"]) for s in theirs]
    assert not {s["tree"] for s in ours} & {s["tree"] for s in theirs}
    with repository_pair(env, "main", "renewed") as (main, renamed):
        assert not set(main.index.blobs) & set(renamed.index.blobs)  # no id carried over
    for which, snapshot in (("first", theirs[0]["id"]), ("latest", "latest")):
        target = tmp_path / f"restored-{which}"
        env.ops("backup", "restore", snapshot, "--repository", "renewed", "--source",
                "webroot", "--target", str(target), check=True)  # fmt: skip
        restored = digest(target / www.relative_to("/"))
        assert ("a/b/c/tin-moi.html" in restored) is (which == "latest")
        if which == "latest":
            assert restored == digest(www)
    checked = env.ops("--json", "backup", "check", "--read-data", "--repository", "renewed")
    assert checked.code == 0, checked.stdout + checked.stderr

    packs_before = sorted(p.name for p in (renewed / "packs").rglob("*") if p.is_file())
    code, again = copy(env, "--from", "main", "--to", "renewed")
    assert code == 0, again
    assert [(s["status"], s["blobs"]) for s in again["snapshots"]] == [("present", 0)] * 2
    assert sorted(p.name for p in (renewed / "packs").rglob("*") if p.is_file()) == packs_before

    # The new identity alone opens the new repository; the old one does not.
    use_identity(env, new_identity)
    assert len(env.ops_json("backup", "list", "--repository", "renewed")) == 2
    use_identity(env, env.identity)
    old = env.ops("backup", "list", "--repository", "renewed")
    assert old.code == 3, old.stdout + old.stderr


def repository_pair(env: BackupEnv, *names: str) -> Any:
    """The named repositories opened in this process with the config's keys, indexes read."""
    from contextlib import contextmanager

    @contextmanager
    def opened() -> Any:
        with patch.dict(os.environ, env.env):
            backup = load_settings(env.config).backup
            keys = load_keys(backup)
            repos = [open_repository(r, keys) for r in backup.repositories if r.name in names]
            for repo in repos:
                repo.load_index()
            yield tuple(sorted(repos, key=lambda r: names.index(r.name)))

    return opened()


def test_copy_leaves_out_what_a_hostile_writer_forged_and_copies_the_rest(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """With the writer key alone an attacker adds a snapshot whose tree names '..', and one
    dated a day ahead: neither reaches the other repository; the genuine snapshot does."""
    env = local_backup_env
    one_page(env, tmp_path)
    env.ops("backup", "run", check=True)
    add_second_local(env)
    f = forger(env)
    f.commit("forged", an_hour_ago(), [f.file_node("..", b"up and out"), f.file_node("ok", b"1")])
    f.commit("ahead", datetime.now(UTC) + timedelta(days=1), [f.file_node("x", b"2")])

    code, done = copy(env, "--from", "main", "--to", "second")

    assert code == 1, done
    by_source = {s["source"]: s for s in done["snapshots"]}
    assert by_source["webroot"]["status"] == "copied"
    assert by_source["forged"]["status"] == "failed"
    assert "1 entries a restore refuses" in by_source["forged"]["error"]
    assert by_source["ahead"]["status"] == "skipped"
    assert "future-dated" in by_source["ahead"]["error"]
    assert {s["source"] for s in listed(env)["second"]} == {"webroot"}


def write_into(root: Path) -> Callable[[str, bytes], None]:
    """A writer's access to a local repository at ``root`` (for a Forger)."""

    def put(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    return put


def test_copy_stores_blobs_a_forged_target_index_claims_and_restores_whole(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A backup host forges an index in the target naming a file's blob in a pack that does
    not exist: copy must not take the claim, or the copy restores a hole."""
    env = local_backup_env
    src = tmp_path / "www"
    src.mkdir()
    data = os.urandom(200_000)  # below the chunker's minimum: one blob
    (src / "a.bin").write_bytes(data)
    env.add_source("webroot", src)
    env.ops("backup", "run", check=True)
    second = add_second_local(env)
    f = Forger(env.writer_key, write_into(second))
    missing_pack = "packs/00/" + "00" * 32
    row = [f.blob_id(data).hex(), "data", 0, 10, len(data), "none"]
    f.write_index([{"key": missing_pack, "size": 100, "blobs": [row]}])

    code, done = copy(env, "--from", "main", "--to", "second")

    assert code == 0, done
    [copied] = done["snapshots"]
    assert copied["status"] == "copied"
    assert copied["bytes"] >= len(data)  # the blob moved although the index claimed it
    target = tmp_path / "restored"
    env.ops("backup", "restore", "latest", "--repository", "second", "--source", "webroot",
            "--target", str(target), check=True)  # fmt: skip
    assert (target / src.relative_to("/") / "a.bin").read_bytes() == data


def open_both(env: BackupEnv) -> tuple[Repository, Repository]:
    with patch.dict(os.environ, env.env):
        backup = load_settings(env.config).backup
        keys = load_keys(backup)
        first, second = (open_repository(r, keys) for r in backup.repositories[:2])
    return first, second


def test_packs_that_land_damaged_are_never_indexed_and_the_next_copy_stores_them_again(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """The target's disk flips a bit in every pack written (a stand-in for bad hardware,
    in this process: nothing real flips bits on demand). The read-back catches it before
    the pack is indexed, so a later copy onto good disk stores those blobs again."""
    env = local_backup_env
    src = tmp_path / "www"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(300_000))
    env.add_source("webroot", src)
    env.ops("backup", "run", check=True)
    add_second_local(env)
    main, second = open_both(env)
    put = second.storage.put

    def flipping(key: str, data: bytes) -> None:
        if key.startswith("packs/"):
            data = data[:200] + bytes([data[200] ^ 1]) + data[201:]
        put(key, data)

    second.storage.put = flipping  # type: ignore[method-assign]
    [failed] = copy_snapshots(main, second, None)
    assert failed.status == "failed"
    assert "read back after writing" in (failed.error or "")
    assert env.ops_json("backup", "list", "--repository", "second") == []

    code, done = copy(env, "--from", "main", "--to", "second")
    assert code == 0, done
    assert done["snapshots"][0]["bytes"] >= 300_000
    checked = env.ops("--json", "backup", "check", "--read-data", "--repository", "second")
    assert checked.code == 0, checked.stdout + checked.stderr


def test_a_forged_junk_pack_named_for_every_blob_is_fetched_at_most_twice(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A forged source index names every blob first in one junk pack: each blob then comes
    from its genuine pack, and the junk (up to 81 MiB) is not downloaded once per blob."""
    env = local_backup_env
    src = tmp_path / "www"
    src.mkdir()
    for i in range(120):
        (src / f"tin-{i}.html").write_text(f"<p>tin {i}</p>" * 20, encoding="utf-8")
    env.add_source("webroot", src)
    env.ops("backup", "run", check=True)
    add_second_local(env)
    genuine = genuine_index_records(env)
    junk = os.urandom(1024 * 1024)
    digest = hashlib.sha256(junk).hexdigest()
    junk_key = f"packs/{digest[:2]}/{digest}"
    env.write_object(junk_key, junk)
    rows = [row for record in genuine for row in record["blobs"]]  # type: ignore[attr-defined]
    first_genuine = min(env.object_keys("index"))
    forger(env).write_index([{"key": junk_key, "size": len(junk), "blobs": rows}],
                            before=first_genuine)  # fmt: skip
    main, second = open_both(env)
    fetched: list[str] = []
    get = main.storage.get

    def counting(key: str, max_size: int | None = None) -> bytes:
        fetched.append(key)
        return get(key, max_size)

    main.storage.get = counting  # type: ignore[method-assign]
    [done] = copy_snapshots(main, second, None)
    assert done.status == "copied", done.error
    assert done.blobs == len(rows)
    assert fetched.count(junk_key) <= 2


def test_a_repository_named_twice_is_written_once(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    one_page(env, tmp_path)
    code, results = backup_run(env, "--repository", "main", "--repository", "main")
    assert code == 0, results
    assert list(results) == [("webroot", "main")]
    assert len(listed(env)["main"]) == 1


def test_a_repository_whose_storage_fails_gets_no_more_packs(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """The second repository's disk refuses its third pack: no pack is sent to it after
    that (shared packs are queued for the repositories still written), the first gets all,
    and its snapshot restores. (The failing disk is a wrapper around the local storage's
    put, a stand-in: a real disk does not fail on the third file on cue.)"""
    env = local_backup_env
    second = add_second_local(env)
    src = tmp_path / "www"
    src.mkdir()
    for i in range(10):
        (src / f"anh-{i}.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    env.add_source("webroot", src)
    put = LocalStorage.put
    calls: list[str] = []

    def failing(self: LocalStorage, key: str, data: bytes) -> None:
        if Path(self.root) == second and key.startswith("packs/"):
            calls.append(key)
            if len(calls) >= 3:
                raise OSError(errno.EIO, "Input/output error", key)
        put(self, key, data)

    with patch.object(LocalStorage, "put", failing):
        code, results = backup_run(env)
    assert code == 3, results
    assert results[("webroot", "main")]["status"] == "ok"
    assert results[("webroot", "second")]["status"] == "failed"
    # The failing put, and nothing queued after it (a put the other seal thread had begun
    # at that very moment may still come: two packs are sealed at a time).
    assert len(calls) <= 4, calls
    target = tmp_path / "restored"
    env.ops("backup", "restore", "latest", "--repository", "main", "--source", "webroot",
            "--target", str(target), check=True)  # fmt: skip
    assert digest(target / src.relative_to("/")) == digest(src)
