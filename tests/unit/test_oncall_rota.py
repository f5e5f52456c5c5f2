"""Who is on call: turns, handovers, overrides, paging targets, channels and coming gaps.

The calendar behind the expectations: 2026-01-05, -12, -19, -26, 02-02, 02-09, 02-16, 02-23
and 03-02 are Mondays; Asia/Ho_Chi_Minh is UTC+7 all year. The weekly rotation ``primary``
(an, binh, chi; Monday 08:00; starting 2026-01-05T08:00) therefore gives

    an   01-05  binh 01-12  chi 01-19  an 01-26  binh 02-02  chi 02-09  an 02-16
    binh 02-23  chi  03-02  an  03-09

each turn from 08:00 local that Monday to 08:00 the next.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import apprise
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portalops.oncall.config import Oncall, Person
from portalops.oncall.rota import (
    BEGINNING,
    Gap,
    Shift,
    channel_problems,
    gaps,
    on_call,
    parse_at,
    resolve_step,
    who,
)

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
MAIL = "mailto://an:S3cretPass@mail.example.gov.vn"
HOOK = "json://hooks.example.gov.vn/oncall"
TELEGRAM = "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQrr/987654321"
MICRO = timedelta(microseconds=1)


def local(text: str, zone: ZoneInfo = ZONE) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def utc(moment: datetime) -> datetime:
    """Where zones have daylight saving, compare instants in UTC: a local time in the
    repeated hour never equals a time in another zone (PEP 495), and two times in one zone
    subtract and compare by wall clock."""
    return moment.astimezone(UTC)


def config(**changes: Any) -> Oncall:
    data: dict[str, Any] = {
        "people": [
            {"id": "an", "name": "Nguyễn Văn An", "channels": [HOOK]},
            {"id": "binh", "name": "Trần Thị Bình", "channels": [MAIL]},
            {"id": "chi", "name": "Lê Minh Chí", "channels": [TELEGRAM]},
            {"id": "dung", "name": "Phạm Dũng", "channels": [HOOK]},
            {"id": "em", "name": "Hoàng Em", "channels": [HOOK]},
            {"id": "giang", "name": "Vũ Giang", "channels": [MAIL]},
        ],
        "rotations": {
            "primary": {
                "people": ["an", "binh", "chi"],
                "every": "week",
                "handover": "08:00",
                "start": "2026-01-05T08:00",
            },
            "secondary": {
                "people": ["dung", "em"],
                "every": "day",
                "handover": "09:30",
                "start": "2026-01-05T12:00",
            },
        },
        "team_lead": "giang",
    }
    data.update(changes)
    steps = [*data["rotations"], "team_lead"]  # every rotation, as the config requires
    data.setdefault("escalation", {"steps": [{"notify": step} for step in steps]})
    return Oncall.model_validate(data)


def person_at(oncall: Oncall, rotation: str, text: str) -> str | None:
    return on_call(oncall, rotation, local(text)).person


# --- turns -------------------------------------------------------------------------------


def test_weekly_turns_go_round_the_people_from_start() -> None:
    oncall = config()
    assert person_at(oncall, "primary", "2026-01-05T08:00") == "an"
    assert person_at(oncall, "primary", "2026-01-07T15:00") == "an"
    assert person_at(oncall, "primary", "2026-01-14T03:00") == "binh"
    assert person_at(oncall, "primary", "2026-01-25T23:59") == "chi"
    assert person_at(oncall, "primary", "2026-01-26T08:00") == "an"  # round again
    assert person_at(oncall, "primary", "2026-03-04T12:00") == "chi"  # 8 turns on: 8 % 3 = 2


def test_a_shift_runs_from_handover_to_handover_in_the_configured_zone() -> None:
    shift = on_call(config(), "primary", local("2026-01-07T15:00"))
    assert shift == Shift("primary", "an", local("2026-01-05T08:00"), local("2026-01-12T08:00"))
    assert shift.start.utcoffset() == timedelta(hours=7)
    assert shift.override is None


def test_the_handover_instant_belongs_to_the_next_person() -> None:
    oncall = config()
    at = local("2026-01-12T08:00")
    assert on_call(oncall, "primary", at - MICRO).person == "an"
    assert on_call(oncall, "primary", at - MICRO).end == at
    shift = on_call(oncall, "primary", at)
    assert (shift.person, shift.start, shift.end) == ("binh", at, local("2026-01-19T08:00"))


def test_at_may_be_given_in_any_zone() -> None:
    at = datetime(2026, 1, 12, 1, 0, tzinfo=UTC)  # 08:00 in Hanoi
    shift = on_call(config(), "primary", at)
    assert shift.person == "binh"
    assert shift.start.tzinfo == ZONE
    assert shift.start == at


def test_before_the_first_turn_nobody_is_on_call() -> None:
    shift = on_call(config(), "primary", local("2026-01-05T07:59"))
    assert shift.person is None
    assert shift.override is None
    assert shift.start == BEGINNING
    assert shift.end == local("2026-01-05T08:00")
    assert shift.to_json()["start"] is None


def test_a_start_date_means_that_days_handover() -> None:
    # start: 2026-01-05 (a Monday) with the 08:00 handover: an from Monday 08:00 to the next
    # Monday 08:00, then binh; nobody before the first handover
    oncall = config(rotations={"primary": {"people": ["an", "binh"], "start": "2026-01-05"}})
    assert person_at(oncall, "primary", "2026-01-05T07:59") is None
    assert person_at(oncall, "primary", "2026-01-05T08:00") == "an"
    assert person_at(oncall, "primary", "2026-01-12T07:59") == "an"
    assert person_at(oncall, "primary", "2026-01-12T08:00") == "binh"
    # the same with an explicit midnight: the turn that contains it began the week before
    early = config(rotations={"primary": {"people": ["an", "binh"], "start": "2026-01-05T00:00"}})
    assert person_at(early, "primary", "2025-12-29T08:00") == "an"
    assert person_at(early, "primary", "2026-01-05T08:00") == "binh"


def test_weekly_turns_hand_over_on_the_weekday_of_the_start_date() -> None:
    # 2026-01-07 is a Wednesday: turns run Wednesday 08:00 to Wednesday 08:00
    rotation = {"people": ["an", "binh"], "start": "2026-01-07T09:00"}
    oncall = config(rotations={"primary": rotation})
    shift = on_call(oncall, "primary", local("2026-01-12T08:00"))  # a Monday: no handover
    assert (shift.person, shift.start, shift.end) == (
        "an",
        local("2026-01-07T08:00"),
        local("2026-01-14T08:00"),
    )
    assert person_at(oncall, "primary", "2026-01-14T08:00") == "binh"


def test_daily_turns_hand_over_at_the_handover_time() -> None:
    # start 2026-01-05 12:00 is after 09:30: dung's turn began 01-05 09:30, em's 01-06 09:30
    oncall = config()
    assert person_at(oncall, "secondary", "2026-01-05T09:29") is None
    assert person_at(oncall, "secondary", "2026-01-05T09:30") == "dung"
    assert person_at(oncall, "secondary", "2026-01-06T09:29") == "dung"
    assert person_at(oncall, "secondary", "2026-01-06T09:30") == "em"
    shift = on_call(oncall, "secondary", local("2026-01-10T09:00"))  # turn 4 (01-09 09:30)
    assert (shift.person, shift.start, shift.end) == (
        "dung",
        local("2026-01-09T09:30"),
        local("2026-01-10T09:30"),
    )
    assert person_at(oncall, "secondary", "2026-01-10T10:00") == "em"  # turn 5


def test_a_daily_start_before_the_handover_time_belongs_to_the_previous_days_turn() -> None:
    rotation = {"people": ["dung", "em"], "every": "day", "handover": "09:30"}
    oncall = config(rotations={"secondary": {**rotation, "start": "2026-01-05T06:00"}})
    shift = on_call(oncall, "secondary", local("2026-01-05T06:00"))
    assert (shift.person, shift.start, shift.end) == (
        "dung",
        local("2026-01-04T09:30"),
        local("2026-01-05T09:30"),
    )


def test_a_one_person_rotation_still_ends_each_shift_at_the_handover() -> None:
    oncall = config(rotations={"primary": {"people": ["an"], "start": "2026-01-05T08:00"}})
    shift = on_call(oncall, "primary", local("2026-03-04T12:00"))
    assert (shift.person, shift.start, shift.end) == (
        "an",
        local("2026-03-02T08:00"),
        local("2026-03-09T08:00"),
    )


def test_handovers_keep_the_wall_clock_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    rotations = {
        "primary": {"people": ["an", "binh"], "start": "2026-03-23T08:00"},
        "secondary": {"people": ["dung", "em"], "every": "day", "start": "2026-10-24T08:00"},
    }
    oncall = config(timezone="Europe/Berlin", rotations=rotations)
    # clocks go forward on Sunday 2026-03-29: 08:00 on 03-23 is 07:00Z, on 03-30 06:00Z
    shift = on_call(oncall, "primary", datetime(2026, 3, 30, 5, 59, tzinfo=UTC))
    assert shift.person == "an"
    assert utc(shift.start) == datetime(2026, 3, 23, 7, 0, tzinfo=UTC)
    assert utc(shift.end) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)
    assert utc(shift.end) - utc(shift.start) == timedelta(hours=167)
    assert shift.end == local("2026-03-30T08:00", berlin)
    assert on_call(oncall, "primary", shift.end).person == "binh"
    # clocks go back on Sunday 2026-10-25: that day's turn lasts 25 hours
    shift = on_call(oncall, "secondary", datetime(2026, 10, 25, 6, 30, tzinfo=UTC))
    assert shift.person == "dung"
    assert utc(shift.start) == datetime(2026, 10, 24, 6, 0, tzinfo=UTC)
    assert utc(shift.end) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_a_handover_time_the_clock_skips_or_repeats_happens_once() -> None:
    # Berlin, handover 02:30. On 2026-03-29 02:30 does not exist: the handover happens when
    # 02:30 would be at the winter offset, 01:30Z (03:30 summer time). On 2026-10-25 02:30
    # happens twice: the handover is the first one, 00:30Z; the second 02:15 (01:15Z) is
    # after it, although its wall clock reads earlier.
    rotation = {"people": ["dung", "em"], "every": "day", "handover": "02:30"}
    oncall = config(
        timezone="Europe/Berlin",
        rotations={"secondary": {**rotation, "start": "2026-03-28T12:00"}},
    )
    spring = [  # turn 0 (dung) began 03-28 02:30 CET = 01:30Z; turn 1 (em) 03-29 01:30Z
        (datetime(2026, 3, 29, 1, 15, tzinfo=UTC), "dung"),  # 03:15 summer time
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "em"),
    ]
    for at, person in spring:
        assert on_call(oncall, "secondary", at).person == person, at
    assert utc(on_call(oncall, "secondary", spring[0][0]).end) == spring[1][0]
    # 03-28 is turn 0, so 10-25 is turn 211 (odd: em) and 10-24 turn 210 (dung)
    autumn = [
        (datetime(2026, 10, 25, 0, 29, tzinfo=UTC), "dung"),
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "em"),
        (datetime(2026, 10, 25, 1, 15, tzinfo=UTC), "em"),  # 02:15 the second time
    ]
    for at, person in autumn:
        assert on_call(oncall, "secondary", at).person == person, at
    shift = on_call(oncall, "secondary", autumn[2][0])
    assert utc(shift.start) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert utc(shift.end) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # 02:30 CET, 25 h later


# --- overrides ---------------------------------------------------------------------------


def test_an_override_for_a_week_of_leave() -> None:
    leave = {
        "rotation": "primary",
        "person": "chi",
        "start": "2026-01-12T08:00",
        "end": "2026-01-19T08:00",
        "reason": "binh on leave",
    }
    oncall = config(overrides=[leave])
    shift = on_call(oncall, "primary", local("2026-01-14T10:00"))
    assert shift == Shift(
        "primary",
        "chi",
        local("2026-01-12T08:00"),
        local("2026-01-19T08:00"),
        override="binh on leave",
    )
    # chi's own turn follows: the same person, but a shift of its own (no override)
    after = on_call(oncall, "primary", local("2026-01-20T10:00"))
    assert after == Shift("primary", "chi", local("2026-01-19T08:00"), local("2026-01-26T08:00"))
    # other rotations are untouched
    assert person_at(oncall, "secondary", "2026-01-14T10:00") == "em"  # turn 9


def test_a_holiday_override_spanning_a_handover_is_one_shift() -> None:
    tet = {
        "rotation": "primary",
        "person": "dung",
        "start": "2026-02-14T18:00",
        "end": "2026-02-18T08:00",
        "reason": "Tết",
    }
    oncall = config(overrides=[tet])
    before = on_call(oncall, "primary", local("2026-02-14T17:59"))
    assert (before.person, before.start, before.end) == (
        "chi",
        local("2026-02-09T08:00"),
        local("2026-02-14T18:00"),
    )
    for text in ("2026-02-14T18:00", "2026-02-16T07:59", "2026-02-16T08:00", "2026-02-18T07:59"):
        shift = on_call(oncall, "primary", local(text))
        assert shift == Shift(
            "primary", "dung", local("2026-02-14T18:00"), local("2026-02-18T08:00"), "Tết"
        )
    after = on_call(oncall, "primary", local("2026-02-18T08:00"))
    assert after == Shift("primary", "an", local("2026-02-18T08:00"), local("2026-02-23T08:00"))


def test_overlapping_overrides_the_last_listed_wins() -> None:
    # chi's own turn is 03-02 08:00 to 03-09 08:00
    swap = {
        "rotation": "primary",
        "person": "binh",
        "start": "2026-03-02T08:00",
        "end": "2026-03-06T18:00",
        "reason": "swap",
    }
    cover = {
        "rotation": "primary",
        "person": "an",
        "start": "2026-03-04T00:00",
        "end": "2026-03-05T00:00",
    }
    oncall = config(overrides=[swap, cover])
    expected = [
        ("2026-03-03T12:00", "binh", "swap", "2026-03-02T08:00", "2026-03-04T00:00"),
        ("2026-03-04T12:00", "an", "", "2026-03-04T00:00", "2026-03-05T00:00"),
        ("2026-03-05T12:00", "binh", "swap", "2026-03-05T00:00", "2026-03-06T18:00"),
        ("2026-03-07T12:00", "chi", None, "2026-03-06T18:00", "2026-03-09T08:00"),
    ]
    for at, person, reason, start, end in expected:
        shift = on_call(oncall, "primary", local(at))
        assert (shift.person, shift.override, shift.start, shift.end) == (
            person,
            reason,
            local(start),
            local(end),
        ), at
    # listed the other way round, the long swap hides the short cover entirely
    reversed_order = config(overrides=[cover, swap])
    shift = on_call(reversed_order, "primary", local("2026-03-04T12:00"))
    assert (shift.person, shift.override, shift.start, shift.end) == (
        "binh",
        "swap",
        local("2026-03-02T08:00"),
        local("2026-03-06T18:00"),
    )


def test_adjoining_overrides_for_the_same_person_and_reason_are_one_shift() -> None:
    em = {"rotation": "primary", "person": "em"}
    overrides = [
        {**em, "reason": "training", "start": "2026-04-01T00:00", "end": "2026-04-03T00:00"},
        {**em, "reason": "training", "start": "2026-04-03T00:00", "end": "2026-04-05T00:00"},
        {**em, "reason": "swap", "start": "2026-04-05T00:00", "end": "2026-04-06T00:00"},
    ]
    oncall = config(overrides=overrides)
    shift = on_call(oncall, "primary", local("2026-04-02T00:00"))
    assert (shift.person, shift.override, shift.start, shift.end) == (
        "em",
        "training",
        local("2026-04-01T00:00"),
        local("2026-04-05T00:00"),
    )
    # the same person for another reason is another shift
    shift = on_call(oncall, "primary", local("2026-04-05T12:00"))
    assert (shift.person, shift.override, shift.start, shift.end) == (
        "em",
        "swap",
        local("2026-04-05T00:00"),
        local("2026-04-06T00:00"),
    )


def test_an_override_before_the_rotation_starts_applies_too() -> None:
    early = {
        "rotation": "primary",
        "person": "an",
        "start": "2026-01-01T00:00",
        "end": "2026-01-02T00:00",
        "reason": "go-live",
    }
    oncall = config(overrides=[early])
    assert person_at(oncall, "primary", "2026-01-01T12:00") == "an"
    shift = on_call(oncall, "primary", local("2026-01-03T00:00"))
    assert (shift.person, shift.start, shift.end) == (
        None,
        local("2026-01-02T00:00"),
        local("2026-01-05T08:00"),
    )


# --- who, resolve_step, errors -----------------------------------------------------------


def test_who_lists_every_rotation_in_config_order() -> None:
    at = local("2026-01-14T10:00")
    assert [(s.rotation, s.person) for s in who(config(), at)] == [
        ("primary", "binh"),
        ("secondary", "em"),  # turn 9 since 01-05 09:30
    ]
    base = config()
    flipped = config(rotations=dict(reversed(list(base.model_dump()["rotations"].items()))))
    assert [s.rotation for s in who(flipped, at)] == ["secondary", "primary"]


def test_resolve_step_rotation_team_lead_and_person() -> None:
    oncall = config()
    at = local("2026-01-14T10:00")
    assert resolve_step(oncall, "primary", at) == "binh"
    assert resolve_step(oncall, "secondary", at) == "em"
    assert resolve_step(oncall, "team_lead", at) == "giang"
    assert resolve_step(oncall, "em", at) == "em"
    assert resolve_step(oncall, "primary", local("2026-01-01T00:00")) is None
    assert resolve_step(oncall, "nobody-known", at) is None
    no_lead = config(team_lead=None, escalation={"steps": [{"notify": "an"}]})
    assert resolve_step(no_lead, "team_lead", at) is None


def test_naive_times_are_refused() -> None:
    oncall = config()
    naive = datetime(2026, 1, 14, 10, 0)
    with pytest.raises(ValueError, match="no time zone"):
        on_call(oncall, "primary", naive)
    with pytest.raises(ValueError, match="no time zone"):
        who(oncall, naive)
    with pytest.raises(ValueError, match="no time zone"):
        resolve_step(oncall, "primary", naive)
    with pytest.raises(ValueError, match="no time zone"):
        gaps(oncall, naive, 2)


def test_an_unknown_rotation_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'tertiary' is not a rotation \(primary, secondary\)"):
        on_call(config(), "tertiary", local("2026-01-14T10:00"))


def test_shift_json_is_utc_with_z() -> None:
    shift = on_call(config(), "primary", local("2026-01-07T15:00"))
    assert shift.to_json() == {
        "rotation": "primary",
        "person": "an",
        "start": "2026-01-05T01:00:00Z",
        "end": "2026-01-12T01:00:00Z",
        "override": None,
    }


# --- channels ----------------------------------------------------------------------------


def someone(*channels: str) -> Person:
    return Person(id="an", name="An", channels=list(channels))


@pytest.mark.parametrize("url", [MAIL, HOOK, TELEGRAM])
def test_channels_apprise_can_load_have_no_problems(url: str) -> None:
    assert channel_problems(someone(url)) == []


def test_no_channels_at_all() -> None:
    assert channel_problems(someone()) == ["no channels"]


def test_an_unknown_scheme_is_named_without_the_rest_of_the_url() -> None:
    problems = channel_problems(someone("foo://an:hunter2@pager.example/tok3n"))
    assert problems == ["channel 1 is not a URL apprise understands (scheme 'foo')"]


def test_one_working_channel_is_enough() -> None:
    assert channel_problems(someone("foo://an:hunter2@pager.example", HOOK)) == []


def test_every_broken_channel_is_reported_by_position_and_scheme_only() -> None:
    secrets = ["hunter2", "SECRETTOKEN", "pa55word"]
    problems = channel_problems(
        someone("foo://an:hunter2@pager.example", "tgram://SECRETTOKEN/", "an:pa55word@example")
    )
    assert problems == [
        "channel 1 is not a URL apprise understands (scheme 'foo')",
        "channel 2 is not a URL apprise understands "
        "(scheme 'tgram' is known, but the rest of the URL is incomplete or malformed)",
        "channel 3 is not a URL apprise understands (no scheme:// at the start)",
    ]
    assert not any(secret in problem for secret in secrets for problem in problems)


def test_apprise_does_not_log_the_urls_it_refuses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1)
    url = "tgram://SECRETTOKEN/"
    channel_problems(someone(url, "an:pa55word@example"))
    assert "SECRETTOKEN" not in caplog.text
    assert "pa55word" not in caplog.text
    # the check has teeth: asked directly, apprise does log the URL it refuses
    apprise.Apprise.instantiate(url)
    assert "SECRETTOKEN" in caplog.text


# --- gaps --------------------------------------------------------------------------------


def gap_config(**changes: Any) -> Oncall:
    people = [
        {"id": "an", "name": "An", "channels": [HOOK]},
        {"id": "binh", "name": "Bình", "channels": [MAIL]},
        {"id": "chi", "name": "Chí"},  # no channels
        {"id": "giang", "name": "Giang", "channels": [TELEGRAM]},
    ]
    data: dict[str, Any] = {
        "people": people,
        "rotations": {
            "primary": {"people": ["an", "binh", "chi"], "start": "2026-01-19T08:00"},
        },
        "team_lead": "giang",
        "escalation": {"steps": [{"notify": "primary"}, {"notify": "team_lead"}]},
    }
    data.update(changes)
    return Oncall.model_validate(data)


NO_CHANNELS = "chi has no working channel: no channels"
NOBODY = "nobody on call"


def test_a_rotation_starting_in_two_weeks_leaves_those_two_weeks_uncovered() -> None:
    # an 01-19..01-26 and binh 01-26..02-02 can be paged; the range ends 02-02 08:00
    found = gaps(gap_config(), local("2026-01-05T08:00"), 4)
    assert found == [
        Gap(local("2026-01-05T08:00"), local("2026-01-19T08:00"), "primary", None, "nobody on call")
    ]


def test_a_week_of_someone_without_channels_is_exactly_that_week() -> None:
    found = gaps(gap_config(), local("2026-01-19T08:00"), 4)  # an, binh, chi, an
    assert found == [
        Gap(local("2026-02-02T08:00"), local("2026-02-09T08:00"), "primary", "chi", NO_CHANNELS)
    ]
    assert found[0].to_json() == {
        "start": "2026-02-02T01:00:00Z",
        "end": "2026-02-09T01:00:00Z",
        "rotation": "primary",
        "person": "chi",
        "problem": NO_CHANNELS,
    }


def test_gaps_are_clipped_to_the_range_and_listed_by_start() -> None:
    # from Wednesday 01-07 12:00 for 4 weeks (to 02-04 12:00): nobody until 01-19 08:00,
    # then an, binh, and chi from 02-02 08:00 to the end of the range
    found = gaps(gap_config(), local("2026-01-07T12:00"), 4)
    assert found == [
        Gap(local("2026-01-07T12:00"), local("2026-01-19T08:00"), "primary", None, NOBODY),
        Gap(local("2026-02-02T08:00"), local("2026-02-04T12:00"), "primary", "chi", NO_CHANNELS),
    ]
    assert all(g.start.tzinfo == ZONE for g in found)


def test_consecutive_shifts_of_the_same_problem_merge_into_one_gap() -> None:
    # a daily rotation of chi alone: 14 turns, one gap; and chi covering an's week by an
    # override right after chi's own turn: a different shift, the same gap
    daily = gap_config(
        rotations={"primary": {"people": ["chi"], "every": "day", "start": "2026-01-01"}}
    )
    assert gaps(daily, local("2026-01-05T08:00"), 2) == [
        Gap(local("2026-01-05T08:00"), local("2026-01-19T08:00"), "primary", "chi", NO_CHANNELS)
    ]
    cover = {
        "rotation": "primary",
        "person": "chi",
        "start": "2026-02-09T08:00",
        "end": "2026-02-16T08:00",
        "reason": "an on leave",
    }
    found = gaps(gap_config(overrides=[cover]), local("2026-01-19T08:00"), 5)
    assert found == [
        Gap(local("2026-02-02T08:00"), local("2026-02-16T08:00"), "primary", "chi", NO_CHANNELS)
    ]


def test_different_problems_in_a_row_stay_apart() -> None:
    # nobody until 01-19, then chi (no channels) first: two gaps meeting at 01-19 08:00
    rotations = {"primary": {"people": ["chi", "an"], "start": "2026-01-19T08:00"}}
    found = gaps(gap_config(rotations=rotations), local("2026-01-12T08:00"), 3)
    assert found == [
        Gap(local("2026-01-12T08:00"), local("2026-01-19T08:00"), "primary", None, NOBODY),
        Gap(local("2026-01-19T08:00"), local("2026-01-26T08:00"), "primary", "chi", NO_CHANNELS),
    ]


def test_team_lead_and_persons_named_in_steps_are_checked_for_the_whole_range() -> None:
    oncall = gap_config(
        team_lead="chi",
        people=[
            {"id": "an", "name": "An", "channels": [HOOK]},
            {"id": "binh", "name": "Bình", "channels": [MAIL]},
            {"id": "chi", "name": "Chí"},
            {"id": "giang", "name": "Giang", "channels": ["foo://giang:hunter2@x"]},
        ],
        escalation={"steps": [{"notify": "giang"}, {"notify": "team_lead"}, {"notify": "giang"}]},
    )
    start, end = local("2026-01-19T08:00"), local("2026-02-02T08:00")
    foo = "giang has no working channel: channel 1 is not a URL apprise understands (scheme 'foo')"
    assert gaps(oncall, start, 2) == [
        Gap(start, end, None, "giang", foo),  # named twice in the steps, reported once
        Gap(start, end, None, "chi", NO_CHANNELS),
    ]


def test_rotations_not_used_by_any_step_are_not_checked() -> None:
    rotations = {
        "primary": {"people": ["an"], "start": "2026-01-01"},
        "spare": {"people": ["chi"], "start": "2027-01-01"},
    }
    assert gaps(gap_config(rotations=rotations), local("2026-01-19T08:00"), 2) == []


def test_without_people_or_rotations_the_whole_range_is_one_gap() -> None:
    start, end = local("2026-01-05T08:00"), local("2026-01-19T08:00")
    whole = [Gap(start, end, None, None, "no on-call rotation configured")]
    assert gaps(Oncall(), start, 2) == whole
    people_only = Oncall.model_validate(
        {
            "people": [{"id": "an", "name": "An", "channels": [HOOK]}],
            "escalation": {"steps": [{"notify": "an"}]},
        }
    )
    assert gaps(people_only, start, 2) == whole


def test_an_empty_range_has_no_gaps_and_a_negative_one_is_refused() -> None:
    assert gaps(Oncall(), local("2026-01-05T08:00"), 0) == []
    with pytest.raises(ValueError, match="weeks must not be negative"):
        gaps(gap_config(), local("2026-01-05T08:00"), -1)


# --- parse_at ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-24T09:00", datetime(2026, 12, 24, 9, 0)),
        ("2026-12-24 09:00", datetime(2026, 12, 24, 9, 0)),
        ("  2026-12-24T09:00:30 ", datetime(2026, 12, 24, 9, 0, 30)),
        ("2026-12-24T02:00Z", datetime(2026, 12, 24, 9, 0)),
        ("2026-12-24T09:00+07:00", datetime(2026, 12, 24, 9, 0)),
        ("2026-12-24T04:00+02:00", datetime(2026, 12, 24, 9, 0)),
        ("2026-12-24", datetime(2026, 12, 24, 0, 0)),
    ],
)
def test_parse_at_forms(text: str, expected: datetime) -> None:
    parsed = parse_at(text, ZONE)
    assert parsed.tzinfo == ZONE
    assert parsed.replace(tzinfo=None) == expected
    assert parsed == expected.replace(tzinfo=ZONE)


def test_parse_at_naive_is_local_time_in_the_given_zone() -> None:
    parsed = parse_at("2026-12-24T09:00", ZoneInfo("Europe/Berlin"))
    assert parsed == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "   ", "tomorrow", "24/12/2026", "2026-13-01", "09:00"])
def test_parse_at_errors_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read") as caught:
        parse_at(text, ZONE)
    message = str(caught.value)
    assert repr(text) in message
    for form in ("2026-12-24 ", "2026-12-24T09:00", "2026-12-24T02:00Z", "Asia/Ho_Chi_Minh"):
        assert form in message


# --- property ----------------------------------------------------------------------------

ZONES = ["Asia/Ho_Chi_Minh", "Europe/Berlin", "America/New_York"]
PEOPLE = ["an", "binh", "chi", "dung"]


@st.composite
def rotas(draw: st.DrawFn) -> tuple[Oncall, datetime]:
    zone = draw(st.sampled_from(ZONES))
    start = datetime(2026, 1, 1) + timedelta(minutes=draw(st.integers(0, 366 * 24 * 60)))
    overrides = []
    for _ in range(draw(st.integers(0, 4))):
        begins = start + timedelta(minutes=draw(st.integers(-20 * 24 * 60, 60 * 24 * 60)))
        lasts = timedelta(minutes=draw(st.integers(1, 20 * 24 * 60)))
        overrides.append(
            {
                "rotation": "r",
                "person": draw(st.sampled_from(PEOPLE)),
                "start": begins.isoformat(),
                "end": (begins + lasts).isoformat(),
                "reason": draw(st.sampled_from(["", "leave", "Tết"])),
            }
        )
    rotation = {
        "people": draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=4)),
        "every": draw(st.sampled_from(["day", "week"])),
        "handover": f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 15, 30])):02d}",
        "start": start.isoformat(),
    }
    oncall = Oncall.model_validate(
        {
            "timezone": zone,
            "people": [{"id": p, "name": p} for p in PEOPLE],
            "rotations": {"r": rotation},
            "overrides": overrides,
            "escalation": {"steps": [{"notify": "r"}]},
        }
    )
    after = timedelta(
        microseconds=draw(st.integers(-30 * 24 * 3600 * 10**6, 120 * 24 * 3600 * 10**6))
    )
    at = utc(start.replace(tzinfo=ZoneInfo(zone))) + after  # UTC: every instant, folds too
    return oncall, at


def same_shift(one: Shift, other: Shift) -> bool:
    return (one.person, one.override, utc(one.start), utc(one.end)) == (
        other.person,
        other.override,
        utc(other.start),
        utc(other.end),
    )


@settings(max_examples=300, deadline=None)
@given(rotas())
def test_a_shift_is_the_maximal_interval_around_at(case: tuple[Oncall, datetime]) -> None:
    oncall, at = case
    shift = on_call(oncall, "r", at)
    start, end = utc(shift.start), utc(shift.end)
    assert start <= at < end
    assert same_shift(on_call(oncall, "r", start), shift)
    assert same_shift(on_call(oncall, "r", end - MICRO), shift)
    assert on_call(oncall, "r", start).person == on_call(oncall, "r", end - MICRO).person
    assert utc(on_call(oncall, "r", end).start) == end  # the next shift starts where it ends
    if shift.start != BEGINNING:  # maximal: the shift before ends where this one starts
        assert utc(on_call(oncall, "r", start - MICRO).end) == start
