"""``ops backup run``: every selected source, read once, into every selected repository.

A source is read (a database dumped) once per run; its blobs are named and compressed once
and go to every repository, each of which deduplicates against its own index, and fills,
encrypts and stores its own packs, under its own shared lock (``BlobWriter`` with several
destinations). Each repository's snapshot is written last, with the same tree, stats and run
id. A repository that fails (storage, lock) stops being written and the others go on; a
source that fails writes no snapshot and the others still run.

The index a backup deduplicates against is read after the lock is taken, for each source: a
prune that ran before (while no lock was held) may have deleted blobs an index read earlier
still names, and a backup that reused them would write a snapshot of missing data. The lock
is checked once more right before the snapshot is written, for the same reason.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from portalops import __version__
from portalops.backup.config import Repository as RepoSettings
from portalops.backup.jobs.access import Keys, open_repository
from portalops.backup.repo.chunker import Chunker
from portalops.backup.repo.keys import RecipientsUntrusted
from portalops.backup.repo.locks import Lock
from portalops.backup.repo.repository import Repository
from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
from portalops.backup.repo.writer import BlobWriter, Copy, Destination
from portalops.backup.sources import Source, store
from portalops.core.errors import ExitCode, OpsError

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]
# The moments between steps of one source's backup, for tests to act in: before the lock is
# taken, before the index is read (lock held), before the snapshot is written (data stored).
Step = Literal["lock", "index", "snapshot"]
StepHook = Callable[[Step, str], None]
LOCK_WAIT = 600.0  # a prune in progress gets this long to finish before the backup gives up
LOCK_CONFIRM_EVERY = 10.0  # seconds between asking the storage for the lock, pack after pack


@dataclass
class SourceResult:
    source: str
    category: str
    repository: str
    ok: bool
    snapshot: str | None = None  # full id
    time: datetime | None = None
    files: int = 0
    dirs: int = 0
    bytes: int = 0  # size of the source
    bytes_added: int = 0  # stored (compressed, before encryption) bytes of new blobs
    raw_bytes_added: int = 0
    blobs_added: int = 0
    packs_written: int = 0
    duration: float = 0.0
    vanished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    exit_code: ExitCode = ExitCode.OK  # why it failed: 1 the source, 3 the repository

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "category": self.category,
            "repository": self.repository,
            "status": "ok" if self.ok else "failed",
            "snapshot": self.snapshot,
            "time": self.time,
            "files": self.files,
            "dirs": self.dirs,
            "bytes": self.bytes,
            "bytes_added": self.bytes_added,
            "raw_bytes_added": self.raw_bytes_added,
            "blobs_added": self.blobs_added,
            "packs_written": self.packs_written,
            "duration_seconds": round(self.duration, 3),
            "vanished": self.vanished,
            "skipped": self.skipped,
            "error": self.error,
        }


def run_backup(
    sources: list[Source],
    repositories: list[RepoSettings],
    keys: Keys,
    state_dir: Path,
    progress: ProgressFactory | None = None,
    on_step: StepHook | None = None,
) -> list[SourceResult]:
    """Back up each source, read once, into each repository; one result per source and
    repository, a source's results together, in config order. Failures are results, not
    exceptions. ``on_step`` is called with the step about to happen and the source's name."""
    step = on_step or _no_hook
    run = secrets.token_hex(16)  # in every snapshot this run writes
    opened: list[Repository] = []
    unopened: dict[str, OpsError] = {}
    for settings, repo in zip(
        repositories, _side_by_side(partial(open_repository, keys=keys), repositories), strict=True
    ):
        if isinstance(repo, OpsError):
            unopened[settings.name] = repo
        elif repo.writer.untrusted is not None:  # a retired writer key: refused before reading
            unopened[settings.name] = RecipientsUntrusted(repo.writer.untrusted)
        else:
            opened.append(repo)
    results: list[SourceResult] = []
    for source in sources:
        done: dict[str, SourceResult] = {}
        for group in _read_together(opened):
            done |= _backup_source(group, source, state_dir, progress, step, run)
        for settings in repositories:
            name = settings.name
            results.append(done[name] if name in done else _failed(source, name, unopened[name]))
    return results


def _read_together(repositories: list[Repository]) -> list[list[Repository]]:
    """The repositories one read of a source can feed: those that cut and name blobs alike
    (same id-key, chunker seed and chunker sizes). A host's repositories share its writer
    key, so that is all of them, unless a repository was opened with the identity alone or
    its config states other chunker sizes."""
    groups: dict[tuple[bytes, int, str], list[Repository]] = {}
    for repo in repositories:
        key = (
            repo.writer.id_key,
            repo.writer.chunker_seed,
            json.dumps(repo.config.chunker, sort_keys=True),
        )
        groups.setdefault(key, []).append(repo)
    return list(groups.values())


def _backup_source(
    repositories: list[Repository],
    source: Source,
    state_dir: Path,
    progress: ProgressFactory | None,
    step: StepHook,
    run: str,
) -> dict[str, SourceResult]:
    """One read of ``source`` into ``repositories``, each under its own shared lock."""
    started = time.monotonic()
    results: dict[str, SourceResult] = {}
    locked: list[tuple[Repository, Lock]] = []
    step("lock", source.name)
    try:
        # One after another, in this thread: a lock held is in ``locked`` at once (so released
        # whatever happens next), and a stop request interrupts a wait for a prune to finish.
        for repo in repositories:
            try:
                lock = Lock.acquire(
                    repo.storage, exclusive=False, command="backup run", wait=LOCK_WAIT
                )
            except OpsError as exc:
                results[repo.name] = _failed(source, repo.name, exc)
                continue
            locked.append((repo, lock))
        step("index", source.name)
        # Only now: no prune can run from here on while we hold the lock.
        loaded = _side_by_side(lambda held: held[0].load_index(), locked)
        reading: list[tuple[Repository, Lock]] = []
        for (repo, lock), index in zip(locked, loaded, strict=True):
            if isinstance(index, OpsError):
                results[repo.name] = _failed(source, repo.name, index)
            else:
                reading.append((repo, lock))
        if reading:
            results |= _backup_one(reading, source, state_dir, progress, step, run)
    finally:
        for held in locked:
            _release(held)
    duration = time.monotonic() - started
    for result in results.values():
        result.duration = duration
        if result.ok:  # failures were logged, at ERROR, by _failed
            log.info(
                "backup of %s into %s: snapshot %s, %d files, %d bytes added in %.1fs",
                source.name, result.repository, (result.snapshot or "")[:8], result.files,
                result.bytes_added, result.duration,
            )  # fmt: skip
    return results


def _write_snapshot(job: tuple[Repository, Lock, Snapshot]) -> SnapshotRef:
    repo, lock, snapshot = job
    # The data is stored and indexed; a prune must not have run since the index was read
    # (its blobs would be gone), so the lock must still be ours, in storage too.
    lock.check()
    return repo.write_snapshot(snapshot)  # last: only now does the backup exist


def _release(held: tuple[Repository, Lock]) -> None:
    """Delete the lock; if that fails the backup still stands (the lock goes stale once it
    is no longer refreshed, and a prune waits for it until then): a warning, not a failure."""
    repo, lock = held
    try:
        lock.release()
    except OpsError as exc:
        log.warning("could not remove the lock in %s (stale soon): %s", repo.name, exc)


T = TypeVar("T")
R = TypeVar("R")


def _side_by_side(work: Callable[[T], R], items: Iterable[T]) -> list[R | OpsError]:
    """``work`` done to each item at once, one thread each (each mostly waits on its own
    storage: a local disk and S3 no longer take turns), results in the items' order; an
    OpsError comes back in its item's place, anything else is raised."""

    def one(item: T) -> R | OpsError:
        try:
            return work(item)
        except OpsError as exc:
            return exc

    todo = list(items)
    if len(todo) < 2:
        return [one(item) for item in todo]
    with ThreadPoolExecutor(len(todo), thread_name_prefix="repository") as pool:
        return list(pool.map(one, todo))


def _no_hook(step: Step, source: str) -> None:
    pass


def _failed(source: Source, repository: str, error: OpsError | OSError) -> SourceResult:
    if isinstance(error, OSError):  # local trouble (state dir full...)
        error = OpsError(error.strerror or str(error))
    log.error("backup of %s into %s failed: %s", source.name, repository, error)
    return SourceResult(
        source.name,
        source.category.value,
        repository,
        ok=False,
        error=str(error),
        exit_code=error.exit_code,
    )


def _backup_one(
    reading: list[tuple[Repository, Lock]],
    source: Source,
    state_dir: Path,
    progress: ProgressFactory | None,
    step: StepHook,
    run: str,
) -> dict[str, SourceResult]:
    time_started = datetime.now(UTC)
    # Each sealed pack checks the lock is still ours (asking the storage every 10 s at
    # most), so a backup whose lock was removed stops soon; the check before the snapshot
    # asks always, and is what keeps a snapshot from naming what a prune removed.
    writer = BlobWriter(
        *(Destination(repo, on_seal=partial(lock.check, confirmed_within=LOCK_CONFIRM_EVERY))
          for repo, lock in reading)
    )  # fmt: skip
    first = reading[0][0]
    chunker = Chunker(first.writer.chunker_seed, first.config.chunker)
    names = ", ".join(repo.name for repo, _ in reading)
    report = progress(f"{source.name} → {names}") if progress else None
    # The files cache names blobs, which every repository read together names alike; a row
    # is used only for blobs every one of them has indexed (see Archiver._holds).
    cache_file = state_dir / "cache" / first.config.id / f"{source.name}.sqlite"
    try:
        stored = store(source, writer, chunker, cache_file, report)
    except (OpsError, OSError) as exc:  # the source failed, or every repository did
        return {c.repo.name: _failed(source, c.repo.name, c.error or exc) for c in writer.copies}
    counts = stored.counts
    step("snapshot", source.name)
    results: dict[str, SourceResult] = {}
    writing: list[tuple[Repository, Lock, Snapshot]] = []
    written_by: list[Copy] = []
    for copy, (repo, lock) in zip(writer.copies, reading, strict=True):
        if copy.error is not None:
            results[repo.name] = _failed(source, repo.name, copy.error)
            continue
        summary = {
            **counts,
            "bytes_added": copy.bytes_added,
            "raw_bytes_added": copy.raw_bytes_added,
            "blobs_added": copy.blobs_added,
        }
        snapshot = Snapshot(
            source=source.name,
            category=source.category.value,
            host=socket.gethostname(),
            time=time_started,
            tree=stored.root,
            paths=stored.paths,
            tool=f"portal-ops {__version__}",
            summary=summary,
            stats=stored.stats,
            run=run,
        )
        writing.append((repo, lock, snapshot))
        written_by.append(copy)
    written = _side_by_side(_write_snapshot, writing)
    for (repo, _, _), copy, ref in zip(writing, written_by, written, strict=True):
        if isinstance(ref, OpsError):
            results[repo.name] = _failed(source, repo.name, ref)
            continue
        results[repo.name] = SourceResult(
            source=source.name,
            category=source.category.value,
            repository=repo.name,
            ok=True,
            snapshot=ref.id,
            time=ref.time,
            files=int(counts["files"]),
            dirs=int(counts["dirs"]),
            bytes=int(counts["bytes"]),
            bytes_added=copy.bytes_added,
            raw_bytes_added=copy.raw_bytes_added,
            blobs_added=copy.blobs_added,
            packs_written=copy.packs_written,
            vanished=stored.vanished,
            skipped=stored.skipped,
        )
    if stored.on_success is not None and any(r.ok for r in results.values()):
        stored.on_success()
    return results
