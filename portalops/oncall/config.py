"""The ``oncall:`` section of ops.yaml: people, rotations, escalation, delivery, Alertmanager.

Durations are written the way Prometheus and Alertmanager write them (``30s``, ``5m``,
``2h``, ``3d``, ``1h30m``) and held as seconds, so a test compresses time by configuration
(``wait: 3s``), never by patching the service's clock.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from portalops.core.timefmt import parse_hhmm, sexagesimal_clock
from portalops.core.validate import LocatedError, Strict, ZoneName

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """``"1h30m"`` -> 5400.0 seconds; a bare number is seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a duration such as 30s, 5m, 2h, 3d or 1h30m, got {value!r}")
    text, total, at = value.strip(), 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != at:
            break
        total += float(match[1]) * _UNITS[match[2]]
        at = match.end()
    if at != len(text) or at == 0:
        raise ValueError(f"expected a duration such as 30s, 5m, 2h, 3d or 1h30m, got {value!r}")
    return total


def format_duration(seconds: float) -> str:
    """5400 -> ``"1h30m"``: the Alertmanager spelling, for rendered configs and messages."""
    if seconds <= 0:
        return "0s"
    parts, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# What a YAML editor may write: seconds, or the Prometheus spelling. Titled "duration" so the
# configuration reference names the type rather than spelling out the union.
_DURATION_SCHEMA = {
    "title": "duration",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d|w))+\s*$"},
    ],
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
PersonId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


def _clock(value: object) -> time:
    base60 = sexagesimal_clock(value)  # YAML 1.1 reads 08:00 unquoted as base 60
    if base60 is not None:
        hours, minutes = base60
        raise ValueError(f'got the number {value}: quote the time, "{hours:02d}:{minutes:02d}"')
    if isinstance(value, time):
        return value
    clock = parse_hhmm(str(value))
    if clock is None:
        raise ValueError(f'expected a time of day "HH:MM", got {value!r}')
    return clock


Clock = Annotated[time, BeforeValidator(_clock)]


#: the first notification of a critical group waits at most this long (seconds)
CRITICAL_GROUP_WAIT = 10.0


class Person(Strict):
    """Someone who can be paged. ``channels`` are apprise URLs, tried in order until one
    delivers (``mailto://...``, ``tgram://...``, ``json://...``); they hold secrets, so
    portal-ops never logs them whole."""

    id: PersonId
    """A short lowercase id that rotations, overrides and ``team_lead`` refer to."""
    name: Annotated[str, Field(min_length=1)]
    """The person's full name, as pages and reports show it."""
    channels: list[str] = []
    """Apprise URLs tried in order until one delivers (``mailtos://...``, ``tgram://...``);
    they hold secrets: keep ops.yaml 0600."""
    lang: Literal["vi", "en"] | None = None
    """The language of this person's pages (unset: ``oncall.lang``)."""


class Rotation(Strict):
    """People taking turns: ``every`` day or week, handing over at ``handover`` local time;
    the turn that contains ``start`` belongs to ``people[0]``. A bare date means that day's
    handover (``2026-11-30`` with ``handover: "08:00"`` is 2026-11-30 08:00)."""

    people: Annotated[list[PersonId], Field(min_length=1)]
    """The ids of the people taking turns, in order."""
    every: Literal["day", "week"] = "week"
    """How long one turn lasts."""
    handover: Clock = time(8, 0)
    """The local time turns change, ``"HH:MM"`` (quoted)."""
    start: datetime
    """When ``people[0]``'s turn starts, local time: a date (``2026-11-30``, at ``handover``)
    or ``"2026-11-30 08:00"``; weekly turns change on the weekday of ``start``."""

    @model_validator(mode="before")
    @classmethod
    def _date_means_handover(cls, data: Any) -> Any:
        if isinstance(data, dict):
            start = data.get("start")
            if isinstance(start, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", start.strip()):
                start = date.fromisoformat(start.strip())
            if isinstance(start, date) and not isinstance(start, datetime):
                handover = _clock(data.get("handover", time(8, 0)))
                data = {**data, "start": datetime.combine(start, handover)}
        return data


class Override(Strict):
    """``person`` takes ``rotation`` from ``start`` to ``end`` (local times): leave, holidays."""

    rotation: str
    """The rotation (a key of ``oncall.rotations``) this override replaces someone in."""
    person: PersonId
    """Who is on call instead."""
    start: datetime
    """From when, local time (``"2026-12-31 08:00"``)."""
    end: datetime
    """Until when, local time; after ``start``."""
    reason: str = ""
    """Why (leave, a holiday), for the record."""

    @model_validator(mode="after")
    def _order(self) -> Override:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        return self


class Step(Strict):
    """Notify ``notify`` (a rotation's person on call, a person's id, or ``team_lead``), then
    wait ``wait`` before the next step if nobody has acknowledged."""

    notify: str
    """Whom to page: a rotation's name (its person on call), a person's id, or ``team_lead``."""
    wait: Duration = 300.0
    """How long to wait for an acknowledgement before the next step."""


class Escalation(Strict):
    """Whom an unacknowledged incident pages, in order, and how long each step waits."""

    steps: Annotated[list[Step], Field(min_length=1)] = [
        Step(notify="primary", wait=300.0),
        Step(notify="secondary", wait=600.0),
        Step(notify="team_lead", wait=900.0),
    ]
    """The steps, first to last."""
    repeat: bool = True
    """After the last step, start again from the first until acknowledged or resolved."""
    max_rounds: Annotated[int, Field(ge=1, le=100)] = 10
    """The most rounds through the steps when ``repeat`` is on."""


class Delivery(Strict):
    """How hard a page is pushed through each of a person's channels."""

    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Tries per channel before falling through to the next one."""
    retry_delay: Duration = 2.0
    """The wait before the second try, doubled after each failed try."""
    timeout: Duration = 20.0
    """How long one try may take."""


class IncidentReports(Strict):
    """Decree 331/2026 Art. 31: a serious incident starts an initial-notice clock (24 h) and a
    full-report clock (72 h); the team lead is reminded ``remind_before`` each deadline."""

    serious: list[str] = ["critical"]
    """The alert severities that make an incident serious."""
    initial: Duration = 24 * 3600.0
    """The deadline of the initial notice, from the incident's start."""
    full: Duration = 72 * 3600.0
    """The deadline of the full report, from the incident's start."""
    remind_before: list[Duration] = [4 * 3600.0, 3600.0]
    """When the team lead is reminded, before each deadline."""


class TimeRange(Strict):
    """A span of one day, local time."""

    start: Clock
    """``"HH:MM"`` (quoted)."""
    end: Clock
    """``"HH:MM"`` (quoted)."""


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_NAMES = {name: i for i, day in enumerate(WEEKDAYS) for name in (day, day[:3])}


class Maintenance(Strict):
    """A recurring window in which alerts of the matching portals are muted (Alertmanager
    ``time_intervals``); empty ``portals`` and ``unit_kinds`` mean every portal."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
    """The window's name (an Alertmanager time interval), unique."""
    weekdays: list[str] = []
    """Days or ranges of days: ``saturday``, ``monday:friday`` (empty: every day)."""
    times: list[TimeRange] = []
    """Times of day the window covers (empty: the whole day)."""
    portals: list[str] = []
    """The portals (``portal`` label) muted in the window; with ``unit_kinds`` also empty,
    every portal."""
    unit_kinds: list[Literal["province", "department", "district", "commune"]] = []
    """The kinds of unit whose portals are muted in the window."""

    @field_validator("weekdays")
    @classmethod
    def _days(cls, specs: list[str]) -> list[str]:
        for spec in specs:
            first, _, last = spec.strip().lower().partition(":")
            if first not in DAY_NAMES or (last and last not in DAY_NAMES):
                raise ValueError(
                    f"{spec!r} is not a day or a range of days such as 'saturday' or "
                    "'monday:friday'"
                )
        return specs


class AlertmanagerRouting(Strict):
    """What ``ops oncall alertmanager-config`` renders: grouping, timing, the webhook to the
    on-call service, and maintenance windows."""

    group_by: list[str] = ["alertname", "portal"]
    """Labels alerts are grouped by into one notification."""
    group_wait: Duration = 30.0
    """How long a new group waits for more alerts before its first notification (critical
    alerts wait at most 10s)."""
    group_interval: Duration = 300.0
    """How long a group waits before notifying of alerts added to it."""
    repeat_interval: Duration = 4 * 3600.0
    """How long before a still-firing warning is notified again."""
    critical_repeat_interval: Duration = 3600.0
    """How long before a still-firing critical alert is notified again."""
    webhook_url: str | None = None
    """The on-call service's webhook as Alertmanager reaches it (unset:
    ``http://<oncall.listen>/alertmanager``)."""
    maintenance: list[Maintenance] = []
    """Recurring windows in which matching alerts are muted."""

    @model_validator(mode="after")
    def _names(self) -> AlertmanagerRouting:
        for i, window in enumerate(self.maintenance):
            if window.name in (w.name for w in self.maintenance[:i]):
                raise LocatedError(
                    ("maintenance", i, "name"),
                    f"'{window.name}' appears twice; Alertmanager needs a distinct name for each",
                )
        return self


class Witness(Strict):
    """Another on-call service (on another host) that also receives the Watchdog alert and the
    paging chain's own alerts (OncallDown, AlertmanagerNotificationsFailing,
    OncallDeliveriesFailing), so it pages when this host's chain, or only this service, is
    gone."""

    url: str
    """Its webhook as Alertmanager reaches it (``http://other-host:9434/alertmanager``)."""
    token_file: Path
    """The file holding that service's webhook token, on the Alertmanager host (0600)."""


class Watchdog(Strict):
    """The dead man's switch: Prometheus fires the always-on ``Watchdog`` alert, Alertmanager
    repeats it to the on-call service on a route of its own, and the service pages on its own
    channels when it stops arriving (Prometheus, Alertmanager or the path between them is
    down: the monitoring is blind)."""

    enabled: bool = True
    """Render the Watchdog route and watch for its arrivals."""
    repeat_interval: Duration = 60.0
    """How often Alertmanager sends the Watchdog again (its route's repeat_interval)."""
    missing_after: Duration = 600.0
    """Page when no Watchdog arrived for this long; at least twice ``repeat_interval``."""
    from_start: bool = False
    """Watch from the service's start (a service started while Prometheus is down pages);
    off: only after the first Watchdog arrived (no page on a host without Prometheus)."""
    notify: str | None = None
    """Whom the blind page goes to: a rotation, a person or ``team_lead`` (unset: the first
    escalation step's target)."""
    witnesses: list[Witness] = []
    """Other on-call services the Watchdog and the paging chain's own alerts are also sent to
    (external witnesses)."""

    @model_validator(mode="after")
    def _order(self) -> Watchdog:
        if self.repeat_interval <= 0:
            raise LocatedError(("repeat_interval",), "must be above 0")
        if self.missing_after < 2 * self.repeat_interval:
            raise LocatedError(
                ("missing_after",),
                f"{format_duration(self.missing_after)} is under twice repeat_interval "
                f"({format_duration(self.repeat_interval)}): one late Watchdog would page",
            )
        return self


class Oncall(Strict):
    """Who is paged for an alert, in which order, and how (``ops oncall serve``)."""

    listen: str = "127.0.0.1:9434"
    """``host:port`` the on-call service (``ops oncall serve``) listens on."""
    public_url: str | None = None
    """The base URL of acknowledge links as people reach the service (unset:
    ``http://<listen>``)."""
    database: Path | None = None
    """The service's SQLite database (unset: ``<state_dir>/oncall/oncall.sqlite``)."""
    link_key_file: Path | None = None
    """The secret HMAC key that signs acknowledge links, created 0600 on first use (unset:
    ``<state_dir>/oncall/link.key``)."""
    webhook_token_file: Path | None = None
    """The secret bearer token Alertmanager presents on the webhook, created 0600 on first
    use (unset: ``<state_dir>/oncall/webhook.token``)."""
    link_ttl: Duration = 24 * 3600.0
    """How long an acknowledge link stays valid."""
    timezone: ZoneName = "Asia/Ho_Chi_Minh"
    """The IANA time zone of rotations, overrides, windows and the times pages show."""
    lang: Literal["vi", "en"] = "vi"
    """The default language of pages."""
    tick: Duration = 5.0
    """How often the service looks for due escalation steps and reminders."""
    replay_window: Duration = 10.0
    """How long after a resolution is received a "firing" that started no later than it
    ended counts as a replay (Alertmanager's retries, an HA peer's duplicate) and is dropped;
    after it, such a firing opens an incident and pages (a re-fire after Alertmanager
    resolved by timeout looks the same). Never longer than the shortest group wait
    (``alertmanager.group_wait``, at most 10 s for critical alerts). Also how long a
    resolution that arrived before its firing is remembered."""
    people: list[Person] = []
    """Everyone who can be paged."""
    rotations: dict[str, Rotation] = {}
    """Rotations by name (``primary``, ``secondary``): who is on call when."""
    overrides: list[Override] = []
    """Exceptions to the rotations: leave, holidays."""
    team_lead: PersonId | None = None
    """The person escalation's ``team_lead`` step pages and report reminders go to."""
    escalation: Escalation = Escalation()
    """Whom an unacknowledged incident pages, step by step."""
    delivery: Delivery = Delivery()
    """Retries and timeouts of each page."""
    incident_reports: IncidentReports = IncidentReports()
    """The report deadlines of serious incidents (Decree 331/2026 Art. 31)."""
    alertmanager: AlertmanagerRouting = AlertmanagerRouting()
    """The Alertmanager config ``ops oncall alertmanager-config`` renders."""
    watchdog: Watchdog = Watchdog()
    """The dead man's switch over Prometheus and Alertmanager (docs/alerting.md)."""
    metrics_token_file: Path | None = None
    """The secret bearer token Prometheus presents on ``/metrics``, created 0600 on first use
    (unset: ``<state_dir>/oncall/metrics.token``)."""

    @model_validator(mode="after")
    def _references(self) -> Oncall:
        ids = [p.id for p in self.people]
        for i, person_id in enumerate(ids):
            if person_id in ids[:i]:
                raise LocatedError(("people", i, "id"), f"'{person_id}' appears twice")
        for name, rotation in self.rotations.items():
            for j, person in enumerate(rotation.people):
                self._known(person, ("rotations", name, "people", j))
        for i, override in enumerate(self.overrides):
            if override.rotation not in self.rotations:
                raise LocatedError(
                    ("overrides", i, "rotation"),
                    f"'{override.rotation}' is not a rotation "
                    f"({', '.join(self.rotations) or 'none'})",
                )
            self._known(override.person, ("overrides", i, "person"))
        if self.team_lead is not None:
            self._known(self.team_lead, ("team_lead",))
        if self.people:  # an empty section is the valid default; a partial one must add up
            self._check_steps()
            notify = self.watchdog.notify
            if notify is not None and notify not in {"team_lead", *self.rotations, *ids}:
                raise LocatedError(
                    ("watchdog", "notify"),
                    f"'{notify}' is neither a rotation, a person nor team_lead",
                )
        return self

    def replay_horizon(self) -> float:
        """``replay_window``, capped by the shortest group wait. Once Alertmanager has sent a
        group's resolution it drops the group; an alert that fires again starts a new group,
        which is notified one ``group_wait`` later at the earliest (critical: at most
        :data:`CRITICAL_GROUP_WAIT`). A stale-looking firing that arrives later than that can
        be a real re-fire, and must page."""
        return min(self.replay_window, self.alertmanager.group_wait, CRITICAL_GROUP_WAIT)

    def _known(self, person: str, where: tuple[str | int, ...]) -> None:
        ids = sorted(p.id for p in self.people)
        if person not in ids:
            raise LocatedError(where, f"'{person}' is not in oncall.people ({', '.join(ids)})")

    def _check_steps(self) -> None:
        known = {p.id for p in self.people}
        for i, step in enumerate(self.escalation.steps):
            where = ("escalation", "steps", i, "notify")
            if step.notify == "team_lead" and self.team_lead is None:
                raise LocatedError(where, "'team_lead' but oncall.team_lead is not set")
            if step.notify not in {"team_lead", *self.rotations, *known}:
                raise LocatedError(
                    where,
                    f"'{step.notify}' is neither a rotation "
                    f"({', '.join(self.rotations) or 'none'}), a person nor team_lead",
                )

    def person(self, person_id: str) -> Person | None:
        return next((p for p in self.people if p.id == person_id), None)

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def state_paths(self, state_dir: Path) -> tuple[Path, Path, Path]:
        """(database, link key file, webhook token file), defaults under the state dir."""
        base = state_dir / "oncall"
        return (
            self.database or base / "oncall.sqlite",
            self.link_key_file or base / "link.key",
            self.webhook_token_file or base / "webhook.token",
        )

    def metrics_token_path(self, state_dir: Path) -> Path:
        """The token ``/metrics`` asks for (Prometheus reads it with ``credentials_file``)."""
        return self.metrics_token_file or state_dir / "oncall" / "metrics.token"
