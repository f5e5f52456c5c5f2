"""Pack work on every core: decrypting (age holds the GIL), decompressing and hashing.

Restores and ``check --read-data`` hand whole packs to worker processes; each worker opens
its own storage connection and keys once, then fetches, decrypts and verifies packs, and for
restores writes blobs straight into the files the main process created. The main process only
plans and collects results.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from backup.backends import open_storage
from backup.index import PackRecord
from backup.keys import Identity, WriterKey
from backup.pack import BlobEntry
from backup.repository import Repository

# Below this many packs, starting workers costs more than it saves.
MIN_PACKS = 3


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to open the repository itself (sent once, through a pipe)."""

    storage: Any  # a pickled RepositoryLike (the repository's settings)
    id_key: bytes
    chunker_seed: int
    recipients: tuple[str, ...]
    identity: str  # the age secret key, never written anywhere by the worker


_repo: Repository | None = None


def _init(setup: WorkerSetup) -> None:
    global _repo  # noqa: PLW0603 - one repository handle per worker process
    storage = open_storage(setup.storage)
    writer = WriterKey(setup.id_key, setup.chunker_seed, setup.recipients)
    identity = Identity.from_string(setup.identity)
    _repo = Repository(storage, Repository.read_config(storage), writer, identity)


def _worker_repo() -> Repository:
    if _repo is None:
        raise RuntimeError("worker not initialised")
    return _repo


# A restore job: for one pack, each blob with its entry and every (path, offset) it fills.
RestoreJob = tuple[str, list[tuple[bytes, BlobEntry, list[tuple[bytes, int]]]]]


def restore_pack(job: RestoreJob) -> tuple[int, int]:
    """Write one pack's blobs into place; return (blobs verified, bytes written)."""
    return write_blobs(_worker_repo(), job)


def write_blobs(repo: Repository, job: RestoreJob) -> tuple[int, int]:
    key, blobs = job
    plaintext = repo.decrypt_pack(key, repo.fetch_pack(key))
    written = 0
    for blob_id, entry, uses in blobs:
        data = repo.unpack_blob(key, plaintext, blob_id, entry)  # bounded, checked by id
        for path, offset in uses:
            # Created here, not beforehand: the main process need not touch every file twice.
            # O_NOFOLLOW: a symlink planted in the target must not redirect the write.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
            written += len(data)
    return len(blobs), written


def verify_pack(record: PackRecord) -> tuple[str, list[str]]:
    return record.key, _worker_repo().verify_pack(record.key, record)


def setup_for(repo: Repository) -> WorkerSetup | None:
    """None when workers cannot open this repository themselves (no settings or identity)."""
    if repo.identity is None or repo.settings is None:
        return None
    return WorkerSetup(
        repo.settings,
        repo.writer.id_key,
        repo.writer.chunker_seed,
        repo.writer.recipients,
        repo.identity.to_string(),
    )


def run_parallel(
    setup: WorkerSetup,
    func: Callable[[Any], Any],
    jobs: Iterable[Any],
    workers: int | None = None,
) -> Iterator[Any]:
    """Results of ``func`` over ``jobs`` in completion order, at most 2 jobs queued per
    worker (memory stays bounded however many packs there are)."""
    count = workers or os.cpu_count() or 1
    # forkserver: workers start from a clean process, not a copy of one with threads running
    # (progress bars), which fork() would copy mid-lock.
    context = multiprocessing.get_context("forkserver")
    # The server imports these once; each worker forked from it starts warm.
    context.set_forkserver_preload(["backup.parallel"])
    with ProcessPoolExecutor(
        count, mp_context=context, initializer=_init, initargs=(setup,)
    ) as pool:
        queue = iter(jobs)
        pending: set[Future[Any]] = set()
        for job in queue:
            pending.add(pool.submit(func, job))
            if len(pending) >= 2 * count:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                job = next(queue, None)
                if job is not None:
                    pending.add(pool.submit(func, job))
