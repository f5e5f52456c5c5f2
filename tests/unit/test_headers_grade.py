"""Security-header grading (Art. 19.1) against MDN HTTP Observatory's table, algorithm 6.

Every expected result id and modifier comes from Observatory's SCORE_TABLE
(mdn/mdn-http-observatory src/grader/charts.js) and the rules in src/analyzer/tests/*.js;
the two parity cases reuse the fixtures and totals of its own test/scanner.test.js.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portalops.monitors.headers import (
    ALGORITHM_VERSION,
    ObservationError,
    Observed,
    grade,
    grade_for_score,
)

SITE = "https://vinhphuc.gov.vn/"
TO_HTTPS = ("http://vinhphuc.gov.vn/", SITE)
HTML = (("Content-Type", "text/html; charset=utf-8"),)


def outcome(
    test: str,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    url: str = SITE,
    redirects: tuple[str, ...] = TO_HTTPS,
    body: str = "",
    preloaded_hosts: frozenset[str] = frozenset(),
    cors_origin: str | None = None,
) -> tuple[str, int]:
    """(result id, modifier) of one test on an otherwise empty HTML page."""
    observed = Observed(HTML + headers, url, redirects, body, preloaded_hosts, cors_origin)
    report = grade(observed)
    found = report.outcome(test)
    return found.result, found.modifier


# --- Whole pages -----------------------------------------------------------------------------

# What playbooks/ should make nginx send for a department portal.
NGINX_GOOD = (
    ("Server", "nginx"),
    ("Content-Type", "text/html; charset=UTF-8"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; "
        "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Set-Cookie", "PHPSESSID=8f2c; path=/; Secure; HttpOnly; SameSite=Lax"),
)
NGINX_GOOD_BODY = """<!doctype html><html lang="vi"><head><meta charset="utf-8">
<title>Cổng thông tin điện tử tỉnh Vĩnh Phúc</title>
<script src="https://cdn.jsdelivr.net/npm/jquery@3.7.1/dist/jquery.min.js"
  integrity="sha384-1H217gwSVyLSIfaLxHbE7dRb3v4mYCKbpQvzx0cegeju1MVsGrX5xXxAvs/HgeFs"
  crossorigin="anonymous"></script>
<script src="/themes/portal/js/app.js"></script></head><body></body></html>"""


def test_well_configured_nginx_portal_gets_a_plus() -> None:
    report = grade(Observed(NGINX_GOOD, SITE, TO_HTTPS, NGINX_GOOD_BODY))
    bonuses = {o.test: o.result for o in report.outcomes if o.modifier > 0}
    assert bonuses == {
        "content-security-policy": "csp-implemented-with-no-unsafe",
        "cookies": "cookies-secure-with-httponly-sessions-and-samesite",
        "referrer-policy": "referrer-policy-private",
        "subresource-integrity": "sri-implemented-and-external-scripts-loaded-securely",
        "x-frame-options": "x-frame-options-implemented-via-csp",
    }
    assert all(o.modifier >= 0 for o in report.outcomes)
    assert report.score == 100 + 5 * 5
    assert report.grade == "A+"
    assert report.algorithm_version == ALGORITHM_VERSION == 6
    assert report.tests_passed == 12


def test_bare_portal_scores_zero_and_fails() -> None:
    # A commune portal straight from the CMS installer: HTTP only, a session cookie, jQuery
    # from a CDN over plain HTTP, no security headers.
    bare = Observed(
        (("Server", "nginx/1.18.0"), ("Content-Type", "text/html"), ("Set-Cookie", "PHPSESSID=1")),
        "http://daotru.tamdao.vinhphuc.gov.vn/",
        ("http://daotru.tamdao.vinhphuc.gov.vn/",),
        '<script src="http://code.jquery.com/jquery-1.12.4.min.js"></script>',
    )
    report = grade(bare)
    penalties = {o.test: o.modifier for o in report.outcomes if o.modifier < 0}
    assert penalties == {
        "content-security-policy": -25,  # csp-not-implemented
        "cookies": -40,  # cookies-session-without-secure-flag
        "redirection": -20,  # redirection-missing
        "strict-transport-security": -20,  # hsts-not-implemented-no-https
        "subresource-integrity": -50,  # sri-not-implemented-and-external-scripts-not-...
        "x-content-type-options": -5,
        "x-frame-options": -20,
    }
    assert report.score == 0  # 100 - 180, floored at 0
    assert report.grade == "F"


def test_bonuses_count_when_penalties_leave_exactly_90() -> None:
    short_hsts = tuple(
        ("Strict-Transport-Security", "max-age=86400")
        if n == "Strict-Transport-Security"
        else (n, v)
        for n, v in NGINX_GOOD
    )
    report = grade(Observed(short_hsts, SITE, TO_HTTPS, NGINX_GOOD_BODY))
    assert report.outcome("strict-transport-security").modifier == -10
    assert report.score == 90 + 25
    assert report.grade == "A+"


def test_bonuses_withheld_below_90() -> None:
    weaker = tuple(
        ("Strict-Transport-Security", "max-age=86400")
        if n == "Strict-Transport-Security"
        else (n, v)
        for n, v in NGINX_GOOD
        if n != "X-Content-Type-Options"
    )
    report = grade(Observed(weaker, SITE, TO_HTTPS, NGINX_GOOD_BODY))
    assert sorted(o.modifier for o in report.outcomes if o.modifier) == [-10, -5, 5, 5, 5, 5, 5]
    assert report.score == 85  # the +25 stays listed per test but is not added
    assert report.grade == "A-"


# observatory.mozilla.org as captured in mdn-http-observatory test/fixtures (2026-01-12);
# test/scanner.test.js expects algorithm 6 to give it 110, A+, 12 of 12 tests passed.
OBSERVATORY_CSP = (
    "default-src 'self'; script-src 'report-sample' 'self' 'wasm-unsafe-eval' "
    "https://www.google-analytics.com/analytics.js https://*.googletagmanager.com "
    "assets.codepen.io production-assets.codepen.io https://js.stripe.com "
    "'sha256-XNBp89FG76amD8BqrJzyflxOF9PaWPqPqvJfKZPCv7M=' "
    "'sha256-YCNoU9DNiinACbd8n6UPyB/8vj0kXvhkOni9/06SuYw=' "
    "'sha256-PZjP7OR6mBEtnvXIZfCZ5PuOlxoDF1LDZL8aj8c42rw='; "
    "style-src 'report-sample' 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; "
    "connect-src 'self' https://observatory-api.mdn.mozilla.net "
    "https://api.github.com/search/issues; "
    "font-src 'self'; frame-src 'self' mdn.github.io www.youtube-nocookie.com codepen.io; "
    "img-src 'self' data: *.githubusercontent.com https://mdn.github.io/shared-assets/ "
    "www.gstatic.com; manifest-src 'self'; media-src 'self' archive.org videos.cdn.mozilla.net; "
    "child-src 'self'; worker-src 'self';"
)


def test_parity_with_observatory_fixture_observatory_mozilla_org() -> None:
    headers = (
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("content-security-policy", OBSERVATORY_CSP),
        ("x-frame-options", "DENY"),
        ("server", "Google Frontend"),
        ("x-content-type-options", "nosniff"),
        ("content-type", "text/html"),
        ("strict-transport-security", "max-age=63072000"),
    )
    body = (
        "<script>document.documentElement.dataset.theme = 'light dark';</script>"
        '<script src="/static/client/runtime.78ab025a4834993c.js" type="module"></script>'
        '<script src="/static/client/index.84551a04d557157b.js" type="module"></script>'
    )
    redirects = (
        "http://observatory.mozilla.org/",
        "https://observatory.mozilla.org/",
        "https://developer.mozilla.org/en-US/observatory",
    )
    report = grade(Observed(headers, redirects[-1], redirects, body))
    assert (report.score, report.grade, report.tests_passed) == (110, "A+", 12)
    assert report.outcome("content-security-policy").result == (
        "csp-implemented-with-unsafe-inline-in-style-src-only"
    )


def test_parity_with_observatory_fixture_mozilla_org() -> None:
    # test/scanner.test.js: 75, B, 10 of 12 passed (CSP allows inline script; a CDN script
    # without SRI).
    csp = (
        "script-src 'self' 'unsafe-eval' 'unsafe-inline' cdn.transcend.io www.mozilla.org; "
        "style-src 'self' 'unsafe-inline' www.mozilla.org; default-src 'self' *.mozilla.org; "
        "frame-ancestors 'none'; upgrade-insecure-requests; "
        "img-src 'self' blog.mozilla.org data: www.mozilla.org; object-src 'none'; "
        "base-uri 'none'"
    )
    headers = (
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", csp),
        ("content-security-policy-report-only", csp),
        ("content-type", "text/html; charset=utf-8"),
        ("cross-origin-opener-policy", "same-origin"),
        ("strict-transport-security", "max-age=31536000"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("x-frame-options", "DENY"),
    )
    body = (
        '<script data-cfasync="false" '
        'src="https://transcend-cdn.com/cm/d556c3a1-e57c-4bdf-a490-390a1aebf6dd/airgap.js">'
        "</script>"
        '<script src="https://www.mozilla.org/media/js/site.a066757d134f.js"></script>'
        '<!--[if IE 9]><script src="http://www.mozilla.org/media/js/site-ie.js"></script>'
        "<![endif]-->"
    )
    redirects = ("http://mozilla.org/", "https://mozilla.org/", "https://www.mozilla.org/en-US/")
    report = grade(Observed(headers, redirects[-1], redirects, body))
    assert (report.score, report.grade, report.tests_passed) == (75, "B", 10)
    failed = {o.test: (o.result, o.modifier) for o in report.outcomes if not o.passed}
    assert failed == {
        "content-security-policy": ("csp-implemented-with-unsafe-inline", -20),
        "subresource-integrity": ("sri-not-implemented-but-external-scripts-loaded-securely", -5),
    }


# --- Score and grade -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "letter"),
    [
        (145, "A+"), (100, "A+"), (99, "A"), (90, "A"), (89, "A-"), (85, "A-"), (84, "B+"),
        (80, "B+"), (79, "B"), (70, "B"), (69, "B-"), (65, "B-"), (64, "C+"), (60, "C+"),
        (59, "C"), (50, "C"), (49, "C-"), (45, "C-"), (44, "D+"), (40, "D+"), (39, "D"),
        (30, "D"), (29, "D-"), (25, "D-"), (24, "F"), (0, "F"),
    ],
)  # fmt: skip
def test_grade_chart_boundaries(score: int, letter: str) -> None:
    assert grade_for_score(score) == letter


def test_report_lists_the_twelve_tests_of_algorithm_6() -> None:
    report = grade(Observed(HTML, SITE, TO_HTTPS))
    assert [o.test for o in report.outcomes] == [
        "content-security-policy",
        "cookies",
        "cross-origin-resource-sharing",
        "redirection",
        "referrer-policy",
        "strict-transport-security",
        "subresource-integrity",
        "x-content-type-options",
        "x-frame-options",
        "cross-origin-resource-policy",
        "cross-origin-opener-policy",
        "cross-origin-embedder-policy",
    ]
    # No CSP (-25), HSTS (-20), X-Content-Type-Options (-5) or X-Frame-Options (-20).
    assert report.score == 30
    assert report.grade == "D"
    with pytest.raises(KeyError):
        report.outcome("x-xss-protection")


HEADER_SOUP = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Content-Security-Policy", "Strict-Transport-Security", "X-Frame-Options",
                "X-Content-Type-Options", "Referrer-Policy", "Set-Cookie",
                "Cross-Origin-Opener-Policy", "Cross-Origin-Embedder-Policy",
                "Cross-Origin-Resource-Policy", "Access-Control-Allow-Origin",
            ]
        ),
        st.sampled_from(
            [
                "default-src 'none'", "script-src 'self' 'unsafe-inline'", "max-age=300",
                "max-age=31536000", "DENY", "nosniff", "no-referrer", "unsafe-url",
                "sid=1; Secure; HttpOnly; SameSite=Strict", "sess=1", "same-origin",
                "require-corp", "*", "", ",", ";;",
            ]
        ),
    ),
    max_size=12,
)  # fmt: skip


@given(HEADER_SOUP, st.sampled_from([SITE, "http://vinhphuc.gov.vn/"]))
def test_score_follows_the_two_rounds(headers: list[tuple[str, str]], url: str) -> None:
    report = grade(Observed(headers, url, TO_HTTPS))
    penalties = sum(o.modifier for o in report.outcomes if o.modifier < 0)
    bonuses = sum(o.modifier for o in report.outcomes if o.modifier > 0)
    expected = 100 + penalties + (bonuses if 100 + penalties >= 90 else 0)
    assert report.score == max(expected, 0)
    assert report.grade == grade_for_score(report.score)


def test_header_names_are_case_insensitive() -> None:
    canonical = grade(Observed(NGINX_GOOD, SITE, TO_HTTPS, NGINX_GOOD_BODY))
    shouted = tuple((name.upper(), value) for name, value in NGINX_GOOD)
    mixed = tuple((name.lower().title(), value) for name, value in NGINX_GOOD)
    for variant in (shouted, mixed):
        assert grade(Observed(variant, SITE, TO_HTTPS, NGINX_GOOD_BODY)) == canonical


def test_urls_must_be_http() -> None:
    with pytest.raises(ObservationError, match=r"ftp://vinhphuc\.gov\.vn/"):
        Observed(HTML, "ftp://vinhphuc.gov.vn/")
    with pytest.raises(ObservationError, match="'/relative'"):
        Observed(HTML, SITE, ("/relative", SITE))


# --- Content Security Policy -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "result", "modifier"),
    [
        ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'",
         "csp-implemented-with-no-unsafe-default-src-none", 10),
        ("default-src 'self'", "csp-implemented-with-no-unsafe", 5),
        ("default-src 'self'; script-src 'self' 'unsafe-inline'",
         "csp-implemented-with-unsafe-inline", -20),
        ("default-src 'self'; script-src 'self' data:", "csp-implemented-with-unsafe-inline", -20),
        ("default-src 'self'; script-src https:", "csp-implemented-with-unsafe-inline", -20),
        # object-src falls back to default-src, and with neither anything may be embedded.
        ("script-src 'self'; style-src 'self'", "csp-implemented-with-unsafe-inline", -20),
        ("default-src 'self'; object-src *", "csp-implemented-with-unsafe-inline", -20),
        # A nonce or hash makes browsers ignore 'unsafe-inline'.
        ("default-src 'self'; script-src 'self' 'nonce-r4nd0m' 'unsafe-inline'",
         "csp-implemented-with-no-unsafe", 5),
        ("default-src 'self'; script-src 'strict-dynamic' 'nonce-r4nd0m' https: 'unsafe-inline'",
         "csp-implemented-with-no-unsafe", 5),
        ("default-src 'self'; script-src 'strict-dynamic' 'self'", "csp-header-invalid", -25),
        ("default-src 'self'; script-src 'self' 'unsafe-eval'",
         "csp-implemented-with-unsafe-eval", -10),
        ("default-src 'self'; style-src 'self' 'unsafe-inline'",
         "csp-implemented-with-unsafe-inline-in-style-src-only", 0),
        ("default-src 'self'; script-src 'self' http://cdn.vinhphuc.gov.vn",
         "csp-implemented-with-insecure-scheme", -20),
        ("default-src 'self'; img-src 'self' http://anh.vinhphuc.gov.vn",
         "csp-implemented-with-insecure-scheme-in-passive-content-only", -10),
        ("default-src 'self'; default-src 'none'", "csp-header-invalid", -25),
        ("default-src 'none'; report-uri /csp; report-uri /csp2",
         "csp-implemented-but-duplicate-directives", 0),
        # Two policies: the second can only take sources away.
        ("default-src 'self'; script-src 'self' 'unsafe-inline', script-src 'self'",
         "csp-implemented-with-no-unsafe", 5),
        ("default-src 'self',", "csp-header-invalid", -25),
    ],
)  # fmt: skip
def test_csp_header(policy: str, result: str, modifier: int) -> None:
    assert outcome("content-security-policy", (("Content-Security-Policy", policy),)) == (
        result,
        modifier,
    )


def test_csp_repeated_header_is_two_policies() -> None:
    headers = (
        ("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'"),
        ("Content-Security-Policy", "script-src 'self'"),
    )
    assert outcome("content-security-policy", headers) == ("csp-implemented-with-no-unsafe", 5)


def test_csp_insecure_scheme_only_matters_on_https() -> None:
    headers = (("Content-Security-Policy", "default-src 'self' http://cdn.vinhphuc.gov.vn"),)
    assert outcome("content-security-policy", headers, url="http://vinhphuc.gov.vn/") == (
        "csp-implemented-with-no-unsafe",
        5,
    )


def test_csp_from_meta_tag_counts() -> None:
    body = "<head><meta http-equiv='Content-Security-Policy' content=\"default-src 'self'\"></head>"
    assert outcome("content-security-policy", body=body) == ("csp-implemented-with-no-unsafe", 5)


def test_csp_meta_tag_with_only_frame_ancestors_implements_nothing() -> None:
    body = '<meta http-equiv="content-security-policy" content="frame-ancestors \'none\'">'
    assert outcome("content-security-policy", body=body) == ("csp-not-implemented", -25)
    assert outcome("x-frame-options", body=body) == ("x-frame-options-not-implemented", -20)


def test_csp_missing_or_report_only() -> None:
    assert outcome("content-security-policy") == ("csp-not-implemented", -25)
    report_only = (("Content-Security-Policy-Report-Only", "default-src 'self'"),)
    assert outcome("content-security-policy", report_only) == (
        "csp-not-implemented-but-reporting-enabled",
        -25,
    )


# --- Cookies ---------------------------------------------------------------------------------

HSTS_YEAR = (("Strict-Transport-Security", "max-age=31536000"),)


@pytest.mark.parametrize(
    ("cookies", "hsts", "result", "modifier"),
    [
        ((), True, "cookies-not-found", 0),
        (("PHPSESSID=1; Secure; HttpOnly; SameSite=Lax",), True,
         "cookies-secure-with-httponly-sessions-and-samesite", 5),
        (("PHPSESSID=1; Secure; HttpOnly",), True, "cookies-secure-with-httponly-sessions", 0),
        (("lang=vi",), True, "cookies-without-secure-flag-but-protected-by-hsts", -5),
        (("lang=vi",), False, "cookies-without-secure-flag", -20),
        (("ASP.NET_SessionId=1; HttpOnly; SameSite=Lax",), True,
         "cookies-session-without-secure-flag-but-protected-by-hsts", -10),
        (("ASP.NET_SessionId=1; HttpOnly; SameSite=Lax",), False,
         "cookies-session-without-secure-flag", -40),
        (("ASP.NET_SessionId=1; Secure; SameSite=Lax",), True,
         "cookies-session-without-httponly-flag", -30),
        (("lang=vi; Secure; SameSite=Sometimes",), True, "cookies-samesite-flag-invalid", -20),
        (("lang=vi; SameSite=None",), True, "cookies-samesite-flag-invalid", -20),
        (("lang=vi; Secure; SameSite=None",), True,
         "cookies-secure-with-httponly-sessions-and-samesite", 5),
        (("csrftoken=abc; Secure",), True, "cookies-anticsrf-without-samesite-flag", -20),
        (("heroku-session-affinity=x",), False, "cookies-not-found", 0),
    ],
)  # fmt: skip
def test_cookies(cookies: tuple[str, ...], hsts: bool, result: str, modifier: int) -> None:
    headers = tuple(("Set-Cookie", c) for c in cookies) + (HSTS_YEAR if hsts else ())
    assert outcome("cookies", headers) == (result, modifier)


def test_repeated_set_cookie_is_judged_by_its_worst_cookie() -> None:
    headers = (
        ("Set-Cookie", "lang=vi; Secure; SameSite=Lax"),
        ("set-cookie", "PHPSESSID=1; Secure; SameSite=Lax"),  # no HttpOnly
        ("SET-COOKIE", "theme=dark; Secure; SameSite=Strict"),
    )
    assert outcome("cookies", headers + HSTS_YEAR) == ("cookies-session-without-httponly-flag", -30)


def test_repeated_set_cookie_all_good_earns_the_bonus() -> None:
    headers = (
        ("Set-Cookie", "lang=vi; Path=/; Secure; SameSite=Lax"),
        ("Set-Cookie", "PHPSESSID=1; Path=/; Secure; HttpOnly; SameSite=Strict"),
    )
    assert outcome("cookies", headers + HSTS_YEAR) == (
        "cookies-secure-with-httponly-sessions-and-samesite",
        5,
    )


def test_one_cookie_without_samesite_costs_the_bonus() -> None:
    headers = (
        ("Set-Cookie", "lang=vi; Secure"),
        ("Set-Cookie", "PHPSESSID=1; Secure; HttpOnly; SameSite=Strict"),
    )
    assert outcome("cookies", headers + HSTS_YEAR) == ("cookies-secure-with-httponly-sessions", 0)


# --- Redirection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "result", "modifier"),
    [
        ((), "redirection-not-needed-no-http", 0),
        (("http://vinhphuc.gov.vn/", "https://vinhphuc.gov.vn/"), "redirection-to-https", 0),
        # Same host on HTTPS first, then elsewhere: what Observatory wants.
        (("http://vinhphuc.gov.vn/", "https://vinhphuc.gov.vn/", "https://www.vinhphuc.gov.vn/"),
         "redirection-to-https", 0),
        (("http://vinhphuc.gov.vn/", "https://www.vinhphuc.gov.vn/"),
         "redirection-off-host-from-http", -5),
        (("http://vinhphuc.gov.vn/", "http://www.vinhphuc.gov.vn/", "https://www.vinhphuc.gov.vn/"),
         "redirection-not-to-https-on-initial-redirection", -10),
        (("http://vinhphuc.gov.vn/", "http://www.vinhphuc.gov.vn/"),
         "redirection-not-to-https", -20),
        (("http://vinhphuc.gov.vn/",), "redirection-missing", -20),
    ],
)  # fmt: skip
def test_redirection(route: tuple[str, ...], result: str, modifier: int) -> None:
    final = route[-1] if route else SITE
    assert outcome("redirection", url=final, redirects=route) == (result, modifier)


def test_redirection_all_preloaded() -> None:
    hosts = frozenset({"vinhphuc.gov.vn"})
    assert outcome("redirection", preloaded_hosts=hosts) == (
        "redirection-all-redirects-preloaded",
        0,
    )


# --- Referrer-Policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "result", "modifier"),
    [
        ("no-referrer", "referrer-policy-private", 5),
        ("same-origin", "referrer-policy-private", 5),
        ("strict-origin", "referrer-policy-private", 5),
        ("Strict-Origin-When-Cross-Origin", "referrer-policy-private", 5),
        ("unsafe-url", "referrer-policy-unsafe", -5),
        ("no-referrer-when-downgrade", "referrer-policy-unsafe", -5),
        ("no-referrer, unsafe-url", "referrer-policy-unsafe", -5),  # the last one counts
        ("unsafe-url, bogus, strict-origin", "referrer-policy-private", 5),
        ("never", "referrer-policy-header-invalid", -5),
    ],
)
def test_referrer_policy(value: str, result: str, modifier: int) -> None:
    assert outcome("referrer-policy", (("Referrer-Policy", value),)) == (result, modifier)


def test_referrer_policy_missing_or_from_meta() -> None:
    assert outcome("referrer-policy") == ("referrer-policy-not-implemented", 0)
    meta = '<meta name="referrer" content="no-referrer">'
    leaky = (("Referrer-Policy", "unsafe-url"),)
    assert outcome("referrer-policy", leaky, body=meta) == ("referrer-policy-private", 5)


# --- Strict-Transport-Security ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "result", "modifier"),
    [
        ("max-age=31536000; includeSubDomains; preload",
         "hsts-implemented-max-age-at-least-six-months", 0),
        ("max-age=15768000", "hsts-implemented-max-age-at-least-six-months", 0),
        # Observatory lets the common 180 days (15552000) pass as six months.
        ("max-age=15552000", "hsts-implemented-max-age-at-least-six-months", 0),
        ("max-age=15551999", "hsts-implemented-max-age-less-than-six-months", -10),
        ("MAX-AGE=300", "hsts-implemented-max-age-less-than-six-months", -10),
        ("includeSubDomains", "hsts-header-invalid", -20),
        ("max-age=31536000, max-age=31536000", "hsts-header-invalid", -20),
    ],
)  # fmt: skip
def test_hsts(value: str, result: str, modifier: int) -> None:
    assert outcome("strict-transport-security", (("Strict-Transport-Security", value),)) == (
        result,
        modifier,
    )


def test_hsts_missing_plain_http_and_preloaded() -> None:
    assert outcome("strict-transport-security") == ("hsts-not-implemented", -20)
    plain = "http://vinhphuc.gov.vn/"
    assert outcome("strict-transport-security", HSTS_YEAR, url=plain, redirects=(plain,)) == (
        "hsts-not-implemented-no-https",
        -20,
    )
    # Only the preload list earns +5; the preload directive alone does not.
    assert outcome(
        "strict-transport-security", HSTS_YEAR, preloaded_hosts=frozenset({"vinhphuc.gov.vn"})
    ) == ("hsts-preloaded", 5)


# --- Subresource Integrity -------------------------------------------------------------------

CDN_HTTPS = "https://cdn.jsdelivr.net/npm/jquery@3.7.1/dist/jquery.min.js"


@pytest.mark.parametrize(
    ("body", "result", "modifier"),
    [
        ("<p>Xin chào</p>", "sri-not-implemented-but-no-scripts-loaded", 0),
        ('<script src="/js/app.js"></script><script>var a = 1;</script>',
         "sri-not-implemented-but-all-scripts-loaded-from-secure-origin", 0),
        # Another host of the same registrable domain is the site's own.
        ('<script src="https://static.vinhphuc.gov.vn/app.js"></script>',
         "sri-not-implemented-but-all-scripts-loaded-from-secure-origin", 0),
        ('<script src="https://static.vinhphuc.gov.vn/app.js" integrity="sha384-x"></script>',
         "sri-implemented-and-all-scripts-loaded-securely", 5),
        (f'<script src="{CDN_HTTPS}" integrity="sha384-x" crossorigin="anonymous"></script>',
         "sri-implemented-and-external-scripts-loaded-securely", 5),
        (f'<script src="{CDN_HTTPS}"></script>',
         "sri-not-implemented-but-external-scripts-loaded-securely", -5),
        ('<script src="//cdn.jsdelivr.net/x.js" integrity="sha384-x"></script>',
         "sri-implemented-but-external-scripts-not-loaded-securely", -20),
        ('<script src="http://code.jquery.com/jquery.js"></script>',
         "sri-not-implemented-and-external-scripts-not-loaded-securely", -50),
        # Observatory ranks "no SRI over HTTPS" below "SRI over HTTP", so the former wins.
        ('<script src="http://a.example.com/x.js" integrity="sha384-x"></script>'
         f'<script src="{CDN_HTTPS}"></script>',
         "sri-not-implemented-but-external-scripts-loaded-securely", -5),
    ],
)  # fmt: skip
def test_sri(body: str, result: str, modifier: int) -> None:
    assert outcome("subresource-integrity", body=body) == (result, modifier)


def test_sri_skips_responses_that_are_not_html() -> None:
    report = grade(
        Observed((("Content-Type", "application/json"),), SITE, TO_HTTPS, '<script src="//x">')
    )
    found = report.outcome("subresource-integrity")
    assert (found.result, found.modifier) == ("sri-not-implemented-response-not-html", 0)


# --- X-Content-Type-Options, X-Frame-Options, CORS, CORP, COOP, COEP -------------------------


@pytest.mark.parametrize(
    ("test", "headers", "result", "modifier"),
    [
        ("x-content-type-options", (("X-Content-Type-Options", "nosniff"),),
         "x-content-type-options-nosniff", 0),
        ("x-content-type-options", (), "x-content-type-options-not-implemented", -5),
        ("x-content-type-options", (("X-Content-Type-Options", "sniff"),),
         "x-content-type-options-header-invalid", -5),
        ("x-frame-options", (("X-Frame-Options", "DENY"),),
         "x-frame-options-sameorigin-or-deny", 5),
        ("x-frame-options", (("X-Frame-Options", "sameorigin"),),
         "x-frame-options-sameorigin-or-deny", 5),
        ("x-frame-options", (("X-Frame-Options", "ALLOW-FROM https://vinhphuc.gov.vn"),),
         "x-frame-options-allow-from-origin", 0),
        ("x-frame-options", (), "x-frame-options-not-implemented", -20),
        ("x-frame-options", (("X-Frame-Options", "ALLOWALL"),),
         "x-frame-options-header-invalid", -20),
        # nginx add_header plus the application's own header: joined, "SAMEORIGIN, SAMEORIGIN".
        ("x-frame-options", (("X-Frame-Options", "SAMEORIGIN"), ("X-Frame-Options", "SAMEORIGIN")),
         "x-frame-options-header-invalid", -20),
        ("x-frame-options", (("Content-Security-Policy", "default-src 'self'; frame-ancestors *"),),
         "x-frame-options-implemented-via-csp", 5),
        ("cross-origin-resource-sharing", (), "cross-origin-resource-sharing-not-implemented", 0),
        ("cross-origin-resource-sharing", (("Access-Control-Allow-Origin", "*"),),
         "cross-origin-resource-sharing-implemented-with-public-access", 0),
        ("cross-origin-resource-sharing",
         (("Access-Control-Allow-Origin", "https://dichvucong.vinhphuc.gov.vn"),),
         "cross-origin-resource-sharing-implemented-with-restricted-access", 0),
        ("cross-origin-resource-policy", (), "corp-not-implemented", 0),
        ("cross-origin-resource-policy", (("Cross-Origin-Resource-Policy", "same-origin"),),
         "corp-implemented-with-same-origin", 10),
        ("cross-origin-resource-policy", (("Cross-Origin-Resource-Policy", "same-site"),),
         "corp-implemented-with-same-site", 10),
        ("cross-origin-resource-policy", (("Cross-Origin-Resource-Policy", "cross-origin"),),
         "corp-implemented-with-cross-origin", 0),
        ("cross-origin-resource-policy", (("Cross-Origin-Resource-Policy", "same"),),
         "corp-header-invalid", -5),
        ("cross-origin-opener-policy", (), "coop-not-implemented", 0),
        ("cross-origin-opener-policy", (("Cross-Origin-Opener-Policy", "same-origin"),),
         "coop-implemented-with-same-origin", 10),
        ("cross-origin-opener-policy",
         (("Cross-Origin-Opener-Policy", 'same-origin-allow-popups; report-to="coop"'),),
         "coop-implemented-with-same-origin-allow-popups", 10),
        ("cross-origin-opener-policy", (("Cross-Origin-Opener-Policy", "noopener-allow-popups"),),
         "coop-implemented-with-noopener-allow-popups", 10),
        ("cross-origin-opener-policy", (("Cross-Origin-Opener-Policy", "unsafe-none"),),
         "coop-implemented-with-unsafe-none", 0),
        ("cross-origin-opener-policy", (("Cross-Origin-Opener-Policy", '"same-origin"'),),
         "coop-header-invalid", -5),
        ("cross-origin-opener-policy",
         (("Cross-Origin-Opener-Policy", "same-origin"),
          ("Cross-Origin-Opener-Policy", "same-origin")),
         "coop-header-invalid", -5),
        ("cross-origin-embedder-policy", (), "coep-not-implemented", 0),
        ("cross-origin-embedder-policy", (("Cross-Origin-Embedder-Policy", "require-corp"),),
         "coep-implemented-with-require-corp", 10),
        ("cross-origin-embedder-policy", (("Cross-Origin-Embedder-Policy", "unsafe-none"),),
         "coep-implemented-with-unsafe-none", 0),
        ("cross-origin-embedder-policy", (("Cross-Origin-Embedder-Policy", "Require-Corp"),),
         "coep-header-invalid", -5),
    ],
)  # fmt: skip
def test_single_header_tests(
    test: str, headers: tuple[tuple[str, str], ...], result: str, modifier: int
) -> None:
    assert outcome(test, headers) == (result, modifier)


def test_cors_reflecting_the_probe_origin_with_credentials() -> None:
    origin = "https://http-observatory.security.mozilla.org"
    headers = (
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
    )
    assert outcome("cross-origin-resource-sharing", headers, cors_origin=origin) == (
        "cross-origin-resource-sharing-implemented-with-universal-access",
        -50,
    )
