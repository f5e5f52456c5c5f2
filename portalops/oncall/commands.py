"""What ``ops oncall ...`` does, without the parsing and the rendering.

Each function takes the ``oncall`` section and, where the service's files are involved, the
state directory; it returns data (or raises :class:`BadInput`), and ``portalops.cli.oncall``
turns that data into tables and JSON. Times come in as arguments, so a caller decides what
"now" is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from portalops.core.atomic import write_atomic
from portalops.core.errors import BadInput
from portalops.core.netaddr import is_port, parse_host_port, unbracket
from portalops.oncall import rota
from portalops.oncall.config import Oncall, Person
from portalops.oncall.rota import Gap, Shift

if TYPE_CHECKING:
    from portalops.oncall.store import Incident, Page, Store

# The service (aiohttp), delivery (apprise), the database and the Alertmanager renderer are
# imported by the commands that use them: ``ops oncall who`` needs none of them.

log = logging.getLogger(__name__)

#: the highest ``--weeks`` of ``ops oncall check``: two years of hourly checks
MAX_WEEKS = 104


# -- serve ------------------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9434`` too) as (host, port)."""
    parsed = parse_host_port(value)
    if parsed is None or not is_port(parsed[1]):
        raise BadInput(f"listen address {value!r}: expected host:port, e.g. 127.0.0.1:9434")
    host, port = parsed
    return unbracket(host), port


def run_service(oncall: Oncall, state_dir: Path, listen: str | None) -> None:
    """``ops oncall serve``: refuse a config with nobody to page, then serve until a signal."""
    if not oncall.people:
        raise BadInput(
            "oncall.people is empty in the config: there is nobody to page "
            "(docs/alerting.md shows an example oncall section)"
        )
    address = listen or oncall.listen
    host, port = parse_listen(address)
    import asyncio  # noqa: PLC0415 - loaded when used

    from portalops.oncall.service import serve  # noqa: PLC0415 - loaded when used

    asyncio.run(serve(oncall, state_dir, host, port, address))


# -- who and check ----------------------------------------------------------------------------


def parse_time(oncall: Oncall, text: str | None, now: datetime) -> datetime:
    """``--at TEXT`` in the on-call zone; ``now`` without one."""
    if text is None:
        return now
    try:
        return rota.parse_at(text, oncall.zone())
    except ValueError as exc:
        raise BadInput(f"--at: {exc}") from None


@dataclass(frozen=True)
class OnCall:
    """Who is on call at ``at``: one shift per rotation, in config order."""

    at: datetime
    shifts: list[Shift]
    people: dict[str, Person]
    """The people the shifts name (a shift with nobody names none)."""
    team_lead: Person | None

    @property
    def uncovered(self) -> bool:
        """No rotation at all, or one with nobody on call."""
        return not self.shifts or any(s.person is None for s in self.shifts)


def on_call(oncall: Oncall, at: datetime) -> OnCall:
    """``ops oncall who``."""
    shifts = rota.who(oncall, at)
    people = {}
    for shift in shifts:
        person = oncall.person(shift.person) if shift.person else None
        if person is not None:
            people[person.id] = person
    lead = oncall.person(oncall.team_lead) if oncall.team_lead else None
    return OnCall(at, shifts, people, lead)


def coverage_gaps(oncall: Oncall, start: datetime, weeks: int) -> list[Gap]:
    """``ops oncall check``: the hours of the ``weeks`` after ``start`` with a step that
    reaches nobody."""
    if not 1 <= weeks <= MAX_WEEKS:
        raise BadInput(f"--weeks {weeks}: expected 1 to {MAX_WEEKS}")
    return rota.gaps(oncall, start, weeks)


# -- the service's database -------------------------------------------------------------------


def open_store(oncall: Oncall, state_dir: Path) -> Store | None:
    """The service's database; None before ``ops oncall serve`` has ever created it (reading
    commands must not leave an empty one behind in the wrong state directory)."""
    database, _, _ = oncall.state_paths(state_dir)
    own = database.parent.resolve() == (state_dir / "oncall").resolve()  # ours to chmod
    from portalops.oncall.store import Store  # noqa: PLC0415 - loaded when used

    return Store(database, own_dir=own) if database.is_file() else None


@dataclass(frozen=True)
class Acknowledged:
    incident: Incident
    """As it is after the command (unchanged when it was not firing)."""
    done: bool


def acknowledge(
    oncall: Oncall, state_dir: Path, incident_id: int, by: str, now: float
) -> Acknowledged:
    """``ops oncall ack``: straight into the database, so it works with the service down."""
    store = open_store(oncall, state_dir)
    if store is None:
        raise BadInput(
            f"no incident #{incident_id}: no on-call database under "
            f"{state_dir} (state_dir) yet; ops oncall serve creates it"
        )
    try:
        incident = store.incident(incident_id)
        if incident is None:
            raise BadInput(f"no incident #{incident_id} (ops oncall incidents lists them)")
        done = store.acknowledge(incident_id, by, now)
    finally:
        store.close()
    if done is not None:
        log.info("incident %d acknowledged by %s (ops oncall ack)", incident_id, by)
    return Acknowledged(done or incident, done is not None)


def incidents(
    oncall: Oncall, state_dir: Path, *, open_only: bool
) -> list[tuple[Incident, list[Page]]]:
    """``ops oncall incidents``: recent incidents, newest first, each with its pages."""
    store = open_store(oncall, state_dir)
    if store is None:
        return []
    try:
        return [(i, store.pages(i.id)) for i in store.incidents(open_only=open_only)]
    finally:
        store.close()


# -- test messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SentTest:
    person: str
    channel: str
    """``N:scheme`` (never the URL, which holds secrets), or ``-`` for no channel."""
    error: str | None


def send_tests(oncall: Oncall, only: list[str] | None) -> list[SentTest]:
    """``ops oncall test``: one test message through every channel of every person (of
    ``only``, if given), in config order."""
    people = oncall.people
    if only:
        unknown = [p for p in only if oncall.person(p) is None]
        if unknown:
            raise BadInput(f"--person {', '.join(unknown)}: not in oncall.people")
        people = [p for p in people if p.id in only]
    if not people:
        raise BadInput("oncall.people is empty: nobody to send a test to")
    import asyncio  # noqa: PLC0415 - loaded when used

    from portalops.oncall.messages import test as test_message  # noqa: PLC0415 - loaded when used
    from portalops.oncall.notify import channel_name, send_one  # noqa: PLC0415 - loaded when used

    async def run() -> list[SentTest]:
        sent: list[SentTest] = []
        for person in people:
            lang = person.lang or oncall.lang
            if not person.channels:
                sent.append(SentTest(person.id, "-", "no channels"))
            for index, url in enumerate(person.channels):
                name = channel_name(index, url)
                message = test_message(person.name, name, lang)
                error = await send_one(url, message, oncall.delivery.timeout, name)
                sent.append(SentTest(person.id, name, error))
        return sent

    return asyncio.run(run())


# -- alertmanager.yml -------------------------------------------------------------------------


def alertmanager_config(oncall: Oncall, state_dir: Path, source: Path | None) -> str:
    """``ops oncall alertmanager-config``: the text, naming the ops.yaml it came from."""
    from portalops.oncall import amconfig  # noqa: PLC0415 - loaded when used

    return amconfig.render(oncall, state_dir, str(source) if source else None)


def write_alertmanager_config(text: str, path: Path) -> None:
    """Write atomically: Alertmanager reloading midway never reads half a file."""
    write_atomic(path, text.encode("utf-8"))
