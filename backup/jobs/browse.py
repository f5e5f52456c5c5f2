"""Look inside a snapshot without restoring it: list a directory (``ops backup ls``) and
stream one file (``ops backup dump``).

Both read the snapshot's trees as a restore does (every tree verified, the same bounds on
size and depth, entries a restore would refuse named and left out) and need the identity.
A dump verifies every blob against its id as it is read and stops with an error, not short
output, when a blob is damaged or the file's bytes do not add up to its recorded size.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from portalops.backup.repo.repository import Repository
from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
from portalops.backup.repo.tree import Node, NodeType, Refused
from portalops.backup.restore.files import Trees, join, read_trees
from portalops.core.errors import BadInput, ExitCode, OpsError

_TYPE_CHAR = {NodeType.DIR: "d", NodeType.SYMLINK: "l", NodeType.FIFO: "p", NodeType.FILE: "-"}
_TYPE_BITS = {
    NodeType.DIR: stat.S_IFDIR,
    NodeType.SYMLINK: stat.S_IFLNK,
    NodeType.FIFO: stat.S_IFIFO,
    NodeType.FILE: stat.S_IFREG,
}


class DumpFailed(OpsError):
    """{}: {}"""

    exit_code = ExitCode.PROBLEM_FOUND


def text(name: bytes) -> str:
    """A stored name or path as text: UTF-8, undecodable bytes shown as ``\\xNN``."""
    return name.decode("utf-8", "backslashreplace")


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
            "user": node.user,
            "group": node.group,
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
        if node is None:
            refused = next((r for r in tree.refused if r.name == part), None)
            why = f" (left out: {refused.reason})" if refused is not None else ""
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
    for parent, item in Trees(subtree, trees.trees).entries(base):
        if parent != base and not recursive:
            continue
        if isinstance(item, Refused):
            refused.append(f"{text(join(parent, item.name))}: {item.reason}")
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
    if node is None or node.type is not NodeType.FILE:
        kind = node.type.value if node is not None else "directory"
        raise BadInput(
            f"{path!r} in {label} is a {kind}, not a file; "
            "'ops backup restore --path' restores a directory"
        )
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
    if written != node.size:
        raise DumpFailed(
            f"{label}: {path}",
            f"its blobs hold {written}{'+' if written > node.size else ''} bytes, "
            f"its entry says {node.size}: the snapshot is damaged",
        )
    return node
