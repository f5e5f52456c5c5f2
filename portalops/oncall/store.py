"""The on-call service's state in SQLite: incidents, the pages sent for them, report clocks.

Everything the service must remember across a restart lives here and nowhere else: which
escalation step of which incident is due when, which pages are still to be delivered, who
has been paged (so the resolution reaches them), and the Decree 331 report deadlines.

A page is written as ``pending`` in the same transaction that advances the escalation, and
marked ``sent`` or ``failed`` after delivery. So a restart never skips a step or pages
twice for one; a crash in the instant between a delivery and its mark sends that one page
again on restart (at least once: a duplicate page beats a lost one).

``ops oncall ack`` writes here directly (the service re-reads due work every tick), so an
acknowledgement works even when the service is down.

The database holds incident rows in its WAL too, so the file, its ``-wal`` and ``-shm`` are
0600 from the moment they exist (created under a 0077 umask; SQLite gives the WAL and SHM
the main file's mode) in a 0700 directory.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portalops.core.errors import OpsError
from portalops.core.timefmt import iso_z_epoch

log = logging.getLogger(__name__)


class StateDirError(OpsError):
    """the on-call state directory {} {}"""


SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key TEXT NOT NULL,
    alertname TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    alerts TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('firing', 'acknowledged', 'resolved')),
    serious INTEGER NOT NULL DEFAULT 0,
    opened_at REAL NOT NULL,
    acked_at REAL,
    acked_by TEXT,
    resolved_at REAL,
    nonce TEXT NOT NULL DEFAULT '',
    step INTEGER NOT NULL DEFAULT 0,
    round INTEGER NOT NULL DEFAULT 0,
    next_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open
    ON incidents (group_key) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS incidents_due ON incidents (next_at) WHERE next_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident INTEGER REFERENCES incidents (id),
    kind TEXT NOT NULL CHECK (kind IN ('page', 'resolved', 'reminder', 'test')),
    person TEXT,
    step INTEGER,
    round INTEGER,
    detail TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    channel TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS pages_pending ON pages (state) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS clocks (
    incident INTEGER NOT NULL REFERENCES incidents (id),
    kind TEXT NOT NULL CHECK (kind IN ('initial', 'full')),
    due_at REAL NOT NULL,
    reminded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (incident, kind)
);
"""


@dataclass(frozen=True)
class Incident:
    id: int
    group_key: str
    alertname: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    alerts: dict[str, dict[str, Any]]
    """The group's alerts by fingerprint: ``{"status", "labels"}`` as last reported."""
    status: str
    serious: bool
    opened_at: float
    acked_at: float | None
    acked_by: str | None
    resolved_at: float | None
    nonce: str
    """Random per incident, signed into its acknowledge links: a link names this incident,
    not whichever incident has its number in a recreated database."""
    step: int
    round: int
    next_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Incident:
        doc = dict(row)
        doc["labels"] = json.loads(doc["labels"])
        doc["annotations"] = json.loads(doc["annotations"])
        doc["alerts"] = json.loads(doc["alerts"])
        doc["serious"] = bool(doc["serious"])
        return cls(**doc)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alertname": self.alertname,
            "severity": self.severity,
            "status": self.status,
            "serious": self.serious,
            "labels": self.labels,
            "alerts": [
                {"fingerprint": f, "status": a["status"], "labels": a["labels"]}
                for f, a in self.alerts.items()
            ],
            "opened_at": _iso(self.opened_at),
            "acknowledged_at": _iso(self.acked_at),
            "acknowledged_by": self.acked_by,
            "resolved_at": _iso(self.resolved_at),
            "step": self.step,
            "round": self.round,
            "next_step_at": _iso(self.next_at),
        }


@dataclass(frozen=True)
class Page:
    id: int
    incident: int | None
    kind: str
    person: str | None
    step: int | None
    round: int | None
    detail: str
    state: str
    channel: str | None
    error: str | None
    created_at: float
    done_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident": self.incident,
            "kind": self.kind,
            "person": self.person,
            "step": self.step,
            "round": self.round,
            "state": self.state,
            "channel": self.channel,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "done_at": _iso(self.done_at),
        }


@dataclass(frozen=True)
class Clock:
    incident: int
    kind: str
    due_at: float
    reminded: int


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _rowid(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:  # an INSERT always sets it
        raise RuntimeError("SQLite returned no row id for an INSERT")
    return cursor.lastrowid


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return iso_z_epoch(stamp)


def private_dir(path: Path, *, ours: bool = True) -> None:
    """Create ``path`` 0700, or make an existing one so: a directory others can write to
    would let them swap the database or the secrets. One owned by somebody else is refused
    (chmod is not ours to do).

    A directory that is not ours (``ours=False``: ``oncall.database`` points outside
    portal-ops's state directory, maybe into a directory other services read) is never
    chmodded: it is used as it is if only its owner can write to it, else refused."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not ours:
        if mode & 0o022:
            raise StateDirError(
                path,
                f"of oncall.database is mode {mode:04o}: others could replace the database; "
                "give it its own directory (mode 0700), or remove group and other write",
            )
        return
    if not mode & 0o077:
        return
    if info.st_uid != os.geteuid():
        raise StateDirError(
            path, f"is mode {mode:04o} and owned by uid {info.st_uid}; make it 0700 and ours"
        )
    path.chmod(0o700)
    log.warning("%s was mode %04o; made it 0700 (it holds the on-call database and secrets)",
                path, mode)  # fmt: skip


@contextmanager
def _private_umask() -> Iterator[None]:
    """Files created inside are 0600 (process-wide; only around opening the database)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database of an older portal-ops up to :data:`SCHEMA`. Incidents from before
    the link nonce get a random one: links sent for them stop working (``ops oncall ack``
    still does)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(incidents)")}
    if "nonce" not in columns:
        db.execute("ALTER TABLE incidents ADD COLUMN nonce TEXT NOT NULL DEFAULT ''")
    for (incident_id,) in db.execute("SELECT id FROM incidents WHERE nonce = ''").fetchall():
        db.execute("UPDATE incidents SET nonce = ? WHERE id = ?", (new_nonce(), incident_id))


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


#: How long the health check's write probe waits for another writer (it runs on the loop).
HEALTH_BUSY_TIMEOUT = 0.1


class Store:
    """One SQLite database (WAL, so ``ops oncall ack`` can write while the service runs).

    ``own_dir``: the database's directory is portal-ops's own (``<state_dir>/oncall``),
    made 0700; otherwise it is only checked (:func:`private_dir`).

    ``busy_timeout``: how long a write waits for another writer. The service writes on its
    event loop, so it waits briefly and retries later (a locked database must not stall the
    webhook and the pages of other incidents); the command line can wait longer."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0, own_dir: bool = True) -> None:
        private_dir(path.parent, ours=own_dir)
        self.path = path
        with _private_umask():
            self.db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            _migrate(self.db)
        self.busy_timeout = busy_timeout
        opened = path.stat()
        self._identity = (opened.st_dev, opened.st_ino)
        for suffix in ("", "-wal", "-shm"):  # files an older portal-ops created 0644
            extra = path.with_name(path.name + suffix)
            if extra.exists() and stat.S_IMODE(extra.stat().st_mode) & 0o077:
                extra.chmod(0o600)

    def healthy(self) -> str | None:
        """None if the database answers a read and would take a write; else why not.

        The write probe deletes nothing inside a transaction it rolls back: SQLite refuses
        it on a read-only database (``BEGIN IMMEDIATE`` alone succeeds there), and waits at
        most :data:`HEALTH_BUSY_TIMEOUT` for another writer. The file must still be the one
        opened: a deleted or replaced database file takes writes nobody will ever read."""
        try:
            current = self.path.stat()
        except OSError as exc:
            return f"database file {self.path} is gone ({exc.strerror})"
        if (current.st_dev, current.st_ino) != self._identity:
            return f"database file {self.path} was replaced since the service opened it"
        try:
            self.db.execute("SELECT 1 FROM incidents LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            return f"database unreadable: {exc}"
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(HEALTH_BUSY_TIMEOUT * 1000)}")
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM clocks WHERE incident = -1")
        except sqlite3.Error as exc:
            return f"database refuses writes: {exc}"
        finally:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- incidents ------------------------------------------------------------------------

    def open_incident(self, group_key: str) -> Incident | None:
        row = self.db.execute(
            "SELECT * FROM incidents WHERE group_key = ? AND status != 'resolved'",
            (group_key,),
        ).fetchone()
        return Incident.from_row(row) if row else None

    def incident(self, incident_id: int) -> Incident | None:
        row = self.db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return Incident.from_row(row) if row else None

    def last_incident(self, group_key: str) -> Incident | None:
        """The group's newest incident, open or resolved: its alerts' times order replays."""
        row = self.db.execute(
            "SELECT * FROM incidents WHERE group_key = ? ORDER BY id DESC LIMIT 1", (group_key,)
        ).fetchone()
        return Incident.from_row(row) if row else None

    def incidents(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        where = "WHERE status != 'resolved'" if open_only else ""
        rows = self.db.execute(
            f"SELECT * FROM incidents {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        ).fetchall()
        return [Incident.from_row(r) for r in rows]

    def due(self, now: float) -> list[Incident]:
        rows = self.db.execute(
            "SELECT * FROM incidents WHERE status = 'firing' AND next_at IS NOT NULL "
            "AND next_at <= ? ORDER BY next_at",
            (now,),
        ).fetchall()
        return [Incident.from_row(r) for r in rows]

    def next_due(self) -> float | None:
        row = self.db.execute(
            "SELECT min(next_at) FROM incidents WHERE status = 'firing' AND next_at IS NOT NULL"
        ).fetchone()
        return row[0] if row else None

    def open(
        self,
        conn: sqlite3.Connection,
        group_key: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        alerts: dict[str, dict[str, Any]],
        *,
        serious: bool,
        now: float,
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO incidents (group_key, alertname, severity, labels, annotations, alerts, "
            "status, serious, opened_at, next_at, nonce) "
            "VALUES (?, ?, ?, ?, ?, ?, 'firing', ?, ?, ?, ?)",
            (
                group_key,
                labels.get("alertname", "?"),
                labels.get("severity", "warning"),
                _dumps(labels),
                _dumps(annotations),
                _dumps(alerts),
                int(serious),
                now,
                now,
                new_nonce(),
            ),
        )
        return _rowid(cursor)

    def update_alerts(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        annotations: dict[str, str],
        alerts: dict[str, dict[str, Any]],
    ) -> None:
        conn.execute(
            "UPDATE incidents SET annotations = ?, alerts = ? WHERE id = ?",
            (_dumps(annotations), _dumps(alerts), incident_id),
        )

    def acknowledge(self, incident_id: int, by: str, now: float) -> Incident | None:
        """Mark a firing incident acknowledged; returns it, or None if it was not firing."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE incidents SET status = 'acknowledged', acked_at = ?, acked_by = ?, "
                "next_at = NULL WHERE id = ? AND status = 'firing'",
                (now, by, incident_id),
            ).rowcount
        return self.incident(incident_id) if changed else None

    # -- pages ----------------------------------------------------------------------------

    def add_page(
        self,
        conn: sqlite3.Connection,
        kind: str,
        person: str | None,
        now: float,
        *,
        incident: int | None = None,
        step: int | None = None,
        round_: int | None = None,
        detail: str = "",
        failed: str | None = None,
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO pages (incident, kind, person, step, round, detail, state, error, "
            "created_at, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                incident,
                kind,
                person,
                step,
                round_,
                detail,
                "failed" if failed else "pending",
                failed,
                now,
                now if failed else None,
            ),
        )
        return _rowid(cursor)

    def pending(self) -> list[Page]:
        rows = self.db.execute("SELECT * FROM pages WHERE state = 'pending' ORDER BY id")
        return [Page(**dict(r)) for r in rows.fetchall()]

    def finish_page(
        self, page_id: int, *, ok: bool, channel: str | None, error: str | None, now: float
    ) -> None:
        self.db.execute(
            "UPDATE pages SET state = ?, channel = ?, error = ?, done_at = ? WHERE id = ?",
            ("sent" if ok else "failed", channel, error, now, page_id),
        )

    def pages(self, incident_id: int | None = None) -> list[Page]:
        if incident_id is None:
            rows = self.db.execute("SELECT * FROM pages ORDER BY id")
        else:
            rows = self.db.execute(
                "SELECT * FROM pages WHERE incident = ? ORDER BY id", (incident_id,)
            )
        return [Page(**dict(r)) for r in rows.fetchall()]

    def paged_people(self, conn: sqlite3.Connection, incident_id: int) -> list[str]:
        """Everyone a page of this incident reached (or is still on its way to)."""
        rows = conn.execute(
            "SELECT person FROM pages WHERE incident = ? AND kind = 'page' "
            "AND state IN ('sent', 'pending') AND person IS NOT NULL "
            "GROUP BY person ORDER BY min(id)",
            (incident_id,),
        ).fetchall()
        return [r[0] for r in rows]

    # -- report clocks --------------------------------------------------------------------

    def start_clocks(
        self, conn: sqlite3.Connection, incident_id: int, deadlines: Sequence[tuple[str, float]]
    ) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO clocks (incident, kind, due_at) VALUES (?, ?, ?)",
            [(incident_id, kind, due) for kind, due in deadlines],
        )

    def clocks(self, *, reminded_below: int | None = None) -> list[Clock]:
        """Every clock; with ``reminded_below``, only those with reminders still to send."""
        if reminded_below is None:
            rows = self.db.execute("SELECT * FROM clocks ORDER BY due_at").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM clocks WHERE reminded < ? ORDER BY due_at", (reminded_below,)
            ).fetchall()
        return [Clock(**dict(r)) for r in rows]

    def clock(self, incident_id: int, kind: str) -> Clock | None:
        row = self.db.execute(
            "SELECT * FROM clocks WHERE incident = ? AND kind = ?", (incident_id, kind)
        ).fetchone()
        return Clock(**dict(row)) if row else None

    def mark_reminded(self, conn: sqlite3.Connection, clock: Clock, reminded: int) -> None:
        conn.execute(
            "UPDATE clocks SET reminded = ? WHERE incident = ? AND kind = ?",
            (reminded, clock.incident, clock.kind),
        )
