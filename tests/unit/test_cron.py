"""Scheduling: backup.schedule parsing, time-zone conversion for Debian's cron, the cron lines."""

from __future__ import annotations

import json
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from portalops import schedule
from portalops.backup.config import Schedule
from portalops.core.errors import SourceError
from portalops.schedule import Daemon, When, all_jobs, cron_lines
from portalops.settings import load_settings
from tests.fixtures.cli import run_ops

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
UTC_ZONE = ZoneInfo("Etc/UTC")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        ("02:30", UTC_ZONE, "30 19 * * *"),  # 02:30 +07 is 19:30 UTC the day before
        ("05:00", UTC_ZONE, "0 22 * * *"),
        ("Sun 06:00", UTC_ZONE, "0 23 * * Sat"),  # the weekday moves back with the time
        ("Mon 08:15", UTC_ZONE, "15 1 * * Mon"),
        ("02:30", HCM, "30 2 * * *"),  # a machine on Vietnam time: unchanged
        ("Sun 06:00", HCM, "0 6 * * Sun"),
        ("23:30", ZoneInfo("Asia/Tokyo"), "30 1 * * *"),
        ("Sat 23:30", ZoneInfo("Asia/Tokyo"), "30 1 * * Sun"),
    ],
)
def test_times_converted_to_the_machine_zone(text: str, target: ZoneInfo, expected: str) -> None:
    assert When.parse(text).convert(HCM, target, NOW).cron_fields() == expected


def test_cron_lines(tmp_path: Path) -> None:
    config = tmp_path / "ops.yaml"
    jobs = [j for j in all_jobs(["backup"]) if j.role == "admin"]  # no 'ops drill' command
    lines = cron_lines(jobs, config, Schedule(), "root", (UTC_ZONE, "Etc/UTC"), NOW)
    text = "\n".join(lines)
    assert "CRON_TZ=" not in text  # cronie would honour it and shift the converted times again
    assert "Debian's cron ignores CRON_TZ" in text
    assert "this machine's zone, Etc/UTC (UTC+00:00)" in text
    assert "WARNING" not in text
    active = [line for line in lines if line[:1].isdigit()]
    assert [line.split()[:6] for line in active] == [
        ["0", "22", "*", "*", "*", "root"],
        ["0", "23", "*", "*", "Sat", "root"],
        ["0", "21", "*", "*", "*", "root"],
    ]
    assert all(f"--config {config} backup " in line for line in active)
    assert all(line.split(" || ")[0].endswith(" >/dev/null") for line in active)
    # The drill job is there, commented out, with the reason, until 'ops drill' exists.
    drill = [line for line in lines if line.startswith("#") and " drill >/dev/null" in line]
    assert len(drill) == 1
    assert drill[0].startswith("#30 23 * * * root ")
    assert any("'ops drill' does not exist" in line for line in lines)
    with_drill = [j for j in all_jobs(["backup", "drill"]) if j.name == "drill"]
    lines = cron_lines(with_drill, config, Schedule(), "root", (UTC_ZONE, "Etc/UTC"), NOW)
    assert any(line.startswith("30 23 * * * root ") for line in lines)


def test_daylight_saving_machine_zone_is_flagged(tmp_path: Path) -> None:
    jobs = [j for j in all_jobs([]) if j.name == "backup"]
    berlin = ZoneInfo("Europe/Berlin")
    lines = cron_lines(
        jobs, tmp_path / "o.yaml", Schedule(), "root", (berlin, "Europe/Berlin"), NOW
    )
    assert any(line.startswith("# WARNING: the two zones' difference changes") for line in lines)
    assert any(line.startswith("30 20 * * * root ") for line in lines)  # winter: UTC+01:00


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "ops.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(SourceError) as info:
        load_settings(path)
    return [p.replace(str(path), "F") for p in info.value.problems]


def test_schedule_strings_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        backup:
          schedule:
            backup: "25:00"
            check: 12:30
            read_data: "Funday 06:00"
            prune: "4 o'clock"
            timezone: Asia/Hanoi
        """,
    )
    assert found == [
        "F:3: backup.schedule.backup: expected 'HH:MM' (24-hour, e.g. \"02:30\") or "
        "'Day HH:MM' (e.g. \"Sun 06:00\"), got '25:00'",
        "F:4: backup.schedule.check: got the number 750: YAML reads an unquoted 12:30 as a "
        'number in base 60; quote the time: "12:30"',
        "F:5: backup.schedule.read_data: expected 'HH:MM' (24-hour, e.g. \"02:30\") or "
        "'Day HH:MM' (e.g. \"Sun 06:00\"); 'Funday' is not a day (Mon, Tue, ... Sun)",
        "F:6: backup.schedule.prune: expected 'HH:MM' (24-hour, e.g. \"02:30\") or "
        '\'Day HH:MM\' (e.g. "Sun 06:00"), got "4 o\'clock"',
        "F:7: backup.schedule.timezone: unknown time zone 'Asia/Hanoi'; use an IANA name "
        "such as Asia/Ho_Chi_Minh",
    ]


def test_schedule_defaults_and_normalised_forms(tmp_path: Path) -> None:
    assert load_settings(None).backup.schedule == Schedule(
        backup="02:30", check="05:00", read_data="Sun 06:00", prune="04:00", drill="06:30"
    )
    path = tmp_path / "ops.yaml"
    path.write_text('backup:\n  schedule: {backup: "3:05", read_data: "saturday 7:45"}\n')
    schedule = load_settings(path).backup.schedule
    assert (schedule.backup, schedule.read_data, schedule.check) == ("03:05", "Sat 07:45", "05:00")


class FakeLocalTime:
    """A local clock whose UTC offset the test moves (a daylight-saving change), and a sleep
    that only counts naps and stops the daemon after the last one."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets  # hours, one per nap
        self.naps = 0
        self.daemon: Daemon | None = None

    def now(self) -> datetime:
        hours = self.offsets[min(self.naps, len(self.offsets) - 1)]
        return NOW.astimezone(timezone(timedelta(hours=hours)))

    def sleep(self, seconds: float) -> None:
        assert seconds <= 1.0  # a signal must be acted on within a second
        self.naps += 1
        if self.naps >= len(self.offsets) and self.daemon is not None:
            self.daemon.stop("TEST")


def test_daemon_replans_when_the_local_offset_changes(tmp_path: Path) -> None:
    clock = FakeLocalTime([7, 7, 8, 8])
    jobs = [j for j in all_jobs([]) if j.role == "admin"]  # the drill is not available
    daemon = Daemon(jobs, tmp_path / "ops.yaml", Schedule(), clock=clock.now, sleep=clock.sleep)
    clock.daemon = daemon
    daemon.serve()
    assert daemon.stop_signal == "TEST"
    assert clock.naps == 4
    assert daemon.plans == 2  # at the start, and once when UTC+07:00 became UTC+08:00
    assert daemon.planned_offset == timedelta(hours=8)
    assert [j.name for j in daemon.skipped] == ["drill"]
    # 05:00 in Ho Chi Minh City is 06:00 at UTC+08:00: the plan follows the new offset.
    assert sorted(str(j.at_time) for j in daemon.scheduler.get_jobs()) == [
        "05:00:00",
        "06:00:00",
        "07:00:00",
    ]
    assert daemon.runs == []


def test_daemon_clock_must_be_aware(tmp_path: Path) -> None:
    jobs = [j for j in all_jobs([]) if j.name == "backup"]
    daemon = Daemon(jobs, tmp_path / "ops.yaml", Schedule(), clock=datetime.now, sleep=time.sleep)
    with pytest.raises(ValueError, match="aware"):
        daemon.serve()


def test_ops_cron_in_process_with_a_fixed_clock(tmp_path: Path) -> None:
    """The command only parses and renders: its JSON is cron_lines' for the Environment's
    clock, and --install writes exactly that text (0644)."""
    config = tmp_path / "ops.yaml"
    config.write_text(
        "backup:\n  sources:\n    - {name: web, kind: files, category: code, paths: [/srv]}\n"
    )
    target = tmp_path / "portal-ops"
    argv = ("--json", "cron", "--machine-tz", "Europe/Berlin", "--file", str(target))
    result = run_ops(*argv, config=config, clock=lambda: NOW)
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    jobs = [j for j in all_jobs([]) if j.role == "writer"]
    berlin = (ZoneInfo("Europe/Berlin"), "Europe/Berlin")
    expected = cron_lines(jobs, config.resolve(), Schedule(), "root", berlin, NOW)
    assert doc == {"file": str(target), "lines": expected, "installed": False}
    assert "(UTC+01:00)" in "\n".join(expected)  # November: the clock given, not today's
    result = run_ops("cron", "--install", "--file", str(target), config=config, clock=lambda: NOW)
    assert result.code == 0, result.stderr
    assert (
        target.read_text()
        == "\n".join(
            cron_lines(jobs, config.resolve(), Schedule(), "root", schedule.system_zone(), NOW)
        )
        + "\n"
    )
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    result = run_ops("cron", "--user", "Bad User", config=config, clock=lambda: NOW)
    assert result.code == 2
    assert "--user 'Bad User' is not a user name" in result.stderr
