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

    def chunks(self, stream: IO[bytes]) -> Iterator[memoryview]:
        """Chunks of ``stream`` until EOF. Reads through the file object, never mmap: a log
        truncated while we read it must not crash the process with SIGBUS."""
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data
