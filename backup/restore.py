"""Restore a snapshot into a directory, verifying every byte against its blob id.

The main process walks the trees and makes the directories; worker processes then take one
pack each, decrypt it once, check every needed blob against its id and write it at every
offset that uses it, creating files as they go. Sizes, links and metadata come last. Paths
stay bytes throughout: names are restored exactly as they were stored (NFC, NFD or neither).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backup.pack import BlobEntry
from backup.parallel import (
    MIN_PACKS,
    RestoreJob,
    restore_pack,
    run_parallel,
    setup_for,
    write_blobs,
)
from backup.repository import DamagedObject, Repository
from backup.snapshot import Snapshot
from backup.tree import Node, NodeType
from portalops.errors import BadInput, OpsError


class RestoreError(OpsError):
    """restore into {} failed: {}"""


@dataclass
class RestoreResult:
    target: Path
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    packs: int = 0
    seconds: float = 0.0
    verified_blobs: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    dirs: list[tuple[bytes, Node]] = field(default_factory=list)
    files: list[tuple[bytes, Node]] = field(default_factory=list)
    others: list[tuple[bytes, Node]] = field(default_factory=list)
    # blob id -> every (file, offset) it fills
    uses: dict[bytes, list[tuple[bytes, int]]] = field(default_factory=lambda: defaultdict(list))
    links: list[tuple[bytes, bytes]] = field(default_factory=list)  # (first path, new link)


def walk(repo: Repository, tree_id: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, Node]]:
    """Every node below ``tree_id`` with its path relative to the snapshot root, parents first."""
    for node in repo.read_tree(tree_id):
        path = prefix + b"/" + node.name if prefix else node.name
        yield path, node
        if node.type is NodeType.DIR and node.subtree is not None:
            yield from walk(repo, node.subtree, path)


def _selected(path: bytes, includes: list[bytes]) -> bool:
    """Inside an included path, or an ancestor directory leading to one."""
    if not includes:
        return True
    return any(
        path == inc or path.startswith(inc + b"/") or inc.startswith(path + b"/")
        for inc in includes
    )


def restore(
    repo: Repository,
    snapshot: Snapshot,
    target: Path,
    includes: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreResult:
    started = time.monotonic()
    wanted = [os.fsencode(p.strip("/")) for p in includes or []]
    result = RestoreResult(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(target, exc.strerror) from None
    plan = _plan(repo, snapshot, os.fsencode(target), wanted, result)
    if wanted and not (plan.files or plan.dirs or plan.others):
        raise BadInput(f"--path {', '.join(includes or [])}: not in snapshot {snapshot.source}")
    try:
        _make_dirs(plan, result)
        _fill(repo, plan, result, progress)
        _finish_files(plan, result)
        _finish_metadata(plan, result)
    except OSError as exc:
        where = os.fsdecode(exc.filename) if exc.filename else str(target)
        raise RestoreError(target, f"{where}: {exc.strerror}") from None
    result.seconds = time.monotonic() - started
    return result


def _plan(
    repo: Repository, snapshot: Snapshot, target: bytes, wanted: list[bytes], result: RestoreResult
) -> _Plan:
    plan = _Plan()
    first_link: dict[str, bytes] = {}
    for rel, node in walk(repo, snapshot.tree):
        if not _selected(rel, wanted):
            continue
        path = target + b"/" + rel
        if node.type is NodeType.DIR:
            plan.dirs.append((path, node))
        elif node.type is NodeType.FILE:
            plan.files.append((path, node))
            if node.link_group:
                if node.link_group in first_link:
                    plan.links.append((first_link[node.link_group], path))
                    continue
                first_link[node.link_group] = path
            offset = 0
            for blob in node.content:
                location = repo.index.get(blob)
                if location is None:
                    raise DamagedObject(
                        repo.name,
                        f"blob {blob.hex()[:16]}",
                        f"needed by {os.fsdecode(rel)}, not in the index",
                    )
                plan.uses[blob].append((path, offset))
                offset += location.entry.raw_length
            if offset != node.size:
                result.warnings.append(
                    f"{os.fsdecode(rel)}: blobs add up to {offset} bytes, node says {node.size}"
                )
        else:
            plan.others.append((path, node))
    return plan


def _make_dirs(plan: _Plan, result: RestoreResult) -> None:
    for path, _ in plan.dirs:  # parents come before their children
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                raise RestoreError(os.fsdecode(path), "something else is in the way") from None
        result.dirs += 1


def _fill(
    repo: Repository,
    plan: _Plan,
    result: RestoreResult,
    progress: Callable[[int, int], None] | None,
) -> None:
    by_pack: dict[str, list[tuple[bytes, BlobEntry, list[tuple[bytes, int]]]]] = defaultdict(list)
    for blob, uses in plan.uses.items():
        location = repo.index.blobs[blob]  # every blob was checked while planning
        by_pack[location.pack].append((blob, location.entry, uses))
    jobs: list[RestoreJob] = sorted(by_pack.items())
    setup = setup_for(repo)
    if setup is not None and len(jobs) >= MIN_PACKS:
        outcomes = run_parallel(setup, restore_pack, jobs)
    else:
        outcomes = (write_blobs(repo, job) for job in jobs)
    for blobs, written in outcomes:
        result.packs += 1
        result.verified_blobs += blobs
        result.bytes += written
        if progress:
            progress(result.packs, result.bytes)


def _finish_files(plan: _Plan, result: RestoreResult) -> None:
    """Empty files, exact sizes (a file that existed in the target may have been longer),
    hard links, symlinks and FIFOs."""
    linked = {new for _, new in plan.links}
    for path, node in plan.files:
        if path in linked:
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, node.size)
        finally:
            os.close(fd)
    for first, new in plan.links:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(new)
        os.link(first, new)
    for path, node in plan.others:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if node.type is NodeType.SYMLINK and node.target is not None:
            os.symlink(node.target, path)
            result.symlinks += 1
        elif node.type is NodeType.FIFO:
            os.mkfifo(path, 0o600)


def _apply(path: bytes, node: Node, result: RestoreResult) -> None:
    follow = node.type is not NodeType.SYMLINK
    if os.geteuid() == 0:
        try:
            os.chown(path, node.uid, node.gid, follow_symlinks=follow)
        except OSError as exc:
            result.warnings.append(f"{os.fsdecode(path)}: cannot set owner: {exc.strerror}")
    if follow:
        os.chmod(path, node.mode)
    os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=follow)


def _finish_metadata(plan: _Plan, result: RestoreResult) -> None:
    for path, node in plan.files:
        _apply(path, node, result)
        result.files += 1
    for path, node in plan.others:
        _apply(path, node, result)
    # Directories last, deepest first: creating their entries changed their mtimes.
    for path, node in reversed(plan.dirs):
        _apply(path, node, result)
