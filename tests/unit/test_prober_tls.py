"""The prober's TLS client (monitors/tls.py) against real TLS servers on loopback, seen from
the server's side: which name it was asked for, whether a session was resumed, what bytes
arrived after a refused certificate, and which store decided trust."""

from __future__ import annotations

import base64
import dataclasses
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from portalops.monitors.exporter import run
from portalops.monitors.fetch import FetchError, Limits, Resolver, Response, fetch
from portalops.monitors.tls import ClientTLS, client_tls, insecure_tls
from tests.fixtures.pki import IssuedCert, ThrowawayPKI
from tests.fixtures.tls_server import LOOPBACK, tls_server

LIMITS = Limits(timeout=5)


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
    assert answer == (
        "tls.hostname_mismatch: certificate is not for this name "
        "(Hostname mismatch, certificate is not valid for 'h.test'.)"
    )
    assert seen.names == ["h.test"]
    assert b"".join(seen.received) == b"", "the request reached a server that is not h.test"


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


@pytest.mark.parametrize(
    ("sans", "common_name"),
    [
        # a multi-site certificate from a private CA may list names no client can match (an
        # address written as a name, a second wildcard): the names it also lists still count
        (["*.*.test", "10.0.0.1", "a*b*.test", "h.test"], None),
        # no DNS names at all: the subject's CN is the name, as ssl has it
        ([], "h.test"),
    ],
    ids=["one unusable name among others", "no DNS names, the CN"],
)
def test_a_name_ssl_accepts_is_accepted(
    pki: ThrowawayPKI, sans: list[str], common_name: str | None
) -> None:
    addresses = [] if sans else ["10.9.9.9"]
    cert = pki.issue("names", sans, ip_addresses=addresses, common_name=common_name)
    with tls_server(cert) as (port, _):
        answer = get(f"https://h.test:{port}/", port, client_tls(str(pki.ca_file)))
    assert isinstance(answer, Response), answer
    assert answer.status == 200


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
        "tls.hostname_mismatch: certificate is not for this name "
        "(IP address mismatch, certificate is not valid for '127.0.0.1'.)"
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


def _der_length(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _as_version_4(cert: IssuedCert, directory: Path) -> IssuedCert:
    """``cert`` (self-signed, RSA) re-signed with its version field set to 4, which OpenSSL
    loads and serves but cryptography refuses to parse (``InvalidVersion``)."""
    leaf = x509.load_pem_x509_certificate(cert.cert.read_bytes())
    key = serialization.load_pem_private_key(cert.key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    tbs = bytearray(leaf.tbs_certificate_bytes)
    version = tbs.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    tbs[version + 4] = 3
    signature = key.sign(bytes(tbs), padding.PKCS1v15(), hashes.SHA256())
    algorithm = bytes.fromhex("300d06092a864886f70d01010b0500")  # sha256WithRSAEncryption
    bits = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = bytes(tbs) + algorithm + bits
    der = b"\x30" + _der_length(len(body)) + body
    pem = directory / "v4.pem"
    pem.write_bytes(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    )
    return dataclasses.replace(cert, name="v4", cert=pem, chain=pem)


def test_a_certificate_openssl_serves_but_cryptography_cannot_read_is_a_finding(
    pki: ThrowawayPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server chooses its certificate's bytes: one with version 4 passes OpenSSL and
    breaks cryptography's parser. Read without verification (as the prober re-reads a
    refused certificate), it is an answer without certificate details; verified, a TLS
    finding. Never an error escaping the event loop's callbacks."""
    v4 = _as_version_4(pki.self_signed("v4", "h.test"), tmp_path)
    caplog.set_level(logging.WARNING, logger="asyncio")
    with tls_server(v4) as (port, _):
        unverified = get(f"https://h.test:{port}/", port, insecure_tls())
        trusted = ClientTLS(str(v4.cert))  # trusts it: OpenSSL accepts it, then we read it
        verified = get(f"https://h.test:{port}/", port, trusted)
    assert isinstance(unverified, Response), unverified
    assert unverified.status == 200
    assert unverified.tls is not None
    assert unverified.tls.cert is None
    assert str(verified).startswith(
        "tls.handshake: TLS handshake failed: the server's certificate cannot be read"
    ), verified
    assert [r.getMessage() for r in caplog.records] == []
