"""One HTTP(S) exchange, timed phase by phase, with every resource bounded.

asyncio streams carry the bytes and h11 speaks HTTP/1.1 over them, so each phase is ours to
time and to bound, as blackbox_exporter reports them: ``resolve`` (the resolver, pins first),
``connect`` (TCP), ``tls`` (the handshake, on its own), ``processing`` (request sent to the
status line) and ``transfer`` (headers to the end of the body). The whole exchange has one
deadline; a server that never answers, trickles, or sends endless headers or body costs its
timeout and at most ``max_header`` + ``max_body`` bytes of memory, never more: the header
bytes (interim 1xx answers included) are counted exactly, and more than ``MAX_INFORMATIONAL``
1xx answers end the exchange. Bodies are asked for uncompressed (``Accept-Encoding:
identity``); one that arrives compressed anyway (gzip, zlib or raw deflate, several layers
too) is inflated layer by layer, each only up to ``max_body`` (a bomb stops there); other
codings (``br``, ``zstd``) are left as they came.

A URL is made the way a browser sends it (:func:`request_url`): its host IDNA-encoded, its
path and query percent-encoded; a name or port that cannot be sent is ``http.down``. Every
address a name resolves to is tried in order within the deadline. ``public_only`` refuses,
before any byte is sent, an address that is not on the public Internet (loopback, private,
link-local, multicast, unspecified): a redirect from a portal must not make the prober reach
into the monitoring host's own network (``http.redirect_blocked``).

Certificates are verified against the system store or the configured CA. When verification
fails, the reason becomes the error (expired, hostname mismatch, untrusted) and the peer
certificate is fetched again without verification, so the report still has its expiry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import re
import socket
import ssl
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit, urlunsplit

import h11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from portalops.core.netaddr import parse_pin, unbracket
from portalops.monitors.catalogue import HTTP, TLS, Code

USER_AGENT = "portal-ops-prober/0.1 (+Art. 19 availability monitoring)"
READ_SIZE = 65536
MAX_INFORMATIONAL = 10  # 1xx answers before the final one: more is a server stuck in a loop
DNS_THREADS = 8  # lookups at once; the rest queue (each still bounded by the resolver's timeout)
_SAFE_URL_CHARS = "/?#[]@!$&'()*+,;=:%~-._"  # left as they are when a URL is percent-encoded


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
    """What the checks read from the peer's certificate: its expiry and its key. Only that:
    the subject, issuer and names as text cost cryptography ~0.3 ms per probe (Name objects
    built and printed), a large share of a probe's own CPU (bench/probe_vs_blackbox), and
    nothing reported them."""

    not_after: datetime
    key_type: str  # "RSA" or "EC"
    key_bits: int

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
    hold a probe (its thread finishes in the background). Lookups run in a bounded pool of
    their own (:func:`dns_pool`), not in the event loop's default executor: with a dead
    resolver, stuck lookups must not queue ahead of anything else run in a thread."""

    def __init__(self, pins: Sequence[str] = (), timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.pins: dict[tuple[str, int], list[str]] = {}
        for pin in pins:
            host, port, address = _parse_pin(pin)
            self.pins.setdefault((host, port), []).append(address)

    def pinned(self, host: str, port: int) -> list[str] | None:
        return self.pins.get((host.lower(), port))

    def with_pin(self, host: str, port: int, addresses: Sequence[str]) -> Resolver:
        """This resolver with ``host:port`` pinned to ``addresses`` (an answer reused for a
        burst of requests to one origin: the exposure paths)."""
        other = Resolver(timeout=self.timeout)
        other.pins = {**self.pins, (host.lower(), port): list(addresses)}
        return other

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list[str]:
        pinned = self.pinned(host, port)
        if pinned is not None:
            return [a for a in pinned if _family(a) == family or family == socket.AF_UNSPEC]
        loop = asyncio.get_running_loop()
        lookup = functools.partial(
            socket.getaddrinfo, host, port, family=family, type=socket.SOCK_STREAM
        )
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.run_in_executor(dns_pool(), lookup)
        except socket.gaierror as exc:
            raise FetchError(
                HTTP.DOWN, f"cannot resolve {host}: {exc.strerror}", "resolve"
            ) from None
        except TimeoutError:
            raise FetchError(
                HTTP.DOWN, f"cannot resolve {host}: no answer within {self.timeout:g} s", "resolve"
            ) from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.cache
def dns_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads name lookups run in, at most ``DNS_THREADS`` (created on first use)."""
    return concurrent.futures.ThreadPoolExecutor(DNS_THREADS, thread_name_prefix="dns")


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
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type, bits = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, bits = "EC", key.curve.key_size
    else:
        key_type, bits = type(key).__name__, 0
    return CertInfo(not_after=cert.not_valid_after_utc, key_type=key_type, key_bits=bits)


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
    public_only: bool = False,
) -> Response:
    """GET ``url`` once (no redirects followed); raises :class:`FetchError`.

    ``public_only``: refuse (``http.redirect_blocked``) a name that resolves to an address
    not on the public Internet; the address checked is the one connected to, so a name
    that resolves elsewhere the second time (DNS rebinding) gains nothing."""
    url, host, port = request_url(url)
    parts = urlsplit(url)
    clock = _Clock()
    phase = "resolve"
    try:
        async with asyncio.timeout(limits.timeout):
            addresses = await resolver.resolve(host, port, family)
            if not addresses:
                raise FetchError(HTTP.DOWN, f"{host} has no address of that family", phase)
            if public_only:
                refused = [a for a in addresses if not is_public(a)]
                if refused:
                    raise FetchError(
                        HTTP.REDIRECT_BLOCKED,
                        f"{host} resolves to {refused[0]}, not a public address: not followed",
                        phase,
                    )
            clock.lap(phase)
            phase = "connect"
            reader, writer, address = await _connect(addresses, port)
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


def request_url(url: str) -> tuple[str, str, int]:
    """(url as a browser sends it, its ASCII host, its port); FetchError ``http.down`` for a
    URL that cannot be requested (not http(s), no host, a host IDNA refuses, a bad port).

    A portal chooses its Location values: a UTF-8 path (``/tin-tức/``), a space, an IDN
    host. Browsers percent-encode the path and query and IDNA-encode the host; so do we."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise FetchError(HTTP.DOWN, f"{url!r} is not a valid URL: {exc}", "resolve") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(HTTP.DOWN, f"{url!r} is not an http(s) URL", "resolve")
    host = ascii_host(parts.hostname)
    port = port or (443 if parts.scheme == "https" else 80)
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = quote(parts.path, safe=_SAFE_URL_CHARS) or "/"
    query = quote(parts.query, safe=_SAFE_URL_CHARS)
    return urlunsplit((parts.scheme, netloc, path, query, "")), host, port


def ascii_host(host: str) -> str:
    """The host as sent on the wire (IDNA for a Unicode name); FetchError if it cannot be."""
    host = host.rstrip(".") if host.endswith(".") and len(host) > 1 else host
    if ":" in host:  # an IPv6 literal
        try:
            return str(ipaddress.IPv6Address(host.split("%", 1)[0]))
        except ValueError:
            raise FetchError(HTTP.DOWN, f"{host!r} is not a valid address", "resolve") from None
    try:
        ascii_name = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        message = f"{host!r} is not a valid host name: {exc}"
        raise FetchError(HTTP.DOWN, message, "resolve") from None
    if not re.fullmatch(r"[a-z0-9_.-]+", ascii_name):
        raise FetchError(HTTP.DOWN, f"{host!r} is not a valid host name", "resolve")
    return ascii_name


def is_public(address: str) -> bool:
    """Whether an address is on the public Internet (not loopback, private, link-local,
    multicast, reserved or unspecified; an IPv4-mapped IPv6 address is judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(unbracket(address).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _connect(
    addresses: Sequence[str], port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Connect to the first address that accepts, in the resolver's order (a dead first A
    record is not the site down); FetchError naming the last refusal if none does."""
    error: OSError | None = None
    for address in addresses:
        try:
            reader, writer = await asyncio.open_connection(address, port)
        except OSError as exc:
            error = exc
            continue
        return reader, writer, address
    tried = addresses[0] if len(addresses) == 1 else f"{len(addresses)} addresses"
    reason = error.strerror if error is not None and error.strerror else str(error)
    raise FetchError(HTTP.DOWN, f"cannot connect to {tried} port {port}: {reason}", "connect")


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
    _send_request(conn, writer, url, method, target, host_header)
    await writer.drain()
    response: h11.Response | None = None
    body = bytearray()
    truncated = False
    fed = 0  # bytes given to h11 until the final response's headers: counted against the cap
    informational = 0
    while True:
        try:  # h11 raises on a bad or oversized response when it parses: in next_event()
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                if response is None:
                    fed += len(data)
                conn.receive_data(data)
                continue
        except h11.RemoteProtocolError as exc:
            raise FetchError(HTTP.DOWN, _protocol_message(exc, limits), _where(response)) from None
        if response is None:
            _check_head(event, fed - len(conn.trailing_data[0]), limits)
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
            informational += 1
            if informational > MAX_INFORMATIONAL:
                raise FetchError(
                    HTTP.DOWN,
                    f"more than {MAX_INFORMATIONAL} interim (1xx) answers before the response",
                    "processing",
                )
            await asyncio.sleep(0)  # a burst of them in one read: let the loop breathe
    if response is None:
        raise FetchError(
            HTTP.DOWN, "the server closed the connection without answering", "processing"
        )
    clock.lap("transfer")
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers]
    content, inflated_truncated = _decode_content(bytes(body), headers, limits.max_body)
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


def _send_request(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    url: str,
    method: str,
    target: str,
    host_header: str,
) -> None:
    try:
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
    except h11.LocalProtocolError as exc:
        raise FetchError(HTTP.DOWN, f"{url!r} cannot be requested: {exc}", "processing") from None


def _check_head(event: object, header_bytes: int, limits: Limits) -> None:
    """The header cap, exactly: ``header_bytes`` is every byte h11 has parsed so far (interim
    answers included), what it holds unparsed excluded. h11's own limit only bounds an
    incomplete head, so a complete one arriving in a few large reads could exceed it."""
    heads = (h11.Response, h11.InformationalResponse)
    if isinstance(event, heads) and header_bytes > limits.max_header:
        raise FetchError(
            HTTP.DOWN,
            f"response headers larger than {limits.max_header // 1024} KiB",
            "processing",
        )


def _decode_content(
    content: bytes, headers: Sequence[tuple[str, str]], limit: int
) -> tuple[bytes, bool]:
    """Undo the content codings, last applied first, each layer inflated only up to
    ``limit``; a coding we do not inflate (``br``, ``zstd``) stops there, the bytes as
    they are."""
    codings = [
        c.strip().lower() for k, v in headers if k == "content-encoding" for c in v.split(",")
    ]
    truncated = False
    for coding in reversed([c for c in codings if c and c != "identity"][:8]):
        if coding not in ("gzip", "x-gzip", "deflate"):
            break
        content, cut = _inflate(content, coding, limit)
        truncated = truncated or cut
    return content, truncated


def _inflate(data: bytes, encoding: str, limit: int) -> tuple[bytes, bool]:
    """Inflate at most ``limit`` bytes: a bomb stops here. Damaged data: what came out.

    ``deflate`` is meant to be zlib-wrapped (RFC 9110) but some servers send it raw: the
    raw form is tried when the wrapped one fails at once."""
    modes = (15, -15) if encoding == "deflate" else (47,)  # 47: gzip or zlib, detected
    for wbits in modes:
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            out = inflater.decompress(data, limit)
        except zlib.error:
            continue
        return out, bool(inflater.unconsumed_tail) or len(out) >= limit
    return data, False


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
