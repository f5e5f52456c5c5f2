"""Mistakes a sysadmin makes with ``ops backup``: each ends with a clear message and the right
exit code, never a traceback, and loses nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.cli import Result

pytestmark = pytest.mark.integration


def assert_clean_failure(result: Result, code: int, *needles: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_keygen_writes_private_files_and_never_overwrites(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    for path in (env.identity, env.writer_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = env.identity.read_bytes()
    again = env.ops(
        "backup", "keygen", "--identity", str(env.identity), "--writer-key", str(env.writer_key)
    )
    assert_clean_failure(again, 2, "already exists")
    assert env.identity.read_bytes() == before


def test_key_file_problems(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    env.add_source("etc", tmp_path)
    env.writer_key.chmod(0o644)
    assert_clean_failure(env.ops("backup", "run"), 2, "chmod 600", str(env.writer_key))
    env.writer_key.chmod(0o600)
    os.rename(env.writer_key, tmp_path / "moved.key")
    assert_clean_failure(env.ops("backup", "run"), 2, "file not found", "backup.writer_key")
    (tmp_path / "other").mkdir()
    other = BackupEnv(tmp_path / "other", env.repo_url)
    other.ops(
        "backup", "keygen",
        "--identity", str(other.identity), "--writer-key", str(other.writer_key),
        check=True,
    )  # fmt: skip
    os.rename(other.writer_key, env.writer_key)
    env.write_config(identity=False)
    result = env.ops("--json", "backup", "run")
    assert result.returncode == 3
    assert "does not belong to this repository" in result.stdout


def test_unknown_names(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    assert_clean_failure(env.ops("backup", "run"), 2, "backup.sources is empty")
    env.add_source("webroot", tmp_path)
    assert_clean_failure(env.ops("backup", "run", "--source", "webrot"), 2, "'webrot'", "webroot")
    assert_clean_failure(
        env.ops("backup", "run", "--repository", "offsite"), 2, "'offsite'", "main"
    )
    assert_clean_failure(
        env.ops("backup", "restore", "latest", "--target", str(tmp_path / "r")), 2, "no snapshot"
    )
    env.ops("backup", "run", check=True)
    assert_clean_failure(
        env.ops("backup", "restore", "beefbeef", "--target", str(tmp_path / "r")),
        2,
        "no snapshot 'beefbeef'",
    )
    assert_clean_failure(env.ops("backup", "check", "--read-data", "150"), 2, "percentage")


def test_latest_needs_a_source_when_there_are_several(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env.add_source("a", tmp_path / "a")
    env.add_source("b", tmp_path / "b")
    env.ops("backup", "run", check=True)
    assert_clean_failure(
        env.ops("backup", "restore", "latest", "--target", str(tmp_path / "r")), 2, "--source"
    )


def test_missing_source_path_fails_that_source_only(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "index.html").write_text("xin chào")
    env.add_source("good", tmp_path / "ok")
    env.add_source("gone", tmp_path / "not-there")
    result = env.ops("--json", "backup", "run")
    assert result.returncode == 1
    import json

    by_source = {r["source"]: r for r in json.loads(result.stdout)["results"]}
    assert by_source["good"]["status"] == "ok"
    assert by_source["gone"]["status"] == "failed"
    assert "no such file or directory" in by_source["gone"]["error"]
    assert [s["source"] for s in env.ops_json("backup", "list")] == ["good"]


def test_repository_not_initialised(tmp_path: Path) -> None:
    env = BackupEnv(tmp_path, str(tmp_path / "nowhere"))
    env.write_config()
    env.ops(
        "backup", "keygen", "--identity", str(env.identity), "--writer-key", str(env.writer_key),
        check=True,
    )  # fmt: skip
    assert_clean_failure(env.ops("backup", "list"), 3, "ops backup init")
    assert_clean_failure(env.ops("backup", "check"), 3, "ops backup init")


def test_init_is_idempotent_and_needs_a_writer_key(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    again = env.ops_json("backup", "init")
    assert again[0]["created"] is False
    env.config.write_text(
        f"backup:\n  repositories: [{{name: main, url: {env.repo_url}}}]\n", encoding="utf-8"
    )
    assert_clean_failure(env.ops("backup", "init"), 2, "backup.writer_key is not set")


def test_unlock_removes_only_stale_locks(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    locks = Path(env.repo_url) / "locks"
    locks.mkdir(exist_ok=True)
    (locks / ("ab" * 16)).write_text(
        '{"version": 1, "exclusive": true, "host": "gone-host", "pid": 1, "user": "root",'
        ' "command": "backup prune", "created": "2020-01-01T00:00:00Z",'
        ' "refreshed": "2020-01-01T00:00:00Z"}'
    )
    # Stale by the storage's clock (the file's mtime), not by the times written inside.
    os.utime(locks / ("ab" * 16), (1_577_836_800, 1_577_836_800))
    done = env.ops_json("backup", "unlock")
    assert done[0]["removed"] == ["locks/" + "ab" * 16]
    assert not list(locks.iterdir())


def test_glob_paths_match_what_exists(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    """/etc/php* on a host without PHP matches nothing: noted, not an error; a plain path
    that is missing still fails its source."""
    etc = tmp_path / "etc"
    (etc / "php8.2" / "fpm").mkdir(parents=True)
    (etc / "php8.2" / "fpm" / "php.ini").write_text("memory_limit = 256M\n")
    (etc / "nginx").mkdir()
    (etc / "nginx" / "nginx.conf").write_text("events {}\n")
    env = local_backup_env
    env.add_source("config", etc / "nginx", etc / "php*", etc / "ruby*")
    run = env.ops_json("backup", "run")
    assert run["results"][0]["files"] == 2
    target = tmp_path / "r"
    env.ops("backup", "restore", "latest", "--target", str(target), check=True)
    assert (target / str(etc).lstrip("/") / "php8.2" / "fpm" / "php.ini").is_file()


@pytest.mark.parametrize("child_first", [True, False], ids=["child-first", "parent-first"])
def test_a_listed_path_beneath_another_listed_path_loses_nothing(
    local_backup_env: BackupEnv, tmp_path: Path, child_first: bool
) -> None:
    """``paths: [/srv/www/uploads, /srv/www]``: the parent is backed up whole, whichever
    order the config lists them in (listing the child first once stored only the child)."""
    www = tmp_path / "www"
    (www / "uploads").mkdir(parents=True)
    (www / "index.php").write_text("<?php echo 'xin chào';\n", encoding="utf-8")
    (www / "uploads" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [www / "uploads", www] if child_first else [www, www / "uploads"]
    env = local_backup_env
    env.add_source("www", *paths)
    assert env.ops_json("backup", "run")["results"][0]["files"] == 2
    target = tmp_path / "r"
    env.ops("backup", "restore", "latest", "--target", str(target), check=True)
    restored = target / str(www).lstrip("/")
    assert (restored / "index.php").read_text(encoding="utf-8") == "<?php echo 'xin chào';\n"
    assert (restored / "uploads" / "a.jpg").is_file()


@pytest.mark.parametrize("child_first", [True, False], ids=["child-first", "parent-first"])
def test_a_listed_path_beneath_a_listed_symlink_fails_its_source(
    local_backup_env: BackupEnv, tmp_path: Path, child_first: bool
) -> None:
    """``paths: [/srv/www, /srv/www/uploads]`` where /srv/www is a link: the link is stored
    as a link, so uploads' files would be in no snapshot. The source fails and says why."""
    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    (data / "uploads" / "u.txt").write_text("u\n")
    www = tmp_path / "www"
    www.symlink_to(data)
    env = local_backup_env
    env.add_source("www", *([www / "uploads", www] if child_first else [www, www / "uploads"]))
    result = env.ops("backup", "run")
    assert_clean_failure(result, 1, "symbolic link", str(www / "uploads"))


def test_a_directory_too_large_to_restore_fails_its_source(
    local_backup_env: BackupEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers refuse tree blobs over a cap (a hostile writer's tree must not exhaust them),
    so a writer must never record a directory over it: that source fails, naming it. The cap
    is lowered here; the real one (64 MiB) takes about 300,000 entries in one directory."""
    from portalops.backup.repo import writer as writer_module
    from portalops.backup.repo.tree import Node, NodeType, Tree
    from portalops.backup.repo.writer import BlobWriter, TreeTooLarge
    from tests.fixtures.backup_env import repository

    monkeypatch.setattr(writer_module, "MAX_TREE_BLOB", 4096)
    nodes = [Node(f"f{i:05d}".encode(), NodeType.FILE, 0o644, 0, 0, 0) for i in range(200)]
    with repository(local_backup_env) as repo:
        writer = BlobWriter(repo)
        with pytest.raises(TreeTooLarge, match=r"/srv/cache: its listing is \d+ bytes"):
            writer.add_tree(Tree(nodes), "/srv/cache")
        assert writer.add_tree(Tree(nodes[:5]), "/srv/small")
        writer.abort()


def test_a_broken_section_the_run_does_not_read_does_not_stop_the_backup(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """The night's backup reads ``state_dir``, ``metrics`` and ``backup``: a typo in the
    prober's section is ``ops config check``'s to report, not a missed Article 11 backup."""
    env = local_backup_env
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("xin chào")
    env.add_source("www", tmp_path / "www")
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    env.write_config(metrics={"textfile_dir": str(textfiles)}, monitor={"concurrency": "many"})
    result = env.ops("backup", "run")
    assert result.returncode == 0, result.stderr
    assert [s["source"] for s in env.ops_json("backup", "list")] == ["www"]
    assert "portalops_backup" in "".join(p.read_text() for p in textfiles.glob("*.prom"))
    assert_clean_failure(env.ops("config", "check"), 2, "monitor.concurrency")
    # and the sections the run does read are as strict as ever
    env.write_config(metrics={"textfile_dir": str(textfiles), "textfile": "typo"})
    assert_clean_failure(env.ops("backup", "run"), 2, "metrics.textfile")
