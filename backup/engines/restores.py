"""What every engine's ``restore`` shares (``ops backup restore … --to-database``): the report
it returns, its failure, and its two rules: nothing existing is overwritten, and every restored
database is counted against the record the backup kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from portalops.backup.engines.drills import recorded_databases
from portalops.backup.repo.snapshot import Snapshot
from portalops.core.errors import BadInput, OpsError


class RestoreFailed(OpsError):
    """{}"""


@dataclass
class DatabaseRestore:
    engine: str
    server: str  # where, without credentials
    databases: dict[str, str] = field(default_factory=dict)  # in the backup -> restored as
    warnings: list[str] = field(default_factory=list)
    # counts that differ from the record; client commands a dump held, refused
    problems: list[str] = field(default_factory=list)


def record_of(snapshot: Snapshot, db: str, report: DatabaseRestore) -> dict[str, Any] | None:
    """Database ``db``'s record in the snapshot, or None with a warning on ``report``."""
    record = recorded_databases(snapshot).get(db)
    if not isinstance(record, dict):
        report.warnings.append(f"the snapshot has no record of database {db}: rows not counted")
        return None
    return record


def refuse_existing(existing: set[str], plan: dict[str, str], where: str) -> None:
    """Stop before anything is loaded if a database to restore exists on the server."""
    clash = sorted(name for name in plan.values() if name in existing)
    if clash:
        raise BadInput(
            f"database {', '.join(clash)} already exists on {where}; nothing was restored. "
            "Drop it first, or restore under another name with --as NAME"
        )
