"""What the last ``ops backup run`` did, for people (a JSON status file) and Prometheus (metrics).

After each run, ``<state_dir>/backup-status.json`` is updated per source x repository: the last
run (when it ended, ok or not, why not, snapshot, sizes, duration) and the last success. The
metrics file ``<metrics.textfile_dir>/portal_ops_backup.prom`` (node_exporter's textfile
collector) is rendered from that file, not from the run alone, so that:

- a source that failed tonight still reports when it last succeeded (the freshness alert
  measures from there, Art. 11.2 "daily");
- a run narrowed with ``--source`` leaves the other sources' series as they were.

Both files are replaced atomically: Prometheus and the on-call sysadmin never read half a file.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from portalops.backup.jobs.run import SourceResult
from portalops.core.atomic import write_atomic
from portalops.core.errors import OpsError
from portalops.core.metricsfile import write_textfile
from portalops.core.timefmt import iso_z, parse_iso_z

log = logging.getLogger(__name__)

STATUS_NAME = "backup-status.json"
METRICS_NAME = "portal_ops_backup.prom"
FORMAT = 1
LABELS = ("source", "category", "repository", "host")

# name -> help (docs/backup.md lists them), one series per source x repository.
FAMILIES = {
    "portalops_backup_last_success_timestamp_seconds": (
        "Time of the newest successful snapshot (when its reading began); 0 if none yet."
    ),
    "portalops_backup_last_run_success": "1 if the last run of this source succeeded, else 0.",
    "portalops_backup_last_run_timestamp_seconds": "When the last run that tried it ended.",
    "portalops_backup_duration_seconds": "How long the last run of this source took.",
    "portalops_backup_bytes": "Size of the source at the last successful backup.",
    "portalops_backup_added_bytes": (
        "Bytes the last successful backup added to the repository (compressed, deduplicated)."
    ),
}
# Old names still written beside their new ones, same value, for one release (docs/monitoring.md,
# "Deprecated metric names"): old name -> new name. Remove in portal-ops 0.3.0.
DEPRECATED = {"portalops_backup_bytes_added": "portalops_backup_added_bytes"}
FAMILIES.update(
    {old: f"Deprecated, removed in portal-ops 0.3.0: use {new}." for old, new in DEPRECATED.items()}
)


class StatusWriteError(OpsError):
    """cannot write the backup status file {}: {}"""


@dataclass(frozen=True)
class Attempt:
    """One run of one source into one repository."""

    time: datetime  # when the run ended
    ok: bool
    error: str | None = None
    snapshot: str | None = None
    snapshot_time: datetime | None = None  # when reading the source began
    bytes: int = 0
    bytes_added: int = 0
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "time": _iso(self.time),
            "ok": self.ok,
            "error": self.error,
            "snapshot": self.snapshot,
            "snapshot_time": _iso(self.snapshot_time),
            "bytes": self.bytes,
            "bytes_added": self.bytes_added,
            "duration_seconds": round(self.duration, 3),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Attempt:
        time = _parse_time(doc["time"])
        if time is None:
            raise ValueError("a run without a time")
        return cls(
            time=time,
            ok=bool(doc["ok"]),
            error=doc.get("error"),
            snapshot=doc.get("snapshot"),
            snapshot_time=_parse_time(doc.get("snapshot_time")),
            bytes=int(doc.get("bytes", 0)),
            bytes_added=int(doc.get("bytes_added", 0)),
            duration=float(doc.get("duration_seconds", 0.0)),
        )


@dataclass(frozen=True)
class Entry:
    source: str
    category: str
    repository: str
    host: str
    last_run: Attempt
    last_success: Attempt | None = None

    @property
    def last_success_time(self) -> datetime | None:
        if self.last_success is None:
            return None
        return self.last_success.snapshot_time or self.last_success.time

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "category": self.category,
            "repository": self.repository,
            "host": self.host,
            "last_success_time": _iso(self.last_success_time),
            "last_run": self.last_run.to_json(),
            "last_success": None if self.last_success is None else self.last_success.to_json(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Entry:
        success = doc.get("last_success")
        return cls(
            source=str(doc["source"]),
            category=str(doc["category"]),
            repository=str(doc["repository"]),
            host=str(doc["host"]),
            last_run=Attempt.from_json(doc["last_run"]),
            last_success=None if success is None else Attempt.from_json(success),
        )


@dataclass
class Status:
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)  # (source, repository)
    updated: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "updated": _iso(self.updated),
            "entries": [self.entries[k].to_json() for k in sorted(self.entries)],
        }


@dataclass
class Recorded:
    """Where a run was recorded, and what could not be (the backups happened regardless)."""

    status_file: Path | None = None
    metrics_file: Path | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status_file": None if self.status_file is None else str(self.status_file),
            "metrics_file": None if self.metrics_file is None else str(self.metrics_file),
            "problems": self.problems,
        }


def load_status(path: Path) -> Status:
    """The status file, or an empty status if there is none. A damaged file is reported and
    replaced: the next run rebuilds it (only last-success times of failing sources are lost)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Status()
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable backup status file %s: %s", path, exc)
        return Status()
    try:
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        entries = [Entry.from_json(e) for e in doc["entries"]]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring damaged backup status file %s: %s", path, exc)
        return Status()
    return Status({(e.source, e.repository): e for e in entries}, _parse_time(doc.get("updated")))


def update_status(
    status: Status,
    results: Iterable[SourceResult],
    finished: datetime,
    host: str,
    sources: Sequence[str],
    repositories: Sequence[str],
) -> Status:
    """``status`` with this run's results merged in. Entries of sources not in this run are
    kept; those of sources or repositories no longer configured are dropped."""
    entries = {
        key: entry
        for key, entry in status.entries.items()
        if entry.source in sources and entry.repository in repositories
    }
    for r in results:
        key = (r.source, r.repository)
        attempt = Attempt(
            time=finished,
            ok=r.ok,
            error=r.error,
            snapshot=r.snapshot,
            snapshot_time=r.time,
            bytes=r.bytes,
            bytes_added=r.bytes_added,
            duration=round(r.duration, 3),  # as the status file keeps it
        )
        previous = entries.get(key)
        last_success = attempt if r.ok else (previous.last_success if previous else None)
        entries[key] = Entry(r.source, r.category, r.repository, host, attempt, last_success)
    return Status(entries, finished)


def save_status(path: Path, status: Status) -> None:
    """Replace the status file atomically (0644: it holds no secret)."""
    data = (json.dumps(status.to_json(), indent=2, ensure_ascii=False) + "\n").encode()
    try:
        write_atomic(path, data, 0o644)
    except OSError as exc:
        raise StatusWriteError(path, exc.strerror or str(exc)) from None


def registry_for(status: Status) -> CollectorRegistry:
    """A fresh registry holding the status as gauges (the names docs/backup.md lists)."""
    registry = CollectorRegistry()
    gauges = {name: Gauge(name, text, LABELS, registry=registry) for name, text in FAMILIES.items()}
    for key in sorted(status.entries):
        e = status.entries[key]
        labels = dict(zip(LABELS, (e.source, e.category, e.repository, e.host), strict=True))
        success, run = e.last_success, e.last_run
        values = {
            "portalops_backup_last_success_timestamp_seconds": _ts(e.last_success_time),
            "portalops_backup_last_run_success": 1.0 if run.ok else 0.0,
            "portalops_backup_last_run_timestamp_seconds": _ts(run.time),
            "portalops_backup_duration_seconds": run.duration,
            "portalops_backup_bytes": float(success.bytes if success else 0),
            "portalops_backup_added_bytes": float(success.bytes_added if success else 0),
        }
        values.update({old: values[new] for old, new in DEPRECATED.items()})
        for name, value in values.items():
            gauges[name].labels(**labels).set(value)
    return registry


def write_metrics(textfile_dir: Path, status: Status, where: str) -> Path:
    """Write the metrics file atomically; MetricsWriteError if it cannot be written."""
    return write_textfile(textfile_dir / METRICS_NAME, registry_for(status), where)


def record_run(
    state_dir: Path,
    textfile_dir: Path | None,
    results: Sequence[SourceResult],
    finished: datetime,
    sources: Sequence[str],
    repositories: Sequence[str],
    where: str = "the config",
) -> Recorded:
    """Update the status file and the metrics after a run. Problems are logged and returned,
    not raised: the backups themselves have already happened, and the caller says so."""
    path = state_dir / STATUS_NAME
    status = update_status(
        load_status(path), results, finished, socket.gethostname(), sources, repositories
    )
    recorded = Recorded()
    try:
        save_status(path, status)
        recorded.status_file = path
    except OpsError as exc:
        recorded.problems.append(str(exc))
    if textfile_dir is not None:
        try:
            recorded.metrics_file = write_metrics(textfile_dir, status, where)
        except OpsError as exc:
            recorded.problems.append(str(exc))
    if recorded.problems:
        ok = sum(1 for r in results if r.ok)
        for problem in recorded.problems:
            log.error(
                "%s; the backups themselves ran (%d of %d ok, see the results): only their "
                "record is missing, so dashboards and alerts see stale data until this is fixed",
                problem,
                ok,
                len(results),
            )
    return recorded


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return iso_z(value)


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 time, got {value!r}")
    parsed = parse_iso_z(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ts(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()
