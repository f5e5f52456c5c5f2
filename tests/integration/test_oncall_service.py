"""``ops oncall serve`` as a real process: Alertmanager-shaped webhooks in, e-mail out through
apprise to a real SMTP server (aiosmtpd), signed acknowledge links, escalation that survives
a restart, report reminders. Time is compressed by configuration (waits of seconds), never by
patching the service's clock.

The webhooks are posted by the test in Alertmanager's payload format (version 4); the chain
with a real Prometheus and Alertmanager in front is ``test_alerting_e2e.py``.
"""

from __future__ import annotations

import email.message
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.procs import free_port, wait_until
from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
STEP_WAIT = 3.0  # seconds between escalation steps in these tests


def mailto(smtp: SMTPServer, person: str, port: int | None = None) -> str:
    return (
        f"mailto://{smtp.host}:{port or smtp.port}?from=oncall@vinhphuc.gov.vn"
        f"&to={person}@vinhphuc.gov.vn&mode=insecure"
    )


def oncall_config(root: Path, smtp: SMTPServer, **extra: Any) -> dict[str, Any]:
    port = free_port()
    oncall: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "tick": "0.2s",
        "team_lead": "chi",
        "people": [
            {"id": "an", "name": "Nguyễn Văn An", "channels": [mailto(smtp, "an")]},
            {"id": "binh", "name": "Trần Thị Bình", "lang": "en",
             "channels": [mailto(smtp, "binh")]},
            {"id": "chi", "name": "Lê Minh Chí", "channels": [mailto(smtp, "chi")]},
        ],
        "rotations": {
            "primary": {"people": ["an"], "start": "2026-01-05"},
            "secondary": {"people": ["binh"], "start": "2026-01-05"},
        },
        "escalation": {
            "steps": [
                {"notify": "primary", "wait": f"{STEP_WAIT}s"},
                {"notify": "secondary", "wait": f"{STEP_WAIT}s"},
                {"notify": "team_lead", "wait": f"{STEP_WAIT}s"},
            ],
            "repeat": False,
        },
        "delivery": {"attempts": 2, "retry_delay": "0.2s", "timeout": "5s"},
        "incident_reports": {"initial": "1h", "full": "2h", "remind_before": ["30m"]},
    }  # fmt: skip
    oncall.update(extra)
    return {"state_dir": str(root / "state"), "oncall": oncall}


class Service:
    """One ``ops oncall serve`` process (restartable) and its config."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config_path = root / "ops.yaml"
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        self.url = f"http://{config['oncall']['listen']}"
        self.log = root / "oncall.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def ops(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(PROJECT / "ops.py"), "--config", str(self.config_path)]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def start(self) -> None:
        argv = [sys.executable, str(PROJECT / "ops.py"), "--config", str(self.config_path),
                "-v", "oncall", "serve"]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        wait_until(self.healthy, timeout=20, what=f"ops oncall serve on {self.url}",
                   log=self.log, proc=self.proc)  # fmt: skip

    def healthy(self) -> bool:
        try:
            return _open(f"{self.url}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    @property
    def token(self) -> str:
        return (self.root / "state" / "oncall" / "webhook.token").read_text().strip()

    def post(self, payload: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token if token is None else token}",
        }
        return _open(f"{self.url}/alertmanager", json.dumps(payload).encode(), headers)


def _open(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """GET (or POST ``data``) a loopback URL; the status and the body (JSON if it parses)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read().decode("utf-8")
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode("utf-8"), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    base = {
        "alertname": "PortalDown",
        "severity": "critical",
        "clause": "Art. 19",
        "portal": "soyte.vinhphuc.gov.vn",
        "domain": "soyte.vinhphuc.gov.vn",
        "unit_kind": "department",
    }
    base.update(labels)
    return {
        "status": status,
        "labels": base,
        "annotations": {
            "summary": f"Cổng thông tin {base['domain']} không truy cập được",
            "description": "Thăm dò thất bại liên tục trong 2 phút.",
            "summary_en": f"Portal {base['domain']} is down",
            "description_en": "The probe has failed for 2 minutes.",
            "runbook_url": "https://example.invalid/docs/runbooks/portal-down.md",
        },
        "startsAt": "2026-11-29T01:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-29T01:10:00Z",
        "fingerprint": "f" + base["domain"].replace(".", ""),
    }


def webhook(*alerts: dict[str, Any], group: str | None = None) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4); grouped by alert name and domain unless
    ``group`` names a group key."""
    first = alerts[0]["labels"]
    key = group or f'{{}}:{{alertname="{first["alertname"]}", domain="{first["domain"]}"}}'
    common = {k: v for k, v in first.items() if all(a["labels"].get(k) == v for a in alerts)}
    return {
        "version": "4",
        "groupKey": key,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "oncall",
        "groupLabels": {"alertname": first["alertname"]},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


def mails(smtp: SMTPServer, to: str) -> list[email.message.EmailMessage]:
    return [m.parsed() for m in smtp.received() if any(r.startswith(f"{to}@") for r in m.rcpt_tos)]


def wait_mail(
    smtp: SMTPServer, to: str, count: int, timeout: float
) -> list[email.message.EmailMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = mails(smtp, to)
        if len(got) >= count:
            return got
        time.sleep(0.05)
    subjects = [str(m["Subject"]) for m in mails(smtp, to)]
    pytest.fail(f"{to} got {len(subjects)} mail(s) within {timeout} s, expected {count}: "
                f"{subjects}", pytrace=False)  # fmt: skip


def text(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def ack_link(message: email.message.EmailMessage) -> str:
    match = re.search(r"https?://\S+/ack\?\S+", text(message))
    assert match, text(message)
    return match.group(0)


@pytest.fixture
def service(tmp_path: Path, smtp_server: SMTPServer) -> Iterator[Service]:
    svc = Service(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        yield svc
    finally:
        if svc.proc is not None:
            svc.stop()


def test_escalation_ack_by_signed_link_and_resolution(
    service: Service, smtp_server: SMTPServer
) -> None:
    opened = time.monotonic()
    status, body = service.post(webhook(alert()))
    assert (status, body["opened"]) == (200, [1])

    (first,) = wait_mail(smtp_server, "an", 1, timeout=5)
    assert time.monotonic() - opened < 5
    assert "NGHIÊM TRỌNG" in str(first["Subject"])
    assert "không truy cập được" in str(first["Subject"])
    assert "ops oncall ack 1" in text(first)

    # nobody acknowledges: the secondary (English) gets it after the step's wait
    (second,) = wait_mail(smtp_server, "binh", 1, timeout=STEP_WAIT + 5)
    assert time.monotonic() - opened >= STEP_WAIT - 0.5
    assert str(second["Subject"]).startswith("[CRITICAL] #1 Portal soyte.vinhphuc.gov.vn is down")

    # the same alert again (Alertmanager's repeat) is the same incident: no new page
    status, body = service.post(webhook(alert()))
    assert (status, body["opened"], body["updated"]) == (200, [], [1])

    # binh's link: GET shows a confirmation form and acknowledges nothing
    link = ack_link(second)
    status, page = _open(link)
    assert status == 200
    assert 'method="post"' in page
    done = json.loads(service.ops("--json", "oncall", "incidents").stdout)
    assert done[0]["status"] == "firing"
    # the form's POST acknowledges
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))
    status, page = _open(f"{service.url}/ack", urllib.parse.urlencode(fields).encode())
    assert status == 200
    assert "acknowledged" in page
    time.sleep(STEP_WAIT + 1)
    assert mails(smtp_server, "chi") == []  # the team lead is never woken

    # resolution reaches both who were paged, and only them
    status, body = service.post(webhook(alert("resolved")))
    assert (status, body["resolved"]) == (200, [1])
    (an_resolved,) = wait_mail(smtp_server, "an", 2, timeout=5)[1:]
    (binh_resolved,) = wait_mail(smtp_server, "binh", 2, timeout=5)[1:]
    assert str(an_resolved["Subject"]).startswith("[ĐÃ KHẮC PHỤC] #1")
    assert str(binh_resolved["Subject"]).startswith("[RESOLVED] #1")
    assert mails(smtp_server, "chi") == []

    listed = json.loads(service.ops("--json", "oncall", "incidents").stdout)
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
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    svc = Service(tmp_path, oncall_config(tmp_path, smtp_server, link_ttl="2s"))
    svc.start()
    try:
        assert svc.post(webhook(alert()), token="not-the-token")[0] == 401
        assert svc.post({"no": "alerts"})[0] == 400
        assert svc.post(webhook(alert()))[0] == 200
        (first,) = wait_mail(smtp_server, "an", 1, timeout=5)
        fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ack_link(first)).query))

        def post_ack(changes: dict[str, str]) -> int:
            data = urllib.parse.urlencode({**fields, **changes}).encode()
            return _open(f"{svc.url}/ack", data)[0]

        assert post_ack({"s": fields["s"][:-2] + "AA"}) == 403  # forged signature
        assert post_ack({"i": "2"}) == 403  # signed for another incident
        assert post_ack({"p": "chi"}) == 403  # signed for another person
        time.sleep(2.5)
        assert post_ack({}) == 403  # expired
        incidents = json.loads(svc.ops("--json", "oncall", "incidents").stdout)
        assert incidents[0]["status"] == "firing"
        # the token file is the service's secret: 0600
        token_file = tmp_path / "state" / "oncall" / "webhook.token"
        assert token_file.stat().st_mode & 0o077 == 0
        assert svc.token not in svc.log.read_text(encoding="utf-8")
    finally:
        svc.stop()


def test_restart_mid_escalation_continues_where_it_was(
    service: Service, smtp_server: SMTPServer
) -> None:
    opened = time.monotonic()
    assert service.post(webhook(alert()))[0] == 200
    wait_mail(smtp_server, "an", 1, timeout=5)
    assert service.stop() == 0  # SIGTERM: a clean stop
    time.sleep(1)
    service.start()
    wait_mail(smtp_server, "binh", 1, timeout=STEP_WAIT + 8)
    elapsed = time.monotonic() - opened
    assert STEP_WAIT - 0.5 <= elapsed < STEP_WAIT + 6
    assert len(mails(smtp_server, "an")) == 1  # not paged twice after the restart
    # the CLI acknowledges too (straight into the database the service reads)
    done = service.ops("oncall", "ack", "1", "--by", "binh")
    assert done.returncode == 0, done.stderr
    time.sleep(STEP_WAIT + 1)
    assert mails(smtp_server, "chi") == []


def test_failing_channel_falls_through_to_the_next(tmp_path: Path, smtp_server: SMTPServer) -> None:
    config = oncall_config(tmp_path, smtp_server)
    closed = free_port()  # nothing listens: the first channel fails every attempt
    config["oncall"]["people"][0]["channels"] = [
        mailto(smtp_server, "an-broken", port=closed),
        mailto(smtp_server, "an"),
    ]
    svc = Service(tmp_path, config)
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        wait_mail(smtp_server, "an", 1, timeout=10)
        pages = json.loads(svc.ops("--json", "oncall", "incidents").stdout)[0]["pages"]
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
    svc = Service(tmp_path, config)
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        assert svc.ops("oncall", "ack", "1").returncode == 0
        # acknowledged, but the report clocks keep running: reminders at ~1 s and ~4 s
        got = wait_mail(smtp_server, "chi", 2, timeout=10)
        subjects = [str(m["Subject"]) for m in got]
        assert "báo cáo ban đầu" in subjects[0]
        assert "báo cáo đầy đủ" in subjects[1]
        assert "Nghị định 331/2026" in text(got[0])
        # a warning is not serious: no clocks
        assert svc.post(webhook(alert(severity="warning", domain="x.vinhphuc.gov.vn")))[0] == 200
        assert svc.ops("oncall", "ack", "2").returncode == 0
        time.sleep(7)
        assert len(mails(smtp_server, "chi")) == 2
    finally:
        svc.stop()


def test_serve_without_people_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path)}), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(PROJECT / "ops.py"), "--config", str(config), "oncall", "serve"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 2
    assert "oncall.people is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_group_of_alerts_pages_once_and_resolves_when_all_have(
    service: Service, smtp_server: SMTPServer
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
    incidents = json.loads(service.ops("--json", "oncall", "incidents").stdout)
    assert len(incidents) == 1
    assert len(incidents[0]["alerts"]) == 30
