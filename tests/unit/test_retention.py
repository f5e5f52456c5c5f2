"""Retention: restic's forget rules with local (Asia/Ho_Chi_Minh) calendar buckets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portalops.backup.jobs.prune import decide
from portalops.backup.jobs.retention import EMPTY_POLICY_REASON, Decision, Policy, apply_policy
from portalops.backup.repo.snapshot import SnapshotRef

HCM = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass(frozen=True)
class Snap:
    id: str
    time: datetime


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snaps(*times: str) -> list[Snap]:
    return [Snap(f"s{i:03d}", utc(t)) for i, t in enumerate(times)]


def run(items: list[Snap], policy: Policy, tz: tzinfo = HCM) -> list[Decision[Snap]]:
    return apply_policy(items, lambda s: s.time, policy, tz)


def kept(decisions: list[Decision[Snap]]) -> dict[str, tuple[str, ...]]:
    return {d.snapshot.id: d.reasons for d in decisions if d.keep}


def nightly(start: datetime, days: int) -> list[Snap]:
    """One snapshot a night at 01:30 local (18:30 UTC the day before)."""
    first = start.replace(hour=18, minute=30, tzinfo=UTC)
    return [Snap(f"n{i:04d}", first + timedelta(days=i)) for i in range(days)]


# --- basic rules --------------------------------------------------------------------------------


def test_output_is_newest_first_and_covers_every_snapshot():
    items = snaps("2026-11-01T00:00", "2026-11-03T00:00", "2026-11-02T00:00")
    decisions = run(items, Policy(last=1))
    assert [d.snapshot.id for d in decisions] == ["s001", "s002", "s000"]
    assert [d.keep for d in decisions] == [True, False, False]
    assert decisions[1].reasons == ()


def test_keep_last_keeps_the_n_newest():
    items = snaps(*(f"2026-11-{d:02d}T03:00" for d in range(1, 11)))
    assert set(kept(run(items, Policy(last=3)))) == {"s009", "s008", "s007"}
    assert kept(run(items, Policy(last=3)))["s009"] == ("last",)


def test_keep_last_larger_than_history_keeps_all():
    items = snaps("2026-11-01T00:00", "2026-11-02T00:00")
    assert len(kept(run(items, Policy(last=10)))) == 2


def test_daily_keeps_newest_of_each_local_day():
    # Three snapshots on local 2026-11-10 (UTC 2026-11-09T17:00 .. 2026-11-10T16:59).
    items = snaps(
        "2026-11-09T17:00",  # 00:00 local on the 10th
        "2026-11-10T02:00",
        "2026-11-10T16:59",  # 23:59 local on the 10th
        "2026-11-10T17:00",  # 00:00 local on the 11th
        "2026-11-08T12:00",  # 19:00 local on the 8th
    )
    result = kept(run(items, Policy(daily=2)))
    assert result == {"s003": ("daily 2026-11-11",), "s002": ("daily 2026-11-10",)}


def test_daily_counts_days_that_have_snapshots_not_calendar_days():
    # A gap of a week: keep-daily 3 reaches back past it to the next day holding a snapshot.
    items = snaps("2026-11-20T03:00", "2026-11-19T03:00", "2026-11-10T03:00", "2026-11-09T03:00")
    assert set(kept(run(items, Policy(daily=3)))) == {"s000", "s001", "s002"}


def test_weekly_monthly_yearly_over_two_years_of_nightly_backups():
    items = nightly(datetime(2025, 1, 1), 730)  # 2025-01-02 .. 2027-01-01 local
    decisions = run(items, Policy(daily=7, weekly=4, monthly=12, yearly=3))
    reasons = [r for d in decisions for r in d.reasons]
    daily = [r for r in reasons if r.startswith("daily")]
    weekly = [r for r in reasons if r.startswith("weekly")]
    monthly = [r for r in reasons if r.startswith("monthly")]
    yearly = [r for r in reasons if r.startswith("yearly")]
    # The newest backup is at 2027-01-01 01:30 local: a Friday in ISO week 2026-W53.
    assert daily == ["daily 2027-01-01"] + [f"daily 2026-12-{d}" for d in range(31, 25, -1)]
    assert weekly == ["weekly 2026-W53", "weekly 2026-W52", "weekly 2026-W51", "weekly 2026-W50"]
    assert monthly == ["monthly 2027-01"] + [f"monthly 2026-{m:02d}" for m in range(12, 1, -1)]
    assert yearly == ["yearly 2027", "yearly 2026", "yearly 2025"]
    # The newest of each bucket: for full months the last night of the month (local).
    by_reason = {r: d.snapshot.time.astimezone(HCM) for d in decisions for r in d.reasons}
    assert by_reason["monthly 2026-02"].date().isoformat() == "2026-02-28"
    assert by_reason["weekly 2026-W52"].date().isoformat() == "2026-12-27"  # a Sunday
    assert by_reason["yearly 2025"].date().isoformat() == "2025-12-31"
    # Every kept snapshot is counted once even when several rules keep it.
    assert sum(d.keep for d in decisions) == len({d.snapshot.id for d in decisions if d.keep})
    assert sum(d.keep for d in decisions) <= 7 + 4 + 12 + 3


def test_overlapping_reasons_are_all_listed_in_rule_order():
    items = nightly(datetime(2026, 11, 20), 9)  # newest: 2026-11-29 01:30 local, a Sunday
    newest = run(items, Policy(last=1, daily=1, weekly=1, monthly=1, yearly=1))[0]
    assert newest.reasons == (
        "last",
        "daily 2026-11-29",
        "weekly 2026-W48",
        "monthly 2026-11",
        "yearly 2026",
    )


def test_rule_with_zero_count_keeps_nothing():
    items = nightly(datetime(2026, 1, 1), 60)
    result = kept(run(items, Policy(monthly=2)))
    assert len(result) == 2
    assert all(r[0].startswith("monthly") for r in result.values())


# --- time zone and calendar edges --------------------------------------------------------------


def test_same_utc_day_two_local_days():
    # Both on 2026-11-28 in UTC; 18:30Z is already 2026-11-29 01:30 in Ha Noi.
    items = snaps("2026-11-28T10:00", "2026-11-28T18:30")
    assert kept(run(items, Policy(daily=2))) == {
        "s001": ("daily 2026-11-29",),
        "s000": ("daily 2026-11-28",),
    }
    # Under UTC buckets the same pair would share one day.
    assert len(kept(run(items, Policy(daily=2), tz=UTC))) == 1


def test_two_utc_days_one_local_day():
    # 2026-11-28T17:30Z and 2026-11-29T16:00Z are both on 2026-11-29 local.
    items = snaps("2026-11-28T17:30", "2026-11-29T16:00")
    assert kept(run(items, Policy(daily=2))) == {"s001": ("daily 2026-11-29",)}
    assert len(kept(run(items, Policy(daily=2), tz=UTC))) == 2


def test_month_and_year_boundary_follow_local_time():
    # 2026-12-31T17:30Z is 2027-01-01 00:30 local: a new month and a new year.
    items = snaps("2026-12-31T16:30", "2026-12-31T17:30")
    assert kept(run(items, Policy(monthly=2, yearly=2))) == {
        "s001": ("monthly 2027-01", "yearly 2027"),
        "s000": ("monthly 2026-12", "yearly 2026"),
    }


def test_iso_week_at_year_end():
    # 2026-12-31 (Thu) and 2027-01-01 (Fri) are both in ISO week 2026-W53; 2027-01-04 (Mon)
    # starts 2027-W01. Local noon = 05:00 UTC.
    items = snaps("2026-12-31T05:00", "2027-01-01T05:00", "2027-01-04T05:00")
    assert kept(run(items, Policy(weekly=5))) == {
        "s002": ("weekly 2027-W01",),
        "s001": ("weekly 2026-W53",),
    }


def test_iso_week_one_can_start_in_december():
    # 2025-12-29 (Mon) is in 2026-W01; 2025-12-28 (Sun) in 2025-W52.
    items = snaps("2025-12-28T05:00", "2025-12-29T05:00")
    assert kept(run(items, Policy(weekly=2))) == {
        "s001": ("weekly 2026-W01",),
        "s000": ("weekly 2025-W52",),
    }


def test_iso_week_boundary_is_local_monday_midnight():
    # Sunday 2026-11-29 23:30 local vs Monday 2026-11-30 00:30 local, 1 hour apart.
    items = snaps("2026-11-29T16:30", "2026-11-29T17:30")
    assert kept(run(items, Policy(weekly=2))) == {
        "s001": ("weekly 2026-W49",),
        "s000": ("weekly 2026-W48",),
    }


def test_times_in_any_offset_are_compared_as_instants():
    plus7 = timezone(timedelta(hours=7))
    a = Snap("a", datetime(2026, 11, 29, 1, 30, tzinfo=plus7))  # 2026-11-28T18:30Z
    b = Snap("b", datetime(2026, 11, 28, 19, 0, tzinfo=UTC))
    assert [d.snapshot.id for d in run([a, b], Policy(last=1))] == ["b", "a"]


def test_naive_time_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        run([Snap("x", datetime(2026, 11, 28))], Policy(last=1))


# --- duplicates, empty input, empty policy ------------------------------------------------------


def test_duplicates_at_the_same_time_keep_one_per_bucket():
    items = [Snap("a", utc("2026-11-28T03:00")), Snap("b", utc("2026-11-28T03:00"))]
    decisions = run(items, Policy(daily=5))
    assert sum(d.keep for d in decisions) == 1
    # The tie is broken by the snapshot, not by list order.
    assert kept(decisions) == kept(run(list(reversed(items)), Policy(daily=5)))
    assert len(kept(run(items, Policy(last=5)))) == 2


def test_tiebreak_by_id():
    items = [Snap("a", utc("2026-11-28T03:00")), Snap("b", utc("2026-11-28T03:00"))]
    decisions = apply_policy(items, lambda s: s.time, Policy(daily=1), tiebreak=lambda s: s.id)
    assert kept(decisions) == {"b": ("daily 2026-11-28",)}


def test_identical_snapshot_listed_twice():
    s = Snap("a", utc("2026-11-28T03:00"))
    decisions = run([s, s], Policy(daily=3))
    assert [d.keep for d in decisions] == [True, False]


def test_no_snapshots():
    assert run([], Policy(last=3)) == []
    assert run([], Policy()) == []


def test_empty_policy_keeps_everything():
    items = nightly(datetime(2026, 1, 1), 40)
    decisions = run(items, Policy())
    assert all(d.keep for d in decisions)
    assert {d.reasons for d in decisions} == {(EMPTY_POLICY_REASON,)}
    assert Policy().empty
    assert not Policy(yearly=1).empty


@pytest.mark.parametrize(
    "kwargs",
    [{"last": -1}, {"daily": -3}, {"weekly": 1.5}, {"monthly": "7"}, {"yearly": True}],
)
def test_policy_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="expected a whole number >= 0"):
        Policy(**kwargs)


# --- properties ---------------------------------------------------------------------------------

START = datetime(2024, 12, 20, tzinfo=UTC)
times = st.integers(min_value=0, max_value=2 * 366 * 24 * 60).map(
    lambda minutes: START + timedelta(minutes=minutes)
)
# A few snapshots pile up on one instant now and then: draw from a small pool sometimes.
snapshot_sets = st.lists(
    st.one_of(times, st.sampled_from([START, START + timedelta(days=400)])),
    max_size=60,
).map(lambda ts: [Snap(f"id{i:03d}", t) for i, t in enumerate(ts)])
counts = st.integers(min_value=0, max_value=6)
policies = st.builds(
    Policy, last=counts, daily=counts, weekly=counts, monthly=counts, yearly=counts
)


@settings(max_examples=150, deadline=None)
@given(items=snapshot_sets, policy=policies)
def test_kept_never_exceeds_the_policy_total(items, policy):
    decisions = run(items, policy)
    assert len(decisions) == len(items)
    if policy.empty:
        assert all(d.keep for d in decisions)
    else:
        assert sum(d.keep for d in decisions) <= policy.total
    # Every kept snapshot names a reason; every removed one none.
    assert all(bool(d.reasons) == d.keep for d in decisions)


@settings(max_examples=150, deadline=None)
@given(items=snapshot_sets.filter(bool), policy=policies)
def test_newest_is_always_kept(items, policy):
    decisions = run(items, policy)
    newest = max(s.time for s in items)
    assert decisions[0].snapshot.time == newest
    assert decisions[0].keep


@settings(max_examples=150, deadline=None)
@given(items=snapshot_sets, policy=policies, data=st.data())
def test_result_depends_only_on_the_set(items, policy, data):
    shuffled = data.draw(st.permutations(items))
    first = run(items, policy)
    second = run(shuffled, policy)
    assert first == second


@settings(max_examples=100, deadline=None)
@given(items=snapshot_sets, policy=policies)
def test_each_bucket_rule_keeps_at_most_one_per_bucket(items, policy):
    skip = ("last", EMPTY_POLICY_REASON)
    reasons = [r for d in run(items, policy) for r in d.reasons if r not in skip]
    assert len(reasons) == len(set(reasons))


@settings(max_examples=100, deadline=None)
@given(items=snapshot_sets, policy=policies)
def test_newest_of_each_kept_bucket_is_the_one_kept(items, policy):
    decisions = run(items, policy)
    for d in decisions:
        for reason in d.reasons:
            if reason in ("last", EMPTY_POLICY_REASON):
                continue
            # No other snapshot in the same bucket is newer.
            rule, bucket = reason.split(" ")
            assert not any(
                other.snapshot.time > d.snapshot.time
                and _bucket(rule, other.snapshot.time) == bucket
                for other in decisions
            )


def _bucket(rule: str, when: datetime) -> str:
    local = when.astimezone(HCM)
    iso = local.isocalendar()
    return {
        "daily": local.date().isoformat(),
        "weekly": f"{iso.year}-W{iso.week:02d}",
        "monthly": f"{local.year}-{local.month:02d}",
        "yearly": str(local.year),
    }[rule]


# --- one source's decisions in a repository a writer may have forged into (jobs.prune) ------


def _ref(stated: datetime, stored: datetime, name: str) -> SnapshotRef:
    return SnapshotRef(stated, "webroot", name.ljust(64, "0"), stored)


def test_past_dated_forgeries_cannot_push_a_genuine_day_out():
    """Snapshots stated in past days but written today land in today's bucket (storage time),
    so the genuine snapshot of two days ago keeps its own day."""
    now = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    genuine = _ref(now - timedelta(days=2, minutes=5), now - timedelta(days=2), "a")
    forged = [
        _ref(now - timedelta(days=d, minutes=-30), now, f"f{d}") for d in (2, 3)
    ]  # stated later in those days than the genuine one
    kept = {d.snapshot.id for d in decide([genuine, *forged], Policy(daily=2), HCM) if d.keep}
    assert genuine.id in kept


@settings(max_examples=100, deadline=None)
@given(items=snapshot_sets, policy=policies, future=st.integers(min_value=0, max_value=12))
def test_the_newest_genuine_snapshot_is_always_kept(items, policy, future):
    refs = [_ref(item.time, item.time + timedelta(minutes=3), item.id) for item in items]
    refs += [
        _ref(
            datetime(2098, 1, 1, tzinfo=UTC) + timedelta(days=i),
            datetime(2026, 1, 1, tzinfo=UTC),
            f"x{i}",
        )
        for i in range(future)
    ]
    decisions = decide(refs, policy, HCM)
    assert len(decisions) == len(refs)
    assert all(d.keep for d in decisions if d.snapshot.future_dated)  # never counted or removed
    genuine = [r for r in refs if not r.future_dated]
    if genuine:
        newest = max(genuine)
        assert any(d.keep and d.snapshot == newest for d in decisions)
