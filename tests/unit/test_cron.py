"""Scheduling: backup.schedule parsing, time-zone conversion for Debian's cron, the cron lines."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from portalops.backup.config import Schedule
from portalops.cli.cron import When, all_jobs, cron_lines
from portalops.core.errors import SourceError
from portalops.settings import load_settings

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
