"""``ops systemd``: the arguments and the report. The units, their hardening, installing them and
recording a unit's result live in :mod:`portalops.systemd`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from portalops import systemd
from portalops.cli.context import Context
from portalops.cli.output import Outcome
from portalops.core.errors import BadInput

DESCRIPTION = """\
Render this host's scheduled jobs (the ones 'ops cron' schedules, from backup.schedule) as
systemd .service + .timer units, with OnCalendar= in the schedule's own time zone,
Persistent=true, OnFailure= to portal-ops-failure@.service (which logs the failure and sets
portalops_job_failed in node_exporter's textfile directory) and hardening (ProtectSystem=strict,
ReadWritePaths= only what each job writes). Role monitor adds the long-running services
'ops monitor serve' and 'ops oncall serve', run as the system user portal-ops.
Without --install the units are printed. On hosts without systemd use 'ops cron'."""

EPILOG = """\
examples:
  ops systemd --role writer                          print a portal server's units
  ops systemd --role admin --install                 install the drill host's timers, start them
  ops systemd --role monitor --install --dry-run     show what would be written and run
  ops systemd --role writer --install --dir /tmp/units   write the files only"""


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    known = commands.choices
    p = commands.add_parser(
        "systemd",
        help="systemd timers and services for this host's jobs ('ops cron' where no systemd)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--role",
        action="append",
        choices=systemd.ROLES,
        help="writer (a portal server: the daily backup; the default), admin (the drill host: "
        "checks, prunes, drills) or monitor (ops monitor serve, ops oncall serve); repeat for a "
        "host that has several",
    )
    p.add_argument(
        "--install",
        action="store_true",
        help="write the units (atomically, 0644); where systemd runs this host and --dir is its "
        "own, also daemon-reload and enable --now the timers and services",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=systemd.UNIT_DIR,
        help=f"where --install writes the units (default: {systemd.UNIT_DIR})",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --install: say what would be written and run, change nothing",
    )
    p.add_argument(
        "--no-prepare",
        action="store_true",
        help="with --install: do not create the service user, the drill user and the state "
        "directories the units need (a provisioning tool does it)",
    )
    p.add_argument(
        "--service-user",
        default=systemd.SERVICE_USER,
        metavar="USER",
        help=f"the system user role monitor's services run as (default: {systemd.SERVICE_USER})",
    )
    record = p.add_mutually_exclusive_group()
    record.add_argument(
        "--record-failure",
        metavar="UNIT",
        help="(used by portal-ops-failure@.service) log that UNIT failed and set "
        "portalops_job_failed{unit=UNIT} to 1",
    )
    record.add_argument(
        "--record-success",
        metavar="UNIT",
        help="(used by each job's ExecStartPost=) set portalops_job_failed{unit=UNIT} to 0",
    )
    p.set_defaults(run=run, known_commands=known)


def _config(ctx: Context) -> Path:
    if ctx.config_path is None:
        raise BadInput("the units need a config file: pass --config FILE (the jobs will read it)")
    return ctx.config_path.resolve()


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    where = str(ctx.config_path or "the config")
    unit = args.record_failure or args.record_success
    if unit:
        failed = bool(args.record_failure)
        path = systemd.record_result(unit, failed, ctx.settings, where)
        text = f"{unit}: {'failure' if failed else 'success'} recorded" + (
            f" in {path}" if path else " (no metrics.textfile_dir)"
        )
        return Outcome({"unit": unit, "failed": failed, "textfile": str(path or "")}, [text])
    if args.dry_run and not args.install:
        raise BadInput("--dry-run goes with --install")
    roles = systemd.select_units_roles(args.role, ctx.settings, where)
    config = _config(ctx)
    units_file = ctx.args.units.resolve() if getattr(ctx.args, "units", None) else None
    user = systemd.check_user_name(args.service_user)
    units = systemd.render(roles, config, ctx.settings, args.known_commands, units_file, user)
    skipped = systemd.skipped_jobs([r for r in roles if r != "monitor"], args.known_commands)
    data: dict[str, Any] = {
        "roles": roles,
        "units": [u.as_json() for u in units],
        "skipped": [{"job": j.name, "note": j.note} for j in skipped],
        "installed": False,
    }
    human: list[Any] = []
    if not args.install:
        for u in units:
            human += [f"# --- {u.name}", u.text.rstrip("\n"), ""]
        human += [f"# {j.name} not scheduled: {j.note}" for j in skipped]
        return Outcome(data, human)
    directory: Path = args.dir.absolute()
    prepared = (
        [] if args.no_prepare or args.dry_run else systemd.prepare_host(roles, ctx.settings, user)
    )
    done = systemd.install(units, directory, dry_run=args.dry_run)
    data.update(done, installed=not args.dry_run, prepared=prepared)
    verb = "would write" if args.dry_run else "wrote"
    human.append(
        f"{verb} {len(done['written'])} unit(s) in {directory}, {len(done['unchanged'])} unchanged"
    )
    human += [f"  {p}" for p in done["written"]]
    if done["activated"]:
        verb = "would run" if args.dry_run else "ran"
        human += [f"{verb}: {c}" for c in done["commands"]]
    elif directory.resolve() != systemd.UNIT_DIR.resolve():
        human.append(f"not activated: {directory} is not {systemd.UNIT_DIR}")
    else:
        human.append(
            "systemd is not this host's service manager (not PID 1): the units are written but "
            "not started; once it is, run: " + "; ".join(done["commands"])
        )
    human += prepared
    return Outcome(data, human)
