"""The on-call service when things go wrong: a database that will not record, a channel that
never answers, replayed webhooks, hostile requests, secrets at -v, a recreated database.

Everything is driven from outside: real HTTP to the running service, a real SMTP server
(aiosmtpd), a TCP server that accepts and never answers, the real SQLite files (locked from
another connection, their modes read with stat).
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from portalops.oncall import secrets
from portalops.oncall.engine import PAGE_RETRY_FIRST
from portalops.oncall.service import MAX_CONNECTIONS, SERVICE_BUSY_TIMEOUT
from tests.fixtures.oncall import (
    OncallService,
    ServiceProcess,
    ack_link,
    alert,
    http,
    mails,
    mailto,
    oncall_config,
    wait_mail,
    webhook,
)
from tests.fixtures.procs import LOOPBACK, wait_until
from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration

TIMEOUT = 1.0  # delivery.timeout in these configs: a stuck attempt is abandoned after it


class StuckServer:
    """Accepts TCP connections on loopback and never says a word (a mail server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server((LOOPBACK, 0), backlog=64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="stuck-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def stuck() -> Iterator[StuckServer]:
    server = StuckServer()
    try:
        yield server
    finally:
        server.close()


def stuck_first(tmp_path: Path, smtp: SMTPServer, stuck: StuckServer) -> dict[str, Any]:
    """A config where an's first channel hangs and the second is the SMTP server."""
    config = oncall_config(
        tmp_path, smtp, delivery={"attempts": 2, "retry_delay": "0.1s", "timeout": f"{TIMEOUT}s"}
    )
    config["oncall"]["people"][0]["channels"] = [
        mailto(smtp, "an-stuck", port=stuck.port),
        mailto(smtp, "an"),
    ]
    return config


def database(svc: OncallService) -> Path:
    return svc.settings.state_dir / "oncall" / "oncall.sqlite"


def get(svc: OncallService, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return http(f"{svc.url}{path}", headers=headers)


def test_a_page_whose_record_fails_is_delivered_once_and_recorded_later(
    tmp_path: Path, smtp_server: SMTPServer, stuck: StuckServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portalops")
    svc = OncallService(tmp_path, stuck_first(tmp_path, smtp_server, stuck))
    svc.start()
    lock = sqlite3.connect(database(svc), isolation_level=None)
    try:
        assert svc.post(webhook(alert()))[0] == 200
        # the page is written pending; its delivery waits TIMEOUT on the stuck channel, and
        # meanwhile another connection takes the write lock ("database is locked")
        wait_until(
            lambda: (
                lock.execute("SELECT count(*) FROM pages WHERE state = 'pending'").fetchone()[0]
                == 1
            ),
            timeout=5,
            what="the page written pending",
        )
        lock.execute("BEGIN IMMEDIATE")
        wait_mail(smtp_server, "an", 1, timeout=5)
        for _ in range(3):  # ticks that would deliver a page still pending in the database
            svc.wait_tick()
        status, body = get(svc, "/healthz")
        assert status == 503
        assert "not yet recorded" in body
        assert len(mails(smtp_server, "an")) == 1
        lock.execute("ROLLBACK")
        svc.wait_delivered()
        assert len(mails(smtp_server, "an")) == 1
        (page,) = svc.incidents()[0]["pages"]
        assert (page["state"], page["channel"]) == ("sent", "2:mailto")
        wait_until(lambda: get(svc, "/healthz")[0] == 200, timeout=5, what="healthz ok again")
    finally:
        lock.close()
        svc.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not every tick
    assert "database is locked" in errors[0].getMessage()
    assert "Traceback" not in caplog.text


def test_a_stuck_channel_delays_no_page_on_a_healthy_one(
    tmp_path: Path, smtp_server: SMTPServer, stuck: StuckServer
) -> None:
    """Six incidents at once, twice over: each page meets the stuck channel first (its
    attempts hang and are abandoned; once all its threads hang, the channel is busy), and
    every page still arrives by SMTP within a few timeouts; a hung attempt is never retried."""
    svc = OncallService(tmp_path, stuck_first(tmp_path, smtp_server, stuck))
    svc.start()
    try:
        for round_ in range(2):
            started = time.monotonic()
            domains = [f"r{round_}p{n}.vinhphuc.gov.vn" for n in range(6)]
            for domain in domains:
                assert svc.post(webhook(alert(domain=domain, portal=domain)))[0] == 200
            wait_mail(smtp_server, "an", 6 * (round_ + 1), timeout=5 * TIMEOUT)
            assert time.monotonic() - started < 5 * TIMEOUT
        svc.wait_delivered()
        pages = [p for i in svc.incidents() for p in i["pages"]]
        assert len(pages) == 12
        assert {(p["state"], p["channel"]) for p in pages} == {("sent", "2:mailto")}
        for page in pages:  # an attempt that hung is the last one on its channel
            first = [e for e in page["error"].split("; ") if e.startswith("channel 1:")]
            assert "abandoned" in first[-1] or "channel busy" in first[-1], first
            assert not any("abandoned" in e for e in first[:-1]), first
    finally:
        svc.stop()
    assert len(mails(smtp_server, "an")) == 12


def at(minute: int) -> str:
    return f"2026-11-29T01:{minute:02d}:00.123456789Z"


def timed(status: str, starts: int, ends: int | None = None) -> dict[str, Any]:
    """PortalDown of soyte, started at 01:``starts`` (and ended at 01:``ends``)."""
    body = alert(status)
    body["startsAt"] = at(starts)
    body["endsAt"] = at(ends) if ends is not None else "0001-01-01T00:00:00Z"
    return body


def test_replayed_webhooks_are_ordered_by_their_times(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        assert svc.post(webhook(timed("firing", 0)))[1]["opened"] == [1]
        svc.wait_tick()
        assert svc.post(webhook(timed("resolved", 0, 10)))[1]["resolved"] == [1]
        # Alertmanager replays the old firing after the resolution: old news
        status, body = svc.post(webhook(timed("firing", 0)))
        assert (status, body["opened"], body["updated"]) == (200, [], [])
        svc.advance(10)
        assert svc.pages() == [(1, "an")]
        # the portal goes down again: a new episode, a new incident
        assert svc.post(webhook(timed("firing", 20)))[1]["opened"] == [2]
        # the first episode's resolution replayed: it ended before this one started
        status, body = svc.post(webhook(timed("resolved", 0, 10)))
        assert (status, body["resolved"]) == (200, [])
        svc.wait_tick()
        status, listed = get(svc, "/incidents", token=svc.token)
        assert status == 200
        assert [(i["id"], i["status"]) for i in listed] == [(2, "firing"), (1, "resolved")]
        assert svc.pages() == [(1, "an"), (2, "an")]
        # its own resolution does resolve it
        assert svc.post(webhook(timed("resolved", 20, 25)))[1]["resolved"] == [2]
    finally:
        svc.stop()


def stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def test_a_refire_after_the_replay_window_pages_and_skewed_or_early_news_is_sorted(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        assert svc.post(webhook(timed("firing", 0)))[1]["opened"] == [1]
        assert svc.post(webhook(timed("resolved", 0, 10)))[1]["resolved"] == [1]
        assert svc.post(webhook(timed("firing", 0)))[1]["opened"] == []  # a replay
        # Prometheus stalled, Alertmanager resolved by timeout; the alert fires again with
        # the same startsAt after the replay window: a page, not a replay
        svc.clock.advance(121)
        assert svc.post(webhook(timed("firing", 0)))[1]["opened"] == [2]
        # a firing from a clock an hour ahead, then its resolution ending now: resolvable
        skewed = alert(domain="skew.vinhphuc.gov.vn")
        skewed["startsAt"] = stamp(svc.clock() + 3600)
        assert svc.post(webhook(skewed))[1]["opened"] == [3]
        # resolved by the right clock: it "ended" before its firing was received
        skewed.update(status="resolved", endsAt=stamp(svc.clock() - 60))
        assert svc.post(webhook(skewed))[1]["resolved"] == [3]
        # a resolution that overtook its firing: the late firing opens nothing
        early = alert("resolved", domain="early.vinhphuc.gov.vn")
        assert svc.post(webhook(early))[1] == {"ok": True, "opened": [], "updated": [],
                                                "resolved": []}  # fmt: skip
        early.update(status="firing", endsAt="0001-01-01T00:00:00Z")
        assert svc.post(webhook(early))[1]["opened"] == []
        svc.wait_tick()
        assert {i["id"]: i["status"] for i in svc.incidents()} == {
            1: "resolved", 2: "firing", 3: "resolved"
        }  # fmt: skip
    finally:
        svc.stop()


def test_a_database_that_refuses_writes_or_is_gone_fails_healthz(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    metrics_token = (svc.settings.state_dir / "oncall" / "metrics.token").read_text().strip()
    lock = sqlite3.connect(database(svc), isolation_level=None)
    try:
        assert get(svc, "/healthz")[0] == 200
        lock.execute("BEGIN IMMEDIATE")  # held: every write of the service fails
        started = time.monotonic()
        assert svc.post(webhook(alert()))[0] == 503
        # the loop waited SERVICE_BUSY_TIMEOUT for the lock, not a second
        assert time.monotonic() - started < 4 * SERVICE_BUSY_TIMEOUT
        status, body = get(svc, "/healthz")
        assert (status, "database refuses writes: database is locked\n") == (503, body)
        status, text = get(svc, "/metrics", token=metrics_token)
        counted = [
            ln
            for ln in text.splitlines()
            if ln.startswith("portalops_oncall_database_errors_total")
        ]
        assert counted, text
        assert float(counted[0].split()[-1]) >= 1, counted
        lock.execute("ROLLBACK")
        assert get(svc, "/healthz")[0] == 200
        database(svc).unlink()  # an operator's rm: the service writes into a deleted file
        status, body = get(svc, "/healthz")
        assert status == 503
        assert "is gone" in body, body
    finally:
        lock.close()
        svc.stop()


def test_a_page_failing_on_every_channel_escalates_at_once_and_is_retried(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    config = oncall_config(tmp_path, smtp_server)
    with socket.create_server((LOOPBACK, 0)) as closed:  # a port nobody listens on after
        refused = closed.getsockname()[1]
    config["oncall"]["people"][0]["channels"] = [mailto(smtp_server, "an", port=refused)]
    svc = OncallService(tmp_path, config)
    svc.start()
    try:
        assert svc.post(webhook(alert()))[1]["opened"] == [1]
        # the clock stands still: binh is paged because an's page failed, not by the wait
        wait_mail(smtp_server, "binh", 1, timeout=10)
        assert svc.pages() == [(1, "an"), (1, "binh")]
        svc.advance(PAGE_RETRY_FIRST)  # binh's wait is over too: chi's step, then an again
        svc.wait_delivered()
        assert svc.pages() == [(1, "an"), (1, "binh"), (1, "chi"), (1, "an")]
        states = [p["state"] for p in svc.incidents()[0]["pages"] if p["person"] == "an"]
        assert states == ["failed", "failed"]
    finally:
        svc.stop()


def test_connections_beyond_the_cap_are_refused_and_the_service_recovers(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    address = (LOOPBACK, int(svc.url.rsplit(":", 1)[1]))
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):  # idle clients, or slow ones sending headers
            held.append(socket.create_connection(address, timeout=5))
            held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        wait_until(lambda: get(svc, "/healthz")[0] == 503, timeout=5, what="the cap reached")
        with socket.create_connection(address, timeout=5) as extra:
            assert extra.recv(100).startswith(b"HTTP/1.1 503")
    finally:
        for conn in held:
            conn.close()
    try:
        wait_until(lambda: get(svc, "/healthz")[0] == 200, timeout=5, what="room again")
    finally:
        svc.stop()


def test_incidents_need_the_token(tmp_path: Path, smtp_server: SMTPServer) -> None:
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        assert get(svc, "/incidents")[0] == 401
        assert get(svc, "/incidents", token="wrong-token-wrong-token")[0] == 401
        assert get(svc, "/incidents", token=svc.token) == (200, [])
    finally:
        svc.stop()


def test_database_wal_and_shm_are_private_from_creation(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    state = tmp_path / "state" / "oncall"
    state.mkdir(parents=True)
    state.chmod(0o775)  # an operator's mkdir: group-writable
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        wait_mail(smtp_server, "an", 1, timeout=5)
        db = database(svc)
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    finally:
        svc.stop()


def test_a_database_elsewhere_never_has_its_directory_chmodded(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    shared = tmp_path / "shared"  # node_exporter's textfile directory, say
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    config = oncall_config(tmp_path, smtp_server, database=str(shared / "oncall.sqlite"))
    svc = OncallService(tmp_path, config)
    svc.start()
    svc.stop()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # left as it was
    assert stat.S_IMODE((shared / "oncall.sqlite").stat().st_mode) == 0o600
    shared.chmod(0o777)  # others could swap the database: refused, not chmodded
    done = ServiceProcess(tmp_path, config).ops("oncall", "serve")
    assert done.returncode != 0
    assert "mode 0777" in done.stderr
    assert "Traceback" not in done.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777


def raw_request(
    svc: OncallService, method: str, path: str, body: bytes = b"", headers: Any = ()
) -> tuple[int, bytes]:
    """One request with exactly these bytes (urllib would refuse some of them)."""
    host, port = svc.url.removeprefix("http://").rsplit(":", 1)
    conn = HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_malformed_requests_are_refused_without_a_traceback(
    tmp_path: Path, smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    auth = ("Authorization", f"Bearer {svc.token}")
    json_type = ("Content-Type", "application/json")
    form_type = ("Content-Type", "application/x-www-form-urlencoded")
    try:
        non_ascii = ("Authorization", "Bearer tôken²".encode())
        got = {
            "non-ASCII Authorization": raw_request(
                svc, "POST", "/alertmanager", b"{}", [non_ascii, json_type]
            )[0],
            "non-ASCII Authorization on /incidents": raw_request(
                svc, "GET", "/incidents", headers=[non_ascii]
            )[0],
            "i=² (GET)": raw_request(svc, "GET", "/ack?i=%C2%B2&p=an&e=9999999999&s=x")[0],
            "i=² (POST)": raw_request(
                svc, "POST", "/ack", b"i=%C2%B2&p=an&e=9999999999&s=x", [form_type]
            )[0],
            "e=²": raw_request(svc, "GET", "/ack?i=1&p=an&e=%C2%B2&s=x")[0],
            "no fields": raw_request(svc, "POST", "/ack", b"", [form_type])[0],
            "bad form bytes": raw_request(svc, "POST", "/ack", b"i=%FF%FE&p=\xff", [form_type])[0],
            "deep JSON": raw_request(
                svc, "POST", "/alertmanager", b"[" * 100_000 + b"]" * 100_000, [auth, json_type]
            )[0],
            "nested JSON": raw_request(
                svc,
                "POST",
                "/alertmanager",
                json.dumps(webhook(alert()))
                .replace('"clause"', '"x": ' + "[" * 40 + "]" * 40 + ', "clause"')
                .encode(),
                [auth, json_type],
            )[0],
            "huge body": raw_request(
                svc, "POST", "/alertmanager", b" " * (2 * 1024 * 1024), [auth, json_type]
            )[0],
            "a JSON list": raw_request(svc, "POST", "/alertmanager", b"[1]", [auth, json_type])[0],
            "a JSON string": raw_request(svc, "POST", "/alertmanager", b'"x"', [auth, json_type])[
                0
            ],
            "not UTF-8": raw_request(
                svc, "POST", "/alertmanager", b'{"\xff": 1}', [auth, json_type]
            )[0],
            "bad startsAt": raw_request(
                svc,
                "POST",
                "/alertmanager",
                json.dumps(webhook({**alert(), "startsAt": "yesterday"})).encode(),
                [auth, json_type],
            )[0],
            "startsAt beyond year 9999 in UTC": raw_request(
                svc,
                "POST",
                "/alertmanager",
                json.dumps(webhook({**alert(), "startsAt": "9999-12-31T23:59:59-14:00"})).encode(),
                [auth, json_type],
            )[0],
        }
        assert got == {
            "non-ASCII Authorization": 401,
            "non-ASCII Authorization on /incidents": 401,
            "i=² (GET)": 403,
            "i=² (POST)": 403,
            "e=²": 403,
            "no fields": 403,
            "bad form bytes": 400,
            "deep JSON": 400,
            "nested JSON": 400,
            "huge body": 413,
            "a JSON list": 400,
            "a JSON string": 400,
            "not UTF-8": 400,
            "bad startsAt": 400,
            "startsAt beyond year 9999 in UTC": 400,
        }
        # a client gone mid-body (Alertmanager's own timeout, a proxy reset)
        with socket.create_connection((LOOPBACK, int(svc.url.rsplit(":", 1)[1]))) as gone:
            gone.sendall(
                b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                + f"Authorization: Bearer {svc.token}\r\n\r\n".encode()
                + b'{"alerts": ['
            )
        svc.wait_tick()
        assert get(svc, "/healthz") == (200, "ok\n")  # none of it hurt the service
        assert get(svc, "/incidents", token=svc.token) == (200, [])
    finally:
        svc.stop()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


SECRET = "SECRETTOKEN0123456789"


def secret_channel(smtp: SMTPServer, person: str) -> str:
    """An SMTP URL with a password (the server offers no AUTH: the delivery fails, after
    apprise has had every chance to log the URL)."""
    return (
        f"mailto://oncall:{SECRET}@{smtp.host}:{smtp.port}?from=oncall@vinhphuc.gov.vn"
        f"&to={person}@vinhphuc.gov.vn&mode=insecure"
    )


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


class _Refuse(_Accept):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.end_headers()


@pytest.fixture
def webhook_channel() -> Iterator[str]:
    """A JSON webhook channel on loopback with the secret in its path and query, where
    apprise's and urllib3's debug lines print it."""
    server = HTTPServer((LOOPBACK, 0), _Accept)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://{LOOPBACK}:{server.server_address[1]}/hook/{SECRET}?-apikey={SECRET}"
    finally:
        server.shutdown()
        server.server_close()


def test_secrets_never_reach_the_logs_at_verbose(
    tmp_path: Path, smtp_server: SMTPServer, webhook_channel: str
) -> None:
    config = oncall_config(tmp_path, smtp_server, delivery={"attempts": 1, "timeout": "2s"})
    topic = "oncallTopicSecret42"  # an ntfy topic is its only secret; apprise WARNs it
    ntfy = HTTPServer((LOOPBACK, 0), _Refuse)  # answers 500: "Failed to send ... to topic"
    threading.Thread(target=ntfy.serve_forever, daemon=True).start()
    config["oncall"]["people"][0]["channels"] = [
        secret_channel(smtp_server, "an"),
        webhook_channel,
        f"ntfy://{LOOPBACK}:{ntfy.server_address[1]}/{topic}",
    ]
    # ops -v oncall test: every channel tried, debug logging on
    svc = ServiceProcess(tmp_path, config)
    try:
        done = svc.ops("-v", "oncall", "test", "--person", "an")
    finally:
        ntfy.shutdown()
        ntfy.server_close()
    assert done.returncode == 1  # the mail and ntfy channels failed, the webhook delivered
    assert "1:mailto" in done.stdout
    assert "2:json" in done.stdout
    assert "3:ntfy" in done.stdout
    assert "<7>" in done.stderr  # -v was on: debug lines
    assert "***" in done.stderr  # something was redacted (the ntfy topic in apprise's line)
    assert SECRET not in done.stderr + done.stdout
    assert topic not in done.stderr + done.stdout
    # ops -v oncall serve: a page through that channel, an ack link with its signature
    svc.start()
    try:
        assert svc.post(webhook(alert()))[0] == 200
        wait_until(lambda: "page 1 " in svc.log.read_text(encoding="utf-8"), timeout=10,
                   what="the page attempted")  # fmt: skip
        status, _ = http(f"{svc.url}/ack?i=1&p=an&e=9999999999&s=SIGNATUREfromALINK", timeout=5)
        assert status == 403
    finally:
        assert svc.stop() == 0
    logged = svc.log.read_text(encoding="utf-8")
    assert "<7>" in logged
    for secret in (SECRET, svc.token, "SIGNATUREfromALINK", topic):
        assert secret not in logged


#: a Telegram bot token (``host:port`` to urlsplit, whose ``.port`` refuses it) and tokens in
#: the host part with capitals (``.hostname`` lower-cases them)
TGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
NTFY_HOST_TOPIC = "PortalOpsAlerts2026"
SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#canh-bao"


@pytest.mark.parametrize(
    ("url", "hidden", "kept"),
    [
        (
            f"tgram://{TGRAM_TOKEN}/-100123456",
            ["123456789", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "-100123456"],
            ["api.telegram.org"],
        ),
        (f"ntfy://{NTFY_HOST_TOPIC}", [NTFY_HOST_TOPIC], ["ntfy.sh"]),
        (SLACK, ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"], ["slack.com"]),
        (
            "mailto://oncall:Pa55word@127.0.0.1:2525?to=an@vinhphuc.gov.vn",
            ["Pa55word"],
            ["127.0.0.1:2525", "an@vinhphuc.gov.vn"],
        ),
    ],
    ids=["tgram", "ntfy-host", "slack", "mailto"],
)
def test_channel_secrets_are_redacted_as_written(
    url: str, hidden: list[str], kept: list[str]
) -> None:
    """Every secret part of a channel URL, with its case as written, leaves a log line; the
    public parts (hosts, ports, addresses) stay readable."""
    secrets.remember_channels([url])
    line = f"POST {' '.join(kept)} url={url} parts={' '.join(hidden)}"
    redacted = secrets.redact(line)
    for part in hidden:
        assert part not in redacted
    for part in kept:
        assert part in redacted


def test_an_ack_link_does_not_outlive_its_database(tmp_path: Path, smtp_server: SMTPServer) -> None:
    """The database is recreated (lost, restored from nothing) while link.key stays: the new
    incident #1 is not acknowledged by the old incident #1's link."""
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    try:
        assert svc.post(webhook(alert()))[1]["opened"] == [1]
        (first,) = wait_mail(smtp_server, "an", 1, timeout=5)
        svc.stop()
        db = database(svc)
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        svc.start()
        assert svc.post(webhook(alert()))[1]["opened"] == [1]
        second = wait_mail(smtp_server, "an", 2, timeout=5)[1]
        old = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ack_link(first)).query))
        assert old["i"] == "1"
        assert http(f"{svc.url}/ack", urllib.parse.urlencode(old).encode())[0] == 403
        assert svc.incidents()[0]["status"] == "firing"
        new = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ack_link(second)).query))
        assert http(f"{svc.url}/ack", urllib.parse.urlencode(new).encode())[0] == 200
        assert svc.incidents()[0]["status"] == "acknowledged"
    finally:
        svc.stop()


def test_an_older_database_gets_link_nonces(tmp_path: Path, smtp_server: SMTPServer) -> None:
    """A database from before the nonce column: the column is added and every incident gets
    a nonce (its old links stop working; ``ops oncall ack`` still does)."""
    svc = OncallService(tmp_path, oncall_config(tmp_path, smtp_server))
    svc.start()
    assert svc.post(webhook(alert()))[0] == 200
    wait_mail(smtp_server, "an", 1, timeout=5)
    svc.stop()
    db = sqlite3.connect(database(svc), isolation_level=None)
    db.execute("ALTER TABLE incidents DROP COLUMN nonce")  # as an older portal-ops made it
    db.close()
    svc.start()
    try:
        db = sqlite3.connect(database(svc))
        nonces = [row[0] for row in db.execute("SELECT nonce FROM incidents")]
        db.close()
        assert len(nonces) == 1
        assert len(nonces[0]) >= 16
        assert svc.ops("oncall", "ack", "1").returncode == 0
    finally:
        svc.stop()
