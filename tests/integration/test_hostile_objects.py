"""A compromised backup host against the admin host's memory and error handling.

Every forged object comes from ``tests/hostile/forge.py`` (FORMAT.md and the writer key only,
as an attacker with root on a portal server) or is written straight into the repository as
such an attacker could. The admin's real commands then run in a subprocess whose peak memory
(VmHWM, read by the process itself as it exits) must stay bounded: decompression bombs, a blob
claiming 4 GiB, 200 MiB under packs/ and 513 MiB under index/, malformed age headers, bogus
keys/ objects and malformed snapshots each end in a clear message naming the object (never a
traceback or an "internal error"), and the genuine snapshot still restores byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard

from tests.fixtures.backup_env import BackupEnv, s3_backup_env
from tests.fixtures.paths import OPS_PY
from tests.hostile.forge import Blob, Forger
from tests.hostile.genuine import FILES, assert_no_internal_error, files_under, genuine_backup

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BOMB = 200 * MiB
# What `ops` may use at its peak on these small repositories: above what it was measured to
# use (83 MiB on a local repository, 110 MiB with boto3 loaded for S3), and below that plus
# any hostile object here (200 MiB; 81 MiB + 1 on S3), so reading one of them whole fails.
PEAK_LIMIT_KIB = 160 * 1024


# Runs ops.py in this interpreter and, as it exits, writes its peak resident memory in KiB to
# $OPS_PEAK_FILE: its own VmHWM (the kernel's high-water mark, which restarts at exec) and the
# largest of its descendants, once the multiprocessing forkserver is stopped and reaped (it
# reaps the pack workers that restore and 'check --read-data' start, so their peaks count).
_PEAK_RUNNER = """
import atexit, os, resource, runpy, sys
def report():
    forkserver = sys.modules.get("multiprocessing.forkserver")
    try:  # it reaps the server; removing its socket then fails (the temp dir went first)
        if forkserver is not None:
            forkserver._forkserver._stop()
    except OSError:
        pass
    status = open("/proc/self/status").read().splitlines()
    own = int([line.split()[1] for line in status if line.startswith("VmHWM")][0])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(os.environ["OPS_PEAK_FILE"], "w") as out:
        out.write(f"{own} {children}")
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def ops(env: BackupEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """``ops --config ... ARGS`` as ``env.ops`` runs it, asserting its peak memory stayed
    under PEAK_LIMIT_KIB and that it ended in a message, not a traceback."""
    peak_file = env.root / "peak.kib"
    peak_file.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RUNNER, str(OPS_PY),
         "--config", str(env.config), *args],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, **env.env, "OPS_PEAK_FILE": str(peak_file)},
    )  # fmt: skip
    own, children = map(int, peak_file.read_text().split())
    shown = f"ops {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert max(own, children) < PEAK_LIMIT_KIB, f"peak {own}, {children} KiB\n{shown}"
    print(f"peak {own} KiB, descendants {children} KiB: ops {' '.join(args)}")  # pytest -rP
    assert_no_internal_error(shown)
    return result


def assert_genuine_restores(env: BackupEnv, tmp_path: Path, snapshot: str) -> None:
    """The genuine snapshot restores byte for byte, by id and as 'latest'."""
    for name, which in (("by-id", [snapshot]), ("latest", ["latest", "--source", "webroot"])):
        target = tmp_path / f"genuine-{name}-{os.urandom(4).hex()}"
        result = ops(env, "backup", "restore", *which, "--target", str(target))
        assert result.returncode == 0, result.stderr
        [root] = [p for p in target.rglob("www") if p.is_dir()]
        restored = files_under(root)
        assert restored == FILES


def forged_restore_fails(
    env: BackupEnv, tmp_path: Path, snapshot_key: str, *reasons: str
) -> subprocess.CompletedProcess[str]:
    """Restoring a forged snapshot fails with a message naming each reason; nothing is
    written outside its target."""
    target = tmp_path / f"forged-{os.urandom(4).hex()}"
    skip = (target, env.root / "repo", env.state_dir)
    outside = _tree(tmp_path, skip)
    snapshot_id = snapshot_key.rsplit("-", 1)[1]
    result = ops(env, "backup", "restore", snapshot_id, "--target", str(target))
    assert result.returncode != 0, result.stdout
    for reason in reasons:
        assert reason in result.stderr, result.stderr
    assert _tree(tmp_path, skip) == outside
    return result


def _tree(root: Path, skip: tuple[Path, ...] = ()) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not any(p == s or s in p.parents for s in skip) and p.name != "peak.kib"
    }


def check_problems(env: BackupEnv, *args: str) -> dict[str, str]:
    """``ops --json backup check ARGS``: exit 1 and {object: problem}."""
    result = ops(env, "--json", "backup", "check", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    [repo] = json.loads(result.stdout)["repositories"]
    return {p["object"]: p["problem"] for p in repo["problems"]}


def snapshot_of(attacker: Forger, when: datetime, content: list[bytes]) -> str:
    """A forged snapshot of source webroot holding srv/www/index.html made of ``content``
    (blob ids); its tree goes to a pack and index of its own. Returns its key."""
    page = attacker.file_node("index.html", b"")
    page.update(size=1024, content=[blob.hex() for blob in content])
    www = attacker.dir_node("www", [page])
    return attacker.commit("webroot", when, [attacker.dir_node("srv", [www])])


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def zstd_frame(size: int, *, declare: bool) -> bytes:
    """``size`` zero bytes as one zstd frame, made in 1 MiB steps (never ``size`` in memory),
    its header declaring the size or not."""
    compressor = zstandard.ZstdCompressor(write_content_size=declare)
    stream = compressor.compressobj(size=size if declare else -1)
    parts = [stream.compress(bytes(MiB)) for _ in range(size // MiB)]
    return b"".join([*parts, stream.flush()])


# -- decompression -------------------------------------------------------------------------------


def test_decompression_bombs_are_refused_before_allocating(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A zstd frame declaring 200 MiB (6 KiB stored) with raw_length 1 KiB; a frame declaring
    nothing with raw_length 4 GiB; and a tree blob that is a 200 MiB frame. python-zstandard
    would decompress the first in full despite a 1 KiB cap."""
    env = local_backup_env
    genuine, _ = genuine_backup(env, tmp_path)
    attacker = Forger(env.writer_key, env.write_object)
    bomb = zstd_frame(BOMB, declare=True)
    assert zstandard.frame_content_size(bomb) == BOMB
    declared = attacker.add_raw_blob(
        Blob(attacker.blob_id(bytes(1024)), "data", bomb, 1024, "zstd")
    )
    frame = zstd_frame(8 * MiB, declare=False)
    huge = attacker.add_raw_blob(Blob(attacker.blob_id(b"4 GiB"), "data", frame, 4 << 30, "zstd"))
    attacker.seal_pack()
    attacker.write_index()
    data_pack = attacker.packs[-1]["key"]
    first = snapshot_of(attacker, an_hour_ago(), [declared])
    second = snapshot_of(attacker, an_hour_ago(), [huge])
    tree_bomb = attacker.add_raw_blob(Blob(attacker.blob_id(b"{}"), "tree", bomb, 1024, "zstd"))
    node = attacker.dir_node("www", [])
    node["subtree"] = tree_bomb.hex()
    third = attacker.commit("webroot", an_hour_ago(), [attacker.dir_node("srv", [node])])
    tree_pack = attacker.packs[-1]["key"]

    forged_restore_fails(env, tmp_path, first, data_pack, "declares 209715200 bytes")
    forged_restore_fails(env, tmp_path, second, data_pack, "claims 4294967296 bytes")
    forged_restore_fails(env, tmp_path, third, tree_pack, "declares 209715200 bytes")
    problems = check_problems(env, "--read-data")
    assert "declares 209715200 bytes, the row says 1024" in problems[data_pack]
    assert "claims 4294967296 bytes, more than a data blob may hold" in problems[data_pack]
    assert "declares 209715200 bytes" in problems[tree_pack]
    problems = check_problems(env)  # structure: the tree walk meets the tree bomb
    assert "declares 209715200 bytes" in problems[tree_pack]
    assert_genuine_restores(env, tmp_path, genuine)


# -- oversized packs -----------------------------------------------------------------------------


def oversized_pack(env: BackupEnv, tmp_path: Path, size: int) -> str:
    """``size`` zero bytes under packs/, named by their SHA-256 like any pack: a sparse
    file for a local repository, a streamed upload for S3 (never in memory here)."""
    sparse = tmp_path / "oversized.bin"
    with sparse.open("wb") as handle:
        handle.truncate(size)
    digest = hashlib.sha256()
    with sparse.open("rb") as handle:
        for chunk in iter(lambda: handle.read(8 * MiB), b""):
            digest.update(chunk)
    key = f"packs/{digest.hexdigest()[:2]}/{digest.hexdigest()}"
    if env.s3 is None:
        path = Path(env.repo_url) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        sparse.rename(path)
    else:
        bucket, root = env._bucket_prefix()
        env.s3.upload_file(str(sparse), bucket, root + key)
        sparse.unlink()
    return key


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_an_oversized_pack_is_refused_without_reading_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A 200 MiB object under packs/ (on S3, just past the cap: 81 MiB + 1), named in an
    authentic forged index as holding a blob a forged snapshot uses. A genuine pack is at
    most 81 MiB (backup/repo/pack.py MAX_PACK_SIZE): restore and check refuse it by the size the
    storage gives, before a byte of it is read."""
    if backend == "s3":
        env = s3_backup_env(request.getfixturevalue("s3_server"), tmp_path)
    else:
        env = request.getfixturevalue("local_backup_env")
    genuine, _ = genuine_backup(env, tmp_path)
    attacker = Forger(env.writer_key, env.write_object)
    size = BOMB if env.s3 is None else 81 * MiB + 1
    key = oversized_pack(env, tmp_path, size)
    blob = attacker.blob_id(b"inside the oversized pack")
    attacker.write_index(
        [{"key": key, "size": size, "blobs": [[blob.hex(), "data", 0, 25, 25, "none"]]}]
    )
    forged = snapshot_of(attacker, an_hour_ago(), [blob])

    forged_restore_fails(env, tmp_path, forged, key, f"{size} bytes, more than a pack")
    assert f"pack is {size} bytes, more than any pack can be" in check_problems(env)[key]
    assert key in check_problems(env, "--read-data")
    assert_genuine_restores(env, tmp_path, genuine)


def test_an_oversized_index_object_is_set_aside_unread(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A 513 MiB (sparse) object under index/: larger than the 512 MiB of JSON an index object
    may hold (backup/repo/index.py MAX_INDEX_JSON), so it is refused by its size, never read or
    decompressed. check names it; restores go on with the genuine index; prune will not act."""
    env = local_backup_env
    genuine, _ = genuine_backup(env, tmp_path)
    size = 513 * MiB
    key = "index/" + "0" * 64
    with (Path(env.repo_url) / key).open("wb") as handle:
        handle.truncate(size)
    problems = check_problems(env)
    assert f"{size} bytes, more than an index object written by this tool can be" in problems[key]
    assert_genuine_restores(env, tmp_path, genuine)
    pruned = ops(env, "backup", "forget", "--prune")
    assert pruned.returncode != 0
    assert key in pruned.stderr + pruned.stdout
    assert_genuine_restores(env, tmp_path, genuine)


# -- malformed age headers -----------------------------------------------------------------------


def _bad_mac_base64(stored: bytes) -> bytes:
    at = stored.index(b"\n--- ") + len(b"\n--- ")
    return stored[:at] + b"!" + stored[at + 1 :]


def _long_file_key(stored: bytes) -> bytes:
    """The X25519 stanza's body one character longer (44 base64 characters): a wrapped file
    key of 17 bytes where age has 16, authenticated by a 16-byte tag."""
    lines = stored.split(b"\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"-> X25519 ")) + 1
    assert len(lines[at]) == 43
    lines[at] += b"A"
    return b"\n".join(lines)


def test_malformed_age_headers_are_named_findings(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Packs whose age header has invalid base64 in its MAC line, or wraps a file key of the
    wrong length: 'check --read-data' names each pack (exit 1), restore names it, and the
    genuine snapshot is untouched."""
    env = local_backup_env
    genuine, _ = genuine_backup(env, tmp_path)
    attacker = Forger(env.writer_key, env.write_object)
    packs: dict[str, str] = {}
    forged: dict[str, str] = {}
    for damage, reason in (
        (_bad_mac_base64, "invalid base64 in the header MAC line"),
        (_long_file_key, "wraps a 16-byte file key in 32 bytes, not 33"),
    ):
        blob = attacker.add_blob(f"damaged by {damage.__name__}".encode())
        record = attacker.seal_pack(transform=damage)
        attacker.write_index([record])
        packs[record["key"]] = reason
        forged[record["key"]] = snapshot_of(attacker, an_hour_ago(), [blob])

    problems = check_problems(env, "--read-data")
    for key, reason in packs.items():
        assert reason in problems[key], problems
        forged_restore_fails(env, tmp_path, forged[key], key, reason)
    assert_genuine_restores(env, tmp_path, genuine)


# -- bogus keys/ objects -------------------------------------------------------------------------


def identity_only(env: BackupEnv) -> None:
    """The admin host's config: the identity, no writer key (it recovers the id-key from
    keys/)."""
    doc = yaml.safe_load(env.config.read_text())
    del doc["backup"]["writer_key"]
    env.config.write_text(yaml.safe_dump(doc, allow_unicode=True))


def bogus_keys(env: BackupEnv, attacker: Forger) -> dict[str, str]:
    """Objects under keys/ named to sort first (and, locally, dated before the genuine one,
    so they are read first): {key: what check says of it}."""
    real = json.loads(env.writer_key.read_text())
    objects = {
        "keys/" + "0" * 64: (b"not an age file at all", "not an age file"),
        "keys/" + "0" * 63 + "1": (
            attacker.encrypt(json.dumps({"id_key": "ab" * 32, "chunker_seed": 7}).encode()),
            "holds another id-key",
        ),
        "keys/" + "0" * 63 + "2": (attacker.encrypt(b"\xff\xfe"), "not a keys object"),
        "keys/" + "0" * 63 + "3": (bytes(1 << 20), "larger than a keys object"),
        "keys/" + "0" * 63 + "4": (
            attacker.encrypt(json.dumps({"id_key": real["id_key"], "chunker_seed": 9}).encode()),
            "another chunker seed",
        ),
    }
    for key, (data, _) in objects.items():
        env.write_object(key, data)
        if env.s3 is None:
            os.utime(Path(env.repo_url) / key, (0, 0))
    return {key: reason for key, (_, reason) in objects.items()}


def test_bogus_keys_objects_do_not_lock_out_the_identity(
    backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Identity-only admin commands pick the keys object whose id-key has the config's
    fingerprint, skipping (and check naming) the rest; on S3 the genuine one is also the
    oldest by the storage's own time."""
    env = backup_env
    genuine, _ = genuine_backup(env, tmp_path)
    attacker = Forger(env.writer_key, env.write_object)
    expected = bogus_keys(env, attacker)
    identity_only(env)

    listed = ops(env, "--json", "backup", "list")
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [genuine]
    problems = check_problems(env)
    seed_key = "keys/" + "0" * 63 + "4"
    for key, reason in expected.items():
        if key != seed_key:
            assert reason in problems[key], problems
    # Two objects hold the id-key with different seeds: check cannot tell which one is forged
    # (locally the forged one is even the older), so it names the pair.
    [(one, what)] = [(k, w) for k, w in problems.items() if "another chunker seed" in w]
    assert seed_key in one + what
    assert_genuine_restores(env, tmp_path, genuine)


def test_a_flood_of_keys_objects_is_read_only_so_far(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Local directories let a writer date its objects back (the documented limit of a
    repository written by the backup's own user): 300 garbage objects older than the genuine
    one. The identity-only admin reads at most 256 of the 301, then says so (exit 3); with the
    writer key configured nothing reads keys/ at all."""
    env = local_backup_env
    genuine, _ = genuine_backup(env, tmp_path)
    for i in range(300):
        key = f"keys/{i:064x}"
        env.write_object(key, b"garbage")
        os.utime(Path(env.repo_url) / key, (0, 0))
    identity_only(env)
    result = ops(env, "backup", "list")
    assert result.returncode == 3
    assert "no object under keys/ holds this repository's key" in result.stderr
    assert "301 objects, of which only the oldest 256 were read" in result.stderr
    env.write_config()  # the writer key again
    assert_genuine_restores(env, tmp_path, genuine)


# -- malformed snapshots -------------------------------------------------------------------------


def malformed_snapshots(attacker: Forger, tree: bytes, before: datetime) -> dict[str, str]:
    """Snapshots of webroot, stated before the genuine one, each wrong in one way:
    {key: what must be said of it}."""
    fields: list[tuple[dict[str, Any], str]] = [
        ({"time": "06/12/2026 14:00"}, "time '06/12/2026 14:00' is not YYYY-MM-DD"),
        ({"tree": "not hex"}, "tree 'not hex' is not a blob id"),
        ({"paths": "/srv/www"}, "paths is '/srv/www', not a list"),
        ({"summary": {"files": "many"}}, "summary 'files' is 'many', not a count"),
        ({"host": None}, "host is None, not text"),
        ({"source": "other"}, "its body says source 'other'"),
    ]
    out: dict[str, str] = {}
    for i, (change, reason) in enumerate(fields):
        when = before - timedelta(minutes=i + 1)
        out[attacker.snapshot("webroot", when, tree, body=change)] = reason
    raw = [
        (b"\xff\xfe not UTF-8", "not UTF-8"),
        (b"{not json", "not JSON"),
        (json.dumps({"source": "webroot"}).encode(), "no 'time'"),
    ]
    for i, (body_bytes, reason) in enumerate(raw):
        when = before - timedelta(hours=i + 1)
        out[attacker.snapshot_bytes("webroot", when, body_bytes)] = reason
    return out


def test_malformed_snapshots_are_named_and_the_rest_listed_checked_restored(
    backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = backup_env
    genuine, _ = genuine_backup(env, tmp_path)
    [genuine_ref] = [k for k in env.object_keys("snapshots/") if k.endswith(genuine)]
    stated = datetime.strptime(genuine_ref.split("/")[2][:23], "%Y%m%dT%H%M%S.%fZ")
    attacker = Forger(env.writer_key, env.write_object)
    tree = attacker.tree([])
    attacker.seal_pack()
    attacker.write_index()
    bad = malformed_snapshots(attacker, tree, stated.replace(tzinfo=UTC))

    listed = ops(env, "--json", "backup", "list")
    assert listed.returncode == 1
    docs = {d["id"]: d for d in json.loads(listed.stdout)}
    assert len(docs) == len(bad) + 1
    assert docs[genuine]["unreadable"] is None
    assert docs[genuine]["files"] == len(FILES)
    human = ops(env, "backup", "list")
    assert human.returncode == 1
    for key, reason in bad.items():
        doc = docs[key.rsplit("-", 1)[1]]
        assert key in doc["unreadable"], doc
        assert reason in doc["unreadable"], doc
        assert f"UNREADABLE main: {key}: " in human.stdout
    problems = check_problems(env)
    for key, reason in bad.items():
        assert reason in problems[key], problems
    assert_genuine_restores(env, tmp_path, genuine)
    some_key, some_reason = next(iter(bad.items()))
    forged_restore_fails(env, tmp_path, some_key, some_key, some_reason)

    pruned = ops(env, "backup", "forget", "--prune")
    assert pruned.returncode in (0, 1, 3), pruned.stderr
    after = json.loads(ops(env, "--json", "backup", "list").stdout)
    assert genuine in {d["id"] for d in after if d["unreadable"] is None}
    assert_genuine_restores(env, tmp_path, genuine)


@pytest.mark.parametrize(
    "sizes",
    [
        {"min": "٢٦٢١٤٤", "avg": "4_194_304", "max": "+16777216"},  # int(str(...)) takes each
        {"min": 262144, "avg": 1048576, "max": True},
        {"min": 4194304, "avg": 1048576, "max": 262144},
        {"min": 262144, "avg": 1048576, "max": 2**40},
    ],
    ids=["text", "bool", "inverted", "huge"],
)
def test_odd_chunker_parameters_in_the_config_are_refused(
    local_backup_env: BackupEnv, tmp_path: Path, sizes: dict[str, object]
) -> None:
    """The config object is not authenticated and names the sizes writers cut by and readers
    bound blobs by. Text sizes once made every backup report ok and no restore work."""
    env = local_backup_env
    config = json.loads(env.read_object("config"))
    config["chunker"].update(sizes)
    env.write_object("config", json.dumps(config, ensure_ascii=False).encode())
    src = tmp_path / "www"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(300_000))
    env.add_source("webroot", src)
    done = env.ops("backup", "run")
    assert done.code != 0, done.stdout
    assert "chunker" in done.stdout + done.stderr
    assert_no_internal_error(done.stdout + done.stderr)
