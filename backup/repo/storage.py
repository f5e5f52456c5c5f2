"""Where repository objects live: one small interface, a local directory and S3 behind it.

Objects are immutable and named by content (FORMAT.md), so a backend needs no update or
rename: put-if-absent, get, list, delete. Only ``locks/`` objects are ever deleted by writers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from portalops.core.errors import OpsError


class StorageError(OpsError):
    """repository {}: {}"""


class ObjectMissing(StorageError):
    """repository {}: object {} does not exist"""

    exit_code = StorageError.exit_code


class ObjectLocked(StorageError):
    """repository {}: object {} is under retention (Object Lock) until {}"""


class ObjectTooLarge(StorageError):
    """repository {}: object {} is {} bytes, more than the {} any such object may be"""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # When the storage says the object was written (S3 LastModified, a local file's mtime):
    # the witness of time that a writer does not state itself. None where unknown.
    modified: datetime | None = None


class Storage(Protocol):
    """A flat namespace of immutable objects with '/'-separated keys."""

    name: str  # the repository's name in config, for messages

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically: readers see all of it or nothing.

        ``data`` may be a buffer the caller fills again once this returns (the writer
        encrypts every pack into one): keep no reference to it past the return."""

    def get(self, key: str, max_size: int | None = None) -> bytes:
        """The whole object; ObjectMissing if absent; ObjectTooLarge, before reading any of
        it, if it is larger than ``max_size``."""

    def size(self, key: str) -> int | None:
        """Size in bytes, or None if absent."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in no particular order."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine); ObjectLocked if retention forbids it."""

    def describe(self) -> str:
        """Where this is, for messages (a path or s3://bucket/prefix)."""


class LocalStorage:
    """A repository in a local directory (or a mounted filesystem).

    Every put writes a temp file beside the target, fsyncs it, renames it into place and
    fsyncs the directory, so a crash or power cut leaves the old state or the new one.
    """

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(self.name, f"refusing object key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(self.name, f"cannot write {key}: {_reason(exc)}") from exc

    def get(self, key: str, max_size: int | None = None) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                if max_size is None:
                    return handle.read()
                size = os.fstat(handle.fileno()).st_size
                if size > max_size:
                    raise ObjectTooLarge(self.name, key, size, max_size)
                data = handle.read(max_size + 1)  # one byte more shows a file that grew
            if len(data) > max_size:
                raise ObjectTooLarge(self.name, key, f"at least {len(data)}", max_size)
            return data
        except FileNotFoundError:
            raise ObjectMissing(self.name, key) from None
        except OSError as exc:
            raise StorageError(self.name, f"cannot read {key}: {_reason(exc)}") from exc

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(self.name, f"cannot stat {key}: {_reason(exc)}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names, so listing snapshots/ never touches packs/.
        directory, _, _ = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return
        try:
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for filename in filenames:
                    if filename.startswith(".tmp-"):
                        continue  # a put that a crash interrupted: not an object
                    full = os.path.join(dirpath, filename)
                    key = os.path.relpath(full, self.root).replace(os.sep, "/")
                    if key.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):
                            st = os.stat(full)
                            modified = datetime.fromtimestamp(st.st_mtime, UTC)
                            yield ObjectInfo(key, st.st_size, modified)
        except OSError as exc:
            raise StorageError(self.name, f"cannot list {prefix}: {_reason(exc)}") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(self.name, f"cannot delete {key}: {_reason(exc)}") from exc
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({exc.filename})"
    return exc.strerror or str(exc)
