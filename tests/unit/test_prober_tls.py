"""The prober's TLS client (monitors/tls.py) against real TLS servers on loopback, seen from
the server's side: which name it was asked for, whether a session was resumed, what bytes
arrived after a refused certificate, and which store decided trust."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portalops.monitors.exporter import run
from portalops.monitors.fetch import FetchError, Limits, Resolver, Response, fetch
from portalops.monitors.tls import ClientTLS, client_tls
from tests.fixtures.pki import IssuedCert, ThrowawayPKI

LOOPBACK = "127.0.0.1"
LIMITS = Limits(timeout=5)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@dataclass
class Seen:
    """What the server saw of each connection."""

    names: list[str | None] = field(default_factory=list)  # the SNI asked for
    reused: list[bool] = field(default_factory=list)  # a resumed session
    received: list[bytes] = field(default_factory=list)  # application data, up to the end


@contextmanager
def tls_server(cert: IssuedCert) -> Iterator[tuple[int, Seen]]:
    """A TLS server on loopback with ``cert`` that answers every request with ``ANSWER``."""
    seen = Seen()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.chain, cert.key)

    def sni(_conn: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.names.append(name)

    context.sni_callback = sni
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(5)
                    seen.reused.append(bool(conn.session_reused))
                    data = b""
                    try:
                        while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                            data += chunk
                    finally:
                        seen.received.append(data)
                    conn.sendall(ANSWER)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def get(url: str, port: int, tls: ClientTLS, name: str = "h.test") -> Response | str:
    """One fetch on the prober's loop: the response, or the finding code it failed with."""

    async def one() -> Response | str:
        resolver = Resolver([f"{name}:{port}:{LOOPBACK}"])
        try:
            return await fetch(url, resolver, context=tls, limits=LIMITS)
        except FetchError as exc:
            return f"{exc.code.code}: {exc.message}"

    return run(one())


def test_a_certificate_for_another_name_is_refused_before_the_request_leaves(
    pki: ThrowawayPKI,
) -> None:
    with tls_server(pki.issue("other", ["other.test"])) as (port, seen):
        answer = get(f"https://h.test:{port}/secret-path", port, client_tls(str(pki.ca_file)))
    assert answer == "tls.hostname_mismatch: certificate is not for this name (Hostname mismatch)"
    assert seen.names == ["h.test"]
    assert seen.received == [b""], "the request reached a server that is not h.test"


def test_a_wildcard_covers_one_label_only(pki: ThrowawayPKI) -> None:
    tls = client_tls(str(pki.ca_file))
    with tls_server(pki.issue("wild", ["*.h.test"])) as (port, _seen):
        one_label = get(f"https://a.h.test:{port}/", port, tls, name="a.h.test")
        two_labels = get(f"https://b.a.h.test:{port}/", port, tls, name="b.a.h.test")
        bare = get(f"https://h.test:{port}/", port, tls)
    assert isinstance(one_label, Response), one_label
    assert one_label.status == 200
    assert str(two_labels).startswith("tls.hostname_mismatch"), two_labels
    assert str(bare).startswith("tls.hostname_mismatch"), bare


def test_an_address_is_checked_against_the_certificate_s_ip_entries_without_sni(
    pki: ThrowawayPKI,
) -> None:
    tls = client_tls(str(pki.ca_file))
    with tls_server(pki.issue("by-ip", ["h.test"], ip_addresses=[LOOPBACK])) as (port, seen):
        ok = get(f"https://{LOOPBACK}:{port}/", port, tls)
    with tls_server(pki.issue("no-ip", ["h.test"])) as (port, _):
        refused = get(f"https://{LOOPBACK}:{port}/", port, tls)
    assert isinstance(ok, Response), ok
    assert ok.status == 200
    assert seen.names == [None], "an address is not a server name (RFC 6066)"
    assert refused == (
        "tls.hostname_mismatch: certificate is not for this name (IP address mismatch)"
    )


def test_every_probe_sees_the_certificate_the_server_sends_now(pki: ThrowawayPKI) -> None:
    """No session is resumed: a resumed handshake sends no certificate, so a replaced or
    expired one would go unseen until the ticket ran out."""
    tls = client_tls(str(pki.ca_file))
    with tls_server(pki.issue("twice", ["h.test"])) as (port, seen):
        answers = [get(f"https://h.test:{port}/", port, tls) for _ in range(3)]
    assert all(isinstance(a, Response) and a.tls and a.tls.cert for a in answers), answers
    assert seen.reused == [False, False, False]


@pytest.mark.parametrize("trusted", [True, False], ids=["store holds the CA", "it does not"])
def test_without_a_ca_file_the_system_store_decides_as_ssl_would(
    pki: ThrowawayPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    """The system store is found where the standard library finds it (``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` honoured), not where the bundled OpenSSL was built to look."""
    (tmp_path / "other-ca").mkdir()
    other = ThrowawayPKI(tmp_path / "other-ca", common_name="Another Root CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file if trusted else other.ca_file))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    with tls_server(pki.issue("system", ["h.test"])) as (port, _):
        answer = get(f"https://h.test:{port}/", port, ClientTLS())
    if trusted:
        assert isinstance(answer, Response), answer
        assert answer.status == 200
        assert answer.tls is not None
        assert answer.tls.verified
    else:
        assert answer == (
            "tls.untrusted: certificate is not trusted (unable to get local issuer certificate)"
        )
