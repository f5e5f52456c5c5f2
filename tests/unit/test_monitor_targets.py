"""Targets from the estate model: every domain, the English channel, legacy names redirecting."""

from __future__ import annotations

import pytest

from portalops.core.errors import BadInput
from portalops.inventory.model import load_estate
from portalops.monitors.config import Monitor, MonitorExpect
from portalops.monitors.targets import estate_targets, select, url_target
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
