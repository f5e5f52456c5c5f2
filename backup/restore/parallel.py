"""Pack work on every core: decrypting, decompressing and hashing.

Restores and ``check --read-data`` hand whole packs to worker processes when there is enough
pack work to pay for them (:func:`worth_workers`; a small repository is done in the calling
process). Workers are started once per command, in the background while the main process
plans (the forkserver imports this module once; each worker opens its own storage and keys),
and the main process asks the kernel to read ahead the packs it queues. Each worker fetches,
decrypts and verifies a pack, and for restores writes blobs straight into place, beneath the
target's directory descriptor, and finishes (size, owner, mode, mtime) every file all of whose
blobs the pack holds through the descriptor it wrote them with. The main process plans,
collects results and retries what a pack could not give from the blob's other locations.

``PORTALOPS_PACK_WORKERS`` overrides :func:`worth_workers`: ``always`` (tests run the worker
path on a small repository with it), ``never`` (one process, e.g. on a host short of memory)
or ``auto`` (the default: by the amount of pack work).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from portalops.backup.repo.backends import RepositoryLike, open_storage
from portalops.backup.repo.index import PackRecord
from portalops.backup.repo.keys import Identity, WriterKey
from portalops.backup.repo.pack import BlobEntry
from portalops.backup.repo.repository import Bases, DamagedObject, Repository
from portalops.backup.restore.beneath import FILE_FLAGS, Beneath
from portalops.core.errors import BadInput, OpsError

if TYPE_CHECKING:
    from concurrent.futures import Future

# Below this many packs, or this many stored bytes, starting workers (a forkserver interpreter
# importing the repository code, then one process per core) costs more CPU than it saves: the
# work runs in this process.
MIN_PACKS = 3
MIN_PARALLEL_BYTES = 48 * 1024 * 1024
WORKERS_VARIABLE = "PORTALOPS_PACK_WORKERS"
# Packs asked of the disk (``posix_fadvise``, ~16 MiB each) beyond those queued to the
# workers: a cold-cache run reads while its workers start and while it walks trees.
READ_AHEAD_PACKS = 8
SETID = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class StorageSettings:
    """What ``open_storage`` reads of a repository's settings, as plain values: a worker
    unpickling the config's own model would import pydantic and every settings model
    (~0.16 s of CPU per worker, paid while the command waits for its first pack)."""

    name: str
    url: str
    endpoint: str | None
    region: str | None
    object_lock_days: int
    attempts: int
    allow_overwriting_writes: bool

    @classmethod
    def of(cls, settings: RepositoryLike) -> StorageSettings:
        return cls(
            settings.name,
            settings.url,
            settings.endpoint,
            settings.region,
            settings.object_lock_days,
            getattr(settings, "attempts", 8),
            getattr(settings, "allow_overwriting_writes", False),
        )


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to open the repository itself (sent once, through a pipe)."""

    storage: StorageSettings
    id_key: bytes
    chunker_seed: int
    recipients: tuple[str, ...]
    identities: tuple[str, ...]  # every age secret key held (own first), never written anywhere


_repo: Repository | None = None


def _init(setup: WorkerSetup) -> None:
    global _repo  # noqa: PLW0603 - one repository handle per worker process
    storage = open_storage(setup.storage)
    writer = WriterKey(setup.id_key, setup.chunker_seed, setup.recipients)
    own, *also = (Identity.from_string(text).secret for text in setup.identities)
    identity = Identity(own, tuple(also))
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


class FileMeta(NamedTuple):
    """What finishing a file takes: its size, owner, mode and mtime. A job finishes the files
    all of whose blobs it writes, through the descriptor it writes them with, so a small file
    costs one open instead of two and the main process no loop over every file."""

    rel: bytes
    size: int
    blobs: int  # blob references in the file's content
    uid: int
    gid: int
    mode: int
    mtime_ns: int


@dataclass(frozen=True)
class FinishRules:
    """How a job finishes files: truncate (the target held files before), chown (as root),
    keep set-id bits (asked for)."""

    truncate: bool
    chown: bool
    keep_setid: bool


# One blob of a restore job: its id, its entry in this pack, its length (agreed by every index
# or measured), and every (path relative to the target, offset) it fills.
JobBlob = tuple[bytes, BlobEntry, int, list[tuple[bytes, int]]]
RestoreJob = tuple[RestoreTarget, str, list[JobBlob], list[FileMeta], FinishRules, Bases]


@dataclass
class JobResult:
    pack: str
    blobs: int = 0  # written
    written: int = 0  # bytes
    failed: list[tuple[bytes, str]] = field(default_factory=list)  # (blob, why not from here)
    finished: list[bytes] = field(default_factory=list)  # files given their size and metadata
    warnings: list[str] = field(default_factory=list)
    setid_dropped: int = 0
    pid: int = 0  # the process that did the job (tells a worker's work from the caller's)


class BlobUnusable(Exception):
    """This location does not give the blob (the caller tries the blob's next location)."""


def restore_pack(job: RestoreJob) -> JobResult:
    """Write one pack's blobs into place (in a worker)."""
    return write_blobs(_worker_repo(), job)


def write_blobs(repo: Repository, job: RestoreJob) -> JobResult:
    """Decrypt the pack once, verify each blob and write it at every offset that uses it;
    then finish (size, owner, mode, mtime) the job's files whose every blob was written.

    A pack that cannot be read, or a blob that fails here, is returned as failed, not raised:
    the blob may be intact in another pack (its files are then finished by the main process).
    Files are created relative to directory descriptors opened from the target down
    (backup/restore/beneath.py), so no symlink is followed.
    """
    target, key, blobs, finish, rules, bases = job
    result = JobResult(key, pid=os.getpid())
    try:
        plaintext = repo.decrypt_pack(key, repo.fetch_pack(key))
    except OpsError as exc:
        result.failed = [(blob_id, str(exc)) for blob_id, _, _, _ in blobs]
        return result
    # Files of one blob are written and finished through one descriptor; others once all of
    # this job's writes are done.
    single = {meta.rel: meta for meta in finish if meta.blobs == 1}
    spoiled: set[bytes] = set()  # files a failed blob leaves unfinished
    with Beneath.open(target.path, (target.dev, target.ino)) as below:
        for blob_id, entry, length, uses in by_base(repo, blobs, bases):
            try:
                data = extract_blob(repo, key, plaintext, entry, blob_id, length, bases)
            except BlobUnusable as exc:
                result.failed.append((blob_id, str(exc)))
                spoiled.update(rel for rel, _ in uses)
                continue
            for rel, offset in uses:
                # Created here, not beforehand: the main process need not touch every file twice.
                meta = single.get(rel)
                _write_at(below, rel, data, offset, meta, rules, result)
                result.written += len(data)
            result.blobs += 1
        for meta in finish:
            if meta.blobs != 1 and meta.rel not in spoiled:
                _write_at(below, meta.rel, b"", 0, meta, rules, result)
    return result


def by_base(repo: Repository, blobs: list[JobBlob], bases: Bases) -> list[JobBlob]:
    """:meth:`Repository.by_base` for a job's blobs (a worker keeps only a few packs)."""
    if not bases:
        return blobs
    return sorted(blobs, key=lambda blob: repo.base_order(blob[1], bases))


def extract_blob(
    repo: Repository,
    key: str,
    plaintext: bytes,
    entry: BlobEntry,
    blob_id: bytes,
    length: int,
    bases: Bases | None = None,
) -> bytes | memoryview:
    """The blob ``entry`` locates in pack ``key``'s plaintext, bounded, verified against its
    id and ``length`` bytes long (a view into ``plaintext`` when stored uncompressed);
    BlobUnusable saying why not."""
    if entry.raw_length != length:  # unpack_blob holds the blob to its stated length
        raise BlobUnusable(
            f"blob {blob_id.hex()[:16]} stated as {entry.raw_length} bytes, not {length}"
        )
    try:
        return repo.unpack_view(key, plaintext, blob_id, entry, bases)
    except DamagedObject as exc:
        raise BlobUnusable(exc.args[2]) from None


def _write_at(
    below: Beneath,
    rel: bytes,
    data: bytes | memoryview,
    offset: int,
    meta: FileMeta | None,
    rules: FinishRules,
    result: JobResult,
) -> None:
    """Write ``data`` at ``offset`` of ``rel`` (created if need be); with ``meta``, finish
    the file through the same descriptor."""
    try:
        parent, name = below.parent(rel)
        fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            if data:
                write_all_at(fd, data, offset)
            if meta is not None:
                finish_file(fd, meta, rules, result)
        finally:
            os.close(fd)
    except OSError as exc:  # name the path from the target, not the last component
        raise OSError(exc.errno, exc.strerror, os.fsdecode(rel)) from None


def write_all_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset``: a write may be short (a full disk, a file-size limit),
    and a restore that stopped at the first short count would report success on a file
    missing its tail or holding zeros."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no byte could be written")
        view, offset = view[written:], offset + written


def finish_file(fd: int, meta: FileMeta, rules: FinishRules, result: JobResult) -> None:
    """Size (when the target held files before; then checked), owner (as root), mode, mtime."""
    if rules.truncate:
        os.ftruncate(fd, meta.size)
    size = os.fstat(fd).st_size
    if size != meta.size:  # never a file reported restored that is not whole
        raise OSError(errno.EIO, f"restored {size} of {meta.size} bytes")
    set_metadata(fd, meta, rules, result, is_dir=False)
    result.finished.append(meta.rel)


def set_metadata(
    fd: int, meta: FileMeta, rules: FinishRules, result: JobResult, *, is_dir: bool
) -> None:
    """Owner (as root), mode and mtime through the entry's own descriptor."""
    if rules.chown:
        try:
            os.fchown(fd, meta.uid, meta.gid)
        except OSError as exc:
            result.warnings.append(f"{os.fsdecode(meta.rel)}: cannot set owner: {exc.strerror}")
    mode = meta.mode
    if mode & SETID and not is_dir and not rules.keep_setid:
        # A set-id program from a (possibly hostile) backup host, owned by root here, is a
        # privilege escalation waiting for whoever can reach it: dropped unless asked for.
        mode &= ~SETID
        result.setid_dropped += 1
    os.fchmod(fd, mode)  # after chown, which clears set-id bits
    os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


def verify_pack(job: tuple[PackRecord, Bases]) -> tuple[str, list[str]]:
    record, bases = job
    return record.key, _worker_repo().verify_pack(record.key, record, bases)


def bases_of(repo: Repository, entries: Sequence[BlobEntry]) -> Bases:
    """Where the bases of the deltas among ``entries`` are, for a worker (which has no
    index)."""
    return {base: repo.base_locations(base) for e in entries for base in e.bases}


def setup_for(repo: Repository) -> WorkerSetup | None:
    """None when workers cannot open this repository themselves (no settings or identity)."""
    if repo.identity is None or repo.settings is None:
        return None
    return WorkerSetup(
        StorageSettings.of(repo.settings),
        repo.writer.id_key,
        repo.writer.chunker_seed,
        repo.writer.recipients,
        tuple(repo.identity.secrets),
    )


def readahead(repo: Repository, key: str) -> None:
    """Ask the kernel to start reading pack ``key`` (a local repository) while the workers
    are busy with earlier packs, so a cold-cache run reads and computes at the same time."""
    root = getattr(repo.storage, "root", None)
    if root is None or not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(os.path.join(root, key), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the worker's own read says what is wrong
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _ready() -> int:
    return os.getpid()


class Workers:
    """One worker per core, started once (their start-up overlapping whatever the main process
    does next) and used for every pack of a command."""

    def __init__(self, setup: WorkerSetup, workers: int | None = None) -> None:
        import multiprocessing  # noqa: PLC0415 - only commands with enough packs start workers
        from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

        self.count = workers or os.cpu_count() or 1
        # forkserver: workers start from a clean process, not a copy of one with threads running
        # (progress bars), which fork() would copy mid-lock.
        context = multiprocessing.get_context("forkserver")
        # The server imports these once; each worker forked from it starts warm.
        context.set_forkserver_preload(["portalops.backup.restore.parallel"])
        self.pool = ProcessPoolExecutor(
            self.count, mp_context=context, initializer=_init, initargs=(setup,)
        )
        # Started now, not at the first pack, and from a thread: the first start waits for the
        # forkserver to come up, which this process need not sit through.
        self.start_error: str | None = None  # set by the starter, said by map()
        self._starter = threading.Thread(target=self._start, name="workers-start", daemon=True)
        self._starter.start()

    def _start(self) -> None:
        try:
            for _ in range(self.count):
                self.pool.submit(_ready)
        except Exception as exc:
            # A pool shut down while starting (an error elsewhere ended the command), or one
            # that could not start a process: no "Exception in thread" traceback here.
            self.start_error = str(exc) or type(exc).__name__

    def map(
        self,
        func: Callable[[Any], Any],
        jobs: Sequence[Any],
        before: Callable[[Any], None] | None = None,
        *,
        ahead: int = 0,
    ) -> Iterator[Any]:
        """Results of ``func`` over ``jobs`` in completion order, at most 2 jobs queued per
        worker (memory stays bounded however many packs there are).

        Jobs are queued from a thread of their own as soon as this is called, and the next
        one as soon as one finishes, not when the caller takes a result: the caller can do
        other work meanwhile (check walks the trees) without the workers running dry.
        ``before`` is called on each job ``ahead`` jobs before it is queued (read-ahead: the
        first packs are read from disk while the workers start)."""
        return _Feed(self, func, jobs, before, ahead).results()

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers. ``wait=False`` (an error is on its way to the user): neither the
        starter nor the workers are waited for here; the pool's own thread still ends and
        reaps them, and the interpreter waits for that thread at exit, so none is orphaned."""
        if wait:
            self._starter.join()
        self.pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(wait=kind is None)


_DONE = object()


class _Feed:
    """One :meth:`Workers.map`: a thread queues the jobs, a slot per job in flight; results
    (small: a pack's problems, a restore job's counts and paths) wait in a queue for the
    caller."""

    def __init__(
        self,
        workers: Workers,
        func: Callable[[Any], Any],
        jobs: Sequence[Any],
        before: Callable[[Any], None] | None,
        ahead: int,
    ) -> None:
        import queue  # noqa: PLC0415 - with the workers, not at import

        self.workers = workers
        self.func = func
        self.jobs = jobs
        self.before = before
        self.ahead = max(ahead, 0)
        self.slots = threading.Semaphore(2 * workers.count)
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()  # futures, then _DONE
        self.stop = threading.Event()
        self.error: BaseException | None = None  # set by the feeder, raised by results()
        self.thread = threading.Thread(target=self._feed, name="workers-feed", daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        prepared = 0  # jobs ``before`` was called on
        try:
            for i, job in enumerate(self.jobs):
                while not self.slots.acquire(timeout=0.1):  # bounded: the caller may stop
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                if self.before is not None and prepared <= i:
                    self.before(job)
                    prepared = i + 1
                try:
                    future = self.workers.pool.submit(self.func, job)
                except RuntimeError as exc:  # BrokenProcessPool among them, or shut down
                    self.error = WorkersFailed(self.workers.start_error or str(exc))
                    return
                future.add_done_callback(self._finished)
                # Further packs only once this one is queued: posix_fadvise can block while
                # the disk's queue is full, and the job queued first is the one awaited first.
                if self.before is not None:
                    while prepared <= min(i + self.ahead, len(self.jobs) - 1):
                        self.before(self.jobs[prepared])
                        prepared += 1
        except BaseException as exc:  # a failing read-ahead: said by the caller, not here
            self.error = exc
        finally:
            self.done.put(_DONE)

    def _finished(self, future: Future[Any]) -> None:
        self.slots.release()
        self.done.put(future)

    def results(self) -> Iterator[Any]:
        from concurrent.futures import BrokenExecutor  # noqa: PLC0415

        queued = len(self.jobs)
        taken = 0
        fed = False
        try:
            while taken < queued:
                item = self.done.get()
                if item is _DONE:
                    fed = True
                    if self.error is not None:
                        raise self.error
                    continue
                taken += 1
                try:
                    value = item.result()
                except BrokenExecutor as exc:  # a worker died (killed, out of memory)
                    raise WorkersFailed(self.workers.start_error or str(exc)) from None
                yield value
            if not fed:
                self.thread.join()
        finally:
            self.stop.set()


class WorkersFailed(OpsError):
    """the worker processes could not run: {}"""


def workers_mode() -> str:
    """``always``, ``never`` or ``auto`` from PORTALOPS_PACK_WORKERS (default ``auto``)."""
    mode = os.environ.get(WORKERS_VARIABLE, "auto").strip().lower() or "auto"
    if mode not in ("always", "never", "auto"):
        raise BadInput(f"{WORKERS_VARIABLE}={mode!r}: expected always, never or auto")
    return mode


def worth_workers(packs: int, stored_bytes: int) -> bool:
    """Whether this much pack work pays for starting workers (PORTALOPS_PACK_WORKERS may say
    always or never instead)."""
    mode = workers_mode()
    if mode != "auto":
        return mode == "always" and packs > 0
    return packs >= MIN_PACKS and stored_bytes >= MIN_PARALLEL_BYTES and (os.cpu_count() or 1) > 1
