"""``ops oncall ...``: Art. 19.3: somebody is woken when a portal goes down."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.atomic import write_atomic
from portalops.core.errors import BadInput, ExitCode
from portalops.oncall import amconfig, rota
from portalops.oncall.config import Oncall
from portalops.oncall.messages import test as test_message
from portalops.oncall.notify import channel_name, send_one
from portalops.oncall.service import serve
from portalops.oncall.store import Store


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "oncall", help="Art. 19.3: on-call rotation, escalation and paging"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("serve", help="receive Alertmanager's webhooks and page people")
    p.add_argument("--listen", metavar="ADDR", help="host:port (default: oncall.listen)")
    p.set_defaults(run=_serve)
    p = sub.add_parser("who", help="who is on call now (or --at TIME)")
    p.add_argument("--at", metavar="TIME", help='local time, e.g. "2026-12-24 09:00"')
    p.set_defaults(run=_who)
    p = sub.add_parser(
        "check", help="exit 1 if any hour of the coming weeks has nobody reachable on call"
    )
    p.add_argument("--weeks", type=int, default=4, help="how far ahead (default: 4)")
    p.set_defaults(run=_check)
    p = sub.add_parser("ack", help="acknowledge an incident: no further pages for it")
    p.add_argument("incident", type=int, metavar="INCIDENT", help="the incident's number")
    p.add_argument("--by", default="cli", help="who acknowledges (default: cli)")
    p.set_defaults(run=_ack)
    p = sub.add_parser("incidents", help="recent incidents and the pages sent for them")
    p.add_argument("--open", action="store_true", help="only those not yet resolved")
    p.set_defaults(run=_incidents)
    p = sub.add_parser("test", help="send a test message through every configured channel")
    p.add_argument("--person", action="append", metavar="ID", help="only this person (repeat)")
    p.set_defaults(run=_test)
    p = sub.add_parser("alertmanager-config", help="render alertmanager.yml from this config")
    p.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(run=_alertmanager_config)


def _oncall(ctx: Context) -> Oncall:
    return ctx.settings.oncall


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"listen address {value!r}: expected host:port, e.g. 127.0.0.1:9434")
    return host.strip("[]"), int(port)


def _serve(ctx: Context, args: argparse.Namespace) -> Outcome:
    oncall = _oncall(ctx)
    if not oncall.people:
        raise BadInput(
            "oncall.people is empty in the config: there is nobody to page "
            "(docs/alerting.md shows an example oncall section)"
        )
    listen = args.listen or oncall.listen
    host, port = _listen(listen)
    asyncio.run(serve(oncall, ctx.settings.state_dir, host, port, listen))
    return Outcome({"stopped": True}, ["on-call service stopped"])


def _at(oncall: Oncall, text: str | None) -> datetime:
    if text is None:
        return datetime.now(oncall.zone())
    try:
        return rota.parse_at(text, oncall.zone())
    except ValueError as exc:
        raise BadInput(f"--at: {exc}") from None


def _who(ctx: Context, args: argparse.Namespace) -> Outcome:
    oncall = _oncall(ctx)
    at = _at(oncall, args.at)
    shifts = rota.who(oncall, at)
    zone = oncall.zone()
    rows = []
    for shift in shifts:
        person = oncall.person(shift.person) if shift.person else None
        rows.append((
            shift.rotation,
            f"{person.name} ({person.id})" if person else "NOBODY",
            f"{shift.start.astimezone(zone):%Y-%m-%d %H:%M}",
            f"{shift.end.astimezone(zone):%Y-%m-%d %H:%M}",
            "" if shift.override is None else f"override: {shift.override or '-'}",
            str(len(person.channels)) if person else "-",
        ))  # fmt: skip
    lead = oncall.person(oncall.team_lead) if oncall.team_lead else None
    human: list[Any] = [
        table(
            f"on call at {at.astimezone(zone):%Y-%m-%d %H:%M %Z}",
            ["rotation", "person", "from", "until", "note", "channels"],
            rows,
        )
    ]
    if lead:
        human.append(f"team lead: {lead.name} ({lead.id})")
    if not shifts:
        human.append("no rotations configured (oncall.rotations)")
    nobody = any(s.person is None for s in shifts)
    return Outcome(
        {"at": at, "shifts": [s.to_json() for s in shifts], "team_lead": oncall.team_lead},
        human,
        ExitCode.PROBLEM_FOUND if nobody or not shifts else ExitCode.OK,
    )


def _check(ctx: Context, args: argparse.Namespace) -> Outcome:
    if not 1 <= args.weeks <= 104:
        raise BadInput(f"--weeks {args.weeks}: expected 1 to 104")
    oncall = _oncall(ctx)
    start = datetime.now(oncall.zone())
    found = rota.gaps(oncall, start, args.weeks)
    zone = oncall.zone()
    human: list[Any] = []
    if found:
        human.append(
            table(
                f"gaps in the next {args.weeks} weeks",
                ["from", "until", "rotation", "person", "problem"],
                [
                    (
                        f"{g.start.astimezone(zone):%Y-%m-%d %H:%M}",
                        f"{g.end.astimezone(zone):%Y-%m-%d %H:%M}",
                        g.rotation or "-",
                        g.person or "-",
                        g.problem,
                    )
                    for g in found
                ],
            )
        )
    else:
        human.append(
            f"on-call coverage OK: every hour of the next {args.weeks} weeks has somebody "
            "reachable at every escalation step"
        )
    return Outcome(
        {"weeks": args.weeks, "from": start, "gaps": [g.to_json() for g in found]},
        human,
        ExitCode.PROBLEM_FOUND if found else ExitCode.OK,
    )


def _store(ctx: Context) -> Store | None:
    """The service's database; None before ``ops oncall serve`` has ever created it (reading
    commands must not leave an empty one behind in the wrong state directory)."""
    database, _, _ = _oncall(ctx).state_paths(ctx.settings.state_dir)
    return Store(database) if database.is_file() else None


def _ack(ctx: Context, args: argparse.Namespace) -> Outcome:
    store = _store(ctx)
    if store is None:
        raise BadInput(
            f"no incident #{args.incident}: no on-call database under "
            f"{ctx.settings.state_dir} (state_dir) yet; ops oncall serve creates it"
        )
    try:
        incident = store.incident(args.incident)
        if incident is None:
            raise BadInput(f"no incident #{args.incident} (ops oncall incidents lists them)")
        done = store.acknowledge(args.incident, args.by, time.time())
    finally:
        store.close()
    if done is None:
        return Outcome(
            {"incident": incident.to_json(), "acknowledged": False},
            [f"incident #{incident.id} is {incident.status}: nothing to acknowledge"],
        )
    return Outcome(
        {"incident": done.to_json(), "acknowledged": True},
        [f"incident #{done.id} ({done.alertname}) acknowledged by {args.by}: no further pages"],
    )


def _incidents(ctx: Context, args: argparse.Namespace) -> Outcome:
    store = _store(ctx)
    incidents, pages = [], {}
    if store is not None:
        try:
            incidents = store.incidents(open_only=args.open)
            pages = {i.id: store.pages(i.id) for i in incidents}
        finally:
            store.close()
    zone = _oncall(ctx).zone()
    rows = []
    for i in incidents:
        sent = [p for p in pages[i.id] if p.kind == "page" and p.state == "sent"]
        rows.append((
            f"#{i.id}", i.alertname, i.severity, i.status,
            i.labels.get("domain") or i.labels.get("source") or "-",
            f"{datetime.fromtimestamp(i.opened_at, zone):%Y-%m-%d %H:%M}",
            ", ".join(dict.fromkeys(p.person or "?" for p in sent)) or "-",
            i.acked_by or "-",
        ))  # fmt: skip
    return Outcome(
        [{**i.to_json(), "pages": [p.to_json() for p in pages[i.id]]} for i in incidents],
        [
            table(
                None,
                [
                    "incident",
                    "alert",
                    "severity",
                    "status",
                    "subject",
                    "opened",
                    "paged",
                    "acknowledged by",
                ],
                rows,
            )
        ],
    )


def _test(ctx: Context, args: argparse.Namespace) -> Outcome:
    oncall = _oncall(ctx)
    people = oncall.people
    if args.person:
        unknown = [p for p in args.person if oncall.person(p) is None]
        if unknown:
            raise BadInput(f"--person {', '.join(unknown)}: not in oncall.people")
        people = [p for p in people if p.id in args.person]
    if not people:
        raise BadInput("oncall.people is empty: nobody to send a test to")

    async def run() -> list[tuple[str, str, str | None]]:
        sent: list[tuple[str, str, str | None]] = []
        for person in people:
            lang = person.lang or oncall.lang
            if not person.channels:
                sent.append((person.id, "-", "no channels"))
            for index, url in enumerate(person.channels):
                name = channel_name(index, url)
                message = test_message(person.name, name, lang)
                error = await send_one(url, message, oncall.delivery.timeout)
                sent.append((person.id, name, error))
        return sent

    results = asyncio.run(run())
    failed = [r for r in results if r[2] is not None]
    return Outcome(
        [{"person": p, "channel": c, "ok": e is None, "error": e} for p, c, e in results],
        [table(None, ["person", "channel", "result"],
               [(p, c, "sent" if e is None else f"FAILED: {e}") for p, c, e in results])],
        ExitCode.PROBLEM_FOUND if failed else ExitCode.OK,
    )  # fmt: skip


def _alertmanager_config(ctx: Context, args: argparse.Namespace) -> Outcome:
    source = ctx.config_path
    text = amconfig.render(ctx.settings, str(source) if source else None)
    if args.output is None:
        return Outcome({"config": text}, [Text(text.rstrip("\n"))])
    write_atomic(args.output, text.encode("utf-8"))
    return Outcome(
        {"written": str(args.output)},
        [f"wrote {args.output}; check it with: amtool check-config {args.output}"],
    )
