"""Grade a portal's HTTP security headers the way MDN HTTP Observatory does (algorithm 6).

Pure and stdlib-only: the caller fetches (first http:// request, redirects followed, final
response and its HTML); this module only judges what was observed. Test names, result ids and
modifiers are Observatory's own (mdn/mdn-http-observatory, src/grader/charts.js and
src/analyzer/tests/*.js), so a score here can be set beside the one the Observatory web page
shows for the same host.

Algorithm 6 is version 5 (X-Frame-Options DENY/SAMEORIGIN worth +5, PR #332) plus the
Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy tests (PR #498): twelve tests.

What the grader cannot see, and so never reports: certificate validity (hsts-invalid-cert,
redirection-invalid-cert), cookies set only on redirect hops, and Observatory's separate CORS
request (pass cors_origin to catch a reflected origin). The HSTS preload list and the Public
Suffix List are not bundled: preloaded hosts come from the caller, registrable domains are
approximated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from itertools import pairwise
from urllib.parse import unquote, urlsplit

ALGORITHM_VERSION = 6
MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90

# Observatory's GRADE_CHART, collapsed to the lowest score of each grade.
GRADE_CHART = (
    (100, "A+"), (90, "A"), (85, "A-"), (80, "B+"), (70, "B"), (65, "B-"), (60, "C+"),
    (50, "C"), (45, "C-"), (40, "D+"), (30, "D"), (25, "D-"), (0, "F"),
)  # fmt: skip
# The letters, best first: monitor.min_grade is one of them.
GRADES = tuple(letter for _, letter in GRADE_CHART)

# Observatory's SCORE_TABLE (src/grader/charts.js): result id, score modifier, whether the test
# counts as passed (from each src/analyzer/tests/*.js), and a short explanation of our own.
_CHART = """
csp-implemented-with-no-unsafe-default-src-none +10 pass CSP: default-src 'none', nothing unsafe
csp-implemented-with-no-unsafe +5 pass CSP without 'unsafe-inline' or 'unsafe-eval'
csp-implemented-with-unsafe-inline-in-style-src-only +0 pass CSP unsafe in style-src only
csp-implemented-but-duplicate-directives +0 pass CSP repeats report-uri or report-to
csp-implemented-with-insecure-scheme-in-passive-content-only -10 pass CSP: media over HTTP
csp-implemented-with-unsafe-eval -10 fail CSP allows 'unsafe-eval'
csp-implemented-with-unsafe-inline -20 fail CSP allows inline or broad script/object sources
csp-implemented-with-insecure-scheme -20 fail CSP lets resources load over HTTP
csp-header-invalid -25 fail CSP cannot be parsed
csp-not-implemented -25 fail no Content-Security-Policy
csp-not-implemented-but-reporting-enabled -25 fail CSP in report-only mode, nothing enforced
cookies-secure-with-httponly-sessions-and-samesite +5 pass all Secure+SameSite, sessions HttpOnly
cookies-secure-with-httponly-sessions +0 pass cookies Secure, sessions HttpOnly; no SameSite
cookies-not-found +0 pass no cookies set
cookies-without-secure-flag-but-protected-by-hsts -5 fail cookies lack Secure; HSTS covers
cookies-session-without-secure-flag-but-protected-by-hsts -10 fail session lacks Secure; HSTS
cookies-without-secure-flag -20 fail cookies lack Secure, no HSTS
cookies-samesite-flag-invalid -20 fail SameSite not Strict/Lax, or None without Secure
cookies-anticsrf-without-samesite-flag -20 fail anti-CSRF cookie without SameSite
cookies-session-without-httponly-flag -30 fail session cookie without HttpOnly
cookies-session-without-secure-flag -40 fail session cookie lacks Secure, no HSTS
cross-origin-resource-sharing-not-implemented +0 pass no CORS header
cross-origin-resource-sharing-implemented-with-public-access +0 pass CORS: *, no credentials
cross-origin-resource-sharing-implemented-with-restricted-access +0 pass CORS: chosen origins
cross-origin-resource-sharing-implemented-with-universal-access -50 fail CORS reflects origins
redirection-all-redirects-preloaded +0 pass every redirect host HSTS-preloaded
redirection-to-https +0 pass HTTP goes to HTTPS on the same host first
redirection-not-needed-no-http +0 pass not reachable over HTTP
redirection-off-host-from-http -5 fail HTTP goes to HTTPS on another host: no HSTS
redirection-not-to-https-on-initial-redirection -10 fail first redirect is to HTTP again
redirection-not-to-https -20 fail redirects end on an HTTP URL
redirection-missing -20 fail HTTP does not redirect to HTTPS
referrer-policy-private +5 pass Referrer-Policy keeps URLs private
referrer-policy-not-implemented +0 pass no Referrer-Policy
referrer-policy-unsafe -5 fail Referrer-Policy leaks URLs to other origins
referrer-policy-header-invalid -5 fail Referrer-Policy not recognised
hsts-preloaded +5 pass host on the HSTS preload list
hsts-implemented-max-age-at-least-six-months +0 pass HSTS max-age six months or more
hsts-implemented-max-age-less-than-six-months -10 fail HSTS max-age under six months
hsts-not-implemented -20 fail no Strict-Transport-Security
hsts-header-invalid -20 fail Strict-Transport-Security not recognised
hsts-not-implemented-no-https -20 fail site not served over HTTPS
sri-implemented-and-all-scripts-loaded-securely +5 pass SRI; all scripts from own domain
sri-implemented-and-external-scripts-loaded-securely +5 pass SRI; external scripts over HTTPS
sri-not-implemented-response-not-html +0 pass response is not HTML
sri-not-implemented-but-no-scripts-loaded +0 pass no script tags
sri-not-implemented-but-all-scripts-loaded-from-secure-origin +0 pass no SRI; scripts own domain
sri-not-implemented-but-external-scripts-loaded-securely -5 fail external scripts lack SRI
sri-implemented-but-external-scripts-not-loaded-securely -20 fail SRI, but HTTP or // scripts
sri-not-implemented-and-external-scripts-not-loaded-securely -50 fail no SRI, HTTP or // scripts
x-content-type-options-nosniff +0 pass X-Content-Type-Options: nosniff
x-content-type-options-not-implemented -5 fail no X-Content-Type-Options
x-content-type-options-header-invalid -5 fail X-Content-Type-Options not recognised
x-frame-options-implemented-via-csp +5 pass framing set by CSP frame-ancestors
x-frame-options-sameorigin-or-deny +5 pass X-Frame-Options DENY or SAMEORIGIN
x-frame-options-allow-from-origin +0 pass X-Frame-Options ALLOW-FROM
x-frame-options-not-implemented -20 fail no X-Frame-Options, no frame-ancestors
x-frame-options-header-invalid -20 fail X-Frame-Options not recognised (sent twice?)
corp-not-implemented +0 pass no Cross-Origin-Resource-Policy
corp-implemented-with-same-origin +10 pass Cross-Origin-Resource-Policy: same-origin
corp-implemented-with-same-site +10 pass Cross-Origin-Resource-Policy: same-site
corp-implemented-with-cross-origin +0 pass Cross-Origin-Resource-Policy: cross-origin
corp-header-invalid -5 fail Cross-Origin-Resource-Policy not recognised
coop-not-implemented +0 pass no Cross-Origin-Opener-Policy
coop-implemented-with-same-origin +10 pass Cross-Origin-Opener-Policy: same-origin
coop-implemented-with-same-origin-allow-popups +10 pass COOP: same-origin-allow-popups
coop-implemented-with-noopener-allow-popups +10 pass COOP: noopener-allow-popups
coop-implemented-with-unsafe-none +0 pass Cross-Origin-Opener-Policy: unsafe-none
coop-header-invalid -5 fail Cross-Origin-Opener-Policy not recognised
coep-not-implemented +0 pass no Cross-Origin-Embedder-Policy
coep-implemented-with-require-corp +10 pass Cross-Origin-Embedder-Policy: require-corp
coep-implemented-with-credentialless +10 pass COEP: credentialless
coep-implemented-with-unsafe-none +0 pass Cross-Origin-Embedder-Policy: unsafe-none
coep-header-invalid -5 fail Cross-Origin-Embedder-Policy not recognised
"""
# The stored copy of PR #498's table stops after coep-implemented-with-require-corp (+10).
# credentialless at +10 is an assumption: the Security team's COOP/COEP scale is 0/+10 and
# credentialless is as "compatible with cross-origin isolation" as require-corp. Invalid
# COOP/COEP at -5 is #498's choice (sign-off tracked in mdn-http-observatory#556).

# HSTS: 15768000 s is six months, but Observatory accepts the common 15552000 (180 days).
SIX_MONTHS = 15_552_000


class ObservationError(ValueError):
    """An observation that cannot be graded (a URL that is not http or https); says which."""


@dataclass(frozen=True)
class Rule:
    """One row of the chart: a result's score modifier, whether it passes, and why."""

    modifier: int
    passes: bool
    explanation: str


SCORE_TABLE: dict[str, Rule] = {
    result: Rule(int(modifier), verdict == "pass", explanation)
    for result, modifier, verdict, explanation in (
        line.split(" ", 3) for line in _CHART.strip().splitlines()
    )
}


@dataclass(frozen=True)
class Observed:
    """What a probe saw of one portal page.

    headers: the final response's (name, value) pairs in order; names in any case, repeats kept
    (several Set-Cookie, or an X-Frame-Options added by both nginx and the application).
    url: the final URL, after redirects.
    redirects: every URL from the first http:// request to the final one; empty when the host
    does not answer over HTTP at all.
    body: the final page's HTML (script tags and <meta> CSP and referrer are read from it).
    preloaded_hosts: hosts the caller found covered by the HSTS preload list.
    cors_origin: the Origin header the probe sent, if any, so a reflected origin shows.
    """

    headers: Sequence[tuple[str, str]]
    url: str
    redirects: Sequence[str] = ()
    body: str = ""
    preloaded_hosts: frozenset[str] = field(default_factory=frozenset)
    cors_origin: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple(self.headers))
        object.__setattr__(self, "redirects", tuple(self.redirects))
        for url in (*self.redirects, self.url):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ObservationError(f"'{url}' is not an http(s) URL with a host")


@dataclass(frozen=True)
class Outcome:
    """One Observatory test: its result id, score modifier and whether it passed."""

    test: str
    result: str
    modifier: int
    passed: bool
    explanation: str


@dataclass(frozen=True)
class Report:
    """The graded page: score (penalties, then bonuses if still >= 90), grade and outcomes."""

    score: int
    grade: str
    algorithm_version: int
    outcomes: tuple[Outcome, ...]

    def outcome(self, test: str) -> Outcome:
        """The outcome of the named test, e.g. 'strict-transport-security'."""
        for found in self.outcomes:
            if found.test == test:
                return found
        raise KeyError(test)

    @property
    def tests_passed(self) -> int:
        return sum(o.passed for o in self.outcomes)


def grade_for_score(score: int) -> str:
    """Observatory's letter for a score: A+ from 100, down to F below 25."""
    return next((letter for floor, letter in GRADE_CHART if score >= floor), "F")


def grade(observed: Observed) -> Report:
    """Run Observatory's twelve tests on what the probe saw and total them."""
    headers = _Headers(observed.headers)
    page = _Page(observed.body)
    final = urlsplit(observed.url)
    https = final.scheme == "https"
    # The scanned site is the host first asked for; HSTS preloading is looked up for it.
    site = urlsplit((*observed.redirects, observed.url)[0]).hostname or ""
    hsts = _hsts(headers, https=https, preloaded=site in observed.preloaded_hosts)
    csp, csp_policy = _csp(headers, page, https=https)
    results = {
        "content-security-policy": csp,
        "cookies": _cookies(headers.all("set-cookie"), hsts_ok=SCORE_TABLE[hsts].passes),
        "cross-origin-resource-sharing": _cors(headers, observed.cors_origin),
        "redirection": _redirection(observed.redirects, observed.preloaded_hosts),
        "referrer-policy": _referrer(headers, page),
        "strict-transport-security": hsts,
        "subresource-integrity": _sri(headers, page, site=site, https=https),
        "x-content-type-options": _nosniff(headers),
        "x-frame-options": _frame_options(headers, csp_policy),
        "cross-origin-resource-policy": _corp(headers),
        "cross-origin-opener-policy": _isolation(
            headers, "coop", ("same-origin", "same-origin-allow-popups", "noopener-allow-popups")
        ),
        "cross-origin-embedder-policy": _isolation(
            headers, "coep", ("require-corp", "credentialless")
        ),
    }
    outcomes = tuple(
        Outcome(test, result, rule.modifier, rule.passes, rule.explanation)
        for test, result in results.items()
        for rule in (SCORE_TABLE[result],)
    )
    score = 100 + sum(o.modifier for o in outcomes if o.modifier < 0)
    if score >= MINIMUM_SCORE_FOR_EXTRA_CREDIT:
        score += sum(o.modifier for o in outcomes if o.modifier > 0)
    score = max(score, 0)
    return Report(score, grade_for_score(score), ALGORITHM_VERSION, outcomes)


class _Headers:
    """Case-insensitive view of the response headers. Repeated fields are joined with ", " as
    Node's HTTP client (and so Observatory) does: two X-Frame-Options become one bad value."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name.strip().lower(), []).append(value)

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name, []))

    def joined(self, name: str) -> str | None:
        values = self._values.get(name)
        return ", ".join(values) if values else None


def _lower(value: str | None) -> str:
    return (value or "").strip().lower()


class _Page(HTMLParser):
    """What Observatory reads of the HTML: script tags, <meta http-equiv> CSP and
    <meta name="referrer"> (the last one wins)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.csp: list[str] = []
        self.referrer: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        content = attributes.get("content")
        if tag == "script":
            self.scripts.append(attributes)
        elif tag == "meta" and content is not None:
            if _lower(attributes.get("http-equiv")) == "content-security-policy":
                self.csp.append(content)
            elif "http-equiv" not in attributes and _lower(attributes.get("name")) == "referrer":
                self.referrer = [content]


# --- Content Security Policy ---------------------------------------------------------------

_BROAD = ("ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*")
_BROAD_SET = frozenset(_BROAD)
_BROAD_OR_INLINE = frozenset((*_BROAD, "'unsafe-inline'", "data:"))
_NONCE_OR_HASH = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")
_REPEATABLE = frozenset({"report-uri", "report-to"})
_NOT_IN_META = ("frame-ancestors", "report-uri", "sandbox")


class _CspInvalid(ValueError):
    pass


def _csp(headers: _Headers, page: _Page, *, https: bool) -> tuple[str, dict[str, set[str]]]:
    """The CSP result, and the policy as analysed (empty when none was)."""
    header = _split_policies(headers.all("content-security-policy"))
    meta = _split_policies(page.csp)
    try:
        csp, repeated = _parse_csp(header + meta)
    except _CspInvalid:
        return "csp-header-invalid", {}
    # Only what each channel may validly carry counts: a meta tag holding nothing but
    # frame-ancestors implements no policy.
    if not (_parse_quietly(header) or _parse_quietly(meta, drop=_NOT_IN_META)):
        if headers.joined("content-security-policy-report-only"):
            return "csp-not-implemented-but-reporting-enabled", {}
        return "csp-not-implemented", {}

    result = _judge_policy(csp, https=https)
    if repeated and SCORE_TABLE[result].passes:
        result = "csp-implemented-but-duplicate-directives"
    return result, csp


def _judge_policy(csp: dict[str, set[str]], *, https: bool) -> str:
    """Observatory's checks, worst first; prunes what browsers ignore from csp in place."""
    # Fallbacks share the default-src set, as in Observatory, so pruning one prunes the other.
    default = csp.get("default-src")
    script = csp.get("script-src", default) or {"*"}
    style = csp.get("style-src", default) or {"*"}
    objects = csp.get("object-src", default) or {"*"}
    for sources in (script, style):
        if any(s.startswith(_NONCE_OR_HASH) for s in sources):
            sources.discard("'unsafe-inline'")  # browsers ignore it next to a nonce or hash
    trusted = _apply_strict_dynamic(script)
    passive_names = ("img-src", "media-src")
    active = [s for d, srcs in csp.items() if d not in (*passive_names, "script-src") for s in srcs]
    active += script
    passive = [s for d in passive_names for s in csp.get(d, default or set())]
    findings = (  # in Observatory's order: the first that holds is the result
        ("csp-header-invalid", not trusted),
        ("csp-implemented-with-unsafe-inline", script & _BROAD_OR_INLINE or objects & _BROAD_SET),
        ("csp-implemented-with-insecure-scheme", https and _any_insecure(active)),
        ("csp-implemented-with-unsafe-eval", "'unsafe-eval'" in script | style),
        (
            "csp-implemented-with-insecure-scheme-in-passive-content-only",
            https and _any_insecure(passive),
        ),
        ("csp-implemented-with-unsafe-inline-in-style-src-only", style & _BROAD_OR_INLINE),
        ("csp-implemented-with-no-unsafe-default-src-none", default == {"'none'"}),
    )
    return next((result for result, holds in findings if holds), "csp-implemented-with-no-unsafe")


def _apply_strict_dynamic(script: set[str]) -> bool:
    """Under 'strict-dynamic' browsers drop allow-list sources, 'self' and 'unsafe-inline';
    so does the grader. False when strict-dynamic has no nonce or hash to trust."""
    if "'strict-dynamic'" not in script:
        return True
    if not any(s.startswith(_NONCE_OR_HASH) for s in script):
        return False
    for source in list(script):
        if source.startswith(_BROAD) or source in ("'self'", "'unsafe-inline'"):
            script.discard(source)
    return True


def _any_insecure(sources: list[str]) -> bool:
    return any(s.startswith(("http:", "ftp:")) for s in sources)


def _split_policies(values: list[str]) -> list[str]:
    """Commas separate policies (CSP3 2.2); an empty one makes the whole CSP invalid."""
    return [policy.strip() for value in values for policy in value.split(",")]


def _parse_quietly(policies: list[str], drop: tuple[str, ...] = ()) -> dict[str, set[str]]:
    try:
        csp = _parse_csp(policies)[0]
    except _CspInvalid:
        return {}
    return {d: s for d, s in csp.items() if d not in drop}


@dataclass
class _Source:
    text: str
    policy: int
    keep: bool


def _parse_csp(policies: list[str]) -> tuple[dict[str, set[str]], bool]:
    """Observatory's parseCsp: directive -> lower-cased sources, and whether report-uri or
    report-to was repeated. Several policies intersect: a later policy keeps only the sources
    an earlier one also allows. Raises _CspInvalid for an empty policy or a repeated directive.
    """
    cleaned = [p.replace("\r", "").replace("\n", "").strip() for p in policies]
    if any(len(p) < len("img-src") - 1 for p in cleaned):
        raise _CspInvalid(cleaned)
    merged: dict[str, list[_Source]] = {}
    repeated = False
    for index, policy in enumerate(cleaned):
        seen: set[str] = set()
        for entry in policy.split(";"):
            tokens = entry.split()
            if not tokens:
                continue
            directive = tokens[0].lower()
            if directive in seen and directive not in _REPEATABLE:
                raise _CspInvalid(f"{directive} repeated")
            repeated |= directive in seen
            seen.add(directive)
            values = [_Source(t.lower(), index, index == 0) for t in tokens[1:]]
            if not values and directive.endswith("-src"):
                values = [_Source("'none'", index, index == 0)]
            combined = values if index == 0 else [*merged.get(directive, []), *values]
            combined.sort(key=lambda s: s.text)
            for prev, cur in pairwise(combined):
                if cur.policy == prev.policy and cur.text.startswith(prev.text):
                    cur.keep = False  # https://x/ makes https://x/app superfluous
                if cur.policy != prev.policy and _path_part_match(prev.text, cur.text):
                    cur.keep = True  # allowed by both policies
            merged[directive] = [s for s in combined if s.keep]
            if index == 0 and len(cleaned) > 1:
                for source in merged[directive]:
                    source.keep = False
    return {d: {s.text for s in srcs} or {"'none'"} for d, srcs in merged.items()}, repeated


def _path_part_match(a: str, b: str) -> bool:
    if not a or (a == "/" and not b):
        return True
    parts_a, parts_b = a.split("/"), b.split("/")
    if len(parts_a) > len(parts_b) or (not a.endswith("/") and len(parts_a) != len(parts_b)):
        return False
    if a.endswith("/"):
        parts_a.pop()
    return all(unquote(x) == unquote(y) for x, y in zip(parts_a, parts_b, strict=False))


# --- The other tests -------------------------------------------------------------------------


def _hsts(headers: _Headers, *, https: bool, preloaded: bool) -> str:
    value = headers.joined("strict-transport-security")
    if not https:
        return "hsts-not-implemented-no-https"
    if preloaded:
        return "hsts-preloaded"  # the preload list overrides whatever the header says
    if value is None:
        return "hsts-not-implemented"
    if "," in value:
        return "hsts-header-invalid"  # sent twice
    params = [p.strip().lower() for p in value[:1024].split(";")]
    ages = [p[len("max-age=") :] for p in params if p.startswith("max-age=")]
    if not ages:
        return "hsts-header-invalid"
    digits = re.match(r"\s*([+-]?\d+)", ages[-1][:120])
    # Observatory reads max-age with parseInt: no digits give NaN, and NaN < six months is
    # false, so it passes there; kept so that scores compare.
    if digits and int(digits.group(1)) < SIX_MONTHS:
        return "hsts-implemented-max-age-less-than-six-months"
    return "hsts-implemented-max-age-at-least-six-months"


# Best to worst: each cookie can only move the result further down.
_COOKIE_ORDER = (
    "cookies-without-secure-flag-but-protected-by-hsts", "cookies-without-secure-flag",
    "cookies-session-without-secure-flag-but-protected-by-hsts", "cookies-samesite-flag-invalid",
    "cookies-anticsrf-without-samesite-flag", "cookies-session-without-httponly-flag",
    "cookies-session-without-secure-flag",
)  # fmt: skip


def _cookies(set_cookies: list[str], *, hsts_ok: bool) -> str:
    """Observatory's rules: a session cookie is one whose name holds 'login' or 'sess'
    (PHPSESSID, ASP.NET_SessionId), an anti-CSRF cookie one whose name holds 'csrf'."""
    jar, problems = _cookie_jar(set_cookies)
    if not jar:
        return "cookies-not-found"
    hsts = "-but-protected-by-hsts" if hsts_ok else ""
    for name, attrs in jar.items():
        lowered = name.lower()
        session = "login" in lowered or "sess" in lowered
        secure, same_site = "secure" in attrs, _lower(attrs.get("samesite"))
        checks = (
            ("cookies-samesite-flag-invalid", same_site == "none" and not secure),
            (f"cookies-without-secure-flag{hsts}", not secure),
            ("cookies-anticsrf-without-samesite-flag", "csrf" in lowered and not same_site),
            (f"cookies-session-without-secure-flag{hsts}", session and not secure),
            ("cookies-session-without-httponly-flag", session and "httponly" not in attrs),
        )
        problems += [problem for problem, holds in checks if holds]
    if problems:
        return max(problems, key=_COOKIE_ORDER.index)
    if all(_lower(attrs.get("samesite")) in _SAME_SITE for attrs in jar.values()):
        return "cookies-secure-with-httponly-sessions-and-samesite"
    return "cookies-secure-with-httponly-sessions"


_SAME_SITE = ("lax", "strict", "none")


def _cookie_jar(set_cookies: list[str]) -> tuple[dict[str, dict[str, str | None]], list[str]]:
    """Cookies by name (a later Set-Cookie replaces an earlier one) with their attributes,
    lower-cased; and a SameSite problem if any Set-Cookie carries an unknown SameSite value."""
    jar: dict[str, dict[str, str | None]] = {}
    problems: list[str] = []
    for raw in set_cookies:
        pair, *attributes = raw.split(";")
        attrs: dict[str, str | None] = {}
        for attribute in attributes:
            key, eq, val = attribute.partition("=")
            attrs[key.strip().lower()] = val.strip() if eq else None
        if "samesite" in attrs and _lower(attrs["samesite"]) not in _SAME_SITE:
            problems.append("cookies-samesite-flag-invalid")
        name = pair.partition("=")[0].strip()
        if "=" in pair and name and name != "heroku-session-affinity":
            jar[name] = attrs
    return jar, problems


def _cors(headers: _Headers, origin: str | None) -> str:
    allow = headers.joined("access-control-allow-origin")
    if not allow:
        return "cross-origin-resource-sharing-not-implemented"
    if allow[:256].strip().lower() == "*":
        return "cross-origin-resource-sharing-implemented-with-public-access"
    credentials = (headers.joined("access-control-allow-credentials") or "").strip().lower()
    if origin and allow == origin and credentials == "true":
        return "cross-origin-resource-sharing-implemented-with-universal-access"
    return "cross-origin-resource-sharing-implemented-with-restricted-access"


def _redirection(route: Sequence[str], preloaded: frozenset[str]) -> str:
    if not route:
        return "redirection-not-needed-no-http"
    hops = [urlsplit(url) for url in route]
    if all(hop.hostname in preloaded for hop in hops):
        return "redirection-all-redirects-preloaded"
    if len(hops) == 1:
        return "redirection-missing"
    if hops[-1].scheme != "https":
        return "redirection-not-to-https"
    if hops[1].scheme == "http":
        return "redirection-not-to-https-on-initial-redirection"
    if hops[0].scheme == "http" and hops[0].hostname != hops[1].hostname:
        return "redirection-off-host-from-http"
    return "redirection-to-https"


_PRIVATE = ("no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin")
_LEAKY = ("origin", "origin-when-cross-origin", "unsafe-url", "no-referrer-when-downgrade")


def _referrer(headers: _Headers, page: _Page) -> str:
    values = headers.all("referrer-policy") + page.referrer
    if not values:
        return "referrer-policy-not-implemented"
    # The last recognised token wins, and the meta tag comes after the header.
    tokens = [t.strip().lower() for t in ", ".join(values).split(",")]
    known = [t for t in tokens if t in _PRIVATE + _LEAKY]
    if not known:
        return "referrer-policy-header-invalid"
    return "referrer-policy-private" if known[-1] in _PRIVATE else "referrer-policy-unsafe"


# Best to worst, in Observatory's order (which ranks "no SRI over HTTPS" below "SRI over HTTP").
_SRI_ORDER = (
    "sri-implemented-and-all-scripts-loaded-securely",
    "sri-implemented-and-external-scripts-loaded-securely",
    "sri-implemented-but-external-scripts-not-loaded-securely",
    "sri-not-implemented-but-external-scripts-loaded-securely",
    "sri-not-implemented-and-external-scripts-not-loaded-securely",
)
_SECOND_LEVEL = frozenset(
    {"ac", "biz", "co", "com", "edu", "gov", "health", "info", "int", "mil", "name", "net", "org"}
)


def _registrable(host: str) -> str:
    """eTLD+1, approximated without the Public Suffix List Observatory uses:
    'xa.vinhphuc.gov.vn' -> 'vinhphuc.gov.vn', 'cdn.jsdelivr.net' -> 'jsdelivr.net'."""
    labels = host.lower().rstrip(".").split(".")
    size = 3 if len(labels) > 2 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-size:])


def _sri(headers: _Headers, page: _Page, *, site: str, https: bool) -> str:
    content_types = headers.all("content-type")  # Node keeps only the first Content-Type
    mime = content_types[0].split(";")[0] if content_types else ""
    if mime and mime not in ("text/html", "application/xhtml+xml"):
        return "sri-not-implemented-response-not-html"
    if not page.scripts:
        return "sri-not-implemented-but-no-scripts-loaded"
    result: str | None = None
    foreign = False
    for script in page.scripts:
        src = (script.get("src") or "").strip()
        if not src:
            continue  # inline script
        integrity = bool(script.get("integrity"))
        own, secure = _script_origin(src, site=site, https=https)
        foreign |= not own
        if own and integrity and secure:
            new = _SRI_ORDER[0]  # the bonus counts SRI on the site's own scripts too
        elif own or (integrity and secure):
            continue
        elif integrity:
            new = "sri-implemented-but-external-scripts-not-loaded-securely"
        else:
            new = _SRI_ORDER[3] if secure else _SRI_ORDER[4]
        if result is None or _SRI_ORDER.index(new) > _SRI_ORDER.index(result):
            result = new
    if result is not None:
        return result
    if foreign:
        return "sri-implemented-and-external-scripts-loaded-securely"
    return "sri-not-implemented-but-all-scripts-loaded-from-secure-origin"


def _script_origin(src: str, *, site: str, https: bool) -> tuple[bool, bool]:
    """Whether a script comes from the site's own registrable domain, and over HTTPS."""
    if re.match(r"//[^/]", src):
        return False, False  # protocol-relative: plain HTTP whenever the page is
    if re.match(r"https?://", src, re.IGNORECASE):
        own = _registrable(urlsplit(src).hostname or "") == _registrable(site)
        return own, src[:6].lower() == "https:"
    return True, https  # relative to the page


def _nosniff(headers: _Headers) -> str:
    value = headers.joined("x-content-type-options")
    if not value:
        return "x-content-type-options-not-implemented"
    if value[:256].strip().lower() == "nosniff":
        return "x-content-type-options-nosniff"
    return "x-content-type-options-header-invalid"


def _frame_options(headers: _Headers, csp: dict[str, set[str]]) -> str:
    # Observatory takes frame-ancestors from the analysed policy (a meta tag's included, which
    # browsers ignore) and gives the bonus whatever its sources are.
    if "frame-ancestors" in csp:
        return "x-frame-options-implemented-via-csp"
    value = headers.joined("x-frame-options")
    if not value:
        return "x-frame-options-not-implemented"
    value = value[:1024].strip().lower()
    if value in ("deny", "sameorigin"):
        return "x-frame-options-sameorigin-or-deny"
    if value.startswith("allow-from"):
        return "x-frame-options-allow-from-origin"
    return "x-frame-options-header-invalid"


def _corp(headers: _Headers) -> str:
    value = headers.joined("cross-origin-resource-policy")
    if not value:
        return "corp-not-implemented"
    kind = value[:256].strip().lower()
    if kind in ("same-origin", "same-site", "cross-origin"):
        return f"corp-implemented-with-{kind}"
    return "corp-header-invalid"


# A Structured Field Item (RFC 8941) with a token as bare item, parameters allowed.
_SF_TOKEN_ITEM = re.compile(
    r"([A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*)"
    r"(?:;[ ]*[a-z*][a-z0-9_\-.*]*(?:=(?:\"(?:[^\"\\]|\\.)*\"|[^;,\s\"]+))?)*"
)


def _isolation(headers: _Headers, prefix: str, isolating: tuple[str, ...]) -> str:
    """COOP or COEP: a case-sensitive token; a repeated header is invalid."""
    name = "opener" if prefix == "coop" else "embedder"
    value = headers.joined(f"cross-origin-{name}-policy")
    if not value:
        return f"{prefix}-not-implemented"
    item = _SF_TOKEN_ITEM.fullmatch(value[:1024].strip())
    token = item.group(1) if item else ""
    if token in (*isolating, "unsafe-none"):
        return f"{prefix}-implemented-with-{token}"
    return f"{prefix}-header-invalid"
