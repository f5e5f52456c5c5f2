"""Adding blobs to a repository: deduplicate, compress, fill packs, seal, index.

Sealing a pack (encrypt + upload) runs on a background thread so reading and compressing the
next data overlaps with it; at most two sealed packs wait at once, which bounds memory. The
index is flushed every few packs, so a killed run's packs are found by the next run and not
uploaded again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

from backup.index import PackRecord
from backup.pack import BlobType, PackBuilder, PendingBlob, compress
from backup.repository import Repository

FLUSH_EVERY_PACKS = 8
FLUSH_EVERY_SECONDS = 120.0
MAX_IN_FLIGHT = 2


class BlobWriter:
    def __init__(self, repo: Repository, on_seal: Callable[[], None] | None = None) -> None:
        self.repo = repo
        self._on_seal = on_seal
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._builder = PackBuilder()
        self._pending: set[bytes] = set()  # ids written this run, not yet in an index object
        self._records: list[PackRecord] = []  # sealed packs not yet named by an index
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal")
        self._in_flight: list[Future[None]] = []
        self._last_flush = time.monotonic()
        self.blobs_added = 0
        self.bytes_added = 0  # stored (compressed) bytes of new blobs
        self.raw_bytes_added = 0
        self.packs_written = 0

    def known(self, blob_id: bytes) -> bool:
        return blob_id in self.repo.index or blob_id in self._pending

    def add(self, kind: BlobType, data: bytes | memoryview, blob_id: bytes | None = None) -> bytes:
        """Store ``data`` unless the repository has it already; return its id."""
        if blob_id is None:
            blob_id = self.repo.writer.blob_id(data)
        if self.known(blob_id):
            return blob_id
        stored, compression = compress(data, self._compressor)
        self._builder.add(PendingBlob(blob_id, kind, stored, len(data), compression))
        self._pending.add(blob_id)
        self.blobs_added += 1
        self.bytes_added += len(stored)
        self.raw_bytes_added += len(data)
        if self._builder.full():
            self._seal()
        return blob_id

    def _seal(self) -> None:
        if not len(self._builder):
            return
        if self._on_seal is not None:
            self._on_seal()
        builder, self._builder = self._builder, PackBuilder()
        self._wait(MAX_IN_FLIGHT - 1)
        self._in_flight.append(self._pool.submit(self._seal_now, builder))
        if (
            len(self._records) >= FLUSH_EVERY_PACKS
            or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS
        ):
            self._flush_index()

    def _seal_now(self, builder: PackBuilder) -> None:
        plaintext, entries = builder.build()
        key, size = self.repo.write_pack(plaintext)
        with self._lock:
            self._records.append(PackRecord(key, size, tuple(entries)))
            self.packs_written += 1

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
            self.repo.index.add(record)
            for entry in record.blobs:
                self._pending.discard(entry.id)
        self._last_flush = time.monotonic()

    def finish(self) -> None:
        """Seal the last pack and index everything; after this every blob is durable."""
        try:
            self._seal()
            self._wait(0)
            self._flush_index()
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop without indexing what is in memory; sealed packs stay for the next run."""
        for future in self._in_flight:
            future.cancel()
        self._pool.shutdown(wait=True)
        try:
            self._flush_index()  # packs already on storage: index them so nothing is redone
        except Exception:  # the run is failing anyway; its packs become harmless leftovers
            return
