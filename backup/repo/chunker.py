"""Content-defined chunking (FastCDC 2020) with the repository's secret seed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import pyfastcdc

from portalops.backup.repo.repository import CHUNKER


class Chunker:
    """Cuts a stream where its content says, so an insertion moves only nearby cut points."""

    def __init__(self, seed: int, params: dict[str, object] | None = None) -> None:
        p = params or CHUNKER
        self.min_size = int(str(p["min"]))
        self._cdc = pyfastcdc.FastCDC(
            int(str(p["avg"])),
            min_size=self.min_size,
            max_size=int(str(p["max"])),
            normalized_chunking=1,
            seed=seed,
        )

    @property
    def max_size(self) -> int:
        """The largest chunk it cuts."""
        return int(self._cdc.max_size)

    @property
    def whole_max(self) -> int:
        """Files up to this size are best read whole and cut by :meth:`chunks_of`: the
        stream chunker allocates and zeroes a buffer of twice the maximum chunk (8 MiB) for
        every stream, which for a 300 KB image costs more than chunking and hashing it."""
        return 2 * self._cdc.max_size

    def chunks_of(self, data: bytes) -> Iterator[memoryview]:
        """Chunks of ``data`` held whole: the very cut points :meth:`chunks` finds in a
        stream of the same bytes (FastCDC looks at most one maximum chunk ahead, and the
        stream chunker refills before it has less than that left)."""
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data

    def chunks(self, stream: IO[bytes]) -> Iterator[memoryview]:
        """Chunks of ``stream`` until EOF. Reads through the file object, never mmap: a log
        truncated while we read it must not crash the process with SIGBUS."""
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data
