"""A compromised backup host against restore: nothing may be written outside the target.

Every forged object comes from ``tests/hostile/forge.py`` (FORMAT.md and the writer key only,
as an attacker with root on a portal server). The admin's real commands run through the CLI:
``backup restore`` (by snapshot id), ``drill``, ``backup check``, ``restore --to-database`` and
``backup/emergency_restore.py`` through the real age, zstd and b3sum programs. Each restore
target sits deep inside a sandbox directory whose every other path is recorded before and
compared after, so a write anywhere outside the target shows; names that would reach outside
the sandbox are absolute paths checked by name. The genuine snapshot then still restores byte
for byte.
"""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.backup_env import PROJECT, BackupEnv, Result
from tests.hostile.forge import Blob, Forger
from tests.hostile.genuine import (
    FILES,
    an_hour_ago,
    emergency,
    files_under,
    forged_id,
    genuine_backup,
)

pytestmark = pytest.mark.integration

EMERGENCY = PROJECT / "backup" / "emergency_restore.py"


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A directory with sentinel files around the place restore targets go (``a/b/c``)."""
    box = tmp_path / "sandbox"
    (box / "a" / "b" / "c").mkdir(parents=True)
    (box / "sentinel.txt").write_bytes(b"outside the target\n")
    (box / "a" / "b" / "keep.txt").write_bytes(b"keep me\n")
    (box / "a" / "b" / "c" / "keep.txt").write_bytes(b"keep me too\n")
    return box


def listing(root: Path, skip: Path | None = None) -> dict[str, object]:
    """Every path below ``root`` (symlinks not followed) with its content or link target."""
    found: dict[str, object] = {}
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[str(path)] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            found[str(path)] = (path.read_bytes(), stat.S_IMODE(st.st_mode))
        else:
            found[str(path)] = stat.S_IFMT(st.st_mode)
    return found


def restore(
    env: BackupEnv, snapshot: str, target: Path, *extra: str, timeout: float = 300
) -> Result:
    result = env.ops(
        "backup", "restore", snapshot, "--target", str(target), *extra, timeout=timeout
    )
    assert "Traceback" not in result.stderr, result
    assert "internal error" not in result.stderr, result
    return result


def assert_genuine_restores(env: BackupEnv, snapshot: str, src: Path, target: Path) -> None:
    result = restore(env, snapshot, target)
    assert result.returncode == 0, result.stderr
    root = target / src.relative_to("/")
    got = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert got == FILES


# -- names -----------------------------------------------------------------------------------


def test_traversal_names_are_refused_and_the_rest_restores(
    backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    env = backup_env
    genuine, src = genuine_backup(env, tmp_path)
    escaped = Path(f"/tmp/portal-ops-escaped-{os.urandom(6).hex()}.txt")
    attacker = Forger(env.writer_key, env.write_object)
    www = [
        attacker.file_node("good.txt", b"fine\n"),
        attacker.dir_node("..", [attacker.file_node("escaped.txt", b"up one\n")]),
        attacker.file_node("../../../escaped.txt", b"up three\n"),
        attacker.file_node("a/b", b"slash\n"),
        attacker.file_node(str(escaped), b"absolute\n"),
        attacker.file_node(b"evil\0name", b"nul\n"),
        attacker.file_node("", b"empty name\n"),
        attacker.dir_node(".", [attacker.file_node("dot.txt", b"dot\n")]),
        attacker.dir_node("sub", [attacker.file_node("deep.txt", b"deep\n")]),
    ]
    key = attacker.commit("webroot", an_hour_ago(), [attacker.dir_node("srv", www)])
    target = sandbox / "a" / "b" / "c" / "target"
    before = listing(sandbox)

    result = restore(env, forged_id(key), target)

    assert result.returncode == 1, result.stderr
    assert f"snapshot webroot@{forged_id(key)[:8]}" in result.stderr
    for shown in ("srv/..:", "srv/../../../escaped.txt:", "srv/a/b:", f"srv/{escaped}:",
                  r"srv/'evil\x00name':", "srv/'':", "srv/.:"):  # fmt: skip
        assert shown in result.stderr, (shown, result.stderr)
    assert "7 entries refused, not restored" in result.stderr
    assert files_under(target) == {"srv/good.txt": b"fine\n", "srv/sub/deep.txt": b"deep\n"}
    assert listing(sandbox, skip=target) == before
    assert not escaped.exists()
    assert_genuine_restores(env, genuine, src, tmp_path / "genuine")


def test_a_symlink_and_a_directory_of_one_name_are_both_refused(
    local_backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    """A symlink ``a`` to a directory outside, then a directory ``a`` holding a file: the
    file must not land outside through the link. Two entries of one name are both refused;
    a lone symlink pointing outside is restored as a link, its target left untouched."""
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    outside = sandbox / "a" / "b"
    attacker = Forger(env.writer_key, env.write_object)
    www = [
        attacker.symlink_node("a", str(outside)),
        attacker.dir_node("a", [attacker.file_node("pwned.txt", b"through the link\n")]),
        attacker.symlink_node("keep", str(outside / "keep.txt")),
        attacker.symlink_node("link", str(outside)),
        attacker.file_node("link/pwned.txt", b"through the link\n"),
    ]
    key = attacker.commit("webroot", an_hour_ago(), [attacker.dir_node("srv", www)])
    target = sandbox / "a" / "b" / "c" / "target"
    (outside / "keep.txt").chmod(0o600)
    before = listing(sandbox)

    result = restore(env, forged_id(key), target)

    assert result.returncode == 1, result.stderr
    assert "srv/a: 2 entries of this directory have this name" in result.stderr
    assert "srv/link/pwned.txt: the name holds '/'" in result.stderr
    assert os.readlink(target / "srv" / "keep") == str(outside / "keep.txt")
    assert os.readlink(target / "srv" / "link") == str(outside)
    assert not (target / "srv" / "a").exists()
    assert listing(sandbox, skip=target) == before  # keep.txt: same bytes, same mode 0600
    assert_genuine_restores(env, genuine, src, tmp_path / "genuine")


def test_symlinks_and_fifos_already_in_the_target_redirect_nothing(
    local_backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    """The target holds a symlink where a directory goes, a symlink, a FIFO and a hard link
    to a file outside where files go: each is replaced, nothing outside changes, nothing
    blocks."""
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    target = sandbox / "a" / "b" / "c" / "target"
    outside = sandbox / "a" / "b"
    root = target / src.relative_to("/")
    # a symlink where a directory of the snapshot's goes: www/css -> outside
    (root / "img").mkdir(parents=True)
    (root / "css").symlink_to(outside)
    # where files go: a symlink to a sentinel outside, and a FIFO
    (root / "index.html").symlink_to(outside / "keep.txt")
    os.mkfifo(root / "img" / "banner.bin")
    # a symlink high up, where the first directory of the snapshot's path goes
    other = tmp_path / "other-target"
    other.mkdir()
    first = src.relative_to("/").parts[0]
    (other / first).symlink_to(outside)
    # a hard link to a file outside, where a file goes
    third = tmp_path / "third-target"
    (third / src.relative_to("/") / "css").mkdir(parents=True)
    os.link(outside / "keep.txt", third / src.relative_to("/") / "css" / "site.css")
    before = listing(sandbox, skip=target)

    assert_genuine_restores(env, genuine, src, target)
    assert_genuine_restores(env, genuine, src, other)
    assert_genuine_restores(env, genuine, src, third)

    assert listing(sandbox, skip=target) == before
    assert stat.S_ISDIR((root / "css").lstat().st_mode)
    assert stat.S_ISDIR((other / first).lstat().st_mode)


# -- bounded walks ---------------------------------------------------------------------------


def test_a_subtree_reused_at_every_level_is_refused_before_writing(
    local_backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    """40 levels, each directory holding the one below twice: 2**40 paths in a few KiB of
    trees. Also a chain of 3000 nested directories. Restore refuses both at once, writes
    nothing (the target is not even made), and drill and check finish too."""
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    env.write_config(drill={"scratch_dir": str(sandbox / "a" / "b" / "c" / "scratch")})
    attacker = Forger(env.writer_key, env.write_object)
    bomb = attacker.commit(  # the latest: the drill takes it
        "webroot", datetime.now(UTC), [attacker.subtree_node("srv", attacker.reuse_bomb(40))]
    )
    deep = attacker.tree([attacker.file_node("bottom.txt", b"x")])
    for _ in range(3000):
        deep = attacker.tree([attacker.subtree_node("d", deep)])
    chain = attacker.commit("webroot", an_hour_ago(), [attacker.subtree_node("srv", deep)])
    target = sandbox / "a" / "b" / "c" / "target"

    started = time.monotonic()
    result = restore(env, forged_id(bomb), target, timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"snapshot webroot@{forged_id(bomb)[:8]}: its trees expand to" in result.stderr
    assert "over the 10000000 a restore takes" in result.stderr
    assert "refused before anything was written" in result.stderr
    assert time.monotonic() - started < 60  # about a second; 2**40 paths would never end
    assert not target.exists()

    result = restore(env, forged_id(chain), target, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "its directories nest more than 2048 levels deep" in result.stderr
    assert not target.exists()

    drill = env.ops("--json", "drill", timeout=300)
    assert drill.returncode == 1, drill.stderr
    [drilled] = json.loads(drill.stdout)["results"]
    assert drilled["snapshot"] == forged_id(bomb)
    assert any("refused before anything was written" in r for r in drilled["reasons"]), drilled
    check = env.ops("--json", "backup", "check", timeout=300)
    assert "Traceback" not in check.stderr, check
    assert "internal error" not in check.stderr, check
    assert_genuine_restores(env, genuine, src, tmp_path / "genuine")


# -- every location of a blob ----------------------------------------------------------------


def genuine_records(env: BackupEnv) -> list[dict[str, Any]]:
    return [r for key in env.object_keys("index/") for r in Forger.read_index(env.read_object(key))]


def test_restore_takes_a_blob_from_its_next_location(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Indexes read first place every genuine blob in a pack that does not exist, and in a
    forged pack where each is garbage of the right length: restore uses the genuine pack,
    says which packs it could not use, and exits 0. Without the genuine pack it fails (3),
    naming every location tried."""
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    records = genuine_records(env)
    # read first, for certain: "00" prefixes alone lost to a genuine "00" index now and then
    first_genuine = min(env.object_keys("index/"))
    attacker = Forger(env.writer_key, env.write_object)
    ghost = "packs/00/" + "0" * 64
    attacker.write_index([{**r, "key": ghost} for r in records], before=first_genuine)
    for record in records:
        for blob_id, kind, _offset, _length, raw_length, _compression in record["blobs"]:
            garbage = os.urandom(raw_length)
            attacker.add_raw_blob(Blob(bytes.fromhex(blob_id), kind, garbage, raw_length))
    forged_pack = attacker.seal_pack()
    attacker.write_index([forged_pack], before=first_genuine)

    result = restore(env, genuine, tmp_path / "r1")
    assert result.returncode == 0, result.stderr
    assert ghost in result.stdout
    assert "does not exist" in result.stdout
    assert forged_pack["key"] in result.stdout
    assert "fails its id" in result.stdout
    root = tmp_path / "r1" / src.relative_to("/")
    assert files_under(root) == FILES

    env.write_config(drill={"scratch_dir": str(tmp_path / "scratch")})
    [drilled] = json.loads(env.ops("--json", "drill").stdout)["results"]
    [step] = [s for s in drilled["steps"] if s["name"] == "restore"]
    assert step["ok"], drilled

    for record in records:
        env.delete_object(record["key"])
    result = restore(env, genuine, tmp_path / "r2")
    assert result.returncode == 3, result.stderr
    [tree_pack] = [r["key"] for r in records if any(row[1] == "tree" for row in r["blobs"])]
    for pack in (ghost, forged_pack["key"], tree_pack):
        assert pack in result.stderr, (pack, result.stderr)


# -- drill, check, restore --to-database -----------------------------------------------------


def test_drill_and_check_name_refused_entries(
    local_backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    """The drill restores the latest snapshot as root: a forged latest with a traversal name
    fails the drill with the reason, writes nothing outside its scratch space; check names
    the tree, the snapshot and the path."""
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    scratch = sandbox / "a" / "b" / "c" / "scratch"
    env.write_config(drill={"scratch_dir": str(scratch)})
    attacker = Forger(env.writer_key, env.write_object)
    www = [
        attacker.file_node("index.html", b"<h1>forged</h1>\n"),
        attacker.file_node("../../../escaped.txt", b"up three\n"),
    ]
    key = attacker.commit(
        "webroot", datetime.now(UTC), [attacker.dir_node("srv", [attacker.dir_node("www", www)])]
    )
    before = listing(sandbox)

    result = env.ops("--json", "drill")
    assert result.returncode == 1, result.stderr
    [drilled] = json.loads(result.stdout)["results"]
    assert drilled["snapshot"] == forged_id(key)
    [reason] = [r for r in drilled["reasons"] if r.startswith("restore:")]
    assert "srv/www/../../../escaped.txt: the name holds '/'" in reason
    assert f"webroot@{forged_id(key)[:8]}" in reason
    assert listing(sandbox, skip=scratch) == before

    check = env.ops("--json", "backup", "check")
    assert check.returncode == 1, check.stderr
    [repo] = json.loads(check.stdout)["repositories"]
    [problem] = [p for p in repo["problems"] if p["object"].startswith("tree ")]
    assert "../../../escaped.txt: the name holds '/'" in problem["problem"]
    assert problem["snapshots"] == [f"webroot@{forged_id(key)[:8]}"]
    assert problem["paths"] == ["/srv/www"]
    assert_genuine_restores(env, genuine, src, tmp_path / "genuine")


def test_restore_to_database_refuses_names_and_symlinked_dumps(
    local_backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    """A database snapshot is a flat set of dumps. A traversal name stops the load (exit 1)
    before any server is contacted; so does a dump that is a symlink to a file of the admin
    host (the load would read it)."""
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    secret = sandbox / "sentinel.txt"
    attacker = Forger(env.writer_key, env.write_object)
    traversal = attacker.commit(
        "portaldb", an_hour_ago(),
        [attacker.file_node("../../portal.sql", b"DROP DATABASE portal;\n")],
        category="database",
    )  # fmt: skip
    linked = attacker.commit(
        "portaldb", an_hour_ago(), [attacker.symlink_node("portal.sql", str(secret))],
        category="database",
    )  # fmt: skip
    before = listing(sandbox)
    nowhere = "mariadb://root@127.0.0.1:9"  # never contacted

    result = env.ops("backup", "restore", forged_id(traversal), "--to-database", nowhere)
    assert result.returncode == 1, result.stderr
    assert "../../portal.sql: the name holds '/'" in result.stderr
    result = env.ops("backup", "restore", forged_id(linked), "--to-database", nowhere)
    assert result.returncode == 1, result.stderr
    assert "not regular files: portal.sql" in result.stderr
    assert listing(sandbox) == before
    assert_genuine_restores(env, genuine, src, tmp_path / "genuine")


# -- emergency_restore.py --------------------------------------------------------------------


def test_emergency_restore_refuses_names_and_tampered_blobs(
    local_backup_env: BackupEnv, tmp_path: Path, sandbox: Path
) -> None:
    """The standalone script through the real age, zstd and b3sum: traversal names and a
    duplicate are refused (exit 1, the rest restored, nothing outside); a subtree bomb is
    refused before writing; a blob whose first location is tampered comes from the next;
    a blob tampered at its only location fails the restore (exit 3)."""
    env = local_backup_env
    _, src = genuine_backup(env, tmp_path)
    [genuine_key] = env.object_keys("snapshots/")
    records = genuine_records(env)
    attacker = Forger(env.writer_key, env.write_object)
    # every genuine blob first found as garbage of the right length in a forged pack
    for record in records:
        for blob_id, kind, _offset, _length, raw_length, _compression in record["blobs"]:
            attacker.add_raw_blob(Blob(bytes.fromhex(blob_id), kind, bytes(raw_length), raw_length))
    attacker.write_index([attacker.seal_pack()], sort_first=True)
    escaped = Path(f"/tmp/portal-ops-escaped-{os.urandom(6).hex()}.txt")
    www = [
        attacker.file_node("good.txt", b"fine\n"),
        attacker.file_node("../../../escaped.txt", b"up three\n"),
        attacker.file_node(str(escaped), b"absolute\n"),
        attacker.dir_node("..", [attacker.file_node("escaped.txt", b"up one\n")]),
        attacker.symlink_node("a", str(sandbox)),
        attacker.dir_node("a", [attacker.file_node("pwned.txt", b"through the link\n")]),
    ]
    names = attacker.commit("webroot", an_hour_ago(), [attacker.dir_node("srv", www)])
    bomb = attacker.commit(
        "webroot", an_hour_ago(), [attacker.subtree_node("srv", attacker.reuse_bomb(40))]
    )
    tampered = attacker.file_node("tampered.txt", b"")
    tampered_id = attacker.add_raw_blob(Blob(attacker.blob_id(b"genuine"), "data", b"forged!", 7))
    tampered.update(size=7, content=[tampered_id.hex()])
    lying = attacker.commit("webroot", an_hour_ago(), [tampered])
    target = sandbox / "a" / "b" / "c" / "target"
    before = listing(sandbox)

    result = emergency(env, names, target)
    assert result.returncode == 1, result.stderr
    for shown in ("srv/../../../escaped.txt", f"srv/{escaped}", "srv/..", "srv/a"):
        assert f"refused, not restored: '{shown}'" in result.stderr, (shown, result.stderr)
    assert files_under(target) == {"srv/good.txt": b"fine\n"}
    assert listing(sandbox, skip=target) == before
    assert not escaped.exists()

    result = emergency(env, bomb, tmp_path / "bomb")
    assert result.returncode == 3, result.stderr
    assert "trees expand beyond 10000000 entries or 2048 levels" in result.stderr
    assert not (tmp_path / "bomb").exists()

    result = emergency(env, lying, tmp_path / "lying")
    assert result.returncode == 3, result.stderr
    assert f"blob {tampered_id.hex()}" in result.stderr
    assert "fails its id" in result.stderr

    result = emergency(env, genuine_key, tmp_path / "genuine")
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path / "genuine" / src.relative_to("/")) == FILES
