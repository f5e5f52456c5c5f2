"""Reaching a restore's entries through open directory descriptors, never through a symlink.

A restore writes names a hostile backup host chose into a target that may hold anything
already. Paths are therefore never handed to the kernel whole: every directory is opened
relative to its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY``, starting from the
target's own descriptor, and entries are created relative to the directory's descriptor
(``openat``, ``mkdirat``, ``symlinkat``…). A symlink at any component, planted in the target
before the restore or restored by it, is an error (``ELOOP``/``ENOTDIR``), never followed.

Relative paths are bytes joined by ``/``; tree names never hold ``/`` (backup/repo/tree.py refuses
them), so splitting a path on ``/`` gives back its names. Directory descriptors are cached
(least recently used first out): a pack's blobs mostly land in a few directories.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from types import TracebackType

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO where a file should be fails (ENXIO) instead of blocking the restore.
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CACHED_DIRS = 64


def split(rel: bytes) -> tuple[bytes, bytes]:
    """(parent directory, name) of a relative path; the parent of a top entry is ``b""``."""
    parent, _, name = rel.rpartition(b"/")
    return parent, name


class Beneath:
    """Directory descriptors below one root descriptor (which the caller owns)."""

    def __init__(self, root_fd: int, *, owns_root: bool = False, cached: int = CACHED_DIRS) -> None:
        self.root = root_fd
        self._owns_root = owns_root
        self._cached = max(cached, 2)  # the newest two: a directory and the one it opens
        self._fds: OrderedDict[bytes, int] = OrderedDict()

    @classmethod
    def open(cls, target: bytes, expect: tuple[int, int] | None = None) -> Beneath:
        """Open the root ``target`` (the path given to the restore, symlinks in it allowed);
        with ``expect`` (st_dev, st_ino), refuse a root that is not that directory."""
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            os.close(fd)
            raise FileNotFoundError(0, "the target directory was replaced", os.fsdecode(target))
        return cls(fd, owns_root=True)

    def dir(self, rel: bytes) -> int:
        """A descriptor of directory ``rel``; valid until the next call (it may be evicted)."""
        if not rel:
            return self.root
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        parts = rel.split(b"/")
        known = len(parts) - 1  # the deepest ancestor already open
        while known and b"/".join(parts[:known]) not in self._fds:
            known -= 1
        fd = self.dir(b"/".join(parts[:known]))
        for depth in range(known, len(parts)):
            fd = self._remember(
                b"/".join(parts[: depth + 1]), os.open(parts[depth], DIR_FLAGS, dir_fd=fd)
            )
        return fd

    def parent(self, rel: bytes) -> tuple[int, bytes]:
        """(descriptor of the parent directory, name) for the entry ``rel``."""
        parent, name = split(rel)
        return self.dir(parent), name

    def forget(self, rel: bytes) -> None:
        """Close ``rel``'s cached descriptor, if any (it is about to be replaced)."""
        fd = self._fds.pop(rel, None)
        if fd is not None:
            os.close(fd)

    def _remember(self, rel: bytes, fd: int) -> int:
        self._fds[rel] = fd
        while len(self._fds) > self._cached:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        if self._owns_root:
            os.close(self.root)
            self._owns_root = False

    def __enter__(self) -> Beneath:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
