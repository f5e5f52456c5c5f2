"""BlobWriter's compression pipeline: small blobs go to the pool in batches, large ones alone;
every blob added is indexed and reads back intact after ``finish``, in either mix."""

from __future__ import annotations

import os
from pathlib import Path

from portalops.backup.repo import writer as writer_mod
from portalops.backup.repo.keys import keygen, load_identity, load_writer_key
from portalops.backup.repo.pack import BlobType, Compression
from portalops.backup.repo.repository import Repository
from portalops.backup.repo.storage import LocalStorage


def test_small_and_large_blobs_all_land_indexed_and_intact(tmp_path: Path) -> None:
    keygen(tmp_path / "id.txt", tmp_path / "writer.key")
    storage = LocalStorage("t", tmp_path / "repo")
    repo, _ = Repository.init(storage, load_writer_key(tmp_path / "writer.key"))
    writer = writer_mod.BlobWriter(repo)
    # More small blobs than one batch holds, some compressible, one large incompressible one,
    # and a duplicate that must not be stored twice.
    blobs = [f"line {i}\n".encode() * (i + 1) for i in range(writer_mod.BATCH_BLOBS + 7)]
    blobs += [os.urandom(writer_mod.OFFLOAD_MIN * 2), blobs[0]]
    ids = [writer.add(BlobType.DATA, data) for data in blobs]
    writer.finish()
    assert writer.blobs_added == len(blobs) - 1
    reader = Repository.open(storage, None, load_identity(tmp_path / "id.txt"))
    reader.load_index()
    entries = {}
    for data, blob_id in zip(blobs, ids, strict=True):
        assert reader.read_blob(blob_id) == data
        entries[blob_id] = next(iter(reader.index.locations(blob_id))).entry
    assert entries[ids[-2]].compression is Compression.NONE  # random bytes stay raw
    assert entries[ids[-3]].compression is Compression.ZSTD


def test_a_later_writer_of_the_same_run_knows_what_an_earlier_one_stored(tmp_path: Path) -> None:
    """One run backs up its sources one writer after another on one repository object: a
    blob the first stored (indexed by id only in memory) is not stored again by the next,
    and the next command, reading the index objects, finds every one of them."""
    keygen(tmp_path / "id.txt", tmp_path / "writer.key")
    storage = LocalStorage("t", tmp_path / "repo")
    repo, _ = Repository.init(storage, load_writer_key(tmp_path / "writer.key"))
    shared = [os.urandom(100_000) for _ in range(3)]
    first = writer_mod.BlobWriter(repo)
    ids = [first.add(BlobType.DATA, data) for data in shared]
    first.finish()
    second = writer_mod.BlobWriter(repo)
    assert [second.add(BlobType.DATA, data) for data in shared] == ids
    own = second.add(BlobType.DATA, b"only the second source has this")
    second.finish()
    assert (first.blobs_added, second.blobs_added) == (3, 1)
    reader = Repository.open(storage, None, load_identity(tmp_path / "id.txt"))
    reader.load_index()
    for blob_id, data in zip(
        [*ids, own], [*shared, b"only the second source has this"], strict=True
    ):
        assert reader.read_blob(blob_id) == data


def test_a_view_is_stored_as_it_was_when_added_whatever_its_buffer_does_next(
    tmp_path: Path,
) -> None:
    """Views into a file read whole (bytes) are kept as they are until their pack is sealed;
    a view into a buffer that can change (the stream chunker refills one bytearray) is
    copied when added: overwriting the buffer afterwards must not change what is stored."""
    keygen(tmp_path / "id.txt", tmp_path / "writer.key")
    storage = LocalStorage("t", tmp_path / "repo")
    repo, _ = Repository.init(storage, load_writer_key(tmp_path / "writer.key"))
    writer = writer_mod.BlobWriter(repo)
    whole = os.urandom(3 * writer_mod.OFFLOAD_MIN)  # incompressible: stored as the view itself
    refilled = bytearray(os.urandom(2 * writer_mod.OFFLOAD_MIN))
    small = bytearray(b"a small blob " * 100)  # batched, and compressible
    expected = [bytes(whole[: writer_mod.OFFLOAD_MIN]), bytes(refilled), bytes(small)]
    ids = [
        writer.add(BlobType.DATA, memoryview(whole)[: writer_mod.OFFLOAD_MIN]),
        writer.add(BlobType.DATA, memoryview(refilled)),
        writer.add(BlobType.DATA, memoryview(small)),
    ]
    refilled[:] = bytes(len(refilled))
    small[:] = bytes(len(small))
    writer.finish()
    reader = Repository.open(storage, None, load_identity(tmp_path / "id.txt"))
    reader.load_index()
    assert [reader.read_blob(blob_id) for blob_id in ids] == expected
