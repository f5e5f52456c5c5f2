"""backup/jobs/status.py: merging runs into the status, and the gauges rendered from it."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portalops.backup.jobs.run import SourceResult
from portalops.backup.jobs.status import (
    Status,
    load_status,
    registry_for,
    save_status,
    update_status,
)
from portalops.core.atomic import write_atomic
from portalops.core.errors import ExitCode

T0 = datetime(2026, 11, 27, 19, 30, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


def ok(source: str, at: datetime, size: int = 1000) -> SourceResult:
    return SourceResult(
        source, "code", "main", ok=True, snapshot=f"{source}-{at:%d}", time=at, bytes=size,
        bytes_added=size // 10, duration=2.5,
    )  # fmt: skip


def failed(source: str) -> SourceResult:
    return SourceResult(
        source, "code", "main", ok=False, error="cannot read /srv", duration=0.25,
        exit_code=ExitCode.PROBLEM_FOUND,
    )  # fmt: skip


def sample(status: Status, name: str, source: str) -> float | None:
    labels = {"source": source, "category": "code", "repository": "main", "host": "web1"}
    return registry_for(status).get_sample_value(name, labels)


def test_a_failure_keeps_the_previous_success() -> None:
    first = update_status(Status(), [ok("www", T0)], T0 + timedelta(minutes=5), "web1",
                          ["www"], ["main"])  # fmt: skip
    second = update_status(first, [failed("www")], T1 + timedelta(minutes=1), "web1",
                           ["www"], ["main"])  # fmt: skip
    entry = second.entries["www", "main"]
    assert entry.last_success is not None
    assert entry.last_success.snapshot == "www-27"
    assert not entry.last_run.ok
    assert entry.last_run.error == "cannot read /srv"
    get = sample
    assert get(second, "portalops_backup_last_success_timestamp_seconds", "www") == T0.timestamp()
    assert get(second, "portalops_backup_last_run_success", "www") == 0.0
    assert (
        get(second, "portalops_backup_last_run_timestamp_seconds", "www")
        == (T1 + timedelta(minutes=1)).timestamp()
    )
    assert get(second, "portalops_backup_duration_seconds", "www") == 0.25
    assert get(second, "portalops_backup_bytes", "www") == 1000.0  # of the last good backup
    assert get(second, "portalops_backup_added_bytes", "www") == 100.0
    # the name before 0.2.0, kept one release beside the new one
    assert get(second, "portalops_backup_bytes_added", "www") == 100.0


def test_never_succeeded_reads_zero() -> None:
    status = update_status(Status(), [failed("db")], T0, "web1", ["db"], ["main"])
    assert sample(status, "portalops_backup_last_success_timestamp_seconds", "db") == 0.0
    assert sample(status, "portalops_backup_last_run_success", "db") == 0.0


def test_other_sources_kept_and_removed_ones_dropped() -> None:
    both = update_status(Status(), [ok("www", T0), ok("etc", T0)], T0, "web1",
                         ["www", "etc"], ["main"])  # fmt: skip
    narrowed = update_status(both, [ok("www", T1)], T1, "web1", ["www", "etc"], ["main"])
    assert narrowed.entries["etc", "main"] == both.entries["etc", "main"]
    gone = update_status(narrowed, [ok("www", T1)], T1, "web1", ["www"], ["main"])
    assert set(gone.entries) == {("www", "main")}


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "backup-status.json"
    status = update_status(Status(), [ok("www", T0), failed("db")], T1, "web1",
                           ["www", "db"], ["main"])  # fmt: skip
    save_status(path, status)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load_status(path) == status
    assert [p.name for p in tmp_path.iterdir()] == ["backup-status.json"]


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"format": 2, "entries": []}', '{"format": 1, "entries": [{}]}']
)
def test_damaged_status_file_starts_afresh(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "backup-status.json"
    path.write_text(text)
    assert load_status(path) == Status()
    assert "backup status file" in caplog.text


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    target.chmod(0o600)
    write_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "f", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
