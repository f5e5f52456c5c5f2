"""Who is on call now, and where the coming weeks have nobody reachable.

A rotation hands over every day or week at ``handover`` local time. Its first turn is the
one that contains ``Rotation.start`` (a naive local time; the config turns a bare date into
that day's handover) and belongs to ``people[0]``; the next turn to ``people[1]``, and so on
cyclically. A weekly rotation hands over on the weekday of ``start``'s date, so ``start:
2026-01-05`` (a Monday) with the default 08:00 handover gives people[0] the week from Monday
2026-01-05 08:00. Before the first turn nobody is on call. Overrides (leave, holidays) take
precedence over the turns, before the first turn too; where several overlap, the one listed
last wins. Handovers are wall-clock times in ``oncall.timezone``: where clocks change, a
turn lasts an hour more or less and the handover stays at its local time."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from portalops.core.timefmt import iso_z
from portalops.oncall.config import Oncall, Person, Rotation

# Stands for "since ever" as the start of the shift before a rotation's first turn, when no
# override precedes it; ``to_json`` writes it as null. A day after datetime.min, so that
# converting it to any zone (offsets are under a day) cannot overflow.
BEGINNING = datetime(1, 1, 2, tzinfo=UTC)

_PERIODS = {"day": timedelta(days=1), "week": timedelta(weeks=1)}
_TICK = timedelta(microseconds=1)  # datetimes are whole microseconds: b - _TICK is just before b
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://")


@dataclass(frozen=True)
class Shift:
    """Who is on call for ``rotation`` from ``start`` to ``end`` (aware, in oncall.zone()).

    A shift is the maximal interval in which the state does not change: one turn of the
    rotation (cut where an override begins or ends), or one override window (merged with
    adjacent windows for the same person and reason, and across handovers it spans).
    ``person`` is None before the rotation's first turn; ``override`` is the reason of the
    override in force ("" when it gives none), else None. Before the first turn ``start`` is
    ``BEGINNING`` unless an override precedes it. In a zone with daylight saving, compare and
    subtract ``start`` and ``end`` in UTC: Python does both by wall clock within one zone.
    """

    rotation: str
    person: str | None
    start: datetime
    end: datetime
    override: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "rotation": self.rotation,
            "person": self.person,
            "start": None if self.start == BEGINNING else iso_z(self.start),
            "end": iso_z(self.end),
            "override": self.override,
        }


@dataclass(frozen=True)
class Gap:
    """From ``start`` to ``end`` an escalation step's target cannot be paged: nobody is on
    call for ``rotation``, or ``person`` has no channel apprise can load. ``rotation`` is
    None when the step names the team lead or a person directly."""

    start: datetime
    end: datetime
    rotation: str | None
    person: str | None
    problem: str

    def to_json(self) -> dict[str, object]:
        return {
            "start": iso_z(self.start),
            "end": iso_z(self.end),
            "rotation": self.rotation,
            "person": self.person,
            "problem": self.problem,
        }


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} {moment.isoformat()} has no time zone; pass an aware datetime")


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """A config time as a naive wall-clock time in ``zone`` (one written with an offset is
    converted)."""
    return moment if moment.tzinfo is None else moment.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in ``zone`` -> aware UTC. Comparing aware datetimes that share
    a tzinfo ignores their offsets, so everything is compared in UTC."""
    return wall.replace(tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class _State:
    person: str | None
    override: str | None
    key: tuple[object, ...]  # equal keys on both sides of an edge: the same shift goes on


class _Timeline:
    """One rotation with its overrides, as a function of time (all instants in UTC)."""

    def __init__(self, oncall: Oncall, name: str) -> None:
        rotation: Rotation = oncall.rotations[name]
        self.name = name
        self.zone = oncall.zone()
        self.people = rotation.people
        self.period = _PERIODS[rotation.every]
        start = _wall(rotation.start, self.zone)
        first = datetime.combine(start.date(), rotation.handover)
        if first > start:  # the turn containing start began at the previous handover
            first -= self.period
        self.first = first
        self.overrides = [
            (self.instant(o.start), self.instant(o.end), o.person, o.reason)
            for o in oncall.overrides
            if o.rotation == name
        ]
        self.edges = sorted({t for start, end, _, _ in self.overrides for t in (start, end)})

    def instant(self, written: datetime) -> datetime:
        return _instant(_wall(written, self.zone), self.zone)

    def handover(self, turn: int) -> datetime:
        return _instant(self.first + turn * self.period, self.zone)

    def turn(self, moment: datetime) -> int | None:
        """Index of the turn containing ``moment``; None before the first turn."""
        if moment < self.handover(0):
            return None
        turn = (moment.astimezone(self.zone).replace(tzinfo=None) - self.first) // self.period
        # the wall-clock estimate can be one off around a daylight-saving change
        while turn > 0 and self.handover(turn) > moment:
            turn -= 1
        while self.handover(turn + 1) <= moment:
            turn += 1
        return turn

    def state(self, moment: datetime) -> _State:
        for start, end, person, reason in reversed(self.overrides):  # the last listed wins
            if start <= moment < end:
                return _State(person, reason, ("override", person, reason))
        turn = self.turn(moment)
        if turn is None:
            return _State(None, None, ("nobody",))
        return _State(self.people[turn % len(self.people)], None, ("turn", turn))

    def next_edge(self, moment: datetime) -> datetime:
        """The first instant after ``moment`` at which the state may change."""
        turn = self.turn(moment)
        edge = self.handover(0 if turn is None else turn + 1)
        return min([edge, *(t for t in self.edges if moment < t < edge)])

    def previous_edge(self, moment: datetime) -> datetime | None:
        """The last instant at or before ``moment`` at which the state may change."""
        turn = self.turn(moment)
        candidates = [t for t in self.edges if t <= moment]
        if turn is not None:
            candidates.append(self.handover(turn))
        return max(candidates, default=None)

    def shift(self, at: datetime) -> Shift:
        here = self.state(at)
        end = self.next_edge(at)
        while self.state(end).key == here.key:
            end = self.next_edge(end)
        start: datetime = at
        while True:
            edge = self.previous_edge(start)
            if edge is None:
                start = BEGINNING
                break
            if self.state(edge - _TICK).key != here.key:
                start = edge
                break
            start = edge - _TICK
        return Shift(
            rotation=self.name,
            person=here.person,
            start=start.astimezone(self.zone),
            end=end.astimezone(self.zone),
            override=here.override,
        )


def _timeline(oncall: Oncall, rotation: str) -> _Timeline:
    if rotation not in oncall.rotations:
        known = ", ".join(oncall.rotations) or "none configured"
        raise ValueError(f"'{rotation}' is not a rotation ({known})")
    return _Timeline(oncall, rotation)


def on_call(oncall: Oncall, rotation: str, at: datetime) -> Shift:
    """The shift of ``rotation`` that contains ``at`` (an aware datetime)."""
    _require_aware(at, "on_call: at")
    return _timeline(oncall, rotation).shift(at.astimezone(UTC))


def who(oncall: Oncall, at: datetime) -> list[Shift]:
    """The shift containing ``at`` of every rotation, in config order."""
    return [on_call(oncall, name, at) for name in oncall.rotations]


def resolve_step(oncall: Oncall, notify: str, at: datetime) -> str | None:
    """The person an escalation step pages at ``at``: a rotation's person on call, the team
    lead for ``team_lead``, else ``notify`` itself when it is a person's id (in that order,
    should names collide). None when there is nobody: a rotation before its first turn, no
    team lead, or a target the config does not know (possible only with no people at all)."""
    _require_aware(at, "resolve_step: at")
    if notify in oncall.rotations:
        return on_call(oncall, notify, at).person
    if notify == "team_lead":
        return oncall.team_lead
    if any(person.id == notify for person in oncall.people):
        return notify
    return None


class _Hush(logging.Filter):
    """Drops apprise's log records in the thread that is checking channels: apprise logs an
    unparseable URL whole ("Unsupported URL: user:password@host"), secrets included."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)


_HUSH = _Hush()


@contextmanager
def _hushed() -> Iterator[None]:
    logging.getLogger("apprise").addFilter(_HUSH)  # idempotent
    before = getattr(_HUSH.local, "active", False)
    _HUSH.local.active = True
    try:
        yield
    finally:
        _HUSH.local.active = before


def _why_not(url: str) -> str:
    """Why apprise refused ``url``, naming only its scheme: the rest holds secrets."""
    match = _SCHEME.match(url.strip())
    if match is None:
        return "no scheme:// at the start"
    scheme = match[1].lower()
    from apprise.plugins import N_MGR  # noqa: PLC0415 - loaded when used

    if scheme not in N_MGR:  # apprise's registry of schemes
        return f"scheme '{scheme}'"
    if not N_MGR[scheme].enabled:
        return f"scheme '{scheme}' needs a Python package that is not installed"
    return f"scheme '{scheme}' is known, but the rest of the URL is incomplete or malformed"


def channel_problems(person: Person) -> list[str]:
    """[] when apprise can load at least one of ``person``'s channels; else why none works.
    Channels are numbered from 1 and shown by scheme only; nothing is sent."""
    if not person.channels:
        return ["no channels"]
    import apprise  # noqa: PLC0415 - who is on call needs no apprise

    problems = []
    with _hushed():
        for number, url in enumerate(person.channels, start=1):
            if apprise.Apprise.instantiate(url) is not None:
                return []
            problems.append(f"channel {number} is not a URL apprise understands ({_why_not(url)})")
    return problems


def _targets(oncall: Oncall) -> list[str]:
    return list(dict.fromkeys(step.notify for step in oncall.escalation.steps))


def gaps(oncall: Oncall, start: datetime, weeks: int) -> list[Gap]:
    """Every interval of ``weeks`` weeks from ``start`` in which an escalation step's target
    cannot be paged, ordered by start (then by step). Each target is followed shift by shift,
    so the gaps begin and end exactly at handovers and override edges."""
    _require_aware(start, "gaps: start")
    if weeks < 0:
        raise ValueError(f"gaps: weeks must not be negative, got {weeks}")
    zone = oncall.zone()
    begin = start.astimezone(zone)
    finish = (begin + timedelta(weeks=weeks)).astimezone(UTC)  # wall-clock weeks
    begin = begin.astimezone(UTC)
    if finish <= begin:
        return []
    if not oncall.people or not oncall.rotations:
        whole = Gap(begin, finish, None, None, "no on-call rotation configured")
        return [_in_zone(whole, zone)]
    people = {person.id: person for person in oncall.people}
    verdicts: dict[str, str | None] = {}  # apprise's answer does not change within the call

    def problem(person_id: str | None) -> str | None:
        if person_id is None:
            return "nobody on call"
        if person_id not in verdicts:
            problems = channel_problems(people[person_id])
            verdicts[person_id] = (
                f"{person_id} has no working channel: {'; '.join(problems)}" if problems else None
            )
        return verdicts[person_id]

    found: list[Gap] = []
    for target in _targets(oncall):
        ours: list[Gap] = []
        for lo, hi, rotation, person in _stretches(oncall, target, begin, finish):
            what = problem(person)
            if what is None:
                continue
            gap = Gap(lo, hi, rotation, person, what)
            if ours and ours[-1].end == lo and _same(ours[-1], gap):
                gap = Gap(ours.pop().start, hi, rotation, person, what)
            ours.append(gap)
        found.extend(ours)
    found.sort(key=lambda gap: gap.start)  # stable: steps' order among equal starts
    return [_in_zone(gap, zone) for gap in found]


def _same(one: Gap, other: Gap) -> bool:
    return (one.rotation, one.person, one.problem) == (other.rotation, other.person, other.problem)


def _in_zone(gap: Gap, zone: ZoneInfo) -> Gap:
    return replace(gap, start=gap.start.astimezone(zone), end=gap.end.astimezone(zone))


def _stretches(
    oncall: Oncall, target: str, begin: datetime, finish: datetime
) -> Iterator[tuple[datetime, datetime, str | None, str | None]]:
    """(from, to, rotation, person) covering [begin, finish) for one step's target, in UTC."""
    if target not in oncall.rotations:
        yield begin, finish, None, oncall.team_lead if target == "team_lead" else target
        return
    timeline = _Timeline(oncall, target)
    moment = begin
    while moment < finish:
        shift = timeline.shift(moment)
        end = min(shift.end.astimezone(UTC), finish)
        yield moment, end, target, shift.person
        moment = end


_FORMS = (
    "2026-12-24 (local midnight), 2026-12-24T09:00 or '2026-12-24 09:00' (local time in {zone}), "
    "2026-12-24T02:00Z or 2026-12-24T09:00+07:00 (with an offset)"
)


def parse_at(text: str, zone: ZoneInfo) -> datetime:
    """``--at TIME``: ISO 8601, with or without an offset; without one it is local time in
    ``zone``, and a bare date is local midnight. The result is aware, in ``zone``."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value) if value else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(f"cannot read {text!r} as a time; use {_FORMS.format(zone=zone.key)}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=zone)
    return moment.astimezone(zone)
