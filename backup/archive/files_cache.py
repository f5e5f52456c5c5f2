"""The writer's files cache: unchanged files (same size, mtime, ctime, inode) are not re-read.

Kept per source in the state directory. Each run writes a fresh cache beside the old one and
swaps it in only after its snapshot is written, so a crashed run leaves the last good cache.
Losing the cache costs time, never correctness: a cached file whose blobs the repository no
longer holds is read again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

ID_LEN = 32
RECORD_BATCH = 500  # files per insert (6 values each, under sqlite's 32,766 parameters)


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileState:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class FilesCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._new_path = path.with_name(path.name + ".new")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._old: sqlite3.Connection | None = None
        if path.exists():
            try:
                self._old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                self._old.execute("select count(*) from files").fetchone()
            except sqlite3.Error:
                self._old = None  # damaged: start afresh, it is only a cache
            else:
                _read_ahead(path)
        with contextlib.suppress(FileNotFoundError):
            self._new_path.unlink()
        self._new = sqlite3.connect(self._new_path)
        self._new.execute("pragma journal_mode=off")
        self._new.execute("pragma synchronous=off")
        self._new.execute(
            "create table files (path blob primary key, size int, mtime_ns int, ctime_ns int,"
            " inode int, blobs blob)"
        )
        self._rows: list[bytes | int] = []  # recorded, not yet inserted: 6 values per file
        self.hits = 0
        self.misses = 0

    def lookup(self, path: bytes, state: FileState) -> list[bytes] | None:
        if self._old is None:
            return None
        row = self._old.execute(
            "select size, mtime_ns, ctime_ns, inode, blobs from files where path = ?", (path,)
        ).fetchone()
        if row is None or FileState(row[0], row[1], row[2], row[3]) != state:
            return None
        blobs: bytes = row[4]
        return [blobs[i : i + ID_LEN] for i in range(0, len(blobs), ID_LEN)]

    def record(self, path: bytes, state: FileState, blobs: list[bytes]) -> None:
        self._rows += (path, state.size, state.mtime_ns, state.ctime_ns, state.inode)
        self._rows.append(b"".join(blobs))
        if len(self._rows) >= RECORD_BATCH * 6:
            self._write_rows()

    def _write_rows(self) -> None:
        """Insert the rows recorded so far with one statement: sqlite releases the GIL for
        every statement, and one per file handed it to the reader threads and back about
        twice per file (13% of the walking thread's time in a first backup)."""
        rows, self._rows = self._rows, []
        if rows:
            values = ",".join(["(?, ?, ?, ?, ?, ?)"] * (len(rows) // 6))
            self._new.execute(f"insert or replace into files values {values}", rows)  # noqa: S608 - placeholders only

    def commit(self) -> None:
        """Swap the new cache in; call only after the snapshot is safely written."""
        self._write_rows()
        self._new.commit()
        self._new.close()
        if self._old is not None:
            self._old.close()
        os.replace(self._new_path, self.path)

    def discard(self) -> None:
        self._new.close()
        if self._old is not None:
            self._old.close()
        with contextlib.suppress(FileNotFoundError):
            self._new_path.unlink()


def _read_ahead(path: Path) -> None:
    """Ask the kernel to read the whole old cache now. Lookups follow the walk's order, not
    the file's, so with a cold page cache each one waited for its own random read (a third
    of a next-day backup's time over 30,000 small files); one sequential read-ahead costs
    milliseconds and no memory of ours. Best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
