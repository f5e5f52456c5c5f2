"""The host's scheduled jobs and services as systemd units (``ops systemd``): Debian 12's way
to run them, with ``ops cron`` kept for hosts without systemd.

The jobs and their times are :mod:`portalops.schedule`'s (same job list, same config): each
job is a ``Type=oneshot`` service started by a timer whose ``OnCalendar=`` carries the
schedule's zone itself (systemd 252 understands ``... 02:30:00 Asia/Ho_Chi_Minh``), so no
conversion to the machine's zone is needed and a daylight-saving change needs no re-install.
``Persistent=true`` runs a job missed while the host was down at the next boot. A failed unit
starts ``portal-ops-failure@<unit>.service``, which logs the failure (the journal) and sets
``portalops_job_failed{unit="..."}`` in node_exporter's textfile directory (alert
``ScheduledJobFailed``); the job's own successful run, or a service's successful start, sets it
back to 0. A long-running service restarts on failure (every 5 s); only when it crash-loops
(5 starts within 10 minutes) does systemd give up, mark it failed and start the failure unit
(systemd 252; later versions also start it between restarts, and the next start's success
record clears it again, before the alert's 5 minutes are up).
A job that hangs is stopped after ``TimeoutStartSec=`` (20 h for a daily job, 3 days for a
weekly one), so it cannot block its later runs for ever.

Who runs what, and why:

- **writer** (``ops backup run``) and **admin** (checks, prune, drills) run as root: a backup
  reads webroots of any owner, the root-only writer key and config, and dumps databases over
  their local sockets; a drill starts throwaway servers as its own unprivileged user (which
  takes root to switch to). They get every capability they may need to *read* and hand over,
  but may *write* only where their output goes: ``ProtectSystem=strict`` with
  ``ReadWritePaths=`` the state directory, the textfile directory, the local repositories and
  the drill's scratch space. The backup's command sources run arbitrary admin commands (``nft
  list ruleset``, ``lvs``, ``iptables-save``...), so its bounding set drops only what no
  reading or dumping command needs (kernel modules, the clock, reboot, MAC policy...); the
  admin jobs, which run no command source, drop system and network administration too.
- **monitor** (``ops monitor serve``, ``ops oncall serve``) run as the system user
  ``portal-ops``: they only listen on a port, probe over the network and write their state.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector

from portalops.backup.config import WEEKDAYS
from portalops.backup.engines.scratch import ensure_user as ensure_drill_user
from portalops.core import procs
from portalops.core.atomic import write_atomic
from portalops.core.errors import BadInput, OpsError
from portalops.core.metricsfile import write_textfile
from portalops.schedule import Job, When, job_argv, jobs_for, ops_command, select_roles
from portalops.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("writer", "admin", "monitor")
UNIT_DIR = Path("/etc/systemd/system")
PREFIX = "portal-ops"
FAILURE_TEMPLATE = f"{PREFIX}-failure@.service"
#: The system user of the long-running services (role monitor); root is not needed there.
SERVICE_USER = "portal-ops"
#: The textfile the failure unit and successful runs write (node_exporter reads it).
METRICS_FILE = "portal_ops_jobs.prom"
#: Where the per-unit results are kept between runs, under the state directory.
RESULTS_FILE = "systemd-jobs.json"
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+\.(service|timer|socket|target|path|mount)")

#: Capabilities dropped from the backup's bounding set (role writer): only those no command
#: that *reads* or *dumps* the host needs, since a command source may run any admin command as
#: root (``nft list ruleset`` needs CAP_NET_ADMIN, ``iptables-save`` CAP_NET_RAW, ``lvs``
#: CAP_SYS_ADMIN and CAP_SYS_RAWIO, ``auditctl -l`` CAP_AUDIT_CONTROL: all kept). Tracing
#: other processes (CAP_SYS_PTRACE) is no part of reading or dumping: dropped.
#: docs/backup.md says how to add one back with a drop-in.
WRITER_DROPPED_CAPS = (
    "CAP_SYS_MODULE CAP_SYS_PTRACE CAP_SYS_BOOT CAP_SYS_TIME CAP_SYS_PACCT CAP_SYS_TTY_CONFIG "
    "CAP_MKNOD CAP_LINUX_IMMUTABLE CAP_AUDIT_WRITE CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_SYSLOG "
    "CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_LEASE CAP_BPF CAP_PERFMON"
)
#: Dropped from the other root units (role admin's checks, prunes and drills, the failure
#: unit): they run only ops itself and the throwaway database servers, never a command
#: source, so the network, system and audit administration go too.
DROPPED_CAPS = (
    f"{WRITER_DROPPED_CAPS} CAP_SYS_ADMIN CAP_SYS_RAWIO CAP_NET_ADMIN CAP_NET_RAW "
    "CAP_AUDIT_CONTROL CAP_AUDIT_READ CAP_IPC_LOCK"
)
#: systemd's limit on a unit name (UNIT_NAME_MAX).
UNIT_NAME_MAX = 255
#: Results of units not heard from for this long are dropped from the store and the metric
#: (a unit removed from the host must not keep its last result for ever).
RESULT_MAX_AGE_S = 30 * 86400
#: How long a job may run before systemd stops it (and its OnFailure= runs): a hung run must
#: not block the next ones. A daily job gets most of a day, a weekly one three days.
DAILY_TIMEOUT = "20h"
WEEKLY_TIMEOUT = "3d"
#: A crash-looping service (Restart=on-failure every 5 s) gives up after this many starts in
#: this interval: it is then "failed" and its OnFailure= unit records it.
START_LIMIT_INTERVAL = "10min"
START_LIMIT_BURST = 5

#: Hardening every unit shares (systemd.exec(5)); what differs (user, writable paths) is added.
HARDENING = (
    "ProtectSystem=strict",
    "PrivateTmp=true",
    "NoNewPrivileges=true",
    "ProtectKernelTunables=true",
    "ProtectKernelModules=true",
    "ProtectKernelLogs=true",
    "ProtectControlGroups=true",
    "ProtectClock=true",
    "ProtectHostname=true",
    "RestrictRealtime=true",
    "RestrictSUIDSGID=true",
    "LockPersonality=true",
    "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
)

#: The long-running services of role monitor: (unit stem, description, ops arguments).
SERVICES = (
    ("monitor", "portal-ops prober and Prometheus exporter", ("monitor", "serve")),
    ("oncall", "portal-ops on-call service, Alertmanager's webhook", ("oncall", "serve")),
)


@dataclass(frozen=True)
class Unit:
    name: str  # e.g. portal-ops-backup.timer
    text: str
    enable: bool  # started by `systemctl enable --now` (timers, services); others are pulled in

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "enable": self.enable, "text": self.text}


# -- names and times ----------------------------------------------------------------------


def job_unit(job: Job) -> str:
    """The stem of a job's units: portal-ops-backup, portal-ops-read-data, ..."""
    return f"{PREFIX}-{job.name.replace('_', '-')}"


def on_calendar(when: When, zone: str) -> str:
    """``OnCalendar=`` for a schedule time in ``zone``: '*-*-* 02:30:00 Asia/Ho_Chi_Minh', or
    'Sun *-*-* 06:00:00 ...' for a weekly one."""
    day = "" if when.weekday is None else f"{WEEKDAYS[when.weekday]} "
    return f"{day}*-*-* {when.hour:02d}:{when.minute:02d}:00 {zone}"


def next_elapse(when: When, zone: str, now: datetime) -> datetime:
    """The next moment after ``now`` the schedule time falls on (aware, in ``zone``): what the
    timer's next elapse must be. Computed from the wall clock of ``zone``, day by day, so a
    daylight-saving change in between is honoured as systemd does."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        if when.weekday is not None and day.weekday() != when.weekday:
            continue
        moment = datetime(day.year, day.month, day.day, when.hour, when.minute, tzinfo=tz)
        if moment > now:
            return moment
    raise AssertionError("a daily or weekly time falls within eight days")


def select_units_roles(given: list[str] | None, settings: Settings, where: str) -> list[str]:
    """The roles asked for (writer when none), the job roles checked against the config they
    need as ``ops cron`` checks them (role monitor needs no backup config)."""
    roles = [r for r in ROLES if r in (given or ["writer"])]
    jobs = [r for r in roles if r != "monitor"]
    if jobs:
        select_roles(jobs, settings.backup, where)
    return roles


# -- what each unit may write -------------------------------------------------------------


def _local_repositories(settings: Settings) -> list[Path]:
    out = []
    for repo in settings.backup.repositories:
        if repo.url.startswith("s3://"):
            continue
        out.append(Path(repo.url.removeprefix("file://")))
    return out


def _unit_paths(settings: Settings, roles: Iterable[str]) -> list[tuple[str, Path]]:
    """(config key, path) of every path from ops.yaml the roles' units name."""
    paths = [("state_dir", settings.state_dir)]
    if settings.metrics.textfile_dir is not None:
        paths.append(("metrics.textfile_dir", settings.metrics.textfile_dir))
    if any(r != "monitor" for r in roles):
        for repo in settings.backup.repositories:
            if not repo.url.startswith("s3://"):
                key = f"backup.repositories[{repo.name}].url"
                paths.append((key, Path(repo.url.removeprefix("file://"))))
        if settings.drill.scratch_dir is not None:
            paths.append(("drill.scratch_dir", settings.drill.scratch_dir))
    if "monitor" in roles:  # where the on-call service writes, when ops.yaml moves it
        oncall = settings.oncall
        for key in ("database", "link_key_file", "webhook_token_file"):
            path = getattr(oncall, key)
            if path is not None:
                paths.append((f"oncall.{key}", path))
    return paths


def check_paths(settings: Settings, roles: Iterable[str], **given: Path | None) -> None:
    """Refuse a relative or non-normalized path before it reaches a unit: a unit runs from /,
    so 'backups' or 'file://backups' would name /backups there, not what it names for the
    operator's shell; '..' would let ReadWritePaths= open more than it seems to. ``given``:
    other paths by the name to report (--config, --units)."""
    named = _unit_paths(settings, roles) + [(k, p) for k, p in given.items() if p is not None]
    for key, path in named:
        if not path.is_absolute():
            raise BadInput(
                f"{key}: {str(path)!r} is relative; a unit runs from /: give a full path"
            )
        if ".." in path.parts:
            raise BadInput(f"{key}: {str(path)!r} is not a normalized path (no '..')")


def writable_paths(job: Job | None, settings: Settings) -> list[Path]:
    """Exactly what ``job`` writes (``None``: the failure unit): the state directory (status
    files, caches, on-call state), the textfile directory, local repositories (backups, locks,
    prunes) and the drill's scratch space. Temporary files go to the unit's private /tmp."""
    paths = [settings.state_dir]
    if settings.metrics.textfile_dir is not None:
        paths.append(settings.metrics.textfile_dir)
    if job is not None:
        paths += _local_repositories(settings)
        if job.name == "drill" and settings.drill.scratch_dir is not None:
            paths.append(settings.drill.scratch_dir)
    seen: list[Path] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def service_paths(settings: Settings) -> list[Path]:
    """What ``ops monitor serve`` and ``ops oncall serve`` write: the state directory (the
    prober's baselines, the on-call state), and the directories of the on-call database and
    secrets where ops.yaml puts them elsewhere."""
    paths = [settings.state_dir]
    for path in settings.oncall.state_paths(settings.state_dir):
        if not path.parent.is_relative_to(settings.state_dir) and path.parent not in paths:
            paths.append(path.parent)
    return paths


def _rw_line(paths: Iterable[Path]) -> str:
    # '-': a path missing at start (a repository not created yet) does not fail the unit
    return "ReadWritePaths=" + " ".join(f"-{_quote_path(p)}" for p in paths)


def _quote_path(path: Path) -> str:
    text = str(path.absolute())
    if any(c.isspace() or c in "\"'\\%$;" for c in text):
        raise BadInput(
            f"{text!r}: a path with spaces, quotes, a backslash, ';', '%' or '$' cannot go in a "
            "unit"
        )
    return text


def _exec(argv: list[str]) -> str:
    """A command line for ExecStart=: systemd's quoting is close to the shell's, but it
    C-unescapes inside quotes too (shlex.join's quoting would not survive a backslash), '%'
    and '$' are its specifiers and variables, and a lone ';' separates commands: all these are
    refused rather than escaped."""
    for part in argv:
        if any(c in part for c in "%$\\\n") or part == ";":
            raise BadInput(
                f"cannot put {part!r} in a unit's command: it holds '%', '$', a backslash, a "
                "newline or is ';'"
            )
    return shlex.join(argv)


# -- the units ----------------------------------------------------------------------------


def _specifiers_escaped(text: str) -> str:
    """Free text in a unit: '%' starts a specifier there (%n, %i), so a literal one is '%%'."""
    return text.replace("%", "%%")


def _header(description: str, extra: Iterable[str] = (), specifier: str = "") -> list[str]:
    """The [Unit] section's start; ``specifier`` (e.g. '%i') follows the escaped free text
    unescaped, so systemd expands it."""
    return [
        "# Written by 'ops systemd --install': change ops.yaml and re-run it, not this file.",
        "[Unit]",
        f"Description={_specifiers_escaped(description)}{specifier}",
        *extra,
    ]


def _root_job_service(
    job: Job, when: When, config: Path, settings: Settings, units: Path | None
) -> str:
    argv = job_argv(job, config)
    if units is not None:  # after --config FILE, as the ops wrapper passes them
        at = len(ops_command()) + 2
        argv[at:at] = ["--units", str(units)]
    record = [*ops_command(), "--config", str(config), "systemd", "--record-success"]
    lines = _header(
        f"portal-ops {job.name}: {job.purpose}",
        [
            "After=network-online.target",
            "Wants=network-online.target",
            f"OnFailure={PREFIX}-failure@%n.service",
        ],
    )
    lines += [
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={_exec(argv)}",
        # a hung run is stopped (and recorded as failed) before it blocks the next ones
        f"TimeoutStartSec={DAILY_TIMEOUT if when.weekday is None else WEEKLY_TIMEOUT}",
        # '-': recording the result must not turn a good run into a failed unit
        f"ExecStartPost=-{_exec(record)} %n",
        f"SyslogIdentifier={job_unit(job)}",
        "# root: the jobs read files of every owner and the root-only keys, and a drill",
        "# switches to its own unprivileged user; they may write only the paths below.",
        "User=root",
        *HARDENING,
        "ProtectHome=read-only",
        # a drill's throwaway PostgreSQL needs /dev/shm; a backup needs no device
        *([] if job.role == "admin" else ["PrivateDevices=true"]),
        _rw_line(writable_paths(job, settings)),
        f"CapabilityBoundingSet=~{WRITER_DROPPED_CAPS if job.role == 'writer' else DROPPED_CAPS}",
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
    ]
    return "\n".join(lines) + "\n"


def _timer(job: Job, zone: str, when: When) -> str:
    lines = _header(f"portal-ops {job.name} at {when} {zone}: {job.purpose}")
    lines += [
        "",
        "[Timer]",
        f"OnCalendar={on_calendar(when, zone)}",
        "Persistent=true",
        "AccuracySec=1min",
        f"Unit={job_unit(job)}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return "\n".join(lines) + "\n"


def _failure_template(config: Path, settings: Settings) -> str:
    argv = [*ops_command(), "--config", str(config), "systemd", "--record-failure"]
    lines = _header("portal-ops: record the failure of ", specifier="%i")
    lines += [
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={_exec(argv)} %i",
        f"SyslogIdentifier={PREFIX}-failure",
        "User=root",
        *HARDENING,
        # read-only, not true: it reads the config the jobs read, which may be under /root
        "ProtectHome=read-only",
        "PrivateDevices=true",
        "PrivateNetwork=true",
        _rw_line(writable_paths(None, settings)),
        f"CapabilityBoundingSet=~{DROPPED_CAPS}",
    ]
    return "\n".join(lines) + "\n"


def _long_service(
    stem: str, description: str, args: tuple[str, ...], config: Path, settings: Settings,
    units: Path | None, user: str,
) -> str:  # fmt: skip
    argv = [*ops_command(), "--config", str(config)]
    if units is not None:
        argv += ["--units", str(units)]
    argv += list(args)
    record = [*ops_command(), "--config", str(config), "systemd", "--record-success"]
    lines = _header(
        f"{description} (ops {' '.join(args)})",
        [
            "After=network-online.target",
            "Wants=network-online.target",
            f"OnFailure={PREFIX}-failure@%n.service",
            # without a limit that Restart= reaches, a crash loop never makes the unit
            # "failed" and OnFailure= never runs
            f"StartLimitIntervalSec={START_LIMIT_INTERVAL}",
            f"StartLimitBurst={START_LIMIT_BURST}",
        ],
    )
    lines += [
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={_exec(argv)}",
        # started: a recovered service's portalops_job_failed returns to 0 ('-': recording
        # must not fail the service; it runs as root, '+', to write the root-owned files)
        f"ExecStartPost=+-{_exec(record)} %n",
        f"SyslogIdentifier={PREFIX}-{stem}",
        "Restart=on-failure",
        "RestartSec=5s",
        f"User={user}",
        f"Group={user}",
        *HARDENING,
        "ProtectHome=true",
        "PrivateDevices=true",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "PrivateUsers=true",
        "RestrictNamespaces=true",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "UMask=0077",
        _rw_line(service_paths(settings)),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render(
    roles: list[str],
    config: Path,
    settings: Settings,
    known_commands: Iterable[str],
    units: Path | None = None,
    service_user: str = SERVICE_USER,
) -> list[Unit]:
    """Every unit the roles need: per available job a service and its timer; for role monitor
    the two long-running services; and the failure template they all name in OnFailure=."""
    check_paths(settings, roles, **{"--config": config, "--units": units})
    known = list(known_commands)
    plan = settings.backup.schedule
    out: list[Unit] = []
    for job in jobs_for([r for r in roles if r != "monitor"], known):
        if not job.available:
            continue
        when = When.parse(getattr(plan, job.name))
        stem = job_unit(job)
        text = _root_job_service(job, when, config, settings, units)
        out.append(Unit(f"{stem}.service", text, False))
        out.append(Unit(f"{stem}.timer", _timer(job, plan.timezone, when), True))
    if "monitor" in roles:
        for stem, description, args in SERVICES:
            text = _long_service(stem, description, args, config, settings, units, service_user)
            out.append(Unit(f"{PREFIX}-{stem}.service", text, True))
    out.append(Unit(FAILURE_TEMPLATE, _failure_template(config, settings), False))
    return out


def skipped_jobs(roles: list[str], known_commands: Iterable[str]) -> list[Job]:
    return [j for j in jobs_for(roles, known_commands) if not j.available]


# -- installing ---------------------------------------------------------------------------


def systemd_running() -> bool:
    """Whether systemd is the service manager (sd_booted(3): /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def install(
    units: list[Unit], directory: Path, *, dry_run: bool = False, activate: bool | None = None
) -> dict[str, Any]:
    """Write the units into ``directory`` atomically (0644); when systemd runs this host and
    the directory is its own (``activate`` None: decide so), reload it and enable and start
    the timers and services. Returns what was done (or, ``dry_run``, would be)."""
    if not directory.is_dir():
        raise BadInput(f"--dir {directory}: no such directory")
    written, unchanged = [], []
    for unit in units:
        path = directory / unit.name
        try:
            same = path.read_text(encoding="utf-8") == unit.text
        except (OSError, UnicodeDecodeError):
            same = False
        if same:
            unchanged.append(str(path))
            continue
        written.append(str(path))
        if not dry_run:
            try:
                write_atomic(path, unit.text.encode(), 0o644)
            except OSError as exc:
                raise OpsError(f"cannot write {path}: {exc.strerror or exc}") from None
    if activate is None:
        activate = systemd_running() and directory.resolve() == UNIT_DIR.resolve()
    enable = [u.name for u in units if u.enable]
    commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *enable]]
    ran: list[str] = []
    if activate:
        for argv in commands:
            ran.append(shlex.join(argv))
            if not dry_run:
                _systemctl(argv)
    return {
        "written": written,
        "unchanged": unchanged,
        "activated": activate,
        "commands": ran if activate else [shlex.join(c) for c in commands],
        "dry_run": dry_run,
    }


def _systemctl(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise OpsError("systemctl is not installed: is systemd this host's service manager?")
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise OpsError(f"{shlex.join(argv)} failed: {done.stderr.strip() or done.returncode}")


def check_user_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name) or name == "root":
        raise BadInput(f"--service-user {name!r}: not a system user name (and not root)")
    return name


def prepare_host(roles: list[str], settings: Settings, user: str = SERVICE_USER) -> list[str]:
    """What the units need before they start and cannot do themselves under
    ``ProtectSystem=strict`` (/etc and /var are read-only there): the service user (role
    monitor), the drill's user (role admin), the state directories. Returns what was done."""
    done = []
    if "monitor" in roles:
        _prepare(
            f"create the system user {user}",
            lambda: procs.ensure_user(
                user, comment="portal-ops services", purpose="ops monitor serve, ops oncall serve"
            ),
        )
        for sub in ("monitor", "oncall"):
            path = settings.state_dir / sub
            _prepare(f"create {path}", _mkdir, path)
            _prepare(f"hand {path} over to {user}", procs.hand_over, path, user)
            done.append(f"{path} owned by {user}")
    if "admin" in roles:
        run_as = settings.drill.run_as
        _prepare(f"create the drill user {run_as}", ensure_drill_user, run_as)
        done.append(f"drill user {run_as}")
    for path in writable_paths(None, settings):
        _prepare(f"create {path}", _mkdir, path)
    return done


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _prepare(what: str, step: Callable[..., object], *args: object) -> None:
    """One step of :func:`prepare_host`; an OS error (not root, read-only /etc, no useradd)
    becomes an operational error that says which step failed."""
    try:
        step(*args)
    except OSError as exc:
        raise OpsError(
            f"ops systemd --install: cannot {what}: {exc.strerror or exc} (run it as root, or "
            "pass --no-prepare where a provisioning tool does it)"
        ) from None


# -- recording results ------------------------------------------------------------------------


def check_unit_name(name: str) -> str:
    if len(name) > UNIT_NAME_MAX:
        raise BadInput(f"{name[:40]!r}...: a unit name is at most {UNIT_NAME_MAX} characters")
    if not UNIT_NAME.fullmatch(name):
        raise BadInput(f"{name!r} is not a systemd unit name (e.g. portal-ops-backup.service)")
    return name


class _Results(Collector):
    def __init__(self, results: dict[str, dict[str, float]]) -> None:
        self.results = results

    def collect(self) -> Iterable[GaugeMetricFamily]:
        failed = GaugeMetricFamily(
            "portalops_job_failed",
            "1 if the unit's last run failed (its OnFailure= unit ran), 0 after a good run",
            labels=["unit"],
        )
        when = GaugeMetricFamily(
            "portalops_job_last_result_timestamp_seconds",
            "When the unit's last result (failure or success) was recorded",
            labels=["unit"],
        )
        for unit, entry in sorted(self.results.items()):
            failed.add_metric([unit], entry["failed"])
            when.add_metric([unit], entry["at"])
        yield failed
        yield when


def _load_results(store: Path, now: float) -> dict[str, dict[str, float]]:
    """The stored results, treated as hostile: an unreadable file, an entry that is not a
    {"failed": 0|1, "at": time} under a unit name, is dropped with a warning; an entry older
    than :data:`RESULT_MAX_AGE_S` is dropped silently (its unit is gone)."""
    try:
        raw: object = json.loads(store.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s): starting a new one", store, exc)
        return {}
    if not isinstance(raw, dict):
        log.warning("%s: not a JSON object: starting a new one", store)
        return {}
    out: dict[str, dict[str, float]] = {}
    for unit, entry in raw.items():
        try:
            check_unit_name(unit)
            failed, at = entry["failed"], entry["at"]
            if failed not in (0, 1) or isinstance(failed, bool) or isinstance(at, bool):
                raise ValueError(failed)
            at = float(at)
            if not math.isfinite(at):
                raise ValueError(at)
        except (BadInput, TypeError, KeyError, ValueError):
            log.warning("%s: dropped the malformed entry %.80r", store, unit)
            continue
        if now - at <= RESULT_MAX_AGE_S:
            out[unit] = {"failed": float(failed), "at": at}
    return out


def record_result(unit: str, failed: bool, settings: Settings, where: str) -> Path | None:
    """Remember the unit's result in the state directory and rewrite the textfile (all units'
    results: each run rewrites the whole file). Returns the textfile, or None without one."""
    check_unit_name(unit)
    store = settings.state_dir / RESULTS_FILE
    now = time.time()
    results = _load_results(store, now)
    results[unit] = {"failed": 1.0 if failed else 0.0, "at": round(now, 3)}
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(store, json.dumps(results, indent=1, sort_keys=True).encode(), 0o644)
    except OSError as exc:
        raise OpsError(f"cannot write {store}: {exc.strerror or exc}") from None
    if failed:
        log.error("%s failed; its log: journalctl -u %s", unit, unit)
    if settings.metrics.textfile_dir is None:
        return None
    registry = CollectorRegistry()
    registry.register(_Results(results))
    return write_textfile(settings.metrics.textfile_dir / METRICS_FILE, registry, where)
