"""The prober's test servers do what they claim: the PKI, the nginx site zoo, the hostile servers.

Checked only with the standard library (``ssl``, ``socket``, ``http.client``, ``zlib``) and
the ``openssl`` command (``s_client``, ``verify``, ``x509``), so a bug in the prober or in
the ``cryptography`` code that built the certificates cannot hide a fixture bug.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import ssl
import stat
import subprocess
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest

from tests.fixtures.hostile import (
    GARBAGE,
    HOSTNAME,
    HUGE_HEADERS_SIZE,
    THREAD_NAME,
    HostileServers,
    gzip_bomb,
    running_hostile,
)
from tests.fixtures.pki import ThrowawayPKI
from tests.fixtures.portal_sites import (
    DEFACED_MARKER,
    EXPIRING_DAYS,
    GIT_CONFIG,
    GIT_HEAD,
    HOME_TITLE,
    HSTS,
    LATIN1_TEXT,
    PORTAL_LINKS,
    SEARCH_FORM,
    STRICT_CSP,
    UNSAFE_INLINE_CSP,
    PortalSites,
    home_html,
    running_portal_sites,
)
from tests.fixtures.procs import require_binary, tcp_accepts, wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
GET = b"GET / HTTP/1.1\r\nHost: " + HOSTNAME.encode() + b"\r\nConnection: close\r\n\r\n"


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``address`` with ``host`` as SNI and Host: what curl --resolve does."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext) -> None:
        super().__init__(host, port, context=context, timeout=TIMEOUT)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=TIMEOUT)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _verifying(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _get(
    sites: PortalSites,
    name: str,
    path: str = "/",
    scheme: str = "https",
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host = sites.hostname(name)
    conn: http.client.HTTPConnection
    if scheme == "https":
        tls = context if context is not None else _verifying(sites.ca_file)
        conn = _PinnedHTTPS(host, sites.https_port, sites.address(name), tls)
    else:
        conn = _PinnedHTTP(host, sites.http_port, sites.address(name))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _handshake(
    sites: PortalSites, name: str, context: ssl.SSLContext
) -> tuple[str | None, bytes | None]:
    """TLS version and DER certificate the site presents for ``name``."""
    with (
        socket.create_connection((sites.address(name), sites.https_port), TIMEOUT) as sock,
        context.wrap_socket(sock, server_hostname=sites.hostname(name)) as tls,
    ):
        return tls.version(), tls.getpeercert(binary_form=True)


def _openssl(*args: str, check: bool = True) -> str:
    openssl = require_binary("openssl", "openssl")
    done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=10, check=False)
    assert not check or done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _s_client(sites: PortalSites, name: str, *args: str) -> tuple[int, str]:
    openssl = require_binary("openssl", "openssl")
    done = subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            f"{sites.address(name)}:{sites.https_port}",
            "-servername",
            sites.hostname(name),
            "-CAfile",
            str(sites.ca_file),
            "-brief",
            *args,
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


# -- the PKI


def test_pki_writes_pem_files_with_private_keys_0600(pki: ThrowawayPKI) -> None:
    cert = pki.valid("pki-selftest", "a.test.vinhphuc.gov.vn", "b.test.vinhphuc.gov.vn")
    assert stat.S_IMODE(cert.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((pki.directory / "root.key").stat().st_mode) == 0o600
    assert cert.chain.read_text().count("BEGIN CERTIFICATE") == 2
    assert pki.ca_file.read_text().count("BEGIN CERTIFICATE") == 1
    text = _openssl("x509", "-noout", "-text", "-in", str(cert.cert))
    assert "DNS:a.test.vinhphuc.gov.vn, DNS:b.test.vinhphuc.gov.vn" in text
    assert "Public-Key: (2048 bit)" in text
    assert "rsaEncryption" in text
    ecdsa = pki.valid("pki-selftest", "c.test.vinhphuc.gov.vn", key_type="ecdsa")
    text = _openssl("x509", "-noout", "-text", "-in", str(ecdsa.cert))
    assert "id-ecPublicKey" in text
    assert "ASN1 OID: prime256v1" in text


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("valid", "OK"),
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("self_signed", "self-signed certificate"),
    ],
)
def test_pki_leaves_verify_as_their_kind(pki: ThrowawayPKI, kind: str, expected: str) -> None:
    name = "kind.test.vinhphuc.gov.vn"
    cert = getattr(pki, kind)(f"verify-{kind}", name)
    args = ["-x509_strict", "-CAfile", str(pki.ca_file), "-untrusted", str(pki.intermediate_cert)]
    assert expected in _openssl("verify", *args, str(cert.cert), check=False)


def test_pki_expiring_in_sets_not_after(pki: ThrowawayPKI) -> None:
    cert = pki.expiring_in("expiring-selftest", 3, "x.test.vinhphuc.gov.vn")
    not_after = _openssl("x509", "-noout", "-enddate", "-in", str(cert.cert))
    left = ssl.cert_time_to_seconds(not_after.strip().removeprefix("notAfter=")) - time.time()
    assert 3 * 86400 - 120 < left <= 3 * 86400
    assert cert.not_after == cert.load().not_valid_after_utc
    with pytest.raises(ValueError, match="positive"):
        pki.expiring_in("never", 0, "x.test.vinhphuc.gov.vn")


# -- the portal sites


def test_good_site_verifies_with_sni_and_sends_every_header(portal_sites: PortalSites) -> None:
    version, _ = _handshake(portal_sites, "good", _verifying(portal_sites.ca_file))
    assert version in ("TLSv1.2", "TLSv1.3")
    status, headers, body = _get(portal_sites, "good")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["strict-transport-security"] == HSTS
    assert headers["content-security-policy"] == STRICT_CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    page = body.decode("utf-8")
    assert page == home_html(portal_sites.hostname("good"))
    assert HOME_TITLE in page
    assert SEARCH_FORM in page
    assert all(f'href="{link}"' in page for link in PORTAL_LINKS)
    wait_until(
        lambda: (
            f"host=good.{portal_sites.zone} sni=good.{portal_sites.zone}"
            in portal_sites.access_log.read_text()
        ),
        timeout=5,
        what="the request shows up in the access log with Host and SNI",
        log=portal_sites.access_log,
    )


def test_good_redirects_http_to_https(portal_sites: PortalSites) -> None:
    status, headers, _ = _get(portal_sites, "good", "/tin-tuc?trang=2", scheme="http")
    assert status == 301
    assert headers["location"] == portal_sites.url("good", "https", "/tin-tuc?trang=2")


def test_good_refuses_tls_1_0_and_tls10_accepts_it(portal_sites: PortalSites) -> None:
    weak = ("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    code, out = _s_client(portal_sites, "tls10", *weak)
    assert code == 0, out
    assert "Protocol version: TLSv1\n" in out
    assert "Verification: OK" in out
    code, out = _s_client(portal_sites, "good", *weak)
    assert code != 0, out
    assert "CONNECTION ESTABLISHED" not in out
    # and the good site does TLS 1.3 with a verified chain
    code, out = _s_client(portal_sites, "good", "-tls1_3")
    assert code == 0, out
    assert "Protocol version: TLSv1.3\n" in out
    assert "Verification: OK" in out


def test_only_weakcipher_accepts_a_suite_outside_mozilla_intermediate(
    portal_sites: PortalSites,
) -> None:
    outside = ("-tls1_2", "-cipher", "AES128-SHA:ECDHE-RSA-ARIA256-GCM-SHA384:@SECLEVEL=0")
    code, out = _s_client(portal_sites, "weakcipher", *outside)
    assert code == 0, out
    assert "Ciphersuite: AES128-SHA\n" in out
    code, out = _s_client(portal_sites, "good", *outside)
    assert code != 0, out
    # weakcipher is TLS 1.2+ all the same
    code, out = _s_client(portal_sites, "weakcipher", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert code != 0, out


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("expired", "certificate has expired"),
        ("notyetvalid", "certificate is not yet valid"),
        ("selfsigned", "self-signed certificate"),
        ("wrongname", "Hostname mismatch"),
    ],
)
def test_certificate_defects_fail_verification(
    portal_sites: PortalSites, name: str, message: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as excinfo:
        _handshake(portal_sites, name, _verifying(portal_sites.ca_file))
    assert message in str(excinfo.value)
    # everything but the certificate is like the good site
    status, headers, _ = _get(portal_sites, name, context=_unverified())
    assert status == 200
    assert headers["strict-transport-security"] == HSTS


def test_expiring_and_ecdsa_certificates(portal_sites: PortalSites) -> None:
    context = _verifying(portal_sites.ca_file)
    with (
        socket.create_connection((portal_sites.host, portal_sites.https_port), TIMEOUT) as sock,
        context.wrap_socket(sock, server_hostname=portal_sites.hostname("expiring")) as tls,
    ):
        peer = tls.getpeercert()
    assert peer is not None
    left = ssl.cert_time_to_seconds(str(peer["notAfter"])) - time.time()
    assert (EXPIRING_DAYS - 1) * 86400 < left <= EXPIRING_DAYS * 86400
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.2 names the key in the suite
    with (
        socket.create_connection((portal_sites.host, portal_sites.https_port), TIMEOUT) as sock,
        context.wrap_socket(sock, server_hostname=portal_sites.hostname("ecdsa")) as tls,
    ):
        cipher = tls.cipher()
    assert cipher is not None
    assert cipher[0].startswith("ECDHE-ECDSA-")


def test_header_defects(portal_sites: PortalSites) -> None:
    _, headers, _ = _get(portal_sites, "nohsts")
    assert "strict-transport-security" not in headers
    assert headers["content-security-policy"] == STRICT_CSP
    _, headers, _ = _get(portal_sites, "unsafeinline")
    assert headers["content-security-policy"] == UNSAFE_INLINE_CSP
    assert "'unsafe-inline'" in headers["content-security-policy"]


def test_git_exposed_site_serves_git_files_and_good_does_not(portal_sites: PortalSites) -> None:
    status, _, body = _get(portal_sites, "gitexposed", "/.git/config")
    assert (status, body.decode()) == (200, GIT_CONFIG)
    status, _, body = _get(portal_sites, "gitexposed", "/.git/HEAD")
    assert (status, body.decode()) == (200, GIT_HEAD)
    assert _get(portal_sites, "good", "/.git/config")[0] == 404


def test_soft404_answers_the_home_page_everywhere(portal_sites: PortalSites) -> None:
    home = _get(portal_sites, "soft404")
    for path in (f"/{uuid.uuid4().hex}.html", "/.git/config"):
        status, headers, body = _get(portal_sites, "soft404", path)
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert body == home[2]
        assert HOME_TITLE in body.decode()


def test_defaced_error500_and_loop(portal_sites: PortalSites) -> None:
    status, _, body = _get(portal_sites, "defaced")
    assert status == 200
    assert DEFACED_MARKER in body.decode()
    assert HOME_TITLE not in body.decode()
    assert _get(portal_sites, "error500")[0] == 500

    seen: list[str] = []
    url = portal_sites.url("loop")
    while url not in seen:
        assert len(seen) < 5, f"no loop after {seen}"
        seen.append(url)
        path = url.split(str(portal_sites.https_port), 1)[1]
        status, headers, _ = _get(portal_sites, "loop", path)
        assert status == 302
        url = headers["location"]
    assert seen == [portal_sites.url("loop", path="/"), portal_sites.url("loop", path="/trang-chu")]


def test_http_only_site_has_no_https(portal_sites: PortalSites) -> None:
    status, headers, body = _get(portal_sites, "http-only", scheme="http")
    assert status == 200
    assert "location" not in headers
    assert "strict-transport-security" not in headers  # meaningless over plain HTTP
    assert HOME_TITLE in body.decode()
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        _handshake(portal_sites, "http-only", _unverified())


def test_latin1_site_declares_no_charset(portal_sites: PortalSites) -> None:
    status, headers, body = _get(portal_sites, "latin1")
    assert status == 200
    assert headers["content-type"] == "text/html"
    assert b"charset" not in body.lower()
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert LATIN1_TEXT in body.decode("iso-8859-1")


def test_resolve_pins_cover_every_site_on_both_ports(portal_sites: PortalSites) -> None:
    pins = portal_sites.resolve_pins()
    assert len(pins) == 2 * len(portal_sites.sites) == len(set(pins))
    for name in ("good", "tls10", "http-only", "latin1"):
        for port in (portal_sites.https_port, portal_sites.http_port):
            address = "127.0.0.2" if name == "tls10" else "127.0.0.1"
            assert f"{name}.test.vinhphuc.gov.vn:{port}:{address}" in pins
    assert portal_sites.url("good") == (
        f"https://good.test.vinhphuc.gov.vn:{portal_sites.https_port}/"
    )
    assert portal_sites.url("good", "http", "/a") == (
        f"http://good.test.vinhphuc.gov.vn:{portal_sites.http_port}/a"
    )


def test_portal_sites_teardown_leaves_no_process(pki: ThrowawayPKI) -> None:
    with running_portal_sites(pki) as sites:
        assert _get(sites, "good")[0] == 200
        pid, ports = sites.pid, (sites.https_port, sites.http_port)
    wait_until(lambda: _gone_or_zombie(pid), timeout=5, what=f"nginx master {pid} is gone")
    assert not _group_members(pid)
    assert not any(tcp_accepts(port) for port in ports)


def _gone_or_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text.rsplit(")", 1)[1].split()[0] == "Z"


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


# -- the hostile servers


def _connect(hostile: HostileServers, behaviour: str, tls: bool = False) -> socket.socket:
    sock = socket.create_connection((hostile.host, hostile.port(behaviour, tls=tls)), TIMEOUT)
    if tls:
        context = _verifying(hostile.ca_file)
        return context.wrap_socket(sock, server_hostname=hostile.hostname)
    return sock


def test_silent_never_answers(hostile: HostileServers) -> None:
    with _connect(hostile, "silent") as sock:
        sock.sendall(GET)
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    # a TLS client on the plain port hangs in its handshake
    with (
        socket.create_connection((hostile.host, hostile.port("silent")), 1.0) as sock,
        pytest.raises(TimeoutError),
    ):
        _verifying(hostile.ca_file).wrap_socket(sock, server_hostname=hostile.hostname)
    # behind TLS: the handshake completes, then silence
    with _connect(hostile, "silent", tls=True) as tls:
        tls.sendall(GET)
        tls.settimeout(1.0)
        with pytest.raises(TimeoutError):
            tls.recv(1)
    assert hostile.connections("silent") == 2
    assert hostile.connections("silent", tls=True) == 1
    assert hostile.errors == []


def test_trickle_sends_a_byte_per_second(hostile: HostileServers) -> None:
    with _connect(hostile, "trickle") as sock:
        sock.sendall(GET)
        received = b""
        deadline = time.monotonic() + 2.5
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                got = sock.recv(1024)
            except TimeoutError:
                break
            assert got, "the trickle closed the connection"
            received += got
    assert 1 <= len(received) <= 3
    assert b"HTTP/1.1 200 OK".startswith(received)
    assert hostile.connections("trickle") == 1
    assert hostile.errors == []


@pytest.mark.parametrize("tls", [False, True])
def test_huge_headers_exceed_one_mebibyte(hostile: HostileServers, tls: bool) -> None:
    with _connect(hostile, "huge_headers", tls=tls) as sock:
        sock.sendall(GET)
        received = bytearray()
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in received[-8192:]:
            assert time.monotonic() < deadline, f"no end of headers after {len(received)} bytes"
            got = sock.recv(65536)
            assert got, "closed before the end of the headers"
            received += got
    head = bytes(received).split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(head) > HUGE_HEADERS_SIZE
    # http.client gives up on them, as a careful client should
    conn = http.client.HTTPConnection(hostile.host, hostile.port("huge_headers"), timeout=TIMEOUT)
    conn.request("GET", "/")
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        conn.getresponse()
    conn.close()
    assert hostile.connections("huge_headers", tls=tls) == (1 if tls else 2)
    assert hostile.errors == []


def test_endless_body_never_ends(hostile: HostileServers) -> None:
    conn = http.client.HTTPConnection(hostile.host, hostile.port("endless_body"), timeout=TIMEOUT)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("transfer-encoding") == "chunked"
        total = 0
        deadline = time.monotonic() + TIMEOUT
        while total < 8 * 1024 * 1024:
            assert time.monotonic() < deadline
            total += len(response.read(1024 * 1024))
        assert not response.isclosed()
    finally:
        conn.close()
    assert hostile.connections("endless_body") == 1


@pytest.mark.parametrize("tls", [False, True])
def test_gzip_bomb_is_small_on_the_wire_and_huge_inflated(
    hostile: HostileServers, tls: bool
) -> None:
    cap = 50 * 1024 * 1024
    conn: http.client.HTTPConnection
    if tls:
        conn = _PinnedHTTPS(
            hostile.hostname,
            hostile.port("gzip_bomb", tls=True),
            hostile.host,
            _verifying(hostile.ca_file),
        )
    else:
        conn = http.client.HTTPConnection(hostile.host, hostile.port("gzip_bomb"), timeout=TIMEOUT)
    try:
        conn.request("GET", "/", headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-encoding") == "gzip"
        length = int(response.getheader("content-length") or 0)
        assert 0 < length < 2 * 1024 * 1024
        inflate = zlib.decompressobj(wbits=31)
        compressed = inflated = 0
        while inflated <= cap:
            piece = response.read(16 * 1024)
            assert piece, "the bomb ended before inflating past the cap"
            compressed += len(piece)
            while piece and inflated <= cap:
                inflated += len(inflate.decompress(piece, cap + 1 - inflated))
                piece = inflate.unconsumed_tail
    finally:
        conn.close()
    assert inflated > cap
    assert compressed < 200 * 1024
    assert hostile.connections("gzip_bomb", tls=tls) == 1


def test_gzip_bomb_is_a_valid_gzip_stream() -> None:
    bomb = gzip_bomb(4 * 1024 * 1024)
    data = b"".join(bomb.chunks())
    assert len(data) == bomb.compressed_size < 8 * 1024
    assert gzip.decompress(data) == b" " * (4 * 1024 * 1024)  # checks the CRC and the size
    big = gzip_bomb()
    assert big.inflated_size == 1024**3
    assert big.compressed_size < 2 * 1024 * 1024


@pytest.mark.parametrize("tls", [False, True])
def test_reset_mid_response(hostile: HostileServers, tls: bool) -> None:
    received = bytearray()
    with socket.create_connection((hostile.host, hostile.port("reset", tls=tls)), TIMEOUT) as sock:
        # TLS through memory BIOs, so the TCP reset reaches us as such: an SSLSocket would
        # report it as an EOF, just like a FIN without close_notify
        stream = _TLSOverSocket(sock, _verifying(hostile.ca_file)) if tls else sock
        stream.sendall(GET)
        with pytest.raises(ConnectionResetError):
            _read_all(stream, received)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\n" not in received
    assert hostile.connections("reset", tls=tls) == 1


def _read_all(stream: socket.socket | _TLSOverSocket, into: bytearray) -> None:
    while got := stream.recv(4096):
        into += got
    pytest.fail(f"closed with FIN, not reset, after {bytes(into)!r}")


class _TLSOverSocket:
    """A TLS client over a plain socket through memory BIOs: socket errors pass unchanged."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=HOSTNAME)
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def sendall(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._tls.read(size)
            except ssl.SSLWantReadError:
                if not self._fill():
                    return b""
            except ssl.SSLEOFError:
                return b""

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._sock.sendall(self._outgoing.read())

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        return bool(data)


def test_garbage_instead_of_tls(hostile: HostileServers) -> None:
    with socket.create_connection((hostile.host, hostile.port("garbage_tls")), TIMEOUT) as sock:
        context = _verifying(hostile.ca_file)
        with pytest.raises(ssl.SSLError) as excinfo:
            context.wrap_socket(sock, server_hostname=hostile.hostname)
    assert not isinstance(excinfo.value, ssl.SSLCertVerificationError)
    with socket.create_connection((hostile.host, hostile.port("garbage_tls")), TIMEOUT) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        received = b""
        while got := sock.recv(4096):
            received += got
    assert received == GARBAGE
    assert hostile.connections("garbage_tls") == 2
    assert hostile.errors == []


def test_hostile_tls_certificate_verifies(hostile: HostileServers) -> None:
    context = _verifying(hostile.ca_file)
    for behaviour in ("trickle", "reset"):
        port = hostile.port(behaviour, tls=True)
        with (
            socket.create_connection((hostile.host, port), TIMEOUT) as sock,
            context.wrap_socket(sock, server_hostname=HOSTNAME) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert f"{HOSTNAME}:{hostile.port('reset', tls=True)}:127.0.0.1" in hostile.resolve_pins()
    assert hostile.url("gzip_bomb", tls=True).startswith(f"https://{HOSTNAME}:")


def test_connections_end_by_themselves(pki: ThrowawayPKI) -> None:
    with running_hostile(pki, max_lifetime=1.0, max_concurrent=2) as hostile:
        started = time.monotonic()
        socks = [_connect(hostile, "silent") for _ in range(3)]
        try:
            # the third is over the limit: closed at once
            socks[2].settimeout(TIMEOUT)
            assert socks[2].recv(1) == b""
            assert time.monotonic() - started < 0.9
            # the others end at max_lifetime
            for sock in socks[:2]:
                sock.settimeout(TIMEOUT)
                assert sock.recv(1) == b""
            assert 0.9 < time.monotonic() - started < 3
        finally:
            for sock in socks:
                sock.close()
        assert hostile.connections("silent") == 3
        wait_until(lambda: hostile.active() == 0, timeout=2, what="no connection is active")
        assert hostile.errors == []


def test_hostile_teardown_cuts_connections_and_leaves_no_thread(pki: ThrowawayPKI) -> None:
    with running_hostile(pki) as hostile:
        trickle = _connect(hostile, "trickle")
        endless = _connect(hostile, "endless_body", tls=True)
        trickle.sendall(GET)
        endless.sendall(GET)
        hostile.wait_for_connections("trickle", 1)
        hostile.wait_for_connections("endless_body", 1, tls=True)
        ports = [endpoint.port for endpoint in hostile.endpoints.values()]
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert THREAD_NAME not in {thread.name for thread in threading.enumerate()}
    assert not any(tcp_accepts(port) for port in ports)
    with trickle, endless:
        trickle.settimeout(TIMEOUT)
        _read_until_closed(trickle)
        endless.settimeout(TIMEOUT)
        _read_until_closed(endless)


def _read_until_closed(sock: socket.socket) -> None:
    """Read until EOF or reset, at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while sock.recv(1024 * 1024):
            assert time.monotonic() < deadline, "still open after teardown"
    except (ConnectionResetError, ssl.SSLError):
        pass


def test_no_fixture_thread_or_process_survives_its_test() -> None:
    # runs after the hostile tests above (file order): their fixtures are torn down by now
    assert THREAD_NAME not in {thread.name for thread in threading.enumerate()}
