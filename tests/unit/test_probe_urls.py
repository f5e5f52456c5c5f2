"""How the prober reads what a portal chose: Location values, charsets, content codings,
addresses, origins and the schemes of a redirect chain (pure functions; the same attacks on a
real server are in tests/integration/test_monitor_hostile.py)."""

import gzip
import zlib

import pytest

from portalops.monitors.fetch import (
    FetchError,
    Response,
    _decode_content,
    is_public,
    now_utc,
    request_url,
)
from portalops.monitors.probe import (
    ProbeResult,
    Target,
    _location_text,
    _own_origin,
    _redirect_checks,
    text_codec,
)


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://p.test/tin-tức/", "http://p.test/tin-t%E1%BB%A9c/"),
        ("http://p.test/a b?q=x y", "http://p.test/a%20b?q=x%20y"),
        ("http://p.test/a%20b", "http://p.test/a%20b"),  # already encoded: left alone
        ("http://bücher.p.test:8080/", "http://xn--bcher-kva.p.test:8080/"),
        ("https://P.Test", "https://p.test/"),
        ("http://[::1]:81/x#frag", "http://[::1]:81/x"),
    ],
)
def test_a_url_is_sent_as_a_browser_sends_it(url: str, sent: str) -> None:
    assert request_url(url)[0] == sent


@pytest.mark.parametrize(
    "url",
    [
        "http://b\u00fccher..p.test/",
        "http://" + "x" * 70 + ".p.test/",
        "http://p.test:99999/",
        "http:///x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://a b.test/",
    ],
)
def test_a_url_that_cannot_be_requested_is_http_down(url: str) -> None:
    with pytest.raises(FetchError) as caught:
        request_url(url)
    assert caught.value.code.code == "http.down"


def test_a_location_s_bytes_are_read_as_utf8_first() -> None:
    raw = "/tin-tức/".encode().decode("latin-1")  # as h11 hands the header over
    assert _location_text(raw) == "/tin-tức/"
    assert _location_text(b"/caf\xe9".decode("latin-1")) == "/café"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::1", False),
        ("203.162.4.190", True),
        ("2001:ee0:100::1", True),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.parametrize(
    ("charset", "codec"),
    [
        ("utf-8", "utf-8"),
        ("windows-1258", "cp1258"),
        ("ISO-8859-1", "iso8859-1"),
        ("punycode", "utf-8"),
        ("idna", "utf-8"),
        ("x-bogus", "utf-8"),
        ("rot13", "utf-8"),
        (None, "utf-8"),
    ],
)
def test_only_cheap_text_codecs_decode_a_page(charset: str | None, codec: str) -> None:
    assert text_codec(charset) == codec


def test_content_codings_are_undone_layer_by_layer_within_the_cap() -> None:
    page = b"<p>ok</p>" * 100
    twice = gzip.compress(gzip.compress(page))
    assert _decode_content(twice, [("content-encoding", "gzip, gzip")], 10_000) == (page, False)
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(page) + raw.flush()
    assert _decode_content(deflated, [("content-encoding", "deflate")], 10_000) == (page, False)
    bomb = gzip.compress(gzip.compress(b"\0" * 5_000_000))
    body, truncated = _decode_content(
        bomb, [("content-encoding", "gzip"), ("content-encoding", "gzip")], 1000
    )
    assert (len(body), truncated) == (1000, True)
    brotli = b"\x0b\x02\x80ok\x03"
    assert _decode_content(brotli, [("content-encoding", "br")], 1000) == (brotli, False)


def test_another_port_of_an_own_host_is_another_origin() -> None:
    target = Target("p", "url", "p.test", "https://p.test/", http_url="http://p.test/")
    assert _own_origin(target, "https://www.p.test/home")
    assert _own_origin(target, "https://p.test:443/")
    assert _own_origin(target, "http://p.test:80/")
    assert not _own_origin(target, "http://p.test:8080/")
    assert not _own_origin(target, "https://other.test/")


def test_a_chain_back_from_https_to_http_is_a_finding() -> None:
    target = Target("p", "url", "p.test", "https://p.test/", http_url="http://p.test/")
    chain = ["http://p.test/", "https://p.test/", "http://p.test/home"]
    final = Response("http://p.test/home", "127.0.0.1", 200, "OK", "1.1", [], b"", False)
    result = ProbeResult(target, now_utc())
    _redirect_checks(target, chain, final, result)
    assert [f.code for f in result.findings] == ["http.https_downgrade"]
    result = ProbeResult(target, now_utc())
    _redirect_checks(target, chain[:2], final, result)
    assert result.findings == []
