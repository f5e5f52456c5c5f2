"""``ops drill``: restore the latest snapshot of every source for real, and time it."""

from __future__ import annotations

import argparse
from typing import Any

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.errors import ExitCode
from portalops.core.units import age, size


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "drill",
        help="Art. 11.3: restore every source's latest snapshot and test it",
        description="Restore each source's latest genuine snapshot from each repository into "
        "scratch space and test it for real: every byte verified, restored nginx "
        "configurations through 'nginx -t', database dumps loaded into a throwaway "
        "PostgreSQL or MariaDB and every table's rows counted against the backup's. Each "
        "restore is timed against drill.rto_seconds. Writes drill-status.json and the "
        "portalops_drill_* metrics. Needs backup.identity (the drill host). Exit code 1 "
        "when a drill failed.",
        epilog="""\
examples:
  ops drill                                   every source, every repository
  ops drill --source portal-db --repository offsite
  ops drill --json > /var/lib/portal-ops/last-drill.json""",
    )
    parser.add_argument("--source", action="append", metavar="S", help="only this source (repeat)")
    parser.add_argument(
        "--repository", action="append", metavar="R", help="only this repository (repeat)"
    )
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.drill_run import record_drills, run_drills

    settings = ctx.settings
    results = run_drills(
        settings.backup,
        settings.drill,
        sources=args.source,
        repositories=args.repository,
        config_file=ctx.config_path,
        clock=ctx.env.now,
    )
    now = ctx.env.now()
    record_drills(
        results,
        now,
        state_dir=settings.state_dir,
        textfile_dir=settings.metrics.textfile_dir,
        rto_seconds=settings.drill.rto_seconds,
    )
    rows = [
        (
            r.source,
            r.repository,
            r.snapshot[:8],
            age(r.snapshot_time, now) if r.snapshot else "",
            size(r.bytes),
            f"{r.restore_seconds:.2f}",
            "ok" if r.ok else "FAILED",
            "; ".join(r.reasons),
        )
        for r in results
    ]
    failed = [r for r in results if not r.ok]
    human: list[Any] = [
        table(
            None,
            ["source", "repository", "snapshot", "age", "bytes", "restore s", "result", "reason"],
            rows,
        )
    ]
    return Outcome(
        {"ok": not failed, "time": now, "results": [r.to_json() for r in results]},
        human,
        ExitCode.PROBLEM_FOUND if failed else ExitCode.OK,
    )
