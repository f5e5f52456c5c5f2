"""Targets from the estate model: every domain, the English channel, legacy names redirecting;
which targets /probe may fetch; the exporter's health verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portalops.core.errors import BadInput
from portalops.inventory.model import load_estate
from portalops.monitors.catalogue import Module
from portalops.monitors.config import Monitor, MonitorExpect
from portalops.monitors.exporter import Sweeper, beyond_loopback, parse_modules
from portalops.monitors.fetch import Resolver
from portalops.monitors.probe import ProbeConfig, ProbeResult
from portalops.monitors.targets import configured, estate_targets, select, url_target
from tests.fixtures.paths import PROJECT

PHUTHO = PROJECT / "inventory" / "examples" / "phutho-2025.yaml"


def test_every_domain_and_legacy_name_is_a_target() -> None:
    estate = load_estate(PHUTHO)
    monitor = Monitor(expect=MonitorExpect(links=["https://dichvucong.{zone}"]))
    targets = {t.domain: t for t in estate_targets(estate, monitor)}
    domains = {d for p in estate.portals for d in p.domains}
    assert set(targets) == domains | set(estate.redirects)
    english = targets["english.phutho.gov.vn"]
    assert english.unit_kind == "province"
    assert english.url == "https://english.phutho.gov.vn/"
    assert english.http_url == "http://english.phutho.gov.vn/"
    assert english.expect.links == ("https://dichvucong.phutho.gov.vn",)
    old = targets["english.vinhphuc.gov.vn"]
    assert old.redirect_to == estate.redirects["english.vinhphuc.gov.vn"]
    assert old.expect.links == ()  # a redirect has no page of its own to judge


def test_ports_other_than_the_defaults_appear_in_the_urls() -> None:
    estate = load_estate(PHUTHO)
    monitor = Monitor(http_port=8080, https_port=8443, estate=True)
    [target, *_] = estate_targets(estate, monitor)
    assert target.url == f"https://{target.domain}:8443/"
    assert target.http_url == f"http://{target.domain}:8080/"


def test_selection_by_domain_or_url_and_unknown_names() -> None:
    estate = load_estate(PHUTHO)
    monitor = Monitor()
    [www] = select(["WWW.phutho.gov.vn."], monitor, estate)
    assert www.unit_kind == "province"
    adhoc = url_target("http://example.org:8080/x", monitor, estate)
    assert (adhoc.unit_kind, adhoc.url, adhoc.http_url) == (
        "url",
        "http://example.org:8080/x",
        "http://example.org:8080/x",
    )
    with pytest.raises(BadInput, match="not a portal domain of the estate"):
        select(["nosuch.phutho.gov.vn"], monitor, estate)
    with pytest.raises(BadInput, match="not a portal domain of the estate or an http"):
        url_target("ftp://example.org/", monitor, estate)


def test_only_a_swept_domain_or_a_targets_own_url_is_configured() -> None:
    estate = load_estate(PHUTHO)
    monitor = Monitor(urls=["https://dichvucong.gov.vn/tra-cuu?x=1"])
    targets = select([], monitor, estate)
    www = configured("WWW.phutho.gov.vn.", targets)
    assert www is not None
    assert www.url == "https://www.phutho.gov.vn/"
    assert configured("HTTPS://www.phutho.gov.vn:443", targets) is www  # same URL, spelled out
    assert configured("http://www.phutho.gov.vn/", targets) is www  # where visitors land
    extra = configured("https://dichvucong.gov.vn/tra-cuu?x=1", targets)
    assert extra is not None
    assert extra.unit_kind == "url"
    for item in (
        "https://www.phutho.gov.vn/admin/delete?id=1",  # a configured host, another path
        "https://www.phutho.gov.vn:8443/",
        "https://dichvucong.gov.vn/tra-cuu?x=2",
        "http://127.0.0.1:9433/metrics",
        "nosuch.phutho.gov.vn",
        "https://www.phutho.gov.vn:99999/",  # not a port: no match, no error
        "ftp://www.phutho.gov.vn/",
    ):
        assert configured(item, targets) is None, item


def test_listening_beyond_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "[::1]", "::1", "localhost", ""):
        assert not beyond_loopback(host), host
    for host in ("0.0.0.0", "::", "[::]", "10.0.0.5", "monitor.example.vn"):
        assert beyond_loopback(host), host


def test_probe_modules_are_validated() -> None:
    assert parse_modules("tls,http") == (Module.HTTP, Module.TLS)
    with pytest.raises(ValueError, match="unknown module 'nosuch'"):
        parse_modules("http,nosuch")


def test_healthz_reason_names_how_far_behind_the_sweep_is() -> None:
    """A target whose last result is older than 2 x interval + deadline makes the sweep
    behind; one never probed counts from the sweeper's start."""
    targets = [url_target(f"https://d{i}.example.vn/", Monitor()) for i in range(3)]
    sweeper = Sweeper(targets, ProbeConfig(resolver=Resolver([])), 30, 2, deadline=10)
    assert sweeper.stale_after == 70
    assert sweeper.behind() is None  # just started: nothing is late yet
    sweeper.started -= 100
    fresh = ProbeResult(targets[0], datetime.now(UTC) - timedelta(seconds=65), duration=5)
    old = ProbeResult(targets[1], datetime.now(UTC) - timedelta(seconds=200), duration=5)
    sweeper.latest = {targets[0].url: fresh, targets[1].url: old}
    reason = sweeper.behind()
    assert reason is not None
    assert reason.startswith("behind: 2 of 3 targets have no result newer than 70 s")
    assert "oldest: https://d1.example.vn/, 195 s" in reason
    sweeper.heartbeat -= 60
    assert (sweeper.behind() or "").startswith("stalled: the sweep loop last turned 60 s ago")
