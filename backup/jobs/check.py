"""``ops backup check``: is every snapshot restorable from what the repository holds?

Structure: every index object authentic, every indexed pack present at its indexed size, and
(with the identity) every snapshot's trees and data blobs indexed. ``--read-data``: packs are
downloaded, decrypted and every blob checked against its id. Damage is reported by pack and
by the snapshots and file paths it touches. Packs no index names are leftovers of interrupted
runs: harmless, and ``forget --prune`` removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from portalops.backup.repo.keys import IdentityMissing
from portalops.backup.repo.locks import Lock
from portalops.backup.repo.pack import MAX_PACK_SIZE, BlobEntry
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.snapshot import CLOCK_SKEW_ALLOWANCE, SnapshotRef
from portalops.backup.repo.tree import NodeType, show_name
from portalops.backup.restore.parallel import (
    READ_AHEAD_PACKS,
    Workers,
    bases_of,
    readahead,
    setup_for,
    verify_pack,
    worth_workers,
)
from portalops.core.atomic import write_atomic

PATHS_PER_PROBLEM = 20


@dataclass
class Problem:
    obj: str  # the pack, index or snapshot object at fault
    what: str
    snapshots: list[str] = field(default_factory=list)  # "source@shortid"
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "object": self.obj,
            "problem": self.what,
            "snapshots": self.snapshots,
            "paths": self.paths,
        }


@dataclass
class CheckResult:
    repository: str
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    packs_read: int = 0
    trees_checked: bool = False
    problems: list[Problem] = field(default_factory=list)
    unreferenced_packs: list[str] = field(default_factory=list)  # harmless
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {
            "repository": self.repository,
            "ok": self.ok,
            "snapshots": self.snapshots,
            "packs": self.packs,
            "blobs": self.blobs,
            "packs_read": self.packs_read,
            "trees_checked": self.trees_checked,
            "problems": [p.to_json() for p in self.problems],
            "unreferenced_packs": self.unreferenced_packs,
            "notes": self.notes,
        }


def check_shared(
    repo: Repository,
    read_data: float | None,
    state_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> CheckResult:
    """:func:`check` under a shared lock (waiting up to a minute for an exclusive one, a
    prune, to finish): backups may run meanwhile, a prune may not delete under it."""
    with Lock.acquire(repo.storage, exclusive=False, command="backup check", wait=60):
        return check(repo, read_data, state_dir, progress)


def check(
    repo: Repository,
    read_data: float | None,
    state_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> CheckResult:
    """``read_data``: None = structure only; a percentage in (0, 100] of packs to read."""
    with contextlib.ExitStack() as stack:
        return _check(repo, read_data, state_dir, progress, stack)


def _check(
    repo: Repository,
    read_data: float | None,
    state_dir: Path,
    progress: Callable[[int, int], None] | None,
    stack: contextlib.ExitStack,
) -> CheckResult:
    result = CheckResult(repo.name)
    index = repo.load_index()
    # Workers (when the packs to read are enough to pay for them) start now and come up
    # while this process lists the packs and walks the trees.
    workers = _start_workers(repo, read_data, stack)
    for problem in repo.index_problems:
        key, _, what = problem.partition(": ")
        result.problems.append(Problem(key, what))
    stored = {info.key: info.size for info in repo.storage.list("packs/")}
    damaged: dict[str, str] = {}
    for key, record in index.packs.items():
        size = stored.get(key)
        if size is None:
            damaged[key] = "pack is missing"
        elif size != record.size:
            damaged[key] = f"pack is {size} bytes, the index says {record.size}"
        elif size > MAX_PACK_SIZE:
            damaged[key] = f"pack is {size} bytes, more than any pack can be ({MAX_PACK_SIZE})"
    result.packs = len(index.packs)
    result.blobs = len(index.blobs)
    result.unreferenced_packs = sorted(set(stored) - set(index.packs))
    listing = repo.snapshot_listing()
    # With workers, the packs are queued (and read ahead) now and verified while this
    # process takes the first tree pass, which needs no pack verified.
    verified = (
        _verify_packs(repo, read_data, state_dir, damaged, workers)
        if read_data is not None
        else None
    )
    missing = (
        _any_blob_missing(repo, listing[0], result)
        if workers is not None and repo.identity is not None
        else None
    )
    repo.forget_packs()  # the trees' packs: the workers need the memory now

    if verified is not None:
        _read_packs(verified, damaged, result, progress)
    stack.close()  # workers are done

    for key in sorted(index.conflicting_packs):
        result.problems.append(
            Problem(key, "described differently by two index objects ('ops backup repair-index')")
        )
    for blob in sorted(index.crowded):
        key = f"blob {blob.hex()[:16]}"
        result.problems.append(Problem(key, "said to be in too many places ('repair-index')"))
    refs = _listed_snapshots(listing, result)
    if repo.identity is None:
        result.notes.append(
            "snapshots and trees were not walked: that needs backup.identity; "
            "packs and index were checked"
        )
        result.problems += [Problem(key, what) for key, what in sorted(damaged.items())]
        return result
    result.trees_checked = True
    result.problems += [Problem(key, what) for key, what in repo.key_problems()]
    # A first pass reads each distinct tree once. Only when something is wrong does a second
    # pass walk every snapshot in full, to name all the snapshots and paths it touches.
    if missing is None:
        missing = _any_blob_missing(repo, refs, result)
    if damaged or missing:
        _walk_snapshots(repo, refs, damaged, result)
    return result


def _start_workers(
    repo: Repository, read_data: float | None, stack: contextlib.ExitStack
) -> Workers | None:
    """Workers for ``--read-data`` when the packs it would read are worth them."""
    setup = setup_for(repo)
    if read_data is None or setup is None:
        return None
    records = repo.index.packs.values()
    share = min(read_data, 100) / 100
    if not worth_workers(int(len(records) * share), int(sum(r.size for r in records) * share)):
        return None
    return stack.enter_context(Workers(setup))


def _listed_snapshots(
    listing: tuple[list[SnapshotRef], list[str]], result: CheckResult
) -> list[SnapshotRef]:
    """The snapshots, after naming what the listing alone shows to be wrong: objects that
    are no snapshot's name, and snapshots stated later than the storage's time allows."""
    refs, strange = listing
    result.snapshots = len(refs)
    for key in strange:
        result.problems.append(Problem(key, "not a snapshot name (snapshots/<source>/<time>-<id>)"))
    for ref in refs:
        if ref.future_dated and ref.stored is not None:
            result.problems.append(
                Problem(
                    ref.key,
                    f"stated time {ref.time:%Y-%m-%d %H:%M:%SZ} is later than the storage's time "
                    f"for the object, {ref.stored:%Y-%m-%d %H:%M:%SZ}, allows (skew allowance "
                    f"{CLOCK_SKEW_ALLOWANCE.total_seconds() / 60:.0f} min): forged, or written "
                    "by a host whose clock runs ahead; never 'latest', drilled or counted by "
                    "retention",
                    [f"{ref.source}@{ref.short_id}"],
                )
            )
    return refs


def _verify_packs(
    repo: Repository,
    read_data: float,
    state_dir: Path,
    damaged: dict[str, str],
    workers: Workers | None,
) -> Iterator[tuple[str, list[str]]]:
    """Download, decrypt and verify (a rotating share of) the packs, on every core: with
    workers, the first packs are queued and read ahead before this returns."""
    if repo.identity is None:
        raise IdentityMissing("the config")
    index = repo.index
    keys = _select_packs(repo, sorted(set(index.packs) - set(damaged)), read_data, state_dir)
    records = [index.packs[key] for key in keys]
    if workers is not None:
        return workers.map(
            verify_pack,
            [(record, bases_of(repo, record.blobs)) for record in records],
            lambda job: readahead(repo, job[0].key),
            ahead=READ_AHEAD_PACKS,
        )
    # a small repository: starting workers would cost more than the reading
    return ((r.key, repo.verify_pack(r.key, r)) for r in records)


def _read_packs(
    verified: Iterator[tuple[str, list[str]]],
    damaged: dict[str, str],
    result: CheckResult,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Count the verified packs and name the damaged ones."""
    for key, problems in verified:
        result.packs_read += 1
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            damaged[key] = "; ".join(problems[:3]) + more
        if progress:
            progress(result.packs_read, 0)


def _any_blob_missing(repo: Repository, refs: list[SnapshotRef], result: CheckResult) -> bool:
    seen: set[bytes] = set()
    for ref in refs:
        try:
            stack = [repo.read_snapshot(ref).tree]
        except (DamagedObject, ValueError, KeyError):
            return True
        while stack:
            tree_id = stack.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            if tree_id not in repo.index:
                return True
            try:
                tree = repo.read_tree(tree_id)
            except (DamagedObject, ValueError, KeyError):
                return True
            if tree.refused:
                return True
            for node in tree:
                if not all(_readable(repo, blob) for blob in node.content):
                    return True
                if node.type is NodeType.DIR and node.subtree is not None:
                    stack.append(node.subtree)
    return False


def _readable(repo: Repository, blob: bytes) -> bool:
    """In the index, and if a delta, its bases too, whole."""
    location = repo.index.get(blob)
    return location is not None and _missing_base(repo, location.entry) is None


def _missing_base(repo: Repository, entry: BlobEntry) -> bytes | None:
    """A delta's first base no index holds whole (a delta is read through its bases)."""
    return next((base for base in entry.bases if not repo.base_locations(base)), None)


def _walk_snapshots(
    repo: Repository, refs: list[SnapshotRef], damaged: dict[str, str], result: CheckResult
) -> None:
    """Attribute damage to snapshots and paths; find blobs no index holds."""
    touched: dict[str, Problem] = {key: Problem(key, what) for key, what in damaged.items()}
    missing_blobs: dict[str, Problem] = {}

    def note(problem: Problem, label: str, path: str | None) -> None:
        if label not in problem.snapshots:
            problem.snapshots.append(label)
        if (
            path is not None
            and path not in problem.paths
            and len(problem.paths) < PATHS_PER_PROBLEM
        ):
            problem.paths.append(path)

    def blob_problem(blob: bytes) -> Problem | None:
        location = repo.index.get(blob)
        if location is None:
            key = f"blob {blob.hex()[:16]}"
            return missing_blobs.setdefault(key, Problem(key, "blob is in no index"))
        if (base := _missing_base(repo, location.entry)) is not None:
            key = f"blob {blob.hex()[:16]}"
            what = f"a delta whose base {base.hex()[:16]} is in no index as a whole blob"
            return missing_blobs.setdefault(key, Problem(key, what))
        return touched.get(location.pack)

    for ref in refs:
        label = f"{ref.source}@{ref.short_id}"
        try:
            snapshot = repo.read_snapshot(ref)
        except (DamagedObject, ValueError, KeyError) as exc:
            result.problems.append(Problem(ref.key, f"snapshot unreadable: {exc}", [label]))
            continue
        stack: list[tuple[bytes, str]] = [(snapshot.tree, "/")]
        seen: set[bytes] = set()
        while stack:
            tree_id, where = stack.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            problem = blob_problem(tree_id)
            if problem is not None:
                note(problem, label, where)
                continue
            try:
                tree = repo.read_tree(tree_id)
            except (DamagedObject, ValueError, KeyError) as exc:
                location = repo.index.get(tree_id)
                key = location.pack if location else f"blob {tree_id.hex()[:16]}"
                note(touched.setdefault(key, Problem(key, f"tree unreadable: {exc}")), label, where)
                continue
            if tree.refused:  # names a restore will not create (backup/repo/tree.py)
                key = f"tree {tree_id.hex()[:16]}"
                what = "entries a restore refuses: " + "; ".join(
                    f"{show_name(r.name)}: {r.reason}" for r in tree.refused
                )
                note(touched.setdefault(key, Problem(key, what)), label, where)
            for node in tree:
                path = os.path.join(where, node.display_name)
                if node.type is NodeType.DIR and node.subtree is not None:
                    stack.append((node.subtree, path))
                for blob in node.content:
                    problem = blob_problem(blob)
                    if problem is not None:
                        note(problem, label, path)
    result.problems += [p for p in touched.values()] + list(missing_blobs.values())


def _select_packs(repo: Repository, packs: list[str], percent: float, state_dir: Path) -> list[str]:
    """All packs, or a rotating window of ``percent`` of them: run k reads window k, so
    repeated runs cover every pack."""
    if percent >= 100 or not packs:
        return packs
    state_file = state_dir / "check" / f"{repo.config.id}.json"
    try:
        window = int(json.loads(state_file.read_text())["next_window"])
    except (OSError, ValueError, KeyError, TypeError):
        window = 0
    windows = max(1, math.ceil(100 / percent))
    # A keyed order spreads each window over old and new packs alike.
    ordered = sorted(
        packs, key=lambda k: hashlib.sha256(repo.config.id.encode() + k.encode()).digest()
    )
    chosen = [k for i, k in enumerate(ordered) if i % windows == window % windows]
    state_file.parent.mkdir(parents=True, exist_ok=True)
    doc = {"next_window": (window + 1) % windows, "windows": windows}
    write_atomic(state_file, json.dumps(doc).encode())
    return chosen
