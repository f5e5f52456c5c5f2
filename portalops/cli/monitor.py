"""``ops monitor check | baseline | serve``: Art. 19 availability and security-posture probes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.errors import BadInput, ExitCode, OpsError
from portalops.inventory.model import Estate
from portalops.monitors.baseline import load_baselines, refresh
from portalops.monitors.catalogue import Module
from portalops.monitors.exporter import Sweeper, serve, sweep
from portalops.monitors.findings import Severity
from portalops.monitors.probe import ProbeConfig, ProbeResult, Target, configure
from portalops.monitors.targets import select
from portalops.settings import Settings

log = logging.getLogger(__name__)


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "monitor", help="Art. 19: probe the portals' availability and security posture"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("check", help="probe now and print a table; exit 1 on failures")
    p.add_argument(
        "targets", nargs="*", metavar="TARGET", help="portal domain or URL (default: all)"
    )
    p.add_argument("--module", action="append", choices=[m.value for m in Module],
                   help="only this module (repeat; default: monitor.modules)")  # fmt: skip
    p.set_defaults(run=_check)
    p = sub.add_parser("baseline", help="record the home pages' fingerprints for defacement checks")
    p.add_argument(
        "targets", nargs="*", metavar="TARGET", help="portal domain or URL (default: all)"
    )
    p.set_defaults(run=_baseline)
    p = sub.add_parser(
        "serve",
        help="Prometheus exporter: /metrics, /probe, /healthz",
        description="Probe every target (each portal's domains and monitor.urls) every "
        "monitor.interval and serve the results to Prometheus: /metrics for the last sweep, "
        "/probe?target=DOMAIN for one target now, /healthz. A long-running service (the "
        "monitoring role runs it under systemd): logs at INFO unless -v; SIGTERM or Ctrl-C "
        "stops it.",
        epilog="""\
examples:
  ops monitor serve                           on monitor.listen (default 127.0.0.1:9433)
  ops monitor serve --listen 127.0.0.1:9533 -v
  curl -s 'http://127.0.0.1:9433/probe?target=daotru.tamdao.vinhphuc.gov.vn'""",
    )
    p.add_argument("--listen", metavar="ADDR", help="host:port (default: monitor.listen)")
    p.set_defaults(run=_serve, service=True)


def _estate(ctx: Context) -> Estate | None:
    if not ctx.settings.monitor.estate:
        return None
    try:
        return ctx.estate
    except OpsError:
        if ctx.args.units is not None:
            raise
        return None  # no units file: URL targets only


def probe_config(settings: Settings, modules: list[str] | None = None) -> ProbeConfig:
    return configure(settings.monitor, load_baselines(settings.state_dir), modules)


def _targets(ctx: Context, wanted: list[str]) -> list[Target]:
    targets = select(wanted, ctx.settings.monitor, _estate(ctx))
    if not targets:
        raise BadInput(
            "nothing to probe: no units file (--units) and no monitor.urls in the config"
        )
    return targets


def _row(r: ProbeResult) -> tuple[str, ...]:
    findings = ", ".join(sorted({f.code for f in r.findings if f.severity != Severity.INFO}))
    return (
        r.target.portal,
        r.target.domain,
        "up" if r.success else "DOWN",
        str(r.status_code or "-"),
        f"{r.duration * 1000:.0f} ms",
        "-" if r.cert_days_left is None else f"{r.cert_days_left:.0f}",
        r.tls.version if r.tls else "-",
        r.grade or "-",
        findings,
    )


def _check(ctx: Context, args: argparse.Namespace) -> Outcome:
    targets = _targets(ctx, args.targets)
    config = probe_config(ctx.settings, args.module)
    results = asyncio.run(sweep(targets, config, ctx.settings.monitor.concurrency))
    failing = [r for r in results if r.failing]
    human: list[Any] = [
        table(
            None,
            [
                "portal",
                "domain",
                "up",
                "status",
                "latency",
                "cert days",
                "TLS",
                "grade",
                "findings",
            ],
            [_row(r) for r in results],
        )
    ]
    for r in results:
        for f in r.findings:
            if f.severity != Severity.INFO:
                human.append(f"{r.target.domain}: {f.severity.value}: {f.code}: {f.message}")
    return Outcome(
        [r.to_json() for r in results], human, ExitCode.PROBLEM_FOUND if failing else ExitCode.OK
    )


def _baseline(ctx: Context, args: argparse.Namespace) -> Outcome:
    targets = _targets(ctx, args.targets)
    config = probe_config(ctx.settings, ["http"])
    results = asyncio.run(sweep(targets, config, ctx.settings.monitor.concurrency))
    now = ctx.env.now().isoformat(timespec="seconds")
    done = refresh(ctx.settings.state_dir, results, now)
    taken, skipped, path = done.taken, done.skipped, done.file
    human: list[Any] = [f"baselines taken for {len(taken)} home pages into {path}"]
    human += [f"not taken: {domain}: {reason}" for domain, reason in skipped]
    return Outcome(
        {"taken": taken, "skipped": [{"domain": d, "reason": r} for d, r in skipped],
         "file": str(path)},
        human,
        ExitCode.PROBLEM_FOUND if skipped else ExitCode.OK,
    )  # fmt: skip


def _serve(ctx: Context, args: argparse.Namespace) -> Outcome:
    monitor = ctx.settings.monitor
    listen = args.listen or monitor.listen
    targets = _targets(ctx, [])
    config = probe_config(ctx.settings)
    sweeper = Sweeper(targets, config, monitor.interval, monitor.concurrency, uplink=monitor.uplink)
    estate = _estate(ctx)

    def lookup(item: str) -> Target:
        if not item:
            raise LookupError("target= is required (a portal domain or URL)")
        try:
            return select([item], monitor, estate)[0]
        except BadInput as exc:
            raise LookupError(str(exc)) from None

    def listening() -> None:
        print(
            f"ops monitor: {len(targets)} targets, serving http://{listen}/metrics",
            file=ctx.env.stderr,
        )

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a clean stop
        asyncio.run(serve(sweeper, lookup, listen, listening))
    return Outcome({"stopped": True}, [])
