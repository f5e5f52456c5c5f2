"""Open the storage a repository's URL names: a local directory or an S3 bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from portalops.backup.repo.storage import LocalStorage, Storage, StorageError


class RepositoryLike(Protocol):
    """What ``open_storage`` reads of a repository's config (``backup.repositories[]``)."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def endpoint(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...

    @property
    def object_lock_days(self) -> int: ...


def open_storage(repo: RepositoryLike) -> Storage:
    """The backend for ``repo.url``: an absolute path (``file://`` accepted) or ``s3://``."""
    url = repo.url
    if url.startswith("s3://"):
        from portalops.backup.repo.s3 import S3Storage  # noqa: PLC0415 - boto3 loads only where S3 is used

        return S3Storage(
            repo.name,
            url,
            endpoint=repo.endpoint,
            region=repo.region,
            object_lock_days=repo.object_lock_days,
            max_attempts=getattr(repo, "attempts", 8),
            allow_overwriting_writes=getattr(repo, "allow_overwriting_writes", False),
        )
    path = url.removeprefix("file://") if url.startswith("file://") else url
    if "://" in path or not path.startswith("/"):
        raise StorageError(
            repo.name,
            f"unsupported repository URL {_shown(url)!r}; use an absolute path or "
            "s3://bucket/prefix",
        )
    if repo.object_lock_days > 0:
        raise StorageError(
            repo.name,
            f"object_lock_days is {repo.object_lock_days}, but {path} is a local directory; "
            "Object Lock needs an s3:// repository (set object_lock_days: 0 for local ones)",
        )
    return LocalStorage(repo.name, Path(path))


def _shown(url: str) -> str:
    """The URL for a message, without any user:password@ part it may carry."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url
