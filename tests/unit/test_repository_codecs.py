"""Index, pack, snapshot and keys encodings: authentication, layout, damage detection and
the bounds that keep a hostile writer's objects from costing the admin host unbounded memory,
without storage."""

import json
import os
import resource
from datetime import UTC, datetime

import blake3
import pytest
import zstandard

from portalops.backup.repo.index import MAX_INDEX_JSON, IndexFormatError, PackRecord, decode, encode
from portalops.backup.repo.keys import parse_keys_object
from portalops.backup.repo.pack import (
    HEADER_ROW,
    MAX_DATA_BLOB,
    MAX_PACK_SIZE,
    MAX_TREE_BLOB,
    TARGET_SIZE,
    BlobEntry,
    BlobFormatError,
    BlobType,
    CompressedDataError,
    Compression,
    PackBuilder,
    PackFormatError,
    PendingBlob,
    compress,
    decompress,
    read_header,
    unzstd,
)
from portalops.backup.repo.repository import CHUNKER
from portalops.backup.repo.snapshot import Snapshot, SnapshotFormatError


def _record() -> PackRecord:
    builder = PackBuilder()
    for i in range(5):
        data = os.urandom(1000) if i % 2 else b"Xin chao " * 200
        stored, comp = compress(data, zstandard.ZstdCompressor())
        builder.add(PendingBlob(bytes([i]) * 32, BlobType.DATA, stored, len(data), comp))
    plaintext, entries = builder.build()
    assert read_header(plaintext) == entries
    return PackRecord("packs/ab/" + "ab" * 32, len(plaintext), tuple(entries))


def test_index_round_trip_and_mac() -> None:
    key = os.urandom(32)
    record = _record()
    data = encode([record], key)
    assert list(decode(data, key)) == [record]
    with pytest.raises(IndexFormatError, match="MAC"):
        list(decode(data, os.urandom(32)))
    tampered = bytearray(data)
    tampered[5] ^= 1
    with pytest.raises(IndexFormatError, match="MAC"):
        list(decode(bytes(tampered), key))


def test_pack_layout_and_compression_choice() -> None:
    text = "Cổng thông tin điện tử tỉnh Vĩnh Phúc\n".encode() * 5000
    stored, comp = compress(text, zstandard.ZstdCompressor())
    assert comp is Compression.ZSTD
    assert len(stored) < len(text) // 10
    noise = os.urandom(1 << 20)
    stored, comp = compress(noise, zstandard.ZstdCompressor())
    assert comp is Compression.NONE
    assert stored == noise
    builder = PackBuilder()
    builder.add(PendingBlob(b"\x01" * 32, BlobType.TREE, b"{}", 2, Compression.NONE))
    plaintext, [entry] = builder.build()
    assert decompress(plaintext[entry.offset : entry.offset + entry.length], entry) == b"{}"
    with pytest.raises(PackFormatError):
        read_header(plaintext[:-1])


# -- bounds on what a hostile writer can make the admin host allocate --------------------------


def _entry(kind: BlobType, stored: bytes, raw_length: int, comp: Compression) -> BlobEntry:
    return BlobEntry(b"\x02" * 32, kind, 0, len(stored), raw_length, comp)


def test_a_frame_declaring_more_than_its_row_is_refused_before_decompressing() -> None:
    """python-zstandard ignores max_output_size for a frame that declares its size: this one
    declares 200 MiB in 6 KiB. It must be refused by its declaration, allocating nothing."""
    bomb = zstandard.ZstdCompressor().compress(bytes(200 * 1024 * 1024))
    assert zstandard.frame_content_size(bomb) == 200 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BlobFormatError, match="declares 209715200 bytes, the row says 1024"):
        decompress(bomb, _entry(BlobType.DATA, bomb, 1024, Compression.ZSTD))
    with pytest.raises(CompressedDataError, match="more than the 1048576 allowed"):
        unzstd(bomb, 1 << 20)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024


def test_a_frame_without_a_size_is_read_no_further_than_its_row() -> None:
    quiet = zstandard.ZstdCompressor(write_content_size=False)
    frame = quiet.compress(bytes(10 * 1024 * 1024))
    assert zstandard.frame_content_size(frame) == -1
    with pytest.raises(BlobFormatError, match="more than the 1024 bytes allowed"):
        decompress(frame, _entry(BlobType.DATA, frame, 1024, Compression.ZSTD))
    small = quiet.compress(b"Xin chao " * 100)
    assert decompress(small, _entry(BlobType.DATA, small, 900, Compression.ZSTD)) == (
        b"Xin chao " * 100
    )
    with pytest.raises(BlobFormatError, match="holds 900 bytes, the row says 901"):
        decompress(small, _entry(BlobType.DATA, small, 901, Compression.ZSTD))


def test_blob_lengths_are_bounded_by_kind() -> None:
    """Data blobs are chunks (the chunker's maximum), trees a stated cap; raw_length is
    checked before anything is allocated, and an uncompressed blob is exactly its length."""
    assert CHUNKER["max"] == MAX_DATA_BLOB
    huge = _entry(BlobType.DATA, b"x", 4 << 30, Compression.NONE)
    with pytest.raises(BlobFormatError, match="claims 4294967296 bytes, more than a data blob"):
        decompress(b"x", huge)
    tree = _entry(BlobType.TREE, b"x", MAX_TREE_BLOB + 1, Compression.ZSTD)
    with pytest.raises(BlobFormatError, match="more than a tree blob may hold"):
        decompress(b"x", tree)
    with pytest.raises(BlobFormatError, match="stored uncompressed in 3 bytes, but claims 4"):
        decompress(b"abc", _entry(BlobType.DATA, b"abc", 4, Compression.NONE))
    with pytest.raises(BlobFormatError, match="beyond the pack's plaintext"):
        decompress(b"ab", _entry(BlobType.DATA, b"abc", 3, Compression.NONE))
    with pytest.raises(BlobFormatError, match="not a zstd frame"):
        decompress(b"abcdef", _entry(BlobType.DATA, b"abcdef", 6, Compression.ZSTD))


def test_builder_counts_header_rows_so_packs_stay_under_the_cap() -> None:
    """Thousands of tiny blobs: the header counts toward the target too, and the sealed pack
    (plaintext plus age overhead) is below MAX_PACK_SIZE."""
    builder = PackBuilder()
    i = 0
    while not builder.full():
        builder.add(PendingBlob(i.to_bytes(32, "big"), BlobType.DATA, b"x", 1, Compression.NONE))
        i += 1
    plaintext, entries = builder.build()
    assert len(entries) == -(-TARGET_SIZE // (1 + HEADER_ROW))
    assert len(plaintext) <= TARGET_SIZE
    # HEADER_ROW bounds a row of the largest numbers a pack below the cap can hold.
    widest = BlobEntry(b"\xff" * 32, BlobType.DATA, MAX_PACK_SIZE, MAX_TREE_BLOB, MAX_TREE_BLOB,
                       Compression.NONE)  # fmt: skip
    assert len(json.dumps(widest.to_row(), separators=(",", ":"))) + 1 <= HEADER_ROW


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("not a row", "6 fields"),
        (["ab" * 32, "data", 0, 1, 1], "6 fields"),
        (["AB" * 32, "data", 0, 1, 1, "none"], "not 64 hex digits"),
        (["ab" * 31 + " a", "data", 0, 1, 1, "none"], "not 64 hex digits"),
        (["ab" * 32, "blob", 0, 1, 1, "none"], "not data or tree"),
        (["ab" * 32, "data", 0, 1, 1, "lz4"], "not none or zstd"),
        (["ab" * 32, "data", -1, 1, 1, "none"], "offset -1 is not a size"),
        (["ab" * 32, "data", 0, "1", 1, "none"], "length '1' is not a size"),
        (["ab" * 32, "data", 0, 1, True, "none"], "raw_length True is not a size"),
        (["ab" * 32, "data", 0, 1, 1.5, "none"], "raw_length 1.5 is not a size"),
    ],
)
def test_malformed_rows_are_refused(row: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        BlobEntry.from_row(row)


def _index(doc: object, key: bytes) -> bytes:
    body = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
    return body + blake3.blake3(body, key=key).digest()


def test_an_authentic_index_can_still_be_malformed() -> None:
    """Writers hold the MAC key: an index that passes its MAC is still checked field by
    field, and its JSON is bounded before it is decompressed."""
    key = os.urandom(32)
    good = {"key": "packs/ab/ab" + "0" * 62, "size": 10, "blobs": []}
    cases: dict[str, object] = {
        "not a version 1 index": {"version": 2, "packs": []},
        "'packs' is not a list": {"version": 1, "packs": {}},
        "is not packs/<xx>/<sha256>": {"version": 1, "packs": [{**good, "key": "../../etc"}]},
        "size -3 is not a size": {"version": 1, "packs": [{**good, "size": -3}]},
        "'blobs' is not a list": {"version": 1, "packs": [{**good, "blobs": "x"}]},
        "6 fields": {"version": 1, "packs": [{**good, "blobs": [[1]]}]},
        "unreadable: 'size'": {"version": 1, "packs": [{"key": good["key"], "blobs": []}]},
    }
    for reason, doc in cases.items():
        with pytest.raises(IndexFormatError, match=reason):
            list(decode(_index(doc, key), key))
    [record] = decode(_index({"version": 1, "packs": [good]}, key), key)
    assert record.size == 10
    # A frame declaring more JSON than any index may hold: refused by its header alone.
    bomb = zstandard.ZstdCompressor().compress(bytes(MAX_INDEX_JSON + 1))
    data = bomb + blake3.blake3(bomb, key=key).digest()
    with pytest.raises(IndexFormatError, match=f"declares {MAX_INDEX_JSON + 1} bytes"):
        list(decode(data, key))


# -- snapshot bodies ----------------------------------------------------------------------------


_BODY: dict[str, object] = {
    "version": 1,
    "source": "www",
    "category": "code",
    "host": "web1",
    "time": "2026-11-28T21:56:01.123456Z",
    "tree": "ab" * 32,
    "paths": ["/srv/www"],
    "tool": "portal-ops 0.1.0",
    "summary": {"files": 3, "bytes": 10},
    "stats": {},
}


def test_snapshot_bodies_round_trip() -> None:
    snapshot = Snapshot.decode(json.dumps(_BODY).encode())
    assert snapshot.time == datetime(2026, 11, 28, 21, 56, 1, 123456, tzinfo=UTC)
    assert snapshot.run is None  # written before runs had ids
    assert Snapshot.decode(snapshot.encode()) == snapshot
    with_run = Snapshot.decode(json.dumps({**_BODY, "run": "0f" * 16}).encode())
    assert with_run.run == "0f" * 16
    assert Snapshot.decode(with_run.encode()) == with_run


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"time": "2026-11-28 21:56:01"}, "time '2026-11-28 21:56:01' is not YYYY-MM-DD"),
        ({"time": "2026-13-28T21:56:01.123456Z"}, "is not a real date"),
        ({"time": 1764366961}, "time is 1764366961, not text"),
        ({"tree": "xyz"}, "tree 'xyz' is not a blob id"),
        ({"tree": "ab" * 31}, "is not a blob id"),
        ({"paths": "/srv/www"}, "paths is '/srv/www', not a list"),
        ({"paths": [1]}, "paths holds something other than text"),
        ({"summary": {"files": "many"}}, "summary 'files' is 'many', not a count"),
        ({"summary": []}, "summary is \\[\\], not an object"),
        ({"stats": None}, "stats is None, not an object"),
        ({"source": None}, "source is None, not text"),
        ({"host": 7}, "host is 7, not text"),
        ({"version": 2}, "version 2, this tool reads 1"),
        ({"run": "0F" * 16}, "run '0F0F.*' is not a run id"),
        ({"run": "ab" * 17}, "is not a run id"),
        ({"run": 7}, "run 7 is not a run id"),
    ],
)
def test_malformed_snapshot_fields_are_named(change: dict[str, object], reason: str) -> None:
    with pytest.raises(SnapshotFormatError, match=reason):
        Snapshot.decode(json.dumps({**_BODY, **change}).encode())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in _BODY.items() if k != "tree"}).encode(), "no 'tree'"),
        (json.dumps({k: v for k, v in _BODY.items() if k != "tool"}).encode(), "no 'tool'"),
    ],
)
def test_unreadable_snapshot_bodies_are_one_error(data: bytes, reason: str) -> None:
    with pytest.raises(SnapshotFormatError, match=reason):
        Snapshot.decode(data)


# -- the keys object ----------------------------------------------------------------------------


def test_keys_objects_are_parsed_strictly() -> None:
    key = {"id_key": "ab" * 32, "chunker_seed": 12345}
    writer = parse_keys_object(json.dumps(key).encode(), ("age1x",))
    assert writer.id_key == b"\xab" * 32
    assert writer.chunker_seed == 12345
    for bad, reason in [
        ({**key, "id_key": "ab"}, "id_key is not 32 bytes"),
        ({**key, "chunker_seed": "1"}, "chunker_seed is not a 63-bit number"),
        ({**key, "chunker_seed": 1 << 63}, "chunker_seed is not a 63-bit number"),
        ([1], "not a JSON object"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_keys_object(json.dumps(bad).encode(), ())
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        parse_keys_object(b"\xff", ())
