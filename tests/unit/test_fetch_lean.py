"""The prober reads plain answers on a lean path and everything else with h11: the two must
agree on every answer the lean path takes, and the lean path must leave the rest to h11
(interim answers, chunked bodies, odd framing, heads over the cap, short bodies). Each answer
comes from a real server on loopback, read once each way; the request's bytes are h11's."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import h11
import pytest

from portalops.monitors.exporter import run
from portalops.monitors.fetch import (
    FetchError,
    Limits,
    Resolver,
    Response,
    _Clock,
    _connect,
    _exchange,
    _lean_answer,
    _request,
    fetch,
    request_url,
)
from portalops.monitors.tls import client_tls
from tests.fixtures.pki import ThrowawayPKI
from tests.fixtures.tls_server import tls_server

LOOPBACK = "127.0.0.1"
LIMITS = Limits(timeout=5, max_header=400, max_body=64)
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"

# (name, answer, whether the lean path takes it)
ANSWERS: list[tuple[str, bytes, bool]] = [
    ("plain", OK_HEAD + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello", True),
    ("no reason", b"HTTP/1.1 404\r\nContent-Length: 2\r\n\r\nno", True),
    ("redirect", b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", True),
    (
        "odd spacing",
        b"HTTP/1.1 200 OK\r\nX-A:\t v  w \t\r\nX-E:\r\nContent-Length:  2 \r\n\r\nok",
        True,
    ),
    (
        "obs-text",
        b"HTTP/1.1 200 \xc4\x91\xc6\xb0\xe1\xbb\xa3c\r\n"
        b"X-V: \xe1\xbb\xa9\r\nContent-Length: 1\r\n\r\n!",
        True,
    ),
    ("trailing bytes", OK_HEAD + b"Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", True),
    ("body at the cap", OK_HEAD + b"Content-Length: 64\r\n\r\n" + b"b" * 64, True),
    ("body past the cap", OK_HEAD + b"Content-Length: 500\r\n\r\n" + b"b" * 500, True),
    (
        "gzip",
        OK_HEAD
        + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(b"x" * 200))
        + gzip.compress(b"x" * 200),
        True,
    ),
    (
        "head at the cap",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 357 + b"\r\nContent-Length: 0\r\n\r\n",
        True,
    ),
    (
        "head past the cap",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 358 + b"\r\nContent-Length: 0\r\n\r\n",
        False,
    ),
    ("endless head", b"HTTP/1.1 200 OK\r\n" + b"X: aaaaaaaaaa\r\n" * 100, False),
    ("short body", OK_HEAD + b"Content-Length: 50\r\n\r\nonly this", False),
    # past the cap before the end: cut there, as h11's reader would
    ("short body past the cap", OK_HEAD + b"Content-Length: 500\r\n\r\n" + b"b" * 65, True),
    ("closed in the head", b"HTTP/1.1 200 OK\r\nContent-Le", False),
    ("nothing", b"", False),
    ("chunked", OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False),
    ("bad coding", OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\nhello", False),
    ("interim", b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HEAD + b"Content-Length: 2\r\n\r\nok", False),
    ("interim flood", b"HTTP/1.1 102 Processing\r\n\r\n" * 12 + b"HTTP/1.1 204 No\r\n\r\n", False),
    ("no length", OK_HEAD + b"Connection: close\r\n\r\nuntil the end", False),
    ("two lengths", OK_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nok", False),
    ("lengths differ", OK_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok!", False),
    ("list length", OK_HEAD + b"Content-Length: 2, 2\r\n\r\nok", False),
    ("bad length", OK_HEAD + b"Content-Length: +2\r\n\r\nok", False),
    ("204", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", False),
    ("304", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", False),
    ("HTTP/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ("status 600", b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", False),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False),
    ("LF inside", b"HTTP/1.1 200 OK\r\nX: a\nContent-Length: 2\r\n\r\nok", False),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\nContent-Length: 2\r\n\r\nok", False),
    ("control char", b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 2\r\n\r\nok", False),
    ("bad name", b"HTTP/1.1 200 OK\r\nX Y: a\r\nContent-Length: 2\r\n\r\nok", False),
    ("leading CRLF", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ("garbage", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False),
]


Outcome = tuple[object, ...]


def outcome(read: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[Outcome]]:
    async def run() -> Outcome:
        try:
            r = await read()
        except FetchError as exc:
            return ("error", exc.code.code, exc.message, exc.phase)
        assert not isinstance(r, BaseException)
        return tuple(
            getattr(r, f)
            for f in ("status", "reason", "http_version", "headers", "body", "truncated")
        )

    return run


async def serve_and_read(answer: bytes) -> tuple[Outcome, Outcome, bool]:
    """(what the lean path made of ``answer``, what h11 alone made of it, whether the lean
    path took it), each from its own connection to a server that sends ``answer``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    url, host, _ = request_url(f"http://p.test:{port}/")
    request = _request(url, host, port, "GET", LIMITS)

    async def read(lean: bool) -> object:
        channel, address = await _connect([LOOPBACK], port, host, None, request.data)
        try:
            one = dataclasses.replace(request, lean=lean)
            return await _exchange(channel, one, LIMITS, _Clock(), address, None)
        finally:
            channel.abort()

    async def taken() -> bool:
        channel, _ = await _connect([LOOPBACK], port, host, None, request.data)
        try:
            async with asyncio.timeout(5):
                return await _lean_answer(channel, bytearray(), LIMITS, _Clock()) is not None
        finally:
            channel.abort()

    try:
        async with asyncio.timeout(10):
            lean = await outcome(lambda: read(True))()
            plain = await outcome(lambda: read(False))()
            return lean, plain, await taken()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "lean"), [(a, t) for _, a, t in ANSWERS], ids=[n for n, _, _ in ANSWERS]
)
def test_the_lean_path_agrees_with_h11(answer: bytes, lean: bool) -> None:
    by_lean, by_h11, taken = asyncio.run(serve_and_read(answer))
    assert by_lean == by_h11
    assert taken is lean


def test_the_request_is_sent_as_h11_writes_it() -> None:
    for raw, method in [
        ("https://a.test/", "GET"),
        ("http://x.test:8080/tin-tức/?q=a b", "HEAD"),
        ("https://[::1]:8443/p", "GET"),
        ("https://bücher.test/x?y#frag", "GET"),
    ]:
        url, host, port = request_url(raw)
        request = _request(url, host, port, method, LIMITS)
        conn = h11.Connection(h11.CLIENT)
        sent = h11.Request(method=method, target=request.target, headers=request.headers())
        assert request.data == conn.send(sent) + conn.send(h11.EndOfMessage())


def test_an_ipv6_literal_keeps_its_brackets_in_the_host_header() -> None:
    for raw, host_header in [
        ("https://[::1]:8443/p", "[::1]:8443"),
        ("http://[2001:db8::5]/", "[2001:db8::5]"),
        ("https://127.0.0.1:8443/", "127.0.0.1:8443"),
    ]:
        url, host, port = request_url(raw)
        assert dict(_request(url, host, port, "GET", LIMITS).headers())["Host"] == host_header


async def fetch_answer(answer: bytes, limits: Limits) -> tuple[Response, float]:
    """``answer`` fetched from a loopback server through ``fetch``, and the seconds it took."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        resolver = Resolver([f"p.test:{port}:{LOOPBACK}"])
        r = await fetch(f"http://p.test:{port}/", resolver, limits=limits)
        return r, time.monotonic() - started
    finally:
        server.close()


def test_a_plain_answer_over_fetch_has_its_phases() -> None:
    r, _ = asyncio.run(fetch_answer(ANSWERS[0][1], LIMITS))
    assert (r.status, r.body, r.header("content-type")) == (
        200,
        b"hello",
        "text/html; charset=utf-8",
    )
    assert set(r.timings) == {"resolve", "connect", "processing", "transfer"}


def test_blank_header_values_cost_the_lean_path_no_backtracking() -> None:
    """A head of blank-valued fields and one line the lean grammar refuses (obs-fold: h11
    reads it) made the lean path's pattern try every split of the blanks: 2^k steps for k
    fields, seconds at 22, minutes at 30, all of it on the event loop where no deadline can
    interrupt. Now it is refused at once and h11 reads the answer."""
    fields = b"X-A: \r\n" * 26 + b"X-B: a\r\n  folded\r\n"
    answer = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"
    r, seconds = asyncio.run(fetch_answer(answer, Limits(timeout=5)))
    assert r.status == 200
    assert seconds < 2.0, seconds  # ~28 s with the backtracking pattern


def _fin_without_close_notify(conn: ssl.SSLSocket) -> None:
    socket.socket.shutdown(conn, socket.SHUT_RDWR)


def _answer_then_a_bad_record(conn: ssl.SSLSocket) -> None:
    conn.sendall(ANSWERS[0][1])
    raw = socket.socket(fileno=conn.detach())
    raw.sendall(b"\x17\x03\x03\x00\x20" + b"\xaa" * 32)  # application data no key opens
    raw.close()


@pytest.mark.parametrize(
    ("behave", "expected"),
    [(_fin_without_close_notify, "http.down"), (_answer_then_a_bad_record, 200)],
    ids=["handshake then close", "answer then a bad record"],
)
def test_a_portal_that_ends_badly_after_the_handshake_is_a_finding_not_a_crash(
    pki: ThrowawayPKI, behave: Callable[[ssl.SSLSocket], None], expected: object
) -> None:
    """After the handshake, a close without an answer (a WAF's ``drop``) or a bad record made
    OpenSSL forget the handshake, and reading the certificate then raised: ``probe.error``
    instead of a finding. On the prober's own loop (uvloop), as ``ops monitor`` runs it."""
    context = client_tls(str(pki.ca_file))

    async def one(port: int) -> object:
        resolver = Resolver([f"h.test:{port}:{LOOPBACK}"])
        try:
            r = await fetch(f"https://h.test:{port}/", resolver, context=context, limits=LIMITS)
        except FetchError as exc:
            return exc.code.code
        assert min(r.timings.values()) >= 0, r.timings  # the tls phase was negative under load
        assert r.tls is not None
        assert r.tls.cert is not None
        return r.status

    async def many(port: int) -> list[object]:
        return [await one(port) for _ in range(10)]  # the race took its turn 30 times in 30

    with tls_server(pki.issue("lean-tls", ["h.test"], key_type="ecdsa"), behave) as (port, _):
        assert run(many(port)) == [expected] * 10
