"""Adding blobs to a repository: deduplicate, compress, fill packs, seal, index.

Blobs come from several threads at once (the archiver's file readers, the walk's trees).
Compression runs on a small thread pool and sealing a pack (encrypt + upload) on another
thread; zstd, ChaCha20 and file I/O release the GIL, so reading and chunking the next data
overlaps with both. Queues are bounded (a few blobs, two packs), which bounds memory. The
index is flushed every few packs, so a killed run's packs are found by the next run and not
uploaded again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import zstandard

from portalops.backup.repo.index import PackRecord
from portalops.backup.repo.pack import (
    MAX_TREE_BLOB,
    ZSTD_LEVEL,
    BlobType,
    Compression,
    PackBuilder,
    PendingBlob,
    compress,
    delta_compress,
    pack_key,
)
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.tree import Tree
from portalops.core.errors import ExitCode, OpsError

FLUSH_EVERY_PACKS = 8
FLUSH_EVERY_SECONDS = 120.0
MAX_IN_FLIGHT = 2  # packs being sealed
COMPRESS_THREADS = 2
MAX_QUEUED = 8  # jobs waiting for or in compression (a chunk or a batch, ~1 MiB each)
# Smaller blobs (most files of a webroot) go to the pool in batches: handing a few KiB to
# another thread one by one costs more in locking than the compression itself, and
# compressing them on the calling thread made it the bottleneck (a third of its time on a
# tree of 30,000 small files, with the pool idle).
OFFLOAD_MIN = 256 * 1024
BATCH_BYTES = 512 * 1024
BATCH_BLOBS = 256

_local = threading.local()


@dataclass
class DeltaHint:
    """A blob that may be stored as a delta of ``bases`` (blobs every repository holds whole,
    whose bytes the caller has), and what compression decided."""

    bases: tuple[bytes, ...]  # the chunk it replaces, and maybe the one after
    contents: tuple[bytes, ...]  # their bytes (dropped once compressed)
    spent: int  # delta bytes stored against the first base so far (its earlier days)
    ratio: float  # the first base's stored / raw size: what this chunk whole would take, about
    delta_length: int | None = None  # stored as a delta of this many bytes, or whole (None)

    def delta(self, raw: bytes | memoryview) -> bytes:
        """``raw`` as a delta of the first base, or of both when that is much smaller (an
        edit removed a cut point and the chunk runs on into the next one). One base is
        preferred: a restore then joins no dictionary (a tenth of a day-2 dump's restore)."""
        first = delta_compress(raw, self.contents[0])
        if len(self.contents) > 1 and len(first) > max(len(raw) // 64, 4096):
            both = delta_compress(raw, b"".join(self.contents))
            if len(both) < len(first) * 3 // 4:
                self.contents = ()
                return both
        self.bases, self.contents = self.bases[:1], ()
        return first


def _compress(raws: list[bytes | memoryview], hints: list[DeltaHint | None]) -> list[_Stored]:
    """Compress one job: a large chunk alone, or a batch of small blobs. A blob with a hint
    is first compressed as a delta, kept when it and the deltas stored against the same base
    before come to no more than the blob whole (beyond that, storing it whole and making it
    the next base costs less over the days to come); the blob whole is then estimated from its
    base's compression ratio, and not compressed at all (half a day-2 dump's compression)."""
    # A ZstdCompressor is not thread-safe: one per pool thread.
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    out: list[_Stored] = []
    for raw, hint in zip(raws, hints, strict=True):
        if hint is not None:
            delta = hint.delta(raw)
            if hint.spent + len(delta) <= hint.ratio * len(raw):
                hint.delta_length = len(delta)
                out.append((delta, Compression.DELTA, hint.bases))
                continue
        out.append((*compress(raw, compressor), ()))
    return out


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
WRITER_ARENAS = 2


@cache
def _libc() -> Any | None:
    try:
        import ctypes  # noqa: PLC0415 - only a backup that writes needs it

        libc = ctypes.CDLL(None)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both or neither: glibc
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


@cache
def _limit_malloc_arenas() -> None:
    """At most WRITER_ARENAS malloc arenas from here on (glibc makes one per thread, up to 8
    per core). Blobs and packs are allocated on the readers', compressors' and seal threads,
    and each arena keeps its own freed pages: with one per thread, the first backup's peak
    RSS grew with the run (164 -> 190 MiB from 0.7 to 1.4 GB of small files, ``/usr/bin/time``
    of ``ops backup run``, cold cache); with two it stayed at 170-180 MiB for both sizes, at
    the same speed (one arena: a little slower). Process-wide, and set once, before the
    writer's threads start."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, WRITER_ARENAS)


def _give_back_freed_memory() -> None:
    """Return the memory a sealed pack freed to the system. Blobs and packs are allocated
    on several threads, beyond glibc's self-raised mmap threshold: without a trim, RSS holds
    every arena's high-water mark (20-40 MiB more than the process uses, backing up a tree
    of small files). One malloc_trim per pack (16 MiB written) costs a few milliseconds on
    the seal thread, without the GIL."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _immutable(data: bytes | memoryview) -> bool:
    return isinstance(data, bytes) or (data.readonly and isinstance(data.obj, bytes))


# A blob handed to compression: its type, id, raw length, the repositories wanting it, and
# the base it may be stored against.
_Wanted = tuple[BlobType, bytes, int, tuple["Copy", ...], DeltaHint | None]
# What a compression job carries back to the writer.
_Stored = tuple[bytes | memoryview, Compression, tuple[bytes, ...]]  # what, how, a delta's bases
_Job = tuple[list[_Wanted], "Future[list[_Stored]]"]


class TreeTooLarge(OpsError):
    """{}: its listing is {} bytes as a tree, over the {} bytes a restore accepts; exclude
    what fills it (a cache, sessions) or split it"""

    exit_code = ExitCode.PROBLEM_FOUND


@dataclass(frozen=True)
class Destination:
    """A repository a writer stores into, and what to call before each pack sealed there
    (a backup checks its lock is still held)."""

    repo: Repository
    on_seal: Callable[[], None] | None = None
    verify: bool = False  # read each pack back (needs the identity) before it is indexed


class Copy:
    """One repository's share of a writer's work: its packs being filled and sealed, the
    blobs handed to it and not indexed yet, its counts, and why it stopped, if it did."""

    def __init__(self, destination: Destination) -> None:
        self.repo = destination.repo
        self._on_seal = destination.on_seal
        self.verify = destination.verify
        # Trees go to packs of their own, as restic does: walking a snapshot (restore, check,
        # prune) then touches a few small packs instead of decrypting every data pack.
        self._builders = {BlobType.DATA: PackBuilder(), BlobType.TREE: PackBuilder()}
        self.pending: set[bytes] = set()  # ids handed to it this run, not yet in an index object
        self._records: list[PackRecord] = []  # sealed packs not yet named by an index
        self._lock = threading.Lock()
        # Packs are stored one at a time on a local disk; a remote store answers each PUT
        # after a round trip, so it takes ``concurrent_writes`` at once (S3: 2; a loop of
        # 16 MiB PUTs to moto on loopback went from 173 to 416 MiB/s).
        writes = max(1, min(MAX_IN_FLIGHT, getattr(self.repo.storage, "concurrent_writes", 1)))
        self.pool = ThreadPoolExecutor(max_workers=writes, thread_name_prefix="seal")
        # Each seal thread encrypts every pack into one buffer of its own: allocating 16 MiB
        # per pack zeroed it and took its page faults with the GIL held.
        self._seal_buffers = threading.local()
        self._in_flight: list[Future[None]] = []
        self._last_flush = time.monotonic()
        self.blobs_added = 0
        self.bytes_added = 0  # stored (compressed) bytes of new blobs
        self.raw_bytes_added = 0
        self.packs_written = 0
        self.error: OpsError | OSError | None = None  # set once: nothing more is stored here

    def known(self, blob_id: bytes) -> bool:
        return blob_id in self.repo.index or blob_id in self.pending

    def store(
        self,
        kind: BlobType,
        blob_id: bytes,
        raw_length: int,
        stored: bytes | memoryview,
        compression: Compression,
        bases: tuple[bytes, ...] = (),
    ) -> None:
        builder = self._builders[kind]
        builder.add(PendingBlob(blob_id, kind, stored, raw_length, compression, bases))
        self.count(raw_length, len(stored))
        if builder.full():
            self._seal(kind)

    def count(self, raw_length: int, stored_length: int) -> None:
        self.blobs_added += 1
        self.bytes_added += stored_length
        self.raw_bytes_added += raw_length

    def _seal(self, kind: BlobType) -> None:
        builder = self._builders[kind]
        if not len(builder):
            return
        if self._on_seal is not None:
            self._on_seal()
        self._builders[kind] = PackBuilder()
        self._wait(MAX_IN_FLIGHT - 1)
        self._in_flight.append(self.pool.submit(self._seal_now, builder))
        self.flush_when_due()

    def flush_when_due(self) -> None:
        if (
            len(self._records) >= FLUSH_EVERY_PACKS
            or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS
        ):
            self._flush_index()

    def sealed(self, record: PackRecord) -> None:
        """A pack stored here is ready to be indexed."""
        with self._lock:
            self._records.append(record)
            self.packs_written += 1

    def check_lock(self) -> None:
        if self._on_seal is not None:
            self._on_seal()

    def _seal_now(self, builder: PackBuilder) -> None:
        parts, entries = builder.build_parts()
        # The blobs are encrypted from these pieces, each freed once encrypted: the pack is
        # held once as blobs and once as ciphertext, never also as one plaintext. The pieces
        # list is this pack's own; the blobs in it may be in another repository's pack too.
        builder.blobs.clear()
        buffer = getattr(self._seal_buffers, "buffer", None)
        if buffer is None:
            buffer = self._seal_buffers.buffer = bytearray()
        key, size = self.repo.write_pack(parts, buffer)
        del parts
        _give_back_freed_memory()
        record = PackRecord(key, size, tuple(entries))
        if self.verify:  # only a pack read back intact is ever indexed
            problems = self.repo.verify_pack(key, record)
            if problems:
                raise DamagedObject(self.repo.name, key, f"read back after writing: {problems[0]}")
        self.sealed(record)

    def _wait(self, keep: int) -> None:
        """Wait until at most ``keep`` seals are running; re-raise a failed seal's error."""
        while len(self._in_flight) > keep:
            self._in_flight.pop(0).result()

    def _flush_index(self) -> None:
        with self._lock:
            records, self._records = self._records, []
        if not records:
            return
        self.repo.write_index(records)
        for record in records:
            self.repo.index.note_written(record)
            for entry in record.blobs:
                self.pending.discard(entry.id)
        self._last_flush = time.monotonic()

    def finish(self) -> None:
        for kind in self._builders:
            self._seal(kind)
        self._wait(0)
        self._flush_index()

    def stop(self) -> None:
        """Give up: what is in memory is dropped; packs already stored are indexed if the
        repository still takes writes, so the next run finds them instead of uploading
        them again (a run failing anyway does not care if that fails too)."""
        for future in self._in_flight:
            future.cancel()
        self.pool.shutdown(wait=True)
        if self.error is None:
            with contextlib.suppress(Exception):
                self._flush_index()


class _Joint:
    """Packs of the blobs every repository of a run wants: built, encrypted and named once,
    the same object then stored in each (day 1 of a new offsite, and most blobs of most
    days). The repositories of one writer encrypt to the same recipients (one writer key),
    so the one ciphertext is what each would have made; each indexes the pack itself.

    Storing into two repositories cost twice the packing, ChaCha20 and SHA-256 (the pack's
    name) of one; this pays them once."""

    def __init__(self) -> None:
        self.builders = {BlobType.DATA: PackBuilder(), BlobType.TREE: PackBuilder()}
        # Two at a time, whatever the storages: a local disk then takes two puts at once
        # (its own packs take one), which costs it nothing, while the S3 side needs two.
        # Each thread keeps a 16 MiB encryption buffer, beside the copies' own (used on a
        # night when a copy lacks blobs the other has): a first backup into local + S3
        # peaked at 211 MiB, local alone at 175 (docs/benchmarks.md).
        self.pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="seal")
        self.buffers = threading.local()
        self.in_flight: list[Future[list[tuple[Copy, OpsError | OSError]]]] = []

    def seal_now(
        self, builder: PackBuilder, copies: list[Copy]
    ) -> list[tuple[Copy, OpsError | OSError]]:
        """Encrypt and name the pack once, store it in each repository; the ones whose
        storage failed, with their errors. (Anything else failing here, in packing or
        encryption, would fail every repository alike: it is raised, and ends the run.)"""
        parts, entries = builder.build_parts()
        builder.blobs.clear()
        buffer = getattr(self.buffers, "buffer", None)
        if buffer is None:
            buffer = self.buffers.buffer = bytearray()
        stored = copies[0].repo.writer.encrypt_pack(parts, buffer)
        del parts
        key = pack_key(stored)
        record = PackRecord(key, len(stored), tuple(entries))
        failed: list[tuple[Copy, OpsError | OSError]] = []
        for copy in copies:
            if copy.error is not None:  # failed since this pack was queued
                continue
            try:
                copy.repo.storage.put(key, stored)
            except (OpsError, OSError) as exc:
                # Said at once, so the other seal thread sends it nothing more; the writer
                # then takes it out of the repositories written (BlobWriter._fail).
                copy.error = exc
                failed.append((copy, exc))
                continue
            copy.sealed(record)
        _give_back_freed_memory()
        return failed


class BlobWriter:
    """Stores blobs into one repository, or into several at once: one read of a source
    then feeds every copy. Blob ids are computed and blobs compressed once; each repository
    deduplicates against its own index, and fills, encrypts and stores its own packs.

    A repository whose storage or lock fails stops being written (its :class:`Copy` keeps
    the error) while the others go on; when none is left, the error is raised."""

    def __init__(self, *destinations: Repository | Destination) -> None:
        if not destinations:
            raise ValueError("a writer needs at least one repository")
        _limit_malloc_arenas()
        self.copies = [
            Copy(d if isinstance(d, Destination) else Destination(d)) for d in destinations
        ]
        self._ids = self.copies[0].repo.writer
        if any(c.repo.writer.id_key != self._ids.id_key for c in self.copies):
            raise ValueError("repositories written together must share the id-key")
        self._compressing: deque[_Job] = deque()
        self._batch: list[_Wanted] = []  # small blobs not yet submitted
        self._batch_raw: list[bytes | memoryview] = []
        self._batch_bytes = 0
        self._compress_pool = ThreadPoolExecutor(COMPRESS_THREADS, thread_name_prefix="zstd")
        self._adding = threading.Lock()  # add() is called from several reading threads
        self._last_error: OpsError | OSError | None = None
        self._alive = list(self.copies)
        # One ciphertext serves every repository when they encrypt to the same recipients
        # (one writer key: always, for a backup) and none reads its packs back (copy does).
        recipients = {c.repo.writer.recipients for c in self.copies}
        shared = len(recipients) == 1 and not any(c.verify for c in self.copies)
        self._joint = _Joint() if shared and len(self.copies) > 1 else None

    @property
    def blobs_added(self) -> int:
        """New blobs stored, summed over the repositories (so are the three below)."""
        return sum(c.blobs_added for c in self.copies)

    @property
    def bytes_added(self) -> int:
        return sum(c.bytes_added for c in self.copies)

    @property
    def raw_bytes_added(self) -> int:
        return sum(c.raw_bytes_added for c in self.copies)

    @property
    def packs_written(self) -> int:
        return sum(c.packs_written for c in self.copies)

    def add_tree(self, tree: Tree, where: str) -> bytes:
        """Store one directory's tree; refuse one no restore would read back (the readers'
        cap on tree blobs), so a backup never records a directory it cannot restore."""
        data = tree.encode()
        if len(data) > MAX_TREE_BLOB:
            raise TreeTooLarge(where, len(data), MAX_TREE_BLOB)
        return self.add(BlobType.TREE, data)

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return self._ids.blob_id(data)

    def whole_everywhere(self, blob_id: bytes) -> float | None:
        """The blob's stored / raw size if every repository still written holds it whole
        (not as a delta) in an index it read, as a delta's base must be held; else None. (A
        repository lacking a base, a new offsite, would store the blob whole while the
        others stored a delta, and tomorrow's base would be whole in neither: all or none.)"""
        ratio = None
        for copy in self._live():
            locations = copy.repo.base_locations(blob_id)
            if not locations:
                return None
            entry = locations[0].entry
            ratio = entry.length / max(entry.raw_length, 1)
        return ratio

    def known(self, blob_id: bytes) -> bool:
        """Whether every repository still written has the blob, or has been handed it."""
        for copy in self._live():  # noqa: SIM110 - a loop, not a generator per blob: hot path
            if not copy.known(blob_id):
                return False
        return True

    def indexed_length(self, blob_id: bytes) -> int | None:
        """The blob's length if every repository still written has it in an index object
        (stored for good, unlike a blob merely handed to it), else None."""
        length = None
        for copy in self._live():
            location = copy.repo.index.get(blob_id)
            if location is None:
                return None
            length = location.entry.raw_length
        return length

    def add(
        self,
        kind: BlobType,
        data: bytes | memoryview,
        blob_id: bytes | None = None,
        hint: DeltaHint | None = None,
    ) -> bytes:
        """Store ``data`` where it is not stored yet; return its id. Thread-safe;
        :meth:`finish` and :meth:`abort` only once every adding thread is done. With a
        ``hint``, a data blob may be stored as a delta of the hint's base (the hint then
        says so once compressed)."""
        if blob_id is None:
            blob_id = self._ids.blob_id(data)
        if self.known(blob_id):
            return blob_id
        # A view into a file read whole (an immutable bytes) is kept as it is until sealed;
        # anything else is copied: the stream chunker reuses its buffer for the next chunk.
        # The copy holds the GIL: a 0.7 GB first backup spent an eighth of it here.
        raw = data if _immutable(data) else bytes(data)
        # Several threads read files and add their blobs at once: hashing and the copy above
        # run in parallel, the bookkeeping below one thread at a time (the check again, so a
        # blob two threads found at once is stored once).
        with self._adding:
            wanting = tuple([c for c in self._live() if not c.known(blob_id)])
            if not wanting:
                return blob_id
            for copy in wanting:
                copy.pending.add(blob_id)
            if len(raw) >= OFFLOAD_MIN or hint is not None:
                self._submit([(kind, blob_id, len(raw), wanting, hint)], [raw])
                return blob_id
            self._batch.append((kind, blob_id, len(raw), wanting, None))
            self._batch_raw.append(raw)
            self._batch_bytes += len(raw)
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_BLOBS:
                self._submit_batch()
        return blob_id

    def _live(self) -> list[Copy]:
        """The repositories still written (kept, not rebuilt: this is asked twice a blob);
        raises the last error when none is left."""
        if not self._alive and self._last_error is not None:
            raise self._last_error
        return self._alive

    def _guarded(self, copy: Copy, action: Callable[[], None]) -> None:
        """Run one repository's step; if its storage or lock fails, stop writing there."""
        try:
            action()
        except (OpsError, OSError) as exc:
            self._fail(copy, exc)

    def _fail(self, copy: Copy, exc: OpsError | OSError) -> None:
        copy.error = self._last_error = exc
        self._alive = [c for c in self.copies if c.error is None]
        self._live()

    def _submit_batch(self) -> None:
        if self._batch:
            self._submit(self._batch, self._batch_raw)
            self._batch, self._batch_raw, self._batch_bytes = [], [], 0

    def _submit(self, blobs: list[_Wanted], raws: list[bytes | memoryview]) -> None:
        """Queue one compression job; wait for the oldest ones while too many are queued,
        which bounds the memory held by raw and compressed blobs."""
        hints = [blob[4] for blob in blobs]
        self._compressing.append((blobs, self._compress_pool.submit(_compress, raws, hints)))
        while len(self._compressing) > MAX_QUEUED:
            self._take_compressed()

    def _take_compressed(self) -> None:
        blobs, future = self._compressing.popleft()
        for (kind, blob_id, raw_length, wanting, _), (stored, compression, bases) in zip(
            blobs, future.result(), strict=True
        ):
            if (
                self._joint is not None
                and len(wanting) == len(self._alive) > 1
                and all(copy.error is None for copy in wanting)
            ):
                blob = PendingBlob(blob_id, kind, stored, raw_length, compression, bases)
                self._store_joint(blob, wanting)
                continue
            for copy in wanting:
                if copy.error is None:
                    try:
                        copy.store(kind, blob_id, raw_length, stored, compression, bases)
                    except (OpsError, OSError) as exc:
                        self._fail(copy, exc)

    def _store_joint(self, blob: PendingBlob, wanting: tuple[Copy, ...]) -> None:
        """A blob every repository still written wants: into the shared pack."""
        assert self._joint is not None  # noqa: S101 - the caller checked
        builder = self._joint.builders[blob.type]
        builder.add(blob)
        for copy in wanting:
            copy.count(blob.raw_length, len(blob.stored))
        if builder.full():
            self._seal_joint(blob.type)

    def _seal_joint(self, kind: BlobType) -> None:
        joint = self._joint
        if joint is None or not len(joint.builders[kind]):
            return
        for copy in self._live():
            self._guarded(copy, copy.check_lock)
        builder, joint.builders[kind] = joint.builders[kind], PackBuilder()
        self._wait_joint(MAX_IN_FLIGHT - 1)  # may find a repository failed
        copies = list(self._live())  # raises when none is left
        joint.in_flight.append(joint.pool.submit(joint.seal_now, builder, copies))
        for copy in self._live():
            self._guarded(copy, copy.flush_when_due)

    def _wait_joint(self, keep: int) -> None:
        """Wait until at most ``keep`` shared seals are running; a repository whose storage
        failed stops being written."""
        joint = self._joint
        while joint is not None and len(joint.in_flight) > keep:
            for copy, exc in joint.in_flight.pop(0).result():
                self._fail(copy, exc)

    def finish(self) -> None:
        """Seal the last packs and index everything; after this every blob is durable in
        every repository whose :class:`Copy` has no error."""
        try:
            self._submit_batch()
            while self._compressing:
                self._take_compressed()
            if self._joint is not None:
                for kind in self._joint.builders:
                    self._seal_joint(kind)
                self._wait_joint(0)
            for copy in self._live():
                self._guarded(copy, copy.finish)
        finally:
            self._compress_pool.shutdown(wait=True)
            if self._joint is not None:
                self._joint.pool.shutdown(wait=True)
            for copy in self.copies:
                copy.pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop without indexing what is in memory; sealed packs stay for the next run."""
        for _, pending in self._compressing:
            pending.cancel()
        self._compressing.clear()
        self._batch, self._batch_raw, self._batch_bytes = [], [], 0
        self._compress_pool.shutdown(wait=True)
        if self._joint is not None:
            for future in self._joint.in_flight:
                future.cancel()
            self._joint.pool.shutdown(wait=True)
        for copy in self.copies:
            copy.stop()
