"""``ops monitor check | baseline | serve`` against real nginx sites and hostile servers.

Every site of the ``portal_sites`` fixture has exactly one defect; the prober must name it
with its stable finding code, and nothing else of note. Names reach 127.0.0.1 through
``monitor.resolve`` pins, as curl's ``--resolve`` does; no system DNS is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.hostile import HostileServers
from tests.fixtures.paths import PROJECT
from tests.fixtures.portal_sites import PortalSites
from tests.fixtures.procs import free_port

pytestmark = pytest.mark.integration

NOTABLE = ("critical", "warning")


class Monitor:
    def __init__(self, root: Path, sites: PortalSites, **extra: Any) -> None:
        self.root, self.sites = root, sites
        self.config = root / "ops.yaml"
        monitor = {
            "resolve": sites.resolve_pins(),
            "ca_file": str(sites.ca_file),
            "http_port": sites.http_port,
            "https_port": sites.https_port,
            "timeout": 5,
            "estate": False,  # the project's own units.yaml names real portals: not here
            "expect": {
                "links": ["https://dichvucong.vinhphuc.gov.vn", "https://congbao.vinhphuc.gov.vn"],
                "elements": ["form", "input[name=q]"],
            },
            **extra,
        }
        self.config.write_text(
            yaml.safe_dump({"state_dir": str(root / "state"), "monitor": monitor}),
            encoding="utf-8",
        )

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(PROJECT / "ops.py"), "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        done = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def check(self, *names: str) -> tuple[int, dict[str, dict[str, Any]]]:
        done = self.run("--json", "monitor", "check", *(self.sites.url(n) for n in names))
        results = json.loads(done.stdout)
        return done.returncode, {r["domain"].split(".")[0]: r for r in results}


def notable(result: dict[str, Any]) -> set[str]:
    return {f["code"] for f in result["findings"] if f["severity"] in NOTABLE}


@pytest.fixture
def monitor(portal_sites: PortalSites, tmp_path: Path) -> Monitor:
    return Monitor(tmp_path, portal_sites)


def test_a_well_configured_portal_is_up_and_clean(monitor: Monitor) -> None:
    code, results = monitor.check("good")
    good = results["good"]
    assert code == 0, good["findings"]
    assert good["success"] is True
    assert good["status_code"] == 200
    assert good["portal"] == good["domain"] == monitor.sites.hostname("good")
    assert good["tls_version"] == "TLSv1.3"
    assert good["cert_days_left"] > 60
    assert good["grade"] in ("A+", "A"), good
    assert notable(good) == set()
    # no AAAA pin: said, but only as information
    assert {f["code"] for f in good["findings"]} == {"dns.no_aaaa"}


@pytest.mark.parametrize(
    ("site", "up", "codes"),
    [
        ("expired", False, {"tls.expired"}),
        ("wrongname", False, {"tls.hostname_mismatch"}),
        ("selfsigned", False, {"tls.untrusted"}),
        # a TLS 1.0 server's suites for 1.0 are outside the TLS 1.2 profile too
        ("tls10", True, {"tls.legacy_protocol", "tls.weak_cipher"}),
        # negotiates a good suite, accepts a bad one when that is all a client offers
        ("weakcipher", True, {"tls.weak_cipher"}),
        ("nohsts", True, {"headers.hsts_missing"}),
        ("unsafeinline", True, {"headers.csp_unsafe_inline"}),
        ("gitexposed", True, {"exposure.git"}),
        ("soft404", True, set()),  # answers 200 to everything: no exposure
        ("loop", False, {"http.redirect_loop"}),
        ("error500", False, {"http.status"}),
        ("latin1", True, {"http.not_utf8"}),
        ("expiring", True, {"tls.expiring"}),
    ],
)
def test_each_defect_is_named(monitor: Monitor, site: str, up: bool, codes: set[str]) -> None:
    code, results = monitor.check(site)
    result = results[site]
    assert result["success"] is up, result
    assert notable(result) == codes, result["findings"]
    assert code == (0 if up and not codes else 1)


def test_a_certificate_that_fails_verification_still_reports_its_expiry(monitor: Monitor) -> None:
    _, results = monitor.check("expired")
    assert results["expired"]["cert_days_left"] < 0


def test_http_only_site_is_told_to_redirect(monitor: Monitor) -> None:
    done = monitor.run("--json", "monitor", "check", monitor.sites.url("http-only", "http"))
    [result] = json.loads(done.stdout)
    assert "http.no_https_redirect" in {f["code"] for f in result["findings"]}


def test_defacement_against_the_baseline(monitor: Monitor) -> None:
    good, defaced = monitor.sites.url("good"), monitor.sites.url("defaced")
    done = monitor.run("--json", "monitor", "baseline", good, defaced)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert sorted(doc["taken"]) == sorted(monitor.sites.hostname(n) for n in ("good", "defaced"))
    # the defaced site's baseline is taken while it was still the good page
    path = Path(doc["file"])
    baselines = json.loads(path.read_text(encoding="utf-8"))
    baselines[monitor.sites.hostname("defaced")] = baselines[monitor.sites.hostname("good")]
    path.write_text(json.dumps(baselines), encoding="utf-8")

    code, results = monitor.check("good", "defaced")
    assert code == 1
    assert "defacement.drift" not in notable(results["good"])
    codes = notable(results["defaced"])
    assert {"defacement.marker", "defacement.drift"} <= codes
    [marker] = [f for f in results["defaced"]["findings"] if f["code"] == "defacement.marker"]
    assert "hacked by" in (marker["message"] + marker["evidence"]).lower()


def test_hostile_servers_fail_within_the_timeout_and_spare_the_others(
    portal_sites: PortalSites, hostile: HostileServers, tmp_path: Path
) -> None:
    monitor = Monitor(tmp_path, portal_sites, timeout=3)
    config = yaml.safe_load(monitor.config.read_text(encoding="utf-8"))
    config["monitor"]["resolve"] += hostile.resolve_pins()
    monitor.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    behaviours = ["silent", "trickle", "huge_headers", "endless_body", "gzip_bomb", "reset"]
    garbage_tls = f"https://{hostile.hostname}:{hostile.port('garbage_tls')}/"
    urls = [hostile.url(b) for b in behaviours] + [hostile.url(b, tls=True) for b in behaviours]
    urls.append(garbage_tls)
    started = time.monotonic()
    out, err = tmp_path / "out.json", tmp_path / "err.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            monitor.argv("--json", "monitor", "check", "--module", "http",
                         monitor.sites.url("good"), *urls),
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
        # the prober's own high-water mark (VmHWM restarts at exec; ru_maxrss would carry
        # the forking test process's size), read until it exits
        peak_kib = 0
        while proc.poll() is None and time.monotonic() - started < 60:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")]
                peak_kib = max(peak_kib, int(hwm[0])) if hwm else peak_kib
            time.sleep(0.05)
        proc.wait(timeout=30)
    elapsed = time.monotonic() - started
    assert "Traceback" not in err.read_text(), err.read_text()
    results = {r["target"]: r for r in json.loads(out.read_text())}
    assert results[monitor.sites.url("good")]["success"] is True
    expected = {
        "silent": "http.timeout",
        "trickle": "http.timeout",
        "huge_headers": "http.down",
        "reset": "http.down",
    }
    cases = [
        (hostile.url(b, tls=tls), code) for b, code in expected.items() for tls in (False, True)
    ]
    cases.append((garbage_tls, "tls.handshake"))
    for url, code in cases:
        result = results[url]
        assert result["success"] is False, result
        assert code in {f["code"] for f in result["findings"]}, (url, result["findings"])
    # bodies are cut at the limit, not read forever: the endless body and the bomb end in time
    for behaviour in ("endless_body", "gzip_bomb"):
        for tls in (False, True):
            result = results[hostile.url(behaviour, tls=tls)]
            assert result["duration_seconds"] < 4, result
    assert elapsed < 30, elapsed  # all at once: the slowest costs its timeout, not the sum
    # memory stays bounded: a 1 GiB gzip bomb, an endless body and 1 MB of headers later, the
    # prober's peak stayed small
    peak_mib = peak_kib / 1024
    assert peak_mib > 20, peak_mib  # it was measured
    assert peak_mib < 200, peak_mib


def http_get(url: str) -> tuple[int, str]:
    """GET a loopback URL of the exporter under test."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - http://127.0.0.1 only
        return response.status, response.read().decode()


def samples(text: str) -> dict[tuple[str, str, str], float]:
    """(metric, domain, code) -> value; code is "" for metrics without one."""
    return {
        (s.name, s.labels.get("domain", ""), s.labels.get("code", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_exporter_serves_blackbox_metrics_and_probe(monitor: Monitor) -> None:
    port = free_port()
    urls = [monitor.sites.url(n) for n in ("good", "expired", "gitexposed")]
    config = yaml.safe_load(monitor.config.read_text(encoding="utf-8"))
    reachable, closed = f"127.0.0.1:{monitor.sites.https_port}", f"127.0.0.1:{free_port()}"
    config["monitor"].update(urls=urls, interval=5, uplink=[reachable, closed])
    monitor.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = subprocess.Popen(
        monitor.argv("monitor", "serve", "--listen", f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base, host = f"http://127.0.0.1:{port}", monitor.sites.hostname
    try:
        deadline, text, got = time.monotonic() + 60, "", {}
        while time.monotonic() < deadline:
            try:
                _, text = http_get(f"{base}/metrics")
            except OSError:
                time.sleep(0.3)
                continue
            got = samples(text)
            if sum(1 for key in got if key[0] == "probe_success") == len(urls):
                break
            time.sleep(0.5)
        assert time.monotonic() < deadline, sorted(got)
        assert got[("probe_success", host("good"), "")] == 1
        assert got[("probe_success", host("expired"), "")] == 0
        assert got[("portalops_exposed_path", host("gitexposed"), "exposure.git")] == 1
        assert got[("portalops_exposed_path", host("good"), "exposure.git")] == 0
        assert got[("probe_http_status_code", host("good"), "")] == 200
        assert got[("probe_ssl_earliest_cert_expiry", host("expired"), "")] < time.time()
        assert got[("portalops_security_grade_below_minimum", host("good"), "")] == 0
        uplink = {
            s.labels["target"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "portalops_uplink_up"
        }
        assert uplink == {reachable: 1, closed: 0}
        # the monitoring host's and the sweeper's own series carry no target
        own = {
            "portalops_uplink_up",
            "portalops_probe_oldest_result_age_seconds",
            "portalops_probe_stale_targets",
            "portalops_probe_stale_after_seconds",
            "portalops_exporter_tasks",
        }
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(("probe_", "portalops_")) and sample.name not in own:
                    assert {"portal", "unit_kind", "domain"} <= set(sample.labels), sample
                elif sample.name in own:
                    assert not sample.labels.keys() & {"portal", "domain"}, sample
        # blackbox's multi-target endpoint: one probe, now, only the asked module
        status, body = http_get(f"{base}/probe?target={urls[0]}&module=http")
        assert status == 200
        assert samples(body)[("probe_success", host("good"), "")] == 1
        assert not [k for k in samples(body) if k[0] == "portalops_exposed_path"]
        assert http_get(f"{base}/healthz") == (200, "ok\n")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_a_closed_port_is_down_promptly(portal_sites: PortalSites, tmp_path: Path) -> None:
    """Nothing listens: http.down at once, for an http:// URL as for an https:// one whose
    http:// port is closed too (the HTTPS URL is tried once, not in a loop)."""
    closed = free_port()
    monitor = Monitor(tmp_path, portal_sites, http_port=closed)
    config = yaml.safe_load(monitor.config.read_text(encoding="utf-8"))
    host = portal_sites.hostname("good")
    config["monitor"]["resolve"].append(f"{host}:{closed}:127.0.0.1")
    monitor.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    started = time.monotonic()
    done = monitor.run(
        "--json", "monitor", "check", f"http://{host}:{closed}/", portal_sites.url("good")
    )
    assert time.monotonic() - started < 20
    by_url = {r["target"]: r for r in json.loads(done.stdout)}
    down = by_url[f"http://{host}:{closed}/"]
    assert down["success"] is False
    assert [f["code"] for f in down["findings"] if f["severity"] != "info"] == ["http.down"]
    # no HTTP listener: the HTTPS page is judged on its own, and is fine
    assert by_url[portal_sites.url("good")]["success"] is True


def test_ipv6_reachability_is_an_answer_over_ipv6(
    portal_sites: PortalSites, tmp_path: Path
) -> None:
    """An AAAA (pinned to ::1) is reachable only if the site itself answers there: ``good``
    listens on [::1]; ``nohsts`` pinned to ::1 reaches good's vhost and certificate, so
    its IPv6 "site" is not a working one; a name without AAAA is only told so (info)."""
    if not portal_sites.ipv6:
        pytest.skip("this machine has no IPv6 loopback (::1) to listen on")
    monitor = Monitor(tmp_path, portal_sites)
    config = yaml.safe_load(monitor.config.read_text(encoding="utf-8"))
    port = portal_sites.https_port
    for name in ("good", "nohsts"):
        config["monitor"]["resolve"].append(f"{portal_sites.hostname(name)}:{port}:[::1]")
    monitor.config.write_text(yaml.safe_dump(config), encoding="utf-8")

    _, results = monitor.check("good", "nohsts", "ecdsa")
    good, nohsts = results.pop("good"), results.pop("nohsts")
    (no_aaaa,) = results.values()

    assert good["addresses"]["AAAA"] == ["::1"]
    assert good["ipv6_reachable"] is True
    assert "dns.ipv6_unreachable" not in {f["code"] for f in good["findings"]}
    assert nohsts["ipv6_reachable"] is False
    (finding,) = [f for f in nohsts["findings"] if f["code"] == "dns.ipv6_unreachable"]
    assert finding["severity"] == "warning"
    assert "::1" in finding["message"]
    assert "hostname" in finding["evidence"].lower()
    assert no_aaaa["ipv6_reachable"] is None
    assert "dns.no_aaaa" in {f["code"] for f in no_aaaa["findings"]}


def test_serve_names_a_listen_address_it_cannot_use(tmp_path: Path) -> None:
    """A malformed --listen is bad input (2); a taken port is an operational failure (3);
    both named, neither a traceback, and nothing is probed."""
    from tests.fixtures.cli import run_ops

    bad = run_ops("monitor", "serve", "--listen", "nowhere", cwd=tmp_path)
    assert bad.code == 2, bad.stderr
    assert "--listen 'nowhere': expected host:port" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        busy = run_ops("monitor", "serve", "--listen", address, cwd=tmp_path)
    assert busy.code == 3, busy.stderr
    assert f"ops: cannot listen on {address}: " in busy.stderr
    assert "Traceback" not in bad.stderr + busy.stderr
