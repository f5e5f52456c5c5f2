"""Snapshot object names: parseable without a key, and in the order the backups ran."""

from datetime import UTC, datetime, timedelta

from portalops.backup.repo.snapshot import SnapshotRef


def test_name_round_trip() -> None:
    time = datetime(2026, 11, 28, 21, 56, 1, 123456, tzinfo=UTC)
    ref = SnapshotRef.for_object("portal-db", time, b"stored bytes")
    assert ref.key.startswith("snapshots/portal-db/20261128T215601.123456Z-")
    assert SnapshotRef.parse(ref.key) == ref
    assert SnapshotRef.parse("snapshots/x/garbage") is None


def test_runs_within_one_second_keep_their_order() -> None:
    """Two runs in the same second once made 'latest' pick either of them (a bug: the name
    carried whole seconds and ties fell to the random hash)."""
    start = datetime(2026, 11, 28, 21, 56, 1, 900000, tzinfo=UTC)
    refs = [
        SnapshotRef.for_object("logs", start + timedelta(microseconds=i * 20000), bytes([i]))
        for i in range(5)
    ]
    keys = sorted(r.key for r in refs)
    parsed = sorted(r for r in (SnapshotRef.parse(k) for k in keys) if r is not None)
    assert [p.time for p in parsed] == [r.time for r in refs]
