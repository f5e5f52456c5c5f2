"""Sweeps and the Prometheus exporter (``ops monitor serve``).

Metric names are blackbox_exporter's where it has one, so existing blackbox dashboards and
alert rules keep working; the rest are ``portalops_*``. Every series carries ``portal``,
``unit_kind`` and ``domain``. ``/metrics`` serves the latest result of every target, swept in
the background: each target on its own schedule (``monitor.interval``, with a random offset
so that 170 portals are not probed in the same second), at most ``monitor.concurrency`` at
once, so one slow portal never delays the others. ``/probe?target=…&module=…`` probes once,
now, and answers like blackbox_exporter's multi-target endpoint; ``/healthz`` says the sweeper
is alive. Nothing here changes state, so no endpoint needs a token.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portalops.core.errors import BadInput, OpsError
from portalops.core.netaddr import parse_host_port, unbracket
from portalops.monitors.catalogue import EXPOSURE, HEADERS, Module
from portalops.monitors.probe import ProbeConfig, ProbeResult, Target, probe

log = logging.getLogger(__name__)

LABELS = ("portal", "unit_kind", "domain")
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
TLS_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
# portalops_exposed_path{code}: one series per exposure code of the catalogue, 0 or 1
EXPOSURE_CODES = sorted(code.code for code in EXPOSURE.codes())


async def sweep(
    targets: Sequence[Target],
    config: ProbeConfig,
    concurrency: int,
    done: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe every target once, at most ``concurrency`` at a time; results in target order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> ProbeResult:
        async with gate:
            result = await probe(target, config)
        if done is not None:
            done(result)
        return result

    return list(await asyncio.gather(*(one(t) for t in targets)))


# key, metric name, help, extra labels; blackbox_exporter's names and help texts first
_FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("success", "probe_success", "Displays whether or not the probe was a success", ()),
    ("duration", "probe_duration_seconds",
     "Returns how long the probe took to complete in seconds", ()),
    ("status", "probe_http_status_code", "Response HTTP status code", ()),
    ("phase", "probe_http_duration_seconds",
     "Duration of http request by phase, summed over all redirects", ("phase",)),
    ("redirects", "probe_http_redirects", "The number of redirects", ()),
    ("ssl", "probe_http_ssl", "Indicates if SSL was used for the final redirect", ()),
    ("version", "probe_http_version", "Returns the version of HTTP of the probe response", ()),
    ("length", "probe_http_uncompressed_body_length", "Length of uncompressed response body", ()),
    ("expiry", "probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime", ()),
    ("tls", "probe_tls_version_info", "Returns the TLS version used", ("version",)),
    ("dns", "probe_dns_lookup_time_seconds",
     "Returns the time taken for probe dns lookup in seconds", ()),
    ("score", "portalops_security_score",
     "HTTP security-header score, MDN HTTP Observatory compatible", ()),
    ("grade", "portalops_security_grade_info",
     "HTTP security-header grade on the Observatory scale", ("grade", "algorithm")),
    ("exposed", "portalops_exposed_path", "1 if a sensitive path is exposed", ("code",)),
    ("deface", "portalops_defacement_suspected",
     "1 if the home page drifted from its baseline or shows defacement markers", ()),
    ("legacy", "portalops_tls_legacy_protocol_accepted",
     "1 if the server still completes a TLS 1.0/1.1 handshake", ()),
    ("ipv6", "portalops_ipv6_reachable",
     "1 if the site answers over IPv6 (only where an AAAA record exists)", ()),
    ("expect", "portalops_expect_failed",
     "Number of expect rules (links, elements, forbidden text) that failed", ()),
    ("below", "portalops_security_grade_below_minimum",
     "1 if the security-header grade is below monitor.min_grade", ()),
    ("findings", "portalops_probe_findings", "Findings of the last probe by severity",
     ("severity",)),
    ("last", "portalops_probe_last_run_timestamp_seconds", "When the target was last probed", ()),
)  # fmt: skip


def families(
    results: Iterable[ProbeResult], uplink: Mapping[str, bool] | None = None
) -> Iterator[Metric]:
    """The metric families for ``results`` (one per target) and the uplink checks."""
    g = {
        key: GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])
        for key, name, doc, extra in _FAMILIES
    }
    for r in results:
        _availability(g, r)
        _posture(g, r)
    yield from g.values()
    if uplink:
        up = GaugeMetricFamily(
            "portalops_uplink_up",
            "1 if the monitoring host reaches this reference address (monitor.uplink)",
            labels=["target"],
        )
        for target, ok in sorted(uplink.items()):
            up.add_metric([target], float(ok))
        yield up


def _availability(g: dict[str, GaugeMetricFamily], r: ProbeResult) -> None:
    labels = [r.target.portal, r.target.unit_kind, r.target.domain]
    g["success"].add_metric(labels, float(r.success))
    g["duration"].add_metric(labels, r.duration)
    g["status"].add_metric(labels, float(r.status_code))
    for phase in PHASES:
        g["phase"].add_metric([*labels, phase], r.phases.get(phase, 0.0))
    g["redirects"].add_metric(labels, float(r.redirects))
    g["ssl"].add_metric(labels, float(r.final_url.startswith("https://") and r.tls is not None))
    if r.http_version:
        g["version"].add_metric(labels, float(r.http_version))
    g["length"].add_metric(labels, float(r.body_bytes))
    if r.tls is not None and r.tls.cert is not None:
        g["expiry"].add_metric(labels, r.tls.cert.not_after.timestamp())
    if r.tls is not None and r.tls.version:
        g["tls"].add_metric([*labels, TLS_NAMES.get(r.tls.version, r.tls.version)], 1.0)
    if r.dns_seconds is not None:
        g["dns"].add_metric(labels, r.dns_seconds)
    g["last"].add_metric(labels, r.started.timestamp())


def _posture(g: dict[str, GaugeMetricFamily], r: ProbeResult) -> None:
    labels = [r.target.portal, r.target.unit_kind, r.target.domain]
    if r.score is not None and r.grade is not None:
        g["score"].add_metric(labels, float(r.score))
        g["grade"].add_metric([*labels, r.grade, "6"], 1.0)
        below = any(f.code == HEADERS.GRADE_LOW.code for f in r.findings)
        g["below"].add_metric(labels, float(below))
    if r.exposure_checked:
        for code in EXPOSURE_CODES:
            g["exposed"].add_metric([*labels, code], float(code in r.exposed))
    if r.defacement_suspected is not None:
        g["deface"].add_metric(labels, float(r.defacement_suspected))
    if r.legacy_tls is not None:
        g["legacy"].add_metric(labels, float(r.legacy_tls))
    if r.ipv6_reachable is not None:
        g["ipv6"].add_metric(labels, float(r.ipv6_reachable))
    g["expect"].add_metric(labels, float(r.expect_failed))
    for severity in ("critical", "warning", "info"):
        count = sum(1 for f in r.findings if f.severity == severity)
        g["findings"].add_metric([*labels, severity], float(count))


class _Latest(Collector):
    def __init__(self, results: list[ProbeResult], uplink: Mapping[str, bool] | None) -> None:
        self.results, self.uplink = results, uplink

    def collect(self) -> Iterator[Metric]:
        return families(self.results, self.uplink)


def render(results: Iterable[ProbeResult], uplink: Mapping[str, bool] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Latest(list(results), dict(uplink) if uplink else None))
    return generate_latest(registry)


async def reachable(address: str, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout``."""
    parsed = parse_host_port(address)
    if parsed is None:
        return False
    host, port = parsed
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(unbracket(host), port)
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()
    return True


class Sweeper:
    """Probes every target on its own jittered schedule; keeps the latest result of each."""

    def __init__(
        self,
        targets: Sequence[Target],
        config: ProbeConfig,
        interval: float,
        concurrency: int,
        uplink: Sequence[str] = (),
    ) -> None:
        self.targets, self.config = list(targets), config
        self.interval, self.concurrency = interval, concurrency
        self.uplink_targets = list(uplink)
        self.uplink: dict[str, bool] = {}
        self.latest: dict[str, ProbeResult] = {}
        self.heartbeat = time.monotonic()
        self.sweeps = 0

    async def run(self) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        rng = random.Random()  # noqa: S311 - schedule jitter, not a secret
        due = {
            t.url: time.monotonic() + rng.uniform(0, min(self.interval, 10.0)) for t in self.targets
        }
        running: set[asyncio.Task[None]] = set()
        uplink_due = time.monotonic()

        async def one(target: Target) -> None:
            async with gate:
                result = await probe(target, self.config)
            self.latest[target.url] = result

        async def check_uplink() -> None:
            timeout = self.config.limits.timeout
            found = await asyncio.gather(*(reachable(a, timeout) for a in self.uplink_targets))
            self.uplink = dict(zip(self.uplink_targets, found, strict=True))

        while True:
            now = time.monotonic()
            self.heartbeat = now
            if self.uplink_targets and uplink_due <= now:
                uplink_due = now + self.interval
                task = asyncio.create_task(check_uplink())
                running.add(task)
                task.add_done_callback(running.discard)
            for target in self.targets:
                if due[target.url] <= now:
                    due[target.url] = now + self.interval * rng.uniform(0.9, 1.1)
                    task = asyncio.create_task(one(target))
                    running.add(task)
                    task.add_done_callback(running.discard)
            await asyncio.sleep(0.25)


def make_app(sweeper: Sweeper, lookup: Callable[[str], Target]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=render(sweeper.latest.values(), sweeper.uplink),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def probe_now(request: web.Request) -> web.Response:
        wanted = request.query.get("target", "")
        module = request.query.get("module", "")
        try:
            target = lookup(wanted)
            modules = (
                tuple(Module(m) for m in module.split(",")) if module else sweeper.config.modules
            )
        except (ValueError, LookupError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        config = replace(sweeper.config, modules=modules)
        result = await probe(target, config)
        return web.Response(body=render([result]), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        stale = time.monotonic() - sweeper.heartbeat > 30
        return web.Response(status=503 if stale else 200, text="stalled\n" if stale else "ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe_now)
    app.router.add_get("/healthz", healthz)
    return app


class CannotListen(OpsError):
    """cannot listen on {}: {}"""


async def serve(
    sweeper: Sweeper,
    lookup: Callable[[str], Target],
    listen: str,
    on_listening: Callable[[], None] = lambda: None,
) -> None:
    """Serve /metrics, /probe and /healthz on ``listen`` ("host:port", "[::1]:port") and sweep
    until cancelled; ``on_listening`` is called once the socket is bound."""
    parsed = parse_host_port(listen)
    if parsed is None:
        raise BadInput(f"--listen {listen!r}: expected host:port, e.g. 127.0.0.1:9433")
    host, port = parsed
    runner = web.AppRunner(make_app(sweeper, lookup), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, unbracket(host) or "127.0.0.1", port)
        try:
            await site.start()
        except OSError as exc:
            raise CannotListen(listen, exc.strerror) from None
        on_listening()
        await sweeper.run()
    finally:
        await runner.cleanup()
