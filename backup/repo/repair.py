"""``ops backup repair-index``: rebuild the index from the packs themselves.

The index is what writers read to deduplicate, and a writer holds the key that authenticates
it, so a compromised backup host can write an index that lies: blobs in packs that do not
exist, a genuine pack described with the wrong blobs, known blobs pointed at forged packs.
``prune`` refuses to run on such a repository; this command makes it consistent again. It
reads every pack (as ``check --read-data`` does), takes each pack's own header, keeps the
blobs whose content matches their id, and replaces every index object with new ones naming
exactly that. A pack that cannot be decrypted or parsed is named and left in place (it is
not indexed, so ``prune`` removes it once it is older than its grace period). Runs under the
exclusive lock, so no backup is writing meanwhile; its cost is one read of the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from portalops.backup.repo.index import Index, PackRecord
from portalops.backup.repo.locks import Lock
from portalops.backup.repo.pack import BlobEntry, decompress, read_header
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.storage import ObjectLocked

PACKS_PER_INDEX = 1000  # genuine backups write one index per 8 packs; keep objects modest


@dataclass
class RepairResult:
    repository: str
    packs_read: int = 0
    blobs_indexed: int = 0
    dropped: list[str] = field(default_factory=list)  # blobs whose content fails their id
    unreadable: list[str] = field(default_factory=list)  # packs left out, with the reason
    index_objects_written: int = 0
    index_objects_replaced: int = 0
    locked: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "repository": self.repository,
            "dry_run": self.dry_run,
            "packs_read": self.packs_read,
            "blobs_indexed": self.blobs_indexed,
            "dropped": self.dropped,
            "unreadable": self.unreadable,
            "index_objects_written": self.index_objects_written,
            "index_objects_replaced": self.index_objects_replaced,
            "locked": self.locked,
        }


def repair_index(
    repo: Repository,
    *,
    dry_run: bool,
    lock: Lock | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RepairResult:
    """Rebuild every index object from the packs; the caller holds ``lock`` (exclusive)."""
    result = RepairResult(repo.name, dry_run=dry_run)
    old = sorted(info.key for info in repo.storage.list("index/"))
    records: list[PackRecord] = []
    deltas: dict[str, list[BlobEntry]] = {}
    for info in sorted(repo.storage.list("packs/"), key=lambda i: i.key):
        record = _record_from_pack(repo, info.key, info.size, result, deltas)
        result.packs_read += 1
        if record is not None:
            records.append(record)
        if progress:
            progress(result.packs_read, 0)
    records = _with_deltas(repo, records, deltas, result)
    result.blobs_indexed = sum(len(record.blobs) for record in records)
    if dry_run:
        return result
    if lock is not None:
        lock.check()
    written = set()
    for start in range(0, len(records), PACKS_PER_INDEX):
        written.add(repo.write_index(records[start : start + PACKS_PER_INDEX]))
        result.index_objects_written += 1
    for key in old:
        if key in written:
            continue  # the rebuilt index is the one that was there (nothing was wrong)
        try:
            repo.storage.delete(key)
            result.index_objects_replaced += 1
        except ObjectLocked as exc:
            result.locked.append(f"{key}: {exc}")
    return result


def _with_deltas(
    repo: Repository,
    records: list[PackRecord],
    deltas: dict[str, list[BlobEntry]],
    result: RepairResult,
) -> list[PackRecord]:
    """The records with their delta blobs added, each once it decodes with a base the
    whole blobs already found hold (the first pass cannot check a delta: its base may be in
    a pack read later)."""
    if not deltas:
        return [record for record in records if record.blobs]
    found = Index()
    for record in records:
        found.add(record)
    added: dict[str, list[BlobEntry]] = {}
    for key, entries in deltas.items():
        bases = {base: found.locations(base) for entry in entries for base in entry.bases}
        for entry in repo.by_base(entries, bases):
            try:
                plaintext = repo.read_pack(key)
                repo.unpack_view(key, plaintext, entry.id, entry, bases)
                added.setdefault(key, []).append(entry)
            except DamagedObject:
                result.dropped.append(f"{key}: blob {entry.id.hex()[:16]}")
    rebuilt = [replace(r, blobs=r.blobs + tuple(added.get(r.key, ()))) for r in records]
    return [record for record in rebuilt if record.blobs]


def _record_from_pack(
    repo: Repository,
    key: str,
    size: int,
    result: RepairResult,
    deltas: dict[str, list[BlobEntry]],
) -> PackRecord | None:
    try:
        plaintext = repo.read_pack(key)
        entries = read_header(plaintext)
    except (DamagedObject, ValueError) as exc:
        result.unreadable.append(f"{key}: {exc}")
        return None
    good = []
    for entry in entries:
        if entry.bases:  # checked once every whole blob is known
            deltas.setdefault(key, []).append(entry)
            continue
        try:
            data = decompress(plaintext[entry.offset : entry.offset + entry.length], entry)
            genuine = repo.writer.blob_id(data) == entry.id
        except Exception:  # zstd raises its own types; a blob that fails is dropped
            genuine = False
        if genuine:
            good.append(entry)
        else:
            result.dropped.append(f"{key}: blob {entry.id.hex()[:16]}")
    return PackRecord(key, size, tuple(good))
