"""``kind: files``: directories and files of this host, archived as they are.

The one kind that is not a stream: instead of ``produce(source, sink)`` it has ``store``,
which walks the paths with the archiver and keeps a files cache per repository (an unchanged
file is not read again), committed only once the snapshot is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from portalops.backup.sources.base import Category, Name, Stored
from portalops.core.validate import Strict

if TYPE_CHECKING:
    from portalops.backup.config import Drill
    from portalops.backup.repo.chunker import Chunker
    from portalops.backup.repo.writer import BlobWriter

KIND = "files"
_LISTED = 20  # vanished and skipped paths named in the job's report


class FilesSource(Strict):
    """Directories and files of this host, archived as they are (deduplicated, with a files
    cache so unchanged files are not read again)."""

    name: Name
    """The source's name in snapshots, commands and metrics (``ops backup run --source``)."""
    kind: Literal["files"]
    """``files``: directories and files of this host."""
    category: Category
    """What the data is under Art. 11.2: config, logs, code or database (required here)."""
    paths: Annotated[list[Path], Field(min_length=1)]
    """Absolute paths, without ``..``; globs (``/etc/php*``) that match nothing are noted, a
    plain path that is missing fails the source."""
    exclude: list[str] = []
    """Patterns of names to leave out (``*.tmp``, ``cache/`` for a directory)."""

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.is_absolute():
                raise ValueError(f"'{path}' is not an absolute path")
            if ".." in path.parts:  # stored as given, it is a path a restore refuses
                raise ValueError(f"'{path}' goes up with '..': write the path it leads to")
        return paths


def describe(source: FilesSource) -> str:
    """The paths, for a one-line label; the snapshot itself lists each path (see ``store``)."""
    return " ".join(str(p) for p in source.paths)


def store(
    source: FilesSource,
    writer: BlobWriter,
    chunker: Chunker,
    cache_file: Path,
    progress: Callable[[int, int], None] | None,
) -> Stored:
    """Archive ``source.paths``; the files cache in ``cache_file`` is committed when the
    snapshot is written and discarded if anything fails before."""
    from portalops.backup.archive.archiver import Archiver  # noqa: PLC0415 - loaded when used
    from portalops.backup.archive.files_cache import FilesCache  # noqa: PLC0415 - loaded when used

    cache = FilesCache(cache_file)
    archiver = Archiver(writer, chunker, cache, list(source.exclude), progress=progress)
    try:
        root = archiver.archive(list(source.paths))
        writer.finish()
    except BaseException:
        writer.abort()
        cache.discard()
        raise
    stats = archiver.stats
    counts = {
        "files": stats.files,
        "dirs": stats.dirs,
        "symlinks": stats.symlinks,
        "bytes": stats.bytes,
        "files_read": stats.files_read,
        "bytes_read": stats.bytes_read,
        "vanished": len(stats.vanished),
        "skipped": len(stats.skipped),
    }
    return Stored(
        root,
        counts,
        [str(p) for p in source.paths],
        vanished=stats.vanished[:_LISTED],
        skipped=stats.skipped[:_LISTED],
        on_success=cache.commit,
    )


def drill(source: FilesSource, drill_config: Drill) -> None:
    """No database step: a drill checks restored files by what they are (``nginx -t`` on an
    nginx configuration), whatever kind stored them."""
