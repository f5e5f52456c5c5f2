"""The prober's TLS client: OpenSSL driven over memory buffers, one session per probe.

:class:`ClientTLS` is what ``fetch`` is given instead of an ``ssl.SSLContext``;
``fetch._Channel`` feeds a :class:`Session` the bytes the event loop receives and sends
what it produces, so the request leaves with the client's Finished and every phase is
timed apart (monitors/fetch.py).

Why not the standard library's ``ssl``: it is linked against the system's OpenSSL, 3.0 on
Debian 12, where decoding each certificate of the server's chain sets up a public-key
decoder from scratch. A handshake is most of a probe's CPU, and that set-up a quarter of
the handshake (py-spy, bench/probe_vs_blackbox). pyOpenSSL drives the OpenSSL that
``cryptography`` ships and keeps current (already a dependency, for the certificates):
connect, handshake and read one page cost 0.63-0.69 ms of CPU against 0.86-0.90 ms through
``ssl`` (2,000 handshakes each, alternated three times, against the bench's nginx); the
HTTP-only sweep's CPU per probe fell by a fifth (docs/benchmarks.md). The TLS offer checks
(which protocol versions a server still accepts) stay on ``ssl``: they ask what the
system's OpenSSL can speak.

Verification is what ``ssl.create_default_context()`` does: the chain by OpenSSL against
``ca_file`` or the system's store (the paths ``ssl`` itself uses, ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` honoured), TLS 1.2 or later, Python's default cipher string, no
renegotiation, no session resumed (every probe sees the certificate the server sends now);
the name, which OpenSSL is not asked to check through pyOpenSSL, by PyCA's
``service_identity`` against the subjectAltName entries only, as Python 3.10+ does, before
a byte of the request is written. A failure names the first fault, as ``ssl`` does:
:class:`VerifyFailed` with OpenSSL's verification code and message.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

# ssl's own default (Modules/_ssl.c, PY_SSL_DEFAULT_CIPHER_STRING): TLS 1.2 suites a browser
# would offer; TLS 1.3's are OpenSSL's defaults
CIPHERS = (
    b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
)
OUTPUT_CHUNK = 65536

# OpenSSL's X509_V_ERR_* codes the prober names, with OpenSSL's own messages
# (X509_verify_cert_error_string); any other code is reported by number
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64
VERIFY_MESSAGES = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    X509_V_ERR_CERT_HAS_EXPIRED: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    32: "key usage does not include certificate signing",
    43: "name constraints violation",
    47: "permitted subtree violation",
    48: "excluded subtree violation",
    66: "EE certificate key too weak",
    67: "CA certificate key too weak",
    68: "CA signature digest algorithm too weak",
    X509_V_ERR_HOSTNAME_MISMATCH: "Hostname mismatch",
    X509_V_ERR_IP_ADDRESS_MISMATCH: "IP address mismatch",
}


class TLSFailed(Exception):
    """The handshake or a record failed; ``reason`` is OpenSSL's, in its own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VerifyFailed(TLSFailed):
    """The server's certificate was refused: OpenSSL's X509_V_ERR code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"certificate verify failed: {message}")
        self.verify_code, self.verify_message = code, message


class WantMore(Exception):
    """The session needs more bytes from the server before it can go on."""


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's reason for a pyOpenSSL error: ``[(lib, func, reason), ...]`` -> the last."""
    if isinstance(exc, SSL.SysCallError):
        return str(exc.args[1]) if len(exc.args) > 1 else "unexpected end of the connection"
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        return str(errors[-1][-1]) or "TLS error"
    return str(exc) or type(exc).__name__


class ClientTLS:
    """A verifying (or, with ``verify=False``, merely reading) client configuration; one
    per CA file for the life of the process (:func:`client_tls`), shared by every probe."""

    def __init__(self, ca_file: str | None = None, *, verify: bool = True) -> None:
        self.ca_file, self.verify = ca_file, verify
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(CIPHERS)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_alpn_protos([b"http/1.1"])
        if verify:
            if ca_file is not None:
                ctx.load_verify_locations(ca_file)
            else:  # the system's store, where the standard library finds it
                paths = ssl.get_default_verify_paths()
                if paths.cafile or paths.capath:
                    ctx.load_verify_locations(paths.cafile, paths.capath)
            ctx.set_verify(SSL.VERIFY_PEER, _note_first_fault)
        else:
            ctx.set_verify(SSL.VERIFY_NONE)
        self._ctx = ctx

    def session(self, host: str) -> Session:
        return Session(self, host)


def _note_first_fault(
    connection: SSL.Connection, _cert: Any, code: int, _depth: int, ok: int
) -> bool:
    """OpenSSL's verification callback: the first fault is kept, and ends the handshake."""
    if not ok:
        faults = connection.get_app_data()
        if isinstance(faults, list) and not faults:
            faults.append(VerifyFailed(code, VERIFY_MESSAGES.get(code, f"X509 error {code}")))
    return bool(ok)


@functools.cache
def client_tls(ca_file: str | None = None) -> ClientTLS:
    """The verifying configuration for ``ca_file`` (None: the system's store), made once:
    loading the system store costs ~17 ms of CPU, ten times a whole probe."""
    return ClientTLS(ca_file)


@functools.cache
def insecure_tls() -> ClientTLS:
    """For reading a certificate that failed verification: nothing checked."""
    return ClientTLS(verify=False)


@functools.lru_cache(maxsize=4096)  # the same portals, sweep after sweep
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Peer:
    """What a handshake established."""

    certificate: x509.Certificate | None
    cipher: str
    version: str


class Session:
    """One client connection's TLS, over memory: :meth:`receive` what came from the server,
    send what :meth:`outgoing` returns. Errors are :class:`TLSFailed`; :class:`WantMore`
    means wait for the server."""

    def __init__(self, config: ClientTLS, host: str) -> None:
        self.config, self.host = config, host
        # the verification callback's note of the first fault; not the session itself, which
        # would make a reference cycle of every connection (freed only by the collector)
        self._faults: list[VerifyFailed] = []
        self._address = _is_address(host)
        self._conn = SSL.Connection(config._ctx, None)
        self._conn.set_app_data(self._faults)
        if not self._address:  # no SNI for an address (RFC 6066), as ssl does
            self._conn.set_tlsext_host_name(host.encode("ascii"))
        self._conn.set_connect_state()

    # -- bytes in and out

    def receive(self, data: bytes) -> None:
        self._conn.bio_write(data)

    def receive_eof(self) -> None:
        self._conn.bio_shutdown()

    def outgoing(self) -> bytes:
        out = b""
        try:
            while chunk := self._conn.bio_read(OUTPUT_CHUNK):
                out += chunk
                if len(chunk) < OUTPUT_CHUNK:  # drained: spare the exception an empty read is
                    break
        except SSL.WantReadError:
            pass
        return out

    # -- the handshake

    def handshake(self) -> Peer:
        """Go on with the handshake: its :class:`Peer` once it is done and the name checked;
        :class:`WantMore` until then."""
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            raise WantMore from None
        except SSL.Error as exc:
            raise (self._faults[0] if self._faults else TLSFailed(_reason(exc))) from None
        certificate = self._conn.get_peer_certificate(as_cryptography=True)
        if self.config.verify:
            self._check_name(certificate)
        return Peer(
            certificate=certificate,
            cipher=self._conn.get_cipher_name() or "",
            version=self._conn.get_protocol_version_name(),
        )

    def _check_name(self, certificate: x509.Certificate | None) -> None:
        if certificate is None:  # not reached: VERIFY_PEER needs one
            raise TLSFailed("the server sent no certificate")
        code = X509_V_ERR_IP_ADDRESS_MISMATCH if self._address else X509_V_ERR_HOSTNAME_MISMATCH
        try:
            if self._address:
                verify_certificate_ip_address(certificate, self.host)
            else:
                verify_certificate_hostname(certificate, self.host)
        except (VerificationError, CertificateError, ValueError):
            # ValueError: a name service_identity does not take as a DNS name
            raise VerifyFailed(code, VERIFY_MESSAGES[code]) from None

    # -- application data

    def write(self, data: bytes) -> None:
        self._conn.sendall(data)

    def read(self, size: int) -> bytes:
        """Plaintext (b"" at the server's close_notify or a close without one); WantMore
        when nothing is ready; TLSFailed for a bad record."""
        try:
            return self._conn.recv(size)
        except SSL.WantReadError:
            raise WantMore from None
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] == -1:  # the end of input, without close_notify
                return b""
            raise TLSFailed(_reason(exc)) from None
        except SSL.Error as exc:
            raise TLSFailed(_reason(exc)) from None
