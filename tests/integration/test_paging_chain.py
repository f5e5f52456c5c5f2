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
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from portalops.oncall.config import parse_duration
from portalops.oncall.metrics import OncallMetrics
from portalops.oncall.watchdog import RETRY_FIRST, Switch, split
from portalops.settings import Settings
from tests.fixtures.monitoring_stack import running_alertmanager, running_prometheus
from tests.fixtures.oncall import (
    OncallService,
    ServiceProcess,
    alert,
    http,
    mails,
    mailto,
    oncall_config,
    text,
    webhook,
)
from tests.fixtures.paths import OPS_PY, PROJECT
from tests.fixtures.procs import LOOPBACK, free_port, wait_until
from tests.fixtures.smtp import ReceivedMessage, SMTPServer, _Collector

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


def test_nobody_on_call_is_no_failed_delivery(tmp_path: Path, smtp_server: SMTPServer) -> None:
    """A watchdog step that finds nobody on call (the primary rotation has not begun) counts
    as ``result="nobody"``, not as a failed channel (OncallDeliveriesFailing counts those),
    and the next step is paged at once."""
    document = oncall_config(tmp_path, smtp_server)
    document["oncall"]["rotations"]["primary"]["start"] = "2030-01-07"  # after T0
    document["oncall"]["watchdog"] = {"repeat_interval": "1s", "missing_after": "10s"}
    config = Settings.model_validate(document)
    metrics = OncallMetrics()
    metrics.precreate(["1:mailto"])

    async def scenario() -> bool:
        switch = Switch(config.oncall, metrics, started=T0)
        switch.arrived(T0 + 10)
        fired = switch.check(T0 + 21)
        await asyncio.wait(set(switch._tasks), timeout=20)
        return fired

    assert asyncio.run(scenario())

    def pages(channel: str, result: str) -> float | None:
        labels = {"kind": "watchdog", "channel": channel, "result": result}
        return metrics.registry.get_sample_value("portalops_oncall_pages_total", labels)

    assert (pages("none", "nobody"), pages("none", "failed")) == (1, 0)
    assert (pages("1:mailto", "sent"), pages("1:mailto", "failed")) == (1, 0)
    assert subjects(smtp_server, "binh")  # the secondary, at once


def test_split_takes_the_watchdog_out_of_a_payload() -> None:
    both = webhook(watchdog_alert(), alert())
    count, rest = split(both)
    assert count == 1
    assert rest is not None
    assert [a["labels"]["alertname"] for a in rest["alerts"]] == ["PortalDown"]
    assert split(webhook(watchdog_alert())) == (1, None)
    assert split(webhook(alert()))[0] == 0
    # a resolved Watchdog (Prometheus stopped evaluating it) is taken out but is no arrival
    assert split(webhook(dict(watchdog_alert(), status="resolved"))) == (0, None)


def test_the_switch_pages_once_per_outage_up_the_chain_and_when_it_is_back(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """One blind page per outage, walking the escalation chain on the steps' waits while the
    Watchdog stays away; "back" to everyone who got it."""
    config = settings(tmp_path, smtp_server)
    metrics = OncallMetrics()

    async def scenario() -> list[bool]:
        switch = Switch(config.oncall, metrics, started=T0)
        fired = [switch.check(T0 + 3600)]  # armed by the first arrival only: never arrived
        switch.arrived(T0 + 10)
        fired += [switch.check(T0 + 15), switch.check(T0 + 20)]  # 10 s: not yet over
        fired.append(switch.check(T0 + 21))  # 11 s without a Watchdog: blind
        await asyncio.wait(set(switch._tasks), timeout=20)
        fired.append(switch.check(T0 + 22))  # within the first step's wait: nobody else
        fired += [switch.check(T0 + 60), switch.check(T0 + 3600)]  # steps 2 and 3, no new page
        await asyncio.wait(set(switch._tasks), timeout=20)
        switch.arrived(T0 + 3601)  # back: a notice to all three; armed again
        fired.append(switch.check(T0 + 3605))
        await asyncio.wait(set(switch._tasks), timeout=20)
        fired.append(switch.check(T0 + 3612))  # a new outage pages again
        await asyncio.wait(set(switch._tasks), timeout=20)
        return fired

    assert asyncio.run(scenario()) == [False, False, False, True, False, False, False, False, True]
    blind = "[NGHIÊM TRỌNG] Hệ thống giám sát bị mù: không nhận được Watchdog"
    back = "[ĐÃ KHẮC PHỤC] Hệ thống giám sát hoạt động trở lại (Watchdog)"
    got = mails(smtp_server, "an")  # the primary (the first escalation step) first
    assert [str(m["Subject"]) for m in got] == [blind, back, blind]
    assert "trong 11s" in text(got[0])
    assert "monitoring.md#watchdog" in text(got[0])
    assert subjects(smtp_server, "binh") == [
        "[CRITICAL] Monitoring is blind: the Watchdog alert stopped arriving",
        "[RESOLVED] Monitoring is back (Watchdog arrives again)",
    ]
    assert subjects(smtp_server, "chi") == [blind, back]
    exposition = metrics.exposition().decode()
    assert 'portalops_oncall_pages_total{channel="1:mailto",kind="watchdog",result="sent"} 7.0' in (
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
        resolved = dict(watchdog_alert(), status="resolved")  # no sign of life
        assert service.post(webhook(resolved)) == (200, {"ok": True, "watchdog": 0})
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
        # every failure series exists from the start at 0, so its first failure is an
        # increase() (a counter born at 1 would not be)
        for kind in ("page", "watchdog"):
            for channel in ("1:mailto", "none"):
                failed = (("channel", channel), ("kind", kind), ("result", "failed"))
                assert samples[("portalops_oncall_pages_total", failed)] == 0
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


# -- a blind page that must get through: retries, escalation, restarts, a broken database ----


@contextlib.contextmanager
def smtp_on(port: int) -> Iterator[SMTPServer]:
    """An SMTP server on ``port`` from now on (a mail server that comes back)."""
    messages: list[ReceivedMessage] = []
    lock = threading.Lock()
    controller = Controller(_Collector(messages, lock), hostname=LOOPBACK, port=port,
                            ready_timeout=10, enable_SMTPUTF8=True)  # fmt: skip
    controller.start()
    try:
        yield SMTPServer(host=LOOPBACK, port=port, messages=messages, _lock=lock)
    finally:
        controller.stop()


def test_an_undelivered_blind_page_is_retried_and_escalated(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """The first person's mail server is down: the blind page escalates at once to the next
    step, and is retried to the first person until their server is back. "Monitoring is
    back" goes to those who got the blind page, never to one who did not."""
    an_port, chi_port = free_port(), free_port()  # nothing listens on either (yet)
    config = oncall_config(tmp_path, smtp_server)
    people = config["oncall"]["people"]
    people[0]["channels"] = [mailto(smtp_server, "an", port=an_port)]
    people[2]["channels"] = [mailto(smtp_server, "chi", port=chi_port)]
    config["oncall"]["watchdog"] = {"repeat_interval": "1s", "missing_after": "10s"}
    service = OncallService(tmp_path, config)
    service.start()
    try:
        assert service.post(webhook(watchdog_alert())) == (200, {"ok": True, "watchdog": 1})
        service.clock.advance(11)  # blind: an fails, binh is paged at once
        wait_subject(smtp_server, "binh", "Monitoring is blind", 1, timeout=10)
        service.clock.advance(3)  # binh's step waited: chi (who cannot be reached either)
        wait_until(lambda: watchdog_pages(service, "failed") >= 2, timeout=10,
                   what="the blind pages to an and chi to fail")  # fmt: skip
        with smtp_on(an_port) as an_server:
            service.clock.advance(RETRY_FIRST)  # an's retry is due, and an's server is back
            wait_subject(an_server, "an", "bị mù", 1, timeout=10)
            wait_until(lambda: watchdog_pages(service, "failed") >= 3, timeout=10,
                       what="chi's retry to fail")  # fmt: skip
            with smtp_on(chi_port) as chi_server:  # chi could be reached now, but never knew
                assert service.post(webhook(watchdog_alert()))[0] == 200
                wait_subject(an_server, "an", "hoạt động trở lại", 1, timeout=10)
                wait_subject(smtp_server, "binh", "Monitoring is back", 1, timeout=10)
                wait_until(lambda: watchdog_pages(service, "sent") >= 4, timeout=10,
                           what="4 watchdog pages sent")  # fmt: skip
                assert chi_server.received() == []
                assert watchdog_pages(service, "sent") == 4
    finally:
        service.stop()


def watchdog_pages(endpoint: OncallService | ServiceProcess, result: str) -> float:
    """``pages_total{kind="watchdog",result=...}`` from the service's ``/metrics``."""
    token = (endpoint.root / "state" / "oncall" / "metrics.token").read_text().strip()
    status, exposition = http(f"{endpoint.url}/metrics",
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 200
    return sum(
        s.value
        for f in text_string_to_metric_families(exposition)
        for s in f.samples
        if s.name == "portalops_oncall_pages_total"
        and s.labels["kind"] == "watchdog"
        and s.labels["result"] == result
    )


def quick_switch(tmp_path: Path, smtp: SMTPServer) -> ServiceProcess:
    """``ops oncall serve`` on the real clock, blind 2 s after the last Watchdog."""
    config = oncall_config(tmp_path, smtp)
    config["oncall"]["watchdog"] = {"repeat_interval": "1s", "missing_after": "2s"}
    return ServiceProcess(tmp_path, config)


def test_a_restart_during_an_outage_keeps_the_switch_armed(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """The last arrival and the open outage survive a restart (``watchdog.json``)."""
    service = quick_switch(tmp_path, smtp_server)
    service.start()
    try:
        assert service.post(webhook(watchdog_alert()))[0] == 200
        assert service.stop() == 0  # restarted while Prometheus is down
        service.start()
        wait_subject(smtp_server, "an", "bị mù", 1, timeout=10)
        state = tmp_path / "state" / "oncall" / "watchdog.json"
        assert state.stat().st_mode & 0o077 == 0
        wait_until(lambda: '"received": ["an"]' in state.read_text(), timeout=10,
                   what="the delivered blind page kept in watchdog.json")  # fmt: skip
        assert service.stop() == 0  # restarted again: the outage is still open
        service.start()
        assert service.post(webhook(watchdog_alert()))[0] == 200
        wait_subject(smtp_server, "an", "hoạt động trở lại", 1, timeout=10)
        assert sum("bị mù" in s for s in subjects(smtp_server, "an")) == 1
    finally:
        if service.proc is not None:
            assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()


def test_a_database_that_refuses_writes_makes_the_switch_page(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """A Watchdog reaching a service that cannot record alerts does not count: the blind
    page says why, through channels that need no database."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    service = quick_switch(tmp_path, smtp_server)
    service.start()
    assert service.stop() == 0
    database = tmp_path / "state" / "oncall" / "oncall.sqlite"
    if subprocess.run([chattr, "+i", str(database)], check=False).returncode != 0:
        pytest.skip("this filesystem refuses chattr +i")
    try:
        argv = [sys.executable, str(OPS_PY), "--config", str(service.config_path),
                "-v", "oncall", "serve"]  # fmt: skip
        with service.log.open("ab") as log:
            service.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        wait_until(lambda: http_status(f"{service.url}/healthz") == 503, timeout=20,
                   what="/healthz to say 503", log=service.log, proc=service.proc)  # fmt: skip
        assert service.post(webhook(alert()))[0] == 503  # no incident can be recorded
        assert service.post(webhook(watchdog_alert()))[0] == 200
        wait_subject(smtp_server, "an", "không ghi được cảnh báo", 1, timeout=10)
        assert "refuses writes" in text(mails(smtp_server, "an")[0])
        assert service.stop() == 0
    finally:
        subprocess.run([chattr, "-i", str(database)], check=False)
        if service.proc is not None:
            service.stop()


def http_status(url: str) -> int | None:
    try:
        return http(url, timeout=1)[0]
    except OSError:
        return None
