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
RECORD_BATCH = 500  # files per insert (7 values each, under sqlite's 32,766 parameters)


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
    """Old rows are looked up a directory at a time (one query per directory, not per file:
    each query hands the GIL to the reader threads and back, a fifth of the walking thread's
    time in a next-day backup of 12,000 files). Rows are (directory, name): the directory as
    the walk names it, with a trailing slash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._new_path = path.with_name(path.name + ".new")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._old: sqlite3.Connection | None = None
        self._by_path = False  # an old cache of one row per path (before 2026-12)
        if path.exists():
            try:
                self._old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                tables = {
                    row[0]
                    for row in self._old.execute(
                        "select name from sqlite_master where type='table'"
                    )
                }
                self._by_path = "entries" not in tables
                # the columns lookups read, so a cache of another shape is dropped here
                self._old.execute(
                    "select path, size, mtime_ns, ctime_ns, inode, blobs from files limit 1"
                    if self._by_path
                    else "select dir, name, size, mtime_ns, ctime_ns, inode, blobs"
                    " from entries limit 1"
                ).fetchall()
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
            "create table entries (dir blob, name blob, size int, mtime_ns int, ctime_ns int,"
            " inode int, blobs blob, primary key (dir, name)) without rowid"
        )
        self._rows: list[bytes | int] = []  # recorded, not yet inserted: 7 values per file

    def lookup(
        self, directory: bytes, files: list[tuple[bytes, FileState]]
    ) -> list[list[bytes] | None]:
        """The blobs of each of ``files`` (name, state) in ``directory`` whose state is the
        one recorded last time; None for a file changed or not seen."""
        if self._old is None or not files:
            return [None] * len(files)
        if self._by_path:
            query = "select size, mtime_ns, ctime_ns, inode, blobs from files where path = ?"
            rows = {
                name: row
                for name, _ in files
                if (row := self._old.execute(query, (directory + name,)).fetchone()) is not None
            }
        else:
            rows = {
                row[0]: row[1:]
                for row in self._old.execute(
                    "select name, size, mtime_ns, ctime_ns, inode, blobs from entries"
                    " where dir = ?",
                    (directory,),
                )
            }
        found: list[list[bytes] | None] = []
        for name, state in files:
            row = rows.get(name)
            if row is None or FileState(row[0], row[1], row[2], row[3]) != state:
                found.append(None)
                continue
            blobs: bytes = row[4]
            found.append([blobs[i : i + ID_LEN] for i in range(0, len(blobs), ID_LEN)])
        return found

    def record(self, directory: bytes, name: bytes, state: FileState, blobs: list[bytes]) -> None:
        self._rows += (directory, name, state.size, state.mtime_ns, state.ctime_ns, state.inode)
        self._rows.append(b"".join(blobs))
        if len(self._rows) >= RECORD_BATCH * 7:
            self._write_rows()

    def _write_rows(self) -> None:
        """Insert the rows recorded so far with one statement: sqlite releases the GIL for
        every statement, and one per file handed it to the reader threads and back about
        twice per file (13% of the walking thread's time in a first backup)."""
        rows, self._rows = self._rows, []
        if rows:
            values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * (len(rows) // 7))
            self._new.execute(f"insert or replace into entries values {values}", rows)  # noqa: S608 - placeholders only

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
