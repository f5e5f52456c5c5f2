"""``ops backup copy`` into a repository made with another writer key (blobs renamed), against
what a backup host holding the old writer key could have written into the source: the renamed
snapshot restores exactly what the source one does, or the snapshot fails, named, with the
others still copied; never a traceback, never a snapshot naming what the target lacks."""

from __future__ import annotations

import base64
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.backup_env import BackupEnv
from tests.hostile.forge import Forger
from tests.hostile.genuine import an_hour_ago, assert_no_internal_error, forger
from tests.integration.test_backup_copies import add_renewed, write_into

pytestmark = pytest.mark.integration


def copy(env: BackupEnv, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = env.ops("--json", "backup", "copy", "--from", "main", "--to", "renewed", *args)
    assert_no_internal_error(result.stdout + result.stderr)
    return result.code, json.loads(result.stdout)["snapshots"]


def restored(env: BackupEnv, repository: str, source: str, target: Path) -> dict[str, bytes]:
    env.ops("backup", "restore", "latest", "--repository", repository, "--source", source,
            "--target", str(target), check=True)  # fmt: skip
    return {
        str(p.relative_to(target)): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()
    }


def same_restore(env: BackupEnv, source: str, tmp_path: Path) -> dict[str, bytes]:
    ours = restored(env, "main", source, tmp_path / "from-main")
    assert restored(env, "renewed", source, tmp_path / "from-renewed") == ours
    checked = env.ops("--json", "backup", "check", "--read-data", "--repository", "renewed")
    assert checked.code == 0, checked.stdout + checked.stderr
    return ours


def file_of(f: Forger, name: str, blob: bytes, size: int) -> dict[str, Any]:
    return {**f._node(name, "file", 0o644), "size": size, "content": [blob.hex()]}


def test_a_file_whose_content_is_a_tree_blob_restores_the_same(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A file whose content names a blob that is also a tree (a directory's), in one
    snapshot: the file's bytes are renamed as data, the directory's tree as a tree."""
    env = local_backup_env
    f = forger(env)
    sub = f.tree([f.file_node("inner.txt", b"hello inner")])
    encoded = f.pending[-1].stored
    f.commit(
        "forged", an_hour_ago(), [f.subtree_node("d", sub), file_of(f, "f", sub, len(encoded))]
    )
    add_renewed(env, "renewed")
    code, copied = copy(env)
    assert code == 0, copied
    assert [s["status"] for s in copied] == ["copied"]
    assert same_restore(env, "forged", tmp_path) == {"d/inner.txt": b"hello inner", "f": encoded}


def test_a_tree_renamed_earlier_in_the_run_is_not_a_later_files_content(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    f = forger(env)
    sub = f.tree([f.file_node("inner.txt", b"hello inner")])
    encoded = f.pending[-1].stored
    when = an_hour_ago()
    f.commit("forged", when, [f.subtree_node("d", sub)])
    f.commit("forged", when + timedelta(minutes=1), [file_of(f, "f", sub, len(encoded))])
    add_renewed(env, "renewed")
    code, copied = copy(env)
    assert code == 0, copied
    assert same_restore(env, "forged", tmp_path) == {"f": encoded}


@pytest.mark.parametrize("odd", ["symlink with content", "dir with content", "file with subtree"])
def test_ids_a_node_of_its_kind_does_not_use_are_dropped_not_a_crash(
    local_backup_env: BackupEnv, tmp_path: Path, odd: str
) -> None:
    env = local_backup_env
    f = forger(env)
    stray = {"content": ["ab" * 32]} if "content" in odd else {"subtree": "cd" * 32}
    node = {
        "symlink with content": lambda: f.symlink_node("l", "target", **stray),
        "dir with content": lambda: f.dir_node("d", [f.file_node("x", b"x")], **stray),
        "file with subtree": lambda: f.file_node("x", b"some data", **stray),
    }[odd]()
    f.commit("forged", an_hour_ago(), [node, f.file_node("ok", b"1")])
    add_renewed(env, "renewed")
    code, copied = copy(env)
    assert code == 0, copied
    assert same_restore(env, "forged", tmp_path)["ok"] == b"1"


def test_delta_blobs_are_renamed_whole(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    f = forger(env)
    base = os.urandom(300_000)
    base_id = f.add_blob(base)
    f.seal_pack()
    edited = base[:1000] + b"EDIT" + base[1000:]
    delta = f.add_delta(edited, [base_id], base)
    root = f.tree([{**f._node("dump", "file", 0o644), "size": len(base) + len(edited),
                    "content": [base_id.hex(), delta.hex()]}])  # fmt: skip
    f.seal_pack()
    f.write_index()
    f.snapshot("db", an_hour_ago(), root)
    add_renewed(env, "renewed")
    code, copied = copy(env)
    assert code == 0, copied
    assert same_restore(env, "db", tmp_path) == {"dump": base + edited}


def test_what_the_target_would_refuse_to_read_fails_that_snapshot_by_name(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A file naming a 6 MB tree blob as its content (above a data blob's limit), and a
    symlink target that grows past a tree's limit once written again (control characters
    escaped six times over): each snapshot fails, named, and the next one is still copied."""
    env = local_backup_env
    f = forger(env)
    big = f.tree([{**f._node(f"n{i:06d}-" + "x" * 100, "file", 0o644), "size": 0,
                   "content": []} for i in range(30_000)])  # fmt: skip
    big_size = len(f.pending[-1].stored)
    when = an_hour_ago()
    f.commit("huge-content", when, [file_of(f, "f", big, big_size)])
    link = f._node("l", "symlink", 0o777)
    link["target_b64"] = base64.b64encode(b"\x01" * (11 * 1024 * 1024)).decode()
    f.commit("growing-tree", when, [link])
    f.commit("fine", when, [f.file_node("ok", b"1")])
    add_renewed(env, "renewed")
    code, copied = copy(env)
    assert code == 1, copied
    by_source = {s["source"]: s for s in copied}
    assert by_source["fine"]["status"] == "copied"
    assert by_source["huge-content"]["status"] == "failed"
    assert "more than renewed lets a data blob hold" in by_source["huge-content"]["error"]
    assert by_source["growing-tree"]["status"] == "failed"
    assert "more than renewed lets a tree blob hold" in by_source["growing-tree"]["error"]
    assert same_restore(env, "fine", tmp_path) == {"ok": b"1"}


def test_another_snapshot_at_the_same_time_is_a_named_conflict(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """The target holds a snapshot of the source at the same time but of other data (a
    writer with the new key made it): the copy names the conflict (renamed trees differ) and
    overwrites nothing; a dry run, reading no data, names it by its other run id."""
    env = local_backup_env
    f = forger(env)
    when = an_hour_ago()
    f.commit("s", when, [f.file_node("a", b"AAA")], body={"run": "1" * 32})
    renewed, _ = add_renewed(env, "renewed")
    Forger(env.root / "keys" / "writer-2027.key", write_into(renewed)).commit(
        "s", when, [f.file_node("a", b"BBB")], body={"run": "2" * 32}
    )
    code, copied = copy(env)
    assert code == 1, copied
    assert "renewed holds another snapshot of s at this time" in copied[0]["error"]
    code, planned = copy(env, "--dry-run")
    assert code == 1, planned
    assert "from another run" in planned[0]["error"]
    assert len(list((renewed / "snapshots" / "s").iterdir())) == 1  # only the other one
