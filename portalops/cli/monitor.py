"""``ops monitor check | baseline | serve``: Art. 19 availability and security-posture probes."""

from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any

from rich.markup import escape
from rich.text import Text

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.errors import BadInput, ExitCode, OpsError
from portalops.core.visible import visible
from portalops.inventory.model import Estate
from portalops.monitors.baseline import load_baselines, refresh
from portalops.monitors.catalogue import Module
from portalops.monitors.exporter import NotConfigured, Sweeper, run, serve, sweep
from portalops.monitors.findings import Severity
from portalops.monitors.probe import ProbeConfig, ProbeResult, Target, configure
from portalops.monitors.targets import configured, in_shard, select
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
        "/probe?target=DOMAIN for one configured target now (any URL only with "
        "monitor.probe_any: true), /healthz (503 when the sweep falls behind). A long-running "
        "service (the monitoring role runs it under systemd): logs at INFO unless -v; SIGTERM "
        "or Ctrl-C stops it; a --listen beyond loopback is logged as a warning.",
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


#: Characters a terminal may act on rather than show: C0 controls but the tab (newlines too:
#: one finding, one line), DEL, the C1 controls (U+009B is a CSI of its own) and the bidi
#: overrides and isolates, which reorder what is shown.
def _plain(text: str) -> Text:
    """A line of portal text for the human output: visible, and plain Text, never markup
    ("503 [/bold]" would otherwise end the run with a traceback)."""
    return Text(visible(text))


def _row(r: ProbeResult) -> tuple[str, ...]:
    """A table row; every cell visible and escaped, since the table reads rich markup and a
    portal's answer (its TLS version string, a URL target's name) is not ours to trust."""
    findings = ", ".join(sorted({f.code for f in r.findings if f.severity != Severity.INFO}))
    cells = (
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
    return tuple(escape(visible(cell)) for cell in cells)


def _check(ctx: Context, args: argparse.Namespace) -> Outcome:
    targets = _targets(ctx, args.targets)
    config = probe_config(ctx.settings, args.module)
    results = run(sweep(targets, config, ctx.settings.monitor.concurrency))
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
                # a finding's message quotes the portal (status reason, page text)
                human.append(
                    _plain(f"{r.target.domain}: {f.severity.value}: {f.code}: {f.message}")
                )
    return Outcome(
        [r.to_json() for r in results], human, ExitCode.PROBLEM_FOUND if failing else ExitCode.OK
    )


def _baseline(ctx: Context, args: argparse.Namespace) -> Outcome:
    targets = _targets(ctx, args.targets)
    config = probe_config(ctx.settings, ["http"])
    results = run(sweep(targets, config, ctx.settings.monitor.concurrency))
    now = ctx.env.now().isoformat(timespec="seconds")
    done = refresh(ctx.settings.state_dir, results, now)
    taken, skipped, path = done.taken, done.skipped, done.file
    human: list[Any] = [_plain(f"baselines taken for {len(taken)} home pages into {path}")]
    # the reasons quote the portals' answers
    human += [_plain(f"not taken: {domain}: {reason}") for domain, reason in skipped]
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
    # monitor.shard: sweep this exporter's share; /probe still answers for every target
    swept = in_shard(targets, monitor.shard_of)
    sweeper = Sweeper(swept, config, monitor.interval, monitor.concurrency, uplink=monitor.uplink)
    estate = _estate(ctx)

    def lookup(item: str) -> Target:
        """/probe's target: a swept one by domain or URL; anything else only with
        monitor.probe_any (403 otherwise, before any fetch)."""
        if not item:
            raise LookupError("target= is required (a portal domain or URL)")
        found = configured(item, targets)
        if found is not None:
            return found
        if not monitor.probe_any:
            raise NotConfigured(
                f"target {item[:200]!r} is not a configured target (a portal domain of the "
                "estate or a URL in monitor.urls); set monitor.probe_any: true to probe any URL"
            )
        try:
            return select([item], monitor, estate)[0]
        except BadInput as exc:
            raise LookupError(str(exc)) from None

    shard = f" (shard {monitor.shard} of {len(targets)})" if monitor.shard else ""

    def listening() -> None:
        print(
            f"ops monitor: {len(swept)} targets{shard}, serving http://{listen}/metrics",
            file=ctx.env.stderr,
        )

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a clean stop
        run(serve(sweeper, lookup, listen, listening, probe_any=monitor.probe_any))
    return Outcome({"stopped": True}, [])
