"""Look inside snapshots without restoring them: list a directory (``ops backup ls``),
stream one file (``ops backup dump``), compare two snapshots (``ops backup diff``) and find
which snapshots hold a file (``ops backup find``).

All of them read a snapshot's trees as a restore does (every tree verified, the same bounds
on size and depth, entries a restore would refuse named and left out) and need the
identity. A dump checks that the index holds every blob of the file and that their lengths
add up to its size before the first byte goes out, verifies every blob against its id as it
is read, and stops with an error when a blob is damaged, never with short output and exit 0.
Names, owners and link targets are shown through :func:`text` (a backup host chose them).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from portalops.backup.repo.repository import Repository
from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
from portalops.backup.repo.tree import Node, NodeType, Refused, Tree
from portalops.backup.restore.files import Trees, join, read_trees
from portalops.core.errors import BadInput, ExitCode, OpsError
from portalops.core.visible import visible

_TYPE_BITS = {
    NodeType.DIR: stat.S_IFDIR,
    NodeType.SYMLINK: stat.S_IFLNK,
    NodeType.FIFO: stat.S_IFIFO,
    NodeType.FILE: stat.S_IFREG,
}


class DumpFailed(OpsError):
    """{}: {}"""

    exit_code = ExitCode.PROBLEM_FOUND


def text(name: bytes | str) -> str:
    """A stored name, path, owner or link target as text: UTF-8, undecodable bytes and
    control characters (a backup host chose them: they may hold terminal escapes or a
    newline that forges a line) shown as ``\\xNN``. ``ls`` and ``dump`` take a name back
    in this form too."""
    decoded = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
    return visible(decoded)


@dataclass(frozen=True)
class Entry:
    """One line of a listing."""

    path: bytes
    node: Node

    def to_json(self) -> dict[str, Any]:
        node = self.node
        return {
            "path": text(self.path),
            "type": node.type.value,
            "mode": f"{node.mode:04o}",
            "permissions": self.permissions(),
            "uid": node.uid,
            "gid": node.gid,
            "user": text(node.user) if node.user is not None else None,
            "group": text(node.group) if node.group is not None else None,
            "size": node.size if node.type is NodeType.FILE else None,
            "mtime": self.mtime(),
            "target": text(node.target) if node.target is not None else None,
        }

    def permissions(self) -> str:
        """``ls -l``'s first column: ``drwxr-xr-x``."""
        return stat.filemode(_TYPE_BITS[self.node.type] | self.node.mode)

    def mtime(self) -> datetime:
        seconds = self.node.mtime_ns // 1_000_000_000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):  # the format's range is wider than dates'
            return (
                datetime.max.replace(tzinfo=UTC)
                if seconds > 0
                else datetime.min.replace(tzinfo=UTC)
            )


@dataclass(frozen=True)
class Listing:
    snapshot: SnapshotRef
    path: str  # as asked, normalised ("" for the top)
    entries: list[Entry]
    refused: list[str]  # entries a restore would refuse, with why


def _parts(path: str | None) -> list[bytes]:
    """The components of a path inside a snapshot (leading ``/`` optional); ``..`` refused."""
    raw = os.fsencode(path or "")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise BadInput(f"{path!r}: a path inside a snapshot cannot go up with '..'")
    return parts


def _find(trees: Trees, parts: list[bytes], label: str, asked: str) -> Node | None:
    """The node at ``parts`` below the root (None for the root itself)."""
    tree = trees.trees[trees.root]
    node: Node | None = None
    for depth, part in enumerate(parts):
        node = next((n for n in tree.nodes if n.name == part), None)
        if node is None:  # a name typed back as ls shows it (t\xean.txt for b"t\xean.txt")
            typed = os.fsdecode(part)
            node = next((n for n in tree.nodes if text(n.name) == typed), None)
        if node is None:
            refused = next((r for r in tree.refused if r.name == part), None)
            why = f" (left out: {text(refused.reason)})" if refused is not None else ""
            raise BadInput(
                f"no {asked!r} in {label}{why}; 'ops backup ls' with the snapshot lists its top"
            )
        if depth < len(parts) - 1:
            if node.type is not NodeType.DIR or node.subtree is None:
                where = text(b"/".join(parts[: depth + 1]))
                raise BadInput(f"{where!r} in {label} is a {node.type.value}, not a directory")
            tree = trees.trees[node.subtree]
    return node


def _label(ref: SnapshotRef) -> str:
    return f"snapshot {ref.source}@{ref.short_id}"


def list_snapshot(
    repo: Repository,
    ref: SnapshotRef,
    snapshot: Snapshot,
    path: str | None,
    *,
    recursive: bool = False,
) -> Listing:
    """The entries of the directory at ``path`` (the top by default), or the one entry a
    non-directory ``path`` names; ``recursive``: everything below, parents first."""
    label = _label(ref)
    parts = _parts(path)
    trees = read_trees(repo, snapshot.tree, label)
    node = _find(trees, parts, label, path or "")
    base = b"/".join(parts)
    if node is None:
        subtree = trees.root
    elif node.type is NodeType.DIR and node.subtree is not None:
        subtree = node.subtree
    else:
        return Listing(ref, text(base), [Entry(base, node)], [])
    entries: list[Entry] = []
    refused: list[str] = []
    if recursive:
        items: Iterable[tuple[bytes, Node | Refused]] = Trees(subtree, trees.trees).entries(base)
    else:  # this directory's own entries: its subtrees are not walked
        tree = trees.trees[subtree]
        own: list[Node | Refused] = [*tree.nodes, *tree.refused]
        items = [(base, item) for item in own]
    for parent, item in items:
        if isinstance(item, Refused):
            refused.append(f"{text(join(parent, item.name))}: {text(item.reason)}")
        else:
            entries.append(Entry(join(parent, item.name), item))
    return Listing(ref, text(base), entries, refused)


def dump_file(
    repo: Repository,
    ref: SnapshotRef,
    snapshot: Snapshot,
    path: str,
    write: Callable[[bytes], object],
) -> Node:
    """Write the file at ``path`` through ``write``, blob by blob, every blob verified
    (the index must be loaded); the node written. Nothing is written for a path that is not
    a regular file; DumpFailed when a blob cannot be read or the sizes disagree, after the
    bytes before it were written (the caller says so: the output is incomplete)."""
    label = _label(ref)
    parts = _parts(path)
    if not parts:
        raise BadInput(f"which file of {label}? give its path ('ops backup ls' lists them)")
    trees = read_trees(repo, snapshot.tree, label)
    node = _find(trees, parts, label, path)
    if node is None or node.type is NodeType.DIR:
        raise BadInput(
            f"{path!r} in {label} is a directory, not a file; "
            "'ops backup restore --path' restores a directory"
        )
    if node.type is not NodeType.FILE:
        what = f" (to {text(node.target)})" if node.target is not None else ""
        raise BadInput(f"{path!r} in {label} is a {node.type.value}{what}, not a file")
    _check_lengths(repo, node, f"{label}: {path}")
    written = 0
    for blob_id in node.content:
        try:
            data = repo.read_blob(blob_id)
        except OpsError as exc:
            raise DumpFailed(f"{label}: {path}", f"{exc} (after {written} bytes)") from None
        written += len(data)
        if written > node.size:
            break
        write(data)
    if written != node.size:  # the index's lengths were right, the blobs were not
        raise DumpFailed(
            f"{label}: {path}",
            f"its blobs hold {'more than ' if written > node.size else ''}{written} bytes, "
            f"its entry says {node.size}: the snapshot is damaged",
        )
    return node


def _check_lengths(repo: Repository, node: Node, label: str) -> None:
    """Before the first byte goes out: every blob in the index, and their lengths adding up
    to the file's size; only a blob damaged in its pack can still cut a dump short."""
    total = 0
    for blob_id in node.content:
        location = repo.index.get(blob_id)
        if location is None:
            raise DumpFailed(label, f"blob {blob_id.hex()[:16]} is in no index: nothing written")
        total += location.entry.raw_length
    if total != node.size:
        raise DumpFailed(
            label,
            f"its blobs hold {total} bytes by the index, its entry says {node.size}: the "
            "snapshot is damaged; nothing written",
        )


# -- diff ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between two snapshots: ``added``, ``removed``, ``modified`` (content,
    or a symlink's target), ``type`` (a file became a directory...) or ``metadata``
    (permissions, owner, modification time; ``what`` says which)."""

    change: str
    path: bytes
    old: Node | None
    new: Node | None
    what: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        def size(node: Node | None) -> int | None:
            return node.size if node is not None and node.type is NodeType.FILE else None

        either = self.new or self.old
        assert either is not None  # noqa: S101 - a change has one side at least
        return {
            "change": self.change,
            "path": text(self.path),
            "type": either.type.value,
            "old_size": size(self.old),
            "new_size": size(self.new),
            "what": list(self.what),
        }


_METADATA = ("mode", "uid", "gid", "user", "group")


def _metadata_changes(old: Node, new: Node) -> tuple[str, ...]:
    what = tuple(field for field in _METADATA if getattr(old, field) != getattr(new, field))
    # a directory's time moves with its entries, which are compared themselves
    if old.type is not NodeType.DIR and old.mtime_ns != new.mtime_ns:
        what += ("mtime",)
    return what


def diff_snapshots(
    repo: Repository, old: tuple[SnapshotRef, Snapshot], new: tuple[SnapshotRef, Snapshot]
) -> list[Change]:
    """What changed from ``old`` to ``new`` (two snapshots of one source), parents first;
    a directory added or removed is listed with everything below it. Directories whose
    trees are the same blob are not opened."""
    (old_ref, old_snapshot), (new_ref, new_snapshot) = old, new
    if old_ref.source != new_ref.source:
        raise BadInput(
            f"{old_ref.short_id} is a snapshot of {old_ref.source!r}, {new_ref.short_id} of "
            f"{new_ref.source!r}: diff compares two snapshots of one source"
        )
    before = read_trees(repo, old_snapshot.tree, _label(old_ref))
    after = read_trees(repo, new_snapshot.tree, _label(new_ref))
    changes: list[Change] = []

    def below(trees: Trees, node: Node, path: bytes, change: str) -> None:
        if node.type is NodeType.DIR and node.subtree is not None:
            for parent, item in Trees(node.subtree, trees.trees).entries(path):
                if isinstance(item, Node):
                    sides = (item, None) if change == "removed" else (None, item)
                    changes.append(Change(change, join(parent, item.name), *sides))

    stack: list[tuple[bytes, bytes, bytes]] = [(old_snapshot.tree, new_snapshot.tree, b"")]
    while stack:
        old_id, new_id, prefix = stack.pop()
        if old_id == new_id:
            continue
        olds = {n.name: n for n in before.trees[old_id].nodes}
        news = {n.name: n for n in after.trees[new_id].nodes}
        nested: list[tuple[bytes, bytes, bytes]] = []
        for name in sorted(olds.keys() | news.keys()):
            path = join(prefix, name)
            a, b = olds.get(name), news.get(name)
            if b is None:
                assert a is not None  # noqa: S101 - in one of the two
                changes.append(Change("removed", path, a, None))
                below(before, a, path, "removed")
            elif a is None:
                changes.append(Change("added", path, None, b))
                below(after, b, path, "added")
            elif a.type is not b.type:
                changes.append(Change("type", path, a, b, (f"{a.type.value} -> {b.type.value}",)))
                below(before, a, path, "removed")
                below(after, b, path, "added")
            elif (a.content, a.target) != (b.content, b.target):
                changes.append(Change("modified", path, a, b, _metadata_changes(a, b)))
            elif what := _metadata_changes(a, b):
                changes.append(Change("metadata", path, a, b, what))
            if (
                a is not None
                and b is not None
                and a.type is b.type is NodeType.DIR
                and a.subtree is not None
                and b.subtree is not None
            ):
                nested.append((a.subtree, b.subtree, path))
        stack.extend(reversed(nested))
    return changes


# -- find ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    snapshot: SnapshotRef
    path: bytes
    node: Node

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot.id,
            "short_id": self.snapshot.short_id,
            "source": self.snapshot.source,
            "time": self.snapshot.time,
            **Entry(self.path, self.node).to_json(),
        }


def matcher(pattern: str) -> Callable[[bytes, bytes], bool]:
    """``fnmatch`` on the name, or on the whole path (without a leading ``/``) when the
    pattern holds a ``/``, as ``find -name`` and ``find -path`` do; case-sensitive."""
    if not pattern.strip("/*"):
        raise BadInput(f"pattern {pattern!r} matches everything; name what to find")
    raw = os.fsencode(pattern)
    if b"/" in raw:
        whole = re.compile(fnmatch.translate(os.fsdecode(raw.lstrip(b"/"))), re.DOTALL)
        return lambda path, _name: whole.match(os.fsdecode(path)) is not None
    one = re.compile(fnmatch.translate(pattern), re.DOTALL)
    return lambda _path, name: one.match(os.fsdecode(name)) is not None


def find_in_snapshots(
    repo: Repository,
    snapshots: list[tuple[SnapshotRef, Snapshot]],
    pattern: str,
) -> list[Found]:
    """Every entry matching ``pattern`` in each snapshot, oldest snapshot first. A subtree
    that several snapshots share is searched once (its matches remembered by tree id) when
    the pattern looks at names only."""
    match = matcher(pattern)
    by_name = b"/" not in os.fsencode(pattern)
    memo: dict[bytes, list[tuple[bytes, Node]]] = {}  # tree id -> (path below it, node)
    known: dict[bytes, Tree] = {}  # every distinct tree read once, whatever the snapshot
    found: list[Found] = []
    for ref, snapshot in snapshots:
        trees = read_trees(repo, snapshot.tree, _label(ref), known)
        if by_name:
            hits = _matches_below(trees, snapshot.tree, match, memo)
        else:
            hits = [
                (join(parent, item.name), item)
                for parent, item in trees.entries()
                if isinstance(item, Node) and match(join(parent, item.name), item.name)
            ]
        found += [Found(ref, path, node) for path, node in hits]
    return found


def _matches_below(
    trees: Trees,
    root: bytes,
    match: Callable[[bytes, bytes], bool],
    memo: dict[bytes, list[tuple[bytes, Node]]],
) -> list[tuple[bytes, Node]]:
    """The entries below tree ``root`` whose names match, with their paths relative to it;
    each tree's list computed once, after its subtrees' (post-order, without recursion)."""
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        tree_id, children_done = stack.pop()
        if tree_id in memo:
            continue
        subtrees = [
            n.subtree
            for n in trees.trees[tree_id].nodes
            if n.type is NodeType.DIR and n.subtree is not None
        ]
        if not children_done:
            stack.append((tree_id, True))
            stack += [(t, False) for t in subtrees if t not in memo]
            continue
        hits: list[tuple[bytes, Node]] = []
        for node in trees.trees[tree_id].nodes:
            if match(node.name, node.name):
                hits.append((node.name, node))
            if node.type is NodeType.DIR and node.subtree is not None:
                hits += [(join(node.name, p), n) for p, n in memo[node.subtree]]
        memo[tree_id] = hits
    return memo[root]
