"""Restore drills (Art. 11.3): prove the latest snapshot of each source really restores.

Every peer stops at checksums; a drill restores for real into scratch space, checks every
byte and the snapshot's own record (file count, total bytes), tests what it restored (an
nginx configuration must pass ``nginx -t``; database dumps load into a throwaway server and
match the row counts recorded at backup time), and measures how long the restore took
against the restore-time objective behind the Art. 19.3 contingency plan.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from portalops.backup.engines import engine
from portalops.backup.jobs.drill_nginx import nginx_test
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
from portalops.backup.repo.tree import NodeType
from portalops.backup.restore.files import restore, walk
from portalops.backup.sources import database_kinds
from portalops.backup.sources.base import DatabaseDrill
from portalops.core.errors import OpsError

log = logging.getLogger(__name__)


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class DrillResult:
    source: str
    category: str
    repository: str
    snapshot: str
    snapshot_time: datetime
    files: int = 0
    bytes: int = 0
    restore_seconds: float = 0.0  # everything it takes to get the data back, tests excluded
    total_seconds: float = 0.0
    steps: list[Step] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "category": self.category,
            "repository": self.repository,
            "snapshot": self.snapshot,
            "snapshot_time": self.snapshot_time,
            "ok": self.ok,
            "files": self.files,
            "bytes": self.bytes,
            "restore_seconds": round(self.restore_seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
            "steps": [
                {"name": s.name, "seconds": round(s.seconds, 3), "ok": s.ok, "detail": s.detail}
                for s in self.steps
            ],
            "reasons": self.reasons,
        }


@functools.cache
def _expected() -> tuple[type[BaseException], ...]:
    """What a step can meet in damaged data or a failing tool, the database engines' client
    errors included; anything else is a bug and surfaces. Asked for when a step fails, so that
    importing the drill (every ``ops`` command does) loads no database client library."""
    engine_errors = (error for name in database_kinds() for error in engine(name).errors())
    return (OpsError, OSError, ValueError, KeyError, *engine_errors)


class _Timer:
    def __init__(self, result: DrillResult, name: str) -> None:
        self.result, self.name = result, name

    def __enter__(self) -> Step:
        self.started = time.monotonic()
        self.step = Step(self.name, 0.0, True)
        return self.step

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        self.step.seconds = time.monotonic() - self.started
        if isinstance(exc, _expected()):
            self.step.ok = False
            self.step.detail = str(exc)
        if not self.step.ok:
            self.result.reasons.append(f"{self.name}: {self.step.detail}")
        self.result.steps.append(self.step)
        return isinstance(exc, _expected())


def drill_one(
    repo: Repository,
    ref: SnapshotRef,
    *,
    rto_seconds: float,
    scratch: Path | None = None,
    database: DatabaseDrill | None = None,
    run_as: str = "portal-ops-drill",
) -> DrillResult:
    """Drill the snapshot ``ref``; scratch space and throwaway servers are removed afterwards
    on every path. ``database`` loads a database source's dumps and checks them; ``nginx -t``
    runs as ``run_as`` (when ops is root)."""
    started = time.monotonic()
    result = DrillResult(ref.source, "", repo.name, ref.id, ref.time)
    snapshot: Snapshot | None = None
    with _Timer(result, "read snapshot") as step:
        snapshot = repo.read_snapshot(ref)
        result.category = snapshot.category
        step.detail = f"{snapshot.summary.get('files', 0)} files recorded"
    if snapshot is None or not result.ok:
        result.total_seconds = time.monotonic() - started
        return result
    with _Timer(result, "structure") as step:
        step.detail = _structure(repo, snapshot)
        step.ok = step.detail.startswith("all ")
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    # the stack stops throwaway servers before the temp dir goes
    with (
        tempfile.TemporaryDirectory(prefix="portal-ops-drill-", dir=scratch) as tmp,
        ExitStack() as stack,
    ):
        target = Path(tmp) / "restore"
        with _Timer(result, "restore") as step:
            restored = restore(repo, snapshot, target, name=f"{ref.source}@{ref.short_id}")
            files, total = _measure(target)
            result.files, result.bytes = files, total
            want_files = int(snapshot.summary.get("files", 0))
            want_bytes = int(snapshot.summary.get("bytes", 0))
            step.detail = f"{files} files, {total} bytes, {restored.verified_blobs} blobs verified"
            if (files, total) != (want_files, want_bytes):
                step.ok = False
                step.detail = (
                    f"restored {files} files / {total} bytes; the snapshot recorded "
                    f"{want_files} files / {want_bytes} bytes"
                )
        loaded = False
        if database is not None and step.ok:
            # loading the dump is part of getting the service back: it counts toward the RTO
            with _Timer(result, f"load into {database.engine}") as step:
                step.detail = database.load(target, snapshot, stack)
            loaded = step.ok
        # Everything so far is what getting the data back costs; the tests below are not.
        result.restore_seconds = sum(s.seconds for s in result.steps)
        if _has_nginx(target):
            with _Timer(result, "nginx -t") as step:
                problems, who = nginx_test(target, Path(tmp), run_as)
                step.ok = not problems
                step.detail = "; ".join(problems) or f"configuration OK (tested as {who})"
        if database is not None and loaded:
            with _Timer(result, "row counts") as step:
                problems = database.verify(snapshot)
                step.ok, step.detail = not problems, "; ".join(problems) or "as recorded"
            with _Timer(result, "smoke queries") as step:
                problems = database.smoke()
                step.ok, step.detail = not problems, "; ".join(problems) or "passed"
    if result.restore_seconds > rto_seconds:
        result.reasons.append(
            f"restore took {result.restore_seconds:.1f} s, over the objective of "
            f"{rto_seconds:g} s (drill.rto_seconds)"
        )
    result.total_seconds = time.monotonic() - started
    return result


def _structure(repo: Repository, snapshot: Snapshot) -> str:
    """Every blob the snapshot needs has a location whose pack is present at its indexed
    size (any of them: restore tries each, and a forged index may name others first)."""
    blobs = {snapshot.tree}
    for _, node in walk(repo, snapshot.tree):
        blobs.update(node.content)
        if node.type is NodeType.DIR and node.subtree is not None:
            blobs.add(node.subtree)
    sizes: dict[str, int | None] = {}
    used: set[str] = set()
    faults: set[str] = set()
    missing_blobs = 0
    for blob in blobs:
        locations = repo.index.locations(blob)
        if not locations:
            missing_blobs += 1
            continue
        wrong = []
        for location in locations:
            if location.pack not in sizes:
                sizes[location.pack] = repo.storage.size(location.pack)
            size, indexed = sizes[location.pack], repo.index.packs[location.pack].size
            if size == indexed:
                used.add(location.pack)
                break
            wrong.append(
                f"{location.pack} is missing"
                if size is None
                else f"{location.pack} is {size} bytes, the index says {indexed}"
            )
        else:
            faults.update(wrong)
    problems = sorted(faults)
    if missing_blobs:
        problems.append(f"{missing_blobs} blobs are in no index")
    if problems:
        raise DamagedObject(repo.name, f"snapshot {snapshot.source}", "; ".join(problems[:5]))
    return f"all {len(used)} packs present"


def _measure(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (
                not os.path.islink(os.path.join(dirpath, name))
                and st.st_mode & 0o170000 == 0o100000
            ):
                files += 1
                total += st.st_size
    return files, total


def _has_nginx(root: Path) -> bool:
    return any(root.glob("**/nginx/nginx.conf"))
