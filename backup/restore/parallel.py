"""Pack work on every core: decrypting (age holds the GIL), decompressing and hashing.

Restores and ``check --read-data`` hand whole packs to worker processes; each worker opens
its own storage connection and keys once, then fetches, decrypts and verifies packs, and for
restores writes blobs straight into place, beneath the target's directory descriptor. The main
process only plans, collects results and retries what a pack could not give from the blob's
other locations.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from portalops.backup.repo.backends import open_storage
from portalops.backup.repo.index import PackRecord
from portalops.backup.repo.keys import Identity, WriterKey
from portalops.backup.repo.pack import BlobEntry
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.restore.beneath import FILE_FLAGS, Beneath
from portalops.core.errors import OpsError

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


@dataclass(frozen=True)
class RestoreTarget:
    """The directory a restore writes into: workers reopen it by path and make sure it is
    still the directory the main process opened (device and inode)."""

    path: bytes
    dev: int
    ino: int


# One blob of a restore job: its id, its entry in this pack, its length (agreed by every index
# or measured), and every (path relative to the target, offset) it fills.
JobBlob = tuple[bytes, BlobEntry, int, list[tuple[bytes, int]]]
RestoreJob = tuple[RestoreTarget, str, list[JobBlob]]
# (pack, blobs written, bytes written, [(blob id, why this pack could not give it)])
JobResult = tuple[str, int, int, list[tuple[bytes, str]]]


class BlobUnusable(Exception):
    """This location does not give the blob (the caller tries the blob's next location)."""


def restore_pack(job: RestoreJob) -> JobResult:
    """Write one pack's blobs into place (in a worker)."""
    return write_blobs(_worker_repo(), job)


def write_blobs(repo: Repository, job: RestoreJob) -> JobResult:
    """Decrypt the pack once, verify each blob and write it at every offset that uses it.

    A pack that cannot be read, or a blob that fails here, is returned as failed, not raised:
    the blob may be intact in another pack. Files are created relative to directory
    descriptors opened from the target down (backup/restore/beneath.py), so no symlink is followed.
    """
    target, key, blobs = job
    try:
        plaintext = repo.decrypt_pack(key, repo.fetch_pack(key))
    except OpsError as exc:
        return key, 0, 0, [(blob_id, str(exc)) for blob_id, _, _, _ in blobs]
    done = written = 0
    failed: list[tuple[bytes, str]] = []
    with Beneath.open(target.path, (target.dev, target.ino)) as below:
        for blob_id, entry, length, uses in blobs:
            try:
                data = extract_blob(repo, key, plaintext, entry, blob_id, length)
            except BlobUnusable as exc:
                failed.append((blob_id, str(exc)))
                continue
            for rel, offset in uses:
                # Created here, not beforehand: the main process need not touch every file twice.
                _write_at(below, rel, data, offset)
                written += len(data)
            done += 1
    return key, done, written, failed


def extract_blob(
    repo: Repository, key: str, plaintext: bytes, entry: BlobEntry, blob_id: bytes, length: int
) -> bytes:
    """The blob ``entry`` locates in pack ``key``'s plaintext, bounded, verified against its
    id and ``length`` bytes long; BlobUnusable saying why not."""
    if entry.raw_length != length:  # unpack_blob holds the blob to its stated length
        raise BlobUnusable(
            f"blob {blob_id.hex()[:16]} stated as {entry.raw_length} bytes, not {length}"
        )
    try:
        return repo.unpack_blob(key, plaintext, blob_id, entry)
    except DamagedObject as exc:
        raise BlobUnusable(exc.args[2]) from None


def _write_at(below: Beneath, rel: bytes, data: bytes, offset: int) -> None:
    try:
        parent, name = below.parent(rel)
        fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
    except OSError as exc:  # name the path from the target, not the last component
        raise OSError(exc.errno, exc.strerror, os.fsdecode(rel)) from None


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
    context.set_forkserver_preload(["portalops.backup.restore.parallel"])
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
