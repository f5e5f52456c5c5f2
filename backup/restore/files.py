"""Restore a snapshot into a directory, verifying every byte against its blob id.

The main process reads every tree first (each distinct tree once) and refuses, before writing
anything, a snapshot whose trees would expand beyond :data:`MAX_ENTRIES` entries or nest
deeper than :data:`MAX_DEPTH` (a tree reusing one subtree twice at each of 40 levels names
2^40 paths in a few kilobytes). It then makes the directories; worker processes take one pack
each, decrypt it once, check every needed blob against its id and write it at every offset
that uses it, creating files as they go. A blob a pack cannot give (pack missing, not
decrypting, blob failing its id) is fetched from its next known location; only when every
location fails is the restore damaged. Sizes, links and metadata come last.

A snapshot may come from a hostile backup host. Entries the tree rules refuse
(backup/repo/tree.py: ``..``, ``/`` in a name, a name twice…) are not restored, nor anything below
them; the rest is, and the restore then fails naming the snapshot and every refused path.
Nothing is reached through a path: entries are created relative to open directory
descriptors with no symlink followed (backup/restore/beneath.py), so neither a symlink already
in the target nor one the snapshot holds can send a write elsewhere. Paths stay bytes throughout:
names are restored exactly as they were stored (NFC, NFD or neither).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from portalops.backup.repo.index import Location
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.snapshot import Snapshot
from portalops.backup.repo.tree import Node, NodeType, Refused, Tree, TreeFormatError, show_name
from portalops.backup.restore.beneath import FILE_FLAGS, Beneath, split
from portalops.backup.restore.parallel import (
    READ_AHEAD_PACKS,
    FileMeta,
    FinishRules,
    JobBlob,
    JobResult,
    RestoreJob,
    RestoreTarget,
    Workers,
    bases_of,
    readahead,
    restore_pack,
    set_metadata,
    setup_for,
    worth_workers,
    write_blobs,
)
from portalops.core.errors import BadInput, ExitCode, OpsError

# Far more entries than any source we back up holds; a restore plans every entry in memory.
MAX_ENTRIES = 10_000_000
# A real path is shorter than PATH_MAX (4096 bytes), so it has fewer than 2048 components.
MAX_DEPTH = 2048
# Blob references in all files together (about 10 TB at the chunker's 1 MiB average): a restore
# plans each one in memory, so a few kilobytes of trees listing one blob a million times over,
# reused at every level, must be refused before planning, not by running out of memory.
MAX_CONTENT_REFS = 10_000_000
REFUSED_SHOWN = 20


class RestoreError(OpsError):
    """restore into {} failed: {}"""


class UnrestorableTree(OpsError):
    """snapshot {}: {}; refused before anything was written"""

    exit_code = ExitCode.PROBLEM_FOUND  # what a (hostile) writer stored, not our failure


class EntriesRefused(OpsError):
    """snapshot {}: {} refused, not restored (everything else was restored into {}): {}"""

    exit_code = ExitCode.PROBLEM_FOUND


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
    keep_setid: bool = False  # asked for: restore set-user/group-id bits on files
    setid_dropped: int = 0
    writers: set[int] = field(default_factory=set)  # pids of the processes that wrote packs


# -- reading trees ---------------------------------------------------------------------------


@dataclass
class Trees:
    """Every distinct tree below one root, each read and verified once."""

    root: bytes
    trees: dict[bytes, Tree]

    def entries(self, prefix: bytes = b"") -> Iterator[tuple[bytes, Node | Refused]]:
        """Every entry with the path of its directory from the root, parents first; refused
        entries too (but nothing below them)."""
        stack: list[tuple[bytes, Node | Refused]] = []

        def push(tree_id: bytes, where: bytes) -> None:
            tree = self.trees[tree_id]
            items: list[Node | Refused] = [*tree.nodes, *tree.refused]
            stack.extend((where, item) for item in reversed(items))

        push(self.root, prefix)
        while stack:
            parent, item = stack.pop()
            yield parent, item
            if isinstance(item, Node) and item.type is NodeType.DIR and item.subtree is not None:
                push(item.subtree, join(parent, item.name))


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def read_trees(
    repo: Repository, root: bytes, label: str, known: dict[bytes, Tree] | None = None
) -> Trees:
    """Read every tree below ``root`` once; UnrestorableTree when they are no trees or would
    expand beyond the bounds (checked before any entry is walked). ``known``: trees already
    read (by a command that reads many snapshots), taken from there and added to it."""
    trees: dict[bytes, Tree] = {}
    stack = [root]
    while stack:
        tree_id = stack.pop()
        if tree_id in trees:
            continue
        if known is not None and tree_id in known:
            trees[tree_id] = known[tree_id]
            stack += [s for s in known[tree_id].subtrees() if s not in trees]
            continue
        try:
            tree = Tree.decode(repo.read_blob(tree_id))
        except TreeFormatError as exc:
            raise UnrestorableTree(
                label, f"tree {tree_id.hex()[:16]} is unreadable: {exc}"
            ) from None
        trees[tree_id] = tree
        if known is not None:
            known[tree_id] = tree
        stack += [s for s in tree.subtrees() if s not in trees]
    _check_bounds(trees, root, label)
    return Trees(root, trees)


def _check_bounds(trees: dict[bytes, Tree], root: bytes, label: str) -> None:
    """Entries and depth each tree expands to, memoised per tree id: linear in the number
    of distinct trees however often one is reused."""
    size: dict[bytes, int] = {}
    depth: dict[bytes, int] = {}
    refs: dict[bytes, int] = {}
    visiting: set[bytes] = set()
    stack = [(root, False)]
    while stack:
        tree_id, children_done = stack.pop()
        if tree_id in size:
            continue
        subtrees = trees[tree_id].subtrees()
        if not children_done:
            if tree_id in visiting:  # cannot happen with content-named trees; never loop
                raise UnrestorableTree(label, f"tree {tree_id.hex()[:16]} contains itself")
            visiting.add(tree_id)
            stack.append((tree_id, True))
            stack += [(s, False) for s in subtrees if s not in size]
            continue
        visiting.discard(tree_id)
        # refused entries count too: a reused tree of thousands of them expands as much
        tree = trees[tree_id]
        size[tree_id] = len(tree.nodes) + len(tree.refused) + sum(size[s] for s in subtrees)
        depth[tree_id] = 1 + max((depth[s] for s in subtrees), default=0)
        refs[tree_id] = sum(len(n.content) for n in trees[tree_id].nodes) + sum(
            refs[s] for s in subtrees
        )
        if refs[tree_id] > MAX_CONTENT_REFS:
            raise UnrestorableTree(
                label,
                f"its files name {refs[tree_id]} blobs or more, over the {MAX_CONTENT_REFS} "
                "a restore takes",
            )
        if size[tree_id] > MAX_ENTRIES:
            raise UnrestorableTree(
                label,
                f"its trees expand to {size[tree_id]} entries or more, over the "
                f"{MAX_ENTRIES} a restore takes (is one directory tree reused at every level?)",
            )
        if depth[tree_id] > MAX_DEPTH:
            raise UnrestorableTree(label, f"its directories nest more than {MAX_DEPTH} levels deep")


def walk(
    repo: Repository, tree_id: bytes, prefix: bytes = b"", label: str | None = None
) -> Iterator[tuple[bytes, Node]]:
    """Every restorable node below ``tree_id`` with its path, parents first (bounded as a
    restore is; refused entries are left out)."""
    trees = read_trees(repo, tree_id, label or f"tree {tree_id.hex()[:16]}")
    for parent, item in trees.entries(prefix):
        if isinstance(item, Node):
            yield join(parent, item.name), item


# -- planning --------------------------------------------------------------------------------


@dataclass
class _Plan:
    dirs: list[tuple[bytes, Node]] = field(default_factory=list)
    files: list[tuple[bytes, Node, int]] = field(default_factory=list)  # path, node, size
    others: list[tuple[bytes, Node]] = field(default_factory=list)
    # blob id -> every (file, offset) it fills, and its length
    uses: dict[bytes, list[tuple[bytes, int]]] = field(default_factory=lambda: defaultdict(list))
    lengths: dict[bytes, int] = field(default_factory=dict)
    links: list[tuple[bytes, bytes]] = field(default_factory=list)  # (first path, new link)
    refused: list[str] = field(default_factory=list)  # "path: why"
    finished: set[bytes] = field(default_factory=set)  # files a pack job gave size and metadata


def _selected(path: bytes, includes: list[bytes]) -> bool:
    """Inside an included path, or an ancestor directory leading to one."""
    if not includes:
        return True
    return any(
        path == inc or path.startswith(inc + b"/") or inc.startswith(path + b"/")
        for inc in includes
    )


def _plan(repo: Repository, trees: Trees, wanted: list[bytes], result: RestoreResult) -> _Plan:
    plan = _Plan()
    first_link: dict[str, bytes] = {}
    for parent, item in trees.entries():
        rel = join(parent, item.name)  # for a refused name, only to match --path
        if not _selected(rel, wanted):
            continue
        if isinstance(item, Refused):
            shown = (os.fsdecode(parent) + "/" if parent else "") + show_name(item.name)
            plan.refused.append(f"{shown}: {item.reason}")
            continue
        node = item
        if node.type is NodeType.DIR:
            plan.dirs.append((rel, node))
        elif node.type is NodeType.FILE:
            if node.link_group:
                if node.link_group in first_link:
                    plan.links.append((first_link[node.link_group], rel))
                    continue
                first_link[node.link_group] = rel
            offset = 0
            for blob in node.content:
                plan.uses[blob].append((rel, offset))
                offset += _length(repo, plan, blob, rel)
            if offset != node.size:
                result.warnings.append(
                    f"{os.fsdecode(rel)}: blobs add up to {offset} bytes, node says {node.size}"
                    " (restored as the blobs say)"
                )
            plan.files.append((rel, node, offset))
        else:
            plan.others.append((rel, node))
    return plan


def _length(repo: Repository, plan: _Plan, blob: bytes, rel: bytes) -> int:
    """A blob's length as every index states it; read and measured when they disagree."""
    known = plan.lengths.get(blob)
    if known is not None:
        return known
    locations = repo.index.locations(blob)
    if not locations:
        raise DamagedObject(
            repo.name, f"blob {blob.hex()[:16]}", f"needed by {os.fsdecode(rel)}, not in the index"
        )
    stated = {location.entry.raw_length for location in locations}
    length = stated.pop() if len(stated) == 1 else len(repo.read_blob(blob))
    plan.lengths[blob] = length
    return length


# -- restoring -------------------------------------------------------------------------------


def restore(
    repo: Repository,
    snapshot: Snapshot,
    target: Path,
    includes: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    name: str | None = None,
    keep_setid: bool = False,
) -> RestoreResult:
    """Restore ``snapshot`` (called ``name`` in messages) into ``target``.

    UnrestorableTree before anything is written when its trees are unbounded; EntriesRefused
    after everything else is restored when some entries break the tree rules."""
    started = time.monotonic()
    label = name or f"{snapshot.source} of {snapshot.time:%Y-%m-%d %H:%M:%SZ}"
    wanted = [os.fsencode(p.strip("/")) for p in includes or []]
    result = RestoreResult(target, keep_setid=keep_setid)
    with contextlib.ExitStack() as stack:
        # Workers start while the trees are read and planned, when the repository and the
        # snapshot are large enough (a small one is restored in this process).
        workers = _early_workers(repo, snapshot, stack) if not wanted else None
        plan = _plan(repo, read_trees(repo, snapshot.tree, label), wanted, result)
        if wanted and not (plan.files or plan.dirs or plan.others or plan.refused):
            raise BadInput(f"--path {', '.join(includes or [])}: not in snapshot {snapshot.source}")
        _require_space(target, sum(size for _, _, size in plan.files), label)
        repo.forget_packs()  # the trees' packs: the workers need the memory now
        _read_ahead(repo, plan)
        below, where, existed = _open_target(target)
        try:
            with below:
                _make_dirs(below, plan, result, existed)
                _fill(repo, plan, where, result, progress, workers, existed)
                stack.close()  # workers are done: their memory is returned before finishing
                _finish_files(below, plan, result)
                _finish_others(below, plan, result)
                _finish_dirs(below, plan, result)
        except OSError as exc:
            at = os.fsdecode(exc.filename) if exc.filename else str(target)
            raise RestoreError(target, f"{at}: {exc.strerror}") from None
    result.seconds = time.monotonic() - started
    if result.setid_dropped:
        result.warnings.append(
            f"{result.setid_dropped} file(s) restored without their set-user/group-id bits "
            "(--keep-setid keeps them)"
        )
    if plan.refused:
        count = len(plan.refused)
        shown = plan.refused[:REFUSED_SHOWN]
        more = f" (+{count - len(shown)} more)" if count > len(shown) else ""
        what = f"{count} entr{'y' if count == 1 else 'ies'}"
        raise EntriesRefused(label, what, target, "; ".join(shown) + more)
    return result


def _early_workers(
    repo: Repository, snapshot: Snapshot, stack: contextlib.ExitStack
) -> Workers | None:
    """Workers started before planning, when both the repository's packs and the snapshot's
    file bytes (its summary: a cheap estimate of what the restore reads, so one small snapshot
    of a large repository starts no forkserver; a wrong one only moves the decision to _fill,
    which counts the packs it will read) are enough to pay for them."""
    setup = setup_for(repo)
    if setup is None:
        return None
    records = repo.index.packs.values()
    stored = sum(r.size for r in records)
    summary_bytes = snapshot.summary.get("bytes") if isinstance(snapshot.summary, dict) else None
    if isinstance(summary_bytes, int) and not isinstance(summary_bytes, bool):
        stored = min(stored, max(summary_bytes, 0))
    if not worth_workers(len(records), stored):
        return None
    return stack.enter_context(Workers(setup))


def _read_ahead(repo: Repository, plan: _Plan) -> None:
    """Ask the kernel, from a thread (``posix_fadvise`` can block while the disk's queue is
    full), for the first packs the restore will read (in the order :func:`_fill` queues
    them) while the directories are made: a cold-cache restore reads them meanwhile. Only a
    hint: a pack wrongly guessed costs a read of it into the page cache."""
    located = repo.index.blobs
    packs = sorted({located[blob].pack for blob in plan.uses if blob in located})

    def read() -> None:
        for key in packs[:READ_AHEAD_PACKS]:
            readahead(repo, key)

    threading.Thread(target=read, name="restore-read-ahead", daemon=True).start()


def _require_space(target: Path, needed: int, label: str) -> None:
    """Refuse, before writing, a restore larger than the free space where it would land
    (a snapshot can name one blob a million times: terabytes from a few kilobytes)."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        fs = os.statvfs(existing)
    except OSError:
        return  # the restore itself will say what is wrong with the target
    free = fs.f_bavail * fs.f_frsize
    if needed > free:
        raise RestoreError(
            target,
            f"snapshot {label} holds {needed} bytes of files, more than the {free} bytes free "
            f"on the filesystem of {existing}; nothing was written",
        )


def _open_target(target: Path) -> tuple[Beneath, RestoreTarget, bool]:
    """The target's descriptor (made if needed: its own path is the caller's and may pass
    through symlinks), its identity for the workers, and whether it existed already."""
    try:
        try:
            target.mkdir(parents=True)
            existed = False
        except FileExistsError:
            existed = True
        below = Beneath.open(os.fsencode(target))
        st = os.fstat(below.root)
    except OSError as exc:
        raise RestoreError(target, exc.strerror) from None
    return below, RestoreTarget(os.fsencode(target), st.st_dev, st.st_ino), existed


def _make_dirs(below: Beneath, plan: _Plan, result: RestoreResult, existed: bool) -> None:
    """Directories, parents first. A symlink where a directory goes is replaced, never
    followed. In directories that existed before, whatever stands where a file goes and is
    not a regular file of one link (a symlink, a FIFO, a hard link to a file elsewhere) is
    removed first, so no write is redirected or blocks; a new directory is empty and needs no
    look."""
    existing = {b""} if existed else set()
    for rel, _ in plan.dirs:
        parent, name = below.parent(rel)
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                os.unlink(name, dir_fd=parent)
                os.mkdir(name, 0o700, dir_fd=parent)
            elif stat.S_ISDIR(mode):
                existing.add(rel)
            else:
                raise RestoreError(
                    result.target, f"{os.fsdecode(rel)}: something else is in the way"
                ) from None
        result.dirs += 1
    if not existing:
        return
    for rel, _, _ in plan.files:
        parent_rel, name = split(rel)
        if parent_rel not in existing:
            continue
        parent = below.dir(parent_rel)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise RestoreError(result.target, f"{os.fsdecode(rel)}: a directory is in the way")
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:  # a hard link redirects writes too
            os.unlink(name, dir_fd=parent)


def _fill(
    repo: Repository,
    plan: _Plan,
    where: RestoreTarget,
    result: RestoreResult,
    progress: Callable[[int, int], None] | None,
    workers: Workers | None,
    existed: bool,
) -> None:
    """Write every blob from its first known location; what a pack cannot give is tried at
    the blob's next location, round after round, until written or out of locations. Files
    whose blobs all come from one pack are finished by that pack's job."""
    candidates = {
        blob: iter(
            [
                loc
                for loc in repo.index.locations(blob)
                if loc.entry.raw_length == plan.lengths[blob]
            ]
        )
        for blob in plan.uses
    }
    failures: dict[bytes, list[str]] = defaultdict(list)
    todo = list(plan.uses)
    setup = setup_for(repo)
    rules = FinishRules(existed, os.geteuid() == 0, result.keep_setid)
    linked = {new for _, new in plan.links}
    first_round = True
    while todo:
        by_pack: dict[str, list[JobBlob]] = defaultdict(list)
        chosen: dict[bytes, str] = {}
        for blob in todo:
            location: Location | None = next(candidates[blob], None)
            if location is None:
                path = os.fsdecode(plan.uses[blob][0][0])
                tried = "; ".join(failures[blob]) or "no location states its length"
                raise DamagedObject(
                    repo.name, f"blob {blob.hex()[:16]}", f"needed by {path}: {tried}"
                )
            chosen[blob] = location.pack
            by_pack[location.pack].append(
                (blob, location.entry, plan.lengths[blob], plan.uses[blob])
            )
        # Retries are few: the main process finishes their files.
        finish = _finishing(plan, chosen, linked) if first_round else {}
        jobs: list[RestoreJob] = [
            (where, key, blobs, finish.get(key, []), rules, bases_of(repo, [b[1] for b in blobs]))
            for key, blobs in sorted(by_pack.items())
        ]
        outcomes: Iterable[JobResult]
        own: Workers | None = None
        if first_round and workers is None and setup is not None:
            stored = sum(repo.index.packs[k].size for k in by_pack if k in repo.index.packs)
            if worth_workers(len(jobs), stored):
                workers = own = Workers(setup)
        if first_round and workers is not None:
            outcomes = workers.map(
                restore_pack, jobs, lambda job: readahead(repo, job[1]), ahead=READ_AHEAD_PACKS
            )
        else:  # small restores and retries: this process does them
            outcomes = (write_blobs(repo, job) for job in jobs)
        todo = []
        try:
            for outcome in outcomes:
                _account(outcome, plan, result, failures, todo)
                if progress:
                    progress(result.packs, result.bytes)
        except BaseException:
            if own is not None:
                own.close(wait=False)  # the error is reported without waiting for them
            raise
        if own is not None:
            own.close()
        first_round = False


def _finishing(
    plan: _Plan, chosen: dict[bytes, str], linked: set[bytes]
) -> dict[str, list[FileMeta]]:
    """The files each pack job finishes: those whose every blob it writes."""
    finish: dict[str, list[FileMeta]] = defaultdict(list)
    for rel, node, size in plan.files:
        content = node.content
        if not content or rel in linked:
            continue
        pack = chosen[content[0]]
        if len(content) == 1 or all(chosen[blob] == pack for blob in content):
            finish[pack].append(
                FileMeta(rel, size, len(content), node.uid, node.gid, node.mode, node.mtime_ns)
            )
    return finish


def _account(
    outcome: JobResult,
    plan: _Plan,
    result: RestoreResult,
    failures: dict[bytes, list[str]],
    todo: list[bytes],
) -> None:
    """Count one pack job's outcome; its failed blobs go to the next round."""
    key, failed = outcome.pack, outcome.failed
    result.packs += 1
    result.writers.add(outcome.pid)
    result.verified_blobs += outcome.blobs
    result.bytes += outcome.written
    result.setid_dropped += outcome.setid_dropped
    result.warnings += outcome.warnings
    plan.finished.update(outcome.finished)
    for blob, why in failed:
        failures[blob].append(f"{key}: {why}")
        todo.append(blob)
    if failed:
        result.warnings.append(
            f"{key}: {len(failed)} blob(s) not usable there ({failed[0][1]}); "
            "taken from the other locations the index gives"
        )


def _set_metadata(fd: int, rel: bytes, node: Node, result: RestoreResult) -> None:
    """Owner (as root), mode and mtime through the entry's own descriptor."""
    rules = FinishRules(False, os.geteuid() == 0, result.keep_setid)
    meta = FileMeta(rel, 0, 0, node.uid, node.gid, node.mode, node.mtime_ns)
    done = JobResult("")
    set_metadata(fd, meta, rules, done, is_dir=stat.S_ISDIR(os.fstat(fd).st_mode))
    result.warnings += done.warnings
    result.setid_dropped += done.setid_dropped


def _finish_files(below: Beneath, plan: _Plan, result: RestoreResult) -> None:
    """Exact sizes (creating empty files; a file that existed in the target may have been
    longer) and metadata, then hard links."""
    linked = {new for _, new in plan.links}
    for rel, node, size in plan.files:
        if rel in plan.finished:
            result.files += 1
            continue
        if rel in linked:
            continue
        parent, name = below.parent(rel)
        fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            os.ftruncate(fd, size)
            _set_metadata(fd, rel, node, result)
        finally:
            os.close(fd)
        result.files += 1
    for first, new in plan.links:
        first_parent, first_name = split(first)
        source = os.dup(below.dir(first_parent))
        try:
            parent, name = below.parent(new)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
            os.link(first_name, name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source)
        result.files += 1


def _finish_others(below: Beneath, plan: _Plan, result: RestoreResult) -> None:
    """Symlinks (made, never followed) and FIFOs, replacing whatever non-directory is there."""
    for rel, node in plan.others:
        parent, name = below.parent(rel)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        if node.type is NodeType.SYMLINK and node.target is not None:
            os.symlink(node.target, name, dir_fd=parent)
            if os.geteuid() == 0:
                try:
                    os.chown(name, node.uid, node.gid, dir_fd=parent, follow_symlinks=False)
                except OSError as exc:
                    result.warnings.append(f"{os.fsdecode(rel)}: cannot set owner: {exc.strerror}")
            os.utime(name, ns=(node.mtime_ns, node.mtime_ns), dir_fd=parent, follow_symlinks=False)
            result.symlinks += 1
        elif node.type is NodeType.FIFO:
            os.mkfifo(name, 0o600, dir_fd=parent)
            # read-only and non-blocking: opening a FIFO so returns at once
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=parent)
            try:
                _set_metadata(fd, rel, node, result)
            finally:
                os.close(fd)


def _finish_dirs(below: Beneath, plan: _Plan, result: RestoreResult) -> None:
    """Directory metadata last, deepest first: creating their entries changed their mtimes,
    and a read-only directory must not stop the restore of what is below it."""
    for rel, node in reversed(plan.dirs):
        _set_metadata(below.dir(rel), rel, node, result)
