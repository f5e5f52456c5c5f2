"""The prober's TLS client: OpenSSL driven over memory buffers, one session per probe.

:class:`ClientTLS` is what ``fetch`` is given instead of an ``ssl.SSLContext``;
``fetch._Channel`` feeds a :class:`Session` the bytes the event loop receives and sends
what it produces, so the request leaves with the client's Finished and every phase is
timed apart (monitors/fetch.py).

Why not the standard library's ``ssl``: it is linked against the system's OpenSSL, 3.0 on
Debian 12, where decoding each certificate of the server's chain sets up a public-key
decoder from scratch. A handshake is most of a probe's CPU, and that set-up a quarter of
the handshake (py-spy, bench/probe_vs_blackbox). pyOpenSSL drives the OpenSSL that
``cryptography`` ships and keeps current (already a dependency, for the certificates): the
HTTP-only sweep's CPU per probe fell by 5-10 % (docs/benchmarks.md, "Prober vs
blackbox_exporter"). The TLS offer checks (which protocol versions a server still accepts)
stay on ``ssl``: they ask what the system's OpenSSL can speak. That OpenSSL's configuration
(/etc/ssl/openssl.cnf) does not apply here; the bundled one's defaults do (its ClientHello
offers the X25519MLKEM768 hybrid group, as current browsers do).

Trust is decided as ``ssl.create_default_context()`` decides it in Python 3.11, by OpenSSL
itself during the handshake: the chain against ``ca_file`` or the system's store (the paths
``ssl`` uses, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured), TLS 1.2 or later, Python's
default cipher string, and the name by ``X509_VERIFY_PARAM_set1_host`` (``set1_ip`` for an
address) with partial wildcards refused and the subject's CN looked at only when the
certificate has no DNS names, as ``ssl`` does. A refused certificate ends the handshake with
an alert, before a byte of the request is written; :class:`VerifyFailed` carries OpenSSL's
code and message. pyOpenSSL has no call for the name: it is set through cryptography's
OpenSSL bindings on the connection's ``SSL`` pointer (``Connection._ssl``, not pyOpenSSL's
public API). The lock pins pyOpenSSL, and tests/unit/test_prober_tls.py fails if that
pointer goes. No session is resumed: every probe sees the certificate the server sends now.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

# ssl's own default (Modules/_ssl.c, PY_SSL_DEFAULT_CIPHER_STRING): TLS 1.2 suites a browser
# would offer; TLS 1.3's are OpenSSL's defaults
CIPHERS = (
    b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
)
OUTPUT_CHUNK = 65536
# X509_V_ERR_* codes named apart, as ssl names them
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64
_lib, _ffi = Binding.lib, Binding.ffi


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
    if isinstance(exc, SSL.ZeroReturnError):
        return "the server closed the TLS connection (close_notify)"
    if isinstance(exc, SSL.SysCallError):
        return str(exc.args[1]) if len(exc.args) > 1 else "unexpected end of the connection"
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        return str(errors[-1][-1]) or "TLS error"
    return str(exc) or f"TLS error ({type(exc).__name__})"


def _verify_message(code: int, host: str) -> str:
    """The message ``ssl`` gives for an X509_V_ERR_* code (the name spelled out for a
    mismatch, OpenSSL's own words otherwise)."""
    if code == X509_V_ERR_HOSTNAME_MISMATCH:
        return f"Hostname mismatch, certificate is not valid for '{host}'."
    if code == X509_V_ERR_IP_ADDRESS_MISMATCH:
        return f"IP address mismatch, certificate is not valid for '{host}'."
    text = _lib.X509_verify_cert_error_string(code)
    return _ffi.string(text).decode("utf-8", "replace") if text else f"X509 error {code}"


class ClientTLS:
    """A verifying (or, with ``verify=False``, merely reading) client configuration; one
    per CA file for the life of the process (:func:`client_tls`), shared by every probe."""

    def __init__(self, ca_file: str | None = None, *, verify: bool = True) -> None:
        self.ca_file, self.verify = ca_file, verify
        # the name's check, as ssl sets it: no partial wildcards (f*.example.com); the CN is
        # looked at only when the certificate has no DNS names
        self.host_flags = _lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(CIPHERS)
        # Renegotiation stays allowed, as ssl allows it: a server that asks for it (a client
        # certificate on one path) is up; OpenSSL checks the name again on the new handshake.
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
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


class _Verification:
    """A connection's app data: the name asked for, and the first fault the verification
    callback met. Not the session itself, which would make a reference cycle of every
    connection (freed only by the collector: 80 MB at 10,000 probes)."""

    __slots__ = ("fault", "host")

    def __init__(self, host: str) -> None:
        self.host = host
        self.fault: VerifyFailed | None = None


def _note_first_fault(
    connection: SSL.Connection, _cert: Any, code: int, _depth: int, ok: int
) -> bool:
    """OpenSSL's verification callback: the first fault is kept, and ends the handshake."""
    if not ok:
        state = connection.get_app_data()
        if isinstance(state, _Verification) and state.fault is None:
            state.fault = VerifyFailed(code, _verify_message(code, state.host))
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
def _address(host: str) -> bytes | None:
    """An IP literal's packed bytes; None for a name."""
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return None


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
        self._state = _Verification(host)
        self._conn = SSL.Connection(config._ctx, None)
        self._conn.set_app_data(self._state)
        address = _address(host)
        if address is None:  # no SNI for an address (RFC 6066), as ssl does
            self._conn.set_tlsext_host_name(host.encode("ascii"))
        if config.verify:
            param = _lib.SSL_get0_param(self._conn._ssl)
            _lib.X509_VERIFY_PARAM_set_hostflags(param, config.host_flags)
            if address is not None:
                done = _lib.X509_VERIFY_PARAM_set1_ip(param, address, len(address))
            else:
                name = host.encode("ascii")
                done = _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
            if done != 1:
                raise TLSFailed(f"OpenSSL cannot check a certificate against {host!r}")
        self._conn.set_connect_state()

    # -- bytes in and out

    def receive(self, data: bytes) -> None:
        if data:  # an empty write is an error to OpenSSL
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
        """Go on with the handshake: its :class:`Peer` once it is done (the chain and the
        name verified, unless the configuration checks nothing); :class:`WantMore` until
        then."""
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            raise WantMore from None
        except SSL.Error as exc:
            raise (self._state.fault or TLSFailed(_reason(exc))) from None
        try:
            certificate = self._conn.get_peer_certificate(as_cryptography=True)
        except Exception as exc:
            # OpenSSL took it, cryptography cannot read it (a v4 certificate, a bad time)
            if self.config.verify:
                raise TLSFailed(f"the server's certificate cannot be read ({exc})") from None
            certificate = None
        return Peer(
            certificate=certificate,
            cipher=self._conn.get_cipher_name() or "",
            version=self._conn.get_protocol_version_name(),
        )

    # -- application data

    def write(self, data: bytes) -> None:
        try:
            self._conn.sendall(data)
        except SSL.Error as exc:
            raise TLSFailed(_reason(exc)) from None

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
