"""What every source kind shares: its name rules, its Art. 11.2 category, what storing a source
gives back, and what a database drill does.

A kind module (``files``, ``postgres``, ...) defines its config model with these; the registry
in ``portalops.backup.sources`` lists the kinds. This module imports no kind module and not the
registry, so kind modules can import it freely.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field

if TYPE_CHECKING:
    from portalops.backup.repo.snapshot import Snapshot

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Category(StrEnum):
    """Art. 11.2: what must be backed up every day."""

    CONFIG = "config"
    LOGS = "logs"
    CODE = "code"
    DATABASE = "database"


@dataclass
class Stored:
    """What storing one source put into the repository: its root tree, and what its snapshot
    records. The blobs are written and flushed; the snapshot is not (the job writes it last)."""

    root: bytes  # root tree blob id
    counts: dict[str, int]  # the snapshot's summary: files, dirs, bytes, ...
    paths: list[str]  # the snapshot's ``paths``: where the data came from
    stats: dict[str, Any] = field(default_factory=dict)  # kind-specific (row counts, ...)
    vanished: list[str] = field(default_factory=list)  # a few, for the job's report
    skipped: list[str] = field(default_factory=list)
    # runs once the snapshot is written (the files kind commits its files cache then)
    on_success: Callable[[], None] | None = None


class DatabaseDrill(Protocol):
    """What a restore drill does with a database source's restored files: a kind's
    ``drill(source, drill_config)`` returns one, or None when the kind has no database step."""

    engine: str

    def load(self, restored: Path, snapshot: Snapshot, stack: ExitStack) -> str:
        """Load the dumps into a scratch server whose teardown goes on ``stack``; say what
        was loaded. Raises an :class:`OpsError` if any dump does not load."""

    def verify(self, snapshot: Snapshot) -> list[str]:
        """Problems found comparing the loaded databases with ``snapshot.stats``."""

    def smoke(self) -> list[str]:
        """Problems found running the smoke queries (none configured: no problems)."""
