"""``ops backup forget [--prune]``: apply retention, then remove data no snapshot uses.

Forget deletes snapshot objects the policy does not keep (names carry source and time, so
this needs no key). Prune needs the identity (it reads trees to learn which blobs are used)
and an exclusive lock (no backup may be running: a backup may be about to reuse a blob that
looks unused). Crash-safe order: new packs (repacked live blobs), then one new index naming
every kept pack, then the old index objects go, then the packs nothing names any more.
Objects still under S3 Object Lock are left and reported, never errors.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from backup.index import PackRecord
from backup.locks import Lock
from backup.pack import BlobType, PackBuilder, PendingBlob
from backup.repository import Repository, RepositoryError
from backup.retention import Decision, Policy, apply_policy
from backup.snapshot import SnapshotRef
from backup.storage import ObjectLocked
from backup.tree import NodeType

log = logging.getLogger(__name__)

# Repack a pack when at least this share of its bytes belongs to blobs no snapshot uses.
REPACK_WHEN_UNUSED = 0.5
PRUNE_LOCK_WAIT = 3600.0  # a daily backup in progress finishes first


@dataclass
class ForgetResult:
    repository: str
    decisions: list[Decision[SnapshotRef]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # under Object Lock: kept for now


@dataclass
class PruneResult:
    repository: str
    packs_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_freed: int = 0
    unreferenced_deleted: int = 0
    index_objects_replaced: int = 0
    locked: list[str] = field(default_factory=list)
    dry_run: bool = False


def forget(repo: Repository, policy: Policy, *, dry_run: bool) -> ForgetResult:
    result = ForgetResult(repo.name)
    by_source: dict[str, list[SnapshotRef]] = defaultdict(list)
    for ref in repo.snapshots():
        by_source[ref.source].append(ref)
    for refs in by_source.values():
        result.decisions += apply_policy(refs, lambda r: r.time, policy, tiebreak=lambda r: r.id)
    if dry_run:
        return result
    for decision in result.decisions:
        if decision.keep:
            continue
        key = decision.snapshot.key
        try:
            repo.storage.delete(key)
            result.removed.append(key)
        except ObjectLocked as exc:
            result.locked.append(f"{key}: {exc}")
    return result


def used_blobs(repo: Repository) -> set[bytes]:
    """Every tree and data blob the repository's snapshots reference."""
    used: set[bytes] = set()
    for ref in repo.snapshots():
        snapshot = repo.read_snapshot(ref)
        stack = [snapshot.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in used:
                continue
            used.add(tree_id)
            for node in repo.read_tree(tree_id):
                used.update(node.content)
                if node.type is NodeType.DIR and node.subtree is not None:
                    stack.append(node.subtree)
    return used


def exclusive_lock(repo: Repository) -> Lock:
    """Forget-and-prune runs under this: running backups finish first, new ones wait."""
    return Lock.acquire(
        repo.storage, exclusive=True, command="backup forget --prune", wait=PRUNE_LOCK_WAIT
    )


def prune(repo: Repository, *, dry_run: bool) -> PruneResult:
    """Remove what no snapshot uses; the caller holds ``exclusive_lock``."""
    result = PruneResult(repo.name, dry_run=dry_run)
    index = repo.load_index()
    if repo.index_problems:
        # Packs named only by an unreadable index would look unused: deleting them could
        # lose data. A person must look first.
        raise RepositoryError(
            repo.name,
            "prune refused: index objects failed their check ("
            + "; ".join(repo.index_problems[:3])
            + "); run 'ops backup check' and investigate",
        )
    used = used_blobs(repo)
    stored = {info.key: info.size for info in repo.storage.list("packs/")}
    result.packs_before = len(stored)

    keep: list[PackRecord] = []
    delete: list[str] = sorted(set(stored) - set(index.packs))  # leftovers of crashed runs
    result.unreferenced_deleted = len(delete)
    repack: list[PackRecord] = []
    for key, record in index.packs.items():
        if key not in stored:
            continue  # missing pack: check reports it; nothing to keep or delete
        live = [e for e in record.blobs if e.id in used and index.blobs[e.id].pack == key]
        if not live:
            delete.append(key)
            continue
        unused = sum(e.length for e in record.blobs) - sum(e.length for e in live)
        if unused >= REPACK_WHEN_UNUSED * sum(e.length for e in record.blobs):
            repack.append(record)
        else:
            keep.append(record)
    result.packs_repacked = len(repack)
    if dry_run:
        result.packs_deleted = len(delete) + len(repack)
        result.bytes_freed = sum(stored[k] for k in delete)
        return result

    keep += _repack(repo, repack, used, result)
    if delete or repack or len(index.objects) > 1:
        # One index for everything kept; only then may the old ones and the packs go.
        new_key = repo.write_index(keep) if keep else None
        for old in index.objects:
            if old != new_key:
                _delete(repo, old, result)
                result.index_objects_replaced += 1
    for key in delete + [r.key for r in repack]:
        if _delete(repo, key, result):
            result.packs_deleted += 1
            result.bytes_freed += stored.get(key, 0)
    return result


def _repack(
    repo: Repository, records: list[PackRecord], used: set[bytes], result: PruneResult
) -> list[PackRecord]:
    """Copy the live blobs of mostly-unused packs into new packs; return their records."""
    written: list[PackRecord] = []
    builder = PackBuilder()

    def seal() -> None:
        nonlocal builder
        if len(builder):
            plaintext, entries = builder.build()
            key, size = repo.write_pack(plaintext)
            written.append(PackRecord(key, size, tuple(entries)))
            result.packs_written += 1
            builder = PackBuilder()

    for record in records:
        plaintext = repo.read_pack(record.key)
        for entry in record.blobs:
            if entry.id not in used:
                continue
            used.discard(entry.id)  # copy each blob once
            stored = plaintext[entry.offset : entry.offset + entry.length]
            builder.add(
                PendingBlob(
                    entry.id, BlobType(entry.type), stored, entry.raw_length, entry.compression
                )
            )
            if builder.full():
                seal()
    seal()
    return written


def _delete(repo: Repository, key: str, result: PruneResult) -> bool:
    try:
        repo.storage.delete(key)
    except ObjectLocked as exc:
        result.locked.append(f"{key}: {exc}")
        return False
    return True
