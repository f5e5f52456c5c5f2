#!/usr/bin/env python3
"""portal-ops' prober against Prometheus blackbox_exporter, side by side on the same sites.

The bars (docs/benchmarks.md, "Prober vs blackbox_exporter"): 10,000 HTTPS targets swept in
under 30 s on 2 cores; CPU per probe at most 0.8 of blackbox_exporter's; the prober under
150 MB.

Set-up, once per benchmark, in a temp dir under /tmp that is removed on every exit path:

- **Certificates**: ``tests/fixtures/pki.py``'s ThrowawayPKI, an RSA-2048 root and
  intermediate, and ONE RSA-2048 leaf for ``*.bench.vinhphuc.gov.vn``; nginx sends leaf +
  intermediate, both probers verify the chain against the root (the same ``ca_file``) and the
  name. A wildcard, because one certificate with 10,000 SANs (~300 KB, parsed on every
  handshake) looks like no portal, and 10,000 certificates cost 10,000 RSA key generations;
  the per-handshake work (one RSA-2048 signature by nginx, a two-link chain and a host name
  checked by the client) is the same as with a certificate per portal.
- **nginx** (``nginx -c <tmp>/nginx.conf -g 'daemon off;'``, as tests/fixtures/nginx.py runs
  it: master as the caller, workers as nginx's compiled-in user when root): 2 workers, one
  TLS server on 127.0.0.1:<free port> for every ``*.bench.vinhphuc.gov.vn`` name, TLS 1.2 and
  1.3 offered (both probers negotiate 1.3; the table reports what they got), HTTP/1.1 only
  (no h2 ALPN), no session cache or tickets (every probe is a full handshake, as a fresh
  prober connection is anyway), ``access_log off``, a ~400-byte UTF-8 page.
- **N names** ``portal-00001.bench.vinhphuc.gov.vn`` … (``--count``, default 10,000).

Name resolution, with the system's /etc/hosts untouched:

- portal-ops: the prober's own resolver pins, ``Resolver(["<name>:<port>:127.0.0.1", ...])``
  (``monitor.resolve`` in ops.yaml).
- blackbox_exporter has no such override, and ``*.localhost`` names do not resolve on this
  Debian (no systemd, so no nss-myhostname: ``getent hosts foo.localhost`` fails). So it runs
  in a **private mount namespace** (``unshare --mount``; ``--user --map-root-user`` added when
  not root) in which a temp hosts file (every name -> 127.0.0.1) is bind-mounted over
  /etc/hosts. The namespace dies with the process. Verified before any sweep: ``getent
  hosts <name>`` resolves to 127.0.0.1 inside such a namespace and not outside it; and the
  SHA-256 of /etc/hosts is compared before and after the benchmark (the header says
  "unchanged"). blackbox_exporter's Go resolver (pure Go for ``hosts: files dns``) loads the
  file into a map once, so the 10,000-line file costs it nothing per probe.

Each run (``--repeat``, default 3; who goes first alternates), for each tool, after an
untimed warm-up over the first ``--warmup`` names (both probers are long-running services;
the timed sweep measures a running one):

- **portal-ops**: ``bench/probe_vs_blackbox_sweep.py`` in a fresh process under
  ``bench/measure_child.py``: ``monitors.exporter.sweep`` at concurrency 50 with
  ``ProbeConfig(modules=(Module.HTTP,), ca_file=<root>, limits=Limits(timeout=10))``, each
  Target ``https://<name>:<port>/`` with ``http_url=None``, on the loop ``ops monitor`` runs
  (``exporter.run``: uvloop's when it is installed, the table says which). Wall time and CPU
  (``getrusage(SELF)``) are taken around the timed sweep by the process itself; the whole
  process (start-up, imports, warm-up) is measured by the launcher and shown too.
- **portal-ops, all modules** (``--full-count`` targets, default 100; 0 skips it): the same
  child with every module, as ``ops monitor serve`` runs by default. Per target: the HTTPS GET
  above (verified TLS 1.3, certificate parsed for its expiry); two more handshakes (TLS
  1.0/1.1 only, and TLS 1.2 with every suite outside Mozilla intermediate: what nginx
  answers is a finding, not a failure); the A and AAAA lookups (pinned: no AAAA, so no IPv6
  request); 38 more HTTPS GETs for the exposure paths (one that cannot exist, 37 that should
  not); the header grade,
  expectations and exposure verdict in the analysis worker processes, whose CPU (from
  ``/proc``) is added to the prober's. blackbox_exporter has no module that does more than
  one request per target, so its figure is its ``http_2xx`` one from the same run (one
  verified HTTPS GET, the certificate's expiry): the ratio says what the posture checks
  cost, not who is faster.
- **blackbox**: a fresh ``prometheus-blackbox-exporter`` on 127.0.0.1:<free port> with its
  own config (module ``http_2xx``: prober http, ``tls_config.ca_file`` = the same root, ip4,
  timeout 10 s), driven from this process by an aiohttp client that keeps 50
  ``/probe?target=https://<name>:<port>/&module=http_2xx`` requests in flight. Its CPU is
  ``/proc/<pid>/stat`` utime+stime after minus before the timed sweep; the driver's CPU is
  this process's, reported on its own row and never counted as blackbox's. Peak RSS is the
  exporter's VmHWM.
- **nginx** CPU: utime+stime of master and workers, after minus before each tool's warm-up
  and sweep (per 1,000 probes: divided by both counts).

Prints one table (medians, ratio = portal-ops / blackbox) against the bars; ``--json FILE``
writes every figure. Every wait and sweep is bounded (``--timeout``); nginx and
blackbox_exporter are stopped on every exit path, Ctrl-C and SIGTERM included. Everything
listens on 127.0.0.1 only.

Exit codes: 0 every bar met; 1 a bar not met or a sweep failed; 2 bad arguments; 3 cannot
run (nginx, blackbox_exporter or unshare missing; the private hosts file does not work).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from benchlib import git_revision, killpg, log, machine_info, tool_version

from portalops.core import procs

REPO_ROOT = Path(__file__).resolve().parent.parent
MEASURE_CHILD = Path(__file__).resolve().parent / "measure_child.py"
SWEEP_CHILD = Path(__file__).resolve().parent / "probe_vs_blackbox_sweep.py"
DEFAULT_OPS_PYTHON = REPO_ROOT / ".venv/bin/python"
LOOPBACK = "127.0.0.1"
ZONE = "bench.vinhphuc.gov.vn"
BLACKBOX_PACKAGE = "prometheus-blackbox-exporter"
DEFAULT_COUNT = 10_000
DEFAULT_CONCURRENCY = 50
DEFAULT_REPEAT = 3
DEFAULT_WARMUP = 50
DEFAULT_TIMEOUT = 300.0  # one sweep, seconds
PROBE_TIMEOUT = 10.0  # one probe, both tools
START_TIMEOUT = 15.0  # a server to answer after start
STOP_TIMEOUT = 10.0
BAR_COUNT = 10_000  # the sweep-time bar is set for this many targets
BAR_SECONDS = 30.0
BAR_RSS_MB = 150.0
BAR_CPU_RATIO = 0.8  # the prober's CPU per probe against blackbox_exporter's
DEFAULT_FULL_COUNT = 100  # targets of the all-modules sweep (each ~40 connections: docstring)
TAIL_LINES = 15
MB = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")

TOOLS = ("portal-ops", "blackbox")

PAGE = """\
<!doctype html>
<html lang="vi">
<head><meta charset="utf-8"><title>Cổng thông tin điện tử xã — bench</title></head>
<body><h1>Ủy ban nhân dân xã</h1>
<p>Chào mừng quý khách đến với Cổng thông tin điện tử. Trang này phục vụ đo hiệu năng.</p>
<p><a href="https://dichvucong.gov.vn/">Cổng Dịch vụ công quốc gia</a></p></body>
</html>
"""

NGINX_CONF = """\
# written by bench/probe_vs_blackbox.py
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    types {{ text/html html; }}
    default_type application/octet-stream;
    charset utf-8;
    access_log off;
    client_body_temp_path {root}/temp/client_body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;

    server {{
        listen {host}:{port} ssl default_server;
        server_name *.{zone};
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # every probe a full handshake, for both probers
        ssl_session_cache off;
        ssl_session_tickets off;
        root {webroot};
        index index.html;
    }}
}}
"""

BLACKBOX_CONF = """\
# written by bench/probe_vs_blackbox.py
modules:
  http_2xx:
    prober: http
    timeout: {timeout}s
    http:
      method: GET
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      tls_config:
        ca_file: {ca}
"""

# Runs the rest of its argv with HOSTS bind-mounted over /etc/hosts, in the mount namespace
# that unshare made for it; "$1" etc. are positional, nothing is interpolated into the script.
BIND_HOSTS = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'


class CannotRun(Exception):
    """The benchmark cannot run here (exit 3): the message says why and what to do."""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


def proc_vm_hwm_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return None


class Server:
    """A server process in its own session; :meth:`stop` takes down its whole group."""

    def __init__(self, name: str, argv: Sequence[str], logfile: Path) -> None:
        self.name, self.argv, self.logfile = name, list(argv), logfile
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every worker
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Poll ``ready`` until true; the server is stopped if it dies or times out first."""
        try:
            self._wait_ready(ready, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        try:
            procs.wait_ready(ready, what=self.name, timeout=timeout, proc=self.proc, interval=0.05)
        except procs.NotReady as exc:
            how = (
                f"exited with code {exc.returncode} at start-up"
                if exc.returncode is not None
                else f"did not answer within {timeout:.0f} s"
            )
            raise CannotRun(
                f"{self.name} {how}:\n$ {shlex.join(self.argv)}\n{tail(self.logfile)}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                killpg(self.proc.pid)
                self.proc.wait(timeout=STOP_TIMEOUT)
        killpg(self.proc.pid)  # stragglers keep the leader's group id


class Nginx(Server):
    def __init__(self, binary: str, root: Path, chain: Path, key: Path) -> None:
        self.root, self.port = root, free_port()
        webroot = root / "www"
        webroot.mkdir()
        (webroot / "index.html").write_text(PAGE, encoding="utf-8")
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / "temp" / sub).mkdir(parents=True)
        conf = root / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                root=root,
                host=LOOPBACK,
                port=self.port,
                zone=ZONE,
                chain=chain,
                key=key,
                webroot=webroot,
            )
        )
        argv = [binary, "-p", str(root), "-e", str(root / "nginx-error.log"), "-c", str(conf)]
        done = subprocess.run(
            [*argv, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise CannotRun(f"nginx -t rejects {conf}:\n{done.stderr.strip()}")
        super().__init__("nginx", [*argv, "-g", "daemon off;"], root / "nginx.out")
        self.wait_ready(lambda: tcp_accepts(self.port))
        deadline = time.monotonic() + START_TIMEOUT
        while len(proc_children(self.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the master forks its workers after it listens

    def cpu_seconds(self) -> float:
        """Master and workers; a worker that died meanwhile drops out (the log would say)."""
        total = 0.0
        for pid in [self.pid, *proc_children(self.pid)]:
            with contextlib.suppress(OSError):
                total += proc_cpu_seconds(pid)
        return total


def unshare_prefix(unshare: str, hosts: Path) -> list[str]:
    """argv prefix: run the rest in a private mount namespace with ``hosts`` as /etc/hosts."""
    ns = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    sh = ["sh", "-c", BIND_HOSTS, "sh", str(hosts)]
    return [unshare, *ns, "--propagation", "private", "--", *sh]


def check_private_hosts(unshare: str, hosts: Path, name: str) -> str:
    """Prove that ``name`` resolves to 127.0.0.1 inside the namespace and not outside it."""
    getent = shutil.which("getent") or "getent"
    try:
        inside = subprocess.run(
            [*unshare_prefix(unshare, hosts), getent, "hosts", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        outside = subprocess.run(
            [getent, "hosts", name], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CannotRun(f"cannot check the private hosts file: {exc}") from None
    if inside.returncode != 0 or inside.stdout.split()[:1] != [LOOPBACK]:
        raise CannotRun(
            f"{name} does not resolve to {LOOPBACK} in a private mount namespace with "
            f"{hosts} over /etc/hosts (exit {inside.returncode}): "
            f"{(inside.stderr or inside.stdout).strip()[-500:]}\n"
            "unshare --mount needs root (or unprivileged user namespaces)"
        )
    if outside.returncode == 0:
        raise CannotRun(
            f"{name} already resolves outside the namespace ({outside.stdout.strip()}): "
            "the system resolver knows the bench zone, so the check proves nothing"
        )
    return (
        f"{name} -> {LOOPBACK} inside the namespace (getent), unresolvable outside "
        f"(getent exit {outside.returncode})"
    )


class Blackbox(Server):
    def __init__(self, binary: str, unshare: str, hosts: Path, config: Path, logfile: Path) -> None:
        self.port = free_port()
        argv = [
            *unshare_prefix(unshare, hosts),
            binary,
            f"--config.file={config}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        super().__init__("blackbox_exporter", argv, logfile)
        self.wait_ready(lambda: _http_ok(f"http://{LOOPBACK}:{self.port}/-/healthy"))

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/probe"


def _http_ok(url: str) -> bool:
    import urllib.request  # noqa: PLC0415 - start-up polling only

    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


# --------------------------------------------------------------------------- one sweep


@dataclass
class SweepResult:
    tool: str
    status: str  # ok | failed | timeout
    seconds: float | None = None  # wall time of the timed sweep
    probes: int = 0
    successes: int = 0
    cpu_seconds: float | None = None  # the prober's, over the timed sweep
    process_cpu_seconds: float | None = None  # portal-ops: the whole process, start-up included
    process_seconds: float | None = None  # portal-ops: the whole process's wall time
    nginx_cpu_seconds: float | None = None  # over the warm-up and the timed sweep
    rss_mb: float | None = None
    driver_cpu_seconds: float | None = None  # blackbox: this process's, not counted
    workers_cpu_seconds: float | None = None  # portal-ops: the analysis workers', timed sweep
    workers_rss_mb: float | None = None  # portal-ops: the analysis workers' peaks, summed
    event_loop: str = ""  # portal-ops: uvloop or asyncio
    full: SweepResult | None = None  # portal-ops: the all-modules sweep of this run
    tls_verified: int = 0  # probes whose certificate chain and name were verified
    tls_versions: dict[str, int] = field(default_factory=dict)
    http_versions: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    warmup: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Bench:
    """Everything one benchmark needs: names, certificates, nginx; the sweeps of both tools."""

    def __init__(self, args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> None:
        self.args, self.work, self.stack = args, work, stack
        self.names = [f"portal-{i:05d}.{ZONE}" for i in range(1, args.count + 1)]
        self.names_file = work / "names.txt"
        self.names_file.write_text("\n".join(self.names) + "\n")
        self.full_names_file = work / "names-all-modules.txt"
        self.full_names_file.write_text("\n".join(self.names[: args.full_count]) + "\n")
        self.hosts = work / "hosts"
        self.hosts.write_text(
            "# written by bench/probe_vs_blackbox.py: blackbox_exporter's private /etc/hosts\n"
            f"{LOOPBACK} localhost\n" + "".join(f"{LOOPBACK} {n}\n" for n in self.names)
        )
        log(f"issuing certificates (RSA-2048 root, intermediate, leaf *.{ZONE}) ...")
        try:  # the wrapper bench/probe_vs_blackbox puts the repository on PYTHONPATH
            from tests.fixtures.pki import ThrowawayPKI  # noqa: PLC0415 - only when run
        except ImportError as exc:
            raise CannotRun(
                f"cannot import the test PKI ({exc}): run bench/probe_vs_blackbox, or set "
                f"PYTHONPATH={REPO_ROOT}"
            ) from None

        (work / "pki").mkdir()
        self.pki = ThrowawayPKI(work / "pki", common_name="portal-ops bench Root CA")
        self.cert = self.pki.issue("wildcard", [f"*.{ZONE}"])
        self.ca = self.pki.ca_file
        self.resolution = check_private_hosts(args.unshare, self.hosts, self.names[-1])
        log(f"private hosts file: {self.resolution}")
        (work / "nginx").mkdir()
        self.nginx = Nginx(args.nginx, work / "nginx", self.cert.chain, self.cert.key)
        stack.callback(self.nginx.stop)
        log(f"nginx on https://{LOOPBACK}:{self.nginx.port}/ (pid {self.nginx.pid}, 2 workers)")
        self.bb_config = work / "blackbox.yml"
        self.bb_config.write_text(
            BLACKBOX_CONF.format(timeout=f"{PROBE_TIMEOUT:g}", ca=json.dumps(str(self.ca)))
        )
        done = subprocess.run(
            [args.blackbox, f"--config.file={self.bb_config}", "--config.check"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise CannotRun(f"blackbox_exporter rejects {self.bb_config}:\n{done.stderr.strip()}")

    def url(self, name: str) -> str:
        return f"https://{name}:{self.nginx.port}/"

    def sweep(self, tool: str, run: int) -> SweepResult:
        rundir = self.work / f"run-{run}"
        rundir.mkdir(exist_ok=True)
        if tool == "portal-ops":
            return self.sweep_portal_ops(rundir)
        return self.sweep_blackbox(rundir)

    # -- portal-ops

    def sweep_portal_ops(self, rundir: Path) -> SweepResult:
        res = self.sweep_portal_ops_modules(rundir, "http", self.names_file)
        if res.ok and self.args.full_count:
            log(f"portal-ops: all modules on {self.args.full_count:,} targets ...")
            res.full = self.sweep_portal_ops_modules(rundir, "all", self.full_names_file)
        return res

    def sweep_portal_ops_modules(self, rundir: Path, modules: str, names: Path) -> SweepResult:
        out = rundir / f"portal-ops-{modules}.json"
        usage = rundir / f"portal-ops-{modules}.rusage.json"
        err = rundir / f"portal-ops-{modules}.err"
        argv = [
            self.args.ops_python,
            str(SWEEP_CHILD),
            "--modules",
            modules,
            "--names",
            str(names),
            "--port",
            str(self.nginx.port),
            "--ca",
            str(self.ca),
            "--out",
            str(out),
            "--concurrency",
            str(self.args.concurrency),
            "--warmup",
            str(self.args.warmup),
            "--probe-timeout",
            f"{PROBE_TIMEOUT:g}",
        ]
        launcher = [sys.executable, "-I", "-S", str(MEASURE_CHILD), str(usage)]
        nginx0 = self.nginx.cpu_seconds()
        timed_out = False
        with open(err, "wb") as errf:
            proc = subprocess.Popen(
                [*launcher, *argv],
                stdin=subprocess.DEVNULL,
                stdout=errf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=self.args.timeout + 60)  # + start-up and warm-up
            except subprocess.TimeoutExpired:
                timed_out = True
                killpg(proc.pid)
                code = proc.wait()
            except BaseException:
                killpg(proc.pid)
                proc.wait()
                raise
        nginx_cpu = self.nginx.cpu_seconds() - nginx0
        res = SweepResult("portal-ops", "ok", nginx_cpu_seconds=nginx_cpu)
        try:
            figures = json.loads(out.read_text())
        except (OSError, ValueError):
            res.status = "timeout" if timed_out else "failed"
            res.note = f"exit {code}, no figures: {tail(err, 5) or '(no output)'}"
            return res
        with contextlib.suppress(OSError, ValueError, KeyError):
            whole = json.loads(usage.read_text())
            res.process_cpu_seconds = whole["user_seconds"] + whole["system_seconds"]
            res.process_seconds = whole["seconds"]
            res.rss_mb = whole["max_rss_kib"] * 1024 / MB
        if res.rss_mb is None and figures.get("vm_hwm_kib"):
            res.rss_mb = figures["vm_hwm_kib"] * 1024 / MB
        res.seconds = figures["sweep_seconds"]
        res.cpu_seconds = figures["sweep_cpu_seconds"] + figures["workers_cpu_seconds"]
        res.workers_cpu_seconds = figures["workers_cpu_seconds"]
        res.workers_rss_mb = figures["workers_vm_hwm_kib"] * 1024 / MB
        res.event_loop = figures["event_loop"]
        res.probes, res.successes = figures["probes"], figures["successes"]
        res.tls_versions = figures["tls_versions"]
        res.tls_verified = figures["tls_verified"]
        res.http_versions = figures["http_versions"]
        res.failures = figures["failures"]
        res.warmup = figures["warmup"]
        if res.successes != res.probes:
            res.note = f"{res.probes - res.successes} probes failed (exit {code})"
        return res

    # -- blackbox

    def sweep_blackbox(self, rundir: Path) -> SweepResult:
        bb = Blackbox(
            self.args.blackbox,
            self.args.unshare,
            self.hosts,
            self.bb_config,
            rundir / "blackbox.log",
        )
        try:
            nginx0 = self.nginx.cpu_seconds()  # warm-up included, as in the portal-ops child
            try:
                warm = run_async(
                    drive(bb.url, [self.url(n) for n in self.names[: self.args.warmup]], self.args)
                )
            except TimeoutError:
                return SweepResult(
                    "blackbox", "timeout", note=f"warm-up not done after {self.args.timeout:.0f} s"
                )
            bb0, own0 = proc_cpu_seconds(bb.pid), time.process_time()
            t0 = time.monotonic()
            try:
                tally = run_async(drive(bb.url, [self.url(n) for n in self.names], self.args))
            except TimeoutError:
                return SweepResult(
                    "blackbox", "timeout", note=f"sweep not done after {self.args.timeout:.0f} s"
                )
            seconds = time.monotonic() - t0
            res = SweepResult(
                "blackbox",
                "ok",
                seconds=seconds,
                cpu_seconds=proc_cpu_seconds(bb.pid) - bb0,
                nginx_cpu_seconds=self.nginx.cpu_seconds() - nginx0,
                driver_cpu_seconds=time.process_time() - own0,
                rss_mb=proc_vm_hwm_mb(bb.pid),
            )
            res.probes, res.successes = tally.probes, tally.successes
            res.tls_versions, res.http_versions = dict(tally.tls), dict(tally.http)
            # blackbox fails a probe whose certificate does not verify (insecure_skip_verify
            # is off), so every success was verified
            res.tls_verified = tally.successes
            res.failures = dict(tally.failures.most_common(5))
            res.warmup = {"probes": warm.probes, "successes": warm.successes}
            if res.successes != res.probes:
                res.note = f"{res.probes - res.successes} probes failed; " + run_async(
                    debug_log(bb.url, tally.first_failed)
                )
            return res
        finally:
            bb.stop()


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, with SIGTERM and SIGHUP ending it as Ctrl-C does.

    The signal cancels the main task (so aiohttp closes its connections and no task dies
    with an unretrieved KeyboardInterrupt), then KeyboardInterrupt unwinds the benchmark.
    """
    signalled: list[int] = []

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def stop(sig: int) -> None:
            signalled.append(sig)
            if task is not None:
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop, sig)
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if signalled:
            raise KeyboardInterrupt(f"signal {signalled[0]}") from None
        raise
    finally:
        # closing the loop reset these two to SIG_DFL: put ours back
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _terminated)


@dataclass
class Tally:
    probes: int = 0
    successes: int = 0
    tls: Counter[str] = field(default_factory=Counter)
    http: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    first_failed: str = ""


_METRIC = re.compile(r'^(probe_[a-z_]+)(?:\{version="([^"]*)"\})? (\S+)$', re.MULTILINE)


async def drive(url: str, targets: Sequence[str], args: argparse.Namespace) -> Tally:
    """GET blackbox's /probe for every target, ``args.concurrency`` at a time."""
    tally = Tally()
    pending = iter(targets)
    # what Prometheus sends; blackbox takes min(module timeout, this - 0.5 s offset)
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": f"{PROBE_TIMEOUT + 0.5:g}"}
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT + 10)
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        for target in pending:  # shared iterator: each target once; ends with the list
            try:
                async with session.get(
                    url, params={"target": target, "module": "http_2xx"}, headers=headers
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                text, status = f"driver: {type(exc).__name__}: {exc}", 0
            tally.probes += 1
            values = {m.group(1): (m.group(2), m.group(3)) for m in _METRIC.finditer(text)}
            if status == 200 and values.get("probe_success", ("", ""))[1] == "1":
                tally.successes += 1
            else:
                code = values.get("probe_http_status_code", ("", "?"))[1]
                tally.failures[f"HTTP {status}, probe_http_status_code {code}"] += 1
                tally.first_failed = tally.first_failed or target
            if "probe_tls_version_info" in values:
                tally.tls[values["probe_tls_version_info"][0]] += 1
            if "probe_http_version" in values:
                tally.http[values["probe_http_version"][1]] += 1

    async with asyncio.timeout(args.timeout):
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    return tally


async def debug_log(url: str, target: str) -> str:
    """blackbox's own account of a failed probe (``debug=true``), its last lines."""
    try:
        async with (
            asyncio.timeout(PROBE_TIMEOUT + 10),
            aiohttp.ClientSession() as session,
            session.get(
                url, params={"target": target, "module": "http_2xx", "debug": "true"}
            ) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"no debug log ({exc})"
    lines = [line for line in text.splitlines() if "level=" in line]
    errors = [line.split("level=error", 1)[1].strip() for line in lines if "level=error" in line]
    return f"{target}: blackbox says: " + " | ".join((errors or lines)[-2:])[:600]


# --------------------------------------------------------------------------- summary


@dataclass
class Row:
    section: str
    label: str
    values: dict[str, list[float]]  # per tool, one value per run that has it
    runs: int
    fmt: str
    bar: str = ""
    check: Callable[[float | None, float | None], bool | None] | None = None
    texts: dict[str, str] = field(default_factory=dict)  # cells shown instead of a number

    def median(self, tool: str) -> float | None:
        v = self.values.get(tool, [])
        return statistics.median(v) if v else None

    def cell(self, tool: str) -> str:
        if tool in self.texts:
            return self.texts[tool]
        m = self.median(tool)
        if m is None:
            return "-" if tool not in self.values else "FAILED"
        n = len(self.values[tool])
        s = format(m, self.fmt)
        return s if n == self.runs else f"{s} ({n}/{self.runs})"

    @property
    def ratio(self) -> float | None:
        a, b = self.median("portal-ops"), self.median("blackbox")
        return a / b if a is not None and b else None

    @property
    def verdict(self) -> str:
        if self.check is None:
            return "-"
        met = self.check(self.median("portal-ops"), self.median("blackbox"))
        return "n/a" if met is None else ("pass" if met else "FAIL")


def build_rows(runs: list[dict[str, SweepResult]], count: int, concurrency: int) -> list[Row]:
    n = len(runs)

    def values(
        get: Callable[[SweepResult], float | None], tools: Sequence[str] = TOOLS
    ) -> dict[str, list[float]]:
        return {t: [v for r in runs if r[t].ok and (v := get(r[t])) is not None] for t in tools}

    def per_1000(attr: str, warmup: bool = False) -> Callable[[SweepResult], float | None]:
        def get(r: SweepResult) -> float | None:
            v = getattr(r, attr)
            probes = r.probes + (r.warmup.get("probes", 0) if warmup else 0)
            return None if v is None or not probes else v / probes * 1000

        return get

    full = count == BAR_COUNT
    sweep = f"sweep of {count:,} HTTPS targets, concurrency {concurrency}"
    rows = [
        Row(
            sweep,
            "wall time (s)",
            values(lambda r: r.seconds),
            n,
            ".2f",
            f"p-o < {BAR_SECONDS:.0f} s" if full else f"(bar at {BAR_COUNT:,})",
            (lambda po, _bb: None if po is None else po < BAR_SECONDS) if full else None,
        ),
        Row(sweep, "probes/s", values(lambda r: r.probes / r.seconds if r.seconds else None), n,
            ".0f"),
    ]  # fmt: skip
    ok_row = Row(
        sweep,
        "successful probes",
        values(lambda r: float(r.successes)),
        n,
        ".0f",
        "all succeed",
        lambda _po, _bb: _all_succeed(runs),
    )
    ok_row.texts = {t: _success_text(runs, t) for t in TOOLS}
    rows.append(ok_row)
    cpu = "CPU (s, user+sys)"
    rows += [
        Row(cpu, "prober per 1,000 probes", values(per_1000("cpu_seconds")), n, ".2f",
            f"ratio <= {BAR_CPU_RATIO}", _ratio_bar),
        Row(cpu, "prober, timed sweep", values(lambda r: r.cpu_seconds), n, ".2f"),
        Row(cpu, "p-o process incl. start-up", values(lambda r: r.process_cpu_seconds,
                                                      ("portal-ops",)), n, ".2f"),
        Row(cpu, "nginx per 1,000 probes", values(per_1000("nginx_cpu_seconds", True)), n, ".2f"),
        Row(cpu, "nginx, sweep + warm-up", values(lambda r: r.nginx_cpu_seconds), n, ".2f"),
        Row(cpu, "bench driver (not counted)", values(lambda r: r.driver_cpu_seconds,
                                                      ("blackbox",)), n, ".2f"),
        Row("memory (MB)", "prober peak RSS", values(lambda r: r.rss_mb), n, ".0f",
            f"p-o < {BAR_RSS_MB:.0f} MB", lambda po, _bb: None if po is None else po < BAR_RSS_MB),
    ]  # fmt: skip
    tls = Row("negotiated", "TLS version (probes)", {}, n, "")
    tls.texts = {t: _mode(runs, t, "tls_versions") for t in TOOLS}
    verified = Row("negotiated", "certificate verified", {}, n, "")
    verified.texts = {t: _least(runs, t, "tls_verified") for t in TOOLS}
    http = Row("negotiated", "HTTP version (probes)", {}, n, "")
    http.texts = {t: _mode(runs, t, "http_versions") for t in TOOLS}
    return [*rows, tls, verified, http, *full_rows(runs, per_1000("cpu_seconds"))]


def full_rows(
    runs: list[dict[str, SweepResult]], bb_per_1000: Callable[[SweepResult], float | None]
) -> list[Row]:
    """The all-modules sweep: portal-ops' figures against blackbox's http_2xx ones from the
    same run (blackbox has no module doing more than one request per target)."""
    fulls = [f for r in runs if (f := r["portal-ops"].full) is not None and f.ok]
    if not fulls:
        return []
    n, count = len(runs), fulls[0].probes
    section = f"all modules, {count:,} targets (portal-ops; blackbox: http_2xx above)"

    def po(get: Callable[[SweepResult], float | None]) -> list[float]:
        return [v for f in fulls if (v := get(f)) is not None]

    def per_target(attr: str, warmup: bool = False) -> Callable[[SweepResult], float | None]:
        def get(r: SweepResult) -> float | None:
            v = getattr(r, attr)
            probes = r.probes + (r.warmup.get("probes", 0) if warmup else 0)
            return None if v is None or not probes else v / probes * 1000

        return get

    bb = [v for r in runs if r["blackbox"].ok and (v := bb_per_1000(r["blackbox"])) is not None]
    ok = Row(section, "successful probes", {}, n, "")
    ok.texts = {"portal-ops": f"{min(f.successes for f in fulls)}/{count}", "blackbox": "-"}
    return [
        Row(section, "wall time (s)", {"portal-ops": po(lambda f: f.seconds)}, n, ".2f"),
        ok,
        Row(section, "CPU per 1,000 targets (s)",
            {"portal-ops": po(per_target("cpu_seconds")), "blackbox": bb}, n, ".2f"),
        Row(section, "  of it analysis workers", {"portal-ops": po(per_target(
            "workers_cpu_seconds"))}, n, ".2f"),
        Row(section, "nginx per 1,000 targets", {"portal-ops": po(per_target(
            "nginx_cpu_seconds", True))}, n, ".2f"),
        Row(section, "prober peak RSS (MB)", {"portal-ops": po(lambda f: f.rss_mb)}, n, ".0f"),
        Row(section, "  analysis workers (MB)", {"portal-ops": po(lambda f: f.workers_rss_mb)},
            n, ".0f"),
    ]  # fmt: skip


def _ratio_bar(po: float | None, bb: float | None) -> bool | None:
    return None if po is None or bb is None else po <= BAR_CPU_RATIO * bb


def _all_succeed(runs: list[dict[str, SweepResult]]) -> bool | None:
    results = [r[t] for r in runs for t in TOOLS]
    if any(not res.ok for res in results):
        return None
    return all(res.successes == res.probes for res in results)


def _success_text(runs: list[dict[str, SweepResult]], tool: str) -> str:
    done = [r[tool] for r in runs if r[tool].ok]
    if not done:
        return "FAILED"
    worst = min(done, key=lambda res: res.successes)
    text = f"{worst.successes}/{worst.probes}"
    return text if len(done) == len(runs) else f"{text} ({len(done)}/{len(runs)})"


def _mode(runs: list[dict[str, SweepResult]], tool: str, attr: str) -> str:
    total: Counter[str] = Counter()
    for r in runs:
        total.update(getattr(r[tool], attr))
    if not total:
        return "-"
    value, _ = total.most_common(1)[0]
    share = total[value] / sum(total.values())
    return value if share == 1 else f"{value} ({share:.0%})"


def _least(runs: list[dict[str, SweepResult]], tool: str, attr: str) -> str:
    done = [r[tool] for r in runs if r[tool].ok]
    if not done:
        return "-"
    worst = min(done, key=lambda res: int(getattr(res, attr)))
    return f"{getattr(worst, attr)}/{worst.probes}"


def render_table(rows: list[Row]) -> str:
    widths = (30, 13, 13, 7, 18, 6)
    head = ("", "portal-ops", "blackbox", "ratio", "bar", "result")

    def line(cols: Sequence[str]) -> str:
        return (
            f"{cols[0]:<{widths[0]}} {cols[1]:>{widths[1]}} {cols[2]:>{widths[2]}} "
            f"{cols[3]:>{widths[3]}}  {cols[4]:<{widths[4]}} {cols[5]}"
        ).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    section = ""
    for row in rows:
        if row.section != section:
            section = row.section
            out.append(section)
        ratio = row.ratio
        out.append(
            line(
                (
                    f"  {row.label}",
                    row.cell("portal-ops"),
                    row.cell("blackbox"),
                    "-" if ratio is None or row.texts else f"{ratio:.2f}",
                    row.bar,
                    row.verdict,
                )
            )
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- report


def sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def failures_text(runs: list[dict[str, SweepResult]]) -> str:
    out: list[str] = []
    for i, run in enumerate(runs, 1):
        for tool in TOOLS:
            res = run[tool]
            if not res.ok or res.note:
                out.append(f"- run {i}, {tool}: {res.status.upper()}: {res.note}")
                out.extend(f"    {count} x {why}" for why, count in res.failures.items() if count)
    return "\n".join(out)


def report_text(meta: dict[str, Any], rows: list[Row], runs: list[dict[str, SweepResult]]) -> str:
    info, versions, bars = meta["machine"], meta["versions"], meta["bars"]
    lines = [
        f"portal-ops prober vs blackbox_exporter — {meta['started_local']}",
        f"machine:  {info.get('cpu', '?')}, {info.get('cores')} cores, "
        f"{info.get('ram_gib')} GiB RAM, Linux {info.get('kernel')}, "
        f"Debian {info.get('debian', '?')}",
        f"tools:    {versions['portal-ops']} (git {versions['portal-ops git']}, Python "
        f"{versions['python']}, {versions['openssl']}); {versions['blackbox']}; "
        f"{versions['nginx']}",
        f"targets:  {meta['count']:,} names portal-NNNNN.{ZONE} on one nginx (2 workers), "
        f"one RSA-2048 wildcard leaf + intermediate, verified against the same root",
        f"hosts:    portal-ops pins names to {LOOPBACK}; blackbox in a private mount namespace "
        f"with its own /etc/hosts ({meta['resolution']}); system /etc/hosts "
        + ("unchanged" if meta["etc_hosts_unchanged"] else "CHANGED"),
        f"prober:   portal-ops on the {meta['event_loop']} event loop; all-modules sweep: "
        + (f"{meta['full_count']:,} targets" if meta["full_count"] else "none"),
        f"runs:     {meta['repeat']}, alternating who goes first; concurrency "
        f"{meta['concurrency']}; {meta['warmup']} untimed warm-up probes per tool and run"
        + ("; the table shows medians" if meta["repeat"] > 1 else ""),
        "",
        render_table(rows),
        "",
        f"bars met: {bars['met']} of {bars['of']}"
        + (f" ({bars['without_figures']} without figures)" if bars["without_figures"] else ""),
        "ratio = portal-ops / blackbox (below 1.0: portal-ops is faster or leaner). "
        "CPU: the prober process over the timed sweep (blackbox: /proc/<pid>/stat delta; "
        "portal-ops: getrusage in the prober process); the bench driver's CPU is not "
        "blackbox's.",
    ]
    fails = failures_text(runs)
    if fails:
        lines += ["", "Failures and notes:", fails]
    return "\n".join(lines)


def _rounded(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in doc.items()}


def row_json(r: Row) -> dict[str, Any]:
    def med(tool: str) -> float | str | None:
        if tool in r.texts:
            return r.texts[tool]
        m = r.median(tool)
        return None if m is None else round(m, 3)

    ratio = r.ratio
    return {
        "section": r.section,
        "row": r.label,
        "portal_ops": med("portal-ops"),
        "blackbox": med("blackbox"),
        "portal_ops_values": [round(v, 3) for v in r.values.get("portal-ops", [])],
        "blackbox_values": [round(v, 3) for v in r.values.get("blackbox", [])],
        "ratio": None if ratio is None or r.texts else round(ratio, 3),
        "bar": r.bar,
        "result": r.verdict,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="probe_vs_blackbox",
        description="Sweep N HTTPS portal names on a local nginx with portal-ops' prober and "
        "with Prometheus blackbox_exporter, side by side (bars: docs/benchmarks.md).",
        epilog="Exit codes: 0 every bar met; 1 a bar not met or a sweep failed; 2 bad "
        "arguments; 3 cannot run (a tool missing, the private hosts file does not work).",
    )
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="targets (default 10,000)")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs (default 3)")
    p.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="probes in flight (50)"
    )
    p.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="untimed probes first (default 50)"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write all figures to FILE")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds before a sweep is abandoned (default {DEFAULT_TIMEOUT:.0f})",
    )
    p.add_argument(
        "--full-count",
        type=int,
        default=DEFAULT_FULL_COUNT,
        help=f"targets of the all-modules sweep, after each http one (default {DEFAULT_FULL_COUNT}"
        "; 0: none)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    p.add_argument("--nginx", default="nginx", help="the nginx binary (default: on PATH)")
    p.add_argument(
        "--blackbox", default=BLACKBOX_PACKAGE, help="the blackbox_exporter binary (on PATH)"
    )
    p.add_argument("--unshare", default="unshare", help="util-linux unshare (default: on PATH)")
    p.add_argument(
        "--ops-python",
        default=str(DEFAULT_OPS_PYTHON)
        if os.access(DEFAULT_OPS_PYTHON, os.X_OK)
        else sys.executable,
        help="python that runs portal-ops' prober (default: the project venv's)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.count <= 99_999:
        p.error("--count must be between 1 and 99999")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be between 1 and 20")
    if not 1 <= args.concurrency <= 1000:
        p.error("--concurrency must be between 1 and 1000")
    if not 0 <= args.warmup <= args.count:
        p.error("--warmup must be between 0 and --count")
    if not 0 <= args.full_count <= args.count:
        p.error("--full-count must be between 0 and --count")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    return args


def find_tools(args: argparse.Namespace) -> None:
    for attr, package in (
        ("nginx", "nginx-light"),
        ("blackbox", BLACKBOX_PACKAGE),
        ("unshare", "util-linux"),
    ):
        found = shutil.which(getattr(args, attr))
        if found is None:
            raise CannotRun(
                f"{getattr(args, attr)} not found: install it with apt-get install {package} "
                "(scripts/setup-system does, as root), or pass --" + attr
            )
        setattr(args, attr, found)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="portalops-pvb-"))
    os.chmod(work, 0o755)  # noqa: S103 - nginx workers (nobody) read the page under it
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    hosts_before = sha256_file(Path("/etc/hosts"))
    try:
        find_tools(args)
        with workdir(args.keep) as work, contextlib.ExitStack() as stack:
            bench = Bench(args, work, stack)
            return run(args, bench, hosts_before)
    except CannotRun as exc:
        log(f"probe_vs_blackbox: {exc}")
        return 3


def run(args: argparse.Namespace, bench: Bench, hosts_before: str) -> int:
    started = time.time()
    runs: list[dict[str, SweepResult]] = []
    for i in range(1, args.repeat + 1):
        order = TOOLS if i % 2 else TOOLS[::-1]  # alternate who goes first
        log(f"=== run {i}/{args.repeat} ===")
        run_results: dict[str, SweepResult] = {}
        for tool in order:
            log(f"[run {i}] {tool}: sweeping {args.count:,} targets ...")
            res = bench.sweep(tool, i)
            run_results[tool] = res
            if res.ok:
                log(
                    f"[run {i}] {tool}: {res.seconds:.2f} s, {res.successes}/{res.probes} ok, "
                    f"CPU {res.cpu_seconds:.2f} s, nginx {res.nginx_cpu_seconds:.2f} s, "
                    f"RSS {res.rss_mb or 0:.0f} MB" + (f" ({res.note})" if res.note else "")
                )
            else:
                log(f"[run {i}] {tool}: {res.status.upper()}: {res.note}")
        runs.append(run_results)
    rows = build_rows(runs, args.count, args.concurrency)
    with_bar = [r for r in rows if r.check is not None]
    met = sum(r.verdict == "pass" for r in with_bar)
    versions = {
        "portal-ops": tool_version([args.ops_python, str(REPO_ROOT / "ops.py"), "--version"]),
        "portal-ops git": git_revision(),
        "python": tool_version([args.ops_python, "-c", "import platform; "
                                "print(platform.python_version())"]),
        # the prober's handshakes (monitors/tls.py), and the system's, which ssl links
        "openssl": tool_version([args.ops_python, "-c", "import ssl; from OpenSSL import SSL; "
                                 "print(SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(), "
                                 "'(prober; system', ssl.OPENSSL_VERSION.split()[1] + ')')"]),
        "blackbox": tool_version([args.blackbox, "--version"], pick="go version"),
        "nginx": tool_version([args.nginx, "-v"]),
    }  # fmt: skip
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "started_local": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine_info(),
        "versions": versions,
        "count": args.count,
        "full_count": args.full_count,
        "event_loop": next(
            (r["portal-ops"].event_loop for r in runs if r["portal-ops"].event_loop), "?"
        ),
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "resolution": bench.resolution,
        "etc_hosts_unchanged": sha256_file(Path("/etc/hosts")) == hosts_before,
        "certificates": f"ThrowawayPKI: RSA-2048 root, intermediate and one leaf *.{ZONE}",
        "bars": {
            "met": met,
            "of": len(with_bar),
            "without_figures": sum(r.verdict == "n/a" for r in with_bar),
        },
    }
    print(report_text(meta, rows, runs))
    if args.json:
        doc = {
            **meta,
            "command": "bench/probe_vs_blackbox " + shlex.join(sys.argv[1:]),
            "table": [row_json(r) for r in rows],
            "runs": [{t: _rounded(asdict(r[t])) for t in TOOLS} for r in runs],
        }
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        log(f"figures written to {args.json}")
    return 0 if met == len(with_bar) else 1


def _terminated(signum: int, _frame: object) -> None:
    # Unwind like Ctrl-C: the finally blocks stop nginx and blackbox and remove the work dir.
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _terminated)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("probe_vs_blackbox: interrupted")
        sys.exit(130)
