"""Sweeps and the Prometheus exporter (``ops monitor serve``).

Metric names are blackbox_exporter's where it has one, so existing blackbox dashboards and
alert rules keep working; the rest are ``portalops_*``. Every target's series carries
``portal``, ``unit_kind`` and ``domain``; the sweeper's own few (staleness, tasks) carry none.
``/metrics`` serves the latest result of every target, swept in the background: each target
on its own schedule (``monitor.interval``, with a random offset so that 170 portals are not
probed in the same second), at most ``monitor.concurrency`` at once and never two probes of
one target, so one slow portal never delays the others. ``/probe?target=…&module=…`` probes
one configured target now, under the same limit, and answers like blackbox_exporter's
multi-target endpoint; ``/healthz`` fails when the sweep is behind. Nothing here changes
state, so no endpoint needs a token; /probe refuses targets outside the configuration
(``monitor.probe_any``) so that it is no fetch-anything proxy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portalops.core.errors import BadInput, OpsError
from portalops.core.netaddr import parse_host_port, unbracket
from portalops.monitors.catalogue import EXPOSURE, HEADERS, Module
from portalops.monitors.probe import ProbeConfig, ProbeResult, Target, own_hosts, probe

log = logging.getLogger(__name__)
T = TypeVar("T")

LABELS = ("portal", "unit_kind", "domain")
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
TLS_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
# portalops_exposed_path{code}: one series per exposure code of the catalogue, 0 or 1
EXPOSURE_CODES = sorted(code.code for code in EXPOSURE.codes())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a dependency on Linux), else None (asyncio's).

    The prober is event-loop bound: its TLS and HTTP run in the loop's transports. uvloop's
    are C (libuv, Cython's SSL protocol) where asyncio's are pure Python, which takes about a
    fifth off the CPU of every probe (docs/benchmarks.md); everything works without it."""
    try:
        import uvloop  # noqa: PLC0415 - optional: asyncio's loop when it cannot be imported
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the prober's event loop (:func:`loop_factory`): every loop that
    sweeps or serves is made here, by ``ops monitor`` and bench/probe_vs_blackbox alike.
    (A Runner: ``asyncio.run`` takes a loop factory only from Python 3.12.)"""
    gc.freeze()  # start-up's objects (modules, configuration) out of every collection
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


async def sweep(
    targets: Sequence[Target],
    config: ProbeConfig,
    concurrency: int,
    done: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe every target once, at most ``concurrency`` at a time; results in target order.

    ``concurrency`` workers take the targets in turn: a task per probe in flight, not one
    per target waiting at a semaphore (10,000 of them cost memory and loop time)."""
    results: list[ProbeResult | None] = [None] * len(targets)
    queue = iter(enumerate(targets))

    async def worker() -> None:
        for i, target in queue:
            result = results[i] = await probe(target, config)
            if done is not None:
                done(result)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(max(concurrency, 1), len(targets))):
            group.create_task(worker())
    return [r for r in results if r is not None]


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
    ("last", "portalops_probe_last_run_timestamp_seconds",
     "Unix time the target's last probe finished: its newest result is this fresh (a running "
     "or skipped probe does not move it)", ()),
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
    g["last"].add_metric(labels, finished(r))


def finished(r: ProbeResult) -> float:
    """When the probe behind ``r`` ended (Unix time). Staleness is measured from here, not
    from the start: a probe that keeps its deadline then always has a result younger than
    2 x interval + deadline, however long it takes."""
    return r.started.timestamp() + r.duration


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
    def __init__(
        self,
        results: list[ProbeResult],
        uplink: Mapping[str, bool] | None,
        extra: Sequence[Metric] = (),
    ) -> None:
        self.results, self.uplink, self.extra = results, uplink, extra

    def collect(self) -> Iterator[Metric]:
        yield from families(self.results, self.uplink)
        yield from self.extra


def render(
    results: Iterable[ProbeResult],
    uplink: Mapping[str, bool] | None = None,
    extra: Sequence[Metric] = (),
) -> bytes:
    """The exposition text of ``results`` (one per target), the uplink checks and ``extra``
    families (the sweeper's own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Latest(list(results), dict(uplink) if uplink else None, extra))
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


#: Seconds between two turns of the sweep loop.
TICK = 0.25
#: Seconds without a turn of the sweep loop after which /healthz says it stalled.
STALLED_AFTER = 10.0
#: /probe requests that may wait on one target at once; more get 503. Per target, so that a
#: flood of requests for one (a silent portal holds each for its deadline) cannot lock /probe
#: for the others: Prometheus asks each target once per scrape, an HA pair twice.
MAX_WAITING_PER_TARGET = 8
#: /probe requests that may wait at once, all targets together (each holds a task, and with
#: monitor.probe_any each new URL a probe): a bound on memory, far above what the configured
#: targets need.
MAX_WAITING_PROBES = 256
#: Longest query string /probe reads (a target URL and a module list fit in far less).
MAX_QUERY = 2048


class NotConfigured(LookupError):
    """A /probe target that is neither a portal of the estate nor in ``monitor.urls``."""


class TooBusy(Exception):
    """Too many /probe requests are already waiting."""


class Sweeper:
    """Probes every target on its own jittered schedule; keeps the latest result of each.

    One gate (``concurrency``) for the sweep and /probe alike, and at most one probe of a
    target at a time: a target that falls due while its last probe still runs (or still waits
    at the gate) is skipped until its next turn and counted, so a slow portal costs one task,
    never a pile of them. A turn that falls due while a /probe with other modules runs is
    owed instead, and started the moment that probe ends (before any other /probe can take
    the target again): its result is not one the sweep can store, and /probe requests in a
    row would otherwise keep the target from ever being swept (stale, /healthz failing).
    A result is stale once older than ``stale_after`` (2 x interval + the probe deadline): a
    probe that keeps its deadline and its schedule is never that late, so a stale target
    means the sweep is behind (the gate starved, the loop stalled)."""

    def __init__(
        self,
        targets: Sequence[Target],
        config: ProbeConfig,
        interval: float,
        concurrency: int,
        uplink: Sequence[str] = (),
        deadline: float | None = None,
    ) -> None:
        unique: dict[str, Target] = {}
        for target in targets:
            unique.setdefault(target.url, target)
        self.targets, self.config = list(unique.values()), config
        self.urls = frozenset(unique)
        # the configured targets' hosts: the only ones /probe of another URL (probe_any) may
        # fetch exposure paths from or judge for defacement
        self.hosts = frozenset(host for t in self.targets for host in own_hosts(t))
        self.interval, self.concurrency = interval, concurrency
        self.deadline = config.deadline if deadline is None else deadline
        self.stale_after = 2 * interval + self.deadline
        self.uplink_targets = list(uplink)
        self.uplink: dict[str, bool] = {}
        self.latest: dict[str, ProbeResult] = {}
        self.gate = asyncio.Semaphore(concurrency)
        # url -> the running probe of that target and the modules it runs
        self.busy: dict[str, tuple[asyncio.Task[ProbeResult], tuple[Module, ...]]] = {}
        self.skipped: dict[str, int] = {}
        self.owed: set[str] = set()  # urls whose sweep turn waits for a /probe to end
        self.waiting: dict[str, int] = {}  # url -> /probe requests waiting on that target
        self.started = time.time()
        self.heartbeat = time.monotonic()

    def start(self, target: Target, config: ProbeConfig) -> asyncio.Task[ProbeResult]:
        """Start a probe of ``target``, which must not be busy (the caller checked, with no
        await in between)."""
        if target.url in self.busy:
            raise RuntimeError(f"a probe of {target.url} is already running")
        task = asyncio.create_task(self._probe(target, config), name=f"probe {target.url}")
        self.busy[target.url] = (task, config.modules)
        return task

    async def _probe(self, target: Target, config: ProbeConfig) -> ProbeResult:
        try:
            async with self.gate:
                result = await probe(target, config)
        finally:
            self.busy.pop(target.url, None)
        if config.modules == self.config.modules and target.url in self.urls:
            self.latest[target.url] = result
        elif target.url in self.owed:  # the sweep's turn this probe held up: now, no await
            self.owed.discard(target.url)
            self.start(target, self.config)
        return result

    async def probe_now(self, target: Target, modules: tuple[Module, ...]) -> ProbeResult:
        """A probe of ``target`` now (``/probe``), under the sweep's gate. If a probe of it is
        running with the same modules, its result is the answer (no second probe); with other
        modules, this one waits for it to end first. TooBusy when ``MAX_WAITING_PER_TARGET``
        requests already wait on this target, or ``MAX_WAITING_PROBES`` on all."""
        url = target.url
        here, everywhere = self.waiting.get(url, 0), sum(self.waiting.values())
        if here >= MAX_WAITING_PER_TARGET:
            raise TooBusy(f"{here} /probe requests are already waiting on {url[:200]!r}")
        if everywhere >= MAX_WAITING_PROBES:
            raise TooBusy(f"{everywhere} /probe requests are already waiting")
        self.waiting[url] = here + 1
        try:
            for _ in range(3):
                current = self.busy.get(target.url)
                if current is None:
                    config = replace(self.config, modules=modules)
                    if url not in self.urls:  # an ad-hoc URL (monitor.probe_any)
                        config = replace(config, estate_hosts=self.hosts)
                    return await asyncio.shield(self.start(target, config))
                task, running = current
                if running == modules:
                    return await asyncio.shield(task)
                await asyncio.wait({task})
            raise TooBusy(f"{url[:200]!r} stayed busy with other probes")
        finally:
            self.waiting[url] -= 1
            if not self.waiting[url]:
                del self.waiting[url]

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since each target's last probe finished (since the sweeper started for a
        target without a result), by URL."""
        return {
            t.url: now - (finished(r) if (r := self.latest.get(t.url)) else self.started)
            for t in self.targets
        }

    def behind(self) -> str | None:
        """Why the sweep is behind (for /healthz), or None while it keeps up."""
        stalled = time.monotonic() - self.heartbeat
        if stalled > STALLED_AFTER:
            return f"stalled: the sweep loop last turned {stalled:.0f} s ago"
        stale = {url: age for url, age in self.ages(time.time()).items() if age > self.stale_after}
        if not stale:
            return None
        oldest = max(stale, key=stale.__getitem__)
        return (
            f"behind: {len(stale)} of {len(self.targets)} targets have no result newer than "
            f"{self.stale_after:.0f} s (oldest: {oldest}, {stale[oldest]:.0f} s)"
        )

    def families(self) -> list[Metric]:
        """The sweeper's own metric families (see docs/monitoring.md, "Staleness")."""
        labels = list(LABELS)
        skipped = CounterMetricFamily(
            "portalops_probe_skipped",
            "Probes of the target not started because its previous probe was still running",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "portalops_probe_running",
            "1 while a probe of the target runs or waits for a free slot (never two at once)",
            labels=labels,
        )
        for t in self.targets:
            values = [t.portal, t.unit_kind, t.domain]
            skipped.add_metric(values, float(self.skipped.get(t.url, 0)))
            running.add_metric(values, float(t.url in self.busy))
        ages = self.ages(time.time())
        oldest = max(ages.values(), default=0.0)
        stale = sum(1 for age in ages.values() if age > self.stale_after)
        single = (
            ("portalops_probe_oldest_result_age_seconds",
             "Age of the oldest last result among the configured targets, since its probe "
             "finished (a target not probed yet counts from the exporter's start)", oldest),
            ("portalops_probe_stale_targets",
             "Configured targets whose last result is older than "
             "portalops_probe_stale_after_seconds", float(stale)),
            ("portalops_probe_stale_after_seconds",
             "Result age beyond which a target is stale and /healthz fails: "
             "2 x monitor.interval + the probe deadline", self.stale_after),
            ("portalops_exporter_tasks",
             "Live asyncio tasks in the exporter (bounded by the targets plus a few)",
             float(len(asyncio.all_tasks()))),
        )  # fmt: skip
        return [skipped, running] + [GaugeMetricFamily(n, h, value=v) for n, h, v in single]

    async def run(self) -> None:
        rng = random.Random()  # noqa: S311 - schedule jitter, not a secret
        due = {
            t.url: time.monotonic() + rng.uniform(0, min(self.interval, 10.0)) for t in self.targets
        }
        uplink_task: asyncio.Task[None] | None = None
        uplink_due = time.monotonic()

        async def check_uplink() -> None:
            timeout = self.config.limits.timeout
            found = await asyncio.gather(*(reachable(a, timeout) for a in self.uplink_targets))
            self.uplink = dict(zip(self.uplink_targets, found, strict=True))

        while True:
            now = time.monotonic()
            self.heartbeat = now
            if self.uplink_targets and uplink_due <= now:
                uplink_due = now + self.interval
                if uplink_task is None or uplink_task.done():
                    uplink_task = asyncio.create_task(check_uplink())
            for target in self.targets:
                if due[target.url] > now:
                    continue
                due[target.url] = now + self.interval * rng.uniform(0.9, 1.1)
                current = self.busy.get(target.url)
                if current is not None and current[1] != self.config.modules:
                    self.owed.add(target.url)  # a /probe of other modules: after it
                elif current is not None:
                    self.skipped[target.url] = self.skipped.get(target.url, 0) + 1
                    log.debug("%r: last probe still running, skipped", target.url)
                else:
                    self.start(target, self.config)
            await asyncio.sleep(TICK)


def parse_modules(text: str) -> tuple[Module, ...]:
    """``http,tls`` -> the modules, in catalogue order (empty entries, as in ``http,,tls`` or a
    trailing comma, are ignored); ValueError names an unknown one, or says none was named."""
    wanted = {item.strip() for item in text.split(",")} - {""}
    if not wanted:
        raise ValueError(f"no module named in {text[:40]!r}")
    known = {m.value: m for m in Module}
    unknown = sorted(w for w in wanted if w not in known)
    if unknown:
        raise ValueError(f"unknown module {unknown[0][:40]!r}; known: {', '.join(sorted(known))}")
    return tuple(m for m in Module if m.value in wanted)


def make_app(sweeper: Sweeper, lookup: Callable[[str], Target]) -> web.Application:
    """The exporter's endpoints. ``lookup`` turns a /probe ``target=`` into a Target: raises
    NotConfigured (403) for one the exporter may not probe, LookupError (400) for nonsense.
    Nothing here awaits anything but the probe itself: /metrics and /healthz read memory."""

    # rendering 170 targets takes ~70 ms of pure Python: done in a thread, from a snapshot
    # (results are replaced, never changed, once stored), so /healthz and the sweep go on. A
    # thread of its own: in the loop's default executor a render could queue behind work
    # stuck elsewhere (name lookups of a dead resolver) past Prometheus's scrape timeout.
    renderer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics-render")

    async def metrics(_: web.Request) -> web.Response:
        results, uplink = list(sweeper.latest.values()), dict(sweeper.uplink)
        job = functools.partial(render, results, uplink, sweeper.families())
        body = await asyncio.get_running_loop().run_in_executor(renderer, job)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop_renderer(_: web.Application) -> None:
        renderer.shutdown(wait=False)

    async def probe_now(request: web.Request) -> web.Response:
        if len(request.query_string) > MAX_QUERY:
            return web.Response(status=414, text=f"query longer than {MAX_QUERY} bytes\n")
        wanted = request.query.get("target", "")
        module = request.query.get("module", "")
        try:
            modules = parse_modules(module) if module else sweeper.config.modules
            target = lookup(wanted)
        except NotConfigured as exc:
            return web.Response(status=403, text=f"{exc}\n")
        except (ValueError, LookupError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        try:
            result = await sweeper.probe_now(target, modules)
        except TooBusy as exc:
            return web.Response(status=503, text=f"busy: {exc}\n")
        return web.Response(body=render([result]), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        reason = sweeper.behind()
        return web.Response(status=503 if reason else 200, text=f"{reason or 'ok'}\n")

    app = web.Application()
    app.on_cleanup.append(stop_renderer)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe_now)
    app.router.add_get("/healthz", healthz)
    return app


def beyond_loopback(host: str) -> bool:
    """Whether listening on ``host`` (an address or a name; "" is 127.0.0.1 here) may expose
    the exporter to other machines: anything but a loopback address or ``localhost``."""
    host = unbracket(host)
    if not host or host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it may resolve to anything


class CannotListen(OpsError):
    """cannot listen on {}: {}"""


async def serve(
    sweeper: Sweeper,
    lookup: Callable[[str], Target],
    listen: str,
    on_listening: Callable[[], None] = lambda: None,
    probe_any: bool = False,
) -> None:
    """Serve /metrics, /probe and /healthz on ``listen`` ("host:port", "[::1]:port") and sweep
    until cancelled; ``on_listening`` is called once the socket is bound. Listening beyond
    loopback is logged as a warning naming what is exposed (``probe_any``: /probe fetches any
    URL)."""
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
        if beyond_loopback(host):
            log.warning(
                "listening on %s, beyond loopback: every host that reaches it can read "
                "/metrics (every target's results) and make this host probe %s through /probe",
                listen,
                "ANY URL (monitor.probe_any is true)"
                if probe_any
                else "the configured targets (the estate and monitor.urls)",
            )
        on_listening()
        await sweeper.run()
    finally:
        await runner.cleanup()
