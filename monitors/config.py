"""The ``monitor`` section of ops.yaml: what the prober checks and how hard it tries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from portalops.core.netaddr import is_port, parse_host_port, parse_pin
from portalops.core.validate import LocatedError, Strict
from portalops.monitors.catalogue import ALL_MODULES, Module
from portalops.monitors.headers import GRADES

#: The most exporters one estate may be split over (a bound, not a tuning: a shard of the
#: smallest estate still has a few targets).
MAX_SHARDS = 64


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/2"`` -> (1, 2); ValueError naming the rule for anything else (the config loader
    turns it into a FILE:LINE error)."""
    found = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*([0-9]{1,6})\s*", text)
    if found is None:
        raise ValueError(
            f"shard {text[:40]!r} is not INDEX/COUNT (e.g. 0/2: the first of two exporters)"
        )
    i, n = int(found[1]), int(found[2])
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"shard {text!r}: COUNT must be 1 to {MAX_SHARDS}")
    if i >= n:
        raise ValueError(f"shard {text!r}: INDEX counts from 0 and must be below COUNT ({n})")
    return i, n


class MonitorExpect(Strict):
    """What every portal's home page must (not) have; ``{zone}`` is the province zone."""

    links: list[str] = []
    """Link (href) prefixes the page must have, e.g. ``https://dichvucong.{zone}``
    (Art. 5.6, 8.1)."""
    elements: list[str] = []
    """Elements the page must have: a tag, optionally with ``[attr]`` or ``[attr=value]``
    (``form``, ``input[name=q]``)."""
    forbidden: list[str] = []
    """Text that must not appear on the page (``hacked by``)."""


class Monitor(Strict):
    """What the prober checks on every portal, and how hard it tries."""

    resolve: list[str] = []
    """curl-style ``host:port:address`` pins that bypass DNS (staging and tests)."""
    ca_file: Path | None = None
    """A private CA bundle to verify certificates with (unset: the system store)."""
    listen: str = "127.0.0.1:9433"
    """``host:port`` the exporter (``ops monitor serve``) listens on for Prometheus."""
    interval: Annotated[float, Field(ge=5)] = 60.0
    """Seconds between two probes of one target."""
    concurrency: Annotated[int, Field(ge=1, le=2000)] = 50
    """Targets probed at the same time."""
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    """Seconds each request may take."""
    deadline: Annotated[float, Field(gt=0, le=600)] | None = None
    """Seconds a whole probe may take (redirects, TLS checks, DNS, IPv6, exposure paths,
    analysis); past it the probe ends unsuccessful with ``probe.deadline``. Unset: 80 % of
    ``interval``, at most 30 (``probe_deadline``); it must stay below ``interval``."""
    analysis_budget: Annotated[float, Field(gt=0, le=60)] = 2.0
    """Seconds of a worker's time the page analysis of one probe (headers, expectations,
    defacement, exposure) may take; past it the worker is killed and the probe reports
    ``probe.analysis_timeout``."""
    http_port: Annotated[int, Field(ge=1, le=65535)] = 80
    """The port plain-HTTP probes of estate domains connect to (another one in tests)."""
    https_port: Annotated[int, Field(ge=1, le=65535)] = 443
    """The port HTTPS probes of estate domains connect to (another one in tests)."""
    modules: list[Module] = list(ALL_MODULES)
    """The probe modules to run (the catalogue, docs/monitoring.md; default: all)."""
    min_grade: str = "B"
    """The security-header grade (Observatory scale) below which ``headers.grade_low`` is
    reported."""
    drift_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """How much of the home page's text may change from its baseline (0 to 1) before
    ``defacement.drift`` is reported."""
    expect: MonitorExpect = MonitorExpect()
    """What every portal's home page must and must not contain."""
    estate: bool = True
    """Probe every domain of the units file (false: only ``monitor.urls``)."""
    urls: list[str] = []
    """Extra URLs to probe beyond the estate's portals."""
    probe_any: bool = False
    """Let the exporter's ``/probe`` fetch any http(s) URL it is given; by default it probes
    only the estate's portals and ``monitor.urls`` and answers 403 to anything else (an
    open ``/probe`` is a fetch-anything proxy, port scanner and path oracle)."""
    shard: str | None = None
    """``INDEX/COUNT`` (``0/2``, ``1/2``): this exporter sweeps only the targets whose domain
    Prometheus' ``hashmod`` puts in shard INDEX of COUNT (docs/monitoring.md, "Sharding");
    unset: every target."""
    uplink: list[str] = []
    """``host:port`` addresses outside the province network (a resolver, the ISP's gateway)
    the monitoring host should always reach: when none answers, the host is blind
    (``portalops_uplink_up``, alert MonitoringBlind) rather than every portal being down."""

    @property
    def probe_deadline(self) -> float:
        """``deadline``, or by default 80 % of the interval, at most 30 s."""
        return self.deadline if self.deadline is not None else min(0.8 * self.interval, 30.0)

    @model_validator(mode="after")
    def _deadline_below_interval(self) -> Monitor:
        if self.deadline is not None and self.deadline >= self.interval:
            raise LocatedError(
                ("deadline",),
                f"{self.deadline:g} s is not below interval {self.interval:g} s",
            )
        return self

    @property
    def shard_of(self) -> tuple[int, int] | None:
        """``shard`` as (index, count), or None when this exporter sweeps every target."""
        return parse_shard(self.shard) if self.shard is not None else None

    @field_validator("shard")
    @classmethod
    def _shard(cls, shard: str | None) -> str | None:
        if shard is not None:
            parse_shard(shard)
        return shard

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
