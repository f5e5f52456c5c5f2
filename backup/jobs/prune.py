"""``ops backup forget [--prune]``: apply retention, then remove data no snapshot uses.

Forget deletes snapshot objects the policy does not keep (names carry source and time, so
this needs no key). Prune needs the identity (it reads trees to learn which blobs are used)
and an exclusive lock (no backup may be running: a backup may be about to reuse a blob that
looks unused). Crash-safe order: new packs (repacked live blobs), then one new index naming
every kept pack, then the old index objects go, then the packs nothing names any more.
Objects still under S3 Object Lock are left and reported, never errors.

Everything a writer wrote is hostile input here (docs/backup.md, "What a compromised backup
host can and cannot do"):

* Retention goes by the storage's time for each snapshot, not the time the writer states;
  snapshots stated later than that witness allows are never counted and never removed (they
  are kept for inspection, and ``check`` names them); the newest genuine snapshot of every
  source is always kept, whatever the policy or the rest of the repository says.
* Prune refuses an inconsistent repository before it deletes anything: an index object that
  fails its MAC, a pack described differently by two index objects, an index record naming a
  missing pack, or a blob said to be in several places that the packs' own headers do not
  all confirm. ``ops backup repair-index`` rebuilds the index from the packs themselves.
* A pack is live while it holds any blob a kept snapshot uses, at whichever location; packs no
  index names are kept for ``UNINDEXED_GRACE`` (storage time), longer than any backup runs,
  since a running backup writes its packs before the index naming them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from portalops.backup.jobs.retention import LOCAL_TZ, Decision, Policy, apply_policy
from portalops.backup.repo.index import MAX_LOCATIONS, Index, PackRecord
from portalops.backup.repo.locks import Lock
from portalops.backup.repo.pack import BlobType, PackBuilder, PendingBlob, decompress, read_header
from portalops.backup.repo.repository import DamagedObject, Repository, RepositoryError
from portalops.backup.repo.snapshot import SnapshotRef
from portalops.backup.repo.storage import ObjectLocked
from portalops.backup.repo.tree import NodeType
from portalops.core.errors import ExitCode

log = logging.getLogger(__name__)

# Repack a pack when at least this share of its bytes belongs to blobs no snapshot uses.
REPACK_WHEN_UNUSED = 0.5
PRUNE_LOCK_WAIT = 3600.0  # a daily backup in progress finishes first
# Packs no index names are a crashed backup's leftovers, or a running backup's packs whose
# index is not written yet (it writes one every 8 packs, and at the end). Longer than any
# backup of ours runs; judged by the storage's time for the pack.
UNINDEXED_GRACE = timedelta(days=3)
NEWEST_GENUINE = "newest genuine"
FUTURE_DATED = "future-dated: never counted, kept for inspection"


class InconsistentRepository(RepositoryError):
    """repository {}: prune refused, nothing was deleted: {}"""

    exit_code = ExitCode.PROBLEM_FOUND


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


def forget(
    repo: Repository, policy: Policy, *, dry_run: bool, tz: tzinfo = LOCAL_TZ
) -> ForgetResult:
    """Apply ``policy`` per source, day and week boundaries in ``tz``."""
    result = ForgetResult(repo.name)
    by_source: dict[str, list[SnapshotRef]] = defaultdict(list)
    for ref in repo.snapshots():
        by_source[ref.source].append(ref)
    for refs in by_source.values():
        result.decisions += decide(refs, policy, tz)
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


def decide(refs: list[SnapshotRef], policy: Policy, tz: tzinfo) -> list[Decision[SnapshotRef]]:
    """One source's fate: ``policy`` over its genuine snapshots (by storage time), the newest
    genuine one always kept, future-dated ones kept aside and never counted."""
    genuine = [r for r in refs if not r.future_dated]
    decisions = apply_policy(
        genuine,
        lambda r: r.retention_time,
        policy,
        tz,
        tiebreak=lambda r: f"{r.time.isoformat()} {r.id}",
    )
    if genuine:
        newest = max(genuine)  # what 'latest' picks: the newest stated time
        decisions = [
            Decision(d.snapshot, True, (*d.reasons, NEWEST_GENUINE))
            if d.snapshot == newest and not d.keep
            else d
            for d in decisions
        ]
    forged = [Decision(r, True, (FUTURE_DATED,)) for r in refs if r.future_dated]
    return forged + decisions


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


def live_packs(index: Index, used: set[bytes]) -> set[str]:
    """The packs holding a used blob, wherever else the index says that blob is too; ``used``
    grows by the base of every delta these packs keep (used or not: a kept pack keeps its
    index rows, and a later backup may deduplicate against any of them), until no kept
    delta lacks its base."""
    while True:
        live = {loc.pack for blob in used for loc in index.locations(blob)}
        bases = {
            base
            for key in live
            for entry in (index.packs[key].blobs if key in index.packs else ())
            for base in entry.bases
            if base not in used
        }
        if not bases:
            return live
        used |= bases


def exclusive_lock(repo: Repository) -> Lock:
    """Forget-and-prune runs under this: running backups finish first, new ones wait."""
    return Lock.acquire(
        repo.storage, exclusive=True, command="backup forget --prune", wait=PRUNE_LOCK_WAIT
    )


@dataclass
class RetentionRun:
    """``ops backup forget [--prune]`` on one repository: what was forgotten, what pruned."""

    forgotten: ForgetResult
    pruned: PruneResult | None = None


def forget_and_prune(
    repo: Repository, policy: Policy, tz: tzinfo, *, dry_run: bool, and_prune: bool
) -> RetentionRun:
    """Apply ``policy`` (days and weeks in ``tz``, the operator's, as the backups' schedule
    is), then, with ``and_prune``, free what no snapshot uses. Pruning forgets under the same
    exclusive lock as it prunes, so it sees the snapshots of the backups it waited for."""
    if not and_prune:
        return RetentionRun(forget(repo, policy, dry_run=dry_run, tz=tz))
    with exclusive_lock(repo) as lock:
        forgotten = forget(repo, policy, dry_run=dry_run, tz=tz)
        return RetentionRun(forgotten, prune(repo, dry_run=dry_run, lock=lock))


def prune(
    repo: Repository,
    *,
    dry_run: bool,
    lock: Lock | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PruneResult:
    """Remove what no snapshot uses; the caller holds ``lock`` (``exclusive_lock``), which is
    checked again before anything is deleted."""
    result = PruneResult(repo.name, dry_run=dry_run)
    index = repo.load_index()
    if repo.index_problems:
        # Packs named only by an unreadable index would look unused: deleting them could
        # lose data. A person must look first.
        raise InconsistentRepository(
            repo.name,
            "index objects failed their check ("
            + "; ".join(repo.index_problems[:3])
            + "); run 'ops backup check', then 'ops backup repair-index'",
        )
    listed = list(repo.storage.list("packs/"))
    stored = {info.key: info.size for info in listed}
    _require_consistent(repo, index, stored)
    used = used_blobs(repo)
    result.packs_before = len(stored)

    live = live_packs(index, used)
    cutoff = now() - UNINDEXED_GRACE
    unindexed = [
        info.key
        for info in listed
        if info.key not in index.packs and info.modified is not None and info.modified < cutoff
    ]
    delete: list[str] = sorted(unindexed)  # leftovers of crashed runs, past the grace period
    result.unreferenced_deleted = len(delete)
    keep: list[PackRecord] = []
    repack: list[PackRecord] = []
    for key, record in index.packs.items():
        if key not in live:
            delete.append(key)
            continue
        total = sum(e.length for e in record.blobs)
        unused = sum(e.length for e in record.blobs if e.id not in used)
        if unused >= REPACK_WHEN_UNUSED * total:
            repack.append(record)
        else:
            keep.append(record)
    result.packs_repacked = len(repack)
    if dry_run:
        result.packs_deleted = len(delete) + len(repack)
        result.bytes_freed = sum(stored[k] for k in delete)
        return result

    keep += _repack(repo, repack, used, result)
    _require_bases(repo, keep)
    if lock is not None:
        lock.check()  # a prune that lost its lock must not delete: a backup may be running
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


def _require_consistent(repo: Repository, index: Index, stored: dict[str, int]) -> None:
    """Stop (InconsistentRepository) unless every index record agrees with the packs."""
    problems = [
        f"{key}: described differently by two index objects"
        for key in sorted(index.conflicting_packs)
    ]
    problems += [
        f"{key}: named by the index, missing from the repository"
        for key in sorted(set(index.packs) - set(stored))
    ]
    problems += [
        f"blob {blob.hex()[:16]}: said to be in more than {MAX_LOCATIONS} places"
        for blob in sorted(index.crowded)
    ]
    # A blob said to be in several places: two writers racing store one blob twice, which is
    # harmless; an index forged to shadow a genuine one is not. The packs' own headers decide.
    doubtful = {loc.pack for locs in index.others.values() for loc in locs}
    doubtful |= {index.blobs[blob].pack for blob in index.others}
    for key in sorted(doubtful & set(stored)):
        problems += _header_disagreements(repo, index.packs[key])
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InconsistentRepository(
            repo.name,
            "; ".join(problems[:5])
            + more
            + "; run 'ops backup repair-index' to rebuild the index from the packs themselves",
        )


def _header_disagreements(repo: Repository, record: PackRecord) -> list[str]:
    try:
        header = set(read_header(repo.read_pack(record.key)))
    except (DamagedObject, ValueError) as exc:
        return [f"{record.key}: unreadable ({exc})"]
    wrong = [entry for entry in record.blobs if entry not in header]
    if not wrong:
        return []
    return [f"{record.key}: the index lists {len(wrong)} blob(s) its header does not hold"]


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

    # Whole blobs first, deltas after: a blob some delta needs as its base may also be in a
    # repacked pack as a delta (a writer can forge one), and the copy kept must be whole.
    wanted = [(record, [e for e in record.blobs if not e.bases]) for record in records]
    wanted += [(record, repo.by_base([e for e in record.blobs if e.bases])) for record in records]
    for record, entries in wanted:
        if not any(entry.id in used for entry in entries):
            continue
        plaintext = repo.read_pack(record.key)
        for entry in entries:
            if entry.id not in used:
                continue
            stored = plaintext[entry.offset : entry.offset + entry.length]
            base = repo.dictionary(entry, None, record.key) if entry.bases else None
            # The copy may become the only one: it must be the blob its id names.
            if repo.writer.blob_id(decompress(stored, entry, base=base)) != entry.id:
                raise InconsistentRepository(
                    repo.name,
                    f"{record.key}: blob {entry.id.hex()[:16]} does not match its id; run "
                    "'ops backup check --read-data', then 'ops backup repair-index'",
                )
            used.discard(entry.id)  # copy each blob once
            builder.add(
                PendingBlob(
                    entry.id,
                    BlobType(entry.type),
                    stored,
                    entry.raw_length,
                    entry.compression,
                    entry.bases,
                )
            )
            if builder.full():
                seal()
    seal()
    return written


def _require_bases(repo: Repository, keep: list[PackRecord]) -> None:
    """Every base of every delta kept is kept whole too; else stop before deleting anything
    (the packs just written are unindexed, and a later prune removes them)."""
    whole = {e.id for record in keep for e in record.blobs if not e.bases}
    for record in keep:
        for entry in record.blobs:
            missing = [b for b in entry.bases if b not in whole]
            if missing:
                raise InconsistentRepository(
                    repo.name,
                    f"{record.key}: delta {entry.id.hex()[:16]} would lose its base "
                    f"{missing[0].hex()[:16]}; run 'ops backup check --read-data', then "
                    "'ops backup repair-index'",
                )


def _delete(repo: Repository, key: str, result: PruneResult) -> bool:
    try:
        repo.storage.delete(key)
    except ObjectLocked as exc:
        result.locked.append(f"{key}: {exc}")
        return False
    return True
