"""``ops drill``: drill the latest snapshot of each selected source in each selected repository,
then record the results (state directory report, node_exporter metrics).

The database step of each drill is the source kind's own (``drill()`` of its kind module,
through the registry in :mod:`portalops.backup.sources`); this loop knows no kind.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from portalops.backup.config import Backup, Drill
from portalops.backup.jobs.access import load_keys, open_repository, select, select_sources
from portalops.backup.jobs.drill import DrillResult, drill_one
from portalops.backup.jobs.drill_report import write_metrics, write_report
from portalops.backup.repo.keys import IdentityMissing
from portalops.backup.repo.repository import Repository
from portalops.backup.sources import Source, drill_for

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def run_drills(
    backup: Backup,
    drill: Drill,
    *,
    sources: list[str] | None = None,
    repositories: list[str] | None = None,
    config_file: Path | None = None,
    clock: Clock = utc_now,
) -> list[DrillResult]:
    """Drill the named sources (all if None) in the named repositories (all if None); a
    source without a snapshot is a failed result, not an exception. Needs the identity."""
    chosen = select_sources(backup, sources, config_file, "drill")
    keys = load_keys(backup)
    if keys.identity is None:
        raise IdentityMissing(config_file or "the config")
    results: list[DrillResult] = []
    for repo_settings in select(backup, repositories, config_file):
        repo = open_repository(repo_settings, keys)
        repo.load_index()
        results += [_drill_latest(repo, source, drill, clock) for source in chosen]
    return results


def _drill_latest(repo: Repository, source: Source, drill: Drill, clock: Clock) -> DrillResult:
    every = repo.snapshots(source.name)
    refs = [r for r in every if not r.future_dated]
    if not refs:
        missing = DrillResult(source.name, source.category.value, repo.name, "", clock())
        why = f"no snapshot of {source.name} in repository {repo.name}"
        if every:
            why += (
                f" but {len(every)} future-dated one(s), which drills never pick "
                "('ops backup check' names them)"
            )
        missing.reasons.append(why)
        return missing
    return drill_one(
        repo,
        refs[-1],
        rto_seconds=drill.rto_seconds,
        scratch=drill.scratch_dir,
        run_as=drill.run_as,
        database=drill_for(source, drill),
    )


def record_drills(
    results: list[DrillResult],
    now: datetime,
    *,
    state_dir: Path,
    textfile_dir: Path | None,
    rto_seconds: float,
) -> None:
    """The report in ``state_dir/drills`` and, if a textfile directory is configured, the
    ``portalops_drill_*`` metrics."""
    state = write_report(state_dir, results, now)
    if textfile_dir is not None:
        write_metrics(textfile_dir, state, rto_seconds)
