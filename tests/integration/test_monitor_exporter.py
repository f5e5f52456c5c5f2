"""``ops monitor serve`` run as a real process against a real nginx: /probe answers only for
configured targets (unless ``monitor.probe_any``), a flood of /probe on one target does not
lock out another, a sweep that falls behind fails /healthz and recovers, one target is never
probed twice at once, and a portal's text never reaches rich as markup nor the terminal as
control sequences.

The nginx here is the test's own (module scope): plain-HTTP sites told apart by name, reached
through ``monitor.resolve`` pins, and an access log with each request's end time and duration
(``$msec $request_time``), so that what the exporter fetched, and when, is read from the
portal's side. ``trickle`` sites send their answer at one byte a second while the switch is on
(``limit_rate 1``): a portal that holds every probe until its timeout. Two more portals are
raw: ``escapes`` answers a status line whose reason is terminal control sequences, and
``silent`` accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from portalops.monitors.catalogue import Module
from portalops.monitors.exporter import MAX_WAITING_PER_TARGET, Sweeper, make_app
from portalops.monitors.fetch import Resolver
from portalops.monitors.probe import ProbeConfig, Target
from tests.fixtures.monitoring_stack import ops_monitor_serve
from tests.fixtures.nginx import NGINX_PACKAGE, temp_paths
from tests.fixtures.paths import PROJECT
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

ZONE = "exporter.test"
TRICKLING = [f"sw{i}" for i in range(12)]
STATIC = ["fast", "other"]
#: A trickling site no exporter probes: the test asks it whether the switch took effect.
CANARY = "canary"
#: The status line the ``markup`` site's upstream sends (nginx passes its reason on).
MARKUP_REASON = "[/bold]"
MARKUP_BODY = b"<p>[bold red]b\xe1\xba\xa3o tr\xc3\xac[/] [link=http://x]x[/link]</p>"
#: The ``escapes`` portal's reason phrase: clear screen, red, a window title (OSC ... BEL) and
#: a C1 CSI (0x9b, read as latin-1).
ESCAPES_REASON = "\x1b[2J\x1b[31mPWNED\x1b]0;title\x07 \x9b31m"

_CONF = """\
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 512; }}
http {{
    default_type text/html;
    charset utf-8;
    log_format timed '$msec $request_time $host "$request" $status';
    access_log {root}/access.log timed;
    {temp_paths}
    server {{
        listen {host}:{port} default_server;
        server_name _;
        location = /__ready {{ default_type text/plain; return 200 "ready"; }}
        location / {{ return 404; }}
    }}
    server {{
        listen {host}:{port};
        server_name {static};
        root {root}/www;
    }}
    server {{
        listen {host}:{port};
        server_name {trickling};
        root {root}/www;
        include {root}/switch.conf;
    }}
    server {{
        listen {host}:{port};
        server_name markup.{zone};
        location / {{ proxy_pass http://{host}:{upstream}; }}
    }}
}}
"""

PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>Cổng thông tin điện tử</title></head>
<body><h1>Ủy ban nhân dân</h1><p>Chào mừng quý khách đến với cổng thông tin.</p></body></html>
"""


class _Reason(BaseHTTPRequestHandler):
    """The ``markup`` portal's application (through nginx): 503 with rich markup as its reason
    and body; asked directly as ``escapes``, 503 with terminal escapes as its reason."""

    def do_GET(self) -> None:
        escapes = self.headers.get("Host", "").startswith("escapes.")
        self.send_response(503, ESCAPES_REASON if escapes else MARKUP_REASON)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(MARKUP_BODY)))
        self.end_headers()
        self.wfile.write(MARKUP_BODY)

    def log_message(self, *_: Any) -> None:
        pass


@dataclass(frozen=True)
class Portals:
    port: int
    root: Path
    argv: list[str]
    upstream: int  # the raw ``escapes`` portal (the markup site's upstream)
    silent: int  # the ``silent`` portal: a socket that listens and never answers

    def hostname(self, name: str) -> str:
        return f"{name}.{ZONE}"

    def url(self, name: str, path: str = "/") -> str:
        return f"http://{self.hostname(name)}:{self.port}{path}"

    def pins(self) -> list[str]:
        names = [*TRICKLING, *STATIC, "markup"]
        return [f"{self.hostname(n)}:{self.port}:{LOOPBACK}" for n in names] + [
            f"{self.hostname('escapes')}:{self.upstream}:{LOOPBACK}",
            f"{self.hostname('silent')}:{self.silent}:{LOOPBACK}",
        ]

    def raw_url(self, name: str) -> str:
        """The URL of a raw portal (``escapes``, ``silent``)."""
        port = self.upstream if name == "escapes" else self.silent
        return f"http://{self.hostname(name)}:{port}/"

    def trickle(self, on: bool) -> None:
        """Turn the ``sw*`` sites' one-byte-a-second answers on or off, and wait until nginx
        serves the new config (new requests; ones under way finish on the old workers)."""
        (self.root / "switch.conf").write_text("limit_rate 1;\n" if on else "", encoding="utf-8")
        run([*self.argv, "-s", "reload"], what="nginx -s reload")
        wait_until(
            lambda: _fast(self.url(CANARY)) is not on,
            timeout=15,
            what=f"nginx trickles: {on}",
            log=self.root / "error.log",
        )

    def requests(self) -> list[tuple[float, float, str, str]]:
        """(start, end, host, request line) of every request nginx logged."""
        out = []
        for line in (self.root / "access.log").read_text(encoding="utf-8").splitlines():
            end, took, host, rest = line.split(" ", 3)
            out.append((float(end) - float(took), float(end), host, rest))
        return out


def _fast(url: str) -> bool:
    """Whether ``url`` (on loopback, pinned by its port) answers in full within a second."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}/{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310 - loopback
            response.read()
    except (OSError, TimeoutError):
        return False
    return True


@pytest.fixture(scope="module")
def portals() -> Iterator[Portals]:
    nginx = require_binary("nginx", NGINX_PACKAGE)
    upstream = ThreadingHTTPServer((LOOPBACK, 0), _Reason)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    silent = socket.create_server((LOOPBACK, 0), backlog=128)  # the kernel accepts; no reply
    with silent, temp_dir("exporter-nginx") as root:
        os.chmod(root, 0o755)  # noqa: S103 (workers run as nobody and must read the webroot)
        (root / "temp").mkdir()
        (root / "www").mkdir(mode=0o755)
        (root / "www" / "index.html").write_text(PAGE * 4, encoding="utf-8")
        (root / "www" / "index.html").chmod(0o644)
        (root / "switch.conf").write_text("", encoding="utf-8")
        port = free_port()
        conf = root / "nginx.conf"
        conf.write_text(
            _CONF.format(
                root=root,
                temp_paths=temp_paths(root),
                host=LOOPBACK,
                port=port,
                zone=ZONE,
                upstream=upstream.server_address[1],
                static=" ".join(f"{n}.{ZONE}" for n in STATIC),
                trickling=" ".join(f"{n}.{ZONE}" for n in [*TRICKLING, CANARY]),
            ),
            encoding="utf-8",
        )
        argv = [nginx, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
        run([*argv, "-t", "-q"], what="nginx -t of the exporter test sites")
        proc = start_process([*argv, "-g", "daemon off;"], root / "nginx.out")
        portals = Portals(port, root, argv, upstream.server_address[1], silent.getsockname()[1])
        try:
            wait_until(
                lambda: _fast(portals.url("fast")),
                timeout=10,
                what="nginx serves the exporter test sites",
                log=root / "error.log",
                proc=proc,
            )
            yield portals
        finally:
            stop_process(proc)
            upstream.shutdown()
            upstream.server_close()


def _config(root: Path, portals: Portals, **monitor: Any) -> Path:
    config = root / "ops.yaml"
    doc = {
        "resolve": portals.pins(),
        "estate": False,
        "modules": ["http"],
        "interval": 5,
        "timeout": 3,
        **monitor,
    }
    config.write_text(
        yaml.safe_dump({"state_dir": str(root / "state"), "monitor": doc}), encoding="utf-8"
    )
    return config


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    """GET a loopback URL of the exporter: (status, text), 4xx and 5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def values(text: str, name: str) -> dict[str, float]:
    """domain (or "" for an exporter-wide series) -> value of metric ``name``."""
    return {
        s.labels.get("domain", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _loopback_name() -> str | None:
    """This machine's host name if it resolves to 127.0.0.1 only (as Debian's /etc/hosts
    has it): a name the exporter cannot tell from a public one, bound safely."""
    name = socket.gethostname()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
        every = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return None
    return name if found == every == {LOOPBACK} else None


@contextmanager
def exporter(
    root: Path, portals: Portals, listen_host: str = LOOPBACK, **monitor: Any
) -> Iterator[str]:
    """A running ``ops monitor serve`` with this monitor config, listening on
    ``listen_host`` (which must reach 127.0.0.1); yields its base URL."""
    config = _config(root, portals, **monitor)
    with ops_monitor_serve(config, listen_host=listen_host) as (base, _):
        yield base


def test_probe_fetches_only_configured_targets(portals: Portals, tmp_path: Path) -> None:
    fast = portals.url("fast")
    with exporter(tmp_path, portals, urls=[fast], concurrency=4) as base:
        seen = len(portals.requests())
        refused = [
            portals.url("other"),
            portals.url("fast", "/admin/delete?id=1"),  # a configured host, another path
            f"http://{LOOPBACK}:{portals.port}/__ready",
            portals.hostname("other"),
            "http://169.254.169.254/latest/meta-data/",
        ]
        for target in refused:
            status, text = get(f"{base}/probe?target={urllib.parse.quote(target)}")
            assert status == 403, (target, text)
            assert "not a configured target" in text
            assert "monitor.probe_any" in text
        assert get(f"{base}/probe?target={fast}&module=nosuch")[0] == 400
        assert get(f"{base}/probe?target={'x' * 3000}")[0] == 414
        assert get(f"{base}/probe")[0] == 400
        for target in (fast, portals.hostname("fast"), fast.upper().replace("HTTP:", "http:")):
            status, text = get(f"{base}/probe?target={target}&module=http")
            assert status == 200, text
            assert values(text, "probe_success")[portals.hostname("fast")] == 1
        # nginx saw the configured probes and nothing of what was refused
        fetched = {(host, line.split()[1]) for _, _, host, line in portals.requests()[seen:]}
        assert fetched == {(portals.hostname("fast"), "/")}, fetched

    # listening on 127.0.0.1 says nothing; a host name (it may resolve to anything) warns
    log = tmp_path / "serve.log"
    assert "beyond loopback" not in log.read_text()
    name = _loopback_name() or LOOPBACK
    with exporter(tmp_path, portals, name, urls=[fast], probe_any=True) as base:
        status, text = get(f"{base}/probe?target=http://{LOOPBACK}:{portals.port}/__ready")
        assert status == 200, text
        assert values(text, "probe_http_status_code") == {LOOPBACK: 200}
        status, text = get(f"{base}/probe?target={portals.url('other')}")
        assert values(text, "probe_success") == {portals.hostname("other"): 1}
    if name != LOOPBACK:
        warning = f"listening on {name}:"
        assert warning in log.read_text(), log.read_text()
        assert "beyond loopback" in log.read_text()
        assert "probe ANY URL (monitor.probe_any is true)" in log.read_text()


def test_a_sweep_behind_fails_healthz_recovers_and_never_overlaps(
    portals: Portals, tmp_path: Path
) -> None:
    """Twelve portals that hold each probe for its whole timeout, two probes at a time: the
    sweep cannot keep up, /healthz says so (while it and /metrics stay quick), targets that
    fall due while queued are skipped rather than piled up; the portals recover, so does
    /healthz; and nginx never saw two requests of one portal at once."""
    monitor: dict[str, Any] = {
        "urls": [portals.url(n) for n in TRICKLING],
        "concurrency": 2,
        "deadline": 4,
    }
    portals.trickle(True)
    started = time.time()
    try:
        with exporter(tmp_path, portals, **monitor) as base:
            slowest, reason, text = 0.0, "", ""
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                status, reason = get(f"{base}/healthz")
                _, text = get(f"{base}/metrics")
                slowest = max(slowest, time.monotonic() - t0)
                if status == 503:
                    break
                time.sleep(0.5)
            assert reason.startswith("behind: "), reason
            assert slowest < 1, slowest
            stale_after = values(text, "portalops_probe_stale_after_seconds")[""]
            assert values(text, "portalops_probe_stale_targets")[""] >= 1
            assert values(text, "portalops_probe_oldest_result_age_seconds")[""] > stale_after
            assert sum(values(text, "portalops_probe_skipped_total").values()) >= 1
            assert max(values(text, "portalops_probe_running").values()) == 1
            # one task per target at most, plus the loop's and the server's few
            assert values(text, "portalops_exporter_tasks")[""] <= len(TRICKLING) + 8

            portals.trickle(False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, reason = get(f"{base}/healthz")
                if status == 200:
                    break
                time.sleep(0.5)
            assert (status, reason) == (200, "ok\n")
            _, text = get(f"{base}/metrics")
            assert values(text, "portalops_probe_stale_targets")[""] == 0
    finally:
        portals.trickle(False)
    by_host: dict[str, list[tuple[float, float]]] = {}
    for start, end, host, _ in portals.requests():
        if start >= started and host.startswith("sw"):
            by_host.setdefault(host, []).append((start, end))
    assert len(by_host) == len(TRICKLING)
    for host, spans in by_host.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.01, (host, spans)


def test_a_portals_text_is_printed_not_read_as_markup(portals: Portals, tmp_path: Path) -> None:
    """``503 [/bold]`` as a status line (nginx passes its upstream's reason on) and markup in
    the page: printed as they are, no traceback, in the table and in the baseline report."""
    config = _config(tmp_path, portals)
    env = {**os.environ, "COLUMNS": "200"}
    url = portals.url("markup")
    for args in (("check", "--module", "http", url), ("baseline", url)):
        done = subprocess.run(
            [sys.executable, str(PROJECT / "ops.py"), "--config", str(config), "monitor", *args],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert f"503 {MARKUP_REASON}" in done.stdout, done.stdout
    done = subprocess.run(
        [sys.executable, str(PROJECT / "ops.py"), "--config", str(config), "--json",
         "monitor", "check", "--module", "http", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    [result] = json.loads(done.stdout)
    assert result["status_code"] == 503


def test_a_portals_control_sequences_never_reach_the_terminal(
    portals: Portals, tmp_path: Path
) -> None:
    """A reason phrase of escape sequences (clear screen, colour, window title, a C1 CSI),
    sent raw: ``check`` and ``baseline`` show it as visible escapes, --json as JSON escapes
    that read back as the portal's text."""
    config = _config(tmp_path, portals)
    url = portals.raw_url("escapes")
    shown = "503 \\x1b[2J\\x1b[31mPWNED\\x1b]0;title\\x07 \\x9b31m"
    ops = [sys.executable, str(PROJECT / "ops.py"), "--config", str(config)]
    for args in (("check", "--module", "http", url), ("baseline", url)):
        done = subprocess.run(
            [*ops, "monitor", *args], capture_output=True, timeout=60, check=False
        )
        out = done.stdout.decode("utf-8")
        assert done.returncode == 1, (out, done.stderr)
        assert b"Traceback" not in done.stderr, done.stderr
        assert not {"\x1b", "\x07", "\x9b", "\r"} & set(out), repr(out)
        assert shown in out, out
    done = subprocess.run(
        [*ops, "--json", "monitor", "check", "--module", "http", url],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert not {"\x1b", "\x07", "\x9b"} & set(done.stdout.decode("utf-8")), done.stdout
    [result] = json.loads(done.stdout)
    assert any(ESCAPES_REASON in f["message"] for f in result["findings"]), result


def test_a_flood_of_probe_requests_on_one_target_does_not_lock_out_another(
    portals: Portals, tmp_path: Path
) -> None:
    """Forty /probe requests at once for a portal that never answers (alternating module
    lists, so that they queue rather than share one probe): all but
    MAX_WAITING_PER_TARGET are refused at once, and meanwhile /probe of another target
    answers in full. A module list with an empty entry is accepted."""
    flood = 40
    silent, fast = portals.raw_url("silent"), portals.url("fast")
    monitor: dict[str, Any] = {"urls": [silent, fast], "timeout": 1, "deadline": 2}
    with exporter(tmp_path, portals, concurrency=4, **monitor) as base:

        def ask(i: int) -> tuple[int, str]:
            module = "http" if i % 2 else "http,headers"
            return get(f"{base}/probe?target={silent}&module={module}", timeout=30)

        refused: list[str] = []
        with ThreadPoolExecutor(flood) as pool:
            asked = [pool.submit(ask, i) for i in range(flood)]
            with contextlib.suppress(TimeoutError):
                for future in as_completed(asked, timeout=10):
                    status, text = future.result()
                    if status == 503:
                        refused.append(text)
                    if len(refused) >= flood - MAX_WAITING_PER_TARGET:
                        break
            started = time.monotonic()
            status, text = get(f"{base}/probe?target={fast}&module=http,,headers", timeout=10)
            took = time.monotonic() - started
            answers = [future.result() for future in asked]
        assert status == 200, text
        assert values(text, "probe_success") == {portals.hostname("fast"): 1}
        assert took < 1.0, took
        assert len(refused) == flood - MAX_WAITING_PER_TARGET, refused[:3]
        assert all("already waiting on" in text for text in refused), refused[:3]
        # the ones let in got their answer: the silent portal is down, within its deadline
        done = [text for status, text in answers if status == 200]
        assert done, answers[:3]
        assert all(
            values(text, "probe_success") == {portals.hostname("silent"): 0} for text in done
        )
        assert get(f"{base}/probe?target={fast}&module=,")[0] == 400


# -- in process: the sweeper and the app on one loop, no nginx ----------------------------------


async def _slow_portal(delay: float, asked: list[str] | None = None) -> asyncio.Server:
    """A portal on loopback that answers every request after ``delay`` seconds (the request
    lines it got go to ``asked``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            if asked is not None:
                asked.append(head.decode("latin-1").split("\r\n")[0])
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, LOOPBACK, 0)


def test_probes_of_other_modules_in_a_row_never_keep_the_sweep_from_a_target() -> None:
    """/probe?module=… requests one after another keep the target busy: the sweep's turn
    waits for the one running, then goes before the next, and its result is stored."""

    async def scenario() -> tuple[bool, int]:
        server = await _slow_portal(0.1)
        port = server.sockets[0].getsockname()[1]
        target = Target("slow", "url", "slow.test", f"http://slow.test:{port}/")
        config = ProbeConfig(
            resolver=Resolver([f"slow.test:{port}:{LOOPBACK}"], timeout=5),
            modules=(Module.HTTP,),
            deadline=5,
        )
        sweeper = Sweeper([target], config, interval=0.3, concurrency=4)
        sweeping = asyncio.create_task(sweeper.run())
        try:
            for _ in range(12):  # about 1.2 s of /probe, always another module set
                await sweeper.probe_now(target, (Module.HTTP, Module.DNS))
            return target.url in sweeper.latest, sweeper.skipped.get(target.url, 0)
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            for task, _ in list(sweeper.busy.values()):
                task.cancel()
            server.close()

    stored, skipped = asyncio.run(scenario())
    assert stored, "the sweep never stored a result of the target"
    assert skipped == 0


def test_metrics_answer_while_the_default_executor_is_stuck() -> None:
    """Name lookups of a dead resolver filled the loop's default executor: /metrics renders in
    a thread of its own, so it answers anyway."""

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        sweeper = Sweeper([], ProbeConfig(resolver=Resolver()), interval=60, concurrency=1)
        runner = web.AppRunner(make_app(sweeper, lambda url: Target(url, "url", url, url)))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, LOOPBACK, port).start()
        release = threading.Event()
        stuck = [loop.run_in_executor(None, release.wait, 30) for _ in range(64)]
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.write(b"GET /metrics HTTP/1.0\r\nHost: exporter\r\n\r\n")
                answer = await reader.read()
                writer.close()
            return answer
        finally:
            release.set()
            await asyncio.gather(*stuck)
            await runner.cleanup()

    answer = asyncio.run(scenario())
    assert answer.split(b" ", 2)[1] == b"200", answer[:200]
    assert b"portalops_probe_stale_targets" in answer


def test_probe_any_fetches_no_exposure_path_outside_the_estate() -> None:
    """With monitor.probe_any, /probe of a URL whose host is neither the estate's nor in
    monitor.urls gets its home page only: exposure and defacement are for our own origins."""

    async def scenario() -> tuple[set[str], bool, list[str]]:
        asked: list[str] = []
        server = await _slow_portal(0, asked)
        port = server.sockets[0].getsockname()[1]
        pins = [f"{h}:{port}:{LOOPBACK}" for h in ("ours.test", "anyone.test")]
        config = ProbeConfig(
            resolver=Resolver(pins, timeout=5),
            modules=(Module.HTTP, Module.EXPOSURE),
            deadline=5,
        )
        ours = Target("ours", "url", "ours.test", f"http://ours.test:{port}/")
        sweeper = Sweeper([ours], config, interval=60, concurrency=4)
        adhoc = Target("x", "url", "anyone.test", f"http://anyone.test:{port}/")
        try:
            result = await sweeper.probe_now(adhoc, config.modules)
        finally:
            server.close()
        return {f.code for f in result.findings}, result.exposure_checked, asked

    codes, checked, asked = asyncio.run(scenario())
    assert "http.foreign_origin" in codes
    assert not checked
    assert asked == ["GET / HTTP/1.1"]
