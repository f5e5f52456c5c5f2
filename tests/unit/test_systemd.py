"""``ops systemd``: the units checked by the real systemd-analyze (verify, calendar, security),
their times against what the cron module computes, installing them, and the failure unit's
record as node_exporter reads it.

systemd is installed here but is not PID 1: ``systemd-analyze verify`` and ``calendar`` and
``security --offline=yes`` work on unit files alone, which is all these tests need."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from portalops import systemd
from portalops.backup.config import WEEKDAYS
from portalops.schedule import When
from portalops.settings import Settings
from tests.fixtures.cli import run_ops

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze: apt-get install systemd"
)

ALL_ROLES = ("--role", "writer", "--role", "admin", "--role", "monitor")
#: Exposure scores (systemd-analyze security, 0 safest .. 10) the units must stay within.
SERVICE_EXPOSURE = 2.0  # the prober and the on-call service: a system user, no capabilities
JOB_EXPOSURE = 6.0  # root jobs that read everything but write only their paths
SERVICES = {"portal-ops-monitor.service", "portal-ops-oncall.service"}


def _config(tmp_path: Path, schedule: str = "") -> Path:
    repo = tmp_path / "repo"
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    config = tmp_path / "ops.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            state_dir: {tmp_path / "state"}
            metrics:
              textfile_dir: {tmp_path / "textfile"}
            backup:
              identity: {tmp_path / "identity.txt"}
              repositories:
                - {{name: local, url: {repo}}}
                - {{name: offsite, url: "s3://bucket/portal"}}
              sources:
                - {{name: webroot, kind: files, category: code, paths: ["{site}"]}}
            drill:
              scratch_dir: {tmp_path / "scratch"}
            """)
        + schedule,
        encoding="utf-8",
    )
    return config


def _render(config: Path, *roles: str) -> list[dict[str, object]]:
    done = run_ops("--json", "systemd", *(roles or ALL_ROLES), config=config)
    assert done.code == 0, done.stderr
    units: list[dict[str, object]] = json.loads(done.stdout)["units"]
    return units


def _write(units: list[dict[str, object]], directory: Path) -> list[Path]:
    directory.mkdir(exist_ok=True)
    paths = []
    for unit in units:
        path = directory / str(unit["name"])
        path.write_text(str(unit["text"]), encoding="utf-8")
        paths.append(path)
    return paths


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the files, with their directory as the unit path (the
    OnFailure= template and each timer's service are found there)."""
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{paths[0].parent}:", SYSTEMD_LOG_COLOR="0")
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    units = _render(_config(tmp_path))
    names = [u["name"] for u in units]
    assert names == [
        "portal-ops-backup.service", "portal-ops-backup.timer",
        "portal-ops-check.service", "portal-ops-check.timer",
        "portal-ops-read-data.service", "portal-ops-read-data.timer",
        "portal-ops-prune.service", "portal-ops-prune.timer",
        "portal-ops-drill.service", "portal-ops-drill.timer",
        "portal-ops-monitor.service", "portal-ops-oncall.service",
        "portal-ops-failure@.service",
    ]  # fmt: skip
    paths = _write(units, tmp_path / "units")
    # the failure unit as OnFailure= instantiates it, too
    instance = paths[0].parent / "portal-ops-failure@portal-ops-backup.service.service"
    done = _verify([*paths, instance])
    assert done.returncode == 0, done.stderr
    # warnings (an unknown key, a bad specifier such as the '%' of '10%') do not fail
    # verify: none is allowed either
    assert done.stderr == "", done.stderr


def test_verify_catches_what_it_must(tmp_path: Path) -> None:
    """The check above can fail: a unit with a misspelt key or an unparsable calendar."""
    paths = _write(_render(_config(tmp_path), "--role", "writer"), tmp_path / "units")
    timer = next(p for p in paths if p.suffix == ".timer")
    timer.write_text(timer.read_text().replace("Asia/Ho_Chi_Minh", "Asia/Atlantis"))
    done = _verify(paths)
    assert done.returncode != 0
    assert "Failed to parse calendar specification" in done.stderr


def test_job_units_hardening_and_writable_paths(tmp_path: Path) -> None:
    units = {u["name"]: str(u["text"]) for u in _render(_config(tmp_path))}
    backup = units["portal-ops-backup.service"]
    for line in ("Type=oneshot", "ProtectSystem=strict", "PrivateTmp=true",
                 "NoNewPrivileges=true", "ProtectHome=read-only", "User=root",
                 "OnFailure=portal-ops-failure@%n.service"):  # fmt: skip
        assert f"\n{line}\n" in backup, line
    # exactly what the job writes: state, textfile, the local repository (not the S3 one)
    rw = re.search(r"^ReadWritePaths=(.*)$", backup, re.M)
    assert rw is not None
    assert rw.group(1).split() == [f"-{tmp_path / d}" for d in ("state", "textfile", "repo")]
    drill = units["portal-ops-drill.service"]
    assert f"-{tmp_path / 'scratch'}" in drill  # the restores go there
    assert f"--config {tmp_path / 'ops.yaml'} drill\n" in drill
    timer = units["portal-ops-backup.timer"]
    assert "\nOnCalendar=*-*-* 02:30:00 Asia/Ho_Chi_Minh\n" in timer
    assert "\nPersistent=true\n" in timer
    assert (
        "\nOnCalendar=Sun *-*-* 06:00:00 Asia/Ho_Chi_Minh\n" in units["portal-ops-read-data.timer"]
    )


def test_services_run_as_the_service_user(tmp_path: Path) -> None:
    units = {u["name"]: str(u["text"]) for u in _render(_config(tmp_path), "--role", "monitor")}
    assert set(units) == {"portal-ops-monitor.service", "portal-ops-oncall.service",
                          "portal-ops-failure@.service"}  # fmt: skip
    for name in ("portal-ops-monitor.service", "portal-ops-oncall.service"):
        text = units[name]
        assert "\nUser=portal-ops\n" in text
        assert "\nCapabilityBoundingSet=\n" in text
        assert "\nRestart=on-failure\n" in text
        assert f"\nReadWritePaths=-{tmp_path / 'state'}\n" in text


def _exposure(path: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{path.parent}:", SYSTEMD_LOG_COLOR="0"),
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_exposure_scores(tmp_path: Path) -> None:
    paths = _write(_render(_config(tmp_path)), tmp_path / "units")
    scores = {p.name: _exposure(p) for p in paths if p.suffix == ".service" and "@" not in p.name}
    for name, score in scores.items():
        bound = SERVICE_EXPOSURE if name in SERVICES else JOB_EXPOSURE
        assert score <= bound, f"{name}: exposure {score} > {bound}"
    # the score reacts to the hardening: without it the prober would be exposed
    monitor = tmp_path / "units" / "portal-ops-monitor.service"
    bare = tmp_path / "bare" / monitor.name
    bare.parent.mkdir()
    kept = ("[", "Description", "ExecStart", "Type")
    bare.write_text("\n".join(x for x in monitor.read_text().splitlines() if x.startswith(kept)))
    assert _exposure(bare) > 8.0


def _analyze_next(expression: str) -> datetime:
    done = subprocess.run(
        ["systemd-analyze", "calendar", expression],
        capture_output=True, text=True, timeout=30, check=False,
        env=dict(os.environ, TZ="UTC", SYSTEMD_LOG_COLOR="0"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = re.search(r"Next elapse: \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", done.stdout)
    assert found, done.stdout
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "times"),
    [
        ("Asia/Ho_Chi_Minh", {"check": "05:00", "read_data": "Sun 06:00", "drill": "Tue 23:45"}),
        # a zone with daylight saving: systemd follows its wall clock as the cron module does
        ("Europe/Berlin", {"check": "02:30", "read_data": "Sat 00:10", "drill": "Wed 13:05"}),
    ],
)
def test_calendar_matches_the_cron_module(tmp_path: Path, zone: str, times: dict[str, str]) -> None:
    lines = "".join(f'    {k}: "{v}"\n' for k, v in times.items())
    config = _config(tmp_path, f"  schedule:\n    timezone: {zone}\n{lines}")
    # the schedule goes under backup: (the last key of the config written above is drill:)
    text = config.read_text().replace(f"  schedule:\n    timezone: {zone}\n{lines}", "")
    text = text.replace("backup:\n", f"backup:\n  schedule:\n    timezone: {zone}\n{lines}", 1)
    config.write_text(text)
    units = {u["name"]: str(u["text"]) for u in _render(config, "--role", "admin")}
    for job, spec in times.items():
        timer = units[f"portal-ops-{job.replace('_', '-')}.timer"]
        expression = re.search(r"^OnCalendar=(.*)$", timer, re.M)
        assert expression is not None
        when = When.parse(spec)
        before = datetime.now(UTC)
        elapse = _analyze_next(expression.group(1))
        after = datetime.now(UTC)
        ours = systemd.next_elapse(when, zone, before)
        assert elapse == ours or elapse == systemd.next_elapse(when, zone, after), (job, elapse)
        # the cron module's conversion of the same time to UTC names the same minute and day
        cron = when.convert(ZoneInfo(zone), ZoneInfo("UTC"), elapse)
        assert (cron.hour, cron.minute) == (elapse.hour, elapse.minute), (job, cron, elapse)
        if cron.weekday is not None:
            assert WEEKDAYS[cron.weekday] == WEEKDAYS[elapse.weekday()]


def test_install_writes_atomically_and_reports(tmp_path: Path) -> None:
    config = _config(tmp_path)
    target = tmp_path / "system"
    target.mkdir()
    dry = run_ops("--json", "systemd", "--role", "writer", "--install", "--dry-run",
                  "--dir", str(target), config=config)  # fmt: skip
    assert dry.code == 0, dry.stderr
    assert len(json.loads(dry.stdout)["written"]) == 3
    assert list(target.iterdir()) == []  # a dry run changes nothing
    done = run_ops("systemd", "--role", "writer", "--install", "--no-prepare",
                   "--dir", str(target), config=config)  # fmt: skip
    assert done.code == 0, done.stderr
    assert "wrote 3 unit(s)" in done.stdout
    assert f"not activated: {target} is not /etc/systemd/system" in done.stdout
    files = sorted(p.name for p in target.iterdir())
    assert files == ["portal-ops-backup.service", "portal-ops-backup.timer",
                     "portal-ops-failure@.service"]  # fmt: skip
    assert all((target / f).stat().st_mode & 0o777 == 0o644 for f in files)
    again = run_ops("--json", "systemd", "--role", "writer", "--install", "--no-prepare",
                    "--dir", str(target), config=config)  # fmt: skip
    assert json.loads(again.stdout)["written"] == []
    missing = run_ops("systemd", "--install", "--dir", str(tmp_path / "nope"), config=config)
    assert missing.code == 2
    assert "no such directory" in missing.stderr


def test_systemd_not_pid1_is_said(tmp_path: Path) -> None:
    if systemd.systemd_running():
        pytest.skip("systemd runs this machine: activation would really happen")
    units = systemd.render(["writer"], tmp_path / "ops.yaml", Settings(), ["backup"])
    done = systemd.install(units, tmp_path, activate=None)
    assert done["activated"] is False
    assert done["commands"][0] == "systemctl daemon-reload"


def test_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("state_dir: /tmp/x\n")
    writer = run_ops("systemd", "--role", "writer", config=empty)
    assert writer.code == 2
    assert "backup.sources is empty" in writer.stderr
    # role monitor needs no backup configuration
    assert run_ops("systemd", "--role", "monitor", config=empty).code == 0
    spaced = _config(tmp_path).read_text().replace(str(tmp_path / "state"), "/var/lib/a b")
    (tmp_path / "spaced.yaml").write_text(spaced)
    bad = run_ops("systemd", "--role", "writer", config=tmp_path / "spaced.yaml")
    assert bad.code == 2
    assert "cannot go in a unit" in bad.stderr
    assert "Traceback" not in bad.stderr
    dry = run_ops("systemd", "--dry-run", config=_config(tmp_path))
    assert dry.code == 2


def test_failure_unit_records_the_failure(tmp_path: Path) -> None:
    """The failure template's own ExecStart=, as systemd runs it for a failed backup (%i is the
    failed unit), then the job's ExecStartPost= after a good run."""
    config = _config(tmp_path)
    units = {u["name"]: str(u["text"]) for u in _render(config, "--role", "writer")}
    (tmp_path / "state").mkdir()
    (tmp_path / "textfile").mkdir()

    def command(unit: str, key: str, instance: str) -> list[str]:
        line = re.search(rf"^{key}=-?(.*)$", units[unit], re.M)
        assert line is not None
        argv = shlex.split(line.group(1).replace("%i", instance).replace("%n", instance))
        return argv[argv.index("--config") :]  # this process runs ops: the same program

    failed = run_ops(*command("portal-ops-failure@.service", "ExecStart",
                              "portal-ops-backup.service"))  # fmt: skip
    assert failed.code == 0, failed.stderr
    prom = (tmp_path / "textfile" / systemd.METRICS_FILE).read_text()
    assert 'portalops_job_failed{unit="portal-ops-backup.service"} 1.0' in prom
    assert "journalctl -u portal-ops-backup.service" in failed.stderr
    ok = run_ops(
        *command("portal-ops-backup.service", "ExecStartPost", "portal-ops-backup.service")
    )
    assert ok.code == 0, ok.stderr
    prom = (tmp_path / "textfile" / systemd.METRICS_FILE).read_text()
    assert 'portalops_job_failed{unit="portal-ops-backup.service"} 0.0' in prom
    # another unit's record keeps this one's
    run_ops("--config", str(config), "systemd", "--record-failure", "portal-ops-drill.service")
    prom = (tmp_path / "textfile" / systemd.METRICS_FILE).read_text()
    assert 'unit="portal-ops-backup.service"} 0.0' in prom
    assert 'unit="portal-ops-drill.service"} 1.0' in prom
    bad = run_ops("--config", str(config), "systemd", "--record-failure", "x; rm -rf /")
    assert bad.code == 2
    assert "not a systemd unit name" in bad.stderr


def test_services_may_write_where_the_oncall_state_is(tmp_path: Path) -> None:
    config = _config(tmp_path)
    elsewhere = tmp_path / "oncall-db"
    config.write_text(config.read_text() + f"oncall:\n  database: {elsewhere / 'oncall.sqlite'}\n")
    units = {u["name"]: str(u["text"]) for u in _render(config, "--role", "monitor")}
    rw = f"\nReadWritePaths=-{tmp_path / 'state'} -{elsewhere}\n"
    assert rw in units["portal-ops-oncall.service"]


def _with_firewall_source(config: Path) -> Path:
    """The example config's command source that needs CAP_NET_ADMIN."""
    source = (
        "    - {name: firewall, kind: command, category: config, command: [nft, list, ruleset]}\n"
    )
    config.write_text(config.read_text().replace("  sources:\n", f"  sources:\n{source}", 1))
    return config


def _setpriv_bounding(text: str) -> str:
    """The unit's CapabilityBoundingSet=~... as setpriv's --bounding-set argument."""
    line = re.search(r"^CapabilityBoundingSet=~(.*)$", text, re.M)
    assert line is not None, text
    return ",".join("-" + c.removeprefix("CAP_").lower() for c in line.group(1).split())


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("setpriv") is None,
    reason="needs root, nft and setpriv",
)
def test_writer_keeps_what_command_sources_need(tmp_path: Path) -> None:
    """A command source runs an admin command as root under the backup unit's bounding set:
    the example's firewall source ('nft list ruleset') must work there."""
    config = _with_firewall_source(_config(tmp_path))
    units = {u["name"]: str(u["text"]) for u in _render(config, "--role", "writer")}
    bounding = _setpriv_bounding(units["portal-ops-backup.service"])
    assert "-net_admin" not in bounding.split(",")

    def nft(bset: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", "--bounding-set", bset, "nft", "list", "ruleset"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    done = nft(bounding)
    assert done.returncode == 0, done.stderr
    # the check can fail: without CAP_NET_ADMIN nft cannot read the ruleset
    assert nft(bounding + ",-net_admin").returncode != 0
    # the admin jobs run no command source: they drop the network administration too
    admin = {u["name"]: str(u["text"]) for u in _render(config, "--role", "admin")}
    assert "-net_admin" in _setpriv_bounding(admin["portal-ops-check.service"]).split(",")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("state_dir: {t}/state", "state_dir: state", "state_dir:"),
        ("url: {t}/repo", "url: file://repo", "backup.repositories[local].url:"),
        ("url: {t}/repo", "url: backups/repo", "backup.repositories[local].url:"),
        ("textfile_dir: {t}/textfile", "textfile_dir: textfile", "metrics.textfile_dir:"),
        ("scratch_dir: {t}/scratch", "scratch_dir: {t}/x/../scratch", "drill.scratch_dir:"),
        ("state_dir: {t}/state", "state_dir: {t}/../state", "state_dir:"),
        ("drill:\n", "oncall:\n  database: db/oncall.sqlite\ndrill:\n", "oncall.database:"),
    ],
)
def test_relative_or_unnormalized_paths_are_refused(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    """A unit runs from /: a relative path in ops.yaml would name something else there."""
    config = _config(tmp_path)
    text = config.read_text()
    assert old.format(t=tmp_path) in text
    config.write_text(text.replace(old.format(t=tmp_path), new.format(t=tmp_path)))
    done = run_ops("systemd", *ALL_ROLES, config=config)
    assert done.code == 2, done.stdout + done.stderr
    assert key in done.stderr
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr


def test_a_backslash_never_reaches_a_unit(tmp_path: Path) -> None:
    """systemd C-unescapes inside quotes: shlex.join's quoting of a backslash would name
    another file there. The config's own path goes in every ExecStart=, the failure unit's too."""
    odd = tmp_path / "a\\tb"
    odd.mkdir()
    config = odd / "ops.yaml"
    config.write_text(_config(tmp_path).read_text())
    for roles in (("--role", "writer"), ("--role", "monitor")):
        done = run_ops("systemd", *roles, config=config)
        assert done.code == 2, done.stdout
        assert "backslash" in done.stderr
        assert "Traceback" not in done.stderr


def test_failure_unit_description_names_the_unit(tmp_path: Path) -> None:
    units = {u["name"]: str(u["text"]) for u in _render(_config(tmp_path), "--role", "writer")}
    template = units["portal-ops-failure@.service"]
    assert "\nDescription=portal-ops: record the failure of %i\n" in template
    assert "%%i" not in template


def test_jobs_are_bounded_and_services_give_up(tmp_path: Path) -> None:
    """A hung job is stopped before its next run; a crash-looping service reaches "failed"
    (so OnFailure= runs) and records its success once started again."""
    units = {u["name"]: str(u["text"]) for u in _render(_config(tmp_path))}
    assert "\nTimeoutStartSec=20h\n" in units["portal-ops-backup.service"]
    assert "\nTimeoutStartSec=20h\n" in units["portal-ops-check.service"]
    assert "\nTimeoutStartSec=3d\n" in units["portal-ops-read-data.service"]
    for name in SERVICES:
        text = units[name]
        unit_section = text.split("[Service]")[0]
        assert "\nStartLimitIntervalSec=10min\n" in unit_section
        assert "\nStartLimitBurst=5\n" in unit_section
        post = re.search(r"^ExecStartPost=\+-(.*) %n$", text, re.M)
        assert post is not None, text
        assert shlex.split(post.group(1))[-2:] == ["systemd", "--record-success"]


def test_service_recovery_resets_the_metric(tmp_path: Path) -> None:
    config = _config(tmp_path)
    units = {u["name"]: str(u["text"]) for u in _render(config, "--role", "monitor")}
    unit = "portal-ops-monitor.service"
    (tmp_path / "textfile").mkdir()
    assert run_ops("systemd", "--record-failure", unit, config=config).code == 0
    line = re.search(r"^ExecStartPost=\+-(.*)$", units[unit], re.M)
    assert line is not None
    argv = shlex.split(line.group(1).replace("%n", unit))
    ok = run_ops(*argv[argv.index("--config") :])
    assert ok.code == 0, ok.stderr
    prom = (tmp_path / "textfile" / systemd.METRICS_FILE).read_text()
    assert f'portalops_job_failed{{unit="{unit}"}} 0.0' in prom


def test_a_hostile_results_store_is_cleaned_not_fatal(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "textfile").mkdir()
    now = datetime.now(UTC).timestamp()
    store = tmp_path / "state" / systemd.RESULTS_FILE
    store.write_text(
        json.dumps({
            "x": 1,
            "portal-ops-a.service": {"failed": 1},
            "portal-ops-b.service": {"failed": 1, "at": "y"},
            "portal-ops-c.service": {"failed": "1", "at": now},
            "portal-ops-old.service": {"failed": 1, "at": now - 31 * 86400},
            "portal-ops-kept.service": {"failed": 1, "at": now - 3600},
            "bad name; rm": {"failed": 1, "at": now},
        })
    )  # fmt: skip
    done = run_ops("systemd", "--record-failure", "portal-ops-new.service", config=config)
    assert done.code == 0, done.stderr
    assert "malformed" in done.stderr
    assert "internal error" not in done.stderr
    prom = (tmp_path / "textfile" / systemd.METRICS_FILE).read_text()
    units = set(re.findall(r'portalops_job_failed\{unit="([^"]+)"\}', prom))
    # the malformed entries go, and so does a unit not heard from for 30 days
    assert units == {"portal-ops-kept.service", "portal-ops-new.service"}
    assert set(json.loads(store.read_text())) == units
    for junk in ("[1, 2]", "{not json", "\xff"):
        store.write_text(junk, encoding="latin-1")
        again = run_ops("systemd", "--record-success", "portal-ops-new.service", config=config)
        assert again.code == 0, again.stderr
    long = run_ops("systemd", "--record-failure", "a" * 250 + ".service", config=config)
    assert long.code == 2
    assert "at most 255" in long.stderr


def test_prepare_errors_are_operational(tmp_path: Path) -> None:
    """--install prepares the state directories first: one that cannot be made is said, with
    exit 3, not an internal error."""
    config = _config(tmp_path)
    (tmp_path / "file").write_text("")
    config.write_text(config.read_text().replace(f"{tmp_path}/state", f"{tmp_path}/file/state"))
    target = tmp_path / "system"
    target.mkdir()
    done = run_ops("systemd", "--role", "writer", "--install", "--dir", str(target), config=config)
    assert done.code == 3, done.stdout + done.stderr
    assert f"cannot create {tmp_path}/file/state" in done.stderr
    assert "internal error" not in done.stderr
