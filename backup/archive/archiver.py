"""Back up a ``files`` source: walk its paths, store file contents and trees, return the root.

The root tree mirrors the absolute paths (``/etc/nginx`` is stored as ``etc/nginx``), like
restic, so a restore into a target directory recreates the layout beneath it.

A file is read only if the file opened (without following a symlink) is the one its lstat
listed: one swapped meanwhile, in a directory others can write to, is noted as vanished, never
stored under this name with another file's content.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import grp
import logging
import os
import pwd
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from portalops.backup.archive.files_cache import FilesCache, FileState
from portalops.backup.repo.chunker import Chunker
from portalops.backup.repo.pack import BlobType
from portalops.backup.repo.tree import INT64, Node, NodeType, Tree
from portalops.backup.repo.writer import BlobWriter
from portalops.core.errors import ExitCode, OpsError

log = logging.getLogger(__name__)


class SourceUnreadable(OpsError):
    """cannot read {}: {}; the source is not backed up (no partial snapshot was written)"""

    exit_code = ExitCode.PROBLEM_FOUND  # the source's trouble, not the repository's


@dataclass
class WalkStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    files_read: int = 0  # not taken from the files cache
    bytes_read: int = 0
    vanished: list[str] = field(default_factory=list)  # deleted between listing and reading
    skipped: list[str] = field(default_factory=list)  # sockets and devices: not restorable
    unmatched: list[str] = field(default_factory=list)  # glob patterns that matched nothing


Progress = Callable[[int, int], None]  # (files done, bytes done)

# Files are read, chunked and hashed by a few threads while the walk goes on (lstat, files
# cache, trees): on one thread the walk waited for each file's disk reads in turn and kept
# about 0.8 of 2 cores busy. At most READ_AHEAD batches of files are handed over and not
# yet read, which keeps the disk busy. Nothing else runs ahead: a thread that lstat'ed directories
# before the walk and one that announced files with posix_fadvise did until 2026-12, and
# every thread making system calls hands the GIL back and forth with the walk (180,000
# context switches in a first backup of 12,000 files, restic 32,000); without them first and
# next-day backups took 5-10% less time, cold cache, on both benchmark corpora.
READERS = 2
READ_AHEAD = 64  # batches
BATCH_FILES = 32
BATCH_BYTES = 1024 * 1024
DIRS_AHEAD = 64  # directories listed, their files handed over, not yet finished


@dataclass
class Archiver:
    writer: BlobWriter
    chunker: Chunker
    cache: FilesCache | None
    exclude: list[str] = field(default_factory=list)
    progress: Progress | None = None
    readers: int = READERS  # 0: read every file on the walking thread
    stats: WalkStats = field(default_factory=WalkStats)
    _reads: _Readers | None = field(default=None, init=False, repr=False)
    _later: deque[Callable[[], None]] = field(default_factory=deque, init=False, repr=False)

    def archive(self, paths: list[Path]) -> bytes:
        """Store everything under ``paths``; return the root tree's id.

        A path with glob characters (``/etc/php*``) stands for whatever matches it now; one
        that matches nothing is noted, not an error (a host without PHP has no /etc/php).
        A plain path that does not exist fails the source.
        """
        expanded: list[Path] = []
        for path in paths:
            if glob.has_magic(str(path)):
                matches = sorted(glob.glob(str(path)))
                if not matches:
                    self.stats.unmatched.append(str(path))
                expanded += [Path(match) for match in matches]
            else:
                expanded.append(path)
        if not expanded:
            raise SourceUnreadable(", ".join(map(str, paths)), "no path matches")
        if self.readers > 0:
            self._reads = _Readers(self.readers, READ_AHEAD)
        self._later.clear()
        try:
            return self._archive(expanded)
        finally:
            if self._reads is not None:
                self._reads.close()
                self._reads = None

    def _archive(self, expanded: list[Path]) -> bytes:
        _refuse_paths_beneath_links(expanded)
        root: dict[bytes, object] = {}
        for path in expanded:
            parts = [os.fsencode(p) for p in path.parts[1:]]
            if not parts:
                raise SourceUnreadable("/", "backing up the whole filesystem root is not supported")
            node = root
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    break  # an ancestor is itself a listed path: it covers this one
                node = child
            else:
                # None: archive the real path here, all of it, even where a path beneath it
                # was listed first (that one had made it a directory of only that path)
                node[parts[-1]] = None
        return self._virtual_dir(b"/", root)

    def _virtual_dir(self, prefix: bytes, children: dict[bytes, object]) -> bytes:
        nodes: list[Node | _Pending] = []
        for name, sub in sorted(children.items()):
            path = os.path.join(prefix, name)
            if sub is None:
                st = self._lstat(path, listed=True)
                node = self._entry(path, name, st, listed=True) if st is not None else None
                if node is not None:
                    nodes.append(node)
                continue
            st = self._lstat(path, listed=True)
            if st is None:  # listed paths raise instead; this keeps the type checker informed
                continue
            subtree = self._virtual_dir(path, sub)  # type: ignore[arg-type]
            nodes.append(self._node(name, NodeType.DIR, st, subtree=subtree))
        self._finish_all()
        done = [n.result() if isinstance(n, _Pending) else n for n in nodes]
        return self.writer.add_tree(Tree([n for n in done if n is not None]), os.fsdecode(prefix))

    def _lstat(self, path: bytes, *, listed: bool = False) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            if listed:
                raise SourceUnreadable(os.fsdecode(path), "no such file or directory") from None
            self.stats.vanished.append(os.fsdecode(path))
            return None
        except OSError as exc:
            raise SourceUnreadable(os.fsdecode(path), exc.strerror) from None

    def _excluded(self, path: bytes, name: bytes, is_dir: bool) -> bool:
        spath, sname = os.fsdecode(path), os.fsdecode(name)
        for pattern in self.exclude:
            if pattern.endswith("/"):
                if is_dir and fnmatch.fnmatchcase(sname, pattern.rstrip("/")):
                    return True
            elif "/" in pattern:
                if fnmatch.fnmatchcase(spath, pattern):
                    return True
            elif fnmatch.fnmatchcase(sname, pattern):
                return True
        return False

    def _entry(
        self,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        cached: list[bytes] | None = None,
        read: _FileRead | None = None,
        *,
        listed: bool = False,
    ) -> Node | _Pending | None:
        """``listed``: a path the user gave, or one whose exclusion was already checked."""
        mode = st.st_mode
        if not listed and self._excluded(path, name, stat.S_ISDIR(mode)):
            return None
        if stat.S_ISREG(mode):
            return self._file(path, name, st, cached, read)
        if stat.S_ISDIR(mode):
            return self._dir(path, name, st)
        if stat.S_ISLNK(mode):
            return self._symlink(path, name, st)
        if stat.S_ISFIFO(mode):
            return self._node(name, NodeType.FIFO, st)
        # Sockets and device nodes are recreated by the services that own them.
        self.stats.skipped.append(os.fsdecode(path))
        return None

    def _symlink(self, path: bytes, name: bytes, st: os.stat_result) -> Node | None:
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            self.stats.vanished.append(os.fsdecode(path))
            return None
        self.stats.symlinks += 1
        return self._node(name, NodeType.SYMLINK, st, target=target)

    def _dir(self, path: bytes, name: bytes, st: os.stat_result) -> _Pending | None:
        try:
            with os.scandir(path) as it:
                names = sorted(entry.name for entry in it)
        except FileNotFoundError:
            self.stats.vanished.append(os.fsdecode(path))
            return None
        except OSError as exc:
            raise SourceUnreadable(os.fsdecode(path), exc.strerror) from None
        entries = self._children(path, names)
        # This directory's files go to the readers before any of them is needed, so they are
        # read while the walk goes on through the subdirectories listed before them.
        reads: dict[bytes, _FileRead] = {}
        if self._reads is not None:
            unread = [
                (child_path, child_st)
                for child_path, _, child_st, cached in entries
                if cached is None and stat.S_ISREG(child_st.st_mode)
            ]
            reads = self._reads.submit(self._read, unread)
        items: list[Node | _Pending | _FileItem] = []
        for child_path, child, child_st, cached in entries:
            if stat.S_ISREG(child_st.st_mode):
                items.append((child_path, child, child_st, cached, reads.pop(child_path, None)))
                continue
            node = self._entry(child_path, child, child_st, listed=True)
            if node is not None:
                items.append(node)
        pending = _Pending()

        def finish() -> None:
            nodes = []
            for item in items:
                node = (
                    self._file(*item)
                    if isinstance(item, tuple)
                    else item.result()
                    if isinstance(item, _Pending)
                    else item
                )
                if node is not None:
                    nodes.append(node)
            self.stats.dirs += 1
            subtree = self.writer.add_tree(Tree(nodes), os.fsdecode(path))
            pending.done(self._node(name, NodeType.DIR, st, subtree=subtree))

        self._defer(finish)
        return pending

    def _children(
        self, path: bytes, names: list[bytes]
    ) -> list[tuple[bytes, bytes, os.stat_result, list[bytes] | None]]:
        """A directory's entries to store: lstat'ed, not excluded, with their files-cache
        blobs."""
        listed: list[tuple[bytes, bytes, os.stat_result]] = []
        for child in names:
            child_path = os.path.join(path, child)
            child_st = self._lstat(child_path)
            if child_st is None or self._excluded(
                child_path, child, stat.S_ISDIR(child_st.st_mode)
            ):
                continue
            listed.append((child_path, child, child_st))
        files = [(name, FileState.of(st)) for _, name, st in listed if stat.S_ISREG(st.st_mode)]
        found = iter(
            self.cache.lookup(_directory_key(path), files) if self.cache is not None else []
        )
        entries: list[tuple[bytes, bytes, os.stat_result, list[bytes] | None]] = []
        for child_path, child, child_st in listed:
            cached = next(found, None) if stat.S_ISREG(child_st.st_mode) else None
            if cached is not None and not self._holds(cached, child_st.st_size):
                cached = None
            entries.append((child_path, child, child_st, cached))
        return entries

    def _holds(self, blobs: list[bytes], size: int) -> bool:
        """Whether every repository written holds ``blobs`` and they add up to ``size``
        bytes: a files cache row is used only then (a row naming blobs gone since, or too few
        or too many for the file, would store it wrong; and a repository that missed the
        last run needs the file read: it is read again instead)."""
        total = 0
        for blob in blobs:
            length = self.writer.indexed_length(blob)
            if length is None:
                return False
            total += length
        return total == size

    def _defer(self, finish: Callable[[], None]) -> None:
        """Finish a directory (its files' nodes, its tree) later, so the walk goes on listing
        and handing files to the readers meanwhile: finishing each directory at once left the
        readers idle while the walk listed the next one, and the walk idle while they read.
        Directories are finished in the order they were listed to the end, children before
        parents; at most DIRS_AHEAD wait."""
        self._later.append(finish)
        while len(self._later) > DIRS_AHEAD:
            self._later.popleft()()

    def _finish_all(self) -> None:
        while self._later:
            self._later.popleft()()

    def _file(
        self,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        cached: list[bytes] | None,
        read: _FileRead | None = None,
    ) -> Node | None:
        state = FileState.of(st)
        content = cached
        size = st.st_size
        if content is None:
            try:
                content, size = read.result() if read is not None else self._read(path, st)
            except (FileNotFoundError, _Replaced):
                self.stats.vanished.append(os.fsdecode(path))
                return None
            except OSError as exc:
                raise SourceUnreadable(os.fsdecode(path), exc.strerror) from None
            self.stats.files_read += 1
            self.stats.bytes_read += size
        if self.cache:
            self.cache.record(path[: len(path) - len(name)], name, state, content)
        self.stats.files += 1
        self.stats.bytes += size
        if self.progress:
            self.progress(self.stats.files, self.stats.bytes)
        link_group = f"{st.st_dev}:{st.st_ino}" if st.st_nlink > 1 else None
        return self._node(
            name, NodeType.FILE, st, size=size, content=tuple(content), link_group=link_group
        )

    def _read(self, path: bytes, st: os.stat_result) -> tuple[list[bytes], int]:
        """The file's blob ids and size; runs on a reader thread (touches no walk state)."""
        content: list[bytes] = []
        size = 0
        with open(_open_listed(path, st), "rb", buffering=0) as handle:
            chunks: Iterable[bytes | memoryview]
            if st.st_size <= self.chunker.whole_max:
                # Small files are one blob; files up to a few chunks are read whole and cut
                # in memory (a file that grew meanwhile: cut from what we read).
                data = handle.read()
                small = len(data) < self.chunker.min_size
                chunks = ([data] if data else []) if small else self.chunker.chunks_of(data)
            else:
                chunks = self.chunker.chunks(handle)
            for chunk in chunks:
                content.append(self.writer.add(BlobType.DATA, chunk))
                size += len(chunk)
        return content, size

    def _node(self, name: bytes, kind: NodeType, st: os.stat_result, **extra: object) -> Node:
        return Node(
            name=name,
            type=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            # the format's range (signed 64-bit): whoever can write a file can date it 2300
            mtime_ns=min(max(st.st_mtime_ns, INT64[0]), INT64[1]),
            user=_user(st.st_uid),
            group=_group(st.st_gid),
            **extra,  # type: ignore[arg-type]
        )


def _refuse_paths_beneath_links(paths: list[Path]) -> None:
    """A listed path beneath another listed path is covered by it, which holds only if that
    one is a directory: beneath a listed symbolic link (stored as a link), the path's files
    would silently be in no snapshot."""
    listed = set(paths)
    for path in paths:
        for parent in path.parents:
            if parent in listed and os.path.islink(parent):
                raise SourceUnreadable(
                    str(path),
                    f"it lies beneath {parent}, also listed, which is a symbolic link (stored "
                    "as a link); list the directory the link points to instead",
                )


def _directory_key(path: bytes) -> bytes:
    """A directory as the files cache names it: the prefix its entries' paths share
    (``os.path.join(path, name)`` minus the name), trailing slash included."""
    return os.path.join(path, b"")


class _Replaced(Exception):
    """The file at a path is no longer the one listed (swapped while the walk went on)."""


# Never a symlink's target; O_NONBLOCK: a FIFO swapped in must not block the open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _open_listed(path: bytes, listed: os.stat_result) -> int:
    """A descriptor of the regular file ``listed`` (its lstat) at ``path``. A file swapped
    for a symlink, a FIFO or another file since the lstat is _Replaced, never read: in a
    directory others can write to, the swap would store another file's content here."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # now a symlink
            raise _Replaced from None
        raise
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
        listed.st_dev,
        listed.st_ino,
    ):
        os.close(fd)
        raise _Replaced
    return fd


_Read = tuple[list[bytes], int]  # a file's blob ids and size
# A file of a directory not yet finished: path, name, lstat, files-cache blobs, its read.
_FileItem = tuple[bytes, bytes, os.stat_result, list[bytes] | None, "_FileRead | None"]


class _Pending:
    """A directory's node, once the directory is finished (Archiver._defer)."""

    __slots__ = ("_finished", "_node")

    def __init__(self) -> None:
        self._node: Node | None = None
        self._finished = False

    def done(self, node: Node) -> None:
        self._node, self._finished = node, True

    def result(self) -> Node:
        if not self._finished or self._node is None:  # children finish before their parent
            raise RuntimeError("a directory's node was used before it was finished")
        return self._node


class _Readers:
    """The threads that read, chunk and hash files for the walk (open and read release the
    GIL, and so do FastCDC's cut and BLAKE3 on large inputs).

    Small files go to a thread in batches (up to BATCH_FILES files, BATCH_BYTES bytes):
    handing each file over on its own cost several context switches per file, with the GIL
    passed between the walk and the readers each time. At most ``ahead`` batches are handed
    over and unfinished: submitting blocks until one is done, which bounds the work queued
    and never waits on the walk itself.
    """

    def __init__(self, threads: int, ahead: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="read")
        self._room = threading.BoundedSemaphore(ahead)

    def submit(
        self,
        read: Callable[[bytes, os.stat_result], _Read],
        files: list[tuple[bytes, os.stat_result]],
    ) -> dict[bytes, _FileRead]:
        """Hand ``files`` (path, lstat) over to be read; each path's read, to wait for."""
        reads: dict[bytes, _FileRead] = {}
        batch: list[tuple[bytes, os.stat_result]] = []
        size = 0
        for path, st in files:
            if batch and (len(batch) >= BATCH_FILES or size + st.st_size > BATCH_BYTES):
                self._submit(read, batch, reads)
                batch, size = [], 0
            batch.append((path, st))
            size += st.st_size
        if batch:
            self._submit(read, batch, reads)
        return reads

    def _submit(
        self,
        read: Callable[[bytes, os.stat_result], _Read],
        batch: list[tuple[bytes, os.stat_result]],
        reads: dict[bytes, _FileRead],
    ) -> None:
        self._room.acquire()
        try:
            future = self._pool.submit(_read_all, read, batch)
        except BaseException:
            self._room.release()
            raise
        future.add_done_callback(self._done)
        for index, (path, _) in enumerate(batch):
            reads[path] = _FileRead(future, index)

    def _done(self, _: Future[list[_Read | OSError | _Replaced]]) -> None:
        self._room.release()

    def close(self) -> None:
        """Drop what has not started (the walk failed) and wait for what has."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _read_all(
    read: Callable[[bytes, os.stat_result], _Read], batch: list[tuple[bytes, os.stat_result]]
) -> list[_Read | OSError | _Replaced]:
    """Read a batch on a reader thread. A file's own trouble (gone, replaced, unreadable)
    is its outcome, for the walk to judge; anything else (the repository's) fails them all."""
    outcomes: list[_Read | OSError | _Replaced] = []
    for path, st in batch:
        try:
            outcomes.append(read(path, st))
        except (OSError, _Replaced) as exc:
            outcomes.append(exc)
    return outcomes


class _FileRead:
    """One file's outcome in a batch read by a reader thread."""

    __slots__ = ("_future", "_index")

    def __init__(self, future: Future[list[_Read | OSError | _Replaced]], index: int) -> None:
        self._future, self._index = future, index

    def result(self) -> _Read:
        outcome = self._future.result()[self._index]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@cache
def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@cache
def _group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None
