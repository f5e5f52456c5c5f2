"""The paging chain watches itself: the dead man's switch and the on-call service's /metrics.

- The switch (:class:`portalops.oncall.watchdog.Switch`) on a clock the test sets, paging for
  real through apprise into aiosmtpd: armed by the first Watchdog (or at start with
  ``from_start``), one "monitoring is blind" page per outage, a notice when it is back.
- The service: a Watchdog is recorded, never an incident; ``/metrics`` wants its own token
  and counts what happened.
- End to end with the real binaries: Prometheus evaluates the project's rules (the
  paging-chain group, ``for`` compressed), Alertmanager runs the config ``ops oncall
  alertmanager-config`` renders (Watchdog every 2 s), ``ops oncall serve`` pages by SMTP.
  Breaking the token file Alertmanager reads makes AlertmanagerNotificationsFailing fire and
  the Watchdog stop (a blind page); stopping Prometheus makes the Watchdog stop too. Time is
  compressed by configuration only: ``missing_after`` 8 s, Prometheus's resend delay 1 s (so
  Alertmanager drops an alert 4 s after Prometheus's last word, instead of 4 minutes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from portalops.oncall.config import parse_duration
from portalops.oncall.metrics import OncallMetrics
from portalops.oncall.watchdog import Switch, split
from portalops.settings import Settings
from tests.fixtures.monitoring_stack import running_alertmanager, running_prometheus
from tests.fixtures.oncall import (
    OncallService,
    ServiceProcess,
    alert,
    http,
    mails,
    oncall_config,
    text,
    webhook,
)
from tests.fixtures.paths import PROJECT
from tests.fixtures.procs import wait_until
from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration

RULES = PROJECT / "config" / "prometheus" / "rules" / "portal-ops.rules.yml"
COMPRESS = 60  # for: 2m -> 2 s
REPEAT = 2.0  # the Watchdog's repeat_interval
MISSING_AFTER = 8.0
#: Prometheus stopped -> blind page: Alertmanager keeps the Watchdog 4 x resend delay (4 s)
#: after Prometheus's last word, then MISSING_AFTER, a check period (0.8 s), delivery
BLIND_BOUND = 4 + MISSING_AFTER + 6
T0 = 1_800_000_000.0


def watchdog_alert() -> dict[str, Any]:
    return alert(alertname="Watchdog", severity="info", domain="-", portal="-")


def settings(root: Path, smtp: SMTPServer, **watchdog: Any) -> Settings:
    config = oncall_config(root, smtp)
    config["oncall"]["watchdog"] = {"repeat_interval": "1s", "missing_after": "10s", **watchdog}
    return Settings.model_validate(config)


def subjects(smtp: SMTPServer, to: str) -> list[str]:
    return [str(m["Subject"]) for m in mails(smtp, to)]


def wait_subject(smtp: SMTPServer, to: str, part: str, count: int, timeout: float) -> float:
    """Until ``to`` has ``count`` mails whose subject contains ``part``; the seconds it took."""
    start = time.monotonic()
    wait_until(
        lambda: sum(part in s for s in subjects(smtp, to)) >= count,
        timeout=timeout,
        what=f"{count} mail(s) to {to} about {part!r} (got {subjects(smtp, to)})",
        interval=0.05,
    )
    return time.monotonic() - start


# -- the switch, on a clock the test sets ----------------------------------------------------


def test_split_takes_the_watchdog_out_of_a_payload() -> None:
    both = webhook(watchdog_alert(), alert())
    count, rest = split(both)
    assert count == 1
    assert rest is not None
    assert [a["labels"]["alertname"] for a in rest["alerts"]] == ["PortalDown"]
    assert split(webhook(watchdog_alert())) == (1, None)
    assert split(webhook(alert()))[0] == 0


def test_the_switch_pages_once_per_outage_and_when_it_is_back(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    config = settings(tmp_path, smtp_server)
    metrics = OncallMetrics()

    async def scenario() -> list[bool]:
        switch = Switch(config.oncall, metrics, started=T0)
        fired = [switch.check(T0 + 3600)]  # armed by the first arrival only: never arrived
        switch.arrived(T0 + 10)
        fired += [switch.check(T0 + 15), switch.check(T0 + 20)]  # 10 s: not yet over
        fired.append(switch.check(T0 + 21))  # 11 s without a Watchdog: blind
        fired += [switch.check(T0 + 60), switch.check(T0 + 3600)]  # the same outage
        await asyncio.wait(set(switch._tasks), timeout=20)
        switch.arrived(T0 + 3601)  # back: a notice; armed again
        fired.append(switch.check(T0 + 3605))
        await asyncio.wait(set(switch._tasks), timeout=20)
        fired.append(switch.check(T0 + 3612))  # a new outage pages again
        await asyncio.wait(set(switch._tasks), timeout=20)
        return fired

    assert asyncio.run(scenario()) == [False, False, False, True, False, False, False, True]
    got = mails(smtp_server, "an")  # the primary (the first escalation step) is paged
    assert [str(m["Subject"]) for m in got] == [
        "[NGHIÊM TRỌNG] Hệ thống giám sát bị mù: không nhận được Watchdog",
        "[ĐÃ KHẮC PHỤC] Hệ thống giám sát hoạt động trở lại (Watchdog)",
        "[NGHIÊM TRỌNG] Hệ thống giám sát bị mù: không nhận được Watchdog",
    ]
    assert "trong 11s" in text(got[0])
    assert "monitoring.md#watchdog" in text(got[0])
    assert mails(smtp_server, "binh") == []
    exposition = metrics.exposition().decode()
    assert 'portalops_oncall_pages_total{channel="1:mailto",kind="watchdog",result="sent"} 3.0' in (
        exposition
    )
    assert "portalops_oncall_watchdog_missing 1.0" in exposition


def test_from_start_and_an_english_speaking_target(tmp_path: Path, smtp_server: SMTPServer) -> None:
    """``from_start`` arms the switch at the service's start; ``notify`` picks who is paged,
    in that person's language."""
    config = settings(tmp_path, smtp_server, from_start=True, notify="secondary")

    async def scenario() -> list[bool]:
        switch = Switch(config.oncall, OncallMetrics(), started=T0)
        fired = [switch.check(T0 + 10), switch.check(T0 + 11)]
        await asyncio.wait(set(switch._tasks), timeout=20)
        return fired

    assert asyncio.run(scenario()) == [False, True]
    assert subjects(smtp_server, "binh") == [
        "[CRITICAL] Monitoring is blind: the Watchdog alert stopped arriving"
    ]
    assert "never" in text(mails(smtp_server, "binh")[0])
    assert mails(smtp_server, "an") == []


# -- the service: Watchdog in, /metrics out --------------------------------------------------


def test_the_service_records_the_watchdog_and_serves_metrics_behind_a_token(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    config = oncall_config(tmp_path, smtp_server)
    service = OncallService(tmp_path, config)
    service.start()
    try:
        status, body = service.post(webhook(watchdog_alert()))
        assert (status, body) == (200, {"ok": True, "watchdog": 1})
        assert service.incidents() == []  # never an incident
        status, _ = service.post(webhook(alert(), watchdog_alert()))  # with a real alert
        assert status == 200
        service.wait_tick()
        service.wait_delivered()
        [incident] = service.incidents()
        assert incident["alertname"] == "PortalDown"

        url = f"{service.url}/metrics"
        token = (tmp_path / "state" / "oncall" / "metrics.token").read_text().strip()
        assert (tmp_path / "state" / "oncall" / "metrics.token").stat().st_mode & 0o077 == 0
        assert http(url)[0] == 401
        assert http(url, headers={"Authorization": f"Bearer {service.token}"})[0] == 401
        status, exposition = http(url, headers={"Authorization": f"Bearer {token}"})
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(exposition)
            for s in f.samples
        }
        now = service.clock()
        assert samples[("portalops_oncall_watchdog_last_arrival_timestamp_seconds", ())] == now
        assert samples[("portalops_oncall_incidents_open", ())] == 1
        assert samples[("portalops_oncall_escalation_steps_total", ())] == 1
        sent = (("channel", "1:mailto"), ("kind", "page"), ("result", "sent"))
        assert samples[("portalops_oncall_pages_total", sent)] == 1
        assert samples[("portalops_oncall_last_tick_timestamp_seconds", ())] == now
        assert samples[("portalops_oncall_database_errors_total", ())] == 0
    finally:
        service.stop()


# -- end to end: Prometheus -> Alertmanager -> on-call -> SMTP ------------------------------


def paging_chain_rules(directory: Path) -> Path:
    """The project's paging-chain rule group alone, ``for`` divided by :data:`COMPRESS`."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    [group] = [g for g in doc["groups"] if g["name"] == "paging-chain"]
    for rule in group["rules"]:
        if "for" in rule:
            rule["for"] = f"{round(parse_duration(rule['for']) * 1000 / COMPRESS)}ms"
    path = directory / "paging-chain.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}, allow_unicode=True), encoding="utf-8")
    return path


def test_prometheus_and_alertmanager_failures_page_through_the_switch(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    config = oncall_config(tmp_path, smtp_server)
    config["oncall"]["watchdog"] = {
        "repeat_interval": f"{REPEAT:g}s",
        "missing_after": f"{MISSING_AFTER:g}s",
    }
    config["oncall"]["alertmanager"] = {"group_wait": "1s", "group_interval": "1s"}
    service = ServiceProcess(tmp_path, config)
    am_config = tmp_path / "alertmanager.yml"
    rendered = service.ops("oncall", "alertmanager-config", "--output", str(am_config))
    assert rendered.returncode == 0, rendered.stderr
    service.start()  # creates the webhook and /metrics tokens
    state = tmp_path / "state" / "oncall"
    # Alertmanager reads a copy of its own, as the monitoring role sets it up
    am_token = tmp_path / "alertmanager-webhook.token"
    am_token.write_text((state / "webhook.token").read_text())
    am_token.chmod(0o600)
    am_config.write_text(
        am_config.read_text().replace(str((state / "webhook.token").absolute()), str(am_token))
    )
    oncall_address = config["oncall"]["listen"]
    metrics_auth = {"type": "Bearer", "credentials_file": str(state / "metrics.token")}
    started = time.monotonic()
    try:
        with (
            running_alertmanager(am_config) as alertmanager,
            running_prometheus(
                scrape={"alertmanager": [alertmanager.address], "oncall": [oncall_address]},
                job_options={"oncall": {"authorization": metrics_auth}},
                rule_files=[paging_chain_rules(tmp_path)],
                alertmanagers=[alertmanager.address],
                extra_args=["--rules.alert.resend-delay=1s"],
            ) as prometheus,
        ):
            prometheus.wait_for_targets_up(timeout=30)  # the /metrics token works
            prometheus.wait_for(
                'portalops_oncall_watchdog_last_arrival_timestamp_seconds{job="oncall"} > 0',
                timeout=20,
                what="the on-call service has had a Watchdog",
            )
            assert service.incidents() == []  # the Watchdog is no incident

            # Alertmanager's token file breaks: its webhooks get 401, an alert says so, and
            # the Watchdog stops reaching the service, which pages on its own channels
            am_token.write_text("not-the-service-token-at-all\n")
            broken = time.monotonic()
            firing = prometheus.wait_for_alert("AlertmanagerNotificationsFailing", timeout=30)
            assert firing["labels"]["integration"] == "webhook"
            failing_after = time.monotonic() - broken
            wait_subject(smtp_server, "an", "Watchdog", 1, timeout=MISSING_AFTER + REPEAT + 8)
            blind_after = time.monotonic() - broken
            assert "bị mù" in subjects(smtp_server, "an")[0]

            # fixed: the Watchdog arrives again, and the person hears it is back
            am_token.write_text((state / "webhook.token").read_text())
            wait_subject(smtp_server, "an", "hoạt động trở lại", 1, timeout=REPEAT + 8)

            # Prometheus stops: a blind page within the bound
            os.kill(prometheus.pid, signal.SIGTERM)
            stopped = time.monotonic()
            wait_subject(smtp_server, "an", "bị mù", 2, timeout=BLIND_BOUND)
            stopped_after = time.monotonic() - stopped
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()
    print(  # the figures for docs/alerting.md, read with pytest -s
        f"\nAlertmanagerNotificationsFailing {failing_after:.1f} s after the token broke; "
        f"blind page {blind_after:.1f} s after; blind page {stopped_after:.1f} s after "
        f"Prometheus stopped (bound {BLIND_BOUND:g}); whole test "
        f"{time.monotonic() - started:.0f} s"
    )
