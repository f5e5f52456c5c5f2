"""``ops backup stats``: how much each source holds, what it costs in the repository, and
how fast it grows.

Per source (and per Art. 11.2 category, and for the whole repository):
- ``logical``: the bytes of the files of its latest snapshot, and summed over all its
  snapshots (what restoring every one of them would write);
- ``stored``: the stored (compressed, before encryption) bytes of the distinct blobs its
  snapshots refer to, trees included; a blob two sources share counts for each of them, and
  once in the category and repository totals;
- ``dedup``: logical over all snapshots / stored (how many times over deduplication and
  compression make the repository pay less than copies would);
- ``added_30d``: what its snapshots of the last 30 days added to the repository, as each
  run recorded it (the backup host states it; a value that is no count is left out).

Sizes come from the trees and the index, not from what snapshots say of themselves: every
distinct tree is read once (bounded as a restore reads it) and its sizes remembered, so a
year of daily snapshots that share most of their trees costs little more than one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from portalops.backup.repo.repository import Repository
from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
from portalops.backup.repo.tree import NodeType, Tree
from portalops.backup.restore.files import read_trees
from portalops.core.errors import OpsError

GROWTH_WINDOW = timedelta(days=30)


@dataclass
class Usage:
    """One source's figures (or a category's, or the repository's)."""

    name: str
    category: str
    snapshots: int = 0
    latest: datetime | None = None
    logical_latest: int = 0
    logical_all: int = 0
    stored: int = 0
    raw: int = 0
    added_30d: int = 0
    missing_blobs: int = 0  # referred to by a tree, not in the index
    blobs: set[bytes] = field(default_factory=set, repr=False)
    trees: set[bytes] = field(default_factory=set, repr=False)  # counted already

    @property
    def dedup(self) -> float | None:
        return round(self.logical_all / self.stored, 2) if self.stored else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "snapshots": self.snapshots,
            "latest": self.latest,
            "logical_latest": self.logical_latest,
            "logical_all": self.logical_all,
            "stored": self.stored,
            "raw": self.raw,
            "dedup": self.dedup,
            "added_30d": self.added_30d,
            "missing_blobs": self.missing_blobs,
        }


@dataclass
class Stats:
    sources: list[Usage]
    categories: list[Usage]
    total: Usage
    unreadable: list[str]  # snapshots that could not be read, with why


class _Trees:
    """The distinct trees of the snapshots read so far (each read and decoded once) and each
    one's file bytes below it."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.known: dict[bytes, Tree] = {}
        self.size: dict[bytes, int] = {}

    def measure(self, root: bytes, label: str) -> int:
        """The bytes of the files below ``root`` (its trees read, bounded, if new)."""
        if root in self.size:
            return self.size[root]
        trees = read_trees(self.repo, root, label, self.known).trees
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:  # post-order: a tree after its subtrees
            tree_id, children_done = stack.pop()
            if tree_id in self.size:
                continue
            subtrees = trees[tree_id].subtrees()
            if not children_done:
                stack.append((tree_id, True))
                stack += [(t, False) for t in subtrees if t not in self.size]
                continue
            files = sum(n.size for n in trees[tree_id].nodes if n.type is NodeType.FILE)
            self.size[tree_id] = files + sum(self.size[t] for t in subtrees)
        return self.size[root]

    def blobs_new_to(self, seen: set[bytes], root: bytes) -> list[bytes]:
        """The trees below ``root`` not in ``seen`` (added to it) and their files' blobs:
        what one snapshot adds to a usage that has counted the trees in ``seen``."""
        blobs: list[bytes] = []
        stack = [root]
        while stack:
            tree_id = stack.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            tree = self.known[tree_id]
            blobs.append(tree_id)
            blobs += [b for n in tree.nodes if n.type is NodeType.FILE for b in n.content]
            stack += tree.subtrees()
        return blobs


def _stated_added(snapshot: Snapshot) -> int:
    value = snapshot.summary.get("bytes_added")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _account(usage: Usage, repo: Repository, blobs: Iterable[bytes]) -> None:
    new = set(blobs) - usage.blobs
    usage.blobs |= new
    for blob_id in new:
        location = repo.index.get(blob_id)
        if location is None:
            usage.missing_blobs += 1
        else:
            usage.stored += location.entry.length
            usage.raw += location.entry.raw_length


def repository_stats(repo: Repository, source: str | None, now: datetime) -> Stats:
    """Every source's usage in ``repo`` (or ``source``'s alone); the index must be loaded.
    Future-dated snapshots are left out, as retention leaves them."""
    trees = _Trees(repo)
    by_source: dict[str, Usage] = {}
    by_category: dict[str, Usage] = {}
    total = Usage("total", "")
    unreadable: list[str] = []
    for ref in repo.snapshots(source):
        if ref.future_dated:
            continue
        try:
            snapshot = repo.read_snapshot(ref)
            logical = trees.measure(snapshot.tree, f"snapshot {_name(ref)}")
        except OpsError as exc:  # a damaged snapshot or tree: named, the others counted
            unreadable.append(f"{_name(ref)}: {exc}")
            continue
        usage = by_source.setdefault(ref.source, Usage(ref.source, snapshot.category))
        category = by_category.setdefault(snapshot.category, Usage(snapshot.category, ""))
        for each in (usage, category, total):
            each.snapshots += 1
            each.logical_all += logical
            if now - ref.time <= GROWTH_WINDOW:
                each.added_30d += _stated_added(snapshot)
            _account(each, repo, trees.blobs_new_to(each.trees, snapshot.tree))
        if usage.latest is None or ref.time >= usage.latest:
            usage.latest, usage.logical_latest = ref.time, logical
    for category in by_category.values():
        members = [u for u in by_source.values() if u.category == category.name]
        category.logical_latest = sum(u.logical_latest for u in members)
        category.latest = max((u.latest for u in members if u.latest), default=None)
    total.logical_latest = sum(u.logical_latest for u in by_source.values())
    total.latest = max((u.latest for u in by_source.values() if u.latest), default=None)
    return Stats(
        sources=sorted(by_source.values(), key=lambda u: u.name),
        categories=sorted(by_category.values(), key=lambda u: u.name),
        total=total,
        unreadable=unreadable,
    )


def _name(ref: SnapshotRef) -> str:
    return f"{ref.source}@{ref.short_id}"
