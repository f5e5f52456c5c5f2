"""The core's small formats, each written once: ISO-8601 Z times, HH:MM, host:port, byte
sizes, and the node_exporter textfile writer. The properties pin them to the forms the call
sites wrote by hand before (strftime patterns, isoformat + replace), byte for byte."""

from __future__ import annotations

import os
import stat
import time as systime
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge

from portalops.core.errors import ExitCode
from portalops.core.metricsfile import MetricsWriteError, write_textfile
from portalops.core.netaddr import is_port, parse_host_port, parse_pin, unbracket
from portalops.core.timefmt import (
    iso_z,
    iso_z_epoch,
    parse_hhmm,
    parse_iso_z,
    sexagesimal_clock,
    utc_now_z,
)
from portalops.core.units import size

# Years 1000-9999: strftime's %Y pads to four digits only there, and every real time is.
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
moments = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


@given(moments)
def test_iso_z_is_what_the_call_sites_wrote(moment: datetime) -> None:
    utc = moment.astimezone(UTC)
    assert iso_z(moment) == utc.isoformat().replace("+00:00", "Z")
    assert iso_z(moment, "seconds") == utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert iso_z(moment, "microseconds") == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(moments)
def test_iso_z_round_trips(moment: datetime) -> None:
    back = parse_iso_z(iso_z(moment))
    assert back == moment
    assert back.utcoffset() == timedelta(0)
    assert parse_iso_z(iso_z(moment, "seconds")) == moment.replace(microsecond=0)


def test_iso_z_examples() -> None:
    moment = datetime(2026, 12, 6, 18, 7, 22, tzinfo=timezone(timedelta(hours=7)))
    assert iso_z(moment) == "2026-12-06T11:07:22Z"
    assert iso_z(moment.replace(microsecond=5)) == "2026-12-06T11:07:22.000005Z"
    assert iso_z(moment, "microseconds") == "2026-12-06T11:07:22.000000Z"
    assert parse_iso_z("2026-12-06T11:07:22") == datetime(2026, 12, 6, 11, 7, 22)  # naive
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_iso_z("yesterday")
    now = utc_now_z()
    assert len(now) == 20
    assert now.endswith("Z")
    assert abs(parse_iso_z(now) - datetime.now(UTC)) < timedelta(seconds=5)


@given(st.floats(min_value=0, max_value=2**37, allow_nan=False))
def test_iso_z_epoch_is_gmtime(stamp: float) -> None:
    assert iso_z_epoch(stamp) == systime.strftime("%Y-%m-%dT%H:%M:%SZ", systime.gmtime(stamp))


@given(st.integers(0, 23), st.integers(0, 59))
def test_hhmm_every_time_of_day(hour: int, minute: int) -> None:
    assert parse_hhmm(f"{hour}:{minute:02d}") == time(hour, minute)
    assert parse_hhmm(f"{hour:02d}:{minute:02d}") == time(hour, minute)


@pytest.mark.parametrize(
    "text", ["24:00", "7:5", "07:60", "007:00", "7:005", "7h30", "", " 07:00", "07:00 ", "x:00"]
)
def test_hhmm_rejects(text: str) -> None:
    assert parse_hhmm(text) is None


def test_sexagesimal_clock() -> None:
    assert sexagesimal_clock(750) == (12, 30)  # YAML 1.1's reading of an unquoted 12:30
    assert sexagesimal_clock(60) == (1, 0)
    for value in (59, True, "12:30", 12.5, None):
        assert sexagesimal_clock(value) is None


hosts = st.text(st.characters(codec="ascii", exclude_characters="\n"), max_size=20)


@given(hosts, st.integers(0, 99999))
def test_host_port_round_trips(host: str, port: int) -> None:
    assert parse_host_port(f"{host}:{port}") == (host, port)
    assert is_port(port) == (1 <= port <= 65535)


def test_host_port_examples() -> None:
    assert parse_host_port("[::1]:9433") == ("[::1]", 9433)
    assert unbracket("[::1]") == "::1"
    assert unbracket("127.0.0.1") == "127.0.0.1"
    assert parse_host_port(":9433") == ("", 9433)
    for text in ("localhost", "localhost:", "localhost:http", "h:9\u00b2", "h:-1", "h:1 "):
        assert parse_host_port(text) is None, text


def test_resolve_pins() -> None:
    assert parse_pin("Soyte.Example:443:10.0.0.5") == ("Soyte.Example", 443, "10.0.0.5")
    assert parse_pin("a:443:[2001:db8::1]") == ("a", 443, "[2001:db8::1]")
    for text in ("a:443", "a:443:", ":443:10.0.0.5", "a:x:10.0.0.5", "a"):
        assert parse_pin(text) is None, text


def _size_before(n: int) -> str:
    """units.size as it was before it took ``largest``: the reference the new one keeps."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _exposure_before(total: int) -> str:
    """monitors.exposure's own size text before it used units.size."""
    value, unit = float(total), ""
    for bigger in ("KiB", "MiB", "GiB"):
        if value >= 1024:
            value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}" if unit else f"{total} bytes"


@given(st.integers(min_value=0, max_value=2**62))
def test_size_is_unchanged(n: int) -> None:
    assert size(n) == _size_before(n)
    if n >= 1024:
        assert size(n, largest="GiB") == _exposure_before(n)


def test_size_examples() -> None:
    assert size(None) == ""
    assert [size(n) for n in (0, 1023, 1024, 1536, 5 * 2**20)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
    ]
    assert size(2**50) == "1024.0 TiB"
    assert size(2**40, largest="GiB") == "1024.0 GiB"


@pytest.fixture
def strict_umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Gauge("portalops_test_value", "A value.", ["name"], registry=reg).labels("a").set(1.5)
    return reg


def test_textfile_is_written_whole_and_readable(tmp_path: Path, strict_umask: None) -> None:
    path = tmp_path / "portal_ops_test.prom"
    path.write_text("old\n")
    assert write_textfile(path, registry()) == path
    text = path.read_text()
    assert 'portalops_test_value{name="a"} 1.5\n' in text
    assert text.startswith("# HELP portalops_test_value A value.\n")
    # node_exporter runs as its own user: 0644 whatever the umask says.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_textfile_that_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "portal_ops_test.prom"
    with pytest.raises(MetricsWriteError) as info:
        write_textfile(path, registry(), "/etc/portal-ops/ops.yaml")
    assert str(info.value) == (
        f"cannot write the metrics file {path}: No such file or directory "
        "(metrics.textfile_dir in /etc/portal-ops/ops.yaml)"
    )
    assert info.value.exit_code == ExitCode.OPERATIONAL
