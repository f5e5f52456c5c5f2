"""``ops backup run``: every selected source into every selected repository.

Per repository, a source is read, chunked and stored under a shared lock; its snapshot is
written last. A source that fails writes no snapshot and the others still run.

The index a backup deduplicates against is read after the lock is taken, for each source: a
prune that ran before (while no lock was held) may have deleted blobs an index read earlier
still names, and a backup that reused them would write a snapshot of missing data. The lock
is checked once more right before the snapshot is written, for the same reason.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from portalops import __version__
from portalops.backup.config import Repository as RepoSettings
from portalops.backup.jobs.access import Keys, open_repository
from portalops.backup.repo.chunker import Chunker
from portalops.backup.repo.locks import Lock
from portalops.backup.repo.repository import Repository
from portalops.backup.repo.snapshot import Snapshot
from portalops.backup.repo.writer import BlobWriter
from portalops.backup.sources import Source, store
from portalops.core.errors import ExitCode, OpsError

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]
# The moments between steps of one source's backup, for tests to act in: before the lock is
# taken, before the index is read (lock held), before the snapshot is written (data stored).
Step = Literal["lock", "index", "snapshot"]
StepHook = Callable[[Step, str], None]
LOCK_WAIT = 600.0  # a prune in progress gets this long to finish before the backup gives up


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
    """Back up each source into each repository; failures are results, not exceptions,
    except for the problems that stop everything (no writer key). ``on_step`` is called
    with the step about to happen and the source's name."""
    step = on_step or _no_hook
    results: list[SourceResult] = []
    for repo_settings in repositories:
        try:
            repo = open_repository(repo_settings, keys)
        except OpsError as exc:
            results += [_failed(s, repo_settings.name, exc) for s in sources]
            continue
        for source in sources:
            started = time.monotonic()
            try:
                step("lock", source.name)
                with Lock.acquire(
                    repo.storage, exclusive=False, command="backup run", wait=LOCK_WAIT
                ) as lock:
                    step("index", source.name)
                    # Only now: no prune can run from here on while the lock is ours.
                    repo.load_index()
                    result = _backup_one(repo, source, state_dir, progress, lock, step)
            except OpsError as exc:
                result = _failed(source, repo.name, exc)
            except OSError as exc:  # local trouble (state dir full...): this source only
                result = _failed(source, repo.name, OpsError(exc.strerror or str(exc)))
            result.duration = time.monotonic() - started
            if result.ok:  # failures were logged, at ERROR, by _failed
                log.info(
                    "backup of %s into %s: snapshot %s, %d files, %d bytes added in %.1fs",
                    source.name, repo.name, (result.snapshot or "")[:8], result.files,
                    result.bytes_added, result.duration,
                )  # fmt: skip
            results.append(result)
    return results


def _no_hook(step: Step, source: str) -> None:
    pass


def _failed(source: Source, repository: str, error: OpsError) -> SourceResult:
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
    repo: Repository,
    source: Source,
    state_dir: Path,
    progress: ProgressFactory | None,
    lock: Lock,
    step: StepHook,
) -> SourceResult:
    time_started = datetime.now(UTC)
    # Each sealed pack checks the lock is still ours: a backup must not run on while a
    # prune may think it is gone.
    writer = BlobWriter(repo, on_seal=lock.check)
    chunker = Chunker(repo.writer.chunker_seed, repo.config.chunker)
    report = progress(f"{source.name} → {repo.name}") if progress else None
    cache_file = state_dir / "cache" / repo.config.id / f"{source.name}.sqlite"
    stored = store(source, writer, chunker, cache_file, report)
    counts = stored.counts
    snapshot = Snapshot(
        source=source.name,
        category=source.category.value,
        host=socket.gethostname(),
        time=time_started,
        tree=stored.root,
        paths=stored.paths,
        tool=f"portal-ops {__version__}",
        summary={
            **counts,
            "bytes_added": writer.bytes_added,
            "raw_bytes_added": writer.raw_bytes_added,
            "blobs_added": writer.blobs_added,
        },
        stats=stored.stats,
    )
    step("snapshot", source.name)
    # The data is stored and indexed; a prune must not have run since the index was read
    # (its blobs would be gone), so the lock must still be ours, in storage too.
    lock.check()
    ref = repo.write_snapshot(snapshot)  # last: only now does the backup exist
    if stored.on_success is not None:
        stored.on_success()
    return SourceResult(
        source=source.name,
        category=source.category.value,
        repository=repo.name,
        ok=True,
        snapshot=ref.id,
        time=ref.time,
        files=int(counts["files"]),
        dirs=int(counts["dirs"]),
        bytes=int(counts["bytes"]),
        bytes_added=writer.bytes_added,
        raw_bytes_added=writer.raw_bytes_added,
        blobs_added=writer.blobs_added,
        packs_written=writer.packs_written,
        vanished=stored.vanished,
        skipped=stored.skipped,
    )
