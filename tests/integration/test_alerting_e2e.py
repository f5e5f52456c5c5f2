"""The whole alerting chain, real binaries end to end:

nginx serves a portal -> ``ops monitor serve`` probes it -> Prometheus scrapes the exporter and
evaluates the project's own rules file -> Alertmanager, configured by ``ops oncall
alertmanager-config``, routes to ``ops oncall serve`` -> apprise -> aiosmtpd.

Time is compressed by configuration only: the probe interval is 5 s, Prometheus scrapes and
evaluates every second, PortalDown's ``for``/``keep_firing_for`` are divided by
:data:`COMPRESS` in a copy of the rules file, Alertmanager waits 1 s before and between
notifications, and the escalation waits :data:`STEP_WAIT` between steps. No clock inside any
service is patched: this is the test that the real clock drives the chain (the on-call
engine's own timing is tested on a clock the test moves, in ``test_oncall_service.py``).

Bounds (stated, and asserted):

- a page reaches the primary within :data:`PAGE_BOUND` s of nginx stopping: probe interval
  (<= 5.5 s) + scrape (1 s) + ``for`` (2 s) + evaluation (1 s) + group_wait (1 s) + delivery;
- the resolution reaches both people within :data:`RESOLVE_BOUND` s of nginx starting again:
  probe (<= 5.5 s) + scrape + ``keep_firing_for`` (5 s) + evaluation + group_interval.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from portalops.oncall.config import parse_duration
from tests.fixtures.monitoring_stack import running_alertmanager, running_prometheus
from tests.fixtures.nginx import NginxServer
from tests.fixtures.oncall import ServiceProcess, ack_link, http, mails, oncall_config, wait_mail
from tests.fixtures.paths import OPS_PY, PROJECT
from tests.fixtures.procs import free_port, run, start_process, stop_process, wait_until
from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration

RULES = PROJECT / "config" / "prometheus" / "rules" / "portal-ops.rules.yml"
COMPRESS = 60  # PortalDown: for 2m -> 2 s, keep_firing_for 5m -> 5 s
STEP_WAIT = 8.0
PAGE_BOUND = 30.0
RESOLVE_BOUND = 40.0


def compressed_rules(directory: Path, alerts: set[str]) -> Path:
    """A copy of the project's rules file with ``for`` and ``keep_firing_for`` of ``alerts``
    divided by :data:`COMPRESS`; expressions, labels and texts unchanged. Without the
    paging-chain group (test_paging_chain.py's): nothing here scrapes Alertmanager or the
    on-call service, so AlertmanagerDown and OncallDown would page from their absent()."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    doc["groups"] = [g for g in doc["groups"] if g["name"] != "paging-chain"]
    touched = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in alerts:
                touched.add(rule["alert"])
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        millis = round(parse_duration(rule[key]) * 1000 / COMPRESS)
                        rule[key] = f"{millis}ms"
    assert touched == alerts, f"{RULES} has no rule for {alerts - touched}"
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def exporter(config: Path, address: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, str(OPS_PY), "--config", str(config),
            "monitor", "serve", "--listen", address]  # fmt: skip
    proc = start_process(argv, log)
    try:
        wait_until(lambda: _healthy(f"http://{address}/metrics"), timeout=20,
                   what=f"ops monitor serve on {address}", log=log, proc=proc)  # fmt: skip
        yield proc
    finally:
        stop_process(proc)


def _healthy(url: str) -> bool:
    try:
        return http(url, timeout=1)[0] == 200
    except OSError:
        return False


def test_portal_down_pages_escalates_is_acknowledged_and_resolves(
    tmp_path: Path, nginx_server: NginxServer, smtp_server: SMTPServer
) -> None:
    config = oncall_config(tmp_path, smtp_server)
    oncall = config["oncall"]
    oncall["escalation"]["steps"] = [
        {"notify": "primary", "wait": f"{STEP_WAIT:g}s"},
        {"notify": "secondary", "wait": f"{STEP_WAIT:g}s"},
        {"notify": "team_lead", "wait": f"{STEP_WAIT:g}s"},
    ]
    oncall["alertmanager"] = {
        "group_wait": "1s",
        "group_interval": "1s",
        "repeat_interval": "1h",
        "critical_repeat_interval": "1h",
    }
    exporter_address = f"127.0.0.1:{free_port()}"
    config["monitor"] = {
        "estate": False,
        "urls": [nginx_server.url],
        "modules": ["http"],
        "interval": 5,
        "timeout": 2,
    }
    service = ServiceProcess(tmp_path, config)  # writes ops.yaml
    am_config = tmp_path / "alertmanager.yml"
    rendered = service.ops("oncall", "alertmanager-config", "--output", str(am_config))
    assert rendered.returncode == 0, rendered.stderr
    service.start()  # creates the webhook token the rendered config points at

    with (
        exporter(service.config_path, exporter_address, tmp_path / "exporter.log"),
        running_alertmanager(am_config) as alertmanager,
        running_prometheus(
            scrape={"portal-ops": [exporter_address]},
            rule_files=[compressed_rules(tmp_path, {"PortalDown"})],
            alertmanagers=[alertmanager.address],
        ) as prometheus,
    ):
        prometheus.wait_for_targets_up(timeout=30)
        prometheus.wait_for('probe_success{job="portal-ops"} == 1', timeout=30)

        # nginx stops: the primary is paged
        run(nginx_server.nginx_argv("-s", "stop"), what="nginx -s stop")
        stopped = time.monotonic()
        (page,) = wait_mail(smtp_server, "an", 1, timeout=PAGE_BOUND)
        paged_after = time.monotonic() - stopped
        assert paged_after < PAGE_BOUND
        assert "PortalDown" in str(page["Subject"]) or "không truy cập được" in str(page["Subject"])
        assert str(page["Subject"]).startswith("[NGHIÊM TRỌNG]")

        # the on-call service restarts mid-escalation; the secondary is still paged on time
        assert service.stop() == 0
        service.start()
        (second,) = wait_mail(smtp_server, "binh", 1, timeout=STEP_WAIT + 10)
        escalated_after = time.monotonic() - stopped - paged_after
        assert STEP_WAIT - 1 <= escalated_after < STEP_WAIT + 8
        assert len(mails(smtp_server, "an")) == 1  # nobody paged twice

        # the secondary acknowledges with the signed link: nobody else is paged
        fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ack_link(second)).query))
        status, _ = http(f"{service.url}/ack", urllib.parse.urlencode(fields).encode())
        assert status == 200
        # no step is left to run: an acknowledged incident has none due (that the engine
        # then pages nobody, whatever the time, test_oncall_service.py shows on its clock)
        (acked,) = service.incidents()
        assert (acked["status"], acked["next_step_at"]) == ("acknowledged", None)
        assert mails(smtp_server, "chi") == []
        assert len(mails(smtp_server, "binh")) == 1

        # nginx is back: both who were paged hear it is resolved
        restarted = start_process(nginx_server.nginx_argv("-g", "daemon off;"),
                                  tmp_path / "nginx-again.log")  # fmt: skip
        try:
            back = time.monotonic()
            an = wait_mail(smtp_server, "an", 2, timeout=RESOLVE_BOUND)
            binh = wait_mail(smtp_server, "binh", 2, timeout=RESOLVE_BOUND)
            resolved_after = time.monotonic() - back
            assert str(an[1]["Subject"]).startswith("[ĐÃ KHẮC PHỤC]")
            assert str(binh[1]["Subject"]).startswith("[RESOLVED]")
            assert mails(smtp_server, "chi") == []
        finally:
            stop_process(restarted)

    (incident,) = service.incidents()
    assert incident["alertname"] == "PortalDown"
    assert incident["status"] == "resolved"
    assert incident["acknowledged_by"] == "binh"
    service.stop()
    print(  # the figures for docs/alerting.md, read with pytest -s
        f"\npaged {paged_after:.1f} s after nginx stopped (bound {PAGE_BOUND:g}); "
        f"secondary {escalated_after:.1f} s later (wait {STEP_WAIT:g}); "
        f"resolved {resolved_after:.1f} s after nginx started (bound {RESOLVE_BOUND:g})"
    )
