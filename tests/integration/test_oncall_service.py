"""The on-call service: Alertmanager-shaped webhooks in, e-mail out through apprise to a real
SMTP server (aiosmtpd), signed acknowledge links, escalation that survives a restart, report
reminders.

The service runs in a thread of the test (:class:`tests.fixtures.oncall.OncallService`) on a
clock the test moves: an escalation wait or a report deadline passes when the test says, and
"nobody else was paged" is checked after the engine's tick at that time, never by sleeping.
Two things only a process shows keep ``ops oncall serve`` as a real process on the real
clock: it pages as a daemon and stops with exit status 0 on SIGTERM (here), and it works
behind a real Prometheus and Alertmanager (``test_alerting_e2e.py``). The webhooks are posted
by the test in Alertmanager's payload format (version 4).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cli import run_ops
from tests.fixtures.oncall import (
    STEP_WAIT,
    OncallService,
    ServiceProcess,
    ack_link,
    alert,
    http,
    mails,
    mailto,
    oncall_config,
    text,
    wait_mail,
    webhook,
)
from tests.fixtures.procs import free_port
from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path: Path, smtp_server: SMTPServer) -> Iterator[OncallService]:
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def test_escalation_ack_by_signed_link_and_resolution(
    service: OncallService, smtp_server: SMTPServer
) -> None:
    status, body = service.post(webhook(alert()))
    assert (status, body["opened"]) == (200, [1])

    service.wait_tick()  # the first step is due at once
    (first,) = wait_mail(smtp_server, "an", 1, timeout=5)
    assert "NGHIÊM TRỌNG" in str(first["Subject"])
    assert "không truy cập được" in str(first["Subject"])
    assert "ops oncall ack 1" in text(first)

    # nobody acknowledges: the secondary (English) gets it when the step's wait is over,
    # not a moment before
    service.advance(STEP_WAIT - 0.5)
    assert service.pages() == [(1, "an")]
    service.advance(0.5)
    (second,) = wait_mail(smtp_server, "binh", 1, timeout=5)
    assert str(second["Subject"]).startswith("[CRITICAL] #1 Portal soyte.vinhphuc.gov.vn is down")

    # the same alert again (Alertmanager's repeat) is the same incident: no new page
    status, body = service.post(webhook(alert()))
    assert (status, body["opened"], body["updated"]) == (200, [], [1])

    # binh's link: GET shows a confirmation form and acknowledges nothing
    link = ack_link(second)
    status, page = http(link)
    assert status == 200
    assert 'method="post"' in page
    assert service.incidents()[0]["status"] == "firing"
    # the form's POST acknowledges
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))
    status, page = http(f"{service.url}/ack", urllib.parse.urlencode(fields).encode())
    assert status == 200
    assert "acknowledged" in page
    # the link again: no button, it says so
    status, page = http(link)
    assert status == 200
    assert "is already acknowledged" in page
    assert 'method="post"' not in page
    service.advance(STEP_WAIT * 3)  # past every step that is left
    assert service.pages() == [(1, "an"), (1, "binh")]  # the team lead is never woken

    # resolution reaches both who were paged, and only them
    status, body = service.post(webhook(alert("resolved")))
    assert (status, body["resolved"]) == (200, [1])
    (an_resolved,) = wait_mail(smtp_server, "an", 2, timeout=5)[1:]
    (binh_resolved,) = wait_mail(smtp_server, "binh", 2, timeout=5)[1:]
    assert str(an_resolved["Subject"]).startswith("[ĐÃ KHẮC PHỤC] #1")
    assert str(binh_resolved["Subject"]).startswith("[RESOLVED] #1")
    assert mails(smtp_server, "chi") == []

    service.wait_delivered()
    listed = service.incidents()
    assert listed[0]["status"] == "resolved"
    assert listed[0]["acknowledged_by"] == "binh"
    sent = [(p["kind"], p["person"], p["state"]) for p in listed[0]["pages"]]
    assert sent == [
        ("page", "an", "sent"),
        ("page", "binh", "sent"),
        ("resolved", "an", "sent"),
        ("resolved", "binh", "sent"),
    ]


def test_forged_expired_and_unauthenticated_requests_are_refused(
    tmp_path: Path, smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server, link_ttl="2s"))
    svc.start()
    try:
        assert svc.post(webhook(alert()), token="not-the-token")[0] == 401
        assert svc.post({"no": "alerts"})[0] == 400
        assert svc.post(webhook(alert()))[0] == 200
        (first,) = wait_mail(smtp_server, "an", 1, timeout=5)
        fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ack_link(first)).query))

        def post_ack(changes: dict[str, str]) -> int:
            data = urllib.parse.urlencode({**fields, **changes}).encode()
            return http(f"{svc.url}/ack", data)[0]

        assert post_ack({"s": fields["s"][:-2] + "AA"}) == 403  # forged signature
        assert post_ack({"i": "2"}) == 403  # signed for another incident
        assert post_ack({"p": "chi"}) == 403  # signed for another person
        svc.clock.advance(2.5)  # past the link's 2 s
        assert post_ack({}) == 403  # expired
        assert svc.incidents()[0]["status"] == "firing"
        # the token file is the service's secret: 0600, and never logged
        token_file = tmp_path / "state" / "oncall" / "webhook.token"
        assert token_file.stat().st_mode & 0o077 == 0
        assert "webhook from" in caplog.text  # the refusal was logged, without the token
        assert svc.token not in caplog.text
    finally:
        svc.stop()


def test_restart_mid_escalation_continues_where_it_was(
    service: OncallService, smtp_server: SMTPServer
) -> None:
    assert service.post(webhook(alert()))[0] == 200
    service.wait_tick()
    wait_mail(smtp_server, "an", 1, timeout=5)
    service.stop()
    service.clock.advance(1)
    service.start()  # the same state directory, as after a restart
    assert service.pages() == [(1, "an")]  # not paged twice, the next step not yet due
    service.advance(STEP_WAIT - 1)
    wait_mail(smtp_server, "binh", 1, timeout=5)
    assert len(mails(smtp_server, "an")) == 1
    # the CLI acknowledges too (straight into the database the service reads)
    done = service.ops("oncall", "ack", "1", "--by", "binh")
    assert done.returncode == 0, done.stderr
    service.advance(STEP_WAIT * 3)
    assert service.pages() == [(1, "an"), (1, "binh")]
    assert mails(smtp_server, "chi") == []


def test_serve_as_a_daemon_pages_and_stops_cleanly_on_sigterm(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """The real process on the real clock: ``ops oncall serve`` pages, and SIGTERM stops it
    with status 0 and a last log line (systemd reads both)."""
    svc = ServiceProcess(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        (page,) = wait_mail(smtp_server, "an", 1, timeout=10)
        assert "NGHIÊM TRỌNG" in str(page["Subject"])
    finally:
        assert svc.stop() == 0
    assert "on-call service stopped" in svc.log.read_text(encoding="utf-8")
    assert svc.token not in svc.log.read_text(encoding="utf-8")


def test_failing_channel_falls_through_to_the_next(tmp_path: Path, smtp_server: SMTPServer) -> None:
    config = oncall_config(tmp_path, smtp_server)
    closed = free_port()  # nothing listens: the first channel fails every attempt
    config["oncall"]["people"][0]["channels"] = [
        mailto(smtp_server, "an-broken", port=closed),
        mailto(smtp_server, "an"),
    ]
    svc = OncallService(tmp_path, config)
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        wait_mail(smtp_server, "an", 1, timeout=10)
        svc.wait_delivered()
        pages = svc.incidents()[0]["pages"]
        assert pages[0]["state"] == "sent"
        assert pages[0]["channel"] == "2:mailto"
        assert "channel 1:mailto attempt 2" in pages[0]["error"]
        assert "an-broken" not in json.dumps(pages)  # channel URLs are never shown
    finally:
        svc.stop()


def test_serious_incident_reminds_the_team_lead_before_each_report_deadline(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    config = oncall_config(
        tmp_path,
        smtp_server,
        incident_reports={"initial": "3s", "full": "6s", "remind_before": ["2s"]},
    )
    svc = OncallService(tmp_path, config)
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        assert svc.ops("oncall", "ack", "1").returncode == 0
        # acknowledged, but the report clocks keep running: reminders at 1 s and 4 s
        svc.advance(0.9)
        assert svc.pages("reminder") == []
        svc.advance(0.1)
        got = wait_mail(smtp_server, "chi", 1, timeout=5)
        svc.advance(3)
        got = wait_mail(smtp_server, "chi", 2, timeout=5)
        subjects = [str(m["Subject"]) for m in got]
        assert "báo cáo ban đầu" in subjects[0]
        assert "báo cáo đầy đủ" in subjects[1]
        assert "Nghị định 331/2026" in text(got[0])
        # a warning is not serious: no clocks
        assert svc.post(webhook(alert(severity="warning", domain="x.vinhphuc.gov.vn")))[0] == 200
        assert svc.ops("oncall", "ack", "2").returncode == 0
        svc.advance(7)  # past both deadlines a serious incident would have had
        assert svc.pages("reminder") == [(1, "chi"), (1, "chi")]
        assert len(mails(smtp_server, "chi")) == 2
    finally:
        svc.stop()


def test_serve_without_people_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path)}), encoding="utf-8")
    done = run_ops("oncall", "serve", config=config)
    assert done.returncode == 2
    assert "oncall.people is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_group_of_alerts_pages_once_and_resolves_when_all_have(
    service: OncallService, smtp_server: SMTPServer
) -> None:
    """Thirty commune portals down in one notification group (Alertmanager groups them by
    alertname and unit_kind): one incident, one page listing them; an alert of the group that
    resolves alone changes nothing; the incident resolves when the last one does."""
    communes = [
        alert(domain=f"xa{n:02d}.vinhphuc.gov.vn", unit_kind="commune", severity="warning")
        for n in range(30)
    ]
    group = '{}:{alertname="PortalDown", unit_kind="commune"}'
    status, body = service.post(webhook(*communes, group=group))
    assert (status, body["opened"]) == (200, [1])
    (page,) = wait_mail(smtp_server, "an", 1, timeout=5)
    assert "30 cảnh báo trong nhóm này" in text(page)
    assert "PortalDown xa29.vinhphuc.gov.vn" not in text(page)  # the list stops at 20
    # one commune back: still firing, nobody told
    partly = [alert("resolved", **communes[0]["labels"]), *communes[1:]]
    assert service.post(webhook(*partly, group=group))[1]["updated"] == [1]
    assert service.ops("oncall", "ack", "1", "--by", "an").returncode == 0
    resolved = [alert("resolved", **c["labels"]) for c in communes]
    assert service.post(webhook(*resolved, group=group))[1]["resolved"] == [1]
    got = wait_mail(smtp_server, "an", 2, timeout=5)
    assert str(got[1]["Subject"]).startswith("[ĐÃ KHẮC PHỤC] #1")
    incidents = service.incidents()
    assert len(incidents) == 1
    assert len(incidents[0]["alerts"]) == 30
