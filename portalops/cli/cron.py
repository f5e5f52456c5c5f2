"""``ops cron`` and ``ops schedule``: the arguments and the report. What the jobs are, the cron
file and the daemon live in :mod:`portalops.schedule`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from portalops import schedule
from portalops.cli.context import Context
from portalops.cli.output import Outcome
from portalops.core.errors import BadInput


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The drill job is enabled once an 'ops drill' command exists: ask the parser itself.
    known = commands.choices
    p = commands.add_parser(
        "cron",
        help="the /etc/cron.d lines for this host's scheduled jobs (hosts without systemd)",
        description="The /etc/cron.d file that runs this host's scheduled jobs at the times of "
        "backup.schedule, converted to the machine's zone (Debian's cron ignores CRON_TZ). "
        "Where systemd runs the host, 'ops systemd' installs the same jobs as timers instead.",
        epilog="""\
examples:
  ops cron --role writer                      print a portal server's cron file
  ops cron --role writer --role admin --install   write /etc/cron.d/portal-ops
  ops cron --role admin --machine-tz UTC      times converted for a machine kept in UTC""",
    )
    _role_option(p)
    p.add_argument("--install", action="store_true", help="write the file (atomically, 0644)")
    p.add_argument("--user", default="root", help="run the jobs as this user (default: root)")
    p.add_argument(
        "--file",
        type=Path,
        default=schedule.CRON_FILE,
        help=f"the cron file (default: {schedule.CRON_FILE})",
    )
    p.add_argument(
        "--machine-tz",
        metavar="ZONE",
        help="the zone cron schedules in (default: this machine's, /etc/timezone)",
    )
    p.set_defaults(run=run, known_commands=known)

    p = commands.add_parser("schedule", help="run this host's scheduled jobs in the foreground")
    _role_option(p)
    p.add_argument("--once", metavar="JOB", help="run this job now and exit (backup, check, ...)")
    # A daemon: each run's start and exit code is its log, at INFO whatever -v says.
    p.set_defaults(run=run, known_commands=known, service=True)


def _role_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--role",
        action="append",
        choices=schedule.ROLES,
        help="writer (a portal server: backs up its sources; the default) or admin (the drill "
        "host: checks, prunes, drills); repeat for a host that is both",
    )


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    if args.command == "cron":
        return _cron(ctx, args)
    return _schedule(ctx, args)


def _roles(ctx: Context, args: argparse.Namespace) -> list[str]:
    return schedule.select_roles(
        args.role, ctx.settings.backup, str(ctx.config_path or "the config")
    )


def _config(ctx: Context) -> Path:
    if ctx.config_path is None:
        raise BadInput(
            "scheduled jobs need a config file: pass --config FILE (the jobs will read it)"
        )
    return ctx.config_path.resolve()


def _cron(ctx: Context, args: argparse.Namespace) -> Outcome:
    roles = _roles(ctx, args)
    config = _config(ctx)
    path: Path = args.file.absolute()
    schedule.check_cron_target(args.user, path)
    machine = schedule.machine_zone(args.machine_tz)
    jobs = schedule.jobs_for(roles, args.known_commands)
    schedule.check_cron_command(schedule.job_argv(jobs[0], config))
    plan = ctx.settings.backup.schedule
    lines = schedule.cron_lines(jobs, config, plan, args.user, machine, ctx.env.now())
    text = "\n".join(lines) + "\n"
    human: list[Any] = [text.rstrip("\n")]
    if args.install:
        schedule.install_cron_file(path, text)
        enabled = [j.name for j in jobs if j.available]
        human = [f"wrote {path} (0644): {', '.join(enabled)}; cron reads it within a minute"]
    return Outcome({"file": str(path), "lines": lines, "installed": bool(args.install)}, human)


def _schedule(ctx: Context, args: argparse.Namespace) -> Outcome:
    config = _config(ctx)
    plan = ctx.settings.backup.schedule
    if args.once:
        job = schedule.find_job(args.once, args.known_commands)
        result = schedule.run_job(job, config)
        code = result["exit_code"]
        text = f"job {job.name} ({job.describe()}): exit code {code} after {result['seconds']}s"
        return Outcome(result, [text], schedule.exit_code_of(code))
    roles = _roles(ctx, args)
    daemon = schedule.Daemon(schedule.jobs_for(roles, args.known_commands), config, plan)
    daemon.serve()
    failed = sum(1 for r in daemon.runs if r["exit_code"] != 0)
    data = {"stopped_by": daemon.stop_signal, "runs": daemon.runs}
    text = f"stopped by {daemon.stop_signal} after {len(daemon.runs)} job run(s), {failed} failed"
    return Outcome(data, [text])
