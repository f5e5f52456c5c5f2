"""The SMTP fixture receives real SMTP sessions and keeps Vietnamese text intact."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration

SUBJECT = "[Cảnh báo] Cổng thông tin tỉnh Quảng Nam không truy cập được"
BODY = (
    "Kính gửi cán bộ trực,\n\n"
    "Trang https://quangnam.gov.vn/ không phản hồi trong 30 giây.\n"
    "Đề nghị kiểm tra máy chủ web và báo cáo trong 24 giờ.\n"
)


def test_utf8_subject_and_body_arrive_intact(smtp_server: SMTPServer) -> None:
    msg = EmailMessage()
    msg["From"] = "portalops@quangnam.gov.vn"
    msg["To"] = "truc-ban@quangnam.gov.vn"
    msg["Subject"] = SUBJECT
    msg.set_content(BODY)

    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as smtp:
        refused = smtp.send_message(msg)
    assert refused == {}

    [received] = smtp_server.received()
    assert received.mail_from == "portalops@quangnam.gov.vn"
    assert received.rcpt_tos == ("truc-ban@quangnam.gov.vn",)
    parsed = received.parsed()
    assert parsed["Subject"] == SUBJECT
    assert parsed.get_content_charset() == "utf-8"
    # SMTP carries lines ending in CRLF; the body is otherwise byte-for-byte what was sent
    assert parsed.get_content() == BODY.replace("\n", "\r\n")


def test_smtputf8_addresses(smtp_server: SMTPServer) -> None:
    msg = EmailMessage()
    msg["From"] = "giám-sát@quangnam.gov.vn"
    msg["To"] = "trực-ban@quangnam.gov.vn"
    msg["Subject"] = "Thử nghiệm"
    msg.set_content("Nội dung thử nghiệm.\n")

    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8")
        smtp.send_message(msg)

    [received] = smtp_server.wait_for(1)
    assert received.smtputf8
    assert received.mail_from == "giám-sát@quangnam.gov.vn"
    assert received.rcpt_tos == ("trực-ban@quangnam.gov.vn",)
    assert received.parsed()["To"] == "trực-ban@quangnam.gov.vn"


def test_each_test_gets_an_empty_mailbox(smtp_server: SMTPServer) -> None:
    assert smtp_server.received() == []
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as smtp:
        smtp.sendmail("a@example.org", ["b@example.org", "c@example.org"], b"Subject: 1\r\n\r\n1")
        smtp.sendmail("a@example.org", ["d@example.org"], b"Subject: 2\r\n\r\n2")
    got = smtp_server.wait_for(2)
    assert [m.rcpt_tos for m in got] == [("b@example.org", "c@example.org"), ("d@example.org",)]
    assert [m.parsed()["Subject"] for m in got] == ["1", "2"]
