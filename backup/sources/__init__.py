"""The source kinds (Art. 11.2: files, databases, device and OS configuration), registered in
one place: ``KINDS`` below, and the ``Source`` union beside it.

A kind is one module, ``portalops.backup.sources.<kind>``, that defines:

- ``KIND = "<kind>"``: what ``kind:`` says in ops.yaml;
- its config model (``<Kind>Source``, a ``Strict`` model with ``name: Name``,
  ``kind: Literal["<kind>"]`` and ``category: Category`` from
  :mod:`portalops.backup.sources.base`), defined in the module itself;
- ``describe(source) -> str``: where the data comes from, what a stream kind's snapshot lists
  under ``paths`` (e.g. ``"command:nft list ruleset"``);
- either ``produce(source, sink) -> dict[str, Any]`` (a stream kind: it writes named streams
  into the :class:`~portalops.backup.archive.streams.Sink` and returns what the snapshot records
  in ``stats``, e.g. table row counts), or ``store(source, writer, chunker, cache_file,
  progress) -> Stored`` (a kind that builds its own tree: ``files``, with the archiver);
- ``drill(source, drill_config) -> DatabaseDrill | None``: the database step of a restore drill
  (load the dumps into a scratch server, compare row counts, run smoke queries), or None.

A kind whose model's ``category`` defaults to ``database`` is a database kind
(:func:`database_kinds`): its engine is ``backup/engines/<kind>.py``, which restores and drills
find through this list, and smoke queries (``drill.smoke``) may name its sources.

Kind modules are imported with this package, for their models, so they must stay light:
client libraries (psycopg, pymysql, paramiko) are imported inside the functions that use them
or in a module of their own imported there, and a host backing up only files never loads them.
A kind module imports only :mod:`~portalops.backup.sources.base`, lower layers (archive,
engines, repo, core) and, for annotations only (``TYPE_CHECKING``), ``portalops.backup.config``,
which imports this registry.

To add a kind: write its module, add it to ``KINDS`` and its model to ``Source``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast, get_args

from pydantic import BaseModel, Field

from portalops.backup.sources import command, files, mariadb, postgres, ssh
from portalops.backup.sources.base import Category, DatabaseDrill, Stored
from portalops.backup.sources.command import CommandSource
from portalops.backup.sources.files import FilesSource
from portalops.backup.sources.mariadb import MariadbSource
from portalops.backup.sources.postgres import PostgresSource
from portalops.backup.sources.ssh import SshSource

if TYPE_CHECKING:
    from portalops.backup.config import Drill
    from portalops.backup.repo.chunker import Chunker
    from portalops.backup.repo.writer import BlobWriter

__all__ = [
    "KINDS",
    "CommandSource",
    "FilesSource",
    "KindModule",
    "MariadbSource",
    "PostgresSource",
    "Source",
    "SshSource",
    "Stored",
    "database_kinds",
    "describe_source",
    "drill_for",
    "kind_named",
    "kind_of",
    "model_of",
    "store",
]


class KindModule(Protocol):
    """What every kind module has (besides ``produce`` or ``store``, and its model)."""

    KIND: str

    def describe(self, source: Any) -> str: ...

    def drill(self, source: Any, drill_config: Drill) -> DatabaseDrill | None: ...


KINDS: tuple[KindModule, ...] = (files, postgres, mariadb, command, ssh)

Source = Annotated[
    FilesSource | PostgresSource | MariadbSource | CommandSource | SshSource,
    Field(discriminator="kind"),
]

_BY_KIND = {module.KIND: module for module in KINDS}
_MODELS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["kind"].annotation)[0]: model
    for model in get_args(get_args(Source)[0])
}


class UnknownKind(KeyError):
    """No kind module is registered under this name (a bug: the config model admits only
    registered kinds)."""


def kind_named(kind: str) -> KindModule:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise UnknownKind(kind) from None


def kind_of(source: Source) -> KindModule:
    return kind_named(source.kind)


def model_of(kind: str) -> type[BaseModel]:
    """The config model of ``kind``."""
    try:
        return _MODELS[kind]
    except KeyError:
        raise UnknownKind(kind) from None


def describe_source(source: Source) -> str:
    """Where a source's data comes from, in one line (a stream's snapshot ``paths``)."""
    return kind_of(source).describe(source)


def database_kinds() -> tuple[str, ...]:
    """The database kinds, in registry order: each has an engine module of its name
    (:mod:`portalops.backup.engines`), and a database step in its drill."""
    return tuple(
        module.KIND
        for module in KINDS
        if model_of(module.KIND).model_fields["category"].default is Category.DATABASE
    )


def drill_for(source: Source, drill_config: Drill) -> DatabaseDrill | None:
    """The database step of a drill of ``source``, if its kind has one."""
    return kind_of(source).drill(source, drill_config)


def store(
    source: Source,
    writer: BlobWriter,
    chunker: Chunker,
    cache_file: Path,
    progress: Callable[[int, int], None] | None,
) -> Stored:
    """Store ``source`` through ``writer``: its kind's own ``store``, or its ``produce``
    streams as the files of one flat tree. ``cache_file`` is where a kind may keep state
    between runs for this source and repository (the files cache)."""
    module = kind_of(source)
    own_store = getattr(module, "store", None)
    if own_store is not None:
        return cast(Stored, own_store(source, writer, chunker, cache_file, progress))
    produce = getattr(module, "produce", None)
    if produce is None:
        raise TypeError(f"source kind {module.KIND} has neither produce nor store")
    from portalops.backup.archive.bases import DeltaBases, bases_dir  # noqa: PLC0415
    from portalops.backup.archive.streams import Sink  # noqa: PLC0415 - loaded when used

    bases = DeltaBases.open(bases_dir(cache_file), writer, chunker.max_size)
    sink = Sink(source.name, writer, chunker, progress=progress, bases=bases)
    try:
        stats = produce(source, sink)
        root = sink.root()
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    counts = {"files": len(sink.nodes), "dirs": 0, "bytes": sink.size}
    return Stored(root, counts, [module.describe(source)], stats, on_success=bases.commit)
