"""A compromised backup host against delta blobs (FORMAT.md, compression ``zstd-delta``).

A delta is read through other blobs, its bases, so a writer can forge chains, bases that do
not exist, frames that decode to something else or claim sizes they do not hold, and rows
that name the delta itself. Every object here is made by ``tests/hostile/forge.py`` from the
format document and the writer key; the admin's real commands run through the CLI. A
well-formed forged delta restores (the document is enough to write one); every malformed one
is refused with a message naming it, never a traceback, and the genuine snapshot still
restores byte for byte.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

import pytest
import zstandard

from portalops.backup.repo.storage import LocalStorage
from tests.fixtures.backup_env import BackupEnv
from tests.hostile.forge import Blob, Forger
from tests.hostile.genuine import (
    FILES,
    an_hour_ago,
    assert_no_internal_error,
    emergency,
    files_under,
    forged_id,
    forger,
    genuine_backup,
)

pytestmark = pytest.mark.integration


ROWS = b"".join(b"%06d\tXa Dao Tru\t%s\n" % (i, os.urandom(24).hex().encode()) for i in range(2000))
EDITED = ROWS.replace(b"000500\tXa", b"000500\tXA").replace(b"001700\tXa", b"001700\tXA")


def forger_with_base(env: BackupEnv) -> tuple[Forger, bytes]:
    """A writer's forger, and ROWS stored whole and indexed (the base of the deltas here)."""
    f = forger(env)
    base = f.add_blob(ROWS)
    f.seal_pack()
    f.write_index()
    return f, base


def one_file_snapshot(f: Forger, name: str, blob: bytes, size: int) -> str:
    """A forged snapshot of ``webroot`` holding one file made of ``blob``; its id."""
    node = f._node(name, "file", 0o644)
    node.update(size=size, content=[blob.hex()])
    key = f.commit("webroot", an_hour_ago(), [node])
    return forged_id(key)


def restore(env: BackupEnv, snapshot: str, target: Path) -> tuple[int, str]:
    result = env.ops("backup", "restore", snapshot, "--target", str(target))
    assert_no_internal_error(result.stderr)
    return result.code, result.stderr


def test_forged_deltas_restore_when_well_formed_and_are_refused_otherwise(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    f, base = forger_with_base(env)

    # Well formed: FORMAT.md is enough to write a delta a restore reads.
    good = f.add_delta(EDITED, [base], ROWS)
    snapshot = one_file_snapshot(f, "good.tsv", good, len(EDITED))
    code, err = restore(env, snapshot, tmp_path / "good")
    assert code == 0, err
    assert files_under(tmp_path / "good") == {"good.tsv": EDITED}

    def other(row: int) -> bytes:  # each case its own content, so its own blob id
        return EDITED.replace(b"%06d\tXa" % row, b"%06d\tXA" % row)

    cases = {
        # A chain: the base is itself a delta (a reader goes one step deep, no further).
        "chained": (f.add_delta(other(900), [good], EDITED), "not in the index as a whole blob"),
        # A base no index names.
        "orphan": (f.add_delta(other(901), [os.urandom(32)], ROWS), "not in the index"),
        # Made against other bytes than its base's: decodes to something else, or not at all.
        "wrong-dictionary": (f.add_delta(other(902), [base], ROWS[::-1]), "blob "),
        # A tree as its base (up to 64 MiB of dictionary): only whole data blobs are bases.
        "tree-base": (
            f.add_delta(other(903), [f.tree([f.file_node("x", b"y")])], ROWS),
            "not in the index as a whole blob",
        ),
    }
    # A frame claiming far more than its row (a decompression bomb through a dictionary).
    bomb = zstandard.ZstdCompressor(
        dict_data=zstandard.ZstdCompressionDict(ROWS, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    ).compress(ROWS * 60)
    bomb_id = f.add_raw_blob(Blob(f.blob_id(b"x" * 1000), "data", bomb, 1000, "zstd-delta", [base]))
    cases["bomb"] = (bomb_id, "declares")
    forged = []
    for name, (blob, expected) in cases.items():
        snapshot = one_file_snapshot(f, f"{name}.tsv", blob, len(EDITED))
        forged.append(snapshot)
        code, err = restore(env, snapshot, tmp_path / name)
        assert code != 0, name
        assert expected in err, (name, err)
        assert blob.hex()[:16] in err, (name, err)

    # Without reading data: a delta whose base is in no index as a whole blob is named.
    structure = env.ops("backup", "check")
    assert_no_internal_error(structure.stderr + structure.stdout)
    assert structure.code == 1
    for name in ("chained", "orphan"):
        assert f"blob {cases[name][0].hex()[:16]}" in structure.stdout, structure.stdout
    assert f"blob {cases['bomb'][0].hex()[:16]}" not in structure.stdout  # only data shows it

    check = env.ops("backup", "check", "--read-data")
    assert_no_internal_error(check.stderr + check.stdout)
    assert check.code == 1
    for snapshot in forged:  # each forged snapshot named as touched by the damage
        assert f"webroot@{snapshot[:8]}" in check.stdout, check.stdout
    assert f"webroot@{genuine[:8]}" not in check.stdout

    target = tmp_path / "genuine"
    code, err = restore(env, genuine, target)
    assert code == 0, err
    assert files_under(target / src.relative_to("/")) == FILES


@pytest.mark.parametrize(
    "bases",
    [
        pytest.param("self", id="names-itself"),
        pytest.param("three", id="three-bases"),
        pytest.param("not-a-list", id="not-a-list"),
        pytest.param("empty", id="empty-list"),
    ],
)
def test_malformed_delta_rows_make_their_index_object_refused(
    local_backup_env: BackupEnv, tmp_path: Path, bases: str
) -> None:
    env = local_backup_env
    genuine, src = genuine_backup(env, tmp_path)
    f = forger(env)
    base = f.add_blob(ROWS)
    f.seal_pack()
    delta = f.add_delta(EDITED, [base], ROWS)
    record = f.seal_pack()
    row = record["blobs"][0]
    row[6] = {
        "self": [delta.hex()],
        "three": [base.hex(), os.urandom(32).hex(), os.urandom(32).hex()],
        "not-a-list": base.hex(),
        "empty": [],
    }[bases]
    key = f.write_index(f.packs)

    check = env.ops("backup", "check")
    assert_no_internal_error(check.stderr + check.stdout)
    assert check.code == 1
    assert key.removeprefix("index/")[:12] in check.stdout + check.stderr
    target = tmp_path / "genuine"
    code, err = restore(env, genuine, target)
    assert code == 0, err
    assert files_under(target / src.relative_to("/")) == FILES


def test_a_forged_copy_of_a_base_named_first_does_not_stop_its_deltas(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Bases are first read unchecked (the delta's own id check covers them); a writer that
    names a forged copy of a base before the genuine one makes that first try fail, and the
    reader then checks each base, from every location."""
    env = local_backup_env
    genuine_backup(env, tmp_path)
    f, base = forger_with_base(env)
    good = f.add_delta(EDITED, [base], ROWS)
    snapshot = one_file_snapshot(f, "good.tsv", good, len(EDITED))
    # The same base id, other bytes of the same length, in an index read before the others.
    f.add_raw_blob(Blob(base, "data", ROWS[::-1], len(ROWS)))
    forged = f.seal_pack()
    f.write_index([forged], before=min(env.object_keys("index/")))

    code, err = restore(env, snapshot, tmp_path / "good")
    assert code == 0, err
    assert files_under(tmp_path / "good") == {"good.tsv": EDITED}
    dumped = env.ops("backup", "dump", snapshot, "good.tsv", "--output", str(tmp_path / "d"))
    assert dumped.code == 0, dumped.stderr
    assert (tmp_path / "d").read_bytes() == EDITED


def test_prune_keeps_a_base_whole_when_a_forged_delta_copy_of_it_comes_first(
    local_backup_env: BackupEnv,
) -> None:
    """B is stored whole in one mostly-unused pack and, forged, as a delta in another named
    first; D, the snapshot's file, is a delta of B. Repacking both must keep B whole, or D
    no longer reads."""
    env = local_backup_env
    f = forger(env)
    c = f.add_blob(ROWS)
    pack_c = f.seal_pack()
    b = f.add_delta(EDITED, [c], ROWS)  # B as a delta (of C)
    f.add_blob(os.urandom(3 * 1024 * 1024))  # unused: the pack is repacked
    pack_1 = f.seal_pack()
    assert f.add_blob(EDITED) == b  # B whole
    f.add_blob(os.urandom(3 * 1024 * 1024))
    pack_2 = f.seal_pack()
    latest = EDITED.replace(b"001200\tXa", b"001200\tXA")
    d = f.add_delta(latest, [b], EDITED)
    node = f._node("d.tsv", "file", 0o644)
    node.update(size=len(latest), content=[d.hex()])
    root = f.tree([node])
    pack_3 = f.seal_pack()
    f.write_index([pack_c, pack_1, pack_2, pack_3])
    snapshot = forged_id(f.snapshot("webroot", datetime.now(UTC), root))
    env.retention = {"last": 1, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}
    env.write_config()

    pruned = env.ops("backup", "forget", "--prune")
    assert_no_internal_error(pruned.stdout + pruned.stderr)
    assert pruned.code == 0, pruned.stderr
    target = env.root / "after-prune"
    code, err = restore(env, snapshot, target)
    assert code == 0, err
    assert files_under(target) == {"d.tsv": latest}


def test_check_reads_each_base_pack_once_however_a_pack_orders_its_deltas(
    local_backup_env: BackupEnv,
) -> None:
    """A day-2 pack holds deltas in random order, their bases spread over many packs: a
    check reads each base pack about once more, not once per delta (a reader keeps only a
    few packs)."""
    env = local_backup_env
    f = forger(env)
    bases = []
    for _ in range(20):
        for _ in range(8):
            data = os.urandom(4096).hex().encode()
            bases.append((f.add_blob(data), data))
        f.seal_pack()
    for base, data in bases:
        f.add_delta(data[:100] + b"edited" + data[106:], [base], data)
    f.seal_pack(shuffle=True)
    f.write_index()
    fetched: list[str] = []
    get = LocalStorage.get

    def counting(self: LocalStorage, key: str, max_size: int | None = None) -> bytes:
        if key.startswith("packs/"):
            fetched.append(key)
        return get(self, key, max_size)

    env.env["PORTALOPS_PACK_WORKERS"] = "never"
    with patch.object(LocalStorage, "get", counting):
        check = env.ops("backup", "check", "--read-data", process=False)
    assert check.code == 0, check.stdout + check.stderr
    packs = len(set(fetched))
    assert packs == 21
    # Each pack once for itself, each base pack once more for the deltas (in header order,
    # 160 deltas over 20 base packs read some 170 packs).
    assert len(fetched) <= 2 * packs + 2, len(fetched)


def test_emergency_restore_reads_deltas_and_refuses_rows_with_repeated_bases(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """backup/emergency_restore.py (age, zstd, b3sum) restores a forged, well-formed delta;
    an index row naming one base 5,000 times (a 20 GB dictionary) is not used."""
    env = local_backup_env
    f, base = forger_with_base(env)
    good = f.add_delta(EDITED, [base], ROWS)
    key = f.commit("webroot", an_hour_ago(), [_file("good.tsv", good, len(EDITED))])
    bomb = f.add_delta(EDITED, [base], ROWS)
    record = f.seal_pack()
    record["blobs"][0][6] = [base.hex()] * 5000
    assert record["blobs"][0][0] == bomb.hex()
    f.write_index([record], before=min(env.object_keys("index/")))
    target = tmp_path / "emergency"
    done = emergency(env, key, target)
    assert done.returncode == 0, done.stderr
    assert "not used" in done.stderr
    assert files_under(target) == {"good.tsv": EDITED}


def _file(name: str, blob: bytes, size: int) -> dict[str, object]:
    node = Forger._node(name, "file", 0o644)
    node.update(size=size, content=[blob.hex()])
    return node
