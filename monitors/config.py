"""The ``monitor`` section of ops.yaml: what the prober checks and how hard it tries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from portalops.core.netaddr import is_port, parse_host_port, parse_pin
from portalops.core.validate import Strict
from portalops.monitors.catalogue import ALL_MODULES, Module
from portalops.monitors.headers import GRADES


class MonitorExpect(Strict):
    """What every portal's home page must (not) have; ``{zone}`` is the province zone."""

    links: list[str] = []  # href prefixes, e.g. "https://dichvucong.{zone}" (Art. 5.6, 8.1)
    elements: list[str] = []  # "form", "input[name=q]": a tag, optionally [attr] or [attr=value]
    forbidden: list[str] = []  # text that must not appear


class Monitor(Strict):
    resolve: list[str] = []  # curl-style "host:port:address" pins
    ca_file: Path | None = None  # a private CA (default: the system store)
    listen: str = "127.0.0.1:9433"  # ops monitor serve
    interval: Annotated[float, Field(ge=5)] = 60.0  # seconds between sweeps of a target
    concurrency: Annotated[int, Field(ge=1, le=2000)] = 50
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0  # per request
    http_port: Annotated[int, Field(ge=1, le=65535)] = 80
    https_port: Annotated[int, Field(ge=1, le=65535)] = 443
    modules: list[Module] = list(ALL_MODULES)  # the catalogue's (monitors/catalogue.py)
    min_grade: str = "B"  # headers.grade_low below this
    drift_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5  # defacement.drift above this
    expect: MonitorExpect = MonitorExpect()
    estate: bool = True  # probe every domain of the units file (false: monitor.urls only)
    urls: list[str] = []  # extra targets beyond the estate's portals
    # "host:port" addresses outside the province network (a resolver, the ISP's gateway) that
    # the monitoring host should always reach: when none answers, the host is blind
    # (portalops_uplink_up, alert MonitoringBlind) rather than every portal being down
    uplink: list[str] = []

    @field_validator("uplink")
    @classmethod
    def _uplink(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            parsed = parse_host_port(address)
            if parsed is None or not parsed[0] or not is_port(parsed[1]):
                raise ValueError(f"uplink address {address!r} is not host:port")
        return addresses

    @field_validator("resolve")
    @classmethod
    def _pins(cls, pins: list[str]) -> list[str]:
        for pin in pins:
            if parse_pin(pin) is None:
                raise ValueError(f"resolve pin {pin!r} is not host:port:address")
        return pins

    @field_validator("min_grade")
    @classmethod
    def _grade(cls, grade: str) -> str:
        if grade not in GRADES:
            raise ValueError(f"min_grade {grade!r} is not one of {', '.join(GRADES)}")
        return grade
