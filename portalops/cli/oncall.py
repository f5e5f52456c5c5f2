"""``ops oncall ...``: Art. 19.3: somebody is woken when a portal goes down."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.errors import ExitCode

if TYPE_CHECKING:
    from portalops.oncall.config import Oncall

# Each handler imports portalops.oncall.commands itself: the service's aiohttp, apprise and
# the on-call database are paid for by the command that runs, not by every ``ops`` line.


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "oncall", help="Art. 19.3: on-call rotation, escalation and paging"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser(
        "serve",
        help="receive Alertmanager's webhooks and page people",
        description="Receive Alertmanager's webhooks (bearer token), open an incident per "
        "alert group, page whoever the rotation puts on call through their channels "
        "(apprise), escalate along oncall.escalation until someone acknowledges (signed "
        "link, or 'ops oncall ack'), and send the incident-report reminders. A long-running "
        "service: pages sent, acknowledgements and escalations are logged at INFO (the "
        "journal's record); SIGTERM or Ctrl-C stops it after a bounded wait for deliveries "
        "in flight.",
        epilog="""\
examples:
  ops oncall serve                            on oncall.listen (default 127.0.0.1:9434)
  ops oncall serve --listen 127.0.0.1:9534 -v
  ops oncall alertmanager-config --output /etc/prometheus/alertmanager.yml""",
    )
    p.add_argument("--listen", metavar="ADDR", help="host:port (default: oncall.listen)")
    p.set_defaults(run=_serve, service=True)
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
    return ctx.oncall_settings


def _serve(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.oncall import commands

    commands.run_service(_oncall(ctx), ctx.state_dir, args.listen)
    return Outcome({"stopped": True}, ["on-call service stopped"])


def _who(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.oncall import commands

    oncall = _oncall(ctx)
    zone = oncall.zone()
    at = commands.parse_time(oncall, args.at, ctx.env.now().astimezone(zone))
    found = commands.on_call(oncall, at)
    rows = []
    for shift in found.shifts:
        person = found.people.get(shift.person) if shift.person else None
        rows.append((
            shift.rotation,
            f"{person.name} ({person.id})" if person else "NOBODY",
            f"{shift.start.astimezone(zone):%Y-%m-%d %H:%M}",
            f"{shift.end.astimezone(zone):%Y-%m-%d %H:%M}",
            "" if shift.override is None else f"override: {shift.override or '-'}",
            str(len(person.channels)) if person else "-",
        ))  # fmt: skip
    human: list[Any] = [
        table(
            f"on call at {at.astimezone(zone):%Y-%m-%d %H:%M %Z}",
            ["rotation", "person", "from", "until", "note", "channels"],
            rows,
        )
    ]
    lead = found.team_lead
    if lead:
        human.append(f"team lead: {lead.name} ({lead.id})")
    if not found.shifts:
        human.append("no rotations configured (oncall.rotations)")
    return Outcome(
        {"at": at, "shifts": [s.to_json() for s in found.shifts], "team_lead": oncall.team_lead},
        human,
        ExitCode.PROBLEM_FOUND if found.uncovered else ExitCode.OK,
    )


def _check(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.oncall import commands

    oncall = _oncall(ctx)
    zone = oncall.zone()
    start = ctx.env.now().astimezone(zone)
    found = commands.coverage_gaps(oncall, start, args.weeks)
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


def _ack(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.oncall import commands

    result = commands.acknowledge(
        _oncall(ctx), ctx.state_dir, args.incident, args.by, ctx.env.now().timestamp()
    )
    incident = result.incident
    if not result.done:
        return Outcome(
            {"incident": incident.to_json(), "acknowledged": False},
            [f"incident #{incident.id} is {incident.status}: nothing to acknowledge"],
        )
    return Outcome(
        {"incident": incident.to_json(), "acknowledged": True},
        [
            f"incident #{incident.id} ({incident.alertname}) acknowledged by {args.by}: "
            "no further pages"
        ],
    )


def _incidents(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.oncall import commands

    found = commands.incidents(_oncall(ctx), ctx.state_dir, open_only=args.open)
    zone = _oncall(ctx).zone()
    rows = []
    for i, pages in found:
        sent = [p for p in pages if p.kind == "page" and p.state == "sent"]
        rows.append((
            f"#{i.id}", i.alertname, i.severity, i.status,
            i.labels.get("domain") or i.labels.get("source") or "-",
            f"{datetime.fromtimestamp(i.opened_at, zone):%Y-%m-%d %H:%M}",
            ", ".join(dict.fromkeys(p.person or "?" for p in sent)) or "-",
            i.acked_by or "-",
        ))  # fmt: skip
    return Outcome(
        [{**i.to_json(), "pages": [p.to_json() for p in pages]} for i, pages in found],
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
    from portalops.oncall import commands

    results = commands.send_tests(_oncall(ctx), args.person)
    failed = [r for r in results if r.error is not None]
    return Outcome(
        [{"person": r.person, "channel": r.channel, "ok": r.error is None, "error": r.error}
         for r in results],
        [table(None, ["person", "channel", "result"],
               [(r.person, r.channel, "sent" if r.error is None else f"FAILED: {r.error}")
                for r in results])],
        ExitCode.PROBLEM_FOUND if failed else ExitCode.OK,
    )  # fmt: skip


def _alertmanager_config(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.oncall import commands

    text = commands.alertmanager_config(_oncall(ctx), ctx.state_dir, ctx.config_path)
    if args.output is None:
        from rich.text import Text

        return Outcome({"config": text}, [Text(text.rstrip("\n"))])
    commands.write_alertmanager_config(text, args.output)
    return Outcome(
        {"written": str(args.output)},
        [f"wrote {args.output}; check it with: amtool check-config {args.output}"],
    )
