"""One HTTP(S) exchange, timed phase by phase, with every resource bounded.

The connection is driven from the event loop's callbacks (:class:`_Channel`: TLS by a
:class:`~portalops.monitors.tls.Session` over memory, no stream layers; the request leaves
with the client's TLS Finished in one ``send()``). A plain answer (one status line, headers
in a strict subset of h11's grammar, a Content-Length) is read on a lean path; anything else
(interim answers, chunked or odd framing, a head over the cap, a body cut short, a malformed
head) is read by h11 from the first byte, so both read alike what both take
(tests/unit/test_fetch_lean.py).
Each phase is ours to time and to bound, as blackbox_exporter reports them: ``resolve``
(the resolver, pins first), ``connect`` (TCP), ``tls`` (the handshake, on its own),
``processing`` (request sent to the status line) and ``transfer`` (headers to the end of
the body). The whole exchange has one
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

Certificates are verified against the system store or the configured CA (monitors/tls.py
says why not by the standard library's ``ssl``). When verification fails, the reason becomes
the error (expired, hostname mismatch, untrusted) and the peer certificate is fetched again
without verification, so the report still has its expiry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import re
import socket
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast
from urllib.parse import quote, urlsplit, urlunsplit

import h11
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from portalops.core.netaddr import parse_pin, unbracket
from portalops.monitors.catalogue import HTTP, TLS, Code
from portalops.monitors.tls import (
    X509_V_ERR_HOSTNAME_MISMATCH,
    X509_V_ERR_IP_ADDRESS_MISMATCH,
    ClientTLS,
    Peer,
    Session,
    TLSFailed,
    VerifyFailed,
    WantMore,
    client_tls,
)

USER_AGENT = "portal-ops-prober/0.1 (+Art. 19 availability monitoring)"
READ_SIZE = 65536
MAX_INFORMATIONAL = 10  # 1xx answers before the final one: more is a server stuck in a loop
DNS_THREADS = 8  # lookups at once; the rest queue (each still bounded by the resolver's timeout)
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")
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


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):  # a key type cryptography does not know
        return CertInfo(not_after=cert.not_valid_after_utc, key_type="unknown", key_bits=0)
    if isinstance(key, rsa.RSAPublicKey):
        key_type, bits = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, bits = "EC", key.curve.key_size
    else:
        key_type, bits = type(key).__name__, 0
    return CertInfo(not_after=cert.not_valid_after_utc, key_type=key_type, key_bits=bits)


def classify_verify_error(error: VerifyFailed) -> tuple[Code, str]:
    """(finding code, message) for a failed certificate verification."""
    message = error.verify_message
    if error.verify_code == 10 or "expired" in message:  # X509_V_ERR_CERT_HAS_EXPIRED
        return TLS.EXPIRED, f"certificate has expired ({message})"
    if error.verify_code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH):
        return TLS.HOSTNAME_MISMATCH, f"certificate is not for this name ({message})"
    return TLS.UNTRUSTED, f"certificate is not trusted ({message})"


@dataclass
class _Clock:
    started: float = field(default_factory=time.monotonic)
    mark: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mark = self.started

    def lap(self, phase: str, at: float | None = None) -> None:
        """The time since the last lap, to ``phase``; up to ``at`` if given, else now."""
        now = time.monotonic() if at is None else at
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - self.mark)
        self.mark = now


async def fetch(
    url: str,
    resolver: Resolver,
    *,
    context: ClientTLS | None = None,
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
    tls_context = (context or client_tls()) if url.startswith("https:") else None
    request = _request(url, host, port, method, limits)
    clock = _Clock()
    phase = "resolve"
    channel: _Channel | None = None
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
            channel, address = await _connect(addresses, port, host, tls_context, request.data)
            try:
                clock.lap(phase, channel.connected_at)  # the handshake may be over by now
                tls = None
                if tls_context is not None:
                    phase = "tls"
                    tls = await _handshake(channel, tls_context)
                    clock.lap(phase, channel.handshake_done_at)
                phase = "processing"
                return await _exchange(channel, request, limits, clock, address, tls)
            finally:
                channel.abort()  # no lingering close handshake: we are done with it
    except TimeoutError:
        phase = _answer_phase(phase, channel)
        raise FetchError(
            HTTP.TIMEOUT, f"no complete answer within {limits.timeout:g} s ({phase})", phase
        ) from None
    except (ConnectionError, TLSFailed, OSError) as exc:
        phase = _answer_phase(phase, channel)
        raise FetchError(HTTP.DOWN, f"{phase}: {_os_message(exc)}", phase) from None


def _answer_phase(phase: str, channel: _Channel | None) -> str:
    """``processing`` for a "tls" phase whose handshake had succeeded: the answer was being
    awaited with it (:meth:`_Channel.settled`)."""
    done = channel is not None and channel.handshake_done_at is not None
    return "processing" if phase == "tls" and done else phase


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
    if not _HOST_NAME.fullmatch(ascii_name):
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


class _Channel(asyncio.Protocol):
    """One connection's bytes, TLS included, driven from the loop's callbacks: no stream
    layers, no TLS transport. With TLS, a :class:`Session` over memory: the ClientHello
    leaves as soon as TCP connects, and the request (made before connecting) goes with the
    client's Finished in one ``send()``. The response's plaintext is buffered for
    :meth:`read`; reading pauses when that buffer is full, so a fast sender costs at most
    ``2 * READ_SIZE`` bytes of it before the reader takes them. The reader wakes once for
    the handshake and the answer's first bytes (:meth:`settled`), not once for each."""

    def __init__(self, host: str, context: ClientTLS | None, request: bytes) -> None:
        self.loop = asyncio.get_running_loop()
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.tls: Session | None = None
        self.handshaking = context is not None
        self.connected_at: float | None = None  # time.monotonic() when TCP connected
        self.handshake_done_at: float | None = None  # time.monotonic() when it succeeded
        # What the handshake established, taken when it succeeds: an answer cut short by a
        # bad record or an unexpected close afterwards makes OpenSSL forget it.
        self.peer: Peer | None = None
        self.handshake_error: BaseException | None = None
        if context is not None:
            self.tls = context.session(host)

    # -- the loop's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = transport = cast(asyncio.Transport, transport)
        self.connected_at = time.monotonic()
        if self.tls is None:
            transport.write(self.request)
        else:
            self._handshake()

    def data_received(self, data: bytes) -> None:
        if self.tls is None:
            self._plain(data)
            return
        self.tls.receive(data)
        if self.handshaking:
            self._handshake()
        else:
            self._decrypt()

    def eof_received(self) -> bool:
        if self.tls is not None:
            self.tls.receive_eof()
            if self.handshaking:
                self._handshake_failed(
                    ConnectionResetError("the server closed the connection in the handshake")
                )
                return False
            self._decrypt()
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshaking:
            self._handshake_failed(
                exc or ConnectionResetError("the connection was lost in the handshake")
            )
        if exc is not None and self.error is None:
            self.error = exc
        self.eof = True
        self._wake()

    # -- TLS

    def _handshake(self) -> None:
        if self.tls is None:
            return
        try:
            peer = self.tls.handshake()
        except WantMore:
            self._flush()
            return
        except TLSFailed as exc:
            self._handshake_failed(exc)
            return
        self.handshaking, self.handshake_done_at = False, time.monotonic()
        self.peer = peer
        try:
            self.tls.write(self.request)  # with the client's Finished: one send
        except TLSFailed as exc:
            self._handshake_failed(exc)
            return
        self._flush()
        self._decrypt()  # application data that came with the server's last flight

    def _handshake_failed(self, exc: BaseException) -> None:
        self.handshaking, self.handshake_error = False, exc
        self._flush()  # the alert, if any
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _flush(self) -> None:
        if self.tls is None:
            return
        data = self.tls.outgoing()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _decrypt(self) -> None:
        if self.tls is None:
            return
        try:
            while True:
                # b"": close_notify, or a TCP close without it (the end, as HTTP sees it)
                chunk = self.tls.read(READ_SIZE)
                if not chunk:
                    self.eof = True
                    break
                self.buffer += chunk
        except WantMore:
            pass
        except TLSFailed as exc:
            self.error = self.error or exc
        self._flush()  # a key update's answer, if any
        if self.buffer or self.eof or self.error is not None:
            self._wake()
            self._throttle()

    # -- plaintext for the reader

    def _plain(self, data: bytes) -> None:
        self.buffer += data
        self._wake()
        self._throttle()

    def _throttle(self) -> None:
        if len(self.buffer) >= 2 * READ_SIZE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def settled(self) -> None:
        """Until the handshake has failed, or has succeeded and the answer has begun (or the
        connection has ended)."""
        while self.handshake_error is None and not (
            self.buffer or self.eof or self.error is not None
        ):
            self.waiter = self.loop.create_future()
            await self.waiter

    async def read(self) -> bytes:
        """The plaintext received so far (at least one byte), or b"" at the end."""
        while not self.buffer:
            if self.error is not None:
                raise self.error
            if self.eof:
                return b""
            self.waiter = self.loop.create_future()
            await self.waiter
        data = bytes(self.buffer)
        self.buffer.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _same(channel: _Channel) -> _Channel:
    return channel


async def _connect(
    addresses: Sequence[str],
    port: int,
    host: str,
    context: ClientTLS | None,
    request: bytes,
) -> tuple[_Channel, str]:
    """Connect to the first address that accepts, in the resolver's order (a dead first A
    record is not the site down); FetchError naming the last refusal if none does. With
    ``context``, the TLS handshake starts as soon as TCP connects (:class:`_Channel`)."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for address in addresses:
        channel = _Channel(host, context, request)
        try:
            await loop.create_connection(functools.partial(_same, channel), address, port)
        except OSError as exc:
            error = exc
            continue
        return channel, address
    tried = addresses[0] if len(addresses) == 1 else f"{len(addresses)} addresses"
    reason = error.strerror if error is not None and error.strerror else str(error)
    raise FetchError(HTTP.DOWN, f"cannot connect to {tried} port {port}: {reason}", "connect")


async def _handshake(channel: _Channel, context: ClientTLS) -> TlsInfo:
    if channel.tls is None:
        raise FetchError(TLS.HANDSHAKE, "TLS handshake failed: no TLS on this connection", "tls")
    await channel.settled()
    # taken off the channel: raised from here, it would keep the channel (and its TLS
    # connection) in a reference cycle through this frame until the collector ran
    error, channel.handshake_error = channel.handshake_error, None
    try:
        if error is not None:
            raise error
    except VerifyFailed as exc:
        code, message = classify_verify_error(exc)
        raise FetchError(code, message, "tls") from None
    except TLSFailed as exc:
        raise FetchError(TLS.HANDSHAKE, f"TLS handshake failed: {exc.reason}", "tls") from None
    if channel.peer is None:  # not reached: settled() returns on success or failure
        raise FetchError(TLS.HANDSHAKE, "TLS handshake failed: it did not finish", "tls")
    peer = channel.peer
    return TlsInfo(
        version=peer.version,
        cipher=peer.cipher,
        verified=context.verify,
        cert=cert_info(peer.certificate) if peer.certificate is not None else None,
    )


# The lean path's grammar: a strict subset of h11's (its status line, token and field value
# without its leniencies: no bare LF, no control characters, no obs-fold). What it does not
# match, h11 reads instead, from the first byte.
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
# OWS, field value, OWS is exactly a run of HTAB, SP, VCHAR and obs-text, and written as one
# class there is one way to match it: a value split between optional blanks and a repeated
# group made a hostile head of 200 bytes backtrack for minutes, in the loop, where no deadline
# can stop it (tests/unit/test_fetch_lean.py).
_FIELD = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[\t\x20-\x7e\x80-\xff]*"
_FIELDS = re.compile(rb"(?:" + _FIELD + rb"\r\n)*")
_REQUEST_TARGET = re.compile(r"[\x21-\x7e]+")
_LENGTH = re.compile(r"[0-9]{1,18}")
_NO_BODY_STATUSES = (204, 304)


@dataclass(frozen=True)
class _Request:
    """A request as sent, and what reading its answer needs to know of it."""

    url: str
    method: str
    target: str
    host_header: str
    lean: bool  # the answer may be read by the lean path (a GET; h11 reads anything else)

    @property
    def data(self) -> bytes:
        """The request's bytes, exactly as h11 writes them (the Host header first, the others
        in order; a GET has no body and so no framing header)."""
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Host", self.host_header),
            ("User-Agent", USER_AGENT),
            ("Accept", "text/html,*/*;q=0.8"),
            ("Accept-Encoding", "identity"),
            ("Connection", "close"),
        ]

    def h11_client(self, limits: Limits) -> h11.Connection:
        """An h11 client that has sent this request (its bytes are ``data``): it reads the
        answers the lean path does not take; FetchError if h11 refuses the request."""
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header)
        try:
            request = h11.Request(method=self.method, target=self.target, headers=self.headers())
            conn.send(request)
            conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            message = f"{self.url!r} cannot be requested: {exc}"
            raise FetchError(HTTP.DOWN, message, "processing") from None
        return conn


def _request(url: str, host: str, port: int, method: str, limits: Limits) -> _Request:
    """The request to send. A target or method h11's grammar might refuse is left to h11
    itself, for its verdict."""
    split = urlsplit(url)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    default_port = 443 if split.scheme == "https" else 80
    authority = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    host_header = authority if port == default_port else f"{authority}:{port}"
    request = _Request(url, method, target, host_header, lean=method == "GET")
    if method not in ("GET", "HEAD") or not _REQUEST_TARGET.fullmatch(target):
        request.h11_client(limits)  # h11's verdict on what its grammar may refuse: raises
    return request


async def _exchange(
    channel: _Channel,
    request: _Request,
    limits: Limits,
    clock: _Clock,
    address: str,
    tls: TlsInfo | None,
) -> Response:
    """Read the answer: the lean path for a plain, well-formed one (one status line, headers
    in the strict grammar, a Content-Length), h11 for everything else, from the first byte
    received (interim answers, chunked bodies, odd framing, oversized or malformed heads)."""
    raw = bytearray()
    if request.lean:
        lean = await _lean_answer(channel, raw, limits, clock)
        if lean is not None:
            status, reason, headers, body, truncated = lean
            return _response(request, address, status, reason, "1.1", headers, body, truncated,
                             limits, clock, tls)  # fmt: skip
    conn = request.h11_client(limits)
    if raw:  # what the lean path read (b"" would be the end of the stream to h11)
        conn.receive_data(bytes(raw))
    return await _h11_answer(channel, conn, request, len(raw), limits, clock, address, tls)


async def _lean_answer(
    channel: _Channel, raw: bytearray, limits: Limits, clock: _Clock
) -> tuple[int, str, list[tuple[str, str]], bytes, bool] | None:
    """(status, reason, headers, body, truncated) of an answer in the lean grammar; None
    when it is not one, with every byte received so far in ``raw`` for h11 to read."""
    head = await _lean_head(channel, raw, limits)
    if head is None:
        return None
    status, reason, headers, length, head_size = head
    clock.lap("processing")
    wanted = min(length, limits.max_body + 1)  # one byte past the cap: the body is longer
    while len(raw) - head_size < wanted:
        data = await channel.read()
        if not data:
            return None  # closed before the end: h11 says how
        raw += data
    received = min(len(raw) - head_size, length)
    body = bytes(raw[head_size : head_size + min(received, limits.max_body)])
    return status, reason, headers, body, received > limits.max_body


async def _lean_head(
    channel: _Channel, raw: bytearray, limits: Limits
) -> tuple[int, str, list[tuple[str, str]], int, int] | None:
    """(status, reason, headers, Content-Length, head size) of a final answer's head in the
    lean grammar, read into ``raw``; None when it is not one (or not within the cap)."""
    end = -1
    while end < 0:
        data = await channel.read()
        searched = max(0, len(raw) - 3)
        raw += data
        end = raw.find(b"\r\n\r\n", searched)
        if end < 0 and (not data or len(raw) > limits.max_header):
            return None
    head_size = end + 4
    first = raw.find(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(raw, 0, first)
    if (
        head_size > limits.max_header
        or status_line is None
        or first == end
        or not _FIELDS.fullmatch(raw, first + 2, head_size - 2)
    ):
        return None
    status = int(status_line.group(1))
    headers: list[tuple[str, str]] = []
    lengths: list[str] = []
    for line in raw[first + 2 : end].decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(" \t")
        if name == "content-length":
            lengths.append(value)
        elif name == "transfer-encoding":
            return None
        headers.append((name, value))
    if status in _NO_BODY_STATUSES or len(lengths) != 1 or not _LENGTH.fullmatch(lengths[0]):
        return None
    reason = (status_line.group(2) or b"").decode("latin-1", "replace")
    return status, reason, headers, int(lengths[0]), head_size


async def _h11_answer(
    channel: _Channel,
    conn: h11.Connection,
    request: _Request,
    fed: int,
    limits: Limits,
    clock: _Clock,
    address: str,
    tls: TlsInfo | None,
) -> Response:
    """The answer as h11 reads it; ``fed``: bytes already given to ``conn``."""
    response: h11.Response | None = None
    body = bytearray()
    truncated = False
    # fed: bytes given to h11 until the final response's headers, counted against the cap
    informational = 0
    while True:
        try:  # h11 raises on a bad or oversized response when it parses: in next_event()
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await channel.read()
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
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers]
    return _response(
        request,
        address,
        response.status_code,
        response.reason.decode("latin-1", "replace"),
        response.http_version.decode(),
        headers,
        bytes(body),
        truncated,
        limits,
        clock,
        tls,
    )


def _response(
    request: _Request,
    address: str,
    status: int,
    reason: str,
    http_version: str,
    headers: list[tuple[str, str]],
    body: bytes,
    truncated: bool,
    limits: Limits,
    clock: _Clock,
    tls: TlsInfo | None,
) -> Response:
    clock.lap("transfer")
    content, inflated_truncated = _decode_content(body, headers, limits.max_body)
    return Response(
        url=request.url,
        address=address,
        status=status,
        reason=reason,
        http_version=http_version,
        headers=headers,
        body=content,
        truncated=truncated or inflated_truncated,
        timings=dict(clock.timings),
        tls=tls,
    )


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
    if isinstance(exc, TLSFailed):
        return f"TLS error: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def now_utc() -> datetime:
    return datetime.now(UTC)
