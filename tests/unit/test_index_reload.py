"""A backup re-reads the index for every source (under that source's lock): an index object
read before is not fetched again, and what a prune removed in between is gone from the
rebuilt index, exactly as if it had been read from scratch."""

from __future__ import annotations

import os
from pathlib import Path

from portalops.backup.repo import index as index_codec
from portalops.backup.repo import writer as writer_mod
from portalops.backup.repo.keys import keygen, load_writer_key
from portalops.backup.repo.pack import BlobType
from portalops.backup.repo.repository import INDEX_READS, Repository
from portalops.backup.repo.storage import LocalStorage


class CountingStorage(LocalStorage):
    """A real local storage that counts the objects fetched."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(name, root)
        self.fetched: list[str] = []

    def get(self, key: str, max_size: int | None = None) -> bytes:
        if key.startswith("index/"):
            self.fetched.append(key)
        return super().get(key, max_size)


def _store(repo: Repository, *blobs: bytes) -> list[bytes]:
    writer = writer_mod.BlobWriter(repo)
    ids = [writer.add(BlobType.DATA, data) for data in blobs]
    writer.finish()  # one index object per finished writer
    return ids


def _as_read_afresh(repo: Repository, tmp_path: Path) -> tuple[set[bytes], set[str], list[str]]:
    fresh = Repository.open(LocalStorage("t", tmp_path / "repo"), repo.writer, None)
    fresh.load_index()
    return set(fresh.index.blobs), set(fresh.index.packs), fresh.index.objects


def _seen(repo: Repository) -> tuple[set[bytes], set[str], list[str]]:
    return set(repo.index.blobs), set(repo.index.packs), repo.index.objects


def test_reloading_fetches_only_new_index_objects_and_drops_removed_ones(tmp_path: Path) -> None:
    keygen(tmp_path / "id.txt", tmp_path / "writer.key")
    writer_key = load_writer_key(tmp_path / "writer.key")
    Repository.init(LocalStorage("t", tmp_path / "repo"), writer_key)
    storage = CountingStorage("t", tmp_path / "repo")
    repo = Repository.open(storage, writer_key, None)
    first = _store(repo, os.urandom(50_000))
    repo.load_index()
    assert first[0] in repo.index
    assert len(storage.fetched) == 1

    second = _store(repo, os.urandom(50_000))
    storage.fetched.clear()
    repo.load_index()
    assert len(storage.fetched) == 1  # the new object only
    assert {first[0], second[0]} <= set(repo.index.blobs)
    assert _seen(repo) == _as_read_afresh(repo, tmp_path)

    # A prune between two sources removes an index object (and its pack): the next load
    # no longer names its blobs, though nothing new was fetched.
    gone = next(k for k in repo.index.objects if first[0] in _blobs_of(repo, tmp_path, k))
    storage.delete(gone)
    storage.fetched.clear()
    repo.load_index()
    assert storage.fetched == []
    assert first[0] not in repo.index.blobs
    assert second[0] in repo.index.blobs
    assert _seen(repo) == _as_read_afresh(repo, tmp_path)


def _blobs_of(repo: Repository, tmp_path: Path, index_key: str) -> set[bytes]:
    data = LocalStorage("t", tmp_path / "repo").get(index_key)  # not counted
    return {e.id for r in index_codec.decode(data, repo.writer.mac_key) for e in r.blobs}


def test_many_new_objects_are_read_side_by_side_into_the_same_index(tmp_path: Path) -> None:
    keygen(tmp_path / "id.txt", tmp_path / "writer.key")
    writer_key = load_writer_key(tmp_path / "writer.key")
    repo, _ = Repository.init(LocalStorage("t", tmp_path / "repo"), writer_key)
    ids = [_store(repo, os.urandom(10_000))[0] for _ in range(INDEX_READS * 2 + 3)]
    reader = Repository.open(CountingStorage("t", tmp_path / "repo"), writer_key, None)
    reader.load_index()
    assert set(ids) <= set(reader.index.blobs)
    assert len(reader.index.objects) == len(ids)
    assert reader.index.objects == sorted(reader.index.objects)
    assert _seen(reader) == _as_read_afresh(reader, tmp_path)


def test_a_damaged_index_object_is_reported_on_every_load_without_being_fetched_again(
    tmp_path: Path,
) -> None:
    keygen(tmp_path / "id.txt", tmp_path / "writer.key")
    writer_key = load_writer_key(tmp_path / "writer.key")
    storage = CountingStorage("t", tmp_path / "repo")
    repo, _ = Repository.init(storage, writer_key)
    _store(repo, os.urandom(10_000))
    (key,) = [info.key for info in storage.list("index/")]
    path = tmp_path / "repo" / key
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1  # the MAC no longer matches
    path.chmod(0o600)
    path.write_bytes(bytes(damaged))
    for _ in range(2):
        storage.fetched.clear()
        repo.load_index()
        assert len(repo.index_problems) == 1
        assert key in repo.index_problems[0]
        assert repo.index.objects == []
    assert storage.fetched == []  # the second load: known bad, not fetched again
