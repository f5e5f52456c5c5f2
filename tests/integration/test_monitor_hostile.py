"""The prober against portals that turned hostile, served by a real nginx (and the hostile
servers for what nginx will not do): every probe ends within its deadline or analysis budget
with the right finding, the event loop never stalls, and a healthy portal probed alongside is
judged as if nothing happened.

The attacks are the ones that froze the prober before the analysis was made linear and moved
to worker processes: a 20 KB page of one word common in the baseline ("và và và…", minutes in
a sequence diff), bodies crafted against the exposure matchers on every exposure path (IIS
listing titles, phpinfo tags, stub_status blank runs: up to a minute per probe), an endless
redirect chain, a redirect to a server that trickles a byte a second, and a page so large
that judging it overruns a tight budget. Each probe runs in this process on one event loop,
as the exporter's do, with a heartbeat task measuring the loop's longest stall.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from portalops.monitors import exposure
from portalops.monitors.analysis import AnalysisPool
from portalops.monitors.baseline import save_baselines
from portalops.monitors.catalogue import Module
from portalops.monitors.defacement import Baseline
from portalops.monitors.fetch import Limits, Resolver
from portalops.monitors.probe import ProbeConfig, ProbeResult, Target, probe
from tests.fixtures.hostile import HostileServers, running_hostile
from tests.fixtures.nginx import NGINX_PACKAGE, temp_paths
from tests.fixtures.paths import PROJECT
from tests.fixtures.pki import ThrowawayPKI
from tests.fixtures.portal_sites import home_html
from tests.fixtures.procs import (
    LOOPBACK,
    free_port,
    require_binary,
    run,
    start_process,
    stop_process,
    temp_dir,
    wait_until,
)

pytestmark = pytest.mark.integration

ZONE = "hostile.test"
TIMEOUT = 5.0  # per request
DEADLINE = 3.5  # per probe: a healthy probe may wait for a worker (two, starting up) on a busy host
BUDGET = 2.0  # analysis, per probe
MODULES = (Module.HTTP, Module.HEADERS, Module.EXPOSURE, Module.DEFACEMENT, Module.EXPECT)

# Each body made a backtracking matcher quadratic; served on every path but "/".
CRAFTED = {
    "iis": ("<title>" + " - /" * 20_000)[: exposure.READ_LIMIT - 8] + "</title>",
    "php": ("PHP Version</" * 6000)[: exposure.READ_LIMIT],
    "stub": "Active connections: 1" + "\n" * (exposure.READ_LIMIT - 40) + "x",
}
REPEATED = "<html><body><p>" + "và " * 7000 + "</p></body></html>"  # 21 KB of one word
HEAVY_PAGE = "<html><body>" + "<p>và <b>các</b> xã</p>" * 90_000 + "</body></html>"  # ~2 MB


@dataclass(frozen=True)
class Estate:
    port: int
    access_log: Path
    hostile: HostileServers

    def host(self, name: str) -> str:
        return f"{name}.{ZONE}"

    def target(self, name: str) -> Target:
        host = self.host(name)
        return Target(name, "url", host, f"http://{host}:{self.port}/")

    def pins(self) -> list[str]:
        names = ("healthy", "repeat", "iis", "php", "stub", "endless", "slow", "away", "other")
        return [f"{self.host(n)}:{self.port}:{LOOPBACK}" for n in (*names, "heavy")] + [
            *self.hostile.resolve_pins()
        ]

    def requests_to(self, name: str) -> int:
        """Requests nginx logged for a host (its access log line starts with the host)."""
        lines = self.access_log.read_text(encoding="utf-8").splitlines()
        return sum(line.startswith(self.host(name) + " ") for line in lines)


def _server(name: str, port: int, root: Path, body: str) -> str:
    return textwrap.dedent(f"""\
        server {{
            listen {LOOPBACK}:{port};
            server_name {name}.{ZONE};
            root {root / name};
            {body}
        }}
        """)


@pytest.fixture(scope="module")
def estate(pki: ThrowawayPKI) -> Iterator[Estate]:
    nginx = require_binary("nginx", NGINX_PACKAGE)
    with temp_dir("hostile-sites") as root, running_hostile(pki) as hostile:
        os.chmod(root, 0o755)  # noqa: S103 (workers run as nobody and must read the webroot)
        (root / "temp").mkdir()
        port = free_port()
        pages = {
            "healthy": home_html(f"healthy.{ZONE}"),
            "repeat": REPEATED,
            "heavy": HEAVY_PAGE,
            "other": home_html(f"other.{ZONE}"),
            **{name: home_html(f"{name}.{ZONE}") for name in CRAFTED},
        }
        for name, page in pages.items():
            (root / name).mkdir()
            (root / name / "index.html").write_text(page, encoding="utf-8")
        for name, body in CRAFTED.items():
            (root / name / "crafted.html").write_text(body, encoding="utf-8")
        (root / "other" / ".git").mkdir()
        (root / "other" / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
        for path in (root, *root.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        static = "index index.html;"
        trickle = hostile.url("trickle")
        crafted = "location = / { index index.html; }\nlocation / { try_files /crafted.html =404; }"
        away = f"location / {{ return 302 http://other.{ZONE}:{port}/; }}"
        servers = [
            *(_server(n, port, root, static) for n in ("healthy", "repeat", "heavy", "other")),
            *(_server(n, port, root, crafted) for n in CRAFTED),
            _server("endless", port, root, r"location ~ ^/r?(?<n>\d*)$ { return 302 /r${n}1; }"),
            _server("slow", port, root, f"location / {{ return 302 {trickle}; }}"),
            _server("away", port, root, away),
        ]
        conf = root / "nginx.conf"
        conf.write_text(
            f"""\
worker_processes 1;
pid {root}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    types {{ text/html html; }}
    default_type text/plain;
    charset utf-8;
    log_format byhost '$host $status $request_uri';
    access_log {root}/access.log byhost;
    {temp_paths(root)}
    server {{
        listen {LOOPBACK}:{port} default_server;
        location = /__ready {{ return 200 "ready"; }}
        location / {{ return 404; }}
    }}
{textwrap.indent("".join(servers), "    ")}
}}
""",
            encoding="utf-8",
        )
        argv = [nginx, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
        run([*argv, "-t", "-q"], what="nginx -t of the hostile sites")
        proc = start_process([*argv, "-g", "daemon off;"], root / "nginx.out")
        try:
            wait_until(
                lambda: _ready(port),
                timeout=10,
                what="nginx serves the hostile sites",
                log=root / "error.log",
                proc=proc,
            )
            yield Estate(port, root / "access.log", hostile)
        finally:
            stop_process(proc)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/__ready", timeout=2) as answer:
            return bool(answer.read() == b"ready")
    except OSError:
        return False


@dataclass
class Sweep:
    results: dict[str, ProbeResult]
    seconds: dict[str, float]  # each probe's own wall time
    wall: float
    max_stall: float  # the loop thread's most CPU time between two 10 ms heartbeats
    killed: int  # workers killed for overrunning their budget


async def _sweep(
    target: Callable[[str], Target], names: Sequence[str], config: ProbeConfig
) -> Sweep:
    """Probe ``names`` at once (``target`` maps a name to its Target), timing each probe and
    the event loop's longest stall."""
    stop = asyncio.Event()
    gaps = [0.0]

    async def heartbeat() -> None:
        # CPU time of this thread between two beats: the loop busy with our own work. Wall
        # time alone would also count a loaded host not scheduling this process at all.
        last = time.thread_time()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    async def one(name: str) -> tuple[str, ProbeResult, float]:
        started = time.monotonic()
        result = await probe(target(name), config)
        return name, result, time.monotonic() - started

    beat = asyncio.create_task(heartbeat())
    started = time.monotonic()
    done = await asyncio.gather(*(one(n) for n in names))
    wall = time.monotonic() - started
    stop.set()
    await beat
    killed = config.pool.killed if config.pool is not None else 0
    return Sweep({n: r for n, r, _ in done}, {n: s for n, _, s in done}, wall, max(gaps), killed)


def _config(estate: Estate, pool: AnalysisPool, **changes: object) -> ProbeConfig:
    baseline_page = home_html(f"repeat.{ZONE}")  # the portal as it was: "và" is common in it
    taken = "2026-12-01T06:00:00+07:00"
    baselines = {
        estate.host(n): Baseline.take(estate.target(n).url, home_html(estate.host(n)), taken)
        for n in ("healthy", "other", *CRAFTED)
    }
    baselines[estate.host("repeat")] = Baseline.take("http://repeat/", baseline_page, taken)
    config = ProbeConfig(
        resolver=Resolver(estate.pins(), timeout=TIMEOUT),
        limits=Limits(timeout=TIMEOUT),
        modules=MODULES,
        baselines=baselines,
        deadline=DEADLINE,
        analysis_budget=BUDGET,
        pool=pool,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sweep(estate: Estate) -> Iterator[Sweep]:
    """Every hostile portal and the healthy one, probed at once on one loop."""
    pool = AnalysisPool(2)
    try:
        asyncio.run(pool.warm())  # a running exporter's workers are up; start-up is not timed
        names = ["healthy", "repeat", *CRAFTED, "endless", "slow", "away"]
        yield asyncio.run(_sweep(estate.target, names, _config(estate, pool)))
    finally:
        pool.close()


def codes(result: ProbeResult) -> set[str]:
    return {f.code for f in result.findings}


def test_the_event_loop_never_stalls_and_the_sweep_keeps_its_deadline(sweep: Sweep) -> None:
    assert sweep.max_stall < 0.3, sweep.max_stall
    assert sweep.wall < DEADLINE + 1.5, sweep.seconds
    assert all(s < DEADLINE + 0.5 for s in sweep.seconds.values()), sweep.seconds
    assert sweep.killed == 0  # linear analysis: nothing here needs the budget


def test_the_healthy_portal_is_judged_as_if_alone(sweep: Sweep) -> None:
    healthy = sweep.results["healthy"]
    assert healthy.success, healthy.findings
    assert healthy.status_code == 200
    assert healthy.exposure_checked
    assert healthy.exposed == []
    assert healthy.defacement_suspected is False
    assert healthy.grade is not None
    assert not codes(healthy) & {"probe.deadline", "probe.analysis_timeout", "probe.error"}
    assert sweep.seconds["healthy"] < DEADLINE  # waits for a worker: at most 2 for 7 jobs


def test_a_page_of_one_repeated_word_is_reported_as_drift_in_time(sweep: Sweep) -> None:
    repeat = sweep.results["repeat"]
    assert repeat.success
    assert "defacement.drift" in codes(repeat)
    assert repeat.defacement_suspected is True
    assert sweep.seconds["repeat"] < DEADLINE


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_exposure_bodies_on_every_path_are_judged_in_time(
    sweep: Sweep, estate: Estate, name: str
) -> None:
    result = sweep.results[name]
    assert result.success
    assert result.exposure_checked
    assert result.exposed == []  # the crafted body proves nothing
    assert not codes(result) & {"probe.deadline", "probe.analysis_timeout", "probe.error"}
    assert sweep.seconds[name] < DEADLINE
    # the body really was served on every exposure path
    assert estate.requests_to(name) >= len(exposure.paths(estate.host(name)))


def test_an_endless_redirect_chain_stops_at_the_limit(sweep: Sweep) -> None:
    endless = sweep.results["endless"]
    assert not endless.success
    assert "http.redirect_loop" in codes(endless)


def test_a_redirect_to_a_trickling_server_ends_at_the_deadline(sweep: Sweep) -> None:
    slow = sweep.results["slow"]
    assert not slow.success
    assert "probe.deadline" in codes(slow)
    assert DEADLINE <= sweep.seconds["slow"] < DEADLINE + 0.5
    deadline = next(f for f in slow.findings if f.code == "probe.deadline")
    assert deadline.severity.value == "critical"  # before the HTTP answer: the portal is down
    assert slow.phases  # what it learned (the first hop) is kept


def test_a_redirect_to_another_host_is_not_probed_for_exposure(
    sweep: Sweep, estate: Estate
) -> None:
    away = sweep.results["away"]
    assert away.success
    assert away.final_url.startswith(f"http://other.{ZONE}:")
    assert "http.foreign_origin" in codes(away)
    assert not away.exposure_checked
    assert away.defacement_suspected is None
    assert estate.requests_to("other") == 1  # the home page, no exposure path


def test_an_analysis_past_its_budget_kills_the_worker_and_is_a_finding(estate: Estate) -> None:
    pool = AnalysisPool(1)
    try:
        asyncio.run(pool.warm())
        config = _config(estate, pool, analysis_budget=0.05, deadline=10.0)
        first = asyncio.run(_sweep(estate.target, ["heavy"], config))
        # the same pool, a worker started afresh, a sane budget: the healthy portal is fine
        sane = replace(config, analysis_budget=BUDGET)
        second = asyncio.run(_sweep(estate.target, ["healthy"], sane))
    finally:
        pool.close()
    heavy = first.results["heavy"]
    assert heavy.success
    assert "probe.analysis_timeout" in codes(heavy)
    assert first.killed == 1
    assert first.seconds["heavy"] < 1.5
    assert first.max_stall < 0.3
    healthy = second.results["healthy"]
    assert healthy.success
    assert healthy.exposure_checked
    assert "probe.analysis_timeout" not in codes(healthy)


def _get(url: str) -> tuple[int, str, float]:
    """Status, body and seconds of a GET to the exporter; a 503 is an answer too."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - 127.0.0.1 only
            status, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    return status, body, time.monotonic() - started


def test_serve_stays_responsive_and_fresh_with_hostile_portals_in_the_sweep(
    estate: Estate, tmp_path: Path
) -> None:
    """The issue's bar, on a real ``ops monitor serve``: with the hostile portals in every
    sweep, /metrics and /healthz answer in under a second throughout, /healthz stays 200,
    and each healthy portal's newest result is at most one interval old."""
    interval, healthy = 5, ("healthy", "other")
    names = [*healthy, "repeat", *CRAFTED, "endless", "slow", "away"]
    state = tmp_path / "state"
    repeat_baseline = Baseline.take(
        estate.target("repeat").url, home_html(estate.host("repeat")), "2026-12-01T06:00:00+07:00"
    )
    save_baselines(state, {estate.host("repeat"): repeat_baseline})
    config = tmp_path / "ops.yaml"
    port = free_port()
    monitor = {
        "resolve": estate.pins(),
        "estate": False,
        "urls": [estate.target(n).url for n in names],
        "interval": interval,
        "timeout": TIMEOUT,
        "deadline": DEADLINE,
        "analysis_budget": BUDGET,
        "modules": [m.value for m in MODULES],
        "listen": f"{LOOPBACK}:{port}",
    }
    config.write_text(yaml.safe_dump({"state_dir": str(state), "monitor": monitor}))
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(PROJECT / "ops.py"), "--config", str(config), "monitor", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    base = f"http://{LOOPBACK}:{port}"
    slowest, ages, statuses = 0.0, [0.0], set()
    try:
        wait_until(lambda: _up(base), timeout=30, what="ops monitor serve answers")
        fresh_from = time.monotonic() + interval + DEADLINE  # the first sweep is done by then
        end = fresh_from + interval + 1  # one more sweep, watched throughout
        while time.monotonic() < end:
            status, text, seconds = _get(f"{base}/metrics")
            health, _, health_seconds = _get(f"{base}/healthz")
            slowest = max(slowest, seconds, health_seconds)
            statuses.add((status, health))
            if time.monotonic() >= fresh_from:
                last = {
                    s.labels["domain"]: s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name == "portalops_probe_last_run_timestamp_seconds"
                }
                ages += [time.time() - last[estate.host(n)] for n in healthy]
            time.sleep(0.2)
        _, text, _ = _get(f"{base}/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert slowest < 1.0, slowest
    assert statuses == {(200, 200)}
    assert len(ages) > 10
    assert max(ages) <= interval + 1.0, max(ages)
    repeat = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("domain") == estate.host("repeat")
    }
    assert repeat["portalops_defacement_suspected"] == 1
    errors = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in errors, errors[-4000:]


def _up(base: str) -> bool:
    try:
        return _get(f"{base}/metrics")[0] == 200
    except OSError:
        return False


# -- portals that answer with what a real server would not send ---------------------------------
#
# A raw server on loopback answers by the Host header's first label; nginx will not send a
# 1xx flood, a ``charset=punycode`` page or a UTF-8 Location. Each probe runs on one loop with
# the heartbeat, all at once; the server records the paths it was asked for.

RAW_ZONE = "raw.test"
RAW_PAGE = b"<html><head><title>t</title></head><body>ok raw-marker</body></html>"
SLOTH_SECONDS = 2.0  # how long "sloth" takes over any path but its home page
PUNY_BODY = b"z9" * 300_000  # 600 KB: decoding it as punycode took 14 s on the loop


def _raw(status: bytes = b"200 OK", headers: tuple[bytes, ...] = (), body: bytes = b"") -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    length = b"Content-Length: %d\r\n" % len(body)
    return b"HTTP/1.1 " + status + b"\r\n" + head + length + b"Connection: close\r\n\r\n" + body


def _gzip_twice(data: bytes) -> bytes:
    return gzip.compress(gzip.compress(data))


def _raw_deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(wbits=-15)
    return squeeze.compress(data) + squeeze.flush()


def _raw_answer(name: str, path: str, port: int) -> bytes:
    html = (b"Content-Type: text/html; charset=utf-8",)
    if path != "/":  # every hop a redirect leads to ends here, on its own host
        return _raw(headers=html, body=RAW_PAGE)
    redirects = {
        "viet": "/tin-tức/".encode(),
        "space": b"/a b",
        "idn": "http://bücher..raw.test/".encode(),
        "longlabel": b"http://" + b"x" * 70 + b".raw.test/",
        "badport": b"http://badport.raw.test:99999/",
        "ssrf": b"http://127.0.0.1:%d/admin/delete?all=1" % port,
        "rebind": b"http://localhost:%d/admin/rebind" % port,  # a foreign name, on loopback
        "pinned": b"http://friend.raw.test:%d/welcome" % port,  # pinned: the estate's own
    }
    if name in redirects:
        return _raw(b"302 Found", (b"Location: " + redirects[name],))
    if name in ("bogus", "idnacs", "puny"):
        charset = {"bogus": b"x-bogus", "idnacs": b"idna", "puny": b"punycode"}[name]
        body = PUNY_BODY if name == "puny" else RAW_PAGE
        return _raw(headers=(b"Content-Type: text/html; charset=" + charset,), body=body)
    if name == "gzip2":
        encoded = (b"Content-Encoding: gzip, gzip", *html)
        return _raw(headers=encoded, body=_gzip_twice(RAW_PAGE))
    if name == "deflate":
        return _raw(headers=(b"Content-Encoding: deflate", *html), body=_raw_deflate(RAW_PAGE))
    if name == "info":
        return b"HTTP/1.1 102 Processing\r\n\r\n" * 50_000 + _raw(headers=html, body=RAW_PAGE)
    if name == "headers":  # ~66 KiB of header lines, all arriving at once
        cookies = tuple(b"Set-Cookie: c%04d=%s; Path=/" % (i, b"v" * 40) for i in range(1300))
        return _raw(headers=(*html, *cookies), body=RAW_PAGE)
    return _raw(headers=html, body=RAW_PAGE)


@dataclass
class RawPortals:
    port: int
    paths: list[tuple[str, str]]  # (host's first label, request target) in arrival order
    handling: int = 0  # connections being answered

    def target(self, name: str) -> Target:
        return Target(name, "url", f"{name}.{RAW_ZONE}", f"http://{name}.{RAW_ZONE}:{self.port}/")

    def asked(self, path_prefix: str) -> list[tuple[str, str]]:
        return [p for p in self.paths if p[1].startswith(path_prefix)]


@pytest.fixture(scope="module")
def raw_portals() -> Iterator[RawPortals]:
    loop = asyncio.new_event_loop()
    portals = RawPortals(0, [])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        portals.handling += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            host = next(v for k, _, v in (x.partition(":") for x in lines) if k.lower() == "host")
            name, path = host.strip().split(".")[0], lines[0].split(" ")[1]
            portals.paths.append((name, path))
            if name == "sloth" and path != "/":  # a home page at once, the rest never in time
                # until the prober hangs up (its deadline)
                await asyncio.wait_for(reader.read(1), SLOTH_SECONDS)
            writer.write(_raw_answer(name, path, portals.port))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, StopIteration):
            pass
        finally:
            writer.close()
            portals.handling -= 1

    server = loop.run_until_complete(asyncio.start_server(handle, LOOPBACK, 0))
    portals.port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, name="raw-portals", daemon=True)
    thread.start()
    try:
        yield portals
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


RAW_NAMES = (
    "puny",
    "bogus",
    "idnacs",
    "viet",
    "space",
    "idn",
    "longlabel",
    "badport",
    "ssrf",
    "rebind",
    "pinned",
    "gzip2",
    "deflate",
    "info",
    "headers",
    "multi",
)


@pytest.fixture(scope="module")
def raw_sweep(raw_portals: RawPortals) -> Sweep:
    """Every raw portal probed at once on one loop (http only: no analysis worker)."""
    port = raw_portals.port
    pins = [f"{n}.{RAW_ZONE}:{port}:{LOOPBACK}" for n in RAW_NAMES if n != "multi"]
    # two addresses, the first refusing: the second must be tried
    pins += [f"multi.{RAW_ZONE}:{port}:127.0.0.2", f"multi.{RAW_ZONE}:{port}:{LOOPBACK}"]
    pins += [f"friend.{RAW_ZONE}:{port}:{LOOPBACK}", f"badport.{RAW_ZONE}:99999:{LOOPBACK}"]
    config = ProbeConfig(
        resolver=Resolver(pins, timeout=TIMEOUT),
        limits=Limits(timeout=TIMEOUT),
        modules=(Module.HTTP,),
        deadline=DEADLINE,
    )
    return asyncio.run(_sweep(raw_portals.target, RAW_NAMES, config))


def test_raw_portals_never_crash_the_prober_nor_stall_its_loop(raw_sweep: Sweep) -> None:
    for name, result in raw_sweep.results.items():
        assert "probe.error" not in codes(result), (name, result.findings)
        assert "probe.deadline" not in codes(result), (name, result.findings)
    assert raw_sweep.max_stall < 0.3, raw_sweep.max_stall
    assert raw_sweep.wall < DEADLINE, raw_sweep.seconds


@pytest.mark.parametrize("name", ["puny", "bogus", "idnacs"])
def test_a_charset_the_portal_chooses_never_runs_an_expensive_codec(
    raw_sweep: Sweep, name: str
) -> None:
    result = raw_sweep.results[name]
    assert result.success
    assert "http.not_utf8" in codes(result)
    assert raw_sweep.seconds[name] < 1.0, raw_sweep.seconds  # punycode: 14 s before
    if name == "puny":
        assert result.home_html == PUNY_BODY.decode()  # decoded as UTF-8, not as punycode


@pytest.mark.parametrize(("name", "path"), [("viet", "/tin-t%E1%BB%A9c/"), ("space", "/a%20b")])
def test_a_location_is_percent_encoded_as_a_browser_sends_it(
    raw_sweep: Sweep, raw_portals: RawPortals, name: str, path: str
) -> None:
    result = raw_sweep.results[name]
    assert result.success, result.findings
    assert result.final_url.endswith(path)
    assert (name, path) in raw_portals.paths


@pytest.mark.parametrize("name", ["idn", "longlabel", "badport"])
def test_a_location_that_cannot_be_requested_is_the_portal_down(
    raw_sweep: Sweep, name: str
) -> None:
    result = raw_sweep.results[name]
    assert not result.success
    assert "http.down" in codes(result), result.findings
    assert result.status_code == 302


@pytest.mark.parametrize("name", ["ssrf", "rebind"])
def test_a_redirect_into_the_monitoring_host_is_blocked_before_any_request(
    raw_sweep: Sweep, raw_portals: RawPortals, name: str
) -> None:
    """A literal loopback address, and a foreign name (``localhost``) that resolves to one."""
    result = raw_sweep.results[name]
    assert not result.success
    assert "http.redirect_blocked" in codes(result), result.findings
    assert raw_portals.asked("/admin") == []


def test_a_redirect_to_a_pinned_host_on_loopback_is_followed(raw_sweep: Sweep) -> None:
    result = raw_sweep.results["pinned"]
    assert result.success, result.findings
    assert result.final_url.endswith("/welcome")


@pytest.mark.parametrize("name", ["gzip2", "deflate"])
def test_stacked_and_raw_deflate_codings_are_inflated(raw_sweep: Sweep, name: str) -> None:
    result = raw_sweep.results[name]
    assert result.success
    assert "raw-marker" in result.home_html


def test_a_flood_of_interim_answers_is_the_portal_down(raw_sweep: Sweep) -> None:
    result = raw_sweep.results["info"]
    assert "http.down" in codes(result)
    assert "1xx" in result.findings[0].message


def test_headers_past_64_kib_are_refused_even_when_they_arrive_at_once(raw_sweep: Sweep) -> None:
    result = raw_sweep.results["headers"]
    assert "http.down" in codes(result)
    assert "64 KiB" in result.findings[0].message


def test_a_dead_first_address_falls_back_to_the_next(raw_sweep: Sweep) -> None:
    result = raw_sweep.results["multi"]
    assert result.success, result.findings


def test_a_portal_that_answered_stays_up_when_later_steps_hit_the_deadline(
    raw_portals: RawPortals,
) -> None:
    """The home page answers at once, every exposure path only after the deadline: the probe
    is a success with a warning naming the step cut short (it was PortalDown before)."""
    pins = [f"sloth.{RAW_ZONE}:{raw_portals.port}:{LOOPBACK}"]
    config = ProbeConfig(
        resolver=Resolver(pins, timeout=TIMEOUT),
        limits=Limits(timeout=TIMEOUT),
        modules=(Module.HTTP, Module.EXPOSURE),
        deadline=SLOTH_SECONDS / 2,
    )
    sloth = asyncio.run(probe(raw_portals.target("sloth"), config))
    # the server sees the hang-ups (nothing left running when its loop stops)
    wait_until(lambda: raw_portals.handling == 0, SLOTH_SECONDS * 2, "the sloth hang-ups")
    assert sloth.success, sloth.findings
    assert sloth.status_code == 200
    deadline = next(f for f in sloth.findings if f.code == "probe.deadline")
    assert deadline.severity.value == "warning"
    assert "exposure paths" in deadline.message
    assert not sloth.exposure_checked
