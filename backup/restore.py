"""Restore a snapshot into a directory, verifying every byte against its blob id.

Files are created first (at their full size), then packs are read one at a time and each
needed blob is decompressed, checked against its id and written at every offset that uses it:
a pack is downloaded and decrypted once however many files share it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from backup.pack import decompress
from backup.repository import DamagedObject, Repository
from backup.snapshot import Snapshot
from backup.tree import Node, NodeType
from portalops.errors import BadInput, OpsError

PREFETCH = 2  # packs downloaded ahead while the current one is written out


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
    dirs: list[tuple[Path, Node]] = field(default_factory=list)
    files: list[tuple[Path, Node]] = field(default_factory=list)
    others: list[tuple[Path, Node]] = field(default_factory=list)
    # blob id -> every (file, offset) it fills
    uses: dict[bytes, list[tuple[Path, int]]] = field(default_factory=lambda: defaultdict(list))
    links: list[tuple[Path, Path]] = field(default_factory=list)  # (existing, new hard link)


def walk(repo: Repository, tree_id: bytes, prefix: Path = Path()) -> Iterator[tuple[Path, Node]]:
    """Every node below ``tree_id`` with its path relative to the snapshot root, parents first."""
    for node in repo.read_tree(tree_id):
        path = prefix / os.fsdecode(node.name)
        yield path, node
        if node.type is NodeType.DIR and node.subtree is not None:
            yield from walk(repo, node.subtree, path)


def _selected(path: Path, includes: list[Path]) -> bool:
    """Inside an included path, or an ancestor directory leading to one."""
    if not includes:
        return True
    return any(path == inc or inc in path.parents or path in inc.parents for inc in includes)


def restore(
    repo: Repository,
    snapshot: Snapshot,
    target: Path,
    includes: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreResult:
    started = time.monotonic()
    wanted = [Path(p.lstrip("/")) for p in includes or []]
    result = RestoreResult(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(target, exc.strerror) from None
    plan = _plan(repo, snapshot, target, wanted, result)
    if wanted and not (plan.files or plan.dirs or plan.others):
        raise BadInput(f"--path {', '.join(includes or [])}: not in snapshot {snapshot.source}")
    try:
        _create(plan, result)
        _fill(repo, plan, result, progress)
        _finish_metadata(plan, result)
    except DamagedObject:
        raise
    except OSError as exc:
        raise RestoreError(target, f"{exc.filename}: {exc.strerror}") from None
    result.seconds = time.monotonic() - started
    return result


def _plan(
    repo: Repository, snapshot: Snapshot, target: Path, wanted: list[Path], result: RestoreResult
) -> _Plan:
    plan = _Plan()
    first_link: dict[str, Path] = {}
    for rel, node in walk(repo, snapshot.tree):
        if not _selected(rel, wanted):
            continue
        path = target / rel
        if node.type is NodeType.DIR:
            plan.dirs.append((path, node))
        elif node.type is NodeType.FILE:
            if node.link_group and node.link_group in first_link:
                plan.links.append((first_link[node.link_group], path))
                plan.files.append((path, node))
                continue
            if node.link_group:
                first_link[node.link_group] = path
            plan.files.append((path, node))
            offset = 0
            for blob in node.content:
                plan.uses[blob].append((path, offset))
                location = repo.index.get(blob)
                if location is None:
                    raise DamagedObject(
                        repo.name, f"blob {blob.hex()[:16]}", f"needed by {rel}, not in the index"
                    )
                offset += location.entry.raw_length
            if offset != node.size:
                result.warnings.append(
                    f"{rel}: blobs add up to {offset} bytes, node says {node.size}"
                )
        else:
            plan.others.append((path, node))
    return plan


def _create(plan: _Plan, result: RestoreResult) -> None:
    for path, _ in plan.dirs:
        path.mkdir(parents=True, exist_ok=True)
        result.dirs += 1
    linked = {new for _, new in plan.links}
    for path, node in plan.files:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path in linked:
            continue
        if path.is_symlink() or path.is_dir():
            raise RestoreError(path, "a symlink or directory is in the way")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, node.size)
        finally:
            os.close(fd)
    for existing, new in plan.links:
        with contextlib.suppress(FileNotFoundError):
            new.unlink()
        os.link(existing, new)
    for path, node in plan.others:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if node.type is NodeType.SYMLINK and node.target is not None:
            os.symlink(node.target, path)
            result.symlinks += 1
        elif node.type is NodeType.FIFO:
            os.mkfifo(path, 0o600)


def _fill(
    repo: Repository,
    plan: _Plan,
    result: RestoreResult,
    progress: Callable[[int, int], None] | None,
) -> None:
    by_pack: dict[str, list[bytes]] = defaultdict(list)
    for blob in plan.uses:
        location = repo.index.get(blob)
        assert location is not None  # checked while planning  # noqa: S101
        by_pack[location.pack].append(blob)
    packs = sorted(by_pack)
    written = 0
    with ThreadPoolExecutor(max_workers=PREFETCH, thread_name_prefix="fetch") as pool:
        pending: list[tuple[str, Future[bytes]]] = []
        queue = iter(packs)
        for key in queue:
            pending.append((key, pool.submit(repo.fetch_pack, key)))
            if len(pending) >= PREFETCH:
                break
        while pending:
            key, future = pending.pop(0)
            next_key = next(queue, None)
            if next_key is not None:
                pending.append((next_key, pool.submit(repo.fetch_pack, next_key)))
            plaintext = repo.decrypt_pack(key, future.result())
            result.packs += 1
            for blob in by_pack[key]:
                location = repo.index.blobs[blob]
                entry = location.entry
                data = decompress(plaintext[entry.offset : entry.offset + entry.length], entry)
                if repo.writer.blob_id(data) != blob:
                    raise DamagedObject(repo.name, key, f"blob {blob.hex()[:16]} fails its id")
                result.verified_blobs += 1
                for path, offset in plan.uses[blob]:
                    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
                    try:
                        os.pwrite(fd, data, offset)
                    finally:
                        os.close(fd)
                    written += len(data)
                if progress:
                    progress(result.packs, written)
    result.bytes = written


def _apply(path: Path, node: Node, result: RestoreResult) -> None:
    follow = node.type is not NodeType.SYMLINK
    if os.geteuid() == 0:
        try:
            os.chown(path, node.uid, node.gid, follow_symlinks=follow)
        except OSError as exc:
            result.warnings.append(f"{path}: cannot set owner: {exc.strerror}")
    if follow:
        os.chmod(path, node.mode)
    os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=follow)


def _finish_metadata(plan: _Plan, result: RestoreResult) -> None:
    for path, node in plan.files:
        _apply(path, node, result)
        result.files += 1
    for path, node in plan.others:
        _apply(path, node, result)
    # Directories last: creating their entries above changed their mtimes.
    for path, node in sorted(plan.dirs, key=lambda item: len(item[0].parts), reverse=True):
        _apply(path, node, result)
