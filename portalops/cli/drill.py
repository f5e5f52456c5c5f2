"""``ops drill``: restore the latest snapshot of every source for real, and time it."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from portalops.backup.config import MariadbSource, PostgresSource
from portalops.backup.jobs.access import load_keys, open_repository, select
from portalops.backup.jobs.drill import DrillResult, drill_one
from portalops.backup.jobs.drill_db import database_drill
from portalops.backup.jobs.drill_report import write_metrics, write_report
from portalops.backup.repo.keys import IdentityMissing
from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.errors import BadInput, ExitCode
from portalops.core.units import age, size


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "drill", help="Art. 11.3: restore every source's latest snapshot and test it"
    )
    parser.add_argument("--source", action="append", metavar="S", help="only this source")
    parser.add_argument("--repository", action="append", metavar="R", help="only this repository")
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    settings = ctx.settings
    backup = settings.backup
    where = ctx.config_path or "the config"
    names = [s.name for s in backup.sources]
    wanted = args.source or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise BadInput(
            f"unknown source {', '.join(map(repr, unknown))}; {where} defines "
            f"{', '.join(names) or 'none'}"
        )
    if not wanted:
        raise BadInput(f"{where}: backup.sources is empty: nothing to drill")
    keys = load_keys(backup)
    if keys.identity is None:
        raise IdentityMissing(where)
    results: list[DrillResult] = []
    for repo_settings in select(backup, args.repository, ctx.config_path):
        repo = open_repository(repo_settings, keys)
        repo.load_index()
        for source in (s for s in backup.sources if s.name in wanted):
            every = repo.snapshots(source.name)
            refs = [r for r in every if not r.future_dated]
            if not refs:
                missing = DrillResult(
                    source.name, source.category.value, repo.name, "", datetime.now(UTC)
                )
                why = f"no snapshot of {source.name} in repository {repo.name}"
                if every:
                    why += (
                        f" but {len(every)} future-dated one(s), which drills never pick "
                        "('ops backup check' names them)"
                    )
                missing.reasons.append(why)
                results.append(missing)
                continue
            results.append(
                drill_one(
                    repo,
                    refs[-1],
                    rto_seconds=settings.drill.rto_seconds,
                    scratch=settings.drill.scratch_dir,
                    run_as=settings.drill.run_as,
                    database=(
                        database_drill(source, settings.drill)
                        if isinstance(source, (PostgresSource, MariadbSource))
                        else None
                    ),
                )
            )
    now = datetime.now(UTC)
    state = write_report(settings.state_dir, results, now)
    if settings.metrics.textfile_dir is not None:
        write_metrics(settings.metrics.textfile_dir, state, settings.drill.rto_seconds)
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
