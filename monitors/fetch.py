"""One HTTP(S) exchange, timed phase by phase, with every resource bounded.

asyncio streams carry the bytes and h11 speaks HTTP/1.1 over them, so each phase is ours to
time and to bound, as blackbox_exporter reports them: ``resolve`` (the resolver, pins first),
``connect`` (TCP), ``tls`` (the handshake, on its own), ``processing`` (request sent to the
status line) and ``transfer`` (headers to the end of the body). The whole exchange has one
deadline; a server that never answers, trickles, or sends endless headers or body costs its
timeout and at most ``max_header`` + ``max_body`` bytes of memory, never more. Bodies are
asked for uncompressed (``Accept-Encoding: identity``); one that arrives compressed anyway is
inflated only up to ``max_body`` (a gzip bomb stops there).

Certificates are verified against the system store or the configured CA. When verification
fails, the reason becomes the error (expired, hostname mismatch, untrusted) and the peer
certificate is fetched again without verification, so the report still has its expiry.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import h11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from portalops.core.netaddr import parse_pin, unbracket
from portalops.monitors.catalogue import HTTP, TLS, Code

USER_AGENT = "portal-ops-prober/0.1 (+Art. 19 availability monitoring)"
READ_SIZE = 65536


class FetchError(Exception):
    """A probe that could not complete: ``code`` is the finding code it becomes."""

    def __init__(self, code: Code, message: str, phase: str) -> None:
        super().__init__(message)
        self.code, self.message, self.phase = code, message, phase


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # the whole exchange, resolve to last byte
    max_header: int = 64 * 1024
    max_body: int = 2 * 1024 * 1024


@dataclass
class CertInfo:
    subject: str
    issuer: str
    not_after: datetime
    names: list[str]
    key_type: str  # "RSA" or "EC"
    key_bits: int
    self_signed: bool

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


@dataclass
class TlsInfo:
    version: str  # "TLSv1.3"
    cipher: str
    verified: bool
    verify_error: str = ""
    cert: CertInfo | None = None


@dataclass
class Response:
    url: str
    address: str
    status: int
    reason: str
    http_version: str
    headers: list[tuple[str, str]]
    body: bytes
    truncated: bool  # the body was longer than max_body
    timings: dict[str, float] = field(default_factory=dict)
    tls: TlsInfo | None = None

    def header(self, name: str) -> str | None:
        """The header's value (several joined with ", "), or None."""
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


class Resolver:
    """Name resolution with curl-style pins (``host:port:address``) checked first.

    A lookup that takes longer than ``timeout`` seconds is an ``http.down`` FetchError
    (phase ``resolve``): getaddrinfo has no timeout of its own, and a dead resolver must not
    hold a probe (its thread finishes in the background)."""

    def __init__(self, pins: Sequence[str] = (), timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.pins: dict[tuple[str, int], list[str]] = {}
        for pin in pins:
            host, port, address = _parse_pin(pin)
            self.pins.setdefault((host, port), []).append(address)

    def pinned(self, host: str, port: int) -> list[str] | None:
        return self.pins.get((host.lower(), port))

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list[str]:
        pinned = self.pinned(host, port)
        if pinned is not None:
            return [a for a in pinned if _family(a) == family or family == socket.AF_UNSPEC]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(
                HTTP.DOWN, f"cannot resolve {host}: {exc.strerror}", "resolve"
            ) from None
        except TimeoutError:
            raise FetchError(
                HTTP.DOWN, f"cannot resolve {host}: no answer within {self.timeout:g} s", "resolve"
            ) from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parse_pin(pin: str) -> tuple[str, int, str]:
    parsed = parse_pin(pin)
    if parsed is None:
        raise ValueError(f"resolve pin {pin!r} is not host:port:address")
    host, port, address = parsed
    return host.lower(), port, unbracket(address)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@functools.cache
def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifying context: system store, or ``ca_file``; TLS 1.2+ as a browser would.

    One per CA file for the life of the process: loading the system store costs ~17 ms of
    CPU, ten times a whole probe (bench/probe_vs_blackbox). A context is safe to share."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@functools.cache
def insecure_context() -> ssl.SSLContext:
    """For reading a certificate that failed verification: nothing checked."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def cert_info(der: bytes) -> CertInfo:
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type, bits = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, bits = "EC", key.curve.key_size
    else:
        key_type, bits = type(key).__name__, 0
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        names=names,
        key_type=key_type,
        key_bits=bits,
        self_signed=cert.issuer == cert.subject,
    )


def classify_verify_error(error: ssl.SSLCertVerificationError) -> tuple[Code, str]:
    """(finding code, message) for a failed certificate verification."""
    message = error.verify_message or str(error)
    if error.verify_code == 10 or "expired" in message:  # X509_V_ERR_CERT_HAS_EXPIRED
        return TLS.EXPIRED, f"certificate has expired ({message})"
    if error.verify_code == 62 or "Hostname mismatch" in message:  # X509_V_ERR_HOSTNAME_MISMATCH
        return TLS.HOSTNAME_MISMATCH, f"certificate is not for this name ({message})"
    return TLS.UNTRUSTED, f"certificate is not trusted ({message})"


@dataclass
class _Clock:
    started: float = field(default_factory=time.monotonic)
    mark: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mark = self.started

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - self.mark)
        self.mark = now


async def fetch(
    url: str,
    resolver: Resolver,
    *,
    context: ssl.SSLContext | None = None,
    limits: Limits = Limits(),
    family: int = socket.AF_UNSPEC,
    method: str = "GET",
) -> Response:
    """GET ``url`` once (no redirects followed); raises :class:`FetchError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(HTTP.DOWN, f"{url} is not an http(s) URL", "resolve")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    clock = _Clock()
    phase = "resolve"
    try:
        async with asyncio.timeout(limits.timeout):
            addresses = await resolver.resolve(host, port, family)
            if not addresses:
                raise FetchError(HTTP.DOWN, f"{host} has no address of that family", phase)
            clock.lap(phase)
            phase = "connect"
            address = addresses[0]
            try:
                reader, writer = await asyncio.open_connection(address, port)
            except OSError as exc:
                raise FetchError(
                    HTTP.DOWN, f"cannot connect to {address} port {port}: {exc.strerror}", phase
                ) from None
            try:
                clock.lap(phase)
                tls = None
                if parts.scheme == "https":
                    phase = "tls"
                    tls = await _handshake(writer, host, context or client_context())
                    clock.lap(phase)
                phase = "processing"
                return await _exchange(
                    reader, writer, url, host, port, method, limits, clock, address, tls
                )
            finally:
                writer.transport.abort()  # no lingering close handshake: we are done with it
    except TimeoutError:
        raise FetchError(
            HTTP.TIMEOUT, f"no complete answer within {limits.timeout:g} s ({phase})", phase
        ) from None
    except (ConnectionError, ssl.SSLError, OSError) as exc:
        raise FetchError(HTTP.DOWN, f"{phase}: {_os_message(exc)}", phase) from None


async def _handshake(writer: asyncio.StreamWriter, host: str, context: ssl.SSLContext) -> TlsInfo:
    try:
        await writer.start_tls(context, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        code, message = classify_verify_error(exc)
        raise FetchError(code, message, "tls") from None
    except ssl.SSLError as exc:
        raise FetchError(
            TLS.HANDSHAKE, f"TLS handshake failed: {exc.reason or exc}", "tls"
        ) from None
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    cipher = ssl_object.cipher() if ssl_object else None
    return TlsInfo(
        version=str(ssl_object.version()) if ssl_object else "",
        cipher=cipher[0] if cipher else "",
        verified=context.verify_mode != ssl.CERT_NONE,
        cert=cert_info(der) if der else None,
    )


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    url: str,
    host: str,
    port: int,
    method: str,
    limits: Limits,
    clock: _Clock,
    address: str,
    tls: TlsInfo | None,
) -> Response:
    split = urlsplit(url)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    default_port = 443 if split.scheme == "https" else 80
    host_header = host if port == default_port else f"{host}:{port}"
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header)
    request = h11.Request(
        method=method,
        target=target,
        headers=[
            ("Host", host_header),
            ("User-Agent", USER_AGENT),
            ("Accept", "text/html,*/*;q=0.8"),
            ("Accept-Encoding", "identity"),
            ("Connection", "close"),
        ],
    )
    writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
    await writer.drain()
    response: h11.Response | None = None
    body = bytearray()
    truncated = False
    while True:
        try:  # h11 raises on a bad or oversized response when it parses: in next_event()
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_SIZE))
                continue
        except h11.RemoteProtocolError as exc:
            raise FetchError(HTTP.DOWN, _protocol_message(exc, limits), _where(response)) from None
        if isinstance(event, h11.Response):
            response = event
            clock.lap("processing")
        elif isinstance(event, h11.Data):
            room = limits.max_body - len(body)
            body += event.data[:room]
            if len(event.data) > room:
                truncated = True
                break
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
        elif isinstance(event, h11.InformationalResponse):
            continue
    if response is None:
        raise FetchError(
            HTTP.DOWN, "the server closed the connection without answering", "processing"
        )
    clock.lap("transfer")
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers]
    content = bytes(body)
    encoding = next((v.lower() for k, v in headers if k == "content-encoding"), "identity")
    if encoding in ("gzip", "deflate"):
        content, inflated_truncated = _inflate(content, encoding, limits.max_body)
        truncated = truncated or inflated_truncated
    return Response(
        url=url,
        address=address,
        status=response.status_code,
        reason=response.reason.decode("latin-1", "replace"),
        http_version=response.http_version.decode(),
        headers=headers,
        body=content,
        truncated=truncated,
        timings=dict(clock.timings),
        tls=tls,
    )


def _inflate(data: bytes, encoding: str, limit: int) -> tuple[bytes, bool]:
    """Inflate at most ``limit`` bytes: a bomb stops here. Damaged data: what came out."""
    inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        return data, False
    return out, bool(inflater.unconsumed_tail) or len(out) >= limit


def _where(response: h11.Response | None) -> str:
    return "processing" if response is None else "transfer"


def _protocol_message(exc: h11.RemoteProtocolError, limits: Limits) -> str:
    text = str(exc)
    if "exceeded" in text or "too long" in text.lower():
        return f"response headers larger than {limits.max_header // 1024} KiB"
    return f"invalid HTTP response: {text}"


def _os_message(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def now_utc() -> datetime:
    return datetime.now(UTC)
