"""Probe one portal: availability, TLS, DNS, headers, exposure, defacement, expectations.

A probe starts where a visitor's browser would, at ``http://<domain>/``, follows redirects
(at most ``MAX_REDIRECTS``, a loop is a finding), and judges the final response. Every module
adds findings with stable codes (``http.down``, ``tls.expiring``, …); ``success`` is
blackbox_exporter's: the final answer arrived in time with a 2xx status over a verified
connection. Findings never make a probe unsuccessful by themselves: a portal can be up and
badly configured, and the alerts treat the two differently.

A portal may be hostile (defaced, compromised, or just broken in odd ways), so a probe is
bounded as a whole, not only request by request: ``ProbeConfig.deadline`` covers every step
(redirects, TLS checks, DNS, the IPv6 request, exposure paths, analysis) and an overrun ends
the probe with ``probe.deadline``, keeping what it learned: unsuccessful (critical) if the HTTP
phase had no final answer yet, else a success with a warning (the portal answered; the steps
after the answer, run at once, were cut short). Judging the pages
(headers, expectations, defacement, exposure) is CPU work on the portal's bytes: it runs in
``analysis``'s worker processes with a budget (``probe.analysis_timeout`` past it), never on
the event loop. Exposure paths are fetched and defacement judged only when the final page is
on the target's own origin (its domain, www/bare twin, legacy redirect target, on the port
of its URLs): a redirect to another host is not probed there (``http.foreign_origin``).

Redirects are followed as a browser would (the Location percent-encoded, its host
IDNA-encoded; one that cannot be requested ends as ``http.down``), but never into the
monitoring host's own network: a hop to a host the estate does not configure (neither one
of the target's own hosts nor pinned in ``monitor.resolve``) is followed only if every
address it resolves to is public, else the chain stops with ``http.redirect_blocked`` and
nothing is sent there. TLS checks handshake only with the target's own origin. The charset a
page declares picks its decoder only from a list of cheap single-pass text codecs
(:data:`TEXT_CODECS`); any other is decoded as UTF-8 with replacement (a codec such as
``punycode`` is quadratic, and it would run on the event loop).
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import logging
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from portalops.core.errors import BadInput
from portalops.monitors import defacement, exposure
from portalops.monitors.analysis import AnalysisPool, AnalysisTimeout, shared_pool
from portalops.monitors.catalogue import (
    ALL_MODULES,
    DNS,
    EXPECT,
    HEADERS,
    HTTP,
    PROBE,
    TLS,
    Code,
    Module,
)
from portalops.monitors.config import Monitor
from portalops.monitors.fetch import (
    FetchError,
    Limits,
    Resolver,
    Response,
    TlsInfo,
    fetch,
    now_utc,
    request_url,
)
from portalops.monitors.findings import Finding, Severity, worst
from portalops.monitors.headers import GRADES, Observed
from portalops.monitors.headers import grade as grade_headers
from portalops.monitors.tls import ClientTLS, client_tls, insecure_tls

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
# Codecs a page's declared charset may pick (by Python's canonical name): single-pass table
# or UTF codecs, linear in the body. Vietnamese pages in the wild are UTF-8, windows-1258,
# or (old) latin-1/cp1252 mislabelled; anything else decodes as UTF-8 with replacement.
TEXT_CODECS = frozenset(
    {
        "utf-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "ascii",
        "cp874",
        "tis-620",
        "koi8-r",
        "koi8-u",
        *(f"cp{n}" for n in range(1250, 1259)),
        *(f"iso8859-{n}" for n in (*range(1, 12), *range(13, 17))),
    }
)
# Exposure requests one probe has open to its portal at once (of 38): enough to finish well
# inside the deadline, few enough that a portal's per-client connection limit (nginx
# limit_conn) does not answer 503 to its own prober, and that a sweep's memory is bounded by
# probes in flight x this, not x 38 (a 100-target full sweep peaked at 314 MB with all 38).
EXPOSURE_PARALLEL = 4
# the modules that look at the final page (the page step): without them, it is only kept
_PAGE_MODULES = frozenset({Module.HEADERS, Module.EXPOSURE, Module.DEFACEMENT, Module.EXPECT})
EXPIRY_WARNING_DAYS = 21
EXPIRY_CRITICAL_DAYS = 7

# Mozilla's "intermediate" configuration (v5.7): the TLS 1.2 suites it allows, by OpenSSL name;
# every TLS 1.3 suite is allowed.
MOZILLA_INTERMEDIATE_TLS12 = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    }
)


@dataclass(frozen=True)
class Expect:
    links: tuple[str, ...] = ()  # href prefixes that must appear
    elements: tuple[str, ...] = ()  # "form", "input[name=q]": tag with optional [attr=value]
    forbidden: tuple[str, ...] = ()  # text that must not appear (case-insensitive)


@dataclass(frozen=True)
class Target:
    portal: str  # the unit's name, or the URL for an ad-hoc target
    unit_kind: str  # province | department | district | commune | url
    domain: str
    url: str  # the HTTPS home page
    http_url: str | None = None  # where a visitor typing the name lands; None: skip
    redirect_to: str | None = None  # legacy names: the domain they must redirect to
    expect: Expect = Expect()


@dataclass
class ProbeResult:
    target: Target
    started: datetime
    success: bool = False
    status_code: int = 0
    duration: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    redirects: int = 0
    chain: list[str] = field(default_factory=list)  # every URL from the first to the final
    final_url: str = ""
    http_version: str = ""
    body_bytes: int = 0
    tls: TlsInfo | None = None
    cert_days_left: float | None = None
    legacy_tls: bool | None = None
    dns_seconds: float | None = None
    addresses: dict[str, list[str]] = field(default_factory=dict)
    ipv6_reachable: bool | None = None
    score: int | None = None
    grade: str | None = None
    exposure_checked: bool = False
    exposed: list[str] = field(default_factory=list)  # finding codes of exposed paths
    defacement_suspected: bool | None = None
    expect_failed: int = 0
    findings: list[Finding] = field(default_factory=list)
    home_html: str = ""  # kept for baselines; not exported

    def add(self, code: Code, message: str, evidence: str = "", *, escalated: bool = False) -> None:
        """A finding of ``code`` at the catalogue's severity (its escalated one if asked)."""
        self.findings.append(code.finding(message, evidence, escalated=escalated))

    @property
    def failing(self) -> bool:
        """Down, or a finding of severity warning or critical: ``ops monitor check`` exits 1."""
        return not self.success or worst(self.findings) in (Severity.CRITICAL, Severity.WARNING)

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target.url,
            "portal": self.target.portal,
            "unit_kind": self.target.unit_kind,
            "domain": self.target.domain,
            "success": self.success,
            "status_code": self.status_code,
            "duration_seconds": round(self.duration, 4),
            "phases": {k: round(v, 4) for k, v in self.phases.items()},
            "redirects": self.redirects,
            "final_url": self.final_url,
            "cert_days_left": None
            if self.cert_days_left is None
            else round(self.cert_days_left, 2),
            "tls_version": self.tls.version if self.tls else None,
            "addresses": self.addresses,
            "ipv6_reachable": self.ipv6_reachable,
            "score": self.score,
            "grade": self.grade,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class ProbeConfig:
    resolver: Resolver
    ca_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    modules: tuple[Module, ...] = ALL_MODULES
    min_grade: str = "B"
    baselines: dict[str, defacement.Baseline] = field(default_factory=dict)  # by domain
    drift_threshold: float = 0.5
    deadline: float = 30.0  # the whole probe
    analysis_budget: float = 2.0  # the page analysis of one probe, in a worker
    # the hosts exposure and defacement may look at, beyond each target's own; None: any
    # target's own origin will do. /probe of a URL outside the configuration (probe_any)
    # sets it to the estate's hosts: no exposure paths on an origin anyone chose.
    estate_hosts: frozenset[str] | None = None
    pool: AnalysisPool | None = field(default=None, compare=False)  # None: the shared one


def configure(
    monitor: Monitor,
    baselines: dict[str, defacement.Baseline],
    modules: Sequence[str] | None = None,
) -> ProbeConfig:
    """The ProbeConfig for the ``monitor`` section: ``modules`` (names) replace
    ``monitor.modules`` when given; BadInput for a ``monitor.resolve`` pin that will not do."""
    try:
        resolver = Resolver(monitor.resolve, timeout=monitor.timeout)
    except ValueError as exc:
        raise BadInput(f"monitor.resolve: {exc}") from None
    return ProbeConfig(
        resolver=resolver,
        ca_file=str(monitor.ca_file) if monitor.ca_file else None,
        limits=Limits(timeout=monitor.timeout),
        modules=tuple(Module(m) for m in (modules or monitor.modules)),
        min_grade=monitor.min_grade,
        baselines=baselines,
        drift_threshold=monitor.drift_threshold,
        deadline=monitor.probe_deadline,
        analysis_budget=monitor.analysis_budget,
    )


async def probe(target: Target, config: ProbeConfig) -> ProbeResult:
    """Run the configured modules against ``target``; never raises for the target's faults.

    The deadline (``monitor.deadline``) decides ``success`` only when it hits before the HTTP
    answer: a portal that answered is up, however long the checks after it took (an IPv6
    blackhole, 37 exposure paths, a wait for an analysis worker); those cut short are then
    named in a warning, not turned into a PortalDown.

    A fault of the prober's own (a bug) is logged with its traceback and reported as the
    finding ``probe.error``: one target never stops the sweep of the others."""
    result = ProbeResult(target, now_utc())
    steps = _Steps()
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.deadline):
            await _modules(target, config, result, steps)
    except TimeoutError:
        if steps.http_answered:
            result.add(
                PROBE.DEADLINE,
                f"the probe of {target.url} took longer than {config.deadline:g} s "
                f"(monitor.deadline) after the HTTP answer; cut short: "
                f"{', '.join(steps.pending) or 'nothing'}",
            )
        else:
            result.success = False
            result.add(
                PROBE.DEADLINE,
                f"the probe of {target.url} took longer than {config.deadline:g} s "
                "(monitor.deadline) before the HTTP answer and was stopped",
                escalated=True,
            )
    except Exception as exc:
        log.exception("probe of %s failed", target.url)
        result.success = False
        result.add(PROBE.ERROR, f"the prober failed: {type(exc).__name__}")
    result.duration = time.monotonic() - started
    return result


@dataclass
class _Steps:
    """How far a probe got, for the deadline's finding: whether the HTTP phase has its final
    answer, and what the steps after it were still doing (by step, in start order)."""

    http_answered: bool = False
    running: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> list[str]:
        return list(self.running.values())


# what each step after the HTTP answer writes, copied from its scratch result once it is done
_STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "tls": ("legacy_tls",),
    "dns": ("addresses", "dns_seconds", "ipv6_reachable"),
    "page": (
        "home_html",
        "score",
        "grade",
        "expect_failed",
        "defacement_suspected",
        "exposure_checked",
        "exposed",
    ),
}


async def _modules(target: Target, config: ProbeConfig, result: ProbeResult, steps: _Steps) -> None:
    """The HTTP phase, then the steps that need only its answer (the TLS offers, DNS and
    IPv6, the exposure paths and the page analysis) at once. Each writes to a scratch copy of
    the result, merged in a fixed order (on the deadline too, for the steps done): the
    findings come out in the same order however the steps interleave."""
    context = client_tls(config.ca_file)
    response = await _http(target, config, context, result)
    steps.http_answered = True
    work: dict[str, Callable[[ProbeResult], Coroutine[Any, Any, None]]] = {}
    if Module.TLS in config.modules and urlsplit(target.url).scheme == "https":
        steps.running["tls"] = "the TLS offers"
        work["tls"] = lambda r: _tls_checks(target, config, r)
    if Module.DNS in config.modules:
        steps.running["dns"] = "DNS and the IPv6 request"
        work["dns"] = lambda r: _dns(target, config, r)
    if response is not None and _PAGE_MODULES.isdisjoint(config.modules):
        result.home_html = _page_text(response)  # kept for baselines; nothing judges it
    elif response is not None:
        steps.running["page"] = "the exposure paths"
        work["page"] = lambda r: _page(target, config, context, response, r, steps)
    if not work:
        return
    scratch = {name: replace(result, findings=[], addresses={}) for name in work}

    async def run(name: str) -> None:
        await work[name](scratch[name])
        del steps.running[name]

    try:
        if len(work) == 1:  # one step: run here, no task of its own
            await run(next(iter(work)))
        else:
            async with asyncio.TaskGroup() as group:
                for name in work:
                    group.create_task(run(name))
    finally:
        for name in work:  # the start order, whatever the end order
            if name not in steps.running:
                part = scratch[name]
                result.findings += part.findings
                for attribute in _STEP_FIELDS[name]:
                    setattr(result, attribute, getattr(part, attribute))


async def _page(
    target: Target,
    config: ProbeConfig,
    context: ClientTLS,
    response: Response,
    result: ProbeResult,
    steps: _Steps,
) -> None:
    """The exposure paths (fetched here) and the page analysis (in a worker)."""
    html = result.home_html = _page_text(response)
    own = _own_origin(target, response.url)
    outside = not _in_estate(config, response.url)
    looks = Module.DEFACEMENT in config.modules or Module.EXPOSURE in config.modules
    if own and outside and looks:
        result.add(
            HTTP.FOREIGN_ORIGIN,
            f"{response.url} is not an origin of the estate nor of monitor.urls: exposure and "
            "defacement are not checked there",
        )
    elif not own and looks:
        result.add(
            HTTP.FOREIGN_ORIGIN,
            f"{target.url} ends at {response.url}, another host: exposure and defacement "
            "are not checked there",
        )
    own = own and not outside
    job = PageJob(
        modules=frozenset(config.modules),
        headers=tuple(response.headers),
        url=response.url,
        chain=tuple(result.chain),
        html=html,
        min_grade=config.min_grade,
        expect=target.expect,
        baseline=config.baselines.get(target.domain) if own else None,
        drift_threshold=config.drift_threshold,
    )
    if own and Module.EXPOSURE in config.modules and response.status < 500:
        job = replace(job, exposure=await _exposure(response.url, target, config, context))
    if not job.wanted:
        return
    steps.running["page"] = "the page analysis (waiting for a worker, or judging)"
    try:
        verdict = await (config.pool or shared_pool()).run(
            analyse_page, job, config.analysis_budget, key=target.url
        )
    except AnalysisTimeout as exc:
        result.add(
            PROBE.ANALYSIS_TIMEOUT,
            f"the pages of {target.url} were not judged: {exc} (monitor.analysis_budget)",
        )
        return
    verdict.apply(result)


def _page_text(response: Response) -> str:
    return response.body.decode(text_codec(_charset(response)), "replace")


def own_hosts(target: Target) -> set[str]:
    """The target's own host names: its domain, the hosts of its URLs, the domain a legacy
    name must redirect to, and the www/bare twin of each."""
    names = {target.domain, target.redirect_to or ""}
    for known in (target.url, target.http_url):
        names.add(urlsplit(known).hostname or "" if known else "")
    names = {n.lower().rstrip(".") for n in names if n}
    return names | {n[4:] if n.startswith("www.") else f"www.{n}" for n in names}


def _in_estate(config: ProbeConfig, url: str) -> bool:
    """Whether url's host is one exposure and defacement may look at (``estate_hosts``)."""
    if config.estate_hosts is None:
        return True
    return (urlsplit(url).hostname or "").lower().rstrip(".") in config.estate_hosts


def _port(parts: SplitResult) -> int:
    """The port a URL reaches (the scheme's default when it names none); 0 if invalid."""
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return 0


def _own_origin(target: Target, url: str) -> bool:
    """Whether url is on one of the target's own origins: an own host (:func:`own_hosts`) on
    a port of the target's URLs, or on 80/443 (a port named as the default is the default)."""
    ports = {80, 443} | {_port(urlsplit(u)) for u in (target.url, target.http_url) if u}
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    return host in own_hosts(target) and _port(parts) in ports


def _configured(target: Target, config: ProbeConfig, url: str) -> bool:
    """Whether url's host is one the estate configures: the target's own, or pinned in
    ``monitor.resolve``. Only those may resolve to a non-public address."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    return host in own_hosts(target) or config.resolver.pinned(host, _port(parts)) is not None


@dataclass(frozen=True)
class PageJob:
    """What the page analysis needs, sent to a worker process (so: plain, picklable data)."""

    modules: frozenset[Module]
    headers: tuple[tuple[str, str], ...]
    url: str
    chain: tuple[str, ...]
    html: str
    min_grade: str
    expect: Expect
    baseline: defacement.Baseline | None
    drift_threshold: float
    exposure: tuple[tuple[exposure.Fetched, ...], exposure.Fetched | None] | None = None

    @property
    def wanted(self) -> bool:
        """Whether any analysis is asked for (none: no worker is needed at all)."""
        return (
            Module.HEADERS in self.modules
            or (Module.EXPECT in self.modules and self.expect != Expect())
            or (Module.DEFACEMENT in self.modules and self.baseline is not None)
            or self.exposure is not None
        )


@dataclass
class PageVerdict:
    """The analysis' answer, applied to the ProbeResult in the probing process."""

    findings: list[Finding] = field(default_factory=list)
    score: int | None = None
    grade: str | None = None
    expect_failed: int = 0
    defacement_suspected: bool | None = None
    exposure_checked: bool = False
    exposed: list[str] = field(default_factory=list)

    def apply(self, result: ProbeResult) -> None:
        result.findings += self.findings
        result.score, result.grade = self.score, self.grade
        result.expect_failed += self.expect_failed
        result.defacement_suspected = self.defacement_suspected
        result.exposure_checked = self.exposure_checked
        result.exposed = self.exposed


def analyse_page(job: PageJob) -> PageVerdict:
    """Headers grade, expectations, defacement and exposure for one probe: pure CPU work on
    the portal's bytes, run in an analysis worker (``analysis.AnalysisPool``)."""
    scratch = ProbeResult(Target("", "", "", job.url), now_utc(), chain=list(job.chain))
    verdict = PageVerdict()
    if Module.HEADERS in job.modules:
        _headers(job.headers, job.url, job.html, scratch, job.min_grade)
        verdict.score, verdict.grade = scratch.score, scratch.grade
    if Module.EXPECT in job.modules:
        _expect(job.expect, job.html, scratch)
        verdict.expect_failed = scratch.expect_failed
    if Module.DEFACEMENT in job.modules and job.baseline is not None:
        found = defacement.compare(job.baseline, job.html, job.drift_threshold)
        scratch.findings += found
        verdict.defacement_suspected = bool(found)
    if job.exposure is not None:
        fetched, not_found = job.exposure
        found = exposure.judge(fetched, not_found)
        scratch.findings += found
        verdict.exposure_checked = True
        verdict.exposed = [f.code for f in found]
    verdict.findings = scratch.findings
    return verdict


# -- http ------------------------------------------------------------------------------------


async def _http(
    target: Target, config: ProbeConfig, context: ClientTLS, result: ProbeResult
) -> Response | None:
    chain: list[str] = []
    url = target.http_url or target.url
    response: Response | None = None
    while True:
        guard = bool(chain) and not _configured(target, config, url)
        try:
            response = await fetch(
                url, config.resolver, context=context, limits=config.limits, public_only=guard
            )
        except FetchError as exc:
            if (
                url == target.http_url != target.url
                and exc.phase in ("resolve", "connect")
                and not chain
            ):
                # nothing listens on HTTP: Observatory's "redirection-not-needed-no-http";
                # the HTTPS URL is tried once (it differs, so this cannot repeat)
                url = target.url
                continue
            await _fetch_failed(url, exc, config, result, public_only=guard)
            return None
        chain.append(url)
        for phase, seconds in response.timings.items():
            result.phases[phase] = result.phases.get(phase, 0.0) + seconds
        location = response.header("location")
        if response.status in (301, 302, 303, 307, 308) and location:
            location = _location_text(location)
            try:  # as a browser sends it: IDNA host, percent-encoded path and query
                nxt = request_url(urljoin(url, location))[0]
            except FetchError as exc:
                result.add(exc.code, f"{url} redirects to {location[:200]!r}: {exc}")
                result.status_code = response.status
                result.chain = chain
                return None
            if nxt in chain:
                result.add(
                    HTTP.REDIRECT_LOOP,
                    f"redirect loop: {' → '.join([*chain, nxt])}"[:300],
                )
                result.status_code = response.status
                return None
            if len(chain) > MAX_REDIRECTS:
                result.add(
                    HTTP.REDIRECT_LOOP,
                    f"more than {MAX_REDIRECTS} redirects from {chain[0]}",
                )
                return None
            url = nxt
            continue
        break
    result.redirects = len(chain) - 1
    result.final_url = response.url
    result.status_code = response.status
    result.http_version = response.http_version
    result.body_bytes = len(response.body)
    result.tls = response.tls
    if response.tls and response.tls.cert:
        result.cert_days_left = response.tls.cert.days_left(now_utc())
    result.success = 200 <= response.status < 300 and (
        urlsplit(response.url).scheme == "http" or bool(response.tls and response.tls.verified)
    )
    if not 200 <= response.status < 300:
        result.add(
            HTTP.STATUS,
            f"{response.url} answered {response.status} {response.reason}",
        )
    _redirect_checks(target, chain, response, result)
    if 200 <= response.status < 300 and not _is_utf8(response):
        charset = _charset(response) or "none declared"
        result.add(
            HTTP.NOT_UTF8,
            f"the page is not declared UTF-8 (charset: {charset}); Art. 3.1 asks for Unicode",
        )
    result.chain = chain
    return response


def _location_text(value: str) -> str:
    """A Location header as a browser reads it: its bytes (h11 gives them to us as latin-1)
    are UTF-8 when they decode as such (``/tin-tức/``), latin-1 otherwise."""
    raw = value.strip().encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def _fetch_failed(
    url: str, exc: FetchError, config: ProbeConfig, result: ProbeResult, *, public_only: bool
) -> None:
    result.add(exc.code, f"{url}: {exc.message}")
    result.final_url = url
    if exc.code in (TLS.EXPIRED, TLS.HOSTNAME_MISMATCH, TLS.UNTRUSTED):
        # the certificate failed verification: read it anyway, for its expiry
        try:
            unverified = await fetch(
                url,
                config.resolver,
                context=insecure_tls(),
                limits=config.limits,
                public_only=public_only,
            )
        except FetchError:
            return
        if unverified.tls is not None:
            unverified.tls.verified = False
            unverified.tls.verify_error = exc.message
            result.tls = unverified.tls
            if unverified.tls.cert:
                result.cert_days_left = unverified.tls.cert.days_left(now_utc())
        # what a browser gets is the certificate error, not the page: status stays 0 (as in
        # blackbox_exporter); the answer behind the certificate is evidence only
        result.findings[-1] = replace(
            result.findings[-1],
            evidence=f"behind the certificate the server answers {unverified.status}",
        )


def _redirect_checks(
    target: Target, chain: list[str], final: Response, result: ProbeResult
) -> None:
    if target.redirect_to is not None:
        host = urlsplit(final.url).hostname or ""
        if host != target.redirect_to:
            result.add(
                HTTP.LEGACY_NOT_REDIRECTED,
                f"legacy name {target.domain} ends at {final.url}, not at {target.redirect_to}",
            )
        return
    schemes = [urlsplit(u).scheme for u in chain]
    if "https" in schemes and "http" in schemes[schemes.index("https") :]:
        back = schemes.index("http", schemes.index("https"))
        result.add(
            HTTP.HTTPS_DOWNGRADE,
            f"the redirects go back from HTTPS to plain HTTP: {chain[back - 1]} → {chain[back]}",
        )
    if target.http_url and chain and chain[0] == target.http_url:
        second = urlsplit(chain[1]) if len(chain) > 1 else None
        if second is None or second.scheme != "https":
            result.add(
                HTTP.NO_HTTPS_REDIRECT,
                f"{target.http_url} does not redirect to HTTPS"
                + (f" (it answers {final.status})" if second is None else ""),
            )


_HEADER_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_-]+)", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_-]+)""", re.IGNORECASE)


def _charset(response: Response) -> str | None:
    content_type = response.header("content-type") or ""
    match = _HEADER_CHARSET.search(content_type)
    if match:
        return match.group(1).lower()
    meta = _META_CHARSET.search(response.body[:4096])
    return meta.group(1).decode("ascii").lower() if meta else None


def text_codec(charset: str | None) -> str:
    """The codec to decode a page with: its declared charset if that is a cheap text codec
    (:data:`TEXT_CODECS`), else UTF-8 (http.not_utf8 reports the declaration anyway)."""
    if not charset:
        return "utf-8"
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return "utf-8"
    return name if name in TEXT_CODECS else "utf-8"


def _is_utf8(response: Response) -> bool:
    content_type = (response.header("content-type") or "").lower()
    if content_type and "html" not in content_type:
        return True  # only pages declare a charset
    return (_charset(response) or "").replace("_", "-") in ("utf-8", "utf8")


# -- tls -------------------------------------------------------------------------------------


@functools.cache
def legacy_context() -> ssl.SSLContext:
    """A client that offers TLS 1.0 and 1.1 only, at OpenSSL's lowest security level."""
    ctx = _unverified_client("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


@functools.cache
def outside_profile_context() -> ssl.SSLContext:
    """A TLS 1.2 client offering every suite this OpenSSL has *except* Mozilla intermediate's.

    sslyze enumerates suites one handshake at a time; one handshake offering all the others
    answers the profile question ("does the server accept anything outside it?") and names
    the suite the server prefers among them, at a fraction of the cost."""
    everything = _unverified_client("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    outside = [
        c["name"]
        for c in everything.get_ciphers()
        # "protocol" is the version a suite first appeared in (AES128-SHA: SSLv3); all but
        # TLS 1.3's are usable in TLS 1.2
        if c["protocol"] != "TLSv1.3" and c["name"] not in MOZILLA_INTERMEDIATE_TLS12
    ]
    ctx = _unverified_client(":".join(outside) + ":@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _unverified_client(ciphers: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(ciphers)
    return ctx


@dataclass(frozen=True)
class Offer:
    """How a server answered a handshake that offered only what a context allows."""

    reached: bool
    cipher: str | None = None
    """The suite the server chose; None if it refused the offer (or was not reached)."""


async def offer(url: str, resolver: Resolver, timeout: float, context: ssl.SSLContext) -> Offer:
    """Attempt one TLS handshake with ``context``; a refusal is an answer, not an error."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    # Bare transports, not asyncio streams: a stream's protocol keeps a refused handshake's
    # error in a future of its own, which uvloop left unretrieved ("Future exception was
    # never retrieved" and a traceback on stderr, depending on when the collector ran).
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolver.resolve(host, port)
            for address in addresses:  # the first that accepts, as fetch does
                try:
                    plain, protocol = await loop.create_connection(asyncio.Protocol, address, port)
                    transports.append(plain)
                    break
                except OSError:
                    continue
            if not transports:
                return Offer(reached=False)
            try:
                tls = await loop.start_tls(plain, protocol, context, server_hostname=host)
            except (ssl.SSLError, ConnectionError, OSError):
                return Offer(reached=True)
            if tls is None:
                return Offer(reached=True)
            transports.append(tls)
            cipher = tls.get_extra_info("cipher")
            return Offer(reached=True, cipher=cipher[0] if cipher else "?")
    except (TimeoutError, FetchError):
        return Offer(reached=False)
    finally:
        for transport in transports:
            transport.abort()


async def _tls_checks(target: Target, config: ProbeConfig, result: ProbeResult) -> None:
    final = result.final_url
    own = final.startswith("https://") and _own_origin(target, final)
    https_url = final if own else target.url  # never a handshake with a foreign origin
    timeout = config.limits.timeout
    legacy, outside = await asyncio.gather(
        offer(https_url, config.resolver, timeout, legacy_context()),
        offer(https_url, config.resolver, timeout, outside_profile_context()),
    )
    result.legacy_tls = legacy.cipher is not None if legacy.reached else None
    netloc = urlsplit(https_url).netloc
    if result.legacy_tls:
        result.add(
            TLS.LEGACY_PROTOCOL,
            f"{netloc} still accepts TLS 1.0/1.1 (Mozilla intermediate: TLS 1.2+)",
        )
    if outside.cipher is not None:
        result.add(
            TLS.WEAK_CIPHER,
            f"{netloc} accepts TLS 1.2 suites outside Mozilla's intermediate profile",
            evidence=f"offered only those, the server chose {outside.cipher}",
        )
    tls = result.tls
    if tls is None:
        return
    if (
        tls.version == "TLSv1.2"
        and tls.cipher not in MOZILLA_INTERMEDIATE_TLS12
        and outside.cipher is None
    ):
        result.add(
            TLS.WEAK_CIPHER,
            f"negotiated {tls.cipher}, not in Mozilla's intermediate profile",
        )
    cert = tls.cert
    if cert is not None:
        if (cert.key_type == "RSA" and cert.key_bits < 2048) or (
            cert.key_type == "EC" and cert.key_bits < 256
        ):
            result.add(
                TLS.WEAK_CIPHER,
                f"{cert.key_type} key of {cert.key_bits} bits "
                "(Mozilla intermediate: RSA 2048, EC 256)",
            )
        days = result.cert_days_left
        if days is not None and 0 <= days < EXPIRY_WARNING_DAYS:
            result.add(
                TLS.EXPIRING,
                f"certificate expires in {days:.1f} days ({cert.not_after:%Y-%m-%d %H:%M}Z)",
                escalated=days < EXPIRY_CRITICAL_DAYS,
            )


# -- dns -------------------------------------------------------------------------------------


async def _dns(target: Target, config: ProbeConfig, result: ProbeResult) -> None:
    parts = urlsplit(target.url)
    host, port = parts.hostname or target.domain, parts.port or 443
    started = time.monotonic()
    for family, name in ((socket.AF_INET, "A"), (socket.AF_INET6, "AAAA")):
        try:
            result.addresses[name] = await config.resolver.resolve(host, port, family)
        except FetchError:
            result.addresses[name] = []
    result.dns_seconds = time.monotonic() - started
    if not result.addresses["AAAA"]:
        result.add(DNS.NO_AAAA, f"{host} has no AAAA record: not reachable over IPv6")
        return
    # "Answers over IPv6" means an HTTP answer, not an open port: any status will do, but
    # the handshake is verified as it is over IPv4 (an IPv6 vhost with the wrong certificate
    # is not a working site).
    address = result.addresses["AAAA"][0]
    try:
        await fetch(
            target.url,
            config.resolver,
            context=client_tls(config.ca_file),
            limits=config.limits,
            family=socket.AF_INET6,
            method="HEAD",
        )
        result.ipv6_reachable = True
    except FetchError as exc:
        result.ipv6_reachable = False
        result.add(
            DNS.IPV6_UNREACHABLE,
            f"{host} has AAAA {address} but does not answer over IPv6 on port {port}",
            evidence=exc.message,
        )


# -- headers, expectations, exposure ---------------------------------------------------------


# Observatory result id -> the finding it becomes, and its message
_HEADER_FINDINGS: dict[str, tuple[Code, str]] = {
    "hsts-not-implemented": (HEADERS.HSTS_MISSING, "no Strict-Transport-Security header"),
    "csp-not-implemented": (HEADERS.CSP_MISSING, "no Content-Security-Policy"),
    "csp-not-implemented-but-reporting-enabled": (HEADERS.CSP_MISSING, "CSP is report-only"),
    "csp-implemented-with-unsafe-inline": (
        HEADERS.CSP_UNSAFE_INLINE,
        "CSP allows 'unsafe-inline' scripts",
    ),
    "x-frame-options-not-implemented": (
        HEADERS.XFO_MISSING,
        "no X-Frame-Options (or CSP frame-ancestors)",
    ),
    "x-content-type-options-not-implemented": (
        HEADERS.XCTO_MISSING,
        "no X-Content-Type-Options: nosniff",
    ),
}


def _headers(
    headers: Sequence[tuple[str, str]], url: str, html: str, result: ProbeResult, min_grade: str
) -> None:
    report = grade_headers(
        Observed(headers=list(headers), url=url, redirects=result.chain, body=html)
    )
    result.score, result.grade = report.score, report.grade
    for outcome in report.outcomes:
        if outcome.result in _HEADER_FINDINGS:
            code, message = _HEADER_FINDINGS[outcome.result]
            result.add(code, message, f"{outcome.result} ({outcome.modifier:+d})")
    if GRADES.index(report.grade) > GRADES.index(min_grade):
        result.add(
            HEADERS.GRADE_LOW,
            f"security headers grade {report.grade} ({report.score}/100, Observatory "
            f"algorithm {report.algorithm_version}), below {min_grade}",
        )


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])


_SELECTOR = re.compile(r"^([a-z0-9]+)(?:\[([a-z-]+)(?:=[\"']?([^\]\"']*)[\"']?)?\])?$")


def _expect(expect: Expect, html: str, result: ProbeResult) -> None:
    parser = _Elements()
    parser.feed(html)
    for prefix in expect.links:
        if not any(link.startswith(prefix) for link in parser.links):
            result.expect_failed += 1
            result.add(EXPECT.MISSING, f"no link to {prefix} on the home page")
    for selector in expect.elements:
        match = _SELECTOR.match(selector.strip().lower())
        if match is None:
            continue
        tag, attr, value = match.groups()
        if not any(
            t == tag and (attr is None or (attr in a and (value is None or a[attr] == value)))
            for t, a in parser.tags
        ):
            result.expect_failed += 1
            result.add(EXPECT.MISSING, f"no {selector} element on the home page")
    lowered = html.lower()
    for text in expect.forbidden:
        at = lowered.find(text.lower())
        if at >= 0:
            result.expect_failed += 1
            result.add(
                EXPECT.FORBIDDEN,
                f"forbidden text {text!r} on the home page",
                html[max(0, at - 60) : at + len(text) + 60],
            )


async def _exposure(
    base: str, target: Target, config: ProbeConfig, context: ClientTLS
) -> tuple[tuple[exposure.Fetched, ...], exposure.Fetched | None]:
    """Fetch every exposure path (and one that cannot exist) from base's origin; judged later,
    in the analysis worker."""
    parts = urlsplit(base)
    origin = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    limits = Limits(
        timeout=config.limits.timeout,
        max_header=config.limits.max_header,
        max_body=exposure.READ_LIMIT,
    )
    paths = exposure.paths(target.domain)
    probe_404 = f"/portalops-404-{secrets.token_hex(6)}"
    # one lookup for the 38 requests to this origin, not 38 (a slow resolver costs one wait)
    try:
        _, host, port = request_url(origin)  # the host and port as fetch resolves them
        resolver = config.resolver.with_pin(host, port, await config.resolver.resolve(host, port))
    except FetchError:
        return (), None

    gate = asyncio.Semaphore(EXPOSURE_PARALLEL)

    async def get(path: str) -> exposure.Fetched | None:
        async with gate:
            try:
                response = await fetch(origin + path, resolver, context=context, limits=limits)
            except FetchError:
                return None
        return exposure.Fetched(path, response.status, response.headers, response.body)

    fetched = await asyncio.gather(*(get(p) for p in [probe_404, *paths]))
    return tuple(f for f in fetched[1:] if f is not None), fetched[0]
