"""The backup repository end to end through the ops CLI, on a local directory and on S3."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.backup_env import BackupEnv, repository

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
KEEP_LAST_ONLY = {"last": 1, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}


def make_tree(root: Path, big_mib: int = 200) -> Path:
    """A portal-like tree with the awkward cases: NFC and NFD names side by side, empty files,
    a big file, symlinks (one dangling), hard links, odd modes and exact mtimes."""
    src = root / "src"
    (src / "www" / "tin-tức").mkdir(parents=True)
    nfc = unicodedata.normalize("NFC", "Thông báo.html")
    nfd = unicodedata.normalize("NFD", "Thông báo.html")
    assert nfc.encode() != nfd.encode()
    (src / "www" / nfc).write_text("<p>Xin chào — bản NFC</p>\n", encoding="utf-8")
    (src / "www" / nfd).write_text("<p>Xin chào — bản NFD</p>\n", encoding="utf-8")
    (src / "www" / "tin-tức" / "bài-1.txt").write_text("Đạo Trù\n" * 5000, encoding="utf-8")
    (src / "empty").touch()
    (src / "www" / "empty-dir").mkdir()
    big = src / "media" / "video.bin"
    big.parent.mkdir()
    with big.open("wb") as handle:
        for _ in range(big_mib):
            handle.write(os.urandom(MiB))
    (src / "www" / "latest.bin").symlink_to("../media/video.bin")
    (src / "www" / "dangling").symlink_to("/nonexistent/target")
    os.link(src / "www" / "tin-tức" / "bài-1.txt", src / "hardlink.txt")
    script = src / "deploy.sh"
    script.write_text("#!/bin/sh\necho deploy\n")
    script.chmod(0o750)
    secret = src / "config.php"
    secret.write_text("<?php $db_password = 'not-a-real-secret';\n")
    secret.chmod(0o600)
    os.chown(secret, 33, 33)  # www-data, as on a portal server
    when = 1_700_000_000_123_456_789
    for path in (script, secret, src / "empty"):
        os.utime(path, ns=(when, when))
    os.utime(src / "www" / "dangling", ns=(when, when), follow_symlinks=False)
    return src


def describe(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything a restore must reproduce, keyed by relative path bytes."""
    out: dict[bytes, tuple[object, ...]] = {}
    inodes: dict[int, bytes] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(os.fsdecode(full)).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    extra = (extra, inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(full)
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size
                        if not stat.S_ISDIR(st.st_mode) else None, mtime, extra)  # fmt: skip
    return out


def restored_root(target: Path, src: Path) -> Path:
    return target / src.relative_to("/")


def test_round_trip_is_identical(backup_env: BackupEnv, tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    backup_env.add_source("portal", src)
    run = backup_env.ops_json("backup", "run")
    assert run["ok"] is True
    [result] = run["results"]
    assert result["files"] == 8
    assert result["bytes"] > 200 * MiB
    listed = backup_env.ops_json("backup", "list")
    assert [s["source"] for s in listed] == ["portal"]
    assert listed[0]["files"] == 8
    target = tmp_path / "restore"
    restored = backup_env.ops_json("backup", "restore", "latest", "--target", str(target))
    assert restored["files"] == 8
    assert describe(restored_root(target, src)) == describe(src)
    # Directory mtimes too, once every entry is in place.
    for rel in (Path("www"), Path("www/tin-tức"), Path("media")):
        assert (restored_root(target, src) / rel).stat().st_mtime_ns == (
            src / rel
        ).stat().st_mtime_ns


def test_restore_one_path(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    src = make_tree(tmp_path, big_mib=1)
    local_backup_env.add_source("portal", src)
    local_backup_env.ops("backup", "run", check=True)
    target = tmp_path / "one"
    wanted = src / "www" / "tin-tức"
    local_backup_env.ops(
        "backup", "restore", "latest", "--target", str(target), "--path", str(wanted), check=True
    )
    got = restored_root(target, src)
    assert (got / "www" / "tin-tức" / "bài-1.txt").read_text(encoding="utf-8").startswith("Đạo")
    assert not (got / "media").exists()
    missing = local_backup_env.ops(
        "backup", "restore", "latest", "--target", str(target), "--path", "/no/such/path"
    )
    assert missing.returncode == 2
    assert "not in snapshot" in missing.stderr


def test_deduplication(backup_env: BackupEnv, tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    big = src / "dump.sql"
    with big.open("wb") as handle:
        for _ in range(100):
            handle.write(os.urandom(MiB))
    for i in range(200):
        (src / f"page-{i}.html").write_text(f"<p>trang {i}</p>\n" * 50, encoding="utf-8")
    backup_env.add_source("data", src)
    first = backup_env.ops_json("backup", "run")["results"][0]
    size = first["bytes"]
    assert first["raw_bytes_added"] >= size  # trees come on top

    again = backup_env.ops_json("backup", "run")["results"][0]
    assert again["raw_bytes_added"] < 0.01 * size, again

    # Without the files cache every file is read again; deduplication alone must still hold.
    for cache in (backup_env.state_dir / "cache").rglob("*.sqlite"):
        cache.unlink()
    with big.open("ab") as handle:
        handle.write(os.urandom(MiB))
    appended = backup_env.ops_json("backup", "run")["results"][0]
    assert appended["raw_bytes_added"] < 5 * MiB, appended


def test_the_files_cache_knows_each_file_by_its_directory(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Unchanged files are not read again, looked up a directory at a time: names that
    repeat in other directories, and directories whose names are prefixes of others, each
    keep their own entry; a cache written by the per-path layout before it still counts."""
    import sqlite3

    env = local_backup_env
    src = tmp_path / "www"
    for rel in ("a/x", "a/b/x", "ab/x", "a/b/c/x", "x", "a/y"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(f"{rel}\n", encoding="utf-8")
    env.add_source("www", src)

    def run() -> int:
        """Back up; how many files were read rather than taken from the cache."""
        env.ops("backup", "run", check=True)
        with repository(env) as repo:
            summary = repo.read_snapshot(repo.snapshots("www")[-1]).summary
        assert summary["files"] == 6
        return int(summary["files_read"])

    assert run() == 6
    assert run() == 0
    changed = src / "a" / "b" / "x"
    changed.write_text("A/B/X\n", encoding="utf-8")  # same size, new mtime and content
    assert run() == 1

    # The layout of an older portal-ops: one row per path.
    (cache,) = (env.state_dir / "cache").rglob("*.sqlite")
    with sqlite3.connect(cache) as db:
        db.execute(
            "create table files (path blob primary key, size int, mtime_ns int, ctime_ns int,"
            " inode int, blobs blob)"
        )
        db.execute(
            "insert into files select cast(dir || name as blob), size, mtime_ns, ctime_ns,"
            " inode, blobs from entries"
        )
        db.execute("drop table entries")
    db.close()
    assert run() == 0
    with sqlite3.connect(cache) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    db.close()
    assert "entries" in tables
    (src / "ab" / "x").write_text("AB/X\n", encoding="utf-8")
    assert run() == 1
    restored = tmp_path / "restored"
    env.ops("backup", "restore", "latest", "--target", str(restored), check=True)
    assert (restored / src.relative_to("/") / "a" / "b" / "x").read_text() == "A/B/X\n"
    assert (restored / src.relative_to("/") / "ab" / "x").read_text() == "AB/X\n"
    assert (restored / src.relative_to("/") / "a" / "x").read_text() == "a/x\n"


def _cache_tree(root: Path) -> dict[str, bytes]:
    """A small tree of many directories (a cache of several pages), with its contents."""
    contents = {}
    for d in range(30):
        for f in range(20):
            rel = f"d{d:02}/f{f:02}.txt"
            contents[rel] = f"{rel} {'x' * (d * 20 + f)}\n".encode()
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(contents[rel])
    return contents


def _files_read(env: BackupEnv, source: str) -> int:
    """Back up (as its own process, so a hang fails the test); the files not taken from
    the files cache."""
    run = env.ops("backup", "run", process=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    with repository(env) as repo:
        return int(repo.read_snapshot(repo.snapshots(source)[-1]).summary["files_read"])


def _restored(env: BackupEnv, src: Path, target: Path) -> dict[str, bytes]:
    env.ops("backup", "restore", "latest", "--source", "www", "--target", str(target), check=True)
    root = target / str(src).lstrip("/")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _backed_up_with_cache(env: BackupEnv, tmp_path: Path) -> tuple[Path, dict[str, bytes], Path]:
    """Source ``www`` (the tree of :func:`_cache_tree`) backed up once: its root, its
    contents, and the files cache that run wrote."""
    src = tmp_path / "www"
    contents = _cache_tree(src)
    env.add_source("www", src)
    assert _files_read(env, "www") == len(contents)
    (cache,) = (env.state_dir / "cache").rglob("*.sqlite")
    return src, contents, cache


def _corrupt_a_later_page(cache: Path) -> None:
    """Overwrite the cache file's last page with junk: the first rows still read, a lookup
    that reaches that page fails (what a crash or a bad disk leaves)."""
    data = bytearray(cache.read_bytes())
    assert len(data) >= 3 * 4096
    data[-4096 + 8 :] = b"\x5a" * (4096 - 8)
    cache.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["later-page", "fifo", "garbage"])
def test_an_unreadable_files_cache_costs_a_reread_not_the_backup(
    local_backup_env: BackupEnv, tmp_path: Path, damage: str
) -> None:
    """The files cache is the state directory's, and only a cache: damaged pages, a FIFO
    in its place or a file that is no database at all mean every file is read again, never
    a failed, hung or wrong backup."""
    env = local_backup_env
    src, contents, cache = _backed_up_with_cache(env, tmp_path)
    if damage == "later-page":
        _corrupt_a_later_page(cache)
    elif damage == "fifo":
        cache.unlink()
        os.mkfifo(cache)
    else:
        cache.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    assert _files_read(env, "www") > 0
    assert _files_read(env, "www") == 0  # the run wrote a good cache again
    assert _restored(env, src, tmp_path / "r") == contents


@pytest.mark.parametrize("blobs", ["empty", "null", "another-file", "not-ids"])
def test_a_files_cache_row_that_does_not_fit_its_file_is_not_used(
    local_backup_env: BackupEnv, tmp_path: Path, blobs: str
) -> None:
    """A cache row whose state matches but whose blobs cannot be the file's (none for a
    non-empty file, NULL, another file's of another size, not a whole number of ids) is
    ignored: the file is read again and stored as it is."""
    import sqlite3

    env = local_backup_env
    src, contents, cache = _backed_up_with_cache(env, tmp_path)
    where = os.fsencode(src / "d03") + b"/"
    with sqlite3.connect(cache) as db:
        query = "select blobs from entries where dir = ? and name = ?"
        (other,) = db.execute(query, (where, b"f06.txt")).fetchone()
        value = {"empty": b"", "null": None, "another-file": other, "not-ids": os.urandom(33)}
        changed = db.execute(
            "update entries set blobs = ? where dir = ? and name = ?",
            (value[blobs], where, b"f05.txt"),
        )
        assert changed.rowcount == 1
    db.close()
    assert _files_read(env, "www") == 1
    assert _restored(env, src, tmp_path / "r") == contents


def test_what_a_files_cache_cannot_hold_or_reach_does_not_stop_a_backup(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Whoever can write a backed-up file can set its mtime past what SQLite stores (2262),
    and a state directory can have a '#' in its name or a stray directory where the new
    cache goes: each run still backs up every source (the file is read again next time)."""
    env = local_backup_env
    state = tmp_path / "state #1"
    src = tmp_path / "www"
    contents = _cache_tree(src)
    future = src / "d00" / "f00.txt"
    subprocess.run(["touch", "-d", "2300-01-01", str(future)], check=True)
    assert future.stat().st_mtime_ns > 2**63
    env.add_source("www", src)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("a\n")
    env.add_source("other", other)
    env.write_config(state_dir=str(state))

    def run() -> dict[str, int]:
        result = env.ops("--json", "backup", "run", process=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        with repository(env) as repo:
            return {
                source: int(repo.read_snapshot(repo.snapshots(source)[-1]).summary["files_read"])
                for source in ("www", "other")
            }

    assert run() == {"www": len(contents), "other": 1}
    assert run() == {"www": 1, "other": 0}  # only the far-future file is read again
    (new,) = [p.with_name(p.name + ".new") for p in (state / "cache").rglob("www.sqlite")]
    new.mkdir()
    assert run() == {"www": 1, "other": 0}
    assert _restored(env, src, tmp_path / "r") == contents


def test_a_files_cache_of_views_is_not_queried(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    """A cache file whose 'files' is a view of an endless query (no table of either
    layout) is ignored, not queried: the run reads every file and ends."""
    import sqlite3

    env = local_backup_env
    _, contents, cache = _backed_up_with_cache(env, tmp_path)
    cache.unlink()
    with sqlite3.connect(cache) as db:
        db.execute(
            "create view files as with recursive n(i) as (select 1 union all select i + 1"
            " from n) select cast(i as blob) as path, 0 as size, 0 as mtime_ns, 0 as ctime_ns,"
            " 0 as inode, x'' as blobs from n"
        )
    db.close()
    assert _files_read(env, "www") == len(contents)
    assert _files_read(env, "www") == 0


def test_write_only_backup_host(backup_env: BackupEnv, tmp_path: Path) -> None:
    src = make_tree(tmp_path, big_mib=2)
    backup_env.add_source("portal", src)
    backup_env.write_config(identity=False)
    run = backup_env.ops("backup", "run")
    assert run.returncode == 0, run.stderr

    restore = backup_env.ops("backup", "restore", "latest", "--target", str(tmp_path / "r"))
    assert restore.returncode == 3
    assert "backup.identity" in restore.stderr
    assert "Traceback" not in restore.stderr
    read = backup_env.ops("backup", "check", "--read-data")
    assert read.returncode == 3
    assert "backup.identity" in read.stderr
    # Names alone are listed without the identity.
    listed = backup_env.ops_json("backup", "list")
    assert listed[0]["source"] == "portal"
    assert listed[0]["files"] is None

    backup_env.write_config(identity=True)
    assert backup_env.ops("backup", "check", "--read-data").returncode == 0
    restore = backup_env.ops("backup", "restore", "latest", "--target", str(tmp_path / "r"))
    assert restore.returncode == 0, restore.stderr


def test_objects_open_with_the_standard_age_tool(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    src = make_tree(tmp_path, big_mib=1)
    env.add_source("portal", src)
    env.ops("backup", "run", check=True)
    repo = Path(env.repo_url)
    pack = next((repo / "packs").rglob("*"))
    while pack.is_dir():
        pack = next(pack.iterdir())
    snapshot = next((repo / "snapshots").rglob("*-*"))
    for obj in (pack, snapshot):
        plain = subprocess.run(
            ["age", "-d", "-i", str(env.identity), str(obj)], capture_output=True, check=True
        ).stdout
        assert plain
    assert b'"source":"portal"' in subprocess.run(
        ["age", "-d", "-i", str(env.identity), str(snapshot)], capture_output=True, check=True
    ).stdout.replace(b" ", b"")


def test_emergency_restore_with_age_zstd_and_b3sum_only(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """FORMAT.md is enough: the standalone script restores through the real binaries (age,
    zstd, b3sum) everything the tree holds, FIFOs, hard links and directory modes included,
    as portal-ops's own restore does."""
    env = local_backup_env
    src = make_tree(tmp_path, big_mib=3)
    os.mkfifo(src / "www" / "deploy.fifo", 0o620)
    (src / "www" / "tin-tức").chmod(0o750)
    env.add_source("portal", src)
    env.ops("backup", "run", check=True)
    repo = Path(env.repo_url)
    [snapshot] = list((repo / "snapshots").rglob("*-*"))
    target = tmp_path / "emergency"
    script = Path(__file__).resolve().parents[2] / "backup" / "emergency_restore.py"
    subprocess.run(
        ["/usr/bin/python3", str(script), str(repo), str(env.identity),
         str(snapshot.relative_to(repo)), str(target)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    got = restored_root(target, src)
    assert describe(got) == describe(src)
    assert os.readlink(got / "www" / "latest.bin") == "../media/video.bin"
    assert (got / "hardlink.txt").stat().st_ino == (
        got / "www" / "tin-tức" / "bài-1.txt"
    ).stat().st_ino
    native = tmp_path / "native"
    env.ops("backup", "restore", "latest", "--target", str(native), check=True)
    assert describe(restored_root(native, src)) == describe(got)


def test_check_passes_on_a_healthy_repository(backup_env: BackupEnv, tmp_path: Path) -> None:
    src = make_tree(tmp_path, big_mib=20)
    backup_env.add_source("portal", src)
    backup_env.ops("backup", "run", check=True)
    plain = backup_env.ops_json("backup", "check")
    assert plain["ok"] is True
    assert plain["repositories"][0]["trees_checked"] is True
    full = backup_env.ops_json("backup", "check", "--read-data")
    repo = full["repositories"][0]
    assert repo["ok"]
    assert repo["packs_read"] == repo["packs"] >= 2


def _photo_only_pack(env: BackupEnv, packs: list[str], other: bytes) -> str:
    """A data pack without the blob of ``other`` (read with the test's own keys)."""
    from portalops.backup.repo.keys import load_identity, load_writer_key
    from portalops.backup.repo.pack import BlobType, read_header

    identity, writer = load_identity(env.identity), load_writer_key(env.writer_key)
    other_id = writer.blob_id(other)
    for key in packs:
        entries = read_header(identity.decrypt(env.read_object(key)))
        if all(e.type is BlobType.DATA and e.id != other_id for e in entries):
            return key
    raise AssertionError("no pack holds photo data only")


def test_damage_is_named_by_pack_snapshot_and_path(backup_env: BackupEnv, tmp_path: Path) -> None:
    src = tmp_path / "site"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for i in range(3):
        (src / "a" / f"photo-{i}.jpg").write_bytes(os.urandom(12 * MiB))
    (src / "b" / "index.html").write_text("<h1>Cổng thông tin</h1>\n", encoding="utf-8")
    backup_env.add_source("site", src)
    backup_env.ops("backup", "run", check=True)
    packs = backup_env.object_keys("packs/")
    assert len(packs) >= 2
    victim = _photo_only_pack(backup_env, packs, (src / "b" / "index.html").read_bytes())
    data = bytearray(backup_env.read_object(victim))
    data[len(data) // 2] ^= 0x01
    backup_env.write_object(victim, bytes(data))

    assert backup_env.ops("backup", "check").returncode == 0  # sizes still match
    result = backup_env.ops("--json", "backup", "check", "--read-data")
    assert result.returncode == 1, result.stderr
    import json

    [repo] = json.loads(result.stdout)["repositories"]
    [problem] = repo["problems"]
    assert problem["object"] == victim
    assert problem["snapshots"]
    assert problem["snapshots"][0].startswith("site@")
    assert any("photo-" in p for p in problem["paths"])
    assert not any("index.html" in p for p in problem["paths"])
    human = backup_env.ops("backup", "check", "--read-data")
    assert victim in human.stdout
    assert "photo-" in human.stdout

    backup_env.delete_object(victim)
    missing = backup_env.ops("--json", "backup", "check")
    assert missing.returncode == 1
    [repo] = json.loads(missing.stdout)["repositories"]
    [problem] = repo["problems"]
    assert problem["object"] == victim
    assert problem["problem"] == "pack is missing"
    assert any("photo-" in p for p in problem["paths"])


def _crash_corpus(src: Path, seed: int) -> None:
    """Fresh content each round so every run has new packs to write when it is killed."""
    import random

    rng = random.Random(seed)
    (src / "logs").mkdir(parents=True, exist_ok=True)
    (src / "media").mkdir(exist_ok=True)
    for i in range(40):
        (src / "logs" / f"access-{i}.log").write_text(
            "".join(f"10.0.{rng.randrange(256)}.{rng.randrange(256)} GET /tin/{rng.random()}\n"
                    for _ in range(2000))
        )  # fmt: skip
    for i in range(3):
        (src / "media" / f"clip-{i}.bin").write_bytes(rng.randbytes(15 * MiB))


@pytest.mark.slow
@pytest.mark.parametrize("rounds", [20])
def test_sigkill_at_random_moments_leaves_a_sound_repository(
    backup_env: BackupEnv, tmp_path: Path, rounds: int
) -> None:
    import random
    import signal
    import time

    rng = random.Random(20261128)
    src = tmp_path / "src"
    backup_env.add_source("crash", src)
    if backup_env.s3 is not None:
        rounds = 6  # moto is slower; the local rounds cover the same code paths
    # How long an uninterrupted run of one round's new data takes, start-up included.
    _crash_corpus(src, seed=1000)
    started = time.monotonic()
    backup_env.ops("backup", "run", check=True)
    duration = time.monotonic() - started
    killed_mid_run = 0
    for round_ in range(rounds):
        _crash_corpus(src, seed=round_)
        proc = backup_env.popen("backup", "run")
        time.sleep(rng.uniform(0.05, 0.95) * duration)
        if proc.poll() is None:
            killed_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        check = backup_env.ops("--json", "backup", "check")
        assert check.returncode == 0, (round_, check.stdout, check.stderr)
        after = backup_env.ops("backup", "run")
        assert after.returncode == 0, (round_, after.stderr)
        target = tmp_path / f"restore-{round_}"
        backup_env.ops("backup", "restore", "latest", "--target", str(target), check=True)
        assert describe(restored_root(target, src)) == describe(src), round_
    final = backup_env.ops_json("backup", "check", "--read-data")
    assert final["ok"] is True
    # The kills must land while the backup is working, not after it finished.
    assert killed_mid_run >= rounds * 0.8, (killed_mid_run, rounds, duration)


def test_two_backups_at_once_and_a_prune_beside_them(backup_env: BackupEnv, tmp_path: Path) -> None:
    import json
    import time

    one, two = tmp_path / "one", tmp_path / "two"
    for src, seed in ((one, 1), (two, 2)):
        _crash_corpus(src, seed)
    backup_env.add_source("one", one)
    backup_env.add_source("two", two)
    # An old snapshot for the prune to forget, so it has work to do.
    backup_env.ops("backup", "run", "--source", "one", check=True)
    _crash_corpus(one, 3)
    backup_env.retention = KEEP_LAST_ONLY
    backup_env.write_config()

    # Two writer hosts (each with its own state directory: one host runs one backup at a
    # time) back up into the same repository at once.
    host2 = tmp_path / "host2.yaml"
    host2.write_text(
        backup_env.config.read_text().replace(str(backup_env.state_dir), str(tmp_path / "state2"))
    )
    first = backup_env.popen("backup", "run", "--source", "one")
    second = backup_env.popen("--config", str(host2), "backup", "run", "--source", "two")
    # Start the prune once both backups hold their locks: it must wait for them.
    deadline = time.monotonic() + 60
    while len(backup_env.object_keys("locks/")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "backup one ended before the prune started"
    assert second.poll() is None, "backup two ended before the prune started"
    pruner = backup_env.popen("--json", "backup", "forget", "--prune")
    outputs = [p.communicate(timeout=600) for p in (first, second, pruner)]
    codes = [p.returncode for p in (first, second, pruner)]
    assert codes == [0, 0, 0], outputs

    listed = backup_env.ops_json("backup", "list")
    assert sorted(s["source"] for s in listed) == ["one", "two"]  # the old "one" is gone
    prune_doc = json.loads(outputs[2][0])[0]
    assert len(prune_doc["remove"]) == 1
    assert prune_doc["prune"]["packs_deleted"] > 0
    assert backup_env.ops_json("backup", "check", "--read-data")["ok"] is True
    for name, src in (("one", one), ("two", two)):
        target = tmp_path / f"restore-{name}"
        backup_env.ops(
            "backup", "restore", "latest", "--source", name, "--target", str(target), check=True
        )
        assert describe(restored_root(target, src)) == describe(src)


def test_forget_dry_run_then_prune_frees_space(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    src = tmp_path / "src"
    env.add_source("logs", src, category="logs")
    for seed in range(3):
        _crash_corpus(src, seed)
        env.ops("backup", "run", check=True)
    env.retention = KEEP_LAST_ONLY
    env.write_config()
    dry = env.ops_json("backup", "forget", "--prune", "--dry-run")[0]
    assert len(dry["keep"]) == 1
    assert len(dry["remove"]) == 2
    assert len(env.ops_json("backup", "list")) == 3  # nothing changed
    before = sum(f.stat().st_size for f in Path(env.repo_url).rglob("*") if f.is_file())
    done = env.ops_json("backup", "forget", "--prune")[0]
    assert done["prune"]["packs_deleted"] > 0
    after = sum(f.stat().st_size for f in Path(env.repo_url).rglob("*") if f.is_file())
    assert after < before * 0.6
    assert len(env.ops_json("backup", "list")) == 1
    assert env.ops_json("backup", "check", "--read-data")["ok"] is True
    target = tmp_path / "r"
    env.ops("backup", "restore", "latest", "--target", str(target), check=True)
    assert describe(restored_root(target, src)) == describe(src)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_backups_through_a_faulty_s3_endpoint(
    faulty_proxy: Any, s3_server: Any, tmp_path: Path, seed: int
) -> None:
    """A proxy in front of moto fails a share of requests (500, 503 SlowDown, resets, cut
    bodies). Every run either completes, or fails with exit 3 and writes no snapshot; what
    completed restores exactly."""
    import json

    from tests.fixtures.backup_env import s3_backup_env

    env = s3_backup_env(s3_server, tmp_path, endpoint=faulty_proxy.url)
    src = tmp_path / "src"
    env.repo_options = {"attempts": 3}
    env.add_source("portal", src)

    faulty_proxy.configure(error_500=0.06, slowdown=0.06, reset=0.06, truncate=0.02, seed=seed)
    last_good = None  # what the newest snapshot must restore to
    for round_ in range(3):
        _crash_corpus(src, seed=100 * seed + round_)
        before = env.object_keys("snapshots/")
        result = env.ops("--json", "backup", "run")
        after = env.object_keys("snapshots/")
        assert "Traceback" not in result.stderr
        if result.returncode == 0:
            last_good = describe(src)
            assert len(after) == len(before) + 1
        else:
            assert result.returncode == 3, result.stderr
            assert after == before, "a failed run must not write a snapshot"
            assert json.loads(result.stdout)["results"][0]["status"] == "failed"
    assert faulty_proxy.faults_injected > 0

    faulty_proxy.configure(seed=seed)  # no more faults
    assert env.ops_json("backup", "check", "--read-data")["ok"] is True
    if last_good is not None:
        target = tmp_path / "r"
        env.ops("backup", "restore", "latest", "--target", str(target), check=True)
        assert describe(restored_root(target, src)) == last_good


def test_all_requests_failing_ends_in_exit_3_without_a_snapshot(
    faulty_proxy: Any, s3_server: Any, tmp_path: Path
) -> None:
    from tests.fixtures.backup_env import s3_backup_env

    env = s3_backup_env(s3_server, tmp_path, endpoint=faulty_proxy.url)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.html").write_text("<h1>Xã Đạo Trù</h1>")
    env.repo_options = {"attempts": 2}
    env.add_source("portal", tmp_path / "src")
    faulty_proxy.configure(slowdown=1.0)
    result = env.ops("backup", "run", timeout=120)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "SlowDown" in result.stdout + result.stderr
    faulty_proxy.configure()
    assert env.object_keys("snapshots/") == []


def test_object_lock_keeps_snapshots_and_reports_them(s3_server: Any, tmp_path: Path) -> None:
    """With Object Lock retention, forget and prune leave locked objects and say so; they
    are not errors. The bucket's default retention holds what the backup wrote without any
    retention header. (moto applies it to, and enforces it on, single-PUT objects.)"""
    from tests.fixtures.backup_env import s3_backup_env

    env = s3_backup_env(
        s3_server, tmp_path, object_lock=True, default_retention_days=1, object_lock_days=1
    )
    src = tmp_path / "src"
    src.mkdir()
    env.add_source("portal", src)
    for i in range(2):
        (src / "index.html").write_text(f"<p>phiên bản {i}</p>")
        env.ops("backup", "run", check=True)
    env.retention = KEEP_LAST_ONLY
    env.write_config()
    result = env.ops("--json", "backup", "forget", "--prune")
    assert result.returncode == 0, result.stderr
    import json

    [doc] = json.loads(result.stdout)
    assert len(doc["remove"]) == 1
    assert doc["locked"], doc  # the old snapshot is still under retention
    assert "retention" in doc["locked"][0] or "Object Lock" in doc["locked"][0]
    assert len(env.ops_json("backup", "list")) == 2
    assert env.ops_json("backup", "check", "--read-data")["ok"] is True


def test_a_run_of_several_sources_fetches_each_index_object_once(
    faulty_proxy: Any, s3_server: Any, tmp_path: Path
) -> None:
    """Each source re-reads the index under its own lock; on S3 that used to be one GET per
    index object per source. Seen on the wire (the proxy forwards faithfully here): every
    index object is fetched once per run, however many sources read it."""
    from tests.fixtures.backup_env import s3_backup_env

    env = s3_backup_env(s3_server, tmp_path, endpoint=faulty_proxy.url)
    for name in ("portal", "logs", "configs"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.txt").write_text(f"{name} day one\n")
        env.add_source(name, tmp_path / name)
    env.ops("backup", "run", check=True)  # day one: three index objects, one per source
    for name in ("portal", "logs", "configs"):
        (tmp_path / name / "b.txt").write_text(f"{name} day two\n")
    faulty_proxy.reset_counts()
    env.ops("backup", "run", check=True)
    fetched = [r.path for r in faulty_proxy.seen if r.method == "GET" and "/index/" in r.path]
    listings = [r for r in faulty_proxy.seen if r.method == "GET" and "prefix=" in r.path]
    assert len(env.object_keys("index/")) >= 3 + 2  # day two's sources added their own
    assert len(fetched) == len(set(fetched)) >= 3, fetched  # each once, day one's at least
    assert sum("index" in r.path for r in listings) == 3  # still listed for every source
