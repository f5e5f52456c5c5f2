"""``ops backup copy``: snapshots from one repository into another, every byte verified.

For the admin (it needs the identity): moving to a new offsite, seeding a new bucket from the
local repository, filling in the nights one copy missed, moving backups into a repository made
with a new writer key. Blobs keep their cut (chunker sizes must be the same: a reader refuses
blobs above its repository's maximum). Between repositories of one writer key (every one of a
host's) blobs keep their ids too. Into a repository with another id-key they are *renamed*:
every data blob of a snapshot is read and named with the target's id-key, and its trees are
written again naming the new ids, bottom up, so the snapshot has another root tree there;
the mapping is kept for the run, so a blob two snapshots share is read once per run.

Both repositories are locked shared for the whole copy (a prune of either waits) and their
indexes read after. Then, for each snapshot of the source repository (of the sources named),
oldest first:

- one already in the target (same source and time: names carry both, to the microsecond) is
  "present" when its tree is the same, and a failure when it is not;
- a future-dated one is skipped, named: 'latest' never takes it, and copying would spread it;
- the others: the snapshot's trees are read (bounded as a restore reads them) and a snapshot
  holding entries a restore would refuse is not copied; the blobs the target lacks are read
  pack by pack, each pack decrypted once, each blob checked against its id (another location
  is tried when one fails, as a restore does) and stored through a ``BlobWriter``; the packs
  this wrote are then read back from the target and every blob in them checked; only then is
  the snapshot written, the same body (time, tree, run, stats) encrypted to the target's
  recipients; renamed, its ``tree`` is the new root. A snapshot that fails leaves at most
  unused packs, which ``forget --prune`` removes.

Renamed, "present" compares the renamed root, so the snapshot's data is read to know it (no
write); a dry run reads no data: "present" there means the same run id, and it counts every
blob not read yet this run, at most what would move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from portalops.backup.repo.locks import Lock
from portalops.backup.repo.pack import MAX_TREE_BLOB, BlobEntry, BlobType
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
from portalops.backup.repo.storage import ObjectMissing, ObjectTooLarge, StorageError
from portalops.backup.repo.tree import Node, NodeType, Refused, Tree
from portalops.backup.repo.writer import BlobWriter, Destination
from portalops.backup.restore.files import Trees, UnrestorableTree, join, read_trees
from portalops.core.errors import BadInput, ExitCode, OpsError

log = logging.getLogger(__name__)

LOCK_WAIT = 600.0  # as a backup waits for a prune in progress
Progress = Callable[[int, int], None]
Renames = dict[tuple[BlobType, bytes], bytes]  # (kind, id in the source) -> id in the target


class NotCopied(OpsError):
    """{}: {}"""

    exit_code = ExitCode.PROBLEM_FOUND


@dataclass
class Copied:
    """What became of one snapshot of the source repository."""

    source: str
    time: datetime
    snapshot: str  # its id in the source repository
    status: str  # copied, present, would copy, skipped, failed
    target: str | None = None  # its id in the target repository
    blobs: int = 0  # blobs the target lacked (copied, or to copy with --dry-run)
    bytes: int = 0  # their size, uncompressed
    error: str | None = None
    exit_code: ExitCode = ExitCode.OK  # of a failure: 1 damage or a conflict, 3 unreachable
    renamed: bool = False  # blobs named with the target's id-key (another writer key)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "time": self.time,
            "snapshot": self.snapshot,
            "status": self.status,
            "target": self.target,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "renamed": self.renamed,
            "error": self.error,
        }


def copy_snapshots(
    src: Repository,
    dst: Repository,
    sources: list[str] | None,
    *,
    dry_run: bool = False,
    progress: Callable[[str], Progress | None] | None = None,
) -> list[Copied]:
    """Copy the snapshots of ``sources`` (all if None) from ``src`` into ``dst``; one result
    per snapshot, failures included. Both must have been opened with the identity. When a
    repository stops answering, the snapshot at hand fails with exit code 3 and the copy
    stops there."""
    if src.config.id == dst.config.id:
        raise BadInput(f"{src.name} and {dst.name} are the same repository: nothing to copy")
    if src.config.chunker != dst.config.chunker:
        raise BadInput(
            f"{src.name} and {dst.name} cut blobs to other sizes (their configs' chunker "
            "differs): a copy keeps each blob's cut, which the target's readers would refuse"
        )
    with (
        Lock.acquire(src.storage, exclusive=False, command="backup copy", wait=LOCK_WAIT),
        Lock.acquire(dst.storage, exclusive=False, command="backup copy", wait=LOCK_WAIT) as lock,
    ):
        src.load_index()  # only now: no prune runs in either from here on
        dst.load_index()
        refs = src.snapshots()
        if sources is not None:
            unknown = sorted(set(sources) - {r.source for r in refs})
            if unknown:
                held = sorted({r.source for r in refs})
                raise BadInput(
                    f"repository {src.name} has no snapshot of {', '.join(map(repr, unknown))}; "
                    f"it has {', '.join(held) or 'none'}"
                )
            refs = [r for r in refs if r.source in sources]
        renames = src.writer.id_key != dst.writer.id_key
        return _Copier(src, dst, lock, dry_run, progress, renames).run(refs)


class _Copier:
    """One copy run: what the target holds, what it has been given, which packs failed."""

    def __init__(
        self,
        src: Repository,
        dst: Repository,
        lock: Lock,
        dry_run: bool,
        progress: Callable[[str], Progress | None] | None,
        renames: bool = False,
    ) -> None:
        self.src, self.dst, self.lock = src, dst, lock
        self.dry_run, self.progress = dry_run, progress
        # Renaming: the source's blob id -> the target's, for every blob read this run.
        self.renamed: Renames | None = {} if renames else None
        self.present = {(r.source, r.time): r for r in dst.snapshots()}
        # The target's packs as its storage lists them: a blob its index names is taken as
        # held only in a pack that exists with the size the index gives (a writer can forge
        # the index). Packs this copy writes are read back before they are indexed.
        self.packs = {info.key: info.size for info in dst.storage.list("packs/")}
        self.planned: set[bytes] = set()  # --dry-run: blobs an earlier snapshot would move
        self.bad: set[str] = set()  # source packs that failed once: not fetched again

    def run(self, refs: list[SnapshotRef]) -> list[Copied]:
        results = []
        for ref in refs:
            result = Copied(ref.source, ref.time, ref.id, "failed")
            result.renamed = self.renamed is not None
            results.append(result)
            try:
                self._one(ref, result)
            except OpsError as exc:
                result.status, result.error = "failed", str(exc)
                damage = isinstance(exc, DamagedObject | NotCopied | UnrestorableTree)
                result.exit_code = ExitCode.PROBLEM_FOUND if damage else exc.exit_code
                log.error("copy of snapshot %s (%s) failed: %s", ref.short_id, ref.source, exc)
                if _unreachable(exc):
                    break  # the next snapshots would fail alike
            finally:
                self.src.forget_packs()
        return results

    def _one(self, ref: SnapshotRef, result: Copied) -> None:
        src, dst = self.src, self.dst
        if ref.future_dated:
            result.status = "skipped"
            result.error = "future-dated: 'ops backup check' names it; copy it by hand if real"
            return
        snapshot = src.read_snapshot(ref)
        there = self.present.get((ref.source, ref.time))
        if there is not None and self.renamed is None:
            theirs = dst.read_snapshot(there)  # the identity reads both: they share recipients
            if theirs.tree != snapshot.tree:
                raise NotCopied(
                    there.key, f"{dst.name} holds another snapshot of {ref.source} at this time"
                )
            result.status, result.target = "present", there.id
            return
        label = f"snapshot {ref.short_id} ({ref.source})"
        trees = read_trees(src, snapshot.tree, label)
        if any(tree.refused for tree in trees.trees.values()):  # walked only to name them
            refused = [
                join(p, item.name) for p, item in trees.entries() if isinstance(item, Refused)
            ]
            shown = refused[0].decode("utf-8", "backslashreplace")
            raise NotCopied(
                label,
                f"{len(refused)} entries a restore refuses (first: {shown}); not copied: "
                "'ops backup check' names them",
            )
        if self.renamed is not None:
            self._one_renamed(self.renamed, ref, snapshot, trees, there, result)
            return
        needed = self._missing(trees)
        entries = _locate(src, needed)
        result.blobs = len(needed)
        result.bytes = sum(e.raw_length for _, _, e in entries)
        if self.dry_run:
            self.planned.update(needed)
            result.status = "would copy"
            return
        report = (
            self.progress(f"{ref.source} {ref.short_id} → {dst.name}") if self.progress else None
        )
        writer = BlobWriter(Destination(dst, on_seal=self.lock.check, verify=True))
        try:
            self._transfer(writer, needed, entries, result.bytes, report)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        self._write(ref, snapshot, result)  # the same body, encrypted to the target's keys

    def _write(self, ref: SnapshotRef, snapshot: Snapshot, result: Copied) -> None:
        """The snapshot into the target, last, while the lock is still ours."""
        self.lock.check()
        written = self.dst.write_snapshot(snapshot)
        self.present[(ref.source, ref.time)] = written
        result.status, result.target = "copied", written.id
        log.info(
            "copied snapshot %s (%s) into %s as %s%s: %d blobs, %d bytes",
            ref.short_id, ref.source, self.dst.name, written.short_id,
            ", renamed" if result.renamed else "", result.blobs, result.bytes,
        )  # fmt: skip

    def _one_renamed(
        self, renamed: Renames, ref: SnapshotRef, snapshot: Snapshot, trees: Trees,
        there: SnapshotRef | None, result: Copied,
    ) -> None:  # fmt: skip
        """``_one`` into a repository with another id-key: blobs and trees renamed."""
        dst = self.dst
        if self.dry_run:
            self._plan_renamed(renamed, snapshot, trees, there, result)
            return
        # A snapshot the target has at this time is compared by its renamed root: read,
        # nothing written.
        writer = None
        if there is None:
            writer = BlobWriter(Destination(dst, on_seal=self.lock.check, verify=True))
        report = self.progress(f"{ref.source} {ref.short_id} → {dst.name}") if (
            self.progress
        ) else None  # fmt: skip
        try:
            root = self._rename(renamed, trees, writer, result, report)
            if writer is not None:
                writer.finish()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if there is not None:
            if dst.read_snapshot(there).tree != root:
                raise NotCopied(
                    there.key, f"{dst.name} holds another snapshot of {ref.source} at this time"
                )
            result.status, result.target = "present", there.id
            return
        self._write(ref, replace(snapshot, tree=root), result)

    def _plan_renamed(
        self, renamed: Renames, snapshot: Snapshot, trees: Trees, there: SnapshotRef | None,
        result: Copied,
    ) -> None:  # fmt: skip
        """``--dry-run`` when renaming, reading no data: a snapshot the target has at this
        time is taken as present when it carries the same run id (the copy itself compares
        renamed trees); otherwise every blob not read yet this run, at most what would move
        (and a snapshot without a run id, there at this time, is counted so too)."""
        theirs = self.dst.read_snapshot(there).run if there is not None else None
        if there is not None and theirs is not None and snapshot.run is not None:
            if theirs != snapshot.run:
                raise NotCopied(
                    there.key,
                    f"{self.dst.name} holds a snapshot of {snapshot.source} at this time from "
                    "another run",
                )
            result.status, result.target = "present", there.id
            return
        unread = [
            blob for blob in _data_blobs(trees)
            if (BlobType.DATA, blob) not in renamed and blob not in self.planned
        ]  # fmt: skip
        entries = _locate(self.src, dict.fromkeys(unread, BlobType.DATA))
        fresh = [
            tree_id for tree_id in trees.trees
            if (BlobType.TREE, tree_id) not in renamed and tree_id not in self.planned
        ]  # fmt: skip
        self.planned.update(unread, fresh)
        result.blobs = len(entries) + len(fresh)
        result.bytes = sum(e.raw_length for _, _, e in entries)
        result.bytes += sum(len(trees.trees[tree_id].encode()) for tree_id in fresh)
        result.status = "would copy"

    def _rename(
        self, renamed: Renames, trees: Trees, writer: BlobWriter | None, result: Copied,
        report: Progress | None,
    ) -> bytes:  # fmt: skip
        """The snapshot's root tree id in the target. Data blobs not renamed yet (or renamed
        but not held by the target, when storing) are read and named with the target's
        id-key; then each tree is written again naming the new ids, children first. With a
        ``writer``, what the target lacks is stored; ``result`` counts it.

        Names are kept per kind: a file's content is renamed from its bytes as data even
        where the same id is also a tree (a file holding exactly a tree's encoding), and the
        tree is written again as a tree. A node keeps only the ids its kind uses (content of
        a file, subtree of a directory), as a restore reads it."""
        target = self.dst.writer
        max_data = self.dst.max_data_blob
        settled: set[bytes] = set()  # target ids stored (or found held) by this call

        def done(kind: BlobType, blob: bytes) -> bool:
            new = renamed.get((kind, blob))
            return new is not None and (writer is None or new in settled or self._held(new))

        def store(kind: BlobType, data: bytes, blob: bytes) -> bytes:
            limit = MAX_TREE_BLOB if kind is BlobType.TREE else max_data
            if len(data) > limit:
                what = "tree, written again," if kind is BlobType.TREE else "file content blob"
                raise NotCopied(
                    f"{kind.value} blob {blob.hex()[:16]}",
                    f"this {what} is {len(data)} bytes, more than {self.dst.name} lets a "
                    f"{kind.value} blob hold ({limit}): not copied",
                )
            new = renamed[kind, blob] = target.blob_id(data)
            if writer is not None and new not in settled and not self._held(new):
                writer.add(kind, data, new)
                result.blobs, result.bytes = result.blobs + 1, result.bytes + len(data)
            settled.add(new)
            return new

        todo = {blob: BlobType.DATA for blob in _data_blobs(trees) if not done(BlobType.DATA, blob)}
        entries = _locate(self.src, todo)
        total, so_far = sum(e.raw_length for _, _, e in entries), 0
        for blob, entry, data in self._read(entries):
            store(BlobType.DATA, data, blob)
            so_far += entry.raw_length
            if report is not None:
                report(so_far, total)
        stack = [trees.root]  # no recursion: trees can be thousands deep
        while stack:
            tree_id = stack[-1]
            if done(BlobType.TREE, tree_id):
                stack.pop()
                continue
            tree = trees.trees[tree_id]
            below = [sub for sub in dict.fromkeys(tree.subtrees()) if not done(BlobType.TREE, sub)]
            if below:
                stack.extend(below)
                continue
            stack.pop()
            nodes = [_renamed_node(node, renamed) for node in tree.nodes]
            store(BlobType.TREE, Tree(nodes).encode(), tree_id)
        return renamed[BlobType.TREE, trees.root]

    def _missing(self, trees: Trees) -> dict[bytes, BlobType]:
        """The blobs of the snapshot (its trees, its files' content) the target lacks."""
        needed: dict[bytes, BlobType] = {}
        for tree_id, tree in trees.trees.items():
            if not self._held(tree_id):
                needed[tree_id] = BlobType.TREE
            for node in tree.nodes:
                if node.type is NodeType.FILE:
                    for blob in node.content:
                        if blob not in needed and not self._held(blob):
                            needed[blob] = BlobType.DATA
        return needed

    def _held(self, blob: bytes) -> bool:
        index = self.dst.index
        if blob in self.planned or blob in index.written:
            return True
        for location in index.locations(blob):
            record = index.packs.get(location.pack)
            if record is not None and self.packs.get(location.pack) == record.size:
                return True
        if blob in index:  # named only in packs that are not there: store it again
            log.warning("repository %s: blob %s is indexed in no pack that exists; copying it",
                        self.dst.name, blob.hex()[:16])  # fmt: skip
            index.forget(blob)
        return False

    def _transfer(
        self,
        writer: BlobWriter,
        needed: dict[bytes, BlobType],
        entries: list[tuple[str, bytes, BlobEntry]],
        total: int,
        report: Progress | None,
    ) -> None:
        done = 0
        for blob, entry, data in self._read(entries):
            writer.add(needed[blob], data, blob)
            done += entry.raw_length
            if report is not None:
                report(done, total)

    def _read(
        self, entries: list[tuple[str, bytes, BlobEntry]]
    ) -> Iterator[tuple[bytes, BlobEntry, bytes]]:
        """Each blob's content, checked against its id, pack by pack (each decrypted once);
        another location when one fails."""
        pack, plaintext = "", b""
        for key, blob, entry in entries:
            if key != pack:
                pack, plaintext = key, b""
                if key not in self.bad:
                    try:
                        plaintext = self.src.decrypt_pack(key, self.src.fetch_pack(key))
                    except OpsError as exc:
                        if _unreachable(exc):
                            raise
                        self.bad.add(key)
            try:
                data = self.src.unpack_blob(key, plaintext, blob, entry)
            except DamagedObject:
                data = self._elsewhere(blob)
            yield blob, entry, data

    def _elsewhere(self, blob: bytes) -> bytes:
        """The blob from another location the source's index gives, each pack fetched at
        most once more; DamagedObject naming every location tried."""
        reasons = []
        for location in self.src.index.locations(blob):
            if location.pack in self.bad:
                reasons.append(f"{location.pack}: unreadable")
                continue
            try:
                plaintext = self.src.read_pack(location.pack)
            except OpsError as exc:
                if _unreachable(exc):
                    raise
                self.bad.add(location.pack)
                reasons.append(str(exc))
                continue
            try:
                return self.src.unpack_blob(location.pack, plaintext, blob, location.entry)
            except DamagedObject as exc:
                reasons.append(f"{exc.args[1]}: {exc.args[2]}")
        raise DamagedObject(self.src.name, f"blob {blob.hex()[:16]}", "; ".join(reasons))


def _renamed_node(node: Node, renamed: Renames) -> Node:
    if node.type is NodeType.FILE:
        content = tuple(renamed[BlobType.DATA, blob] for blob in node.content)
        return replace(node, content=content, subtree=None)
    if node.type is NodeType.DIR and node.subtree is not None:
        return replace(node, content=(), subtree=renamed[BlobType.TREE, node.subtree])
    return replace(node, content=(), subtree=None)


def _data_blobs(trees: Trees) -> list[bytes]:
    """The data blobs of every file below the root, each once, in tree order."""
    found: dict[bytes, None] = {}
    for tree in trees.trees.values():
        for node in tree.nodes:
            if node.type is NodeType.FILE:
                found.update(dict.fromkeys(node.content))
    return list(found)


def _unreachable(exc: OpsError) -> bool:
    """A storage that does not answer (not a missing or damaged object): exit code 3."""
    return isinstance(exc, StorageError) and not isinstance(exc, ObjectMissing | ObjectTooLarge)


def _locate(src: Repository, needed: dict[bytes, BlobType]) -> list[tuple[str, bytes, BlobEntry]]:
    """Where each needed blob is first said to be, sorted by pack: each pack is read once
    (and in it, deltas by their bases' packs: the source keeps only a few packs read)."""
    found = []
    for blob in needed:
        location = next(iter(src.index.locations(blob)), None)
        if location is None:
            raise DamagedObject(src.name, f"blob {blob.hex()[:16]}", "not in the index")
        found.append((location.pack, blob, location.entry))
    found.sort(key=lambda f: (f[0], src.base_order(f[2]), f[2].offset))
    return found
