"""The writer's files cache: unchanged files (same size, mtime, ctime, inode) are not re-read.

Kept per source in the state directory. Each run writes a fresh cache beside the old one and
swaps it in only after its snapshot is written, so a crashed run leaves the last good cache.
Losing the cache costs time, never correctness: a cached file whose blobs the repository no
longer holds is read again, an old cache that cannot be read (damaged, not a regular file,
rows of the wrong shape) is ignored, and a new one that cannot be written is dropped, each
with a warning; none of these fails the backup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from portalops.backup.repo.tree import INT64

log = logging.getLogger(__name__)

ID_LEN = 32
# Files per insert, 7 values each: 3,500 parameters per statement, within SQLite's limit of
# 32,766 since 3.32 (Debian 12 ships 3.40; builds before 3.32 defaulted to 999).
RECORD_BATCH = 500


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
        if _regular_file(path):  # a FIFO here would block the open, and the run with it
            try:
                self._old = sqlite3.connect(f"file:{quote(os.fsencode(path))}?mode=ro", uri=True)
                tables = {
                    row[0]
                    for row in self._old.execute(
                        "select name from sqlite_master where type='table'"
                    )
                }
                if "entries" not in tables and "files" not in tables:  # a view could loop
                    raise sqlite3.DatabaseError("neither table 'entries' nor table 'files'")
                self._by_path = "entries" not in tables
                # the columns lookups read, so a cache of another shape is dropped here
                self._old.execute(
                    "select path, size, mtime_ns, ctime_ns, inode, blobs from files limit 1"
                    if self._by_path
                    else "select dir, name, size, mtime_ns, ctime_ns, inode, blobs"
                    " from entries limit 1"
                ).fetchall()
            except sqlite3.Error as exc:
                self._drop_old(exc)
            else:
                _read_ahead(path)
        self._new: sqlite3.Connection | None = None
        try:
            with contextlib.suppress(FileNotFoundError):
                self._new_path.unlink()
            self._new = sqlite3.connect(self._new_path)
            self._new.execute("pragma journal_mode=off")
            self._new.execute("pragma synchronous=off")
            self._new.execute(
                "create table entries (dir blob, name blob, size int, mtime_ns int, ctime_ns int,"
                " inode int, blobs blob, primary key (dir, name)) without rowid"
            )
        except (sqlite3.Error, OSError) as exc:  # a read-only or full state directory
            self._drop_new(exc)
        self._rows: list[bytes | int] = []  # recorded, not yet inserted: 7 values per file

    def lookup(
        self, directory: bytes, files: list[tuple[bytes, FileState]]
    ) -> list[list[bytes] | None]:
        """The blobs of each of ``files`` (name, state; sorted by name, as the walk lists
        them) in ``directory`` whose state is the one recorded last time; None for a file
        changed, not seen, or whose row is not a well-formed one."""
        found: list[list[bytes] | None] = [None] * len(files)
        if self._old is None or not files:
            return found
        try:
            for index, row in self._matches(self._old, directory, files):
                found[index] = _blobs(row, files[index][1])
        except sqlite3.Error as exc:
            self._drop_old(exc)
            return [None] * len(files)
        return found

    def _matches(
        self, old: sqlite3.Connection, directory: bytes, files: list[tuple[bytes, FileState]]
    ) -> Iterator[tuple[int, tuple[object, ...]]]:
        """(position in ``files``, old row without its name) of each file the old cache has.

        The directory's rows are read in name order beside the sorted names, never all at
        once: a directory that shrank from 300,000 files to 3 costs a scan, not memory."""
        if self._by_path:
            query = "select size, mtime_ns, ctime_ns, inode, blobs from files where path = ?"
            for index, (name, _) in enumerate(files):
                row = old.execute(query, (directory + name,)).fetchone()
                if row is not None:
                    yield index, row
            return
        rows = old.execute(
            "select name, size, mtime_ns, ctime_ns, inode, blobs from entries"
            " where dir = ? order by name",
            (directory,),
        )
        row = rows.fetchone()
        for index, (name, _) in enumerate(files):
            # SQLite orders blobs as memcmp does, which is how bytes sort in Python
            while row is not None and (not isinstance(row[0], bytes) or row[0] < name):
                row = rows.fetchone()
            if row is None:
                return
            if row[0] == name:
                yield index, row[1:]

    def record(self, directory: bytes, name: bytes, state: FileState, blobs: list[bytes]) -> None:
        # A state SQLite cannot hold (an mtime set past 2262 by whoever can write the file, an
        # inode number of 2^63 or more on NFS or overlayfs) is not recorded: read next time.
        values = (state.size, state.mtime_ns, state.ctime_ns, state.inode)
        if self._new is None or min(values) < INT64[0] or max(values) > INT64[1]:
            return
        self._rows += (directory, name, state.size, state.mtime_ns, state.ctime_ns, state.inode)
        self._rows.append(b"".join(blobs))
        if len(self._rows) >= RECORD_BATCH * 7:
            self._write_rows()

    def _write_rows(self) -> None:
        """Insert the rows recorded so far with one statement: sqlite releases the GIL for
        every statement, and one per file handed it to the reader threads and back about
        twice per file (13% of the walking thread's time in a first backup)."""
        rows, self._rows = self._rows, []
        if rows and self._new is not None:
            values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * (len(rows) // 7))
            try:
                self._new.execute(f"insert or replace into entries values {values}", rows)  # noqa: S608 - placeholders only
            except (sqlite3.Error, OverflowError) as exc:
                self._drop_new(exc)

    def commit(self) -> None:
        """Swap the new cache in; call only after the snapshot is safely written."""
        self._write_rows()
        if self._new is not None:
            try:
                self._new.commit()
                self._new.close()
                os.replace(self._new_path, self.path)
            except (sqlite3.Error, OSError) as exc:
                self._drop_new(exc)
        self._close_old()

    def discard(self) -> None:
        if self._new is not None:
            self._new.close()
        self._close_old()
        with contextlib.suppress(FileNotFoundError):
            self._new_path.unlink()

    def _drop_old(self, exc: Exception) -> None:
        log.warning("files cache %s unreadable (%s): every file is read again", self.path, exc)
        self._close_old()

    def _close_old(self) -> None:
        if self._old is not None:
            with contextlib.suppress(sqlite3.Error):
                self._old.close()
            self._old = None

    def _drop_new(self, exc: Exception) -> None:
        """The new cache cannot be written (a full or read-only state directory): go on
        without it; the next run reads every file again."""
        log.warning("files cache %s cannot be written (%s): not kept", self._new_path, exc)
        if self._new is not None:
            with contextlib.suppress(sqlite3.Error):
                self._new.close()
            self._new = None
        with contextlib.suppress(OSError):
            self._new_path.unlink()


def _blobs(row: tuple[object, ...], state: FileState) -> list[bytes] | None:
    """The blob ids of an old row if it describes ``state``, else None; a row of the wrong
    shape (not ids, ids for an empty file, none for a non-empty one) counts as a change."""
    size, mtime_ns, ctime_ns, inode, blobs = row
    if FileState(size, mtime_ns, ctime_ns, inode) != state:  # type: ignore[arg-type]
        return None
    if not isinstance(blobs, bytes) or len(blobs) % ID_LEN or (not blobs) != (state.size == 0):
        return None
    return [blobs[i : i + ID_LEN] for i in range(0, len(blobs), ID_LEN)]


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_ahead(path: Path) -> None:
    """Ask the kernel to read the whole old cache now. Lookups follow the walk's order, not
    the file's, so with a cold page cache each one waited for its own random read (a third
    of a next-day backup's time over 30,000 small files); one sequential read-ahead costs
    milliseconds and no memory of ours. Best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
