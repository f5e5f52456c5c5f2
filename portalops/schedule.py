"""The host's scheduled jobs (Art. 11.2 daily backups, Art. 11.3 checks) at the times of
``backup.schedule``: which jobs a host runs, the /etc/cron.d file that runs them, and the
foreground daemon that runs them instead (``ops cron``, ``ops schedule``).

A host's role decides its jobs: a **writer** (portal server) backs up its sources; the **admin**
host (the drill host, which holds the identity) checks the repositories, reads back a rotating
share of the data, applies the retention policy and runs restore drills.

Times are written in the schedule's zone (Asia/Ho_Chi_Minh). Debian's cron (vixie cron 3.0pl1,
bookworm) ignores ``CRON_TZ``: its crontab(5) has no such variable, its FEATURES file says "TZ
can be set, but cron ignores it", and cron(8) says it "will only handle tasks in a single
timezone", the system's (/etc/timezone). So the cron file carries the times converted to that
zone, says so in a comment, and sets no CRON_TZ (which cronie would honour, shifting them twice).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import schedule

from portalops.backup.config import WEEKDAYS, Backup, Schedule
from portalops.core.atomic import write_atomic
from portalops.core.errors import BadInput, ExitCode, OpsError

log = logging.getLogger(__name__)

ROLES = ("writer", "admin")
CRON_FILE = Path("/etc/cron.d/portal-ops")
CRON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_GRACE = 120.0  # seconds a job gets to stop after SIGINT before it is killed
NAP = 1.0  # the daemon's sleep between checks: a signal is acted on within a second


@dataclass(frozen=True)
class Job:
    name: str  # its key in backup.schedule
    role: str
    args: tuple[str, ...]  # the ops arguments after --config FILE
    purpose: str
    available: bool = True
    note: str = ""

    def describe(self) -> str:
        return "ops " + " ".join(self.args)


@dataclass(frozen=True)
class When:
    """A time of day, every day (weekday None) or every week (0 = Monday)."""

    weekday: int | None
    hour: int
    minute: int

    @classmethod
    def parse(cls, text: str) -> When:
        """Parse backup.schedule's normalised form: '02:30' or 'Sun 06:00'."""
        *day, clock = text.split()
        hour, minute = (int(part) for part in clock.split(":"))
        return cls(WEEKDAYS.index(day[0]) if day else None, hour, minute)

    def clock(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    def __str__(self) -> str:
        return self.clock() if self.weekday is None else f"{WEEKDAYS[self.weekday]} {self.clock()}"

    def convert(self, source: tzinfo, target: tzinfo, now: datetime) -> When:
        """The same moment as a time in ``target``, for its next occurrence after ``now``."""
        moment = now.astimezone(source).replace(
            hour=self.hour, minute=self.minute, second=0, microsecond=0
        )
        if self.weekday is not None:
            moment += timedelta(days=(self.weekday - moment.weekday()) % 7)
        there = moment.astimezone(target)
        weekday = None if self.weekday is None else there.weekday()
        return When(weekday, there.hour, there.minute)

    def cron_fields(self) -> str:
        day = "*" if self.weekday is None else WEEKDAYS[self.weekday]  # cron knows the names
        return f"{self.minute} {self.hour} * * {day}"


# -- jobs ---------------------------------------------------------------------------------


def all_jobs(known_commands: Iterable[str]) -> list[Job]:
    """Every job portal-ops schedules; the drill is enabled once an 'ops drill' command
    exists (``known_commands``: the CLI's command names)."""
    drill = "drill" in set(known_commands)
    return [
        Job("backup", "writer", ("backup", "run"), "Art. 11.2: daily backup of every source"),
        Job("check", "admin", ("backup", "check"), "Art. 11.3: repository structure checked"),
        Job(
            "read_data",
            "admin",
            ("backup", "check", "--read-data", "10"),
            "Art. 11.3: a rotating 10% of the stored data read back and verified",
        ),
        Job("prune", "admin", ("backup", "forget", "--prune"), "retention policy, space freed"),
        Job(
            "drill",
            "admin",
            ("drill",),
            "Art. 11.3, 19.3: restore drill with measured restore time",
            available=drill,
            note=""
            if drill
            else "'ops drill' does not exist in this portal-ops yet; re-run "
            "'ops cron --install' after the upgrade that brings it",
        ),
    ]


def select_roles(given: list[str] | None, backup: Backup, where: str) -> list[str]:
    """The roles asked for (writer when none), each checked against the config it needs;
    ``where`` names the config file in the messages."""
    roles = [r for r in ROLES if r in (given or ["writer"])]
    if "writer" in roles and not backup.sources:
        raise BadInput(f"role writer: backup.sources is empty in {where}: nothing to back up")
    if "admin" in roles and backup.identity is None:
        raise BadInput(
            f"role admin: backup.identity is not set in {where}; pruning, read-data checks "
            "and drills read the backups, so they run where the identity is"
        )
    return roles


def jobs_for(roles: list[str], known_commands: Iterable[str]) -> list[Job]:
    return [j for j in all_jobs(known_commands) if j.role in roles]


def find_job(name: str, known_commands: Iterable[str]) -> Job:
    """The job ``ops schedule --once NAME`` runs; BadInput if there is none or it is not
    available yet."""
    jobs = {j.name: j for j in all_jobs(known_commands)}
    job = jobs.get(name)
    if job is None:
        raise BadInput(f"--once {name!r}: no such job; jobs: {', '.join(jobs)}")
    if not job.available:
        raise BadInput(f"--once {name}: {job.note}")
    return job


def ops_command() -> list[str]:
    """This very portal-ops, by absolute path: the console script beside the interpreter (a
    venv's bin/), else ``python -m portalops`` with the interpreter running this. Symlinks are
    kept: a venv's python is one, and resolving it would leave the venv."""
    python = Path(os.path.abspath(sys.executable))
    script = python.parent / "ops"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "portalops"]


def job_argv(job: Job, config: Path) -> list[str]:
    return [*ops_command(), "--config", str(config), *job.args]


def exit_code_of(code: int) -> ExitCode:
    """A job's exit code as ours; a signal's death or a code outside our range is
    OPERATIONAL."""
    try:
        return ExitCode(code)
    except ValueError:
        return ExitCode.OPERATIONAL


# -- the cron file ------------------------------------------------------------------------


def system_zone() -> tuple[tzinfo, str]:
    """The zone Debian's cron schedules in: /etc/timezone (read by cron itself), else
    /etc/localtime, else UTC."""
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
        return ZoneInfo(name), name
    except (OSError, ValueError, ZoneInfoNotFoundError):
        pass
    try:
        name = os.readlink("/etc/localtime").split("zoneinfo/", 1)[1]
        return ZoneInfo(name), name
    except (OSError, IndexError, ValueError, ZoneInfoNotFoundError):
        pass
    return ZoneInfo("UTC"), "UTC (no /etc/timezone)"


def machine_zone(name: str | None) -> tuple[tzinfo, str]:
    """The zone cron schedules in: ``name`` (``--machine-tz``) if given, else the system's."""
    if not name:
        return system_zone()
    try:
        return ZoneInfo(name), name
    except (ValueError, ZoneInfoNotFoundError):
        raise BadInput(f"--machine-tz {name!r}: unknown time zone") from None


def check_cron_target(user: str, path: Path) -> None:
    """The user a cron line runs as, and a file name cron will read."""
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]*\$?", user):
        raise BadInput(f"--user {user!r} is not a user name")
    if path.parent == CRON_FILE.parent and not re.fullmatch(r"[A-Za-z0-9_-]+", path.name):
        raise BadInput(
            f"--file {path}: cron ignores files in {path.parent} whose names hold dots or "
            "other characters than letters, digits, '-' and '_'; name it e.g. portal-ops"
        )


def check_cron_command(argv: list[str]) -> None:
    for part in argv:
        if "%" in part or "\n" in part:
            # cron turns % into a newline, and a line cannot hold a newline
            raise BadInput(f"cannot put {part!r} on a cron line: it holds '%' or a newline")


def _offsets_vary(source: tzinfo, target: tzinfo, now: datetime) -> bool:
    """Whether the two zones' difference changes in the coming year (daylight saving)."""
    gaps = set()
    for week in range(54):
        moment = now + timedelta(weeks=week)
        gaps.add((moment.astimezone(target).utcoffset(), moment.astimezone(source).utcoffset()))
    return len(gaps) > 1


def _offset(zone: tzinfo, now: datetime) -> str:
    delta = now.astimezone(zone).utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def cron_lines(
    jobs: list[Job],
    config: Path,
    plan: Schedule,
    user: str,
    machine: tuple[tzinfo, str],
    now: datetime,
) -> list[str]:
    """The cron file, line by line."""
    source = ZoneInfo(plan.timezone)
    target, target_name = machine
    roles = sorted({j.role for j in jobs}, key=ROLES.index)
    out = [
        f"# portal-ops scheduled jobs for this host (role: {', '.join(roles)}), from "
        f"backup.schedule in {config}.",
        "# Written by 'ops cron --install': change the config and re-run it, not this file.",
        f"# The configured times are {plan.timezone} local time. Debian's cron ignores CRON_TZ "
        "and schedules in the system zone only,",
        f"# so they are converted here to this machine's zone, {target_name} "
        f"({_offset(target, now)}).",
    ]
    if _offsets_vary(source, target, now):
        out.append(
            "# WARNING: the two zones' difference changes during the year (daylight saving): "
            "re-run 'ops cron --install' after each change."
        )
    out += [
        "# Only failures mail: stdout goes to /dev/null, errors (stderr) are kept, and a job "
        "that fails says so.",
        "# Overlapping runs need no flock: 'ops backup run' takes a host-wide lock itself.",
        "SHELL=/bin/sh",
        f"PATH={CRON_PATH}",
    ]
    for job in jobs:
        when = When.parse(getattr(plan, job.name))
        command = shlex.join(job_argv(job, config))
        line = (
            f"{when.convert(source, target, now).cron_fields()} {user} {command} >/dev/null"
            f" || echo \"portal-ops job '{job.name}' failed: {job.describe()} exited $?\" >&2"
        )
        out += ["", f"# {job.name} at {when} {plan.timezone}: {job.purpose}"]
        if job.available:
            out.append(line)
        else:
            out += [f"# Not enabled: {job.note}.", f"#{line}"]
    return out


def install_cron_file(path: Path, text: str) -> None:
    """Write the cron file atomically, mode 0644 (cron reads it within a minute)."""
    if not path.parent.is_dir():
        raise BadInput(
            f"--file {path}: directory {path.parent} does not exist (is cron installed?)"
        )
    try:
        write_atomic(path, text.encode(), 0o644)
    except OSError as exc:
        raise OpsError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- the daemon ---------------------------------------------------------------------------


def local_now() -> datetime:
    """The process's local time, aware: what `schedule` plans in (it uses naive local time)."""
    return datetime.now().astimezone()


class Daemon:
    """Runs the jobs at their times with `schedule`, each as a child ops process, until SIGTERM
    or SIGINT (or :meth:`stop`). Times are converted from the schedule's zone to the process's
    local time (what `schedule` uses without pytz), and re-planned whenever the local UTC offset
    changes.

    ``clock`` returns the local time, aware (its offset is what a daylight-saving change
    moves); ``sleep`` naps between checks. Tests pass their own to drive the loop without
    waiting."""

    def __init__(
        self,
        jobs: list[Job],
        config: Path,
        plan: Schedule,
        *,
        clock: Callable[[], datetime] = local_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.jobs = [j for j in jobs if j.available]
        self.skipped = [j for j in jobs if not j.available]
        self.config = config
        self.plan = plan
        self.clock = clock
        self.sleep = sleep
        self.scheduler = schedule.Scheduler()
        self.stop_signal: str | None = None
        self.runs: list[dict[str, Any]] = []
        self.planned_offset: timedelta | None = None
        self.plans = 0  # how often the jobs were planned: once, plus once per offset change

    def _plan(self) -> None:
        now = self.clock()
        local = now.tzinfo
        if local is None:
            raise ValueError("Daemon.clock must return an aware local time")
        source = ZoneInfo(self.plan.timezone)
        self.scheduler.clear()
        for job in self.jobs:
            when = When.parse(getattr(self.plan, job.name))
            there = when.convert(source, local, now)
            every = self.scheduler.every()
            unit = every.day if there.weekday is None else _weekday(every, there.weekday)
            planned = unit.at(there.clock()).do(self._run_job, job)
            log.info(
                "job %s: %s at %s %s, next run %s (local time)",
                job.name,
                job.describe(),
                when,
                self.plan.timezone,
                planned.next_run,
            )
        for job in self.skipped:
            log.info("job %s not scheduled: %s", job.name, job.note)
        self.planned_offset = now.utcoffset()
        self.plans += 1

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        """Stop after the current check; a running job is asked to stop (SIGINT)."""
        self.stop_signal = reason

    def serve(self) -> None:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._plan()
            while self.stop_signal is None:
                if self.clock().utcoffset() != self.planned_offset:
                    self._plan()  # daylight saving or a zone change on this machine
                self.scheduler.run_pending()
                self.sleep(NAP)  # short naps: a signal is acted on within a second
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopping on %s after %d job run(s)", self.stop_signal, len(self.runs))

    def _run_job(self, job: Job) -> None:
        if self.stop_signal is not None:
            return
        try:
            self.runs.append(run_job(job, self.config, lambda: self.stop_signal is not None))
        except OpsError as exc:  # the daemon keeps going: the next run may work
            log.error("job %s could not run: %s", job.name, exc)
            self.runs.append({"job": job.name, "exit_code": int(exc.exit_code), "error": str(exc)})


def _weekday(every: schedule.Job, weekday: int) -> schedule.Job:
    names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    unit: schedule.Job = getattr(every, names[weekday])  # every().sunday, ...
    return unit


def run_job(job: Job, config: Path, stopping: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run one job as a child ``ops`` process; its report (stdout) and errors go to our stderr.
    ``stopping()`` true asks the child to stop (SIGINT: it releases its locks on the way out)."""
    argv = job_argv(job, config)
    started = time.monotonic()
    log.info("job %s started: %s", job.name, shlex.join(argv))
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    except OSError as exc:
        raise OpsError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    interrupted = False
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if stopping is not None and stopping() and not interrupted:
                interrupted = True
                child.send_signal(signal.SIGINT)
                try:
                    code = child.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    child.kill()
                    code = child.wait()
                break
    seconds = time.monotonic() - started
    level = logging.INFO if code == 0 else logging.ERROR
    log.log(level, "job %s finished: exit code %d after %.1fs", job.name, code, seconds)
    return {"job": job.name, "command": argv, "exit_code": code, "seconds": round(seconds, 3)}
